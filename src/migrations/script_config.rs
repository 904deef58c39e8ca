//! Flyway's script configuration: a `<script>.sql.conf` file beside a
//! migration, Java properties (`key=value` or `key: value`, `#` and `!`
//! comments), as Flyway reads it (`SqlScriptMetadata`). miglock reads the
//! two keys that change how a script runs, `executeInTransaction` and
//! `placeholderReplacement`, and `encoding` when it is UTF-8; any other key
//! is a problem before anything runs, as Flyway stops at a key it does not
//! know.

use std::path::{Path, PathBuf};

use super::{LocalMigration, Problem, ProblemKind};

/// Reads each of `configs` into the migration it configures; what cannot
/// be honoured, as problems.
pub fn apply(configs: &[PathBuf], migrations: &mut [LocalMigration]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for config in configs {
        let script = config.with_extension("");
        let Some(migration) = migrations.iter_mut().find(|m| m.path == script) else {
            // Flyway reads a configuration with its script only.
            log::debug!("{}: configures no migration, skipped", config.display());
            continue;
        };
        let problem = |why: String| Problem {
            kind: ProblemKind::Annotation,
            message: format!("{}: {why}", config.display()),
            file: Some(config.clone()),
            version: Some(migration.id.version.clone()),
            line: None,
        };
        match read(config) {
            Ok(read) => {
                migration.configure(read.in_transaction, read.placeholders);
            }
            Err(why) => problems.push(problem(why)),
        }
    }
    problems
}

/// What a script configuration asks: `None` where it says nothing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Config {
    in_transaction: Option<bool>,
    placeholders: Option<bool>,
}

fn read(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read ({e})"))?;
    parse(&text)
}

fn parse(text: &str) -> Result<Config, String> {
    let mut config = Config::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let at = line.find(['=', ':']).unwrap_or(line.len());
        let key = line[..at].trim();
        let value = line.get(at + 1..).unwrap_or_default().trim();
        let flag = || match value.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!(
                "line {}: {key} is true or false, not {value:?}",
                i + 1
            )),
        };
        match key {
            "executeInTransaction" => config.in_transaction = Some(flag()?),
            "placeholderReplacement" => config.placeholders = Some(flag()?),
            "encoding"
                if value.eq_ignore_ascii_case("UTF-8") || value.eq_ignore_ascii_case("UTF8") => {}
            "encoding" => {
                return Err(format!(
                    "line {}: encoding {value:?}: miglock reads migrations as UTF-8 (convert the \
                     file, and drop the key)",
                    i + 1
                ))
            }
            _ => {
                return Err(format!(
                    "line {}: {key:?} is not a script configuration miglock reads \
                     (executeInTransaction, placeholderReplacement, encoding=UTF-8)",
                    i + 1
                ))
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_that_change_a_run_are_read_and_others_refused() {
        let read = parse("# why\nexecuteInTransaction=false\n! note\nplaceholderReplacement : FALSE\nencoding=utf-8\n");
        assert_eq!(
            read,
            Ok(Config {
                in_transaction: Some(false),
                placeholders: Some(false),
            })
        );
        assert_eq!(parse(""), Ok(Config::default()));
        assert!(parse("executeInTransaction=maybe")
            .unwrap_err()
            .contains("true or false"));
        assert!(parse("encoding=ISO-8859-1").unwrap_err().contains("UTF-8"));
        assert!(parse("\n\nshouldExecute=${run}")
            .unwrap_err()
            .starts_with("line 3: \"shouldExecute\""));
    }
}
