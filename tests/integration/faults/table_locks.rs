//! A migration queued behind a long query's table lock: the safe-DDL
//! schedule names the query and waits it out instead of queueing behind it
//! (a file without a transaction, statement by statement, too); with
//! `--ddl-lock-timeout off` the migration waits (a database's own
//! `lock_timeout` does not cut it). The budget's end: see `safe_ddl`.

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
fn a_fixed_ddl_lock_timeout_names_the_report_and_waits_it_out() {
    let db = Cluster::shared().create_db();
    // A long report holds a lock that ALTER TABLE must wait for.
    let (dir, mut report) = v1_applied_and_t_locked(&db);
    let report_pid = backend_pid(&mut report);
    let mut child = apply(&db, &dir)
        .args(["--ddl-lock-timeout", "200ms"])
        .spawn_watched();
    // The report began before the attempt: it is waited out, not queued
    // behind, and named.
    child.wait_for_stderr(
        &format!(
            "DDL_BLOCKED version=2 name=alter_t attempt=1 lock_timeout_ms=200 table=t \
             mode=AccessShareLock blocker_pid={report_pid} application_name=\"long-report\""
        ),
        SETTLE,
    );
    child.wait_for_stderr(
        &format!("DDL_WAITING version=2 name=alter_t for=pid {report_pid}"),
        SETTLE,
    );
    assert!(!db.column_exists("t", "x"));
    report.batch_execute("COMMIT").unwrap();
    let out = child.finish();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=alter_t");
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "x"));
}

#[test]
fn with_ddl_lock_timeout_off_a_migration_waits_for_its_table_lock() {
    let db = Cluster::shared().create_db();
    let (dir, mut report) = v1_applied_and_t_locked(&db);
    let child = apply(&db, &dir).args(["--ddl-lock-timeout", "off"]).spawn();
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
/// application's own, which migrates too) does not apply to a migration:
/// miglock's own schedule does, or, turned off, none.
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

    // Given with --set, it is the operator's choice and applies: a plain
    // failure, without miglock's schedule.
    let out = apply(&db, &dir).args(["--set", "lock_timeout=100ms"]).run();
    out.assert_code(1);
    assert_eq!(out.json()["error"]["sqlstate"], "55P03");
    assert_eq!(db.history(), [1]);

    let child = apply(&db, &dir).args(["--ddl-lock-timeout", "off"]).spawn();
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
fn a_statement_of_a_file_without_a_transaction_is_named_and_waited_out_too() {
    let db = Cluster::shared().create_db();
    let (dir, mut report) = v1_applied_and_t_locked(&db);
    dir.remove("V2__alter_t.sql").file(
        "V2__alter_t.sql",
        "-- miglock:no-transaction\nALTER TABLE t ADD COLUMN x int;\n",
    );
    let mut child = apply(&db, &dir).spawn_watched();
    child.wait_for_stderr(
        "DDL_BLOCKED version=2 name=alter_t statement=1 attempt=1 lock_timeout_ms=50 table=t",
        SETTLE,
    );
    report.batch_execute("COMMIT").unwrap();
    child.finish().assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "x"));
}

#[test]
fn a_concurrent_index_build_waits_for_its_table_within_the_budget() {
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
    let child = apply(&db, &dir).spawn();
    // Its waits stall no traffic: it waits as one statement, with what is
    // left of the budget, rather than rebuilding after each short timeout.
    wait_for("the build to wait for its table", SETTLE, || {
        db.query_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'CREATE INDEX CONCURRENTLY%'",
        ) == 1
    });
    blocker.batch_execute("COMMIT").unwrap();
    RunOutput::from_child(child).assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        0
    );
}
