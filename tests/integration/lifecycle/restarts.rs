//! The server restarts (fast shutdown) or crashes (immediate stop, crash
//! recovery) in the middle of a deploy: a run inside a migration carries
//! on under the lock, replicas waiting for it reconnect, and each
//! migration is applied once.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::harness::{
    apply, command, finish_all, gated_migrations, two_migrations, versions, wait_for, wait_until,
    SETTLE,
};
use crate::probes::{assert_quiet, effects, hold_default_key, once_each, sessions_like, LockGate};

#[test]
fn an_immediate_restart_mid_migration_is_carried_through_with_each_migration_once() {
    restart_mid_migration(&[]);
}

#[test]
fn an_immediate_restart_mid_migration_is_carried_through_in_transaction_mode() {
    restart_mid_migration(&["--lock-mode", "transaction"]);
}

fn restart_mid_migration(mode: &[&str]) {
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let dir = gated_migrations();
    // The restart ends the gate's session, and the gate with it.
    let _gate = LockGate::close(&db);
    let run = apply(&db, &dir)
        .args(["--wait", "120s"])
        .args(mode)
        .spawn_watched();
    wait_for("the run to be inside V2", SETTLE, || {
        LockGate::waiting(&db) == 1
    });
    cluster.stop_immediate();
    cluster.start_again();
    let out = run.finish();
    out.assert_success()
        .assert_stderr_contains("CONNECT_RETRY the connection was lost during V2__gated")
        .assert_stderr_contains("carrying on")
        .assert_stderr_contains("MIGRATION_APPLIED version=3");
    assert!(!out.stderr.contains("MIGRATION_FAILED"), "{}", out.stderr);
    if !mode.is_empty() {
        out.assert_stderr_contains("mode=transaction");
    }
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(versions(&out.json()["applied"]), [1, 2, 3]);
    assert_eq!(db.history(), [1, 2, 3]);
    assert_eq!(
        effects(&db),
        once_each(1..=3),
        "each migration's effect exactly once"
    );
}

#[test]
fn a_replica_waiting_for_the_lock_survives_a_server_restart() {
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let dir = two_migrations();
    let _holder = hold_default_key(&db);
    let mut child = apply(&db, &dir).args(["--wait", "60s"]).spawn_watched();
    // Past its first attempt and its look at the holder: idle, waiting.
    // (The waiting application_name shows earlier, while the attempt's
    // round trip is still under way.)
    child.wait_for_stderr("LOCK_BUSY", SETTLE);
    // The restart ends the holder's session too, so the lock is free after it.
    cluster.restart();
    let out = child.finish();
    out.assert_success()
        .assert_stderr_contains("LOCK_BUSY")
        .assert_stderr_contains("connection was lost while waiting; reconnecting")
        .assert_stderr_contains("LOCK_ACQUIRED");
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
}

/// Codes of the contract's exit-code table.
const CONTRACT_CODES: &[i32] = &[0, 1, 2, 3, 4, 5, 6, 7, 130];

/// A server restart (fast shutdown) and a crash (`pg_ctl -m immediate`,
/// then crash recovery), each while one replica is inside a migration and
/// eight `apply` and four `wait` replicas wait. Every process ends with a
/// contract outcome; the database ends consistent and complete.
#[test]
fn server_restart_and_crash_while_one_applies_and_others_wait() {
    let cluster = Cluster::start();
    for mode in ["restart", "crash"] {
        let db = cluster.create_db();
        let key = db.default_key();
        let dir = gated_migrations();
        let _gate = LockGate::close(&db);
        let holder = apply(&db, &dir).env("MIGLOCK_INSTANCE", "holder").spawn();
        wait_until(SETTLE, || LockGate::waiting(&db) == 1);
        let mut children = vec![holder];
        for i in 0..8 {
            children.push(
                apply(&db, &dir)
                    .args(["--wait", "90s"])
                    .env("MIGLOCK_INSTANCE", format!("waiter-{i}"))
                    .spawn(),
            );
        }
        for i in 0..4 {
            children.push(
                command(&db, "wait", &dir)
                    .args(["--timeout", "90s"])
                    .env("MIGLOCK_INSTANCE", format!("wait-{i}"))
                    .spawn(),
            );
        }
        wait_until(SETTLE, || {
            sessions_like(&db, "miglock apply waiting%") == 8
                && sessions_like(&db, "miglock wait waiting%") == 4
        });
        assert_eq!(db.history(), [1]);

        let down = Instant::now();
        match mode {
            "restart" => cluster.restart(),
            _ => {
                cluster.stop_immediate();
                cluster.start_again();
            }
        }
        // The restart ended the gate's session, and the gate with it.
        let outage = down.elapsed();
        let results = finish_all(children, Duration::from_secs(120));
        let done = down.elapsed();

        let mut codes = Vec::new();
        let mut applied = 0;
        for (i, (out, _)) in results.iter().enumerate() {
            assert!(
                CONTRACT_CODES.contains(&out.code),
                "[{mode}] process {i}: exit code {} is not in the contract\n{}",
                out.code,
                out.details()
            );
            let json = out.json();
            assert_eq!(json["exit_code"], out.code, "[{mode}] process {i}");
            applied += usize::from(json["outcome"] == "applied");
            codes.push(out.code);
        }
        // The holder: its connection was lost mid-migration; it reconnects,
        // finds V2 rolled back, and carries on under the lock (or finds
        // that a waiter applied the rest meanwhile). Never exit 1.
        let holder = &results[0].0;
        holder.assert_success();
        holder.assert_stderr_contains("CONNECT_RETRY the connection was lost during V2__gated");
        holder.assert_stderr_contains("carrying on under the lock");
        // The waiting replicas reconnect within their --wait and carry on.
        for (i, (out, _)) in results[1..].iter().enumerate() {
            out.assert_success();
            if i < 8 {
                out.assert_stderr_contains("CONNECT_RETRY");
            }
        }
        // The holder applied V1 before the outage; V2 and V3 were applied
        // once, by the holder or by one waiter.
        assert!(
            (1..=2).contains(&applied),
            "[{mode}] {applied} replicas report applied"
        );
        assert_eq!(db.history(), [1, 2, 3], "[{mode}]");
        assert_eq!(effects(&db), once_each(1..=3), "[{mode}]");
        assert_quiet(&db, key);
        let again = apply(&db, &dir).run();
        again.assert_success();
        assert_eq!(again.json()["outcome"], "current");
        eprintln!(
            "FIGURE server {mode} while 1 applies and 8 apply + 4 wait replicas wait: outage {:.1}s, \
             all 13 done {:.1}s after it began; exit codes {codes:?} (holder first)",
            outage.as_secs_f64(),
            done.as_secs_f64()
        );
    }
}
