//! The migration set: the files on disk, read strictly, and their join
//! with the history table.
//!
//! The format and the checksum are refinery's, so refinery, refinery_cli and
//! miglock recognise each other's history (the tests hold both against
//! refinery's own code). The strictness is miglock's: refinery silently
//! skips misnamed files, runs two files with the same version, and panics
//! on some names (`|1__x.sql` matches its `[U|V]` pattern and then reaches
//! `unreachable!`).
//!
//! - [`names`]: the file-name rule;
//! - [`set`]: reading the folder, every problem of every file up front
//!   ([`walk`]: the folder's entries);
//! - [`plan`]: the join with the history;
//! - [`check`]: every problem of a set in one list, the folder's, the
//!   history's and the pending files' statements;
//! - [`history`]: the history table itself;
//! - [`split`]: a file's statements, and what they ask of the runner;
//! - [`lint`]: squawk's rules over a file, at miglock's levels.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

mod check;
mod file;
pub mod history;
pub mod lint;
mod names;
mod plan;
mod problems;
mod set;
pub mod split;
mod version;
mod walk;

pub use check::{every_problem, WithoutHistory};
pub use names::parse_file_name;
pub use plan::{AheadPolicy, Plan};
pub use problems::{layout_hint, Problem, ProblemKind, Problems};
pub use set::{MigrationSet, Reading};
pub use version::Version;

pub use file::Size;
use split::{Execution, Summary};

/// What names a migration: its version and its name, shown as
/// `V{version}__{name}` everywhere (logs, messages, the text output).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationId {
    pub version: Version,
    pub name: String,
}

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}__{}", self.version, self.name)
    }
}

/// One `V<version>__<name>.sql` file: what reading it once told. Its text
/// is read again, whole, only to run it (see [`file`]).
#[derive(Debug, Clone)]
pub struct LocalMigration {
    pub id: MigrationId,
    pub path: PathBuf,
    pub checksum: u64,
    pub size: Size,
    /// What its statements ask of the runner, worked out the first time it
    /// is asked (only pending files are ever asked), then kept.
    /// Boxed: a set holds one per file, most never asked.
    summary: OnceLock<Box<Result<Summary, Problem>>>,
}

impl LocalMigration {
    pub fn new(id: MigrationId, path: PathBuf, checksum: u64, size: Size) -> LocalMigration {
        LocalMigration {
            id,
            path,
            checksum,
            size,
            summary: OnceLock::new(),
        }
    }

    /// refinery's names hold an `i32` version, which its checksum hashes.
    fn refinery_version(&self) -> i32 {
        self.id
            .version
            .as_number()
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or_default()
    }

    /// The text to send: the file without its UTF-8 byte-order mark, which
    /// PostgreSQL would take for part of the first word, read now and
    /// checked against the checksum it had when the run read the folder.
    pub fn read_script(&self) -> Result<String, Problem> {
        file::text(
            &self.path,
            &self.id.name,
            self.refinery_version(),
            self.checksum,
            self.size.bytes,
        )
        .map_err(|why| self.unreadable(why))
    }

    /// What the file's statements ask of the runner, read as a stream.
    pub fn summary(&self) -> Result<&Summary, &Problem> {
        self.summary
            .get_or_init(|| {
                Box::new(
                    file::open(&self.path)
                        .map_err(|why| self.unreadable(why))
                        .and_then(|file| {
                            split::summarize(file::Sized::new(file, self.size.bytes))
                                .map_err(|e| self.unreadable(e.to_string()))
                        }),
                )
            })
            .as_ref()
            .as_ref()
    }

    /// How the file runs: in one transaction, or statement by statement
    /// (in one, when the file could not be read again: that read's problem
    /// stops the run before anything runs, see [`Plan::forbidden`]).
    pub fn execution(&self) -> &Execution {
        const TRANSACTION: &Execution = &Execution::Transaction;
        self.summary().map_or(TRANSACTION, |s| &s.execution)
    }

    /// Why the file runs without a transaction; `None` when it runs in one.
    pub fn no_transaction(&self) -> Option<String> {
        self.execution().without_transaction()
    }

    fn unreadable(&self, why: String) -> Problem {
        Problem {
            kind: ProblemKind::Unreadable,
            message: format!("{}: {why}", self.path.display()),
            file: Some(self.path.clone()),
            version: Some(self.id.version.clone()),
            line: None,
        }
    }
}

impl fmt::Display for LocalMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_shows_as_v_version_name() {
        let id = MigrationId {
            version: 7.into(),
            name: "add_users".into(),
        };
        assert_eq!(id.to_string(), "V7__add_users");
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json, serde_json::json!({"version": 7, "name": "add_users"}));
    }
}
