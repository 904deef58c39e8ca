//! The join of files and history, on sets made here.

use std::path::PathBuf;

use super::*;
use crate::migrations::file::checksum;
use crate::migrations::{MigrationId, Size};

const ALLOW: AheadPolicy = AheadPolicy::Allow;

fn set(files: &[(i32, &str, &str)]) -> MigrationSet {
    MigrationSet {
        layout: crate::migrations::Layout::Refinery,
        downs: Vec::new(),
        placeholders: Default::default(),
        repeatables: Vec::new(),
        migrations: files
            .iter()
            .map(|(v, name, sql)| {
                LocalMigration::new(
                    MigrationId {
                        version: (*v).into(),
                        name: name.to_string(),
                    },
                    PathBuf::from(format!("m/V{v}__{name}.sql")),
                    checksum(name, *v, sql),
                    Size::default(),
                )
            })
            .collect(),
    }
}

fn applied(m: &LocalMigration) -> HistoryRow {
    HistoryRow {
        id: m.id.clone(),
        applied_on: "2026-01-01T00:00:00Z".into(),
        checksum: m.checksum.to_string(),
        dirty: false,
        through: false,
    }
}

fn versions<'a>(rows: impl IntoIterator<Item = &'a MigrationId>) -> Vec<String> {
    rows.into_iter().map(|id| id.version.to_string()).collect()
}

#[test]
fn plan_lists_pending_after_applied() {
    let s = set(&[(1, "a", "x"), (2, "b", "y"), (5, "c", "z")]);
    let plan = Plan::new(&s, &[applied(&s.migrations[0])], None, ALLOW).unwrap();
    assert_eq!(versions(plan.pending.iter().map(|m| &m.id)), ["2", "5"]);
    let four = Version::from(4);
    let plan = Plan::new(&s, &[applied(&s.migrations[0])], Some(&four), ALLOW).unwrap();
    assert_eq!(plan.pending.len(), 1);
    assert_eq!(plan.beyond_target, 1);
}

#[test]
fn plan_reports_every_divergent_missing_and_out_of_order_migration() {
    let s = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z"), (10, "d", "w")]);
    let mut renamed = applied(&s.migrations[0]);
    renamed.id.name = "old".into();
    let mut edited = applied(&s.migrations[1]);
    edited.checksum = "1".into();
    let mut gone = applied(&s.migrations[2]);
    gone.id.version = 9.into();
    let err = Plan::new(&s, &[renamed, edited, gone], None, ALLOW).unwrap_err();
    let kinds: Vec<ProblemKind> = err.0.iter().map(|p| p.kind).collect();
    // In version order: V1, V2, V3 (a file below the applied V9), V9
    // (gone, and below the newest file V10, so no newer release's).
    assert_eq!(
        kinds,
        [
            ProblemKind::Divergent,
            ProblemKind::Divergent,
            ProblemKind::OutOfOrder,
            ProblemKind::Missing
        ]
    );
    let text = err.to_string();
    assert!(text.contains("4 problems"), "{text}");
    assert!(text.contains("name changed"), "{text}");
    assert!(text.contains("content changed"), "{text}");
    assert!(text.contains("file is gone"), "{text}");
    assert!(text.contains("later version 9"), "{text}");
}

#[test]
fn applied_migrations_above_the_newest_file_are_ahead_not_missing() {
    let new = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z"), (5, "e", "v")]);
    let history: Vec<HistoryRow> = new.migrations.iter().map(applied).collect();
    let old = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z")]);
    let plan = Plan::new(&old, &history, None, ALLOW).unwrap();
    assert!(plan.pending.is_empty());
    assert_eq!(plan.newest_local, Some(Version::from(3)));
    assert_eq!(versions(plan.ahead.iter().map(|a| &a.id)), ["5"]);
    assert_eq!(plan.applied.len(), 4);

    let err = Plan::new(&old, &history, None, AheadPolicy::Reject).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].kind, ProblemKind::Ahead);
    assert_eq!(err.0[0].version, Some(Version::from(5)));
    let text = err.to_string();
    assert!(text.contains("newer than this image"), "{text}");
    assert!(text.contains("V3"), "{text}");
    assert!(!text.contains("gone"), "{text}");
}

#[test]
fn ahead_never_excuses_a_gap_or_a_changed_file() {
    let new = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z"), (5, "e", "v")]);
    let mut history: Vec<HistoryRow> = new.migrations.iter().map(applied).collect();
    history[0].checksum = "1".into();
    // V2 gone from the old image, though its V3 is there.
    let old = set(&[(1, "a", "x"), (3, "c", "z")]);
    let err = Plan::new(&old, &history, None, ALLOW).unwrap_err();
    let kinds: Vec<ProblemKind> = err.0.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProblemKind::Divergent, ProblemKind::Missing]);
}

#[test]
fn an_empty_folder_with_history_is_missing_everything_not_ahead() {
    let new = set(&[(1, "a", "x"), (2, "b", "y")]);
    let history: Vec<HistoryRow> = new.migrations.iter().map(applied).collect();
    let err = Plan::new(&MigrationSet::default(), &history, None, ALLOW).unwrap_err();
    let kinds: Vec<ProblemKind> = err.0.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProblemKind::Missing, ProblemKind::Missing]);
}

#[test]
fn pending_files_refusals_are_problems_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("V1__a.sql"), "select 1;").unwrap();
    std::fs::write(
        dir.path().join("V2__b.sql"),
        "create table t(a int);\nCOMMIT;",
    )
    .unwrap();
    let s = MigrationSet::load(dir.path()).unwrap();
    let plan = Plan::new(&s, &[applied(&s.migrations[0])], None, ALLOW).unwrap();
    let problems = plan.forbidden();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].kind, ProblemKind::TransactionControl);
    assert_eq!(problems[0].line, Some(2));
    assert_eq!(problems[0].version, Some(Version::from(2)));
}
