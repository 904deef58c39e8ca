//! Applied migrations whose file changed, was renamed or went missing,
//! and a file slipped in below the newest applied version: refused (exit
//! 6) once the history is read, the history left exactly as it was.

use crate::cluster::Cluster;
use crate::harness::{Miglock, MigrationDir};

use super::{assert_json, assert_problem, assert_run, history_rows, run_text_and_json};

/// What a refused second run must report.
struct Expected<'a> {
    kind: &'a str,
    /// Path suffix of the file named (none for a missing file).
    file: Option<&'a str>,
    version: i64,
    needles: &'a [&'a str],
    /// Tables that files added by `change` would create.
    absent: &'a [&'a str],
}

/// Applies `files`, lets `change` alter the folder and adds a pending V4,
/// then runs apply again: it must exit 6 naming the problem, leave the
/// history exactly as it was and not apply V4.
fn refused_after_change(
    case: &str,
    files: &[(&str, &str)],
    change: impl FnOnce(&MigrationDir),
    expected: Expected,
) {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(files);
    let first = Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run();
    assert_run(&format!("{case}: first apply"), &first, 0, &[]);
    let before = history_rows(&db);
    assert_eq!(
        before.as_ref().map(Vec::len),
        Some(files.len()),
        "[{case}] the first apply recorded {files:?}"
    );

    change(&dir);
    dir.file("V4__create_d.sql", "CREATE TABLE d (id int);");
    let (text, json) = run_text_and_json(
        Miglock::for_db(&db)
            .args(["apply", "--migrations"])
            .arg(dir.path()),
    );
    let mut all = vec!["the migration set is unsafe to run (1 problem)"];
    all.extend_from_slice(expected.needles);
    assert_run(case, &text, 6, &all);
    assert_run(case, &json, 6, &all);
    let json = assert_json(case, &json, 6, "invalid", &all);
    assert_problem(
        case,
        &json,
        expected.kind,
        expected.file,
        Some(expected.version),
    );
    assert_eq!(json["applied"], serde_json::json!([]), "[{case}] applied");

    assert_eq!(history_rows(&db), before, "[{case}] the history changed");
    for table in expected.absent.iter().chain(&["d"]) {
        assert!(
            !db.table_exists(table),
            "[{case}] table {table} was created"
        );
    }
}

#[test]
fn divergent_applied_migration_is_refused() {
    refused_after_change(
        "divergent",
        &[
            ("V1__create_a.sql", "CREATE TABLE a (id int);"),
            ("V2__create_b.sql", "CREATE TABLE b (id int);"),
        ],
        |dir| {
            dir.file("V1__create_a.sql", "CREATE TABLE a (id bigint);");
        },
        Expected {
            kind: "divergent",
            file: Some("V1__create_a.sql"),
            version: 1,
            needles: &["V1__create_a.sql: applied on", "its content changed"],
            absent: &[],
        },
    );
}

#[test]
fn renamed_applied_migration_is_refused() {
    refused_after_change(
        "renamed",
        &[
            ("V1__create_a.sql", "CREATE TABLE a (id int);"),
            ("V2__create_b.sql", "CREATE TABLE b (id int);"),
        ],
        |dir| {
            // Same version and content, other name.
            dir.remove("V1__create_a.sql");
            dir.file("V1__make_a.sql", "CREATE TABLE a (id int);");
        },
        Expected {
            kind: "divergent",
            file: Some("V1__make_a.sql"),
            version: 1,
            needles: &["the name changed from \"create_a\" to \"make_a\""],
            absent: &[],
        },
    );
}

#[test]
fn missing_applied_migration_is_refused() {
    refused_after_change(
        "missing",
        &[
            ("V1__create_a.sql", "CREATE TABLE a (id int);"),
            ("V2__create_b.sql", "CREATE TABLE b (id int);"),
        ],
        |dir| {
            dir.remove("V2__create_b.sql");
        },
        Expected {
            kind: "missing",
            file: None,
            version: 2,
            needles: &["V2__create_b was applied on", "its file is gone"],
            absent: &[],
        },
    );
}

#[test]
fn out_of_order_migration_is_refused() {
    refused_after_change(
        "out of order",
        &[
            ("V1__create_a.sql", "CREATE TABLE a (id int);"),
            ("V3__create_c.sql", "CREATE TABLE c (id int);"),
        ],
        |dir| {
            dir.file("V2__create_b.sql", "CREATE TABLE b (id int);");
        },
        Expected {
            kind: "out_of_order",
            file: Some("V2__create_b.sql"),
            version: 2,
            needles: &[
                "V2__create_b.sql: not applied, but the later version 3 is",
                "give it a version above 3",
            ],
            absent: &["b"],
        },
    );
}
