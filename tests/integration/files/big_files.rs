//! Files are read when the folder is read (checksum and checks, never
//! held) and again when they run: big files run in both ways of running,
//! and a file changed in between never runs.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::harness::{apply, versions, wait_for, Miglock, MigrationDir};
use crate::probes::LockGate;

/// About 2.5 MB of INSERTs, bigger than the runner's read chunks and its
/// limit for releasing the lock in the same round trip.
fn inserts(table: &str, rows: usize) -> String {
    let mut sql = format!("CREATE TABLE {table} (id int, note text);\n");
    for i in 0..rows {
        sql.push_str(&format!(
            "INSERT INTO {table} VALUES ({i}, 'row {i}; with a semicolon and é');\n"
        ));
    }
    sql
}

#[test]
fn a_big_file_applies_in_one_transaction_and_status_reads_it_as_a_stream() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__big.sql",
        &format!("\u{feff}{}", inserts("big", 40_000)),
    );
    let status = Miglock::for_db(&db)
        .args(["status", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    status.assert_success();
    assert_eq!(status.json()["outcome"], "pending");
    assert_eq!(
        status.json()["pending"][0]["transaction"],
        serde_json::Value::Null
    );
    // 40,000 INSERTs lock no table harder than their writers: the plan
    // keeps none of them.
    assert_eq!(
        status.json()["pending"][0]["statements"],
        serde_json::Value::Null
    );
    let out = apply(&db, &dir).timeout(Duration::from_secs(120)).run();
    out.assert_success().assert_stderr_contains("LOCK_RELEASED");
    assert_eq!(versions(&out.json()["applied"]), [1]);
    assert_eq!(db.query_i64("SELECT count(*) FROM big"), 40_000);
    assert_eq!(db.history(), [1]);
    // Nothing is held by anyone: the lock went with its own round trip.
    assert_eq!(
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND ((classid::int8 << 32) | objid::int8) = {}",
            db.default_key()
        )),
        0
    );
}

/// A big file goes in parts, cut between statements: a body with `;` in
/// it and a setting made early both hold across the cuts, and a failure in
/// a late part names its line in the file and leaves nothing of the file.
#[test]
fn a_big_file_that_fails_late_names_its_line_and_leaves_nothing() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    let mut sql = String::from("CREATE SCHEMA big_app;\nSET search_path = big_app;\n");
    sql.push_str(&inserts("big", 40_000));
    sql.push_str("DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;\n");
    sql.push_str("INSERT INTO big VALUES (-1, 'no such column', 3);\n");
    let line = sql.lines().count();
    dir.file("V1__big.sql", &sql);
    let out = apply(&db, &dir).timeout(Duration::from_secs(120)).run();
    out.assert_code(1)
        .assert_stderr_contains(&format!("V1__big.sql, line {line})"))
        .assert_stderr_contains("nothing of it was applied");
    let json = out.json();
    assert_eq!(json["error"]["line"], line, "{json:#}");
    assert_eq!(json["error"]["sqlstate"], "42601", "{json:#}");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_namespace WHERE nspname = 'big_app'"),
        0
    );
    assert!(db.history().is_empty());
}

#[test]
fn a_big_file_without_a_transaction_runs_statement_by_statement() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__big.sql",
        &format!(
            "{}CREATE INDEX CONCURRENTLY big_id ON big (id);\n",
            inserts("big", 20_000)
        ),
    );
    let status = Miglock::for_db(&db)
        .args(["status", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    assert_eq!(status.json()["pending"][0]["transaction"], false);
    let out = apply(&db, &dir).timeout(Duration::from_secs(120)).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=1 name=big");
    assert_eq!(db.query_i64("SELECT count(*) FROM big"), 20_000);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_indexes WHERE indexname = 'big_id'"),
        1
    );
    assert_eq!(db.history(), [1]);
}

#[test]
fn a_file_changed_after_the_folder_was_read_does_not_run() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__waits.sql",
        &format!("CREATE TABLE first (id int);\n{}\n", LockGate::SQL),
    )
    .file("V2__second.sql", "CREATE TABLE second (id int);\n");
    let mut gate = LockGate::close(&db);
    let mut run = apply(&db, &dir);
    let child = run.spawn();
    wait_for("V1 to wait at the gate", Duration::from_secs(30), || {
        LockGate::waiting(&db) == 1
    });
    // A deploy that replaced the folder while the run went on.
    dir.file("V2__second.sql", "CREATE TABLE other (id int);\n");
    gate.open();
    let out = crate::harness::RunOutput::from_child(child);
    out.assert_code(6)
        .assert_stderr_contains("changed since this run read it")
        .assert_stderr_contains("nothing of V2__second ran");
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(versions(&json["applied"]), [1]);
    assert_eq!(db.history(), [1]);
    assert!(!db.table_exists("second") && !db.table_exists("other"));
    // The next run plans with the file as it is now.
    apply(&db, &dir).run().assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert!(db.table_exists("other"));
}
