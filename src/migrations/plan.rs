//! The join of the files with the history: what is applied, pending, ahead
//! (applied by a newer release), and what makes the set unsafe to run
//! (divergent, missing, out of order).

use std::path::Path;

use super::history::HistoryRow;
use super::problems::{Problem, ProblemKind, Problems};
use super::split::{ForbiddenKind, Summary};
use super::{Layout, LocalMigration, MigrationId, MigrationSet, Version};

/// What to make of applied migrations above the newest local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AheadPolicy {
    /// A newer release applied them: the schema is current for this one.
    #[default]
    Allow,
    /// A problem (exit 6), for teams that never run an image older than
    /// its database.
    Reject,
}

/// What the history and the files say together.
#[derive(Debug, Clone, Default)]
pub struct Plan<'a> {
    /// Applied migrations, in version order (as the history has them).
    pub applied: Vec<HistoryRow>,
    /// Files to apply, in version order, up to the target.
    pub pending: Vec<&'a LocalMigration>,
    /// Files past the target, left for a later run.
    pub beyond_target: usize,
    /// Applied migrations above the newest file (`--ahead allow`): a newer
    /// release applied them. Also in `applied`.
    pub ahead: Vec<HistoryRow>,
    /// The newest file's version.
    pub newest_local: Option<Version>,
    /// Files not applied below an applied version (each a problem): once
    /// renumbered they are pending, so their statements are checked too.
    pub out_of_order: Vec<&'a LocalMigration>,
}

impl<'a> Plan<'a> {
    /// Compares files and history. Divergent, missing and out-of-order
    /// migrations are problems (refinery's `abort_divergent` and
    /// `abort_missing`, both on), except applied migrations above the
    /// newest file: during a rolling deploy or a rollback an older image
    /// meets a database a newer one has migrated, and refusing to start it
    /// would turn every rollback into an outage. `ahead` decides whether
    /// they are current (`allow`) or problems (`reject`).
    pub fn new(
        set: &'a MigrationSet,
        history: &[HistoryRow],
        target: Option<&Version>,
        ahead_policy: AheadPolicy,
    ) -> Result<Plan<'a>, Problems> {
        let (plan, problems) = Plan::joined(set, history, target, ahead_policy);
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(Problems(problems))
        }
    }

    /// The plan as [`Plan::new`] makes it, and its problems beside it: what
    /// is pending is known even in a set that cannot run, so that its
    /// files can be checked in the same run.
    pub fn joined(
        set: &'a MigrationSet,
        history: &[HistoryRow],
        target: Option<&Version>,
        ahead_policy: AheadPolicy,
    ) -> (Plan<'a>, Vec<Problem>) {
        // Marks read off the rows as they are, before any stands for others.
        let mut problems: Vec<Problem> = history
            .iter()
            .filter(|a| a.dirty)
            .map(|a| dirty(a, set.layout))
            .collect();
        // Repeatables' rows are matched by description, apart from the
        // versions.
        let (repeated, versioned): (Vec<&HistoryRow>, Vec<&HistoryRow>) = history
            .iter()
            .partition(|row| row.id.version.is_repeatable());
        let kept;
        let history = if repeated.is_empty() {
            history
        } else {
            kept = versioned.into_iter().cloned().collect::<Vec<_>>();
            &kept[..]
        };
        let mut sorted;
        let history = if history.iter().any(|row| row.through) {
            sorted = through(set, history);
            &sorted
        } else if history.is_sorted_by(|a, b| a.id.version <= b.id.version) {
            history
        } else {
            sorted = history.to_vec();
            sorted.sort_by(|a, b| a.id.version.cmp(&b.id.version));
            &sorted
        };
        let newest_applied = history.last().map(|a| &a.id.version);
        let newest_local = set.last_version();
        let mut pending = Vec::new();
        let mut beyond_target = 0;
        let mut ahead = Vec::new();
        let mut out_of_order = Vec::new();
        // Both lists are in version order: one merge pass, no lookups.
        let mut applied = history.iter().enumerate().peekable();
        let mut files = set.migrations.iter().enumerate().peekable();
        // Which row is which file's: other tools' rows show their files'
        // names (the recorded ones are descriptions, or nothing).
        let mut matched: Vec<(usize, usize)> = Vec::new();
        loop {
            let (a, m) = (
                applied.peek().map(|(_, a)| *a),
                files.peek().map(|(_, m)| *m),
            );
            match (a, m) {
                (None, None) => break,
                (Some(a), Some(m)) if a.id.version == m.id.version => {
                    if let Some(problem) = divergence(a, m) {
                        problems.push(problem);
                    }
                    if let (Some((ai, _)), Some((fi, _))) = (applied.next(), files.next()) {
                        if set.layout != Layout::Refinery {
                            matched.push((ai, fi));
                        }
                    }
                }
                // Past the last file: every file is older than `a`. With no
                // file at all, the folder is far more likely the wrong one
                // (a bad --migrations, an image built without them) than a
                // release that has none, so that stays `missing`.
                (Some(a), None) => {
                    match (newest_local, ahead_policy) {
                        (None, _) => problems.push(missing(a)),
                        (Some(newest), AheadPolicy::Reject) => {
                            problems.push(rejected_ahead(a, newest));
                        }
                        (Some(_), AheadPolicy::Allow) => ahead.push(a.clone()),
                    }
                    applied.next();
                }
                (Some(a), Some(m)) if a.id.version < m.id.version => {
                    problems.push(missing(a));
                    applied.next();
                }
                (_, Some(m)) => {
                    let version = &m.id.version;
                    if let Some(newest) = newest_applied.filter(|newest| *newest > version) {
                        problems.push(Problem {
                            kind: ProblemKind::OutOfOrder,
                            message: format!(
                                "{}: not applied, but the later version {newest} is; give it a version above {newest}",
                                m.path.display()
                            ),
                            file: Some(m.path.clone()),
                            version: Some(version.clone()),
                            line: None,
                        });
                        out_of_order.push(m);
                    } else if target.is_some_and(|t| version > t) {
                        beyond_target += 1;
                    } else {
                        pending.push(m);
                    }
                    files.next();
                }
            }
        }
        // Once every versioned file is applied or is to be (none left past
        // a target), a repeatable runs when new or changed, as Flyway runs
        // it: after them, in its order.
        if beyond_target == 0 {
            for file in &set.repeatables {
                // The newest: rows are in installed order.
                let row = repeated
                    .iter()
                    .rfind(|row| set.layout.records_name_as(&file.id.name, &row.id.name));
                if row.is_none_or(|row| !same_repeatable(row, file)) {
                    pending.push(file);
                }
            }
        }
        let mut applied = history.to_vec();
        // Each repeatable once, its newest row (a run that plans again from
        // its own rows has added one).
        applied.extend(repeated.iter().enumerate().filter_map(|(i, row)| {
            let newer = repeated[i + 1..].iter().any(|r| r.id.name == row.id.name);
            (!newer).then(|| (*row).clone())
        }));
        for (row, file) in matched {
            applied[row]
                .id
                .name
                .clone_from(&set.migrations[file].id.name);
        }
        for row in applied
            .iter_mut()
            .filter(|row| row.id.version.is_repeatable())
        {
            let file = set
                .repeatables
                .iter()
                .find(|file| set.layout.records_name_as(&file.id.name, &row.id.name));
            if let Some(file) = file {
                row.id.name.clone_from(&file.id.name);
            }
        }
        let plan = Plan {
            applied,
            pending,
            beyond_target,
            ahead,
            newest_local: newest_local.cloned(),
            out_of_order,
        };
        (plan, problems)
    }

    /// The statements that must not run (transaction control in a file
    /// that runs in miglock's transaction, COPY FROM stdin, psql
    /// meta-commands…), and a file that cannot be read again, as problems,
    /// before anything runs: of the pending files, and of those out of
    /// order (pending once renumbered). Applied files are not looked at: a
    /// rule added later must not make an applied set invalid.
    pub fn forbidden(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for migration in self.pending.iter().chain(&self.out_of_order) {
            // Checked before the statements: without its values, a file's
            // text is not what would run.
            let unset = migration.unset_placeholders();
            if !unset.is_empty() {
                problems.extend(unset.into_iter().map(|(name, line)| Problem {
                    kind: ProblemKind::Placeholder,
                    message: format!(
                        "{}: line {line}: {}",
                        migration.path.display(),
                        super::layout::placeholders::unset(name)
                    ),
                    file: Some(migration.path.clone()),
                    version: Some(migration.id.version.clone()),
                    line: Some(line as usize),
                }));
                continue;
            }
            match migration.summary() {
                Ok(summary) => problems.extend(forbidden_in(
                    &migration.path,
                    Some(&migration.id.version),
                    summary,
                )),
                Err(problem) => problems.push(problem.clone()),
            }
        }
        problems
    }

    /// The newest applied migration, as `V{n}__{name}`.
    pub fn newest_applied(&self) -> Option<String> {
        // A repeatable is no version: the newest versioned row.
        self.applied
            .iter()
            .rfind(|row| !row.id.version.is_repeatable())
            .map(|row| row.id.to_string())
    }

    /// The newest version once the pending ones are applied.
    pub fn newest_after(&self) -> Option<String> {
        self.pending
            .iter()
            .rfind(|m| !m.id.version.is_repeatable())
            .map(ToString::to_string)
            .or_else(|| self.newest_applied())
    }

    /// How many migrations the history records once the pending ones are
    /// applied: a changed repeatable is one already.
    pub fn recorded_after(&self) -> usize {
        let again = self
            .pending
            .iter()
            .filter(|m| {
                m.id.version.is_repeatable()
                    && self
                        .applied
                        .iter()
                        .any(|row| row.id.version.is_repeatable() && row.id.name == m.id.name)
            })
            .count();
        self.applied.len() + self.pending.len() - again
    }
}

/// The statements of the file at `path` that must not run, as problems.
pub fn forbidden_in(path: &Path, version: Option<&Version>, summary: &Summary) -> Vec<Problem> {
    summary
        .forbidden
        .iter()
        .map(|forbidden| Problem {
            kind: match forbidden.kind {
                ForbiddenKind::TransactionControl => ProblemKind::TransactionControl,
                ForbiddenKind::Unsupported => ProblemKind::Unsupported,
                ForbiddenKind::PsqlMetaCommand => ProblemKind::PsqlMetaCommand,
                ForbiddenKind::DownSection => ProblemKind::DownSection,
            },
            message: format!("{}: {}", path.display(), forbidden.message),
            file: Some(path.to_path_buf()),
            version: version.cloned(),
            line: Some(forbidden.line),
        })
        .collect()
}

fn missing(applied: &HistoryRow) -> Problem {
    Problem {
        kind: ProblemKind::Missing,
        message: format!(
            "{} was applied on {} but its file is gone from the migrations folder",
            applied.id, applied.applied_on
        ),
        file: None,
        version: Some(applied.id.version.clone()),
        line: None,
    }
}

fn rejected_ahead(applied: &HistoryRow, newest_local: &Version) -> Problem {
    Problem {
        kind: ProblemKind::Ahead,
        message: format!(
            "{} was applied on {} by a newer release: it is newer than this image, whose \
             newest migration is V{newest_local} (--ahead reject refuses to run with it)",
            applied.id, applied.applied_on
        ),
        file: None,
        version: Some(applied.id.version.clone()),
        line: None,
    }
}

/// A row that stands for every version up to its own (golang-migrate's
/// one row, Flyway's baseline) as the rows of the files below it, beside
/// the rows the history has.
fn through(set: &MigrationSet, history: &[HistoryRow]) -> Vec<HistoryRow> {
    let mut rows = history.to_vec();
    if let Some(upto) = history
        .iter()
        .filter(|r| r.through)
        .map(|r| &r.id.version)
        .max()
    {
        let recorded: std::collections::HashSet<&Version> =
            history.iter().map(|r| &r.id.version).collect();
        rows.extend(
            set.migrations
                .iter()
                .filter(|m| m.id.version < *upto && !recorded.contains(&m.id.version))
                .map(|m| HistoryRow {
                    id: MigrationId {
                        version: m.id.version.clone(),
                        name: set.layout.recorded_name(&m.id.name).into_owned(),
                    },
                    applied_on: String::new(),
                    checksum: String::new(),
                    dirty: false,
                    through: true,
                }),
        );
    }
    // Version 0 stands for none (golang-migrate's -1): its dirty mark was
    // read before this.
    rows.retain(|r| !(r.through && r.id.version == Version::Number(0)));
    rows.sort_by(|a, b| a.id.version.cmp(&b.id.version));
    rows
}

/// A row another tool marked half applied.
fn dirty(applied: &HistoryRow, layout: Layout) -> Problem {
    let fix = match layout {
        Layout::GolangMigrate => {
            // Version 0 is golang-migrate's -1: the first migration's down.
            let version = match &applied.id.version {
                Version::Number(0) => "-1".to_string(),
                v => v.to_string(),
            };
            format!(
                "golang-migrate marked version {version} dirty: a run of it failed part way. \
                 Check the schema, finish or undo that migration by hand, then clear the mark \
                 (migrate force {version}, or UPDATE the row's dirty to false)"
            )
        }
        _ if applied.id.version.is_repeatable() => format!(
            "{layout} recorded the repeatable migration {:?} as failed (success = false): check \
             the schema, then delete that row",
            applied.id.name
        ),
        _ => format!(
            "{layout} recorded version {} as failed (success = false): check the schema, then \
             delete that row",
            applied.id.version
        ),
    };
    Problem {
        kind: ProblemKind::Dirty,
        message: fix,
        file: None,
        version: Some(applied.id.version.clone()),
        line: None,
    }
}

/// Whether a repeatable's newest row is of the file as it is: its checksum
/// as Flyway sums a repeatable (placeholders replaced), or over the file
/// as it is, which Flyway also takes for the same. A file that cannot be
/// read again is not the same: the run's read of it says why.
fn same_repeatable(row: &HistoryRow, file: &LocalMigration) -> bool {
    file.file_checksum() == Some(row.checksum.as_str())
        || file.recorded_checksum().as_deref() == Some(row.checksum.as_str())
}

/// Whether `file` is what the history row `applied` records, as its
/// layout's tool compares them (name and checksum where the tool keeps
/// them).
pub fn matches(applied: &HistoryRow, file: &LocalMigration) -> bool {
    divergence(applied, file).is_none()
}

/// An applied migration whose file no longer matches it: renamed, or with
/// other content (refinery's `abort_divergent`; sqlx's checksum check).
fn divergence(applied: &HistoryRow, file: &LocalMigration) -> Option<Problem> {
    // Compared without a copy of either: every applied file is, each run.
    let changed = match file.layout {
        Layout::Refinery => applied.checksum.parse::<u64>() != Ok(file.checksum),
        _ => file.file_checksum().is_some_and(|sum| {
            !applied.checksum.is_empty() && !applied.checksum.eq_ignore_ascii_case(sum)
        }),
    };
    // A row that stands for the files below it names none of them.
    let what = if file.layout.checks_names()
        && !applied.through
        && !file.layout.records_name_as(&file.id.name, &applied.id.name)
    {
        format!(
            "the name changed from {:?} to {:?}",
            applied.id.name, file.id.name
        )
    } else if changed {
        format!(
            "its content changed (checksum {} applied, {} on disk)",
            applied.checksum,
            file.recorded_checksum().unwrap_or_default()
        )
    } else {
        return None;
    };
    Some(Problem {
        kind: ProblemKind::Divergent,
        message: format!(
            "{}: applied on {} but {what}",
            file.path.display(),
            applied.applied_on
        ),
        file: Some(file.path.clone()),
        version: Some(applied.id.version.clone()),
        line: None,
    })
}

#[cfg(test)]
mod tests;
