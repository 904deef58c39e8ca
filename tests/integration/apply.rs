//! `miglock apply` against a real PostgreSQL: what it applies, how it waits
//! for the lock, how it fails, and how it stops.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    marked_waiting_like, send_signal, versions, wait_for, wait_until, LockGate, Miglock,
    MigrationDir, RunOutput, SETTLE,
};

/// Three migrations, each leaving a side effect that tells how often it ran.
fn three_migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file(
        "V1__create_effects.sql",
        "CREATE TABLE effects (version int NOT NULL, at timestamptz DEFAULT clock_timestamp());\n\
         INSERT INTO effects (version) VALUES (1);\n",
    )
    .file(
        "V2__create_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\n",
    )
    .file(
        "V3__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\nINSERT INTO effects (version) VALUES (3);\n",
    );
    dir
}

fn apply(db: &TestDb, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

fn effects(db: &TestDb) -> Vec<(i64, i64)> {
    db.query_strings("SELECT version, count(*) FROM effects GROUP BY version ORDER BY version")
        .into_iter()
        .map(|row| {
            (
                row[0].as_deref().unwrap().parse().unwrap(),
                row[1].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn advisory_locks_held(db: &TestDb, key: i64) -> i64 {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND ((classid::int8 << 32) | objid::int8) = {key}"
    ))
}

#[test]
fn applies_pending_migrations_in_order_and_records_them() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let out = apply(&db, &dir).run();
    out.assert_success()
        .assert_stderr_contains("LOCK_ACQUIRED")
        .assert_stderr_contains("MIGRATION_APPLIED version=1 name=create_effects ms=")
        .assert_stderr_contains("MIGRATION_APPLIED version=3 name=add_email")
        .assert_stderr_contains("LOCK_RELEASED");
    let json = out.json();
    assert_eq!(json["command"], "apply");
    assert_eq!(json["outcome"], "applied");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(versions(&json["applied"]), [1, 2, 3]);
    assert!(json["applied"][0]["duration_ms"].is_u64());
    assert_eq!(json["pending"], serde_json::json!([]));
    assert_eq!(json["error"], Value::Null);
    assert_eq!(
        json["lock"]["key"].as_i64(),
        Some(db.default_key()),
        "the documented key formula"
    );
    assert_eq!(json["lock"]["holder"], Value::Null);
    assert!(json["lock"]["waiting"].is_array());
    assert!(!json["database"].as_str().unwrap().contains("pw-"));

    assert_eq!(db.history(), [1, 2, 3]);
    assert_eq!(effects(&db), [(1, 1), (2, 1), (3, 1)]);
    assert_eq!(
        advisory_locks_held(&db, db.default_key()),
        0,
        "the lock is released"
    );
}

#[test]
fn a_second_run_finds_the_schema_current_without_taking_the_lock() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    apply(&db, &dir).run().assert_success();
    // A session holding the key proves the no-op run never needs it.
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({})", db.default_key()))
        .unwrap();
    let out = apply(&db, &dir).args(["--wait", "0"]).run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT version=V3__add_email applied=3");
    assert!(
        !out.stderr.contains("LOCK_ACQUIRED") && !out.stderr.contains("LOCK_BUSY"),
        "{}",
        out.stderr
    );
    let json = out.json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["applied"], serde_json::json!([]));
    assert_eq!(effects(&db), [(1, 1), (2, 1), (3, 1)]);
}

#[test]
fn new_files_are_applied_on_top_of_an_earlier_run() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    dir.remove("V3__add_email.sql");
    apply(&db, &dir).run().assert_success();
    dir.file(
        "V3__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\nINSERT INTO effects (version) VALUES (3);\n",
    );
    let json = apply(&db, &dir).run().assert_success().json();
    assert_eq!(versions(&json["applied"]), [3]);
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn history_is_refinerys_own_both_ways() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    // refinery applies V1 and V2 with its own runner…
    dir.remove("V3__add_email.sql");
    let migrations = refinery::load_sql_migrations(dir.path()).unwrap();
    refinery::Runner::new(&migrations)
        .run(&mut db.client())
        .unwrap();
    assert_eq!(db.history(), [1, 2]);
    // …miglock recognises them (same checksums) and applies only V3…
    dir.file(
        "V3__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\nINSERT INTO effects (version) VALUES (3);\n",
    );
    let json = apply(&db, &dir).run().assert_success().json();
    assert_eq!(versions(&json["applied"]), [3]);
    // …and refinery reads miglock's row back as its own: nothing left to do,
    // no divergence (its runner aborts on divergent and missing by default).
    let migrations = refinery::load_sql_migrations(dir.path()).unwrap();
    let report = refinery::Runner::new(&migrations)
        .run(&mut db.client())
        .unwrap();
    assert!(report.applied_migrations().is_empty());
    let applied = refinery::Runner::new(&migrations)
        .get_applied_migrations(&mut db.client())
        .unwrap();
    assert_eq!(applied.len(), 3);
    assert_eq!(applied[2].checksum(), migrations[2].checksum());
    assert_eq!(effects(&db), [(1, 1), (2, 1), (3, 1)]);
}

#[test]
fn a_failing_migration_is_rolled_back_and_reported_with_file_line_and_sqlstate() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    dir.file(
        "V2__create_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\n\nSELECT * FROM no_such_table\n  WHERE id = 1;\n",
    );
    let out = apply(&db, &dir).run();
    out.assert_code(1)
        .assert_stderr_contains("MIGRATION_APPLIED version=1")
        .assert_stderr_contains("MIGRATION_FAILED version=2 name=create_users sqlstate=42P01")
        .assert_stderr_contains("V2__create_users.sql, line 4)")
        .assert_stderr_contains("relation \"no_such_table\" does not exist (SQLSTATE 42P01)")
        .assert_stderr_contains("LOCK_RELEASED");
    assert!(!out.stderr.contains("MIGRATION_APPLIED version=3"));
    let json = out.json();
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["error"]["sqlstate"], "42P01");
    assert_eq!(json["error"]["line"], 4);
    assert!(json["error"]["file"]
        .as_str()
        .unwrap()
        .ends_with("V2__create_users.sql"));
    assert_eq!(versions(&json["applied"]), [1]);
    assert_eq!(versions(&json["pending"]), [2, 3]);
    // Nothing of V2 remains: neither its table nor its side effect nor its row.
    assert_eq!(db.history(), [1]);
    assert!(!db.table_exists("users"));
    assert_eq!(effects(&db), [(1, 1)]);
    assert_eq!(advisory_locks_held(&db, db.default_key()), 0);
}

#[test]
fn detail_and_hint_are_reported() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__t.sql",
        "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t VALUES (1), (1);\n",
    );
    let out = apply(&db, &dir).run();
    out.assert_code(1)
        .assert_stderr_contains(
            "duplicate key value violates unique constraint \"t_pkey\" (SQLSTATE 23505)",
        )
        .assert_stderr_contains("DETAIL: Key (id)=(1) already exists.");
    let dir = MigrationDir::new();
    dir.file("V1__f.sql", "SELECT no_such_function(1);\n");
    apply(&db, &dir)
        .run()
        .assert_code(1)
        .assert_stderr_contains("(SQLSTATE 42883)")
        .assert_stderr_contains("HINT: No function matches");
    assert!(!db.table_exists("t"));
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn busy_lock_past_the_wait_exits_3_naming_the_holder_and_changes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let mut holder = db.client();
    holder
        .batch_execute(&format!(
            "SET application_name = 'stuck-deploy-7'; SELECT pg_advisory_lock({})",
            db.default_key()
        ))
        .unwrap();
    let holder_pid = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get::<_, i32>(0);
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
    wait_until(SETTLE, || {
        db.query_i64("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'miglock apply waiting%'") == 1
    });
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
    assert_eq!(advisory_locks_held(&db, db.default_key()), 0);
}

#[test]
fn sigterm_and_sigint_mid_migration_roll_back_release_and_exit_130() {
    for signal in ["TERM", "INT"] {
        let db = Cluster::shared().create_db();
        let dir = three_migrations();
        dir.file(
            "V2__create_users.sql",
            "CREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\nSELECT pg_sleep(600);\n",
        );
        let child = apply(&db, &dir).spawn();
        let pid = child.id();
        wait_for("V2's pg_sleep to be running", SETTLE, || {
            db.query_i64("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(600)%' AND state = 'active' AND application_name LIKE 'miglock apply holding%'") == 1
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
        assert_eq!(advisory_locks_held(&db, db.default_key()), 0, "SIG{signal}");
        // The next run completes the set.
        dir.file(
            "V2__create_users.sql",
            "CREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\n",
        );
        apply(&db, &dir).run().assert_success();
        assert_eq!(db.history(), [1, 2, 3]);
    }
}

#[test]
fn a_signal_while_waiting_for_the_lock_exits_130_without_changes() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({})", db.default_key()))
        .unwrap();
    let child = apply(&db, &dir).args(["--wait", "60s"]).spawn();
    let pid = child.id();
    wait_until(SETTLE, || {
        db.query_i64("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'miglock apply waiting%'") == 1
    });
    send_signal(pid, "TERM");
    let out = RunOutput::from_child(child);
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGTERM");
    assert_eq!(out.json()["outcome"], "interrupted");
    assert!(!db.table_exists("refinery_schema_history"));
}

#[test]
fn statement_timeout_bounds_migration_statements_but_not_the_lock_wait() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__slow.sql",
        "CREATE TABLE s (id int);\nSELECT pg_sleep(5);\n",
    );
    let out = apply(&db, &dir)
        .args(["--statement-timeout", "300ms"])
        .run();
    out.assert_code(1)
        .assert_stderr_contains("canceling statement due to statement timeout (SQLSTATE 57014)");
    assert_eq!(out.json()["error"]["sqlstate"], "57014");
    assert!(!db.table_exists("s"));

    // A lock held for longer than the statement timeout does not cut the wait.
    let key = db.default_key();
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .unwrap();
    let fast = MigrationDir::new();
    fast.file("V1__fast.sql", "CREATE TABLE f (id int);\n");
    let child = apply(&db, &fast)
        .args(["--wait", "60s"])
        .env("MIGLOCK_STATEMENT_TIMEOUT", "200ms")
        .spawn();
    wait_for("the run to be marked as waiting", SETTLE, || {
        marked_waiting_like(&db, "miglock apply waiting%") == 1
    });
    // The scenario: the lock stays busy for over five statement timeouts
    // of the waiting run (the server's clock says when).
    wait_for(
        "the run to have waited over five statement timeouts",
        SETTLE,
        || {
            db.query_i64(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'miglock apply waiting%' \
             AND clock_timestamp() - backend_start > interval '1 second'",
            ) == 1
        },
    );
    assert_eq!(
        marked_waiting_like(&db, "miglock apply waiting%"),
        1,
        "still waiting after five statement timeouts"
    );
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
        .unwrap();
    let out = RunOutput::from_child(child);
    out.assert_success()
        .assert_stderr_contains("LOCK_BUSY")
        .assert_stderr_contains("LOCK_ACQUIRED");
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert!(
        json["lock"]["waited_ms"].as_u64().unwrap() >= 1000,
        "it waited past the statement timeout: {json:#}"
    );
    assert!(db.table_exists("f"));
}

#[test]
fn a_role_statement_timeout_does_not_cut_a_long_migration() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET statement_timeout = '200ms'",
            db.name()
        ))
        .unwrap();
    let dir = MigrationDir::new();
    dir.file(
        "V1__slow.sql",
        "SELECT pg_sleep(0.6);\nCREATE TABLE s (id int);\n",
    );
    apply(&db, &dir).run().assert_success();
    assert!(db.table_exists("s"));
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let mut m = Miglock::for_db(&db);
    let out = m
        .args(["apply", "--dry-run", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(7)
        .assert_stdout_contains("apply V1__create_effects")
        .assert_stdout_contains("apply V3__add_email")
        .assert_stdout_contains("3 pending, 0 applied; nothing was changed");
    assert!(!db.table_exists("refinery_schema_history"));
    let json = apply(&db, &dir)
        .arg("--dry-run")
        .run()
        .assert_code(7)
        .json();
    assert_eq!(json["outcome"], "pending");
    assert_eq!(json["dry_run"], true);
    assert_eq!(versions(&json["pending"]), [1, 2, 3]);
    assert!(!db.table_exists("effects"));

    apply(&db, &dir).run().assert_success();
    let json = apply(&db, &dir)
        .arg("--dry-run")
        .run()
        .assert_success()
        .json();
    assert_eq!(json["outcome"], "current");
}

#[test]
fn target_applies_up_to_and_including_a_version() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let json = apply(&db, &dir)
        .args(["--target", "2"])
        .run()
        .assert_success()
        .json();
    assert_eq!(versions(&json["applied"]), [1, 2]);
    assert_eq!(db.history(), [1, 2]);
    let json = apply(&db, &dir)
        .args(["--target", "2"])
        .run()
        .assert_success()
        .json();
    assert_eq!(json["outcome"], "current");
    apply(&db, &dir).run().assert_success();
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn two_history_tables_in_one_database_do_not_block_each_other() {
    let db = Cluster::shared().create_db();
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({})", db.default_key()))
        .unwrap();
    let other = MigrationDir::new();
    other.file("V1__billing.sql", "CREATE TABLE invoices (id int);\n");
    let out = apply(&db, &other)
        .args(["--wait", "0", "--table", "billing.Schema_History"])
        .run();
    out.assert_success().assert_stderr_contains(
        "HISTORY_SCHEMA_CREATED schema=billing (for the history table billing.schema_history)",
    );
    let json = out.json();
    assert_ne!(json["lock"]["key"].as_i64(), Some(db.default_key()));
    assert!(
        db.table_exists("billing.schema_history"),
        "the schema is created with the table"
    );
    assert!(db.table_exists("invoices"));
    assert!(!db.table_exists("refinery_schema_history"));
    // An existing schema is not "created" again.
    other.file("V2__more.sql", "CREATE TABLE credits (id int);\n");
    let out = apply(&db, &other)
        .args(["--wait", "0", "--table", "billing.schema_history"])
        .run();
    out.assert_success();
    assert!(
        !out.stderr.contains("HISTORY_SCHEMA_CREATED"),
        "{}",
        out.stderr
    );
    let status = Miglock::for_db(&db)
        .args([
            "status",
            "--table",
            "billing.schema_history",
            "--migrations",
        ])
        .arg(other.path())
        .run();
    status
        .assert_success()
        .assert_stdout_contains("Table       billing.schema_history\n");
}

#[test]
fn explicit_lock_key_and_quiet_logging() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    let mut holder = db.client();
    holder.batch_execute("SELECT pg_advisory_lock(42)").unwrap();
    apply(&db, &dir)
        .args(["--lock-key", "42", "--wait", "0"])
        .run()
        .assert_code(3);
    let out = apply(&db, &dir)
        .args(["-q", "--wait", "0"])
        .env("MIGLOCK_LOCK_KEY", "43")
        .run();
    out.assert_success();
    assert!(
        !out.stderr.contains("MIGRATION_APPLIED"),
        "-q hides info lines: {}",
        out.stderr
    );
    assert_eq!(out.json()["lock"]["key"], 43);
    assert_eq!(out.json()["lock"]["key_source"], "--lock-key");
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn verbose_runs_and_an_empty_folder() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    let out = apply(&db, &dir)
        .arg("-vv")
        .env("RUN_MIGRATIONS", "yes")
        .run();
    out.assert_success()
        .assert_stderr_contains("no migration files in");
    assert_eq!(out.json()["outcome"], "current");
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
fn the_lock_is_released_and_logged_when_the_history_table_cannot_be_created() {
    let db = Cluster::shared().create_db();
    // PostgreSQL 15 lets no role but the owner create in schema public.
    let role = format!("{}_app", db.name());
    db.client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{}'",
            db.cluster().password()
        ))
        .unwrap();
    let url = format!(
        "postgres://{role}:{}@127.0.0.1:{}/{}",
        db.cluster().password(),
        db.cluster().port(),
        db.name()
    );
    let dir = three_migrations();
    let out = Miglock::new()
        .env("DATABASE_URL", url)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(1)
        .assert_stderr_contains("LOCK_ACQUIRED")
        .assert_stderr_contains("cannot create the history table refinery_schema_history")
        .assert_stderr_contains("LOCK_RELEASED");
    assert_eq!(out.json()["error"]["sqlstate"], "42501");
    assert!(!db.table_exists("refinery_schema_history"));
    assert_eq!(advisory_locks_held(&db, db.default_key()), 0);
}

#[test]
fn settings_may_hold_commas_and_come_from_the_environment() {
    let db = Cluster::shared().create_db();
    db.client().batch_execute("CREATE SCHEMA app").unwrap();
    let dir = MigrationDir::new();
    dir.file(
        "V1__where.sql",
        "CREATE TABLE public.seen AS SELECT current_setting('search_path') AS path, \
         current_setting('work_mem') AS mem;\n",
    );
    apply(&db, &dir)
        .args(["--set", "search_path=app,public"])
        .env("MIGLOCK_SET", "work_mem=1MB")
        .run()
        .assert_success();
    // The flag wins over the environment: work_mem kept its default.
    let seen = db.query_strings("SELECT path, mem FROM public.seen");
    assert_eq!(seen[0][0].as_deref(), Some("app,public"));
    assert_ne!(seen[0][1].as_deref(), Some("1MB"));

    let dir = MigrationDir::new();
    dir.file("V1__where.sql", "SELECT 1;\n").file(
        "V2__mem.sql",
        "CREATE TABLE public.mem AS SELECT current_setting('work_mem') AS mem;\n",
    );
    let other = Cluster::shared().create_db();
    apply(&other, &dir)
        .env("MIGLOCK_SET", "work_mem=1MB;search_path=public")
        .run()
        .assert_success();
    assert_eq!(
        other.query_strings("SELECT mem FROM mem")[0][0].as_deref(),
        Some("1MB")
    );
}

#[test]
fn odd_command_lines_are_usage_errors_without_echoing_secrets() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    // A connection string given as a positional argument by mistake.
    let out = Miglock::new()
        .args(["apply", "--format", "json"])
        .arg(db.url())
        .run();
    out.assert_code(2)
        .assert_stderr_contains("unexpected argument '<connection string>'");
    assert_eq!(out.json()["outcome"], "usage");
    // Timeouts PostgreSQL cannot hold.
    apply(&db, &dir)
        .args(["--statement-timeout", "30d"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("too long for a PostgreSQL timeout");
    // An argument that is not UTF-8.
    let out = Miglock::for_db(&db)
        .args(["apply", "--wait", "bogus", "--migrations"])
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff"))
        .run();
    out.assert_code(2);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!db.table_exists("refinery_schema_history"));
}
