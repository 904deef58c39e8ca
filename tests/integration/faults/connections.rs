//! Lost connections: a DBA terminates the holder's backend (it stops
//! with exit 1 and a waiter takes over, even when the holder cannot
//! reconnect until the waiter has applied), and a server that stops for
//! good under a run (exit 5).

use crate::cluster::Cluster;
use crate::harness::{
    apply, gated_migrations, versions, wait_for, wait_until, MigrationDir, RunOutput, SETTLE,
};
use crate::probes::{
    assert_quiet, backends_like, effects, key_holders, marked_waiting_like, once_each,
    sessions_like, LockGate,
};

/// V1 makes table `t`; V2 adds its column `x`, then waits for the
/// [`LockGate`]: it stays running until the test opens the gate.
fn gated_alter_migrations() -> MigrationDir {
    MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (id int);\n"),
        (
            "V2__alter_t.sql",
            &format!("ALTER TABLE t ADD COLUMN x int;\n{}\n", LockGate::SQL),
        ),
    ])
}

#[test]
fn a_holder_whose_backend_is_terminated_exits_1_and_a_waiter_takes_over() {
    let db = Cluster::shared().create_db();
    // V2 stays running (waiting for the gate the test holds) until ended.
    let dir = gated_alter_migrations();
    let mut gate = LockGate::close(&db);
    let holder = apply(&db, &dir).args(["--wait", "120s"]).spawn();
    wait_for("the holder to be inside V2", SETTLE, || {
        LockGate::waiting_like(&db, "miglock apply holding%") == 1
    });
    let waiter = apply(&db, &dir).args(["--wait", "120s"]).spawn();
    wait_for("the waiter to be marked as waiting", SETTLE, || {
        marked_waiting_like(&db, "miglock apply waiting%") == 1
    });
    // A DBA ends the holder's session: on purpose, so the holder does not
    // run V2 again (a restart, by contrast, is carried through).
    db.query_i64(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'miglock apply holding%'",
    );
    let out = RunOutput::from_child(holder);
    out.assert_code(1)
        .assert_stderr_contains("MIGRATION_FAILED version=2")
        .assert_stderr_contains(
            "The connection was lost during V2__alter_t while the server stayed up",
        );
    // The waiter takes over and runs V2 itself, up to the gate.
    wait_for("the waiter to take over and be inside V2", SETTLE, || {
        LockGate::waiting_like(&db, "miglock apply holding%") == 1
    });
    gate.open();
    let waiter = RunOutput::from_child(waiter);
    waiter.assert_success();
    assert_eq!(versions(&waiter.json()["applied"]), [2]);
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "x"));
    assert!(key_holders(&db, db.default_key()).is_empty());
}

/// A DBA terminates the holder's backend, and the holder cannot reconnect
/// at once (its role is at its connection limit), so a waiter takes over
/// and applies the migration first. The holder exits 1 (ended on purpose);
/// nothing is applied twice.
#[test]
fn a_terminated_holder_that_reconnects_late_exits_1_and_the_waiter_applies() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let dir = gated_migrations();
    let role = format!("late_holder_{}_{}", std::process::id(), db.name());
    let password = "late-holder-secret-7c1d";
    let mut admin = db.client();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}'; ALTER DATABASE {} OWNER TO {role}; \
             GRANT ALL ON SCHEMA public TO {role}",
            db.name()
        ))
        .unwrap();
    let holder_url = format!(
        "postgres://{role}:{password}@127.0.0.1:{}/{}",
        db.cluster().port(),
        db.name()
    );

    let mut gate = LockGate::close(&db);
    let holder = apply(&db, &dir)
        .env("DATABASE_URL", &holder_url)
        .args(["--connect-timeout", "60s"])
        .env("MIGLOCK_INSTANCE", "holder")
        .spawn();
    wait_until(SETTLE, || LockGate::waiting(&db) == 1);
    let holder_backend = backends_like(&db, "miglock apply holding%")[0];
    let waiter = apply(&db, &dir)
        .args(["--wait", "60s"])
        .env("MIGLOCK_INSTANCE", "waiter")
        .spawn();
    wait_until(SETTLE, || sessions_like(&db, "miglock apply waiting%") == 1);

    admin
        .batch_execute(&format!("ALTER ROLE {role} CONNECTION LIMIT 0"))
        .unwrap();
    let terminated: bool = admin
        .query_one(
            "SELECT pg_terminate_backend($1)",
            &[&(holder_backend as i32)],
        )
        .unwrap()
        .get(0);
    assert!(terminated);
    // The waiter takes over, inside V2; then completes.
    wait_until(SETTLE, || {
        let holders = backends_like(&db, "miglock apply holding%");
        holders.len() == 1 && holders[0] != holder_backend && LockGate::waiting(&db) == 1
    });
    assert_eq!(db.history(), [1]);
    gate.open();
    let waiter = RunOutput::from_child(waiter);
    waiter.assert_success();
    assert_eq!(versions(&waiter.json()["applied"]), [2, 3]);
    admin
        .batch_execute(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .unwrap();

    let out = RunOutput::from_child(holder);
    // Ended on purpose by a DBA (the server did not restart): the holder
    // stops there, whoever has applied V2 since.
    out.assert_code(1)
        .assert_stderr_contains("MIGRATION_FAILED version=2 name=gated")
        .assert_stderr_contains("too many connections for role")
        .assert_stderr_contains(
            "The connection was lost during V2__gated while the server stayed up",
        );
    assert_eq!(out.json()["outcome"], "failed");
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(password),
            "the role's password leaked\n{}",
            out.details()
        );
    }
    // The migration's effect was made once, by the waiter's backend, not by
    // the terminated holder's (whose transaction rolled back).
    assert_eq!(db.history(), [1, 2, 3]);
    assert_eq!(effects(&db), once_each(1..=3));
    let v2_writer = db.query_i64("SELECT pid FROM effects WHERE version = 2");
    assert_ne!(v2_writer, holder_backend);
    // The holder tells its own history row (by its applied_on) from the
    // waiter's: it never claims the waiter's commit as its own.
    assert!(!out.stderr.contains("it had committed"), "{}", out.stderr);
    assert_quiet(&db, key);
}

#[test]
fn a_connection_lost_mid_migration_with_no_server_to_check_exits_5() {
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let dir = gated_alter_migrations();
    // The stop ends the gate's session too.
    let _gate = LockGate::close(&db);
    let child = apply(&db, &dir).args(["--connect-timeout", "1s"]).spawn();
    wait_for("the run to be inside V2", SETTLE, || {
        LockGate::waiting_like(&db, "miglock apply holding%") == 1
    });
    cluster.stop_fast();
    let out = RunOutput::from_child(child);
    out.assert_code(5)
        .assert_stderr_contains("CONNECT_RETRY the connection was lost during V2__alter_t")
        .assert_stderr_contains("Reconnecting failed");
    assert_eq!(out.json()["outcome"], "unavailable");
    cluster.start_again();
    assert_eq!(db.history(), [1]);
    assert!(!db.column_exists("t", "x"));
}
