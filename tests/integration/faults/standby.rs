//! A server that cannot take writes: on a hot standby `status` and `wait`
//! work and `apply` waits for a primary, then exits 5; so does a primary
//! whose database defaults to read-only transactions, giving back the key
//! it took. Given a multi-host URL that lists the standby first, `apply`
//! finds the primary by itself, while `status` and `wait` take the first
//! server, as libpq does.

use crate::cluster::Cluster;
use crate::harness::{apply, two_migrations, wait_for, Miglock, SETTLE};
use crate::probes::key_holders;

#[test]
fn status_and_wait_work_on_a_hot_standby_and_apply_waits_for_a_primary() {
    let primary = Cluster::start();
    let db = primary.create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
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

    apply(&db, &dir).run().assert_success();
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
    let dir = two_migrations();
    let out = apply(&db, &dir).args(["--connect-timeout", "1s"]).run();
    out.assert_code(5)
        .assert_stderr_contains("SERVER_READ_ONLY")
        .assert_stderr_contains("default_transaction_read_only is on");
    assert!(!db.table_exists("refinery_schema_history"));
    // The key it took on the read-only server was given back.
    assert!(key_holders(&db, db.default_key()).is_empty());
}

#[test]
fn apply_finds_the_primary_behind_a_standby_listed_first() {
    let primary = Cluster::start();
    let db = primary.create_db();
    let standby = primary.start_standby();
    let dir = two_migrations();
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{},127.0.0.1:{}/{}",
        primary.password(),
        standby.port(),
        primary.port(),
        db.name()
    );
    wait_for("the standby to replay the database", SETTLE, || {
        standby
            .socket_config(db.name())
            .connect(postgres::NoTls)
            .is_ok()
    });
    let run = |command: &str, url: &str| {
        let mut m = Miglock::new();
        m.env("DATABASE_URL", url)
            .args([command, "--format", "json", "--migrations"])
            .arg(dir.path());
        m
    };

    // Told to take any server, apply takes the standby and waits there
    // for a primary that never comes: as the user asked.
    let by_param = run("apply", &format!("{url}?target_session_attrs=any"));
    let mut by_variable = run("apply", &url);
    by_variable.env("PGTARGETSESSIONATTRS", "any");
    for mut explicit in [by_param, by_variable] {
        let out = explicit.args(["--connect-timeout", "1s"]).run();
        out.assert_code(5)
            .assert_stderr_contains("SERVER_READ_ONLY")
            .assert_stderr_contains("is a read-only server (a hot standby");
        assert_eq!(out.json()["outcome"], "unavailable");
    }
    assert_eq!(db.history(), [0i64; 0]);

    // wait takes the first server, the standby, as libpq's default does…
    let on_standby = |pattern: &str| -> i64 {
        standby
            .connect(db.name())
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                &[&pattern],
            )
            .unwrap()
            .get(0)
    };
    let mut waiting = run("wait", &url)
        .args(["--timeout", "120s"])
        .spawn_watched();
    waiting.wait_for_stderr("WAITING_FOR_SCHEMA pending=2", SETTLE);
    assert_eq!(on_standby("miglock wait%"), 1);

    // …and apply, without target_session_attrs, passes it by for the
    // primary.
    let out = run("apply", &url).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=add_note");
    assert!(!out.stderr.contains("SERVER_READ_ONLY"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "note"));

    // The standby replays it: the wait ends, and status with the same URL
    // (on the standby) finds the schema current.
    let out = waiting.finish();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    let out = run("status", &url).arg("--check").run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    // A second apply finds nothing to do, on the primary.
    run("apply", &url)
        .run()
        .assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");

    // The primary down: with no server that takes writes, apply settles
    // for the standby, where the schema is current…
    primary.stop_fast();
    let out = run("apply", &url).args(["--connect-timeout", "5s"]).run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");
    assert_eq!(out.json()["outcome"], "current");
    // …and where a pending migration waits for a primary, then exit 5.
    dir.file("V3__add_more.sql", "ALTER TABLE t ADD COLUMN more int;");
    let out = run("apply", &url).args(["--connect-timeout", "1s"]).run();
    out.assert_code(5)
        .assert_stderr_contains("SERVER_READ_ONLY")
        .assert_stderr_contains("is a read-only server (a hot standby");
    primary.start_again();
    assert_eq!(db.history(), [1, 2]);
}
