//! Signals: SIGTERM, SIGINT and SIGHUP end a run with exit 130, its
//! migration rolled back and its lock released, whatever it was doing
//! (inside a statement, waiting for the lock, reading the history);
//! SIGKILL leaves the server to free the lock, and a waiter completes the
//! set. Lines starting with `FIGURE` are the timings RELIABILITY.md
//! quotes; run with `-- --nocapture` to see them.

use std::process::Child;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, finish_all, gated_migrations, poll_every, send_signal, three_migrations, versions,
    wait_for, wait_until, MigrationDir, RunOutput, SETTLE,
};
use crate::probes::{
    assert_quiet, backend_exists, backends_like, effects, hold_default_key, key_holders, once_each,
    sessions_like, LockGate,
};

#[test]
fn sigterm_and_sigint_mid_migration_roll_back_release_and_exit_130() {
    for signal in ["TERM", "INT"] {
        let db = Cluster::shared().create_db();
        let dir = three_migrations();
        let v2 = std::fs::read_to_string(dir.path().join("V2__create_users.sql")).unwrap();
        dir.file(
            "V2__create_users.sql",
            &format!("{v2}SELECT pg_sleep(600);\n"),
        );
        let child = apply(&db, &dir).spawn();
        let pid = child.id();
        wait_for("V2's pg_sleep to be running", SETTLE, || {
            db.query_i64(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE '%pg_sleep(600)%' AND state = 'active' \
                 AND application_name LIKE 'miglock apply holding%'",
            ) == 1
        });
        let sent = Instant::now();
        send_signal(pid, signal);
        // "Promptly, not after the statement": the 600 s statement outlasts
        // the harness's 120 s limit on the run, so no wall-clock bound.
        let out = RunOutput::from_child(child);
        eprintln!(
            "SIG{signal} mid-migration: exited after {:?}",
            sent.elapsed()
        );
        out.assert_code(130)
            .assert_stderr_contains(&format!("INTERRUPTED signal=SIG{signal}"))
            .assert_stderr_contains("LOCK_RELEASED");
        let json = out.json();
        assert_eq!(json["outcome"], "interrupted");
        assert_eq!(json["exit_code"], 130);
        assert_eq!(db.history(), [1], "SIG{signal}");
        assert!(!db.table_exists("users"), "SIG{signal}: V2 rolled back");
        assert_eq!(effects(&db), [(1, 1)]);
        assert!(key_holders(&db, db.default_key()).is_empty(), "SIG{signal}");
        // The next run completes the set.
        dir.file("V2__create_users.sql", &v2);
        apply(&db, &dir).run().assert_success();
        assert_eq!(db.history(), [1, 2, 3]);
    }
}

#[test]
fn a_signal_while_waiting_for_the_lock_exits_130_without_changes() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let _holder = hold_default_key(&db);
    let child = apply(&db, &dir).args(["--wait", "60s"]).spawn();
    let pid = child.id();
    wait_until(SETTLE, || sessions_like(&db, "miglock apply waiting%") == 1);
    send_signal(pid, "TERM");
    let out = RunOutput::from_child(child);
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGTERM");
    assert_eq!(out.json()["outcome"], "interrupted");
    assert!(!db.table_exists("refinery_schema_history"));
}

#[test]
fn a_signal_during_any_statement_is_an_interruption() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    apply(&db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    // The history read itself blocks behind a table lock.
    let mut blocker = db.client();
    blocker
        .batch_execute("BEGIN; LOCK TABLE refinery_schema_history IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let child = apply(&db, &dir).spawn();
    let pid = child.id();
    wait_until(SETTLE, || {
        db.query_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'SELECT version, name%'",
        ) == 1
    });
    send_signal(pid, "TERM");
    let out = RunOutput::from_child(child);
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGTERM");
    assert_eq!(out.json()["outcome"], "interrupted");
    blocker.batch_execute("COMMIT").unwrap();
    assert_eq!(db.history(), [1]);
}

#[test]
fn sighup_mid_migration_rolls_back_releases_the_lock_and_exits_130() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[(
        "V1__blocked.sql",
        &format!("CREATE TABLE blocked (id int);\n{}\n", LockGate::SQL),
    )]);
    let _gate = LockGate::close(&db);
    let child = apply(&db, &dir).spawn();
    let pid = child.id();
    // miglock holds its lock and waits inside the migration.
    wait_for("the run to wait inside V1", SETTLE, || {
        LockGate::waiting_like(&db, "miglock apply holding%") == 1
    });
    let sent = Instant::now();
    send_signal(pid, "HUP");
    let out = RunOutput::from_child(child);
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGHUP")
        .assert_stderr_contains("LOCK_RELEASED");
    assert!(sent.elapsed() < Duration::from_secs(10));
    let json = out.json();
    assert_eq!(json["outcome"], "interrupted");
    assert_eq!(json["exit_code"], 130);
    assert_eq!(db.history(), Vec::<i64>::new(), "no history row");
    assert!(!db.table_exists("blocked"), "rolled back");
    assert!(key_holders(&db, db.default_key()).is_empty(), "lock free");
}

/// A holder blocked in its second migration; a waiter behind it. Returns
/// (holder, its backend pid, waiter).
fn holder_and_waiter(db: &TestDb, dir: &MigrationDir) -> (Child, i64, Child) {
    let holder = apply(db, dir).env("MIGLOCK_INSTANCE", "holder").spawn();
    wait_until(SETTLE, || LockGate::waiting(db) == 1);
    let pids = backends_like(db, "miglock apply holding%");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let waiter = apply(db, dir)
        .args(["--wait", "60s"])
        .env("MIGLOCK_INSTANCE", "waiter")
        .spawn();
    wait_until(SETTLE, || sessions_like(db, "miglock apply waiting%") == 1);
    (holder, pids[0], waiter)
}

/// Whether backend `pid` holds `key` (polled on one connection, so the
/// measurement is not a connection setup each time).
fn holds_key(client: &mut Client, pid: i64, key: i64) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND pid = $1 AND ((classid::int8 << 32) | objid::int8) = $2",
            &[&(pid as i32), &key],
        )
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

/// How long after `since` backend `pid` let go of `key` (polled every
/// 5 ms, so the time is fit to report).
#[track_caller]
fn time_until_released(db: &TestDb, pid: i64, key: i64, since: Instant) -> Duration {
    let mut client = db.client();
    poll_every(Duration::from_millis(5), Duration::from_secs(60), || {
        (!holds_key(&mut client, pid, key)).then(|| since.elapsed())
    })
    .unwrap_or_else(|| panic!("backend {pid} still holds the lock after 60 s"))
}

/// The waiter takes over: it holds the lock and is blocked on the gate, in
/// V2, and nothing of the first attempt at V2 is there. Then the gate opens
/// and it applies V2 and V3.
#[track_caller]
fn waiter_takes_over_and_completes(
    db: &TestDb,
    gate: &mut LockGate,
    waiter: Child,
    old_holder: i64,
) {
    wait_until(SETTLE, || {
        let holders = backends_like(db, "miglock apply holding%");
        holders.len() == 1 && holders[0] != old_holder && LockGate::waiting(db) == 1
    });
    assert_eq!(db.history(), [1], "nothing of V2 was recorded");
    assert!(!db.table_exists("v2"), "nothing of V2 is visible");
    assert_eq!(effects(db), once_each([1]));
    gate.open();
    let out = RunOutput::from_child(waiter);
    out.assert_success()
        .assert_stderr_contains("LOCK_BUSY")
        .assert_stderr_contains("LOCK_ACQUIRED")
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=gated");
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(versions(&json["applied"]), [2, 3]);
    assert_eq!(db.history(), [1, 2, 3]);
    assert_eq!(effects(db), once_each(1..=3));
    assert!(db.table_exists("v2"));
}

/// SIGKILL: no handler runs, so the server must notice the dead client on
/// its own. miglock's `client_connection_check_interval` (2 s) makes the
/// backend look while its statement runs (here: waiting for a lock).
#[test]
fn sigkill_of_the_holder_mid_migration_frees_the_lock_and_a_waiter_completes() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let dir = gated_migrations();
    let mut gate = LockGate::close(&db);
    let (mut holder, holder_backend, waiter) = holder_and_waiter(&db, &dir);
    assert_eq!(key_holders(&db, key).len(), 1);

    let killed = Instant::now();
    holder.kill().unwrap();
    let freed_after = time_until_released(&db, holder_backend, key, killed);
    let out = RunOutput::from_child(holder);
    assert_eq!(out.code, -9, "killed by SIGKILL\n{}", out.details());
    assert_eq!(out.stdout, "", "no result from a killed process");
    eprintln!(
        "FIGURE SIGKILL of the holder mid-migration: lock freed after {} ms",
        freed_after.as_millis()
    );
    // The figure is what RELIABILITY.md quotes; no wall-clock bound here
    // (time_until_released fails after 60 s). The gate is still closed, so
    // the statement could not have ended on its own: the server noticed the
    // dead client (at its next check, every 2 s) and ended the session.
    wait_for("the killed holder's backend to end", SETTLE, || {
        !backend_exists(&db, holder_backend)
    });

    waiter_takes_over_and_completes(&db, &mut gate, waiter, holder_backend);
    assert_quiet(&db, key);
}

/// SIGTERM and SIGINT while the migration waits for a lock (not sleeping):
/// the statement is cancelled, the transaction rolled back, the lock
/// released, exit 130; timed. Then a waiter completes the set.
#[test]
fn sigterm_and_sigint_while_blocked_in_a_migration_exit_130_promptly() {
    for signal in ["TERM", "INT"] {
        let db = Cluster::shared().create_db();
        let key = db.default_key();
        let dir = gated_migrations();
        let mut gate = LockGate::close(&db);
        let (holder, holder_backend, waiter) = holder_and_waiter(&db, &dir);
        let sent = Instant::now();
        send_signal(holder.id(), signal);
        let (out, ended) = finish_all(vec![holder], Duration::from_secs(30))
            .pop()
            .unwrap();
        let exited_after = ended.duration_since(sent);
        let mut client = db.client();
        // Released before exiting, not by the session ending.
        assert!(
            !holds_key(&mut client, holder_backend, key),
            "SIG{signal}: the lock is released by the time the process exits"
        );
        out.assert_code(130)
            .assert_stderr_contains(&format!("INTERRUPTED signal=SIG{signal}"))
            .assert_stderr_contains("LOCK_RELEASED");
        let json = out.json();
        assert_eq!(json["outcome"], "interrupted");
        assert_eq!(versions(&json["applied"]), [1], "SIG{signal}");
        assert_eq!(versions(&json["pending"]), [2, 3], "SIG{signal}");
        eprintln!(
            "FIGURE SIG{signal} of the holder mid-migration (blocked on a lock): exit 130 after {} ms, \
             lock released before exit",
            exited_after.as_millis()
        );
        // No wall-clock bound: it exited with the gate still closed, so
        // the statement was cancelled, not finished.
        waiter_takes_over_and_completes(&db, &mut gate, waiter, holder_backend);
        assert_quiet(&db, key);
    }
}
