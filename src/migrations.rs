//! The migration set on disk, read strictly, and its comparison with the
//! history table.
//!
//! refinery provides the model (name parsing, checksum); the strictness is
//! miglock's own, because refinery silently skips misnamed files, runs two
//! files with the same version, and panics on some names (`|1__x.sql`
//! matches its `[U|V]` pattern and then reaches `unreachable!`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::history::AppliedMigration;

/// One `V<version>__<name>.sql` file.
#[derive(Debug, Clone)]
pub struct LocalMigration {
    pub version: i32,
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    pub checksum: u64,
}

impl fmt::Display for LocalMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}__{}", self.version, self.name)
    }
}

/// Why a migration set is unsafe to run. Every problem found is reported,
/// not just the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The folder is missing or cannot be read.
    Folder,
    /// A `.sql` file whose name is not `V<version>__<name>.sql`.
    Misnamed,
    /// Two files with the same version.
    Duplicate,
    /// A file that cannot be read, is not UTF-8, or is empty.
    Unreadable,
    /// An applied migration whose file changed.
    Divergent,
    /// An applied migration whose file is gone.
    Missing,
    /// A file not applied although a later version is.
    OutOfOrder,
}

impl ProblemKind {
    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Folder => "folder",
            ProblemKind::Misnamed => "misnamed",
            ProblemKind::Duplicate => "duplicate",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Divergent => "divergent",
            ProblemKind::Missing => "missing",
            ProblemKind::OutOfOrder => "out_of_order",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// All problems as one error, one per line.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the migration set is unsafe to run ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The files of a migrations folder, sorted by version.
#[derive(Debug, Clone, Default)]
pub struct MigrationSet {
    pub migrations: Vec<LocalMigration>,
}

impl MigrationSet {
    /// Reads every file under `dir` (recursively, as refinery does). Any
    /// `.sql` file that is not a well-formed migration is a problem.
    pub fn load(dir: &Path) -> Result<MigrationSet, Problems> {
        let mut problems = Vec::new();
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Problems(vec![folder_problem(dir, "is not a folder")]));
            }
            Err(e) => {
                return Err(Problems(vec![folder_problem(dir, &io_reason(&e))]));
            }
        }

        let mut by_version: BTreeMap<i32, Vec<LocalMigration>> = BTreeMap::new();
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name()
            .min_depth(1);
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    problems.push(walk_problem(dir, &e));
                    continue;
                }
            };
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str() else {
                if has_sql_extension(&entry.file_name().to_string_lossy()) {
                    problems.push(Problem {
                        kind: ProblemKind::Misnamed,
                        message: format!("{}: the file name is not valid UTF-8", path.display()),
                        file: Some(path.to_path_buf()),
                        version: None,
                    });
                }
                continue;
            };
            if !has_sql_extension(file_name) {
                continue;
            }
            if entry.file_type().is_dir() {
                problems.push(Problem {
                    kind: ProblemKind::Unreadable,
                    message: format!("{}: is a folder, not a migration file", path.display()),
                    file: Some(path.to_path_buf()),
                    version: None,
                });
                continue;
            }
            let (version, _) = match parse_file_name(file_name) {
                Ok(parsed) => parsed,
                Err(why) => {
                    problems.push(Problem {
                        kind: ProblemKind::Misnamed,
                        message: format!("{}: {why}", path.display()),
                        file: Some(path.to_path_buf()),
                        version: None,
                    });
                    continue;
                }
            };
            let unreadable = |why: String| Problem {
                kind: ProblemKind::Unreadable,
                message: format!("{}: {why}", path.display()),
                file: Some(path.to_path_buf()),
                version: Some(version.into()),
            };
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    problems.push(unreadable(format!("cannot be read ({})", io_reason(&e))));
                    continue;
                }
            };
            let sql = match String::from_utf8(bytes) {
                Ok(sql) => sql,
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    problems.push(unreadable(format!(
                        "is not valid UTF-8 (first bad byte at offset {at})"
                    )));
                    continue;
                }
            };
            if sql.trim().is_empty() {
                problems.push(unreadable("is empty".into()));
                continue;
            }
            let stem = &file_name[..file_name.len() - ".sql".len()];
            // refinery computes the checksum that refinery and refinery_cli
            // store, so a database migrated by either is recognised.
            let migration = match refinery::Migration::unapplied(stem, &sql) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(unreadable(format!("refinery refuses it: {e}")));
                    continue;
                }
            };
            by_version.entry(version).or_default().push(LocalMigration {
                version,
                name: migration.name().to_string(),
                path: path.to_path_buf(),
                sql,
                checksum: migration.checksum(),
            });
        }

        let mut migrations = Vec::with_capacity(by_version.len());
        for (version, mut files) in by_version {
            if files.len() > 1 {
                let list: Vec<String> =
                    files.iter().map(|m| m.path.display().to_string()).collect();
                problems.push(Problem {
                    kind: ProblemKind::Duplicate,
                    message: format!(
                        "version {version} is used by {} files: {}",
                        files.len(),
                        list.join(", ")
                    ),
                    file: Some(files[0].path.clone()),
                    version: Some(version.into()),
                });
                continue;
            }
            migrations.push(files.remove(0));
        }
        if problems.is_empty() {
            Ok(MigrationSet { migrations })
        } else {
            Err(Problems(problems))
        }
    }

    pub fn last_version(&self) -> Option<i32> {
        self.migrations.last().map(|m| m.version)
    }
}

fn has_sql_extension(file_name: &str) -> bool {
    let bytes = file_name.as_bytes();
    bytes.len() >= 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".sql")
}

/// Checks a file name against `V<version>__<name>.sql` as refinery reads
/// it (name made of word characters), with an ASCII version from 1 to
/// 2147483647 (refinery's history column is INT4).
pub fn parse_file_name(file_name: &str) -> Result<(i32, &str), String> {
    const FORM: &str = "expected V<version>__<name>.sql, e.g. V1__create_users.sql";
    let Some(stem) = file_name.strip_suffix(".sql") else {
        return Err(format!("the extension must be .sql in lower case ({FORM})"));
    };
    let Some(rest) = stem.strip_prefix('V') else {
        if stem.starts_with('U') {
            return Err(
                "unversioned (U) migrations are not supported: give it a V<version> prefix".into(),
            );
        }
        return Err(format!("the name must start with V ({FORM})"));
    };
    let Some((version, name)) = rest.split_once("__") else {
        return Err(format!("no \"__\" between version and name ({FORM})"));
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the version {version:?} is not a whole number ({FORM})"
        ));
    }
    let version: i32 = match version.parse::<u64>() {
        Ok(v) if v <= i32::MAX as u64 => v as i32,
        _ => {
            return Err(format!(
                "the version {version} is too large (at most {})",
                i32::MAX
            ))
        }
    };
    if version == 0 {
        return Err("version 0 is not allowed: versions start at 1".into());
    }
    if name.is_empty() {
        return Err(format!("the name after \"__\" is empty ({FORM})"));
    }
    // refinery's `\w`: Unicode letters, marks, digits and connector punctuation.
    if let Some(c) = name.chars().find(|c| !is_word_char(*c)) {
        return Err(format!(
            "the name contains {c:?}; use letters, digits and _ only ({FORM})"
        ));
    }
    Ok((version, name))
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || c == '_'
        || matches!(
            c,
            '\u{203F}' | '\u{2040}' | '\u{2054}' | '\u{FE33}' | '\u{FE34}' | '\u{FE4D}'
                ..='\u{FE4F}' | '\u{FF3F}'
        )
}

fn folder_problem(dir: &Path, why: &str) -> Problem {
    Problem {
        kind: ProblemKind::Folder,
        message: format!("migrations folder {}: {why}", dir.display()),
        file: Some(dir.to_path_buf()),
        version: None,
    }
}

fn walk_problem(dir: &Path, e: &walkdir::Error) -> Problem {
    let path = e.path().unwrap_or(dir).to_path_buf();
    let why = if let Some(ancestor) = e.loop_ancestor() {
        format!("is a symbolic link loop back to {}", ancestor.display())
    } else if let Some(io) = e.io_error() {
        format!("cannot be read ({})", io_reason(io))
    } else {
        e.to_string()
    };
    Problem {
        kind: if path == dir {
            ProblemKind::Folder
        } else {
            ProblemKind::Unreadable
        },
        message: format!("{}: {why}", path.display()),
        file: Some(path),
        version: None,
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// What the history and the files say together.
#[derive(Debug, Clone, Default)]
pub struct Plan<'a> {
    /// Applied migrations, in version order (as the history has them).
    pub applied: Vec<AppliedMigration>,
    /// Files to apply, in version order, up to the target.
    pub pending: Vec<&'a LocalMigration>,
    /// Files past the target, left for a later run.
    pub beyond_target: usize,
}

impl<'a> Plan<'a> {
    /// Compares files and history. Divergent, missing and out-of-order
    /// migrations are problems (refinery's `abort_divergent` and
    /// `abort_missing`, both on).
    pub fn new(
        set: &'a MigrationSet,
        history: &[AppliedMigration],
        target: Option<i32>,
    ) -> Result<Plan<'a>, Problems> {
        let mut problems = Vec::new();
        let local: BTreeMap<i64, &LocalMigration> = set
            .migrations
            .iter()
            .map(|m| (i64::from(m.version), m))
            .collect();
        for applied in history {
            match local.get(&applied.version) {
                None => problems.push(Problem {
                    kind: ProblemKind::Missing,
                    message: format!(
                        "V{}__{} was applied on {} but its file is gone from the migrations folder",
                        applied.version, applied.name, applied.applied_on
                    ),
                    file: None,
                    version: Some(applied.version),
                }),
                Some(file) => {
                    let what = if file.name != applied.name {
                        Some(format!(
                            "the name changed from {:?} to {:?}",
                            applied.name, file.name
                        ))
                    } else if applied.checksum != file.checksum.to_string() {
                        Some(format!(
                            "its content changed (checksum {} applied, {} on disk)",
                            applied.checksum, file.checksum
                        ))
                    } else {
                        None
                    };
                    if let Some(what) = what {
                        problems.push(Problem {
                            kind: ProblemKind::Divergent,
                            message: format!(
                                "{}: applied on {} but {what}",
                                file.path.display(),
                                applied.applied_on
                            ),
                            file: Some(file.path.clone()),
                            version: Some(applied.version),
                        });
                    }
                }
            }
        }
        let newest_applied = history.iter().map(|a| a.version).max();
        let applied_versions: std::collections::BTreeSet<i64> =
            history.iter().map(|a| a.version).collect();
        let mut pending = Vec::new();
        let mut beyond_target = 0;
        for m in &set.migrations {
            let version = i64::from(m.version);
            if applied_versions.contains(&version) {
                continue;
            }
            if let Some(newest) = newest_applied.filter(|newest| *newest > version) {
                problems.push(Problem {
                    kind: ProblemKind::OutOfOrder,
                    message: format!(
                        "{}: not applied, but the later version {newest} is; give it a version above {newest}",
                        m.path.display()
                    ),
                    file: Some(m.path.clone()),
                    version: Some(version),
                });
                continue;
            }
            if target.is_some_and(|t| m.version > t) {
                beyond_target += 1;
            } else {
                pending.push(m);
            }
        }
        if problems.is_empty() {
            Ok(Plan {
                applied: history.to_vec(),
                pending,
                beyond_target,
            })
        } else {
            Err(Problems(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_kind_words_are_the_json_words() {
        use ProblemKind::*;
        for kind in [
            Folder, Misnamed, Duplicate, Unreadable, Divergent, Missing, OutOfOrder,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn file_names_accepted_as_refinery_reads_them() {
        assert_eq!(parse_file_name("V1__init.sql"), Ok((1, "init")));
        assert_eq!(
            parse_file_name("V0010__add_users_2.sql"),
            Ok((10, "add_users_2"))
        );
        assert_eq!(
            parse_file_name("V2147483647__max.sql"),
            Ok((i32::MAX, "max"))
        );
        assert_eq!(
            parse_file_name("V3__créer_table.sql"),
            Ok((3, "créer_table"))
        );
    }

    #[test]
    fn file_names_refused_with_a_reason() {
        let cases = [
            ("V1_init.sql", "__"),
            ("V1__init.SQL", "lower case"),
            ("v1__init.sql", "start with V"),
            ("U1__init.sql", "unversioned"),
            ("|1__init.sql", "start with V"),
            ("V__init.sql", "whole number"),
            ("Vx__init.sql", "whole number"),
            ("V1.5__init.sql", "whole number"),
            ("V١__init.sql", "whole number"),
            ("V0__init.sql", "version 0"),
            ("V2147483648__big.sql", "too large"),
            ("V99999999999999999999999__big.sql", "too large"),
            ("V1__.sql", "empty"),
            ("V1__add-users.sql", "'-'"),
            ("V1__add users.sql", "' '"),
            ("V1__a.b.sql", "'.'"),
        ];
        for (name, why) in cases {
            let err = parse_file_name(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn refinery_agrees_with_the_names_accepted() {
        for name in ["V1__init", "V0010__add_users_2", "V3__créer_table"] {
            let m = refinery::Migration::unapplied(name, "select 1").unwrap();
            let file_name = format!("{name}.sql");
            let (v, n) = parse_file_name(&file_name).unwrap();
            assert_eq!((m.version(), m.name()), (v, n));
        }
    }

    fn set(files: &[(i32, &str, &str)]) -> MigrationSet {
        MigrationSet {
            migrations: files
                .iter()
                .map(|(v, name, sql)| {
                    let m = refinery::Migration::unapplied(&format!("V{v}__{name}"), sql).unwrap();
                    LocalMigration {
                        version: *v,
                        name: name.to_string(),
                        path: PathBuf::from(format!("m/V{v}__{name}.sql")),
                        sql: sql.to_string(),
                        checksum: m.checksum(),
                    }
                })
                .collect(),
        }
    }

    fn applied(m: &LocalMigration) -> AppliedMigration {
        AppliedMigration {
            version: m.version.into(),
            name: m.name.clone(),
            applied_on: "2026-01-01T00:00:00Z".into(),
            checksum: m.checksum.to_string(),
        }
    }

    #[test]
    fn plan_lists_pending_after_applied() {
        let s = set(&[(1, "a", "x"), (2, "b", "y"), (5, "c", "z")]);
        let plan = Plan::new(&s, &[applied(&s.migrations[0])], None).unwrap();
        let pending: Vec<i32> = plan.pending.iter().map(|m| m.version).collect();
        assert_eq!(pending, [2, 5]);
        let plan = Plan::new(&s, &[applied(&s.migrations[0])], Some(4)).unwrap();
        assert_eq!(plan.pending.len(), 1);
        assert_eq!(plan.beyond_target, 1);
    }

    #[test]
    fn plan_reports_every_divergent_missing_and_out_of_order_migration() {
        let s = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z")]);
        let mut renamed = applied(&s.migrations[0]);
        renamed.name = "old".into();
        let mut edited = applied(&s.migrations[1]);
        edited.checksum = "1".into();
        let gone = AppliedMigration {
            version: 9,
            ..applied(&s.migrations[2])
        };
        let err = Plan::new(&s, &[renamed, edited, gone], None).unwrap_err();
        let kinds: Vec<ProblemKind> = err.0.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                ProblemKind::Divergent,
                ProblemKind::Divergent,
                ProblemKind::Missing,
                ProblemKind::OutOfOrder
            ]
        );
        let text = err.to_string();
        assert!(text.contains("4 problems"), "{text}");
        assert!(text.contains("name changed"), "{text}");
        assert!(text.contains("content changed"), "{text}");
        assert!(text.contains("file is gone"), "{text}");
        assert!(text.contains("later version 9"), "{text}");
    }
}
