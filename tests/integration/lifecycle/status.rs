//! `miglock status` against a real PostgreSQL: what it reports about the
//! history, the migration files and the lock, and that it changes nothing.

use std::thread;

use postgres::{Client, NoTls};
use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, closed_port, command, send_signal, two_migrations, versions, wait_for, wait_until,
    Miglock, MigrationDir, RunOutput, SETTLE,
};
use crate::probes::{backend_pid, hold_key_as, key_holders, LockGate};

/// `miglock status --migrations DIR` for the database (text output).
fn status(db: &TestDb, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["status", "--migrations"]).arg(dir.path());
    m
}

/// `status --format json`, run, and the exit code checked.
#[track_caller]
fn status_json(db: &TestDb, dir: &MigrationDir, extra: &[&str], code: i32) -> Value {
    command(db, "status", dir)
        .args(extra)
        .run()
        .assert_code(code)
        .json()
}

/// A list field that `skip_serializing_if` may leave out when empty.
fn optional_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        other => panic!("not a list: {other}"),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// PostgreSQL keeps the first 63 bytes of `application_name`.
fn truncated(name: String) -> String {
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

#[test]
fn an_empty_database_has_everything_pending() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let key = db.default_key();

    let json = status_json(&db, &dir, &[], 0);
    assert_eq!(json["command"], "status");
    assert_eq!(json["outcome"], "pending");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["applied"], serde_json::json!([]));
    assert_eq!(versions(&json["pending"]), [1, 2]);
    assert_eq!(json["pending"][0]["name"], "create_t");
    assert_eq!(json["table"]["name"], "refinery_schema_history");
    assert_eq!(json["table"]["exists"], false);
    assert_eq!(json["lock"]["key"].as_i64(), Some(key));
    assert_eq!(
        json["lock"]["key_source"],
        format!(
            "derived from md5('miglock:{}:refinery_schema_history')",
            db.name()
        )
    );
    assert_eq!(json["lock"]["holder"], Value::Null);
    assert_eq!(json["lock"]["waiting"], serde_json::json!([]));
    assert!(optional_list(&json["lock"]["blocked"]).is_empty());
    assert!(optional_list(&json["problems"]).is_empty());
    assert_eq!(json["error"], Value::Null);

    let out = status(&db, &dir).run();
    out.assert_success()
        .assert_stdout_contains(
            "Table       public.refinery_schema_history (does not exist yet: nothing applied)",
        )
        .assert_stdout_contains(&format!(
            "Lock key    {key} (derived from md5('miglock:{}:refinery_schema_history'))",
            db.name()
        ))
        .assert_stdout_contains("Lock        free")
        .assert_stdout_contains("Applied (0)")
        .assert_stdout_contains("Pending (2)\n  V1__create_t\n  V2__add_note\n")
        .assert_stdout_contains("Status      pending (2 migration(s) to apply)");

    let json = status_json(&db, &dir, &["--check"], 7);
    assert_eq!(json["outcome"], "pending");
    assert_eq!(json["exit_code"], 7);
    status(&db, &dir).arg("--check").run().assert_code(7);

    // No server: 5 whatever --check says.
    let port = closed_port();
    let mut m = Miglock::new();
    let json = m
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres:{}@127.0.0.1:{port}/{}",
                db.cluster().password(),
                db.name()
            ),
        )
        .args([
            "status",
            "--check",
            "--format",
            "json",
            "--connect-timeout",
            "0",
            "--migrations",
        ])
        .arg(dir.path())
        .run()
        .assert_code(5)
        .json();
    assert_eq!(json["outcome"], "unavailable");

    // Looking creates nothing.
    assert!(!db.table_exists("refinery_schema_history"));
    assert!(!db.table_exists("t"));
}

#[test]
fn a_partly_applied_database_lists_applied_with_dates_and_what_is_pending() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    let applied_on = db.query_strings("SELECT applied_on FROM refinery_schema_history")[0][0]
        .clone()
        .unwrap();

    let json = status_json(&db, &dir, &[], 0);
    assert_eq!(json["outcome"], "pending");
    assert_eq!(json["table"]["exists"], true);
    assert_eq!(versions(&json["applied"]), [1]);
    let entry = &json["applied"][0];
    assert_eq!(entry["name"], "create_t");
    assert_eq!(entry["applied_on"], applied_on.as_str());
    assert!(
        entry.get("duration_ms").is_none(),
        "status reports when, not how long: {entry}"
    );
    assert_eq!(versions(&json["pending"]), [2]);
    assert_eq!(json["pending"][0]["name"], "add_note");

    status(&db, &dir)
        .run()
        .assert_success()
        .assert_stdout_contains(&format!("Applied (1)\n  V1__create_t  {applied_on}\n"))
        .assert_stdout_contains("Pending (1)\n  V2__add_note\n")
        .assert_stdout_contains("Status      pending (1 migration(s) to apply)");
    status_json(&db, &dir, &["--check"], 7);
    assert_eq!(db.history(), [1], "status applies nothing");
    assert!(db.table_exists("t"));
    assert!(!db.column_exists("t", "note"));
}

#[test]
fn an_up_to_date_database_is_current_and_check_passes() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    let json = status_json(&db, &dir, &["--check"], 0);
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(versions(&json["applied"]), [1, 2]);
    assert_eq!(json["pending"], serde_json::json!([]));
    let out = status(&db, &dir).run();
    out.assert_success()
        .assert_stdout_contains("Applied (2)")
        .assert_stdout_contains("Status      current (nothing pending)");
    assert!(!out.stdout.contains("Pending ("), "{}", out.stdout);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn an_edited_applied_file_is_divergent() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    dir.file("V1__create_t.sql", "CREATE TABLE t (id bigint);\n");

    let json = status_json(&db, &dir, &[], 0);
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["exit_code"], 0);
    let problems = optional_list(&json["problems"]);
    assert_eq!(problems.len(), 1, "{json:#}");
    assert_eq!(problems[0]["kind"], "divergent");
    assert_eq!(problems[0]["version"], 1);
    let message = problems[0]["message"].as_str().unwrap();
    assert!(
        message.contains("V1__create_t.sql") && message.contains("content changed"),
        "{message}"
    );
    // The history is still shown beside the problem.
    assert_eq!(versions(&json["applied"]), [1, 2]);

    let json = status_json(&db, &dir, &["--check"], 6);
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["exit_code"], 6);
    status(&db, &dir)
        .run()
        .assert_success()
        .assert_stdout_contains("Problems (1)\n  divergent: ")
        .assert_stdout_contains("Status      invalid (1 problem(s): apply would refuse to run)");
    status(&db, &dir).arg("--check").run().assert_code(6);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn a_deleted_applied_file_is_missing() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    dir.remove("V1__create_t.sql");

    let json = status_json(&db, &dir, &[], 0);
    assert_eq!(json["outcome"], "invalid");
    let problems = optional_list(&json["problems"]);
    assert_eq!(problems.len(), 1, "{json:#}");
    assert_eq!(problems[0]["kind"], "missing");
    assert_eq!(problems[0]["version"], 1);
    assert!(problems[0]["message"]
        .as_str()
        .unwrap()
        .contains("V1__create_t was applied on"));
    status_json(&db, &dir, &["--check"], 6);
    status(&db, &dir)
        .run()
        .assert_success()
        .assert_stdout_contains("  missing: V1__create_t was applied on");
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn an_unreadable_folder_is_invalid_and_the_database_is_still_described() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    let mut m = Miglock::for_db(&db);
    let out = m
        .args(["status", "--format", "json", "--migrations"])
        .arg(dir.path().join("no-such-folder"))
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(optional_list(&json["problems"])[0]["kind"], "folder");
    assert_eq!(versions(&json["applied"]), [1, 2]);
    assert_eq!(json["table"]["exists"], true);
}

#[test]
fn the_holder_is_shown_with_pid_name_client_and_state() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let key = db.default_key();
    let mut holder = db.client_tcp();
    let holder_pid = hold_key_as(&mut holder, key, "deploy-42 stuck");

    let json = status_json(&db, &dir, &[], 0);
    let h = &json["lock"]["holder"];
    assert_eq!(h["pid"], holder_pid, "{json:#}");
    assert_eq!(h["application_name"], "deploy-42 stuck");
    assert_eq!(h["usename"], "postgres");
    assert_eq!(h["client_addr"], "127.0.0.1");
    assert_eq!(h["state"], "idle");
    assert!(
        h["state_since"].as_str().is_some_and(|s| !s.is_empty()),
        "{h}"
    );
    assert!(
        h["backend_start"].as_str().is_some_and(|s| !s.is_empty()),
        "{h}"
    );
    assert!(h["state_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{h}");
    assert!(
        h["query"]
            .as_str()
            .is_some_and(|q| q.contains("pg_backend_pid")),
        "the holder's last statement: {h}"
    );
    assert_eq!(json["lock"]["waiting"], serde_json::json!([]));
    assert_eq!(json["outcome"], "pending");

    let out = status(&db, &dir).run();
    out.assert_success()
        .assert_stdout_contains(&format!(
            "Lock        held by pid {holder_pid} \"deploy-42 stuck\" user postgres from 127.0.0.1 connected "
        ))
        .assert_stdout_contains(", idle for ")
        .assert_stdout_contains(": SELECT pg_backend_pid()");
    assert!(
        !out.stdout.contains("hidden from this role"),
        "{}",
        out.stdout
    );

    // Looking does not disturb the holder.
    assert_eq!(key_holders(&db, key).len(), 1);
    holder.batch_execute("SELECT 1").unwrap();
}

#[test]
fn waiting_apply_and_wait_processes_are_listed() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let key = db.default_key();
    let mut holder = db.client();
    let holder_pid = hold_key_as(&mut holder, key, "slow-deploy");

    let applier = apply(&db, &dir)
        .args(["--wait", "60s"])
        .env("MIGLOCK_INSTANCE", "replica-a")
        .spawn();
    let waiter = command(&db, "wait", &dir)
        .args(["--timeout", "60s"])
        .spawn();
    let apply_name = truncated(format!(
        "miglock apply waiting host={} pid={} replica-a",
        hostname(),
        applier.id()
    ));
    let wait_name = truncated(format!(
        "miglock wait waiting host={} pid={}",
        hostname(),
        waiter.id()
    ));
    // Both named as waiting and both marked (the shared lock status reads).
    wait_until(SETTLE, || {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
             WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted \
             AND a.application_name IN ('{apply_name}', '{wait_name}')"
        )) == 2
    });

    let json = status_json(&db, &dir, &[], 0);
    assert_eq!(json["lock"]["holder"]["pid"], holder_pid, "{json:#}");
    assert_eq!(json["lock"]["holder"]["application_name"], "slow-deploy");
    let waiting = json["lock"]["waiting"].as_array().unwrap();
    let mut names: Vec<&str> = waiting
        .iter()
        .map(|w| w["application_name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [apply_name.as_str(), wait_name.as_str()], "{json:#}");
    for w in waiting {
        assert!(w["pid"]
            .as_i64()
            .is_some_and(|p| p != i64::from(holder_pid)));
        // Visible to the same role (idle between looks, or mid-look).
        assert!(w["state"].is_string(), "{w}");
        assert!(w["backend_start"].is_string(), "{w}");
    }
    // The holder is not among the waiters, and the waiters hold nothing.
    assert_eq!(key_holders(&db, key).len(), 1);

    status(&db, &dir)
        .run()
        .assert_success()
        .assert_stdout_contains("Waiting     2 miglock session(s):")
        .assert_stdout_contains(&format!("\"{apply_name}\""))
        .assert_stdout_contains(&format!("\"{wait_name}\""));

    // The holder lets go (with the release notification miglock sends):
    // the applier migrates and the waiter sees the schema current.
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock({key}); NOTIFY miglock_{key}"
        ))
        .unwrap();
    let applied = RunOutput::from_child(applier);
    applied.assert_success();
    assert_eq!(applied.json()["outcome"], "applied");
    let waited = RunOutput::from_child(waiter);
    waited.assert_success();
    assert_eq!(waited.json()["outcome"], "current");

    let json = status_json(&db, &dir, &["--check"], 0);
    assert_eq!(json["lock"]["holder"], Value::Null);
    assert_eq!(json["lock"]["waiting"], serde_json::json!([]));
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn sessions_blocked_behind_the_holder_are_listed() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let key = db.default_key();
    db.client()
        .batch_execute("CREATE TABLE t (id int)")
        .unwrap();
    let mut holder = db.client();
    let holder_pid = hold_key_as(&mut holder, key, "migrating");
    holder
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();

    let mut reader = db.client();
    reader
        .batch_execute("SET application_name = 'api-reader'")
        .unwrap();
    let reader_pid = backend_pid(&mut reader);
    let blocked = thread::spawn(move || reader.batch_execute("SELECT * FROM t").map(|_| reader));
    wait_until(SETTLE, || {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {reader_pid} AND wait_event_type = 'Lock'"
        )) == 1
    });

    let json = status_json(&db, &dir, &[], 0);
    assert_eq!(json["lock"]["holder"]["pid"], holder_pid, "{json:#}");
    assert_eq!(json["lock"]["holder"]["state"], "idle in transaction");
    let blocked_list = optional_list(&json["lock"]["blocked"]);
    assert_eq!(blocked_list.len(), 1, "{json:#}");
    assert_eq!(blocked_list[0]["pid"], reader_pid);
    assert_eq!(blocked_list[0]["application_name"], "api-reader");
    assert_eq!(blocked_list[0]["state"], "active");
    assert_eq!(blocked_list[0]["query"], "SELECT * FROM t");
    assert_eq!(json["lock"]["waiting"], serde_json::json!([]));

    status(&db, &dir)
        .run()
        .assert_success()
        .assert_stdout_contains(
            "Blocked     1 session(s) wait for locks the holder has (pg_blocking_pids):",
        )
        .assert_stdout_contains(&format!(
            "            pid {reader_pid} \"api-reader\" user postgres"
        ))
        .assert_stdout_contains(": SELECT * FROM t");

    holder.batch_execute("COMMIT").unwrap();
    blocked
        .join()
        .unwrap()
        .expect("the reader proceeds once the holder commits");
    let json = status_json(&db, &dir, &[], 0);
    assert!(optional_list(&json["lock"]["blocked"]).is_empty());
    assert_eq!(json["lock"]["holder"]["pid"], holder_pid);
}

#[test]
fn a_role_without_privileges_sees_a_hidden_holder_and_is_told_why() {
    let db = Cluster::shared().create_db();
    let cluster = db.cluster();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    let key = db.default_key();
    // The role's password is the cluster's own, so the leak check covers it.
    let role = format!("{}_viewer", db.name());
    db.client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{pw}'; \
             GRANT CONNECT ON DATABASE {db} TO {role}; \
             GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT ON refinery_schema_history TO {role};",
            pw = cluster.password(),
            db = db.name()
        ))
        .unwrap();
    let mut holder = db.client_tcp();
    let holder_pid = hold_key_as(&mut holder, key, "superuser-deploy");
    let url = format!(
        "postgres://{role}:{}@127.0.0.1:{}/{}",
        cluster.password(),
        cluster.port(),
        db.name()
    );
    // The role really is unprivileged: it cannot see the holder's query.
    let mut as_role = Client::connect(&url, NoTls).unwrap();
    let seen: Option<String> = as_role
        .query_one(
            "SELECT query FROM pg_stat_activity WHERE pid = $1",
            &[&holder_pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(seen.as_deref(), Some("<insufficient privilege>"));
    drop(as_role);

    let mut m = Miglock::new();
    let out = m
        .env("DATABASE_URL", &url)
        .args(["status", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(versions(&json["applied"]), [1, 2]);
    let h = &json["lock"]["holder"];
    assert_eq!(h["pid"], holder_pid, "{json:#}");
    assert_eq!(h["usename"], "postgres");
    assert_eq!(h["application_name"], "superuser-deploy");
    assert_eq!(h["state"], Value::Null);
    assert_eq!(h["backend_start"], Value::Null);
    assert_eq!(h["client_addr"], Value::Null);
    assert_eq!(h["query"], "<insufficient privilege>");

    let mut m = Miglock::new();
    let out = m
        .env("DATABASE_URL", &url)
        .args(["status", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stdout_contains(&format!(
            "Lock        held by pid {holder_pid} \"superuser-deploy\" user postgres\n"
        ))
        .assert_stdout_contains("(state, query and client are hidden from this role")
        .assert_stdout_contains("pg_read_all_stats");
    assert!(
        !out.stdout.contains("<insufficient privilege>"),
        "{}",
        out.stdout
    );
    assert_eq!(key_holders(&db, key).len(), 1);
}

#[test]
fn an_explicit_key_and_another_table_change_what_is_reported() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let mut holder = db.client();
    holder
        .batch_execute("SET application_name = 'k4242'; SELECT pg_advisory_lock(4242)")
        .unwrap();
    let json = status_json(&db, &dir, &["--lock-key", "4242"], 0);
    assert_eq!(json["lock"]["key"], 4242);
    assert_eq!(json["lock"]["key_source"], "--lock-key");
    assert_eq!(json["lock"]["holder"]["application_name"], "k4242");
    status(&db, &dir)
        .env("MIGLOCK_LOCK_KEY", "4242")
        .run()
        .assert_success()
        .assert_stdout_contains("Lock key    4242 (--lock-key)")
        .assert_stdout_contains("Lock        held by pid");

    // The default key is another one, and free.
    let json = status_json(&db, &dir, &["--table", "app.History"], 0);
    assert_eq!(json["table"]["name"], "history");
    assert_eq!(json["table"]["schema"], "app");
    assert_eq!(json["table"]["exists"], false);
    assert_eq!(
        json["lock"]["key"].as_i64(),
        Some(db.key_for("app.history"))
    );
    assert_eq!(json["lock"]["holder"], Value::Null);
    assert!(!db.table_exists("app.history"));
}

#[test]
fn a_migrating_apply_is_shown_as_the_holder() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    // V2 stays active, waiting for a gate the test holds, until it is ended.
    dir.file(
        "V2__add_note.sql",
        &format!("ALTER TABLE t ADD COLUMN note text;\n{}\n", LockGate::SQL),
    );
    let mut gate = LockGate::close(&db);
    let applier = Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .env("MIGLOCK_INSTANCE", "ci-job-7")
        .spawn();
    let name = truncated(format!(
        "miglock apply holding host={} pid={} ci-job-7",
        hostname(),
        applier.id()
    ));
    wait_for(
        "the applier to be active inside V2, at the gate",
        SETTLE,
        || LockGate::waiting_like(&db, &name) == 1,
    );

    let json = status_json(&db, &dir, &[], 0);
    let h = &json["lock"]["holder"];
    assert_eq!(h["application_name"], name.as_str(), "{json:#}");
    assert_eq!(h["state"], "active");
    assert_eq!(h["client_addr"], "127.0.0.1");
    assert!(
        h["query"]
            .as_str()
            .unwrap()
            .contains(LockGate::SQL.trim_end_matches(';')),
        "{h}"
    );
    // V1 is committed; V2 runs in its own transaction, not yet visible.
    assert_eq!(versions(&json["applied"]), [1]);
    assert_eq!(versions(&json["pending"]), [2]);
    status(&db, &dir)
        .run()
        .assert_success()
        .assert_stdout_contains(&format!("\"{name}\" user postgres from 127.0.0.1"))
        .assert_stdout_contains(", active for ");

    // End the run (SIGTERM): it rolls V2 back and lets go of the lock.
    send_signal(applier.id(), "TERM");
    RunOutput::from_child(applier).assert_code(130);
    gate.open();
    let json = status_json(&db, &dir, &[], 0);
    assert_eq!(json["lock"]["holder"], Value::Null);
    assert_eq!(versions(&json["pending"]), [2]);
}
