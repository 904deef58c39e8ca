//! `miglock apply` on its own: what it applies and records, how it
//! reports a failing migration, and what its options change (`--dry-run`,
//! `--target`, `--table`, `--lock-key`, `--set`, the statement timeout).

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{
    apply, three_migrations, versions, wait_for, Miglock, MigrationDir, RunOutput, SETTLE,
};
use crate::probes::{effects, hold_default_key, key_holders, marked_waiting_like};

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
    assert!(
        key_holders(&db, db.default_key()).is_empty(),
        "the lock is released"
    );
}

#[test]
fn a_second_run_finds_the_schema_current_without_taking_the_lock() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    apply(&db, &dir).run().assert_success();
    // A session holding the key proves the no-op run never needs it.
    let _holder = hold_default_key(&db);
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
    let v3 = std::fs::read_to_string(dir.path().join("V3__add_email.sql")).unwrap();
    dir.remove("V3__add_email.sql");
    apply(&db, &dir).run().assert_success();
    dir.file("V3__add_email.sql", &v3);
    let json = apply(&db, &dir).run().assert_success().json();
    assert_eq!(versions(&json["applied"]), [3]);
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn history_is_refinerys_own_both_ways() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    // refinery applies V1 and V2 with its own runner…
    let v3 = std::fs::read_to_string(dir.path().join("V3__add_email.sql")).unwrap();
    dir.remove("V3__add_email.sql");
    let migrations = refinery::load_sql_migrations(dir.path()).unwrap();
    refinery::Runner::new(&migrations)
        .run(&mut db.client())
        .unwrap();
    assert_eq!(db.history(), [1, 2]);
    // …miglock recognises them (same checksums) and applies only V3…
    dir.file("V3__add_email.sql", &v3);
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
    assert!(key_holders(&db, db.default_key()).is_empty());
}

/// PostgreSQL gives no position for some errors (`relation "…" does not
/// exist` from an ALTER TABLE, an error inside a DO block): the line is
/// that of the one statement the error points to, said to be inferred and
/// from what; between several statements, none is named.
#[test]
fn a_failure_without_a_position_names_the_line_of_the_one_statement_it_points_to() {
    let cases: [(&str, &str, Option<i64>, &str); 5] = [
        (
            "a missing table",
            "-- V2: notes on tasks\nCREATE SCHEMA IF NOT EXISTS cft_task_db;\n\
             CREATE TABLE cft_task_db.t (id int);\n\nINSERT INTO cft_task_db.t VALUES (1);\n\
             ALTER TABLE cft_task_db.tasks ADD COLUMN note text;\nSELECT 1;\n",
            Some(6),
            ", line 6, the statement naming cft_task_db.tasks)",
        ),
        (
            "a missing column of a table the file names twice",
            "CREATE TABLE t2 (id int);\nALTER TABLE t2\n  DROP COLUMN nosuch;\n",
            Some(2),
            ", line 2, the statement naming nosuch and t2)",
        ),
        (
            "inside a DO block",
            "CREATE TABLE a (id int);\nDO $$\nBEGIN\n  ALTER TABLE nope ADD COLUMN x int;\nEND $$;\n",
            Some(2),
            ", line 2, the file's only DO block)",
        ),
        (
            "inside one of two DO blocks",
            "DO $$ BEGIN PERFORM 1; END $$;\nDO $$\nBEGIN\n  ALTER TABLE nope\n    ADD COLUMN x int;\nEND $$;\n",
            Some(2),
            ", line 2, the DO block holding the statement in the error's CONTEXT)",
        ),
        (
            "two statements could have raised it",
            "ALTER TABLE missing ADD COLUMN a int;\nALTER TABLE missing ADD COLUMN b int;\n",
            None,
            "V2__bad.sql): relation \"missing\" does not exist",
        ),
    ];
    for (case, sql, line, said) in cases {
        let db = Cluster::shared().create_db();
        let dir = MigrationDir::with(&[
            ("V1__create_t.sql", "CREATE TABLE t (id int);\n"),
            ("V2__bad.sql", sql),
        ]);
        let out = apply(&db, &dir).run();
        out.assert_code(1).assert_stderr_contains(said);
        let json = out.json();
        assert_eq!(json["outcome"], "failed", "[{case}] {json:#}");
        assert_eq!(json["error"]["line"].as_i64(), line, "[{case}] {json:#}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(said),
            "[{case}] {json:#}"
        );
        // V2 rolled back whole.
        assert_eq!(db.history(), [1], "[{case}]");
        for table in ["cft_task_db.t", "t2", "a"] {
            assert!(!db.table_exists(table), "[{case}] {table}");
        }
    }
}

#[test]
fn detail_and_hint_are_reported() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[(
        "V1__t.sql",
        "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t VALUES (1), (1);\n",
    )]);
    let out = apply(&db, &dir).run();
    out.assert_code(1)
        .assert_stderr_contains(
            "duplicate key value violates unique constraint \"t_pkey\" (SQLSTATE 23505)",
        )
        .assert_stderr_contains("DETAIL: Key (id)=(1) already exists.");
    let dir = MigrationDir::with(&[("V1__f.sql", "SELECT no_such_function(1);\n")]);
    apply(&db, &dir)
        .run()
        .assert_code(1)
        .assert_stderr_contains("(SQLSTATE 42883)")
        .assert_stderr_contains("HINT: No function matches");
    assert!(!db.table_exists("t"));
    assert_eq!(db.history(), Vec::<i64>::new());
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
    let _holder = hold_default_key(&db);
    let other = MigrationDir::with(&[("V1__billing.sql", "CREATE TABLE invoices (id int);\n")]);
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
    let out = apply(&db, &dir).env("DATABASE_URL", url).run();
    out.assert_code(1)
        .assert_stderr_contains("LOCK_ACQUIRED")
        .assert_stderr_contains("cannot create the history table refinery_schema_history")
        .assert_stderr_contains("LOCK_RELEASED");
    assert_eq!(out.json()["error"]["sqlstate"], "42501");
    assert!(!db.table_exists("refinery_schema_history"));
    assert!(key_holders(&db, db.default_key()).is_empty());
}

#[test]
fn settings_may_hold_commas_and_come_from_the_environment() {
    let db = Cluster::shared().create_db();
    db.client().batch_execute("CREATE SCHEMA app").unwrap();
    let dir = MigrationDir::with(&[(
        "V1__where.sql",
        "CREATE TABLE public.seen AS SELECT current_setting('search_path') AS path, \
         current_setting('work_mem') AS mem;\n",
    )]);
    apply(&db, &dir)
        .args(["--set", "search_path=app,public"])
        .env("MIGLOCK_SET", "work_mem=1MB")
        .run()
        .assert_success();
    // The flag wins over the environment: work_mem kept its default.
    let seen = db.query_strings("SELECT path, mem FROM public.seen");
    assert_eq!(seen[0][0].as_deref(), Some("app,public"));
    assert_ne!(seen[0][1].as_deref(), Some("1MB"));

    let dir = MigrationDir::with(&[
        ("V1__where.sql", "SELECT 1;\n"),
        (
            "V2__mem.sql",
            "CREATE TABLE public.mem AS SELECT current_setting('work_mem') AS mem;\n",
        ),
    ]);
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
fn statement_timeout_bounds_migration_statements_but_not_the_lock_wait() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[(
        "V1__slow.sql",
        "CREATE TABLE s (id int);\nSELECT pg_sleep(5);\n",
    )]);
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
    let fast = MigrationDir::with(&[("V1__fast.sql", "CREATE TABLE f (id int);\n")]);
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
    let dir = MigrationDir::with(&[(
        "V1__slow.sql",
        "SELECT pg_sleep(0.6);\nCREATE TABLE s (id int);\n",
    )]);
    apply(&db, &dir).run().assert_success();
    assert!(db.table_exists("s"));
}
