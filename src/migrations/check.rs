//! Everything wrong with a migration set, in one list: what reading the
//! folder found (names, duplicates, unreadable files), what the history
//! says of the files (divergent, missing, out of order), and the
//! statements no pending file may hold. One run names them all, so fixing
//! one kind never reveals the next kind on the next run.
//!
//! Which files are pending is the history's to say, and an applied file is
//! never classified (a rule added later must not make an applied set
//! invalid): without the history, only what the folder alone shows is
//! known.

use std::fmt;
use std::io::BufReader;

use super::history::HistoryRow;
use super::plan::forbidden_in;
use super::problems::{Problem, ProblemKind, Problems};
use super::set::{Reading, Stray};
use super::{file, split, AheadPolicy, Plan, Version};

/// The plan (when the history is known) and every problem of `reading`
/// against `history` (`None`: it could not be read, so only what the
/// folder alone shows).
pub fn every_problem<'a>(
    reading: &'a Reading,
    history: Option<&[HistoryRow]>,
    target: Option<&Version>,
    ahead: AheadPolicy,
) -> (Option<Plan<'a>>, Vec<Problem>) {
    let mut problems = reading.problems.clone();
    let Some(history) = history else {
        return (None, problems);
    };
    let (plan, joined) = Plan::joined(&reading.set, history, target, ahead);
    // A file that is there, only misnamed, duplicated or unreadable, is
    // already a problem: its applied version is not also "gone".
    problems.extend(joined.into_iter().filter(|p| {
        p.kind != ProblemKind::Missing
            || !p
                .version
                .as_ref()
                .is_some_and(|v| reading.unusable.contains(v))
    }));
    problems.extend(plan.forbidden());
    for stray in &reading.strays {
        let applied = stray
            .version
            .as_ref()
            .is_some_and(|v| history.iter().any(|row| row.id.version == *v));
        if !applied {
            problems.extend(stray_problems(stray));
        }
    }
    (Some(plan), problems)
}

/// The statements a stray file must not hold, were it pending.
fn stray_problems(stray: &Stray) -> Vec<Problem> {
    let summary = file::open(&stray.path).and_then(|f| {
        split::summarize(BufReader::new(f)).map_err(|e| format!("cannot be read ({e})"))
    });
    match summary {
        Ok(summary) => forbidden_in(&stray.path, stray.version.as_ref(), &summary),
        Err(why) => vec![Problem {
            kind: ProblemKind::Unreadable,
            message: format!("{}: {why}", stray.path.display()),
            file: Some(stray.path.clone()),
            version: stray.version.clone(),
            line: None,
        }],
    }
}

/// The problems found without the history, and why it could not be read:
/// what a run that reaches the database would check besides.
#[derive(Debug)]
pub struct WithoutHistory {
    pub problems: Problems,
    pub why: String,
}

impl fmt::Display for WithoutHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\nNot checked yet: the statements of the pending files, and whether applied files \
             changed or are gone. Both need the history, which could not be read ({}); a run \
             that reads it lists those problems too.",
            self.problems, self.why
        )
    }
}

impl std::error::Error for WithoutHistory {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::MigrationSet;

    fn row(version: i32, name: &str, checksum: u64) -> HistoryRow {
        HistoryRow {
            id: crate::migrations::MigrationId {
                version: version.into(),
                name: name.into(),
            },
            applied_on: "2026-01-01T00:00:00Z".into(),
            checksum: checksum.to_string(),
            dirty: false,
            through: false,
        }
    }

    fn kinds(problems: &[Problem]) -> Vec<(ProblemKind, Option<String>)> {
        problems
            .iter()
            .map(|p| (p.kind, p.version.as_ref().map(ToString::to_string)))
            .collect()
    }

    #[test]
    fn names_contents_and_history_are_checked_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, sql: &str| std::fs::write(dir.path().join(name), sql).unwrap();
        write("V1__applied.sql", "BEGIN;\nselect 1;\nCOMMIT;\n");
        write("V2__edited.sql", "select 2;\n");
        write("V3__misnamed-applied.sql", "COMMIT;\n");
        write("V4__pending.sql", "select 4;\nCOMMIT;\n");
        write("V5__renamed-pending.sql", "\\i other.sql\n");
        write("V6.1__flyway.sql", "ROLLBACK;\n");
        write("V7__twice.sql", "select 7;\n");
        write("V07__twice_again.sql", "SAVEPOINT a;\n");
        let reading = MigrationSet::read(dir.path(), crate::migrations::Layout::Refinery);
        assert_eq!(reading.problems.len(), 4, "{:#?}", reading.problems);
        let set = &reading.set;
        let sum = |v: i32| {
            set.migrations
                .iter()
                .find(|m| m.id.version == v.into())
                .unwrap()
                .checksum
        };
        let history = [
            row(1, "applied", sum(1)),
            row(2, "edited", 1),
            row(3, "misnamed_applied", 3),
        ];
        let (plan, problems) = every_problem(&reading, Some(&history), None, AheadPolicy::Allow);
        use ProblemKind::*;
        let v = |n: &str| Some(n.to_string());
        assert_eq!(
            kinds(&problems),
            [
                // The folder: three names, one version twice.
                (Misnamed, None),
                (Misnamed, None),
                (Misnamed, None),
                (Duplicate, v("7")),
                // The history: V2 changed; V3's file is there, misnamed,
                // so it is not also gone.
                (Divergent, v("2")),
                // The pending file's statements; the applied V1's and the
                // misnamed V3's (its version applied) are not looked at.
                (TransactionControl, v("4")),
                // Files pending once put right.
                (PsqlMetaCommand, v("5")),
                (TransactionControl, None),
                (TransactionControl, v("7")),
            ],
            "{problems:#?}"
        );
        assert_eq!(plan.unwrap().pending.len(), 1);

        // Without the history, only the folder's own problems.
        let (plan, problems) = every_problem(&reading, None, None, AheadPolicy::Allow);
        assert!(plan.is_none());
        assert_eq!(problems, reading.problems);
    }

    #[test]
    fn out_of_order_files_are_checked_as_pending_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("V1__late.sql"), "COMMIT;\n").unwrap();
        std::fs::write(dir.path().join("V2__b.sql"), "select 2;\n").unwrap();
        let reading = MigrationSet::read(dir.path(), crate::migrations::Layout::Refinery);
        let history = [row(2, "b", reading.set.migrations[1].checksum)];
        let (_, problems) = every_problem(&reading, Some(&history), None, AheadPolicy::Allow);
        let kinds: Vec<ProblemKind> = problems.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [ProblemKind::OutOfOrder, ProblemKind::TransactionControl]
        );
    }
}
