//! Walking a migrations folder: the `.sql` files under it in refinery's
//! order, and a problem for each entry that cannot be walked, is named like
//! a migration without being one, or may be written by every user.

use std::path::{Path, PathBuf};

use super::file::io_reason;
use super::names::has_sql_extension;
use super::problems::{Problem, ProblemKind};

/// The problem of a folder or file every user may write to (`o+w`). A
/// sticky folder (`/tmp`'s 1777) is one too: others cannot replace what is
/// there, but can add a migration that sorts after it.
pub(super) fn writable_problem(path: &Path, mode: u32, folder: bool) -> Option<Problem> {
    if mode & 0o002 == 0 {
        return None;
    }
    let mode = mode & 0o7777;
    let (what, can) = match (folder, mode & 0o1000 != 0) {
        (true, true) => ("sticky, but others can still add files", "add a migration"),
        (true, false) => ("", "add or change a migration"),
        (false, _) => ("", "change this migration"),
    };
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(": {what}")
    };
    Some(Problem {
        kind: ProblemKind::UnsafePermissions,
        message: format!(
            "{}: writable by every user (mode {mode:04o}{what}), so whoever can write there can \
             {can}, which the next deploy runs with the migrator's privileges; take the write \
             permission from others (chmod o-w), or pass --allow-world-writable \
             (MIGLOCK_ALLOW_WORLD_WRITABLE=1) if this is deliberate",
            path.display()
        ),
        file: Some(path.to_path_buf()),
        version: None,
        line: None,
    })
}

/// Where a relative folder was looked for, and how to name another: a
/// newcomer's first run is often from the wrong directory, or without
/// the flag.
pub(super) fn missing_folder(dir: &Path) -> String {
    let looked = if dir.is_relative() {
        match std::env::current_dir() {
            Ok(cwd) => format!(
                " (looked for {}, from the working directory {})",
                cwd.join(dir).display(),
                cwd.display()
            ),
            Err(_) => String::new(),
        }
    } else {
        String::new()
    };
    format!(
        "does not exist{looked}; name the folder of V<version>__<name>.sql files with \
         --migrations DIR or MIGLOCK_MIGRATIONS (default: migrations), or create the first \
         migration with miglock new NAME --migrations DIR"
    )
}

pub(super) fn folder_problem(dir: &Path, why: &str) -> Problem {
    Problem {
        kind: ProblemKind::Folder,
        message: format!("migrations folder {}: {why}", dir.display()),
        file: Some(dir.to_path_buf()),
        version: None,
        line: None,
    }
}

/// Collects the `.sql` files under `dir` (following symbolic links, in
/// file-name order at each level, as refinery does), and a problem for
/// each entry that cannot be walked. Hand-written rather than walkdir:
/// sorting by name there re-parses every path on each comparison, which
/// cost more than reading the files.
pub(super) fn walk(
    dir: &Path,
    recursive: bool,
    ancestors: &mut Vec<(u64, u64)>,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<Problem>,
    writable: &mut Vec<Problem>,
    mut configs: Option<&mut Vec<PathBuf>>,
) {
    use std::os::unix::fs::MetadataExt;
    let unreadable = |path: &Path, why: String| Problem {
        kind: ProblemKind::Unreadable,
        message: format!("{}: {why}", path.display()),
        file: Some(path.to_path_buf()),
        version: None,
        line: None,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let kind = if ancestors.is_empty() {
                ProblemKind::Folder
            } else {
                ProblemKind::Unreadable
            };
            problems.push(Problem {
                kind,
                ..unreadable(dir, format!("cannot be read ({})", io_reason(&e)))
            });
            return;
        }
    };
    let meta = std::fs::metadata(dir).ok();
    let id = meta
        .as_ref()
        .map_or((0, 0), |meta| (meta.dev(), meta.ino()));
    writable.extend(meta.and_then(|meta| writable_problem(dir, meta.mode(), true)));
    ancestors.push(id);
    let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = entries
        .filter_map(Result::ok)
        .map(|e| (e.file_name(), e))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (name, entry) in entries {
        let path = entry.path();
        let is_sql = has_sql_extension(&name.to_string_lossy());
        // Editor and tool droppings (`.#V8__x.sql`, `.V1__a.sql.swp`) are
        // not migrations, even when their name ends in `.sql`.
        let hidden = name.as_encoded_bytes().starts_with(b".");
        // The type comes with the directory entry; only links cost a stat.
        let Ok(mut file_type) = entry.file_type() else {
            continue;
        };
        let mut target = None;
        if file_type.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(meta) => {
                    file_type = meta.file_type();
                    target = Some((meta.dev(), meta.ino()));
                }
                Err(e) => {
                    // An Emacs lock file is a dangling link.
                    if hidden {
                        skip_hidden(&path);
                    } else if is_sql {
                        problems.push(unreadable(
                            &path,
                            format!("cannot be read ({})", io_reason(&e)),
                        ));
                    }
                    continue;
                }
            }
        }
        if hidden && !file_type.is_dir() {
            skip_hidden(&path);
            continue;
        }
        if file_type.is_dir() {
            // Other tools read the folder's own files only.
            if !recursive {
                continue;
            }
            if is_sql {
                problems.push(unreadable(
                    &path,
                    "is a folder, not a migration file".into(),
                ));
                continue;
            }
            if let Some(id) = target {
                if ancestors.contains(&id) {
                    problems.push(unreadable(
                        &path,
                        "is a symbolic link loop back to a folder above it".into(),
                    ));
                    continue;
                }
            }
            walk(
                &path,
                recursive,
                ancestors,
                files,
                problems,
                writable,
                configs.as_deref_mut(),
            );
        } else if is_sql && file_type.is_file() {
            files.push(path);
        } else if let Some(configs) = configs
            .as_deref_mut()
            .filter(|_| file_type.is_file() && name.as_encoded_bytes().ends_with(b".sql.conf"))
        {
            // Flyway's script configuration (`V3__idx.sql.conf`).
            configs.push(path);
        } else if file_type.is_file() && named_like_a_migration(&name.to_string_lossy()) {
            // Another extension (V1__init.txt, V3__x.sql.bak) or none: a
            // file its author meant to run, which would silently never run.
            problems.push(Problem {
                kind: ProblemKind::Misnamed,
                ..unreadable(
                    &path,
                    "is named like a migration but is not a .sql file, so it would never run: \
                     give it the .sql extension, or move it out of the migrations folder"
                        .into(),
                )
            });
        } else if is_sql {
            // A FIFO would block the read forever; a device is no migration.
            problems.push(unreadable(&path, "is not a regular file".into()));
        }
    }
    ancestors.pop();
}

/// `V<digits>__…`: the start of a migration's name.
fn named_like_a_migration(name: &str) -> bool {
    name.strip_prefix('V').is_some_and(|rest| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with("__")
    })
}

fn skip_hidden(path: &Path) {
    log::debug!(
        "ignoring hidden file {} (a name starting with '.' is no migration)",
        path.display()
    );
}
