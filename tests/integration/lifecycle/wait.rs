//! `miglock wait` against a real PostgreSQL: it returns once the schema is
//! current, times out naming what is pending, refuses an unsafe set, and
//! rides out a server restart.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, closed_port, command, two_migrations, versions, wait_until, Miglock, MigrationDir,
    RunOutput, SETTLE,
};
use crate::probes::{backends_like, hold_default_key};

/// `miglock wait --format json --migrations DIR` for the database.
fn wait(db: &TestDb, dir: &MigrationDir) -> Miglock {
    command(db, "wait", dir)
}

/// `miglock wait --format json` against `url` (a server that is not
/// there), with `--connect-timeout` and the folder given.
fn wait_at(url: &str, connect_timeout: &str, dir: &Path) -> Miglock {
    let mut m = Miglock::new();
    m.env("DATABASE_URL", url)
        .args([
            "wait",
            "--format",
            "json",
            "--connect-timeout",
            connect_timeout,
        ])
        .arg("--migrations")
        .arg(dir);
    m
}

/// Backend pids of `miglock wait` sessions named as waiting.
fn waiting_backends(db: &TestDb) -> Vec<i64> {
    backends_like(db, "miglock wait waiting%")
}

#[test]
fn a_timeout_exits_7_naming_what_is_still_pending_and_changes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let started = Instant::now();
    let out = wait(&db, &dir).args(["--timeout", "1s"]).run();
    let took = started.elapsed();
    out.assert_code(7)
        .assert_stderr_contains("WAITING_FOR_SCHEMA pending=2 next=V1__create_t")
        .assert_stderr_contains(
            "error: timed out after 1s (--timeout): still pending: V1__create_t, V2__add_note",
        );
    // A lower bound only: load can make it later, never earlier.
    assert!(
        took >= Duration::from_secs(1),
        "it waited the timeout: {took:?}"
    );
    eprintln!("wait --timeout 1s: exited 7 after {took:?}");
    let json = out.json();
    assert_eq!(json["command"], "wait");
    assert_eq!(json["outcome"], "pending");
    assert_eq!(json["exit_code"], 7);
    assert_eq!(versions(&json["pending"]), [1, 2]);
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("still pending: V1__create_t, V2__add_note"));
    assert!(json["lock"]["waited_ms"].as_u64().unwrap() >= 1000);
    assert!(
        !db.table_exists("refinery_schema_history"),
        "wait creates nothing"
    );
    assert!(!db.table_exists("t"));

    // Partly applied: only what is left is named. The timeout may come from
    // the environment too.
    apply(&db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    let out = wait(&db, &dir).env("MIGLOCK_WAIT_TIMEOUT", "500ms").run();
    out.assert_code(7)
        .assert_stderr_contains("(--timeout): still pending: V2__add_note");
    assert_eq!(versions(&out.json()["pending"]), [2]);
    assert_eq!(db.history(), [1]);

    // A deadline already past after the first look (a slow connection, a
    // zero timeout) still names what is pending: the first look ends early
    // under --lock-mode auto, to listen.
    let out = wait(&db, &dir).args(["--timeout", "0"]).run();
    out.assert_code(7)
        .assert_stderr_contains("(--timeout): still pending: V2__add_note");
}

#[test]
fn a_current_schema_returns_at_once() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    // Someone holding the lock does not matter: the history decides.
    let _holder = hold_default_key(&db);
    // "At once": it never starts waiting (a run that waited out the
    // timeout would exit 7, not 0).
    let out = wait(&db, &dir).args(["--timeout", "5m"]).run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT version=V2__add_note applied=2");
    assert!(!out.stderr.contains("WAITING_FOR_SCHEMA"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["pending"], serde_json::json!([]));
    assert_eq!(json["error"], Value::Null);
}

#[test]
fn it_returns_promptly_once_another_process_has_applied() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let waiter = wait(&db, &dir).args(["--timeout", "60s"]).spawn();
    wait_until(SETTLE, || waiting_backends(&db).len() == 1);
    let backend = waiting_backends(&db)[0];

    // Let it poll four times: it then sleeps 3 to 4 s before the next look,
    // so only the holder's release notification can end it sooner.
    let mut polls = HashSet::new();
    wait_until(SETTLE, || {
        let rows = db.query_strings(&format!(
            "SELECT query_start FROM pg_stat_activity WHERE pid = {backend} \
             AND query LIKE '%refinery_schema_history%'"
        ));
        if let Some(Some(start)) = rows.first().map(|r| r[0].clone()) {
            polls.insert(start);
        }
        polls.len() >= 4
    });
    let applied = apply(&db, &dir).run();
    applied.assert_success();
    let applied_at = Instant::now();
    assert_eq!(applied.json()["outcome"], "applied");

    let out = RunOutput::from_child(waiter);
    // Report only: how soon after the apply it returned depends on the
    // machine's load, so it is printed, not asserted.
    eprintln!(
        "wait returned {:?} after the apply that completed the schema",
        applied_at.elapsed()
    );
    out.assert_success()
        .assert_stderr_contains("WAITING_FOR_SCHEMA pending=2 next=V1__create_t")
        .assert_stderr_contains("SCHEMA_CURRENT version=V2__add_note applied=2");
    let json = out.json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["pending"], serde_json::json!([]));
    // Four looks, 0.5 s, 1 s and 2 s apart less up to a quarter of jitter.
    assert!(
        json["lock"]["waited_ms"].as_u64().unwrap() >= 2600,
        "{json:#}"
    );
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn a_divergent_history_exits_6() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    dir.file(
        "V2__add_note.sql",
        "ALTER TABLE t ADD COLUMN note varchar;\n",
    );
    let out = wait(&db, &dir).args(["--timeout", "5m"]).run();
    out.assert_code(6)
        .assert_stderr_contains("V2__add_note.sql");
    assert!(
        !out.stderr.contains("WAITING_FOR_SCHEMA"),
        "at once, without waiting\n{}",
        out.stderr
    );
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["exit_code"], 6);
    assert_eq!(json["problems"][0]["kind"], "divergent");
    assert_eq!(json["problems"][0]["version"], 2);

    dir.file("V2__add_note.sql", "ALTER TABLE t ADD COLUMN note text;\n")
        .remove("V1__create_t.sql");
    let json = wait(&db, &dir).run().assert_code(6).json();
    assert_eq!(json["problems"][0]["kind"], "missing");
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn an_invalid_migration_folder_exits_6_without_connecting() {
    // Nothing listens on the port: the files are checked first.
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/nowhere",
        Cluster::shared().password(),
        closed_port()
    );
    let dir = MigrationDir::new();
    let out = wait_at(&url, "20s", &dir.path().join("absent")).run();
    out.assert_code(6).assert_stderr_contains("absent");
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["problems"][0]["kind"], "folder");

    dir.file("V1__ok.sql", "SELECT 1;\n")
        .file("V1__again.sql", "SELECT 2;\n");
    let json = wait_at(&url, "20s", dir.path()).run().assert_code(6).json();
    assert_eq!(json["problems"][0]["kind"], "duplicate");
}

#[test]
fn nothing_listening_exits_5_after_the_connect_timeout() {
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/nowhere",
        Cluster::shared().password(),
        closed_port()
    );
    let dir = two_migrations();
    let started = Instant::now();
    let out = wait_at(&url, "1s", dir.path()).run();
    let took = started.elapsed();
    out.assert_code(5)
        .assert_stderr_contains("CONNECT_RETRY")
        .assert_stderr_contains("cannot connect to");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    eprintln!("wait --connect-timeout 1s with nothing listening: exited 5 after {took:?}");
    let json = out.json();
    assert_eq!(json["outcome"], "unavailable");
    assert_eq!(json["exit_code"], 5);
}

#[test]
fn it_survives_a_server_restart() {
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let dir = two_migrations();
    let waiter = wait(&db, &dir).args(["--timeout", "60s"]).spawn();
    wait_until(SETTLE, || waiting_backends(&db).len() == 1);
    let before = waiting_backends(&db);

    cluster.restart();
    // It comes back on its own, as a new session, marked as waiting again.
    wait_until(SETTLE, || {
        let now = waiting_backends(&db);
        now.len() == 1 && now != before
    });
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND a.application_name LIKE 'miglock wait waiting%'"
        ),
        1,
        "the waiting mark is set again after reconnecting"
    );

    apply(&db, &dir).run().assert_success();
    let out = RunOutput::from_child(waiter);
    out.assert_success()
        .assert_stderr_contains("CONNECT_RETRY")
        .assert_stderr_contains("SCHEMA_CURRENT version=V2__add_note applied=2");
    assert_eq!(out.json()["outcome"], "current");
    assert_eq!(db.history(), [1, 2]);
}
