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
//! - [`set`]: reading the folder, every problem of every file up front;
//! - [`plan`]: the join with the history;
//! - [`history`]: the history table itself;
//! - [`split`]: a file's statements, and what they ask of the runner.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

pub mod history;
mod names;
mod plan;
mod problems;
mod set;
pub mod split;
mod version;

pub use names::parse_file_name;
pub use plan::{AheadPolicy, Plan};
pub use problems::{flyway_hint, Problem, ProblemKind, Problems};
pub use set::MigrationSet;
pub use version::Version;

use split::{Classified, Execution, Forbidden, Planned};

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

/// One `V<version>__<name>.sql` file.
#[derive(Debug, Clone)]
pub struct LocalMigration {
    pub id: MigrationId,
    pub path: PathBuf,
    pub sql: String,
    pub checksum: u64,
    /// What its statements ask of the runner, worked out the first time it
    /// is asked (only pending files are ever asked), then kept.
    classified: OnceLock<Classified>,
}

impl LocalMigration {
    pub fn new(id: MigrationId, path: PathBuf, sql: String, checksum: u64) -> LocalMigration {
        LocalMigration {
            id,
            path,
            sql,
            checksum,
            classified: OnceLock::new(),
        }
    }

    /// The SQL to send: the file without its UTF-8 byte-order mark, which
    /// PostgreSQL would take for part of the first word. The checksum
    /// keeps it, as refinery reads the file whole.
    pub fn script(&self) -> &str {
        script(&self.sql)
    }

    fn classified(&self) -> &Classified {
        // Without the BOM: the splitter would read it as part of the first
        // word (`\u{feff}BEGIN`), and miss what that word says.
        self.classified
            .get_or_init(|| split::classify(self.script()))
    }

    /// How the file runs: in one transaction, or statement by statement.
    pub fn execution(&self) -> &Execution {
        &self.classified().execution
    }

    /// The statements of a file that runs without a transaction (empty for
    /// one that runs in a transaction).
    pub fn statements(&self) -> &[Planned] {
        &self.classified().statements
    }

    /// The statements the file must not hold (see [`split::classify`]).
    pub fn forbidden(&self) -> &[Forbidden] {
        &self.classified().forbidden
    }

    /// Why the file runs without a transaction; `None` when it runs in one.
    pub fn no_transaction(&self) -> Option<String> {
        self.execution().without_transaction()
    }
}

impl fmt::Display for LocalMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id.fmt(f)
    }
}

fn script(sql: &str) -> &str {
    sql.strip_prefix('\u{feff}').unwrap_or(sql)
}

/// refinery's checksum, the one refinery and refinery_cli store: SipHash-1-3
/// with zero keys over the name, the version (as `i32`) and the SQL, each
/// fed through `Hash` — the calls `refinery::Migration::unapplied` makes.
/// Computed here because refinery only offers it behind its file-name
/// regex, whose compilation cost half of a whole no-op run; the tests
/// check it against refinery's own on every build.
pub fn checksum(name: &str, version: i32, sql: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = siphasher::sip::SipHasher13::new();
    name.hash(&mut hasher);
    version.hash(&mut hasher);
    sql.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_refinerys() {
        for (version, name, sql) in [
            (1, "init", "create table t (id int);"),
            (2147483647, "créer_table", "-- é\n\r\nselect 'x';"),
            (42, "a", ""),
        ] {
            let theirs =
                refinery::Migration::unapplied(&format!("V{version}__{name}"), sql).unwrap();
            assert_eq!(
                checksum(name, version, sql),
                theirs.checksum(),
                "V{version}__{name}"
            );
        }
    }

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
