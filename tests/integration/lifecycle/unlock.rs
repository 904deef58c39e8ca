//! `miglock unlock` against a real PostgreSQL: it ends the holder's session
//! only when that is safe and confirmed, and never anybody else's.

use std::thread;

use postgres::{Client, NoTls};
use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, closed_port, wait_for, wait_until, Miglock, MigrationDir, RunOutput, SETTLE,
};
use crate::probes::{
    backend_exists, backend_pid, hold_key_as, key_holders, sessions_like, LockGate,
};

/// `miglock unlock --format json` for the database.
fn unlock(db: &TestDb) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["unlock", "--format", "json"]);
    m
}

/// `miglock unlock --format json` as another role of the cluster.
fn unlock_as(db: &TestDb, role: &str) -> Miglock {
    let mut m = Miglock::new();
    m.env(
        "DATABASE_URL",
        format!(
            "postgres://{role}:{}@127.0.0.1:{}/{}",
            db.cluster().password(),
            db.cluster().port(),
            db.name()
        ),
    )
    .args(["unlock", "--format", "json"]);
    m
}

/// Whether the session still answers.
fn alive(client: &mut Client) -> bool {
    client.simple_query("SELECT 1").is_ok()
}

/// A connection as `role` (over the trusted unix socket).
fn connect_as(db: &TestDb, role: &str) -> Client {
    let mut config = db.cluster().socket_config(db.name());
    config.user(role);
    config.connect(NoTls).unwrap()
}

/// A login role whose password is the cluster's own (so the leak check
/// covers it), unique to the database.
fn create_role(db: &TestDb, suffix: &str) -> String {
    let role = format!("{}_{suffix}", db.name());
    db.client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{}'",
            db.cluster().password()
        ))
        .unwrap();
    role
}

fn terminated(json: &Value) -> Vec<i64> {
    match &json["terminated"] {
        Value::Null => Vec::new(),
        list => list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect(),
    }
}

#[test]
fn without_a_terminal_it_needs_yes_and_touches_nothing() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let mut holder = db.client_tcp();
    let holder_pid = hold_key_as(&mut holder, key, "stale-deploy");

    // The harness gives the binary /dev/null as stdin: not a terminal.
    let out = unlock(&db).run();
    out.assert_code(2)
        .assert_stderr_contains("confirm with --yes when stdin is not a terminal")
        .assert_stderr_contains("nothing was touched");
    let json = out.json();
    assert_eq!(json["command"], "unlock");
    assert_eq!(json["outcome"], "usage");
    assert_eq!(json["exit_code"], 2);
    assert!(terminated(&json).is_empty());
    // A pipe is no terminal either, even one that says yes.
    let mut m = unlock(&db);
    let mut child = m.stdin(std::process::Stdio::piped()).spawn();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"y\n");
    }
    RunOutput::from_child(child).assert_code(2);

    assert!(alive(&mut holder), "the holder was not touched");
    assert_eq!(key_holders(&db, key), [i64::from(holder_pid)]);

    // It refuses before connecting: a dead server makes no difference.
    let port = closed_port();
    let mut m = Miglock::new();
    let out = m
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres:{}@127.0.0.1:{port}/{}",
                db.cluster().password(),
                db.name()
            ),
        )
        .args(["unlock", "--connect-timeout", "30s"])
        .run();
    out.assert_code(2);
    assert!(
        !out.stderr.contains("CONNECT_RETRY") && !out.stderr.contains("cannot connect"),
        "it never tried to connect\n{}",
        out.stderr
    );
}

#[test]
fn dry_run_shows_what_it_would_do_and_changes_nothing() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();

    let json = unlock(&db).arg("--dry-run").run().assert_success().json();
    assert_eq!(json["outcome"], "free");
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["lock"]["holder"], Value::Null);

    let mut holder = db.client_tcp();
    let holder_pid = hold_key_as(&mut holder, key, "stale-deploy");
    let json = unlock(&db).arg("--dry-run").run().assert_code(3).json();
    assert_eq!(json["outcome"], "skipped");
    assert_eq!(json["exit_code"], 3);
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["lock"]["holder"]["pid"], holder_pid);
    assert_eq!(json["lock"]["holder"]["application_name"], "stale-deploy");
    assert!(terminated(&json).is_empty());

    let mut m = Miglock::for_db(&db);
    m.args(["unlock", "--dry-run"])
        .run()
        .assert_code(3)
        .assert_stdout_contains(&format!("Lock {key} (derived from md5('miglock:"))
        .assert_stdout_contains(&format!("  pid {holder_pid} \"stale-deploy\" user postgres"))
        .assert_stdout_contains(&format!(
            "Would terminate pid {holder_pid} with pg_terminate_backend; nothing was done (--dry-run)."
        ));
    // --dry-run and --yes contradict each other.
    unlock(&db)
        .args(["--dry-run", "--yes"])
        .run()
        .assert_code(2);

    assert!(alive(&mut holder));
    assert_eq!(key_holders(&db, key), [i64::from(holder_pid)]);
}

#[test]
fn a_free_lock_is_reported_free() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    // Another key held in the database is not this lock.
    let mut other = db.client();
    hold_key_as(&mut other, key + 1, "other-key");
    let out = unlock(&db).arg("--yes").run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "free");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["lock"]["key"].as_i64(), Some(key));
    assert_eq!(json["lock"]["holder"], Value::Null);
    assert!(terminated(&json).is_empty());
    let mut m = Miglock::for_db(&db);
    m.args(["unlock", "--yes"])
        .run()
        .assert_success()
        .assert_stdout_contains(&format!(
            "Lock {key} is free: nobody holds it, nothing to do."
        ));
    assert!(alive(&mut other));
}

#[test]
fn an_idle_stale_holder_is_terminated_and_the_lock_is_free() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let mut holder = db.client_tcp();
    let holder_pid = hold_key_as(&mut holder, key, "miglock apply holding host=gone pid=1");

    let out = unlock(&db).arg("--yes").run();
    out.assert_success().assert_stderr_contains(&format!(
        "LOCK_RELEASED key={key} terminated_pid={holder_pid}"
    ));
    let json = out.json();
    assert_eq!(json["outcome"], "released");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(terminated(&json), [i64::from(holder_pid)]);
    assert_eq!(json["lock"]["holder"], Value::Null, "free afterwards");
    assert_eq!(json["error"], Value::Null);

    assert!(!alive(&mut holder), "the holder's connection is dead");
    assert!(!backend_exists(&db, holder_pid.into()));
    assert!(key_holders(&db, key).is_empty(), "the key is free");
}

#[test]
fn an_active_holder_is_left_alone_unless_forced() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let mut busy = db.client();
    busy.batch_execute("SET application_name = 'busy-migration'")
        .unwrap();
    let busy_pid = backend_pid(&mut busy);
    // Its statement takes the key, then waits for a gate the test holds:
    // "running a statement right now" until the test says otherwise.
    let mut gate = LockGate::close(&db);
    let statement = thread::spawn(move || {
        busy.batch_execute(&format!(
            "SELECT 'still-running', pg_advisory_lock({key}), pg_advisory_lock({})",
            LockGate::KEY
        ))
    });
    wait_for(
        "the holder's statement to be active, blocked at the gate",
        SETTLE,
        || {
            key_holders(&db, key) == [i64::from(busy_pid)]
                && LockGate::waiting_like(&db, "busy-migration") == 1
        },
    );

    let out = unlock(&db).arg("--yes").run();
    out.assert_code(1)
        .assert_stderr_contains(&format!("pid {busy_pid} is running a statement right now"))
        .assert_stderr_contains("'still-running'")
        .assert_stderr_contains("--force would terminate it anyway");
    let json = out.json();
    assert_eq!(json["outcome"], "refused");
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["lock"]["holder"]["pid"], busy_pid);
    assert_eq!(json["lock"]["holder"]["state"], "active");
    assert!(terminated(&json).is_empty());
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--force"));
    assert_eq!(
        key_holders(&db, key),
        [i64::from(busy_pid)],
        "still holding"
    );
    // A dry run previews the refusal; with --force it previews the termination.
    let dry = unlock(&db).arg("--dry-run").run();
    dry.assert_code(3)
        .assert_stderr_contains("Would refuse:")
        .assert_stderr_contains("--force would terminate it anyway");
    assert!(terminated(&dry.json()).is_empty());
    let json = unlock(&db)
        .args(["--dry-run", "--force"])
        .run()
        .assert_code(3)
        .json();
    assert_eq!(json["outcome"], "skipped");
    assert!(!statement.is_finished());
    assert_eq!(key_holders(&db, key), [i64::from(busy_pid)]);

    let out = unlock(&db).args(["--force", "--yes"]).run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "released");
    assert_eq!(terminated(&json), [i64::from(busy_pid)]);
    let result = statement.join().unwrap();
    // Cut short with the gate still closed: it could not have ended alone.
    assert!(
        result.is_err(),
        "the holder's statement was cut short: {result:?}"
    );
    assert!(key_holders(&db, key).is_empty());
    assert!(!backend_exists(&db, busy_pid.into()));
    gate.open();
}

#[test]
fn sessions_that_do_not_hold_the_key_are_never_touched() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let key = db.default_key();
    let mut holder = db.client_tcp();
    let holder_pid = hold_key_as(&mut holder, key, "worker");

    // Same application_name, idle, no lock.
    let mut twins: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = db.client_tcp();
            c.batch_execute("SET application_name = 'worker'").unwrap();
            c
        })
        .collect();
    // Another bigint key; the waiting mark (the two-int4 key with the same
    // halves, shared); the same key in another database.
    let mut other_key = db.client();
    hold_key_as(&mut other_key, key + 1, "worker");
    let mut marked = db.client();
    marked
        .batch_execute(&format!(
            "SET application_name = 'miglock apply waiting host=x pid=2'; \
             SELECT pg_try_advisory_lock_shared({}, {})",
            key >> 32,
            key as u32 as i32
        ))
        .unwrap();
    let elsewhere_db = cluster.create_db();
    let mut elsewhere = elsewhere_db.client();
    hold_key_as(&mut elsewhere, key, "worker");

    let mut m = Miglock::for_db(&db);
    let out = m.args(["unlock", "--yes"]).run();
    out.assert_success()
        .assert_stdout_contains(&format!("  pid {holder_pid} \"worker\""))
        .assert_stdout_contains(&format!("Terminated pid {holder_pid}; lock {key} is free."));
    assert!(!alive(&mut holder));
    for (i, twin) in twins.iter_mut().enumerate() {
        assert!(alive(twin), "twin {i} survives");
    }
    assert!(alive(&mut other_key));
    assert!(alive(&mut marked));
    assert!(alive(&mut elsewhere));
    assert!(key_holders(&db, key).is_empty());
    assert_eq!(key_holders(&elsewhere_db, key).len(), 1);
}

#[test]
fn a_waiting_replica_proceeds_once_the_stale_holder_is_gone() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let dir = MigrationDir::with(&[("V1__create_t.sql", "CREATE TABLE t (id int);\n")]);
    let mut stale = db.client_tcp();
    let stale_pid = hold_key_as(&mut stale, key, "miglock apply holding host=dead pid=9");
    let replica = apply(&db, &dir).args(["--wait", "60s"]).spawn();
    wait_until(SETTLE, || sessions_like(&db, "miglock apply waiting%") == 1);

    let json = unlock(&db).arg("--yes").run().assert_success().json();
    assert_eq!(json["outcome"], "released");
    assert_eq!(terminated(&json), [i64::from(stale_pid)], "only the holder");
    let out = RunOutput::from_child(replica);
    out.assert_success();
    assert_eq!(out.json()["outcome"], "applied");
    assert!(db.table_exists("t"));
    assert!(key_holders(&db, key).is_empty());
}

#[test]
fn permission_denied_is_explained_and_pg_signal_backend_fixes_it() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let ops = create_role(&db, "ops");

    // A superuser holds the key; a plain role cannot end that session.
    let mut superuser = db.client_tcp();
    let superuser_pid = hold_key_as(&mut superuser, key, "superuser-deploy");
    // It cannot see whether the holder is busy either, so plain --yes
    // already leaves it alone.
    let out = unlock_as(&db, &ops).arg("--yes").run();
    out.assert_code(1)
        .assert_stderr_contains(&format!(
            "this role cannot see whether pid {superuser_pid} is running a statement"
        ))
        .assert_stderr_contains("pg_read_all_stats")
        .assert_stderr_contains("--force");
    assert_eq!(out.json()["outcome"], "refused");
    // A superuser's session: only a superuser may end it, whatever is granted.
    let out = unlock_as(&db, &ops).args(["--yes", "--force"]).run();
    out.assert_code(1)
        .assert_stderr_contains("permission denied")
        .assert_stderr_contains("SQLSTATE 42501")
        .assert_stderr_contains("postgres is a superuser, whose sessions only a superuser may end");
    assert!(
        !out.stderr.contains("GRANT pg_signal_backend"),
        "{}",
        out.stderr
    );
    let json = out.json();
    assert_eq!(json["outcome"], "refused");
    assert_eq!(json["exit_code"], 1);
    assert!(terminated(&json).is_empty());
    assert!(alive(&mut superuser), "the superuser's session survives");
    assert_eq!(key_holders(&db, key), [i64::from(superuser_pid)]);
    superuser
        .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
        .unwrap();

    // Another plain role's session: the fix is pg_signal_backend.
    let app = create_role(&db, "app");
    let mut holder = connect_as(&db, &app);
    let holder_pid = hold_key_as(&mut holder, key, "app-deploy");
    let out = unlock_as(&db, &ops).args(["--yes", "--force"]).run();
    out.assert_code(1)
        .assert_stderr_contains("SQLSTATE 42501")
        .assert_stderr_contains(&format!("GRANT pg_signal_backend TO {ops};"));
    assert_eq!(out.json()["outcome"], "refused");
    assert!(alive(&mut holder));

    // With pg_signal_backend the role may end a plain role's session.
    db.client()
        .batch_execute(&format!("GRANT pg_signal_backend TO {ops}"))
        .unwrap();
    // The holder's state stays hidden from ops (pg_signal_backend does not
    // show it), so it takes --force.
    let out = unlock_as(&db, &ops).arg("--yes").run();
    out.assert_code(1)
        .assert_stderr_contains("cannot see whether");
    assert!(alive(&mut holder));
    let out = unlock_as(&db, &ops).args(["--yes", "--force"]).run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "released");
    assert_eq!(terminated(&json), [i64::from(holder_pid)]);
    assert_eq!(json["lock"]["holder"], Value::Null);
    assert!(!alive(&mut holder));
    assert!(key_holders(&db, key).is_empty());

    // With pg_read_all_stats too, the idle holder is seen as idle: --yes suffices.
    db.client()
        .batch_execute(&format!("GRANT pg_read_all_stats TO {ops}"))
        .unwrap();
    let mut holder = connect_as(&db, &app);
    let holder_pid = hold_key_as(&mut holder, key, "app-deploy");
    let json = unlock_as(&db, &ops)
        .arg("--yes")
        .run()
        .assert_success()
        .json();
    assert_eq!(json["outcome"], "released");
    assert_eq!(terminated(&json), [i64::from(holder_pid)]);
    assert!(!alive(&mut holder));
    assert!(alive(&mut superuser));
}

#[test]
fn on_a_terminal_it_asks_first() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    let mut holder = db.client_tcp();
    let holder_pid = hold_key_as(&mut holder, key, "stale-deploy");
    // `script` runs unlock on a pseudo-terminal and feeds it our stdin.
    let ask = |answer: &str| {
        let mut m = Miglock::for_db(&db);
        let mut child = m
            .program("/usr/bin/script")
            .args([
                "-qec",
                &format!("'{}' unlock", env!("CARGO_BIN_EXE_miglock")),
                "/dev/null",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(answer.as_bytes()).unwrap();
        }
        RunOutput::from_child(child)
    };

    let out = ask("n\n");
    out.assert_code(1)
        .assert_stdout_contains(&format!(
            "Terminate pid {holder_pid} and free the lock? [y/N]"
        ))
        .assert_stdout_contains(&format!("not confirmed: pid {holder_pid} was left alone"));
    assert!(alive(&mut holder));
    assert_eq!(key_holders(&db, key), [i64::from(holder_pid)]);

    let out = ask("y\n");
    out.assert_success()
        .assert_stdout_contains(&format!("Terminated pid {holder_pid}; lock {key} is free."));
    assert!(!alive(&mut holder));
    assert!(key_holders(&db, key).is_empty());
}

#[test]
fn a_holder_idle_in_transaction_is_terminated_and_what_it_blocked_proceeds() {
    let db = Cluster::shared().create_db();
    let key = db.default_key();
    db.client()
        .batch_execute("CREATE TABLE t (id int)")
        .unwrap();
    let mut holder = db.client();
    let holder_pid = hold_key_as(&mut holder, key, "half-done-migration");
    holder
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; INSERT INTO t VALUES (1)")
        .unwrap();
    let mut reader = db.client();
    let reader_pid = backend_pid(&mut reader);
    let blocked = thread::spawn(move || {
        let count = reader.query_one("SELECT count(*) FROM t", &[]);
        count.map(|row| (row.get::<_, i64>(0), reader))
    });
    wait_until(SETTLE, || {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {reader_pid} AND wait_event_type = 'Lock'"
        )) == 1
    });

    let json = unlock(&db).arg("--yes").run().assert_success().json();
    assert_eq!(json["outcome"], "released");
    assert_eq!(terminated(&json), [i64::from(holder_pid)]);
    let (count, mut reader) = blocked
        .join()
        .unwrap()
        .expect("the blocked reader proceeds");
    assert_eq!(count, 0, "the holder's open transaction rolled back");
    assert!(alive(&mut reader), "the blocked session was not touched");
    assert!(!alive(&mut holder));
    assert!(key_holders(&db, key).is_empty());
}
