//! A migration queued behind a long query's table lock: `--ddl-lock-timeout`
//! retries it and then explains who holds the lock; without it, the
//! migration waits (a database's own `lock_timeout` does not cut it);
//! a statement of a file without a transaction is retried the same way.

use std::time::Duration;

use postgres::Client;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, wait_for, wait_until, MigrationDir, RunOutput, SETTLE};
use crate::probes::backend_pid;

/// V1 makes table `t` and is applied; V2 alters it, which needs an ACCESS
/// EXCLUSIVE lock, and is pending. A long report (a session of the test
/// named `long-report`) holds a lock on `t` that V2 must wait for, in a
/// transaction: its COMMIT lets go.
fn v1_applied_and_t_locked(db: &TestDb) -> (MigrationDir, Client) {
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (id int);\n"),
        ("V2__alter_t.sql", "ALTER TABLE t ADD COLUMN x int;\n"),
    ]);
    apply(db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    let mut report = db.client();
    report
        .batch_execute(
            "SET application_name = 'long-report'; BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;",
        )
        .unwrap();
    (dir, report)
}

#[test]
fn a_ddl_lock_timeout_is_retried_then_explained() {
    let db = Cluster::shared().create_db();
    // A long report holds a lock that ALTER TABLE must wait for.
    let (dir, mut report) = v1_applied_and_t_locked(&db);
    let report_pid = backend_pid(&mut report);
    let out = apply(&db, &dir)
        .args(["--ddl-lock-timeout", "200ms", "--ddl-retries", "2"])
        .run();
    out.assert_code(1)
        .assert_stderr_contains(
            "MIGRATION_RETRY version=2 name=alter_t attempt=1/2 reason=lock_timeout",
        )
        .assert_stderr_contains("MIGRATION_RETRY version=2 name=alter_t attempt=2/2")
        .assert_stderr_contains("MIGRATION_FAILED version=2 name=alter_t sqlstate=55P03")
        .assert_stderr_contains(
            "could not get a table lock within --ddl-lock-timeout 200ms in 3 tries",
        )
        .assert_stderr_contains(&format!(
            "pid {report_pid} \"long-report\" holds AccessShareLock on t"
        ))
        .assert_stderr_contains("LOCK_RELEASED");
    assert_eq!(out.json()["error"]["sqlstate"], "55P03");
    assert_eq!(db.history(), [1]);
    assert!(!db.column_exists("t", "x"));

    // Once the report ends, a retry gets through.
    // The report is released only once a retry has been logged, so the
    // retry path is exercised however slow the machine is.
    let mut child = apply(&db, &dir)
        .args(["--ddl-lock-timeout", "200ms", "--ddl-retries", "20"])
        .spawn_watched();
    child.wait_for_stderr(
        "MIGRATION_RETRY version=2 name=alter_t attempt=1/20 reason=lock_timeout",
        SETTLE,
    );
    report.batch_execute("COMMIT").unwrap();
    let out = child.finish();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_RETRY version=2 name=alter_t attempt=1/20")
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=alter_t");
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "x"));
}

#[test]
fn without_ddl_lock_timeout_a_migration_waits_for_its_table_lock() {
    let db = Cluster::shared().create_db();
    let (dir, mut report) = v1_applied_and_t_locked(&db);
    let child = apply(&db, &dir).spawn();
    wait_until(SETTLE, || {
        db.query_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE t%'",
        ) == 1
    });
    report.batch_execute("COMMIT").unwrap();
    RunOutput::from_child(child).assert_success();
    assert!(db.column_exists("t", "x"));
}

/// A `lock_timeout` default for the database (or the role, often the
/// application's own, which migrates too) must not fail a migration queued
/// behind a long query: only `--ddl-lock-timeout` (or `--set`) bounds that.
#[test]
fn a_database_lock_timeout_does_not_fail_a_migration_waiting_for_its_table_lock() {
    let db = Cluster::shared().create_db();
    let (dir, mut report) = v1_applied_and_t_locked(&db);
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET lock_timeout = '1s'",
            db.name()
        ))
        .unwrap();

    // Given with --set, it is the operator's choice and applies.
    let out = apply(&db, &dir).args(["--set", "lock_timeout=100ms"]).run();
    out.assert_code(1);
    assert_eq!(out.json()["error"]["sqlstate"], "55P03");
    assert_eq!(db.history(), [1]);

    let child = apply(&db, &dir).spawn();
    // Waiting well past the database's 1 s proves it was not in force.
    wait_for(
        "the migration to wait for its table lock for over 1.5 s",
        SETTLE,
        || {
            db.query_i64(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE t%' \
                 AND clock_timestamp() - query_start > interval '1.5 s'",
            ) == 1
        },
    );
    report.batch_execute("COMMIT").unwrap();
    let out = RunOutput::from_child(child);
    out.assert_success();
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "x"));
}

#[test]
fn a_non_transactional_statement_is_retried_after_a_ddl_lock_timeout() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (a int);\n"),
        ("V2__index.sql", "CREATE INDEX CONCURRENTLY t_a ON t (a);\n"),
    ]);
    apply(&db, &dir)
        .arg("--target")
        .arg("1")
        .run()
        .assert_success();
    let mut blocker = db.client();
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut run = apply(&db, &dir);
    run.args(["--ddl-lock-timeout", "100ms", "--ddl-retries", "50"]);
    let mut child = run.spawn_watched();
    child.wait_for_stderr(
        "MIGRATION_RETRY version=2 name=index statement=1 attempt=1/50 reason=lock_timeout",
        Duration::from_secs(30),
    );
    blocker.batch_execute("COMMIT").unwrap();
    child.finish().assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        0
    );
    // lock_timeout went back to the session's own after the migration:
    // nothing to observe from outside but the row, and no invalid index.
}
