//! A set with problems of every kind gets them all in one run: names,
//! duplicates, the statements of every pending file (misnamed ones
//! included, as they will be pending once renamed), and what the history
//! says (divergent). Fixing one kind never reveals the next on the next
//! run. Applied files are only checksummed, never classified.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{apply, closed_port, command, Miglock, MigrationDir};

/// `(kind, file name, line)` of each problem, sorted.
fn listed(json: &Value) -> Vec<(String, String, i64)> {
    let mut found: Vec<(String, String, i64)> = json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {json:#}"))
        .iter()
        .map(|p| {
            let file = p["file"].as_str().unwrap_or("");
            let name = file.rsplit('/').next().unwrap_or("").to_string();
            (
                p["kind"].as_str().unwrap().to_string(),
                name,
                p["line"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    found.sort();
    found
}

fn expect(rows: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    let mut rows: Vec<(String, String, i64)> = rows
        .iter()
        .map(|(k, f, l)| (k.to_string(), f.to_string(), *l))
        .collect();
    rows.sort();
    rows
}

/// V1 and V2 recorded by a baseline (V1 holds its own BEGIN/COMMIT, which
/// no applied file is checked for), V2 edited since; two misnamed files
/// and a pending one, each holding something miglock refuses to run.
/// Read as refinery's (`auto` would read its dotted name as Flyway's):
/// what refinery refuses in it is the point.
const REFINERY: (&str, &str) = ("MIGLOCK_LAYOUT", "refinery");

fn troubled_set() -> MigrationDir {
    MigrationDir::with(&[
        (
            "V1__init.sql",
            "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n",
        ),
        ("V2__edited.sql", "CREATE TABLE t2 (id int);\n"),
        (
            "V3__add-users.sql",
            "CREATE TABLE users (id int);\nCOMMIT;\n",
        ),
        ("V4.1__flyway.sql", "\\set x 1\nSELECT 1;\n"),
        ("V5__pending.sql", "CREATE TABLE p (id int);\nROLLBACK;\n"),
    ])
}

#[test]
fn one_run_lists_every_problem_of_names_contents_and_history() {
    let db = Cluster::shared().create_db();
    let dir = troubled_set();
    // Adopt V1..V2 as they are, then edit V2: it is divergent.
    let adopt = MigrationDir::with(&[
        (
            "V1__init.sql",
            "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n",
        ),
        ("V2__edited.sql", "CREATE TABLE t2 (id int);\n"),
    ]);
    command(&db, "baseline", &adopt)
        .args(["--baseline-version", "2"])
        .run()
        .assert_success();
    dir.file("V2__edited.sql", "CREATE TABLE t2 (id bigint);\n");
    let history_before = db.query_strings(
        "SELECT version::text, name, checksum FROM refinery_schema_history ORDER BY version",
    );

    let expected = expect(&[
        ("misnamed", "V3__add-users.sql", 0),
        ("misnamed", "V4.1__flyway.sql", 0),
        ("divergent", "V2__edited.sql", 0),
        ("transaction_control", "V3__add-users.sql", 2),
        ("psql_meta_command", "V4.1__flyway.sql", 1),
        ("transaction_control", "V5__pending.sql", 2),
    ]);

    let out = apply(&db, &dir).env(REFINERY.0, REFINERY.1).run();
    out.assert_code(6);
    let json = out.json();
    assert_eq!(json["outcome"], "invalid", "{json:#}");
    assert_eq!(listed(&json), expected, "{json:#}");
    let text = Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .env(REFINERY.0, REFINERY.1)
        .run();
    text.assert_code(6)
        .assert_stderr_contains("the migration set is unsafe to run (6 problems)")
        .assert_stderr_contains("V4.1__flyway.sql: line 1: `\\set` is a psql meta-command")
        .assert_stderr_contains("V2__edited.sql: applied on");

    // status lists the same, and says what is pending beside them.
    let status = command(&db, "status", &dir)
        .arg("--check")
        .env(REFINERY.0, REFINERY.1)
        .run();
    status.assert_code(6);
    let json = status.json();
    assert_eq!(listed(&json), expected, "{json:#}");
    assert_eq!(crate::harness::versions(&json["pending"]), [5]);
    command(&db, "status", &dir)
        .env(REFINERY.0, REFINERY.1)
        .run()
        .assert_success();

    // Nothing ran, and the history is as the baseline wrote it.
    for table in ["users", "p"] {
        assert!(!db.table_exists(table), "{table} was created");
    }
    assert_eq!(
        db.query_strings(
            "SELECT version::text, name, checksum FROM refinery_schema_history ORDER BY version"
        ),
        history_before
    );
}

/// Without the database, the folder's own problems are still reported at
/// once (exit 6, not 5 after the whole --connect-timeout), and the message
/// says what could not be checked.
#[test]
fn an_unreachable_database_does_not_hold_back_the_files_problems() {
    let dir = troubled_set();
    let url = format!("postgres://app@127.0.0.1:{}/app", closed_port());
    let started = Instant::now();
    let out = Miglock::new()
        .args(["apply", "--format", "json", "--connect-timeout", "2m"])
        .arg("--migrations")
        .arg(dir.path())
        .env("DATABASE_URL", &url)
        .env(REFINERY.0, REFINERY.1)
        .run();
    let took = started.elapsed();
    out.assert_code(6);
    let json = out.json();
    assert_eq!(json["outcome"], "invalid", "{json:#}");
    assert_eq!(
        listed(&json),
        expect(&[
            ("misnamed", "V3__add-users.sql", 0),
            ("misnamed", "V4.1__flyway.sql", 0),
        ]),
        "{json:#}"
    );
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the migration set is unsafe to run (2 problems)")
            && message.contains("Not checked yet: the statements of the pending files")
            && message.contains("could not be read (cannot connect to app@127.0.0.1"),
        "{message}"
    );
    out.assert_stderr_contains("Not checked yet:");
    // One refused attempt, no retries: far below the two minutes.
    assert!(
        took < Duration::from_secs(60),
        "took {took:?}\n{}",
        out.details()
    );
    assert!(!out.stderr.contains("CONNECT_RETRY"), "{}", out.details());
}
