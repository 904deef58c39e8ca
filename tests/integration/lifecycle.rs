//! Deploy lifecycles on real clusters: a hot standby (status and wait
//! work, apply waits for a primary then exits 5), and a server that restarts
//! in the middle of a migration (the run carries on: exit 0, each migration
//! once).

use crate::cluster::Cluster;
use crate::harness::{versions, wait_for, LockGate, Miglock, MigrationDir, SETTLE};

fn migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file("V1__create_t.sql", "CREATE TABLE t (id int);")
        .file("V2__add_note.sql", "ALTER TABLE t ADD COLUMN note text;");
    dir
}

#[test]
fn status_and_wait_work_on_a_hot_standby_and_apply_waits_for_a_primary() {
    let primary = Cluster::start();
    let db = primary.create_db();
    let dir = migrations();
    Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_success();
    let standby = primary.start_standby();
    let on_standby = || {
        let mut m = Miglock::new();
        m.env("DATABASE_URL", standby.url(db.name()));
        m
    };
    wait_for("the standby to replay the history", SETTLE, || {
        standby
            .connect(db.name())
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname = 'refinery_schema_history'",
                &[],
            )
            .is_ok_and(|row| row.get::<_, i64>(0) == 1)
    });
    assert!(standby
        .admin()
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get::<_, bool>(0));

    let status = on_standby()
        .args(["status", "--check", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    status.assert_success();
    assert_eq!(status.json()["outcome"], "current");
    // A standby refuses LISTEN (SQLSTATE 25006): wait polls instead.
    let out = on_standby()
        .args(["wait", "--timeout", "60s", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT version=V2__add_note");
    // Nothing pending: apply is fine on a standby too.
    on_standby()
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");

    // Something pending: a wait on the standby sees it applied on the
    // primary, once replayed.
    dir.file("V3__add_more.sql", "ALTER TABLE t ADD COLUMN more int;");
    let mut waiting = on_standby()
        .args([
            "wait",
            "--timeout",
            "120s",
            "--format",
            "json",
            "--migrations",
        ])
        .arg(dir.path())
        .spawn_watched();
    waiting.wait_for_stderr("WAITING_FOR_SCHEMA pending=1 next=V3__add_more", SETTLE);
    // …and apply against the standby waits for a primary, then gives up
    // with exit 5, touching nothing.
    let out = on_standby()
        .args([
            "apply",
            "--connect-timeout",
            "2s",
            "--format",
            "json",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_code(5)
        .assert_stderr_contains("SERVER_READ_ONLY")
        .assert_stderr_contains("is a read-only server (a hot standby");
    assert_eq!(out.json()["outcome"], "unavailable");
    assert_eq!(db.history(), [1, 2]);

    Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_success();
    let out = waiting.finish();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn apply_waits_out_a_primary_that_refuses_writes_then_exits_5() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name()
        ))
        .unwrap();
    let dir = migrations();
    let out = Miglock::for_db(&db)
        .args(["apply", "--connect-timeout", "1s", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(5)
        .assert_stderr_contains("SERVER_READ_ONLY")
        .assert_stderr_contains("default_transaction_read_only is on");
    assert!(!db.table_exists("refinery_schema_history"));
    // The key it took on the read-only server was given back.
    assert_eq!(
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
             AND ((classid::int8 << 32) | objid::int8) = {}",
            db.default_key()
        )),
        0
    );
}

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
    let dir = MigrationDir::new();
    dir.file(
        "V1__effects.sql",
        "CREATE TABLE effects (version int, at timestamptz DEFAULT clock_timestamp());\n\
         INSERT INTO effects (version) VALUES (1);",
    )
    .file(
        "V2__gated.sql",
        &format!(
            "INSERT INTO effects (version) VALUES (2);\n{}\n",
            LockGate::SQL
        ),
    )
    .file("V3__after.sql", "INSERT INTO effects (version) VALUES (3);");
    // The restart ends the gate's session, and the gate with it.
    let _gate = LockGate::close(&db);
    let run = Miglock::for_db(&db)
        .args(["apply", "--wait", "120s", "--format", "json"])
        .args(mode)
        .arg("--migrations")
        .arg(dir.path())
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
    let effects = db.query_strings("SELECT version FROM effects ORDER BY version");
    assert_eq!(
        effects,
        [
            [Some("1".to_string())],
            [Some("2".to_string())],
            [Some("3".to_string())]
        ],
        "each migration's effect exactly once"
    );
}
