//! What miglock makes the server log: nothing above LOG in a normal run.

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, wait_for, MigrationDir, RunOutput, SETTLE};
use crate::probes::{marked_waiting_like, LockGate};

/// A run that applies, with another waiting for the lock meanwhile, must
/// leave no WARNING in the server log: operators alert on them. Also with a
/// stricter default isolation, under which the waiter's history read still
/// needs a snapshot of its own to see the holder's work.
#[test]
fn a_normal_run_and_its_waiter_leave_no_warning_in_the_server_log() {
    let cluster = Cluster::start();
    for isolation in [None, Some("repeatable read"), Some("serializable")] {
        let db = cluster.create_db();
        if let Some(isolation) = isolation {
            db.client()
                .batch_execute(&format!(
                    "ALTER DATABASE \"{}\" SET default_transaction_isolation = '{isolation}'",
                    db.name()
                ))
                .unwrap();
        }
        run_with_a_waiter(&cluster, &db);
    }
}

fn run_with_a_waiter(cluster: &Cluster, db: &TestDb) {
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (id int);"),
        (
            "V2__gated.sql",
            &format!("{}\nINSERT INTO t VALUES (2);\n", LockGate::SQL),
        ),
        ("V3__more.sql", "INSERT INTO t VALUES (3);"),
    ]);
    // Only the first run's history table exists: the waiter then re-reads
    // it with every attempt, the batch that used to warn.
    apply(db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    let before = cluster.server_log().len();

    let mut gate = LockGate::close(db);
    let first = apply(db, &dir).spawn();
    wait_for(
        "the first run to hold the lock and wait in V2",
        SETTLE,
        || LockGate::waiting_like(db, "miglock apply holding%") == 1,
    );
    let second = apply(db, &dir).args(["--wait", "60s"]).spawn();
    wait_for("the second run to be marked as waiting", SETTLE, || {
        marked_waiting_like(db, "miglock apply waiting%") == 1
    });
    gate.open();
    let first = RunOutput::from_child(first);
    let second = RunOutput::from_child(second);
    first.assert_success();
    second.assert_success().assert_stderr_contains("LOCK_BUSY");
    assert_eq!(first.json()["outcome"], "applied");
    assert_eq!(second.json()["outcome"], "current");
    assert_eq!(db.history(), [1, 2, 3]);

    let log = cluster.server_log();
    let warnings: Vec<&str> = log[before..]
        .lines()
        .filter(|l| l.contains("WARNING"))
        .collect();
    assert!(
        warnings.is_empty(),
        "server warnings ({}):\n{}",
        db.name(),
        &log[before..]
    );
}
