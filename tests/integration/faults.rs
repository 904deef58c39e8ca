//! Production faults: DDL lock timeouts, restarts while waiting, a
//! connection lost mid-migration, and a holder whose network silently
//! vanishes.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    marked_waiting_like, versions, wait_for, wait_until, LockGate, Miglock, MigrationDir,
    RunOutput, SETTLE,
};

fn apply(db: &TestDb, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

fn lock_holders(db: &TestDb, key: i64) -> i64 {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted \
         AND ((classid::int8 << 32) | objid::int8) = {key}"
    ))
}

fn has_column(db: &TestDb, table: &str, column: &str) -> bool {
    db.query_i64(&format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' AND column_name = '{column}'"
    )) == 1
}

/// V1 makes table `t`; V2 alters it, which needs an ACCESS EXCLUSIVE lock.
fn alter_migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file("V1__t.sql", "CREATE TABLE t (id int);\n")
        .file("V2__alter_t.sql", "ALTER TABLE t ADD COLUMN x int;\n");
    dir
}

#[test]
fn a_ddl_lock_timeout_is_retried_then_explained() {
    let db = Cluster::shared().create_db();
    let dir = alter_migrations();
    apply(&db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();

    // A long report holds a lock that ALTER TABLE must wait for.
    let mut report = db.client();
    report
        .batch_execute(
            "SET application_name = 'long-report'; BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;",
        )
        .unwrap();
    let report_pid = report
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get::<_, i32>(0);
    let out = apply(&db, &dir)
        .args(["--ddl-lock-timeout", "200ms", "--ddl-retries", "2"])
        .run();
    out.assert_code(1)
        .assert_stderr_contains(
            "MIGRATION_RETRY version=2 name=alter_t attempt=1/2 reason=lock_timeout",
        )
        .assert_stderr_contains("MIGRATION_RETRY version=2 name=alter_t attempt=2/2")
        .assert_stderr_contains("MIGRATION_FAILED version=2 name=alter_t sqlstate=55P03")
        .assert_stderr_contains(
            "could not get a table lock within --ddl-lock-timeout 200ms in 3 tries",
        )
        .assert_stderr_contains(&format!(
            "pid {report_pid} \"long-report\" holds AccessShareLock on t"
        ))
        .assert_stderr_contains("LOCK_RELEASED");
    assert_eq!(out.json()["error"]["sqlstate"], "55P03");
    assert_eq!(db.history(), [1]);
    assert!(!has_column(&db, "t", "x"));

    // Once the report ends, a retry gets through.
    // The report is released only once a retry has been logged, so the
    // retry path is exercised however slow the machine is.
    let mut child = apply(&db, &dir)
        .args(["--ddl-lock-timeout", "200ms", "--ddl-retries", "20"])
        .spawn_watched();
    child.wait_for_stderr(
        "MIGRATION_RETRY version=2 name=alter_t attempt=1/20 reason=lock_timeout",
        SETTLE,
    );
    report.batch_execute("COMMIT").unwrap();
    let out = child.finish();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_RETRY version=2 name=alter_t attempt=1/20")
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=alter_t");
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
    assert!(has_column(&db, "t", "x"));
}

#[test]
fn without_ddl_lock_timeout_a_migration_waits_for_its_table_lock() {
    let db = Cluster::shared().create_db();
    let dir = alter_migrations();
    apply(&db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    let mut report = db.client();
    report
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;")
        .unwrap();
    let child = apply(&db, &dir).spawn();
    wait_until(SETTLE, || {
        db.query_i64("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE t%'") == 1
    });
    report.batch_execute("COMMIT").unwrap();
    RunOutput::from_child(child).assert_success();
    assert!(has_column(&db, "t", "x"));
}

/// A `lock_timeout` default for the database (or the role, often the
/// application's own, which migrates too) must not fail a migration queued
/// behind a long query: only `--ddl-lock-timeout` (or `--set`) bounds that.
#[test]
fn a_database_lock_timeout_does_not_fail_a_migration_waiting_for_its_table_lock() {
    let db = Cluster::shared().create_db();
    let dir = alter_migrations();
    apply(&db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET lock_timeout = '1s'",
            db.name()
        ))
        .unwrap();
    let mut report = db.client();
    report
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;")
        .unwrap();

    // Given with --set, it is the operator's choice and applies.
    let out = apply(&db, &dir).args(["--set", "lock_timeout=100ms"]).run();
    out.assert_code(1);
    assert_eq!(out.json()["error"]["sqlstate"], "55P03");
    assert_eq!(db.history(), [1]);

    let child = apply(&db, &dir).spawn();
    // Waiting well past the database's 1 s proves it was not in force.
    wait_for(
        "the migration to wait for its table lock for over 1.5 s",
        SETTLE,
        || {
            db.query_i64(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE t%' \
                 AND clock_timestamp() - query_start > interval '1.5 s'",
            ) == 1
        },
    );
    report.batch_execute("COMMIT").unwrap();
    let out = RunOutput::from_child(child);
    out.assert_success();
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
    assert!(has_column(&db, "t", "x"));
}

#[test]
fn a_replica_waiting_for_the_lock_survives_a_server_restart() {
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let dir = alter_migrations();
    let key = db.default_key();
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .unwrap();
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

#[test]
fn a_holder_whose_backend_is_terminated_exits_1_and_a_waiter_takes_over() {
    let db = Cluster::shared().create_db();
    let dir = alter_migrations();
    // V2 stays running (waiting for the gate the test holds) until ended.
    dir.file(
        "V2__alter_t.sql",
        &format!("ALTER TABLE t ADD COLUMN x int;\n{}\n", LockGate::SQL),
    );
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
    assert!(has_column(&db, "t", "x"));
    assert_eq!(lock_holders(&db, db.default_key()), 0);
}

#[test]
fn a_connection_lost_mid_migration_with_no_server_to_check_exits_5() {
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let dir = alter_migrations();
    dir.file(
        "V2__alter_t.sql",
        &format!("ALTER TABLE t ADD COLUMN x int;\n{}\n", LockGate::SQL),
    );
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
    assert!(!has_column(&db, "t", "x"));
}

/// A network namespace joined to the host by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
    ns_ip: String,
    ns_if: String,
}

impl Netns {
    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn create() -> Result<Netns, String> {
        let n = std::process::id() % 200 + 20;
        let name = format!("mlk{}", std::process::id());
        let (host_if, ns_if) = (format!("mlkh{n}"), format!("mlkn{n}"));
        let (host_ip, ns_ip) = (format!("10.231.{n}.1"), format!("10.231.{n}.2"));
        let _ = Netns::ip(&["netns", "del", &name]);
        Netns::ip(&["netns", "add", &name])?;
        let netns = Netns {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
            ns_if: ns_if.clone(),
        };
        Netns::ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        Netns::ip(&["link", "set", &ns_if, "netns", &name])?;
        Netns::ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        Netns::ip(&["link", "set", &host_if, "up"])?;
        Netns::ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ])?;
        Netns::ip(&["-n", &name, "link", "set", &ns_if, "up"])?;
        Netns::ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Netns::ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_holder_whose_network_vanishes_loses_the_lock_within_30_seconds() {
    // No way to leave it out: a skipped test would count as a pass.
    let netns = Netns::create().unwrap_or_else(|why| {
        panic!(
            "cannot create a network namespace ({why}); this test needs root and iproute2 \
             (scripts/setup-postgres.sh installs iproute2)"
        )
    });
    let cluster = Cluster::start_with(&[(
        "listen_addresses",
        &format!("'127.0.0.1,{}'", netns.host_ip),
    )]);
    cluster.write_server_file(
        "pg_hba.conf",
        &format!(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all {}/32 scram-sha-256\n",
            netns.ns_ip
        ),
    );
    cluster
        .admin()
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
    let db = cluster.create_db();
    let key = db.default_key();
    let dir = MigrationDir::new();
    dir.file(
        "V1__long.sql",
        "CREATE TABLE t (id int);\nSELECT pg_sleep(600);\n",
    );
    let url = format!(
        "postgres://postgres:{}@{}:{}/{}",
        cluster.password(),
        netns.host_ip,
        cluster.port(),
        db.name()
    );
    let mut holder = Miglock::new()
        .program("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            env!("CARGO_BIN_EXE_miglock"),
            "apply",
            "--migrations",
        ])
        .arg(dir.path())
        .env("DATABASE_URL", &url)
        .spawn();
    wait_until(SETTLE, || {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND client_addr = '{}' AND state = 'active' AND query LIKE '%pg_sleep(600)%'",
            netns.ns_ip
        )) == 1
    });
    assert_eq!(lock_holders(&db, key), 1);

    // The link goes down inside the namespace: no FIN, no RST, just silence.
    Netns::ip(&["-n", &netns.name, "link", "set", &netns.ns_if, "down"]).unwrap();
    let cut = Instant::now();
    wait_until(Duration::from_secs(60), || lock_holders(&db, key) == 0);
    let freed_after = cut.elapsed();
    eprintln!(
        "network cut: lock freed after {:.1}s",
        freed_after.as_secs_f64()
    );
    // keepalives: 5 s idle + 3 × 5 s probes, then client_connection_check_interval 1 s.
    assert!(
        freed_after <= Duration::from_secs(30),
        "lock freed after {freed_after:?}"
    );
    assert!(!db.table_exists("t"), "the cut migration rolled back");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM refinery_schema_history"),
        0
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_server_that_accepts_but_never_answers_is_given_up_on() {
    // The kernel completes the TCP handshake for a listening socket nobody
    // accepts from: rust-postgres's connect_timeout is satisfied, and the
    // start-up exchange would then wait for ever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = alter_migrations();
    let out = Miglock::new()
        .env(
            "DATABASE_URL",
            format!("postgres://postgres:x@127.0.0.1:{port}/db"),
        )
        .args([
            "apply",
            "--format",
            "json",
            "--connect-timeout",
            "2s",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_code(5)
        .assert_stderr_contains("the server accepted the connection but did not answer within 2s");
    // Given up on, not hung: the harness kills a run after 120 s.
    assert_eq!(out.json()["outcome"], "unavailable");
    // status and wait give up the same way.
    for command in ["status", "wait"] {
        Miglock::new()
            .env(
                "DATABASE_URL",
                format!("postgres://postgres:x@127.0.0.1:{port}/db"),
            )
            .args([command, "--connect-timeout", "1s", "--migrations"])
            .arg(dir.path())
            .run()
            .assert_code(5)
            .assert_stderr_contains("did not answer");
    }
    drop(silent);
}
