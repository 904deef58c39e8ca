//! Why a migration set is unsafe to run: every problem of every file, each
//! with its kind, file, version and line where it has them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::names::is_flyway_style;
use super::Version;

/// Why a migration set is unsafe to run. Every problem found is reported,
/// not just the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_path")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// The line of `file` the problem is on, where it is on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
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
    /// A file that cannot be read, is not UTF-8, holds a NUL byte, or is
    /// empty.
    Unreadable,
    /// An applied migration whose file changed.
    Divergent,
    /// An applied migration whose file is gone.
    Missing,
    /// A file not applied although a later version is.
    OutOfOrder,
    /// An applied migration newer than every file here (a newer release
    /// applied it), refused because of `--ahead reject`.
    Ahead,
    /// A pending file that runs in miglock's transaction but controls the
    /// transaction itself (BEGIN, COMMIT, SAVEPOINT…).
    TransactionControl,
    /// A pending file with a statement miglock cannot run (`COPY … FROM
    /// stdin`, `DISCARD ALL`).
    Unsupported,
    /// A pending file with a psql meta-command (`\i`, `\set`, `\connect`…),
    /// which psql runs itself and PostgreSQL cannot.
    PsqlMetaCommand,
    /// The folder, a subfolder or a file that every user may write to.
    UnsafePermissions,
}

/// A path in JSON even when it is not UTF-8 (bad bytes shown as U+FFFD):
/// the file that is misnamed for that very reason must still be named.
fn lossy_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_str(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
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
            ProblemKind::Ahead => "ahead",
            ProblemKind::TransactionControl => "transaction_control",
            ProblemKind::Unsupported => "unsupported",
            ProblemKind::PsqlMetaCommand => "psql_meta_command",
            ProblemKind::UnsafePermissions => "unsafe_permissions",
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
        if let Some(hint) = flyway_hint(&self.0) {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
/// The one word on Flyway names a set gets, however many files have them.
pub fn flyway_hint(problems: &[Problem]) -> Option<&'static str> {
    let flyway = problems.iter().any(|p| {
        p.kind == ProblemKind::Misnamed
            && p.file
                .as_deref()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .is_some_and(is_flyway_style)
    });
    flyway.then_some(
        "hint: some names look like Flyway's. miglock expects V<integer>__<name>.sql, the name made \
         of letters, digits and _. Give each file an integer version that keeps the order, e.g. \
         V1.0.10 → V10010 (every part padded to the same width) or renumber them 1, 2, 3…; \
         repeatable (R__) and undo (U) migrations are not supported.",
    )
}

impl From<Problem> for Problems {
    fn from(problem: Problem) -> Problems {
        Problems(vec![problem])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_kind_words_are_the_json_words() {
        use ProblemKind::*;
        for kind in [
            Folder,
            Misnamed,
            Duplicate,
            Unreadable,
            Divergent,
            Missing,
            OutOfOrder,
            Ahead,
            TransactionControl,
            Unsupported,
            PsqlMetaCommand,
            UnsafePermissions,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
