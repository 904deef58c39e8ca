//! Replicas and the lock: one migrates while the others wait for it (or
//! give up at their `--wait`), and find the work done; two migration sets
//! in one database do not wait for each other.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::harness::{
    apply, finish_all, three_migrations, versions, wait_for, wait_until, MigrationDir, RunOutput,
    SETTLE,
};
use crate::probes::{
    assert_quiet, effects, effects_in, hold_key_as, key_holders, marked_waiting_like, once_each,
    sessions_like, LockGate,
};

#[test]
fn busy_lock_past_the_wait_exits_3_naming_the_holder_and_changes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let mut holder = db.client();
    let holder_pid = hold_key_as(&mut holder, db.default_key(), "stuck-deploy-7");
    let started = Instant::now();
    let out = apply(&db, &dir).args(["--wait", "1s"]).run();
    out.assert_code(3)
        .assert_stderr_contains(&format!(
            "LOCK_BUSY key={} holder_pid={holder_pid} holder_application_name=\"stuck-deploy-7\"",
            db.default_key()
        ))
        .assert_stderr_contains("LOCK_WAIT_TIMEOUT");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited the whole --wait"
    );
    let json = out.json();
    assert_eq!(json["outcome"], "skipped");
    assert_eq!(json["exit_code"], 3);
    assert_eq!(json["lock"]["holder"]["pid"], holder_pid);
    assert_eq!(json["lock"]["holder"]["application_name"], "stuck-deploy-7");
    assert!(json["lock"]["waited_ms"].as_u64().unwrap() >= 1000);
    assert_eq!(versions(&json["pending"]), [1, 2, 3]);
    assert!(
        !db.table_exists("refinery_schema_history"),
        "nothing was changed"
    );
    assert!(!db.table_exists("effects"));

    // `--wait 0` is one try, and MIGRATION_LOCK_WAIT_SECONDS is the seed deployment's name for it.
    for out in [
        apply(&db, &dir).args(["--wait", "0"]).run(),
        apply(&db, &dir)
            .env("MIGRATION_LOCK_WAIT_SECONDS", "0")
            .run(),
    ] {
        out.assert_code(3)
            .assert_stderr_contains("LOCK_BUSY")
            .assert_stderr_contains("LOCK_WAIT_TIMEOUT");
        assert_eq!(out.json()["outcome"], "skipped");
    }
    assert!(!db.table_exists("refinery_schema_history"));
}

#[test]
fn a_waiter_applies_once_the_holder_lets_go() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let key = db.default_key();
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .unwrap();
    let child = apply(&db, &dir).args(["--wait", "30s"]).spawn();
    wait_until(SETTLE, || sessions_like(&db, "miglock apply waiting%") == 1);
    // A plain unlock sends no notification: the waiter's polling finds it.
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
        .unwrap();
    let out = RunOutput::from_child(child);
    out.assert_success()
        .assert_stderr_contains("LOCK_BUSY")
        .assert_stderr_contains("LOCK_ACQUIRED");
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn a_waiter_finds_the_work_done_by_the_holder_and_exits_current() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    dir.file(
        "V2__create_users.sql",
        &format!(
            "{}\nCREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\n",
            LockGate::SQL
        ),
    );
    // The first run creates the history table, so the second can follow the
    // history while it waits. The first stays inside V2 until the second is
    // seen waiting for the lock.
    let mut gate = LockGate::close(&db);
    let first = apply(&db, &dir).spawn();
    wait_for(
        "the first run to hold the lock and wait in V2",
        SETTLE,
        || LockGate::waiting_like(&db, "miglock apply holding%") == 1,
    );
    let second = apply(&db, &dir).args(["--wait", "60s"]).spawn();
    wait_for("the second run to be marked as waiting", SETTLE, || {
        marked_waiting_like(&db, "miglock apply waiting%") == 1
    });
    assert_eq!(db.history(), [1], "the first run is still inside V2");
    gate.open();
    let second = RunOutput::from_child(second);
    let first = RunOutput::from_child(first);
    first.assert_success();
    assert_eq!(first.json()["outcome"], "applied");
    second
        .assert_success()
        .assert_stderr_contains("LOCK_BUSY")
        .assert_stderr_contains("SCHEMA_CURRENT");
    let json = second.json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["applied"], serde_json::json!([]));
    assert!(
        json["lock"]["holder"]["application_name"]
            .as_str()
            .is_some_and(|a| a.starts_with("miglock apply holding")),
        "{json:#}\n{}",
        second.stderr
    );
    assert_eq!(effects(&db), [(1, 1), (2, 1), (3, 1)]);
}

#[test]
fn twenty_concurrent_replicas_apply_each_migration_exactly_once() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    dir.file(
        "V4__slow.sql",
        "SELECT pg_sleep(0.5);\nINSERT INTO effects (version) VALUES (4);\n",
    );
    let children: Vec<_> = (0..20)
        .map(|i| {
            apply(&db, &dir)
                .args(["--wait", "60s"])
                .env("MIGLOCK_INSTANCE", format!("replica-{i}"))
                .spawn()
        })
        .collect();
    let outputs: Vec<RunOutput> = children.into_iter().map(RunOutput::from_child).collect();
    let mut applied_by = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        out.assert_success();
        let json = out.json();
        match json["outcome"].as_str().unwrap() {
            "applied" => applied_by.push(i),
            "current" => assert_eq!(json["applied"], serde_json::json!([]), "replica {i}"),
            other => panic!("replica {i}: outcome {other}\n{}", out.stderr),
        }
    }
    assert_eq!(
        applied_by.len(),
        1,
        "exactly one replica migrates: {applied_by:?}"
    );
    assert_eq!(
        versions(&outputs[applied_by[0]].json()["applied"]),
        [1, 2, 3, 4]
    );
    assert_eq!(db.history(), [1, 2, 3, 4]);
    assert_eq!(effects(&db), [(1, 1), (2, 1), (3, 1), (4, 1)]);
    assert!(key_holders(&db, db.default_key()).is_empty());
}

/// Two migration sets with their own history tables (so their own derived
/// keys) in one database: both hold their lock at the same moment.
#[test]
fn two_migration_sets_in_one_database_migrate_side_by_side() {
    let db = Cluster::shared().create_db();
    let app = MigrationDir::with(&[
        (
            "V1__app.sql",
            "CREATE TABLE app_effects (version int);\nINSERT INTO app_effects VALUES (1);\n",
        ),
        (
            "V2__app_gated.sql",
            &format!("INSERT INTO app_effects VALUES (2);\n{}\n", LockGate::SQL),
        ),
    ]);
    let billing = MigrationDir::with(&[
        (
            "V1__billing.sql",
            "CREATE TABLE billing_effects (version int);\nINSERT INTO billing_effects VALUES (1);\n",
        ),
        (
            "V2__billing_gated.sql",
            &format!("INSERT INTO billing_effects VALUES (2);\n{}\n", LockGate::SQL),
        ),
    ]);
    let app_key = db.default_key();
    let billing_key = db.key_for("billing.schema_history");
    assert_ne!(app_key, billing_key);

    let mut gate = LockGate::close(&db);
    let mut children = Vec::new();
    for i in 0..5 {
        children.push(
            apply(&db, &app)
                .args(["--wait", "60s"])
                .env("MIGLOCK_INSTANCE", format!("app-{i}"))
                .spawn(),
        );
        children.push(
            apply(&db, &billing)
                .args(["--wait", "60s", "--table", "billing.schema_history"])
                .env("MIGLOCK_INSTANCE", format!("billing-{i}"))
                .spawn(),
        );
    }
    // Both sets are inside their gated migration at once, each under its key.
    wait_until(Duration::from_secs(60), || {
        LockGate::waiting(&db) == 2 && sessions_like(&db, "miglock apply waiting%") == 8
    });
    assert_eq!(sessions_like(&db, "miglock apply holding%"), 2);
    assert_eq!(key_holders(&db, app_key).len(), 1);
    assert_eq!(key_holders(&db, billing_key).len(), 1);
    gate.open();
    let results = finish_all(children, Duration::from_secs(60));
    let mut applied = Vec::new();
    for (out, _) in &results {
        out.assert_success();
        let json = out.json();
        if json["outcome"] == "applied" {
            applied.push(json["lock"]["key"].as_i64().unwrap());
        }
    }
    applied.sort();
    let mut expected = vec![app_key, billing_key];
    expected.sort();
    assert_eq!(applied, expected, "one applier per set");
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(db.history_of("billing.schema_history"), [1, 2]);
    assert_eq!(effects_in(&db, "app_effects"), once_each(1..=2));
    assert_eq!(effects_in(&db, "billing_effects"), once_each(1..=2));
    assert_quiet(&db, app_key);
    assert_quiet(&db, billing_key);
}
