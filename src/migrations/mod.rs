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
use std::sync::{Arc, OnceLock};

mod check;
mod down;
mod file;
pub mod history;
pub mod layout;
pub mod lint;
mod names;
mod plan;
mod problems;
mod script_config;
mod set;
pub mod split;
mod version;
mod walk;

pub use check::{every_problem, WithoutHistory};
pub use layout::{Layout, LayoutFlag};
pub use names::parse_file_name;
pub use plan::{forbidden_in, matches, AheadPolicy, Plan};
pub use problems::{layout_hint, Problem, ProblemKind, Problems};
pub use set::{MigrationSet, Reading};
pub use version::Version;

pub use file::Size;
use layout::annotations::{self, Sections, UpOnly};
use layout::placeholders::Placeholders;
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
        if self.version.is_repeatable() {
            return write!(f, "R__{}", self.name);
        }
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
    /// Whose layout it is in: what of it runs, how it is recorded.
    pub layout: Layout,
    /// What another tool's layout adds to the file; `None` for refinery's
    /// (boxed: a no-op run holds hundreds of files and reads none of it).
    tool: Option<Box<ToolFile>>,
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
            layout: Layout::Refinery,
            tool: None,
            summary: OnceLock::new(),
        }
    }

    /// A file as the folder read found it, in `layout`, its placeholders
    /// to be replaced with `values`.
    fn read(
        id: MigrationId,
        path: PathBuf,
        layout: Layout,
        facts: &file::Facts,
        values: &Arc<Placeholders>,
    ) -> LocalMigration {
        // refinery's files carry nothing more (a no-op run reads hundreds).
        let tool = (layout != Layout::Refinery).then(|| {
            Box::new(ToolFile {
                sections: facts.sections.clone().unwrap_or_default(),
                tool_checksum: match (facts.sha384, facts.crc) {
                    (Some(sum), _) => Some(hex(&sum)),
                    (_, Some(crc)) => Some(crc.to_string().into()),
                    _ => None,
                },
                script: None,
                placeholders: (!facts.placeholders.is_empty()).then(|| Substitution {
                    names: facts.placeholders.clone(),
                    values: Arc::clone(values),
                }),
                reverts: None,
                replaced_checksum: OnceLock::new(),
            })
        });
        LocalMigration {
            layout,
            tool,
            ..LocalMigration::new(id, path, facts.checksum, facts.size)
        }
    }

    /// The checksum its layout's history table keeps: refinery's as a
    /// decimal, sqlx's SHA-384 as hex; `None` where the tool keeps none.
    pub fn recorded_checksum(&self) -> Option<String> {
        match self.layout {
            Layout::Refinery => Some(self.checksum.to_string()),
            // Flyway sums a repeatable with its placeholders replaced, so
            // that a new value runs it again.
            _ if self.id.version.is_repeatable() => self
                .replaced_checksum()
                .map(|sum| sum.to_string())
                .or_else(|| self.file_checksum().map(str::to_string)),
            _ => self.file_checksum().map(str::to_string),
        }
    }

    /// Its tool's checksum of the file as it is.
    pub fn file_checksum(&self) -> Option<&str> {
        self.tool()?.tool_checksum.as_deref()
    }

    /// What it reverts, when it is a down migration: the version left
    /// newest once it has run (`None`: none is).
    pub fn reverts(&self) -> Option<Option<&Version>> {
        let reverts = self.tool.as_ref()?.reverts.as_ref()?;
        Some(reverts.previous.as_ref())
    }

    /// Flyway's script configuration for it: `executeInTransaction=false`
    /// runs it statement by statement, `placeholderReplacement=false`
    /// leaves its `${…}` as they are.
    fn configure(&mut self, in_transaction: Option<bool>, placeholders: Option<bool>) {
        let Some(tool) = &mut self.tool else { return };
        if in_transaction == Some(false) {
            tool.sections.no_transaction = true;
        }
        if placeholders == Some(false) {
            tool.placeholders = None;
        }
    }

    /// Its path from the migrations folder (its name, when not known).
    pub fn script(&self) -> &str {
        self.tool()
            .and_then(|t| t.script.as_deref())
            .or_else(|| self.path.file_name().and_then(|n| n.to_str()))
            .unwrap_or_default()
    }

    /// Records its path from the migrations folder `dir`.
    fn set_script(&mut self, dir: &std::path::Path) {
        // The path is the folder's joined with the rest: cut as bytes (a
        // path's own prefix test compares it component by component).
        use std::os::unix::ffi::OsStrExt;
        let relative = self
            .path
            .as_os_str()
            .as_bytes()
            .strip_prefix(dir.as_os_str().as_bytes())
            .map(|rest| rest.strip_prefix(b"/").unwrap_or(rest));
        if let (Some(relative), Some(tool)) = (relative, &mut self.tool) {
            tool.script = Some(String::from_utf8_lossy(relative).into());
        }
    }

    /// The text to send: the file without its UTF-8 byte-order mark, which
    /// PostgreSQL would take for part of the first word, read now and
    /// checked against the checksum it had when the run read the folder.
    pub fn read_script(&self) -> Result<String, Problem> {
        let text = file::text(
            &self.path,
            &self.id.name,
            refinery_version(&self.id.version),
            self.checksum,
            self.size.bytes,
        )
        .map_err(|why| self.unreadable(why))?;
        let sections = self.sections();
        let text = if sections == Sections::default() {
            text
        } else {
            annotations::up_only(&text, sections)
        };
        match self.tool().and_then(|t| t.placeholders.as_ref()) {
            Some(p) => p
                .values
                .replace(&text, self.file_name())
                .map_err(|why| self.unreadable(why)),
            None => Ok(text),
        }
    }

    /// Flyway's checksum of the file with its placeholders replaced, what
    /// Flyway records for a repeatable one (`None` without placeholders,
    /// or when it cannot be read again).
    /// Read once: the plan, the guard and the row all ask it.
    pub fn replaced_checksum(&self) -> Option<i32> {
        let tool = self.tool()?;
        tool.placeholders.as_ref()?;
        *tool.replaced_checksum.get_or_init(|| {
            let text = self.read_script().ok()?;
            let mut sum = layout::flyway::Checksum::new();
            sum.update(text.as_bytes());
            Some(sum.finish())
        })
    }

    fn file_name(&self) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// Its placeholders without a value, each with its first line.
    pub fn unset_placeholders(&self) -> Vec<(&str, u64)> {
        let placeholders = self.tool().and_then(|t| t.placeholders.as_ref());
        placeholders.map_or_else(Vec::new, |p| {
            p.names
                .iter()
                .filter(|(name, _)| !p.values.knows(name))
                .map(|(name, line)| (name.as_str(), *line))
                .collect()
        })
    }

    /// What the file's statements ask of the runner, read as a stream.
    pub fn summary(&self) -> Result<&Summary, &Problem> {
        self.summary
            .get_or_init(|| {
                Box::new(
                    file::open(&self.path)
                        .map_err(|why| self.unreadable(why))
                        .and_then(|file| {
                            let file = file::Sized::new(file, self.size.bytes);
                            let sections = self.sections();
                            let values = self
                                .tool()
                                .and_then(|t| t.placeholders.as_ref())
                                .map(|p| (Arc::clone(&p.values), self.file_name().to_string()));
                            if sections == Sections::default() && values.is_none() {
                                split::summarize(file)
                            } else {
                                split::summarize(UpOnly::new(file, sections).replacing(values))
                            }
                            .map_err(|e| self.unreadable(e.to_string()))
                        }),
                )
            })
            .as_ref()
            .as_ref()
    }

    /// Gives it its summary from `text`, what [`LocalMigration::read_script`]
    /// returned, when nothing has read one yet: the summary of the text
    /// that runs, as the stream would give it, without opening the file a
    /// second time (the lint reads each pending file whole anyway).
    pub fn summarize_text(&self, text: &str) {
        self.summary.get_or_init(|| {
            Box::new(split::summarize(text.as_bytes()).map_err(|e| self.unreadable(e.to_string())))
        });
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

/// Lower-case hex, as sqlx's table shows its checksum: a table lookup per
/// byte (a `format!` per byte was most of a no-op run in sqlx's layout).
fn hex(bytes: &[u8]) -> Box<str> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    text.into_boxed_str()
}

/// refinery's names hold an `i32` version, which its checksum hashes;
/// other layouts' wider versions hash as 0 (that checksum only checks,
/// then, that what runs is what was read).
fn refinery_version(version: &Version) -> i32 {
    version
        .as_number()
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or_default()
}

/// What another tool's layout adds to a file.
#[derive(Debug, Clone, Default)]
struct ToolFile {
    /// Its Up section and whether it asks for no transaction (goose,
    /// dbmate, sqlx).
    sections: Sections,
    /// Its tool's checksum of it, as that tool's table keeps it (sqlx's
    /// SHA-384 in hex, Flyway's CRC-32 in decimal).
    tool_checksum: Option<Box<str>>,
    /// Its path from the migrations folder, `/`-separated (Flyway's
    /// `script`).
    script: Option<Box<str>>,
    /// Flyway's placeholders in it, and the values they take.
    placeholders: Option<Substitution>,
    /// It reverts an applied migration (`down`): its history change takes
    /// the row away.
    reverts: Option<down::Reverts>,
    /// [`LocalMigration::replaced_checksum`], once asked.
    replaced_checksum: OnceLock<Option<i32>>,
}

impl LocalMigration {
    fn tool(&self) -> Option<&ToolFile> {
        self.tool.as_deref()
    }

    /// Its sections (none for refinery's files).
    fn sections(&self) -> Sections {
        self.tool().map(|t| t.sections).unwrap_or_default()
    }
}

/// A file's placeholders and the values they take.
#[derive(Debug, Clone)]
struct Substitution {
    names: Vec<(String, u64)>,
    values: Arc<Placeholders>,
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
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(&*hex(&[0, 9, 10, 255]), "00090aff");
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
