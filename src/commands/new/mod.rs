//! `miglock new NAME`: the next migration file, numbered and named so
//! that refinery and miglock will load it. No database: a developer runs
//! it at a desk, where `DATABASE_URL` is usually unset.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use crate::config::NewConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::migrations::history;
use crate::migrations::{parse_file_name, Layout};
use crate::outcome::Outcome;
use crate::report::Report;

/// The first line of a migration that must run outside a transaction.
pub const NO_TRANSACTION_MARKER: &str = "-- miglock:no-transaction";

mod tool;

pub fn run(ctx: &Context, config: &NewConfig, report: &mut Report) -> Result<Outcome, Failure> {
    if config.layout != Layout::Refinery {
        return tool::run(ctx, config, report);
    }
    let dir = &config.migrations;
    let existing = local_versions(dir)?;
    let highest = existing.iter().map(|(v, _)| *v).max();
    // A full file name (V7__add_users, with .sql or not) is taken as it
    // is: what a developer who knows the naming types, and what would
    // otherwise become V8__V7__add_users.sql.
    let given = config.name.strip_suffix(".sql").unwrap_or(&config.name);
    let full = given
        .starts_with('V')
        .then(|| {
            parse_file_name(&format!("{given}.sql"))
                .ok()
                .map(|(v, _)| v)
        })
        .flatten();
    let (version, stem) = match (full, highest) {
        (Some(version), Some(highest)) if version <= highest => {
            return Err(Failure::usage(anyhow!(
                "{given}.sql: version {version} is not above the highest one in {} (V{highest}); \
                 give the name alone (miglock new {}) for the next version",
                dir.display(),
                given.split_once("__").map_or(given, |(_, name)| name)
            )))
        }
        (Some(version), _) => (version, given.to_string()),
        (None, Some(i32::MAX)) => {
            return Err(Failure::invalid(anyhow!(
                "the highest version in {} is already {} (refinery's history column is INT4): \
                 there is no next version",
                dir.display(),
                i32::MAX
            )))
        }
        (None, highest) => {
            let version = highest.map_or(1, |v| v + 1);
            let width = existing
                .iter()
                .filter(|(_, digits)| digits.len() > 1 && digits.starts_with('0'))
                .map(|(_, digits)| digits.len())
                .max()
                .unwrap_or(0);
            (version, format!("V{version:0width$}__{}", config.name))
        }
    };
    let file_name = format!("{stem}.sql");
    // The very check `apply` makes when it loads the file, so a name
    // accepted here is one refinery and miglock both load.
    if let Err(why) = parse_file_name(&file_name) {
        return Err(Failure::usage(anyhow!(
            "invalid migration name {:?}: {why}. A name is letters, digits and _ (refinery's \\w: \
             Unicode letters and digits count), e.g. add_users_email",
            crate::parse::shorten(&config.name, 80)
        )));
    }

    let mut text = String::new();
    if config.no_transaction {
        // First line: that is where the marker is looked for.
        text.push_str(NO_TRANSACTION_MARKER);
        text.push('\n');
    }
    text.push_str(&format!("-- {stem}: {}\n", history::applied_on_now()?));
    text.push('\n');
    let path = write(dir, &file_name, &text)?;
    let name = stem
        .split_once("__")
        .map_or(stem.as_str(), |(_, name)| name);
    log::info!("MIGRATION_CREATED version={version} name={name}");
    report.path = Some(path.display().to_string());
    ctx.out.line(&path.display().to_string());
    Ok(Outcome::Created)
}

/// Writes a new file `file_name` in `dir` (made if missing), never over
/// another: a file that appeared since the folder was read, or another
/// `new`'s, is left as it is.
fn write(dir: &Path, file_name: &str, text: &str) -> Result<PathBuf, Failure> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::failed(anyhow!(
                "cannot create the migrations folder {}: {e}",
                dir.display()
            ))
        })?;
        log::info!("created the migrations folder {}", dir.display());
    }
    let path = dir.join(file_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()));
    match written {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Failure::usage(anyhow!(
            "{} already exists: left as it is (run new again for the next version)",
            path.display()
        ))),
        Err(e) => Err(Failure::failed(anyhow!(
            "cannot write {}: {e}",
            path.display()
        ))),
    }
}

/// The versions of the migration files under `dir` (recursively, hidden
/// files skipped, as `apply` reads them), each with its digits as written.
/// Files that are not migrations are not this command's business: `apply`
/// and `status` report them.
fn local_versions(dir: &Path) -> Result<Vec<(i32, String)>, Failure> {
    let mut found = Vec::new();
    let mut folders: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && folder == dir => {
                return Ok(found)
            }
            Err(e) => {
                return Err(Failure::failed(anyhow!(
                    "cannot read the migrations folder {}: {e}",
                    folder.display()
                )))
            }
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                // A symbolic link loop would never end: follow real
                // folders only, which is where migrations live in practice.
                if !entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    folders.push(path);
                }
                continue;
            }
            if let Ok((version, _)) = parse_file_name(name) {
                let digits = name[1..].split_once("__").map_or("", |(d, _)| d);
                found.push((version, digits.to_string()));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn new(dir: &Path, name: &str) -> Result<Outcome, Failure> {
        let config = NewConfig {
            migrations: dir.to_path_buf(),
            name: name.into(),
            no_transaction: false,
            layout: crate::migrations::Layout::Refinery,
        };
        let none = crate::output::Console::none();
        let progress = crate::output::Progress::hidden();
        let interrupt = crate::interrupt::Interrupt::default();
        let ctx = Context {
            progress: &progress,
            interrupt: &interrupt,
            format: crate::config::Format::Text,
            out: &none,
        };
        run(&ctx, &config, &mut Report::new("new"))
    }

    #[test]
    fn numbering_follows_the_widest_zero_padding() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("V7__a.sql"), "SELECT 1;").unwrap();
        new(dir.path(), "b").unwrap();
        assert!(names(dir.path()).contains(&"V8__b.sql".to_string()));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("V001__a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.path().join("V2__b.sql"), "SELECT 1;").unwrap();
        new(dir.path(), "c").unwrap();
        assert!(names(dir.path()).contains(&"V003__c.sql".to_string()));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("V09__a.sql"), "SELECT 1;").unwrap();
        new(dir.path(), "b").unwrap();
        // Past the padding, the number simply grows.
        assert!(names(dir.path()).contains(&"V10__b.sql".to_string()));
    }

    #[test]
    fn hidden_files_and_subfolders_count_as_apply_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("old")).unwrap();
        std::fs::write(dir.path().join("old/V4__a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.path().join(".V9__swap.sql"), "junk").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        new(dir.path(), "b").unwrap();
        assert!(dir.path().join("V5__b.sql").exists());
    }

    #[test]
    fn a_full_file_name_is_taken_as_it_is_when_its_version_comes_next() {
        let dir = tempfile::tempdir().unwrap();
        new(dir.path(), "V2__add_users").unwrap();
        new(dir.path(), "V005__add_orders.sql").unwrap();
        assert_eq!(
            names(dir.path()),
            ["V005__add_orders.sql", "V2__add_users.sql"]
        );
        for taken in ["V5__again", "V3__below.sql"] {
            let err = new(dir.path(), taken).unwrap_err();
            assert_eq!(err.outcome, Outcome::Usage, "{taken}");
            assert!(
                err.message().contains("is not above the highest one")
                    && err.message().contains("(V5)"),
                "{err}"
            );
        }
        // A name that only starts like one is a name (padded like V005).
        new(dir.path(), "Vendors").unwrap();
        assert!(dir.path().join("V006__Vendors.sql").exists());
        assert_eq!(names(dir.path()).len(), 3);
    }

    #[test]
    fn names_refinery_cannot_load_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["add-index", "add index", "a.sql", "", "x/y"] {
            let err = new(dir.path(), bad).unwrap_err();
            assert_eq!(err.outcome, Outcome::Usage, "{bad:?}");
            assert!(err.message().contains("letters, digits and _"), "{err}");
        }
        assert!(names(dir.path()).is_empty());
        new(dir.path(), "créer_table_2").unwrap();
        assert_eq!(names(dir.path()), ["V1__créer_table_2.sql"]);
    }
}
