//! Why a migration set is unsafe to run: every problem of every file, each
//! with its kind, file, version and line where it has them.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::names::{is_flyway_style, is_other_tools_style};
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
    /// A pending file with goose's or dbmate's Down section, which would
    /// run right after its Up section (the markers are comments).
    DownSection,
    /// A file whose layout's annotations do not read as that tool reads
    /// them (goose's `-- +goose Up` missing, dbmate's `-- migrate:down`
    /// missing, SQL before the Up annotation…).
    Annotation,
    /// Another tool's history says a migration is half applied (a
    /// golang-migrate `dirty` row, a sqlx row with `success = false`).
    Dirty,
    /// A pending Flyway file with a `${placeholder}` that has no value.
    Placeholder,
    /// `down`: an applied migration with no down script to revert it.
    NoDown,
    /// The folder, a subfolder or a file that every user may write to.
    UnsafePermissions,
    /// A lint finding at `deny` level (`miglock lint`, `apply --lint deny`).
    Lint,
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
            ProblemKind::DownSection => "down_section",
            ProblemKind::Annotation => "annotation",
            ProblemKind::Dirty => "dirty",
            ProblemKind::Placeholder => "placeholder",
            ProblemKind::NoDown => "no_down",
            ProblemKind::UnsafePermissions => "unsafe_permissions",
            ProblemKind::Lint => "lint",
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
        if let Some(hint) = layout_hint(&self.0) {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
/// The one word a set gets on names that look like another tool's
/// (Flyway's, goose's, dbmate's, sqlx's, golang-migrate's), however many
/// files have them.
pub fn layout_hint(problems: &[Problem]) -> Option<String> {
    let names: Vec<&str> = problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Misnamed)
        .filter_map(|p| p.file.as_deref()?.file_name()?.to_str())
        .collect();
    let mut hints = Vec::new();
    if names.iter().any(|n| is_flyway_style(n)) {
        hints.push(
            "hint: some names look like Flyway's. --layout flyway (MIGLOCK_LAYOUT=flyway) runs the \
             folder as it is, with Flyway's history table (repeatable R__ migrations are not \
             supported yet). To convert it to refinery's layout instead: V<integer>__<name>.sql, \
             the name made of letters, digits and _; give each file an integer version that keeps \
             the order, e.g. V1.0.10 → V10010 (every part padded to the same width) or renumber \
             them 1, 2, 3…; repeatable (R__) and undo (U) migrations are not supported."
                .to_string(),
        );
    }
    let others: Vec<bool> = names
        .iter()
        .filter_map(|n| is_other_tools_style(n))
        .collect();
    if !others.is_empty() {
        let pairs = if others.contains(&true) {
            " or golang-migrate's (.up.sql and .down.sql pairs)"
        } else {
            ""
        };
        hints.push(format!(
            "hint: some names look like goose's, dbmate's or sqlx's (<version>_<name>.sql){pairs}. \
             miglock runs such a folder as it is, with that tool's history table: --layout goose, \
             dbmate, sqlx or golang-migrate (MIGLOCK_LAYOUT; --layout auto, the default, picks it \
             when no file has a refinery name). To convert it to refinery's layout instead: \
             V<integer>__<name>.sql, versions from 1 to 2147483647 (renumber timestamps 1, 2, 3… \
             in their order). Renaming is not enough: take each file's Down section out \
             (-- +goose Down, -- migrate:down; leave .down.sql files out of the folder), and \
             record what that tool applied with miglock baseline (see Adopting miglock in the \
             docs)."
        ));
    }
    (!hints.is_empty()).then(|| hints.join("\n"))
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
            DownSection,
            Annotation,
            Dirty,
            Placeholder,
            NoDown,
            UnsafePermissions,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
