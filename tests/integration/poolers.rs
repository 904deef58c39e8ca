//! Connection poolers and the lock modes: PgBouncer in front of a
//! throwaway cluster, and miglock behind it in every pool mode, with
//! `--lock-mode auto` (the default), `session` and `transaction`.
//!
//! A transaction pooler hands each transaction to whichever server session
//! is free, so session state (a session advisory lock, LISTEN, SET) stays
//! on a server session other clients then use. `pool_mode = session`
//! behaves as a direct connection.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::{self, Cluster, TestDb};
use crate::harness::{poll, versions, wait_for, Miglock, MigrationDir, RunOutput, EFFECTS, SETTLE};
use crate::probes::{assert_quiet, effects, hold_default_key, key_holders, once_each, LockGate};

/// `MIGLOCK_PGBOUNCER`, as `scripts/setup-postgres.sh` reads it.
pub fn pgbouncer() -> PathBuf {
    std::env::var_os("MIGLOCK_PGBOUNCER")
        .map_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"), PathBuf::from)
}

/// A PgBouncer process on a free port of 127.0.0.1, in front of one
/// cluster; stopped (and its directory removed) when dropped, or when
/// the test process ends however it ends.
pub struct Pooler {
    dir: PathBuf,
    port: u16,
    password: String,
    watchdog: Child,
}

impl Pooler {
    /// `mode`: `transaction`, `session` or `statement`. Five server
    /// sessions per database, so replicas share them.
    #[track_caller]
    pub fn start(db: &TestDb, mode: &str) -> Pooler {
        Pooler::start_sized(db, mode, 5)
    }

    /// [`Pooler::start`] with `pool_size` server sessions per database: with
    /// one, every client's transactions run on the same server session.
    #[track_caller]
    pub fn start_sized(db: &TestDb, mode: &str, pool_size: u32) -> Pooler {
        let cluster = db.cluster();
        let dir = cluster::cluster_root().join(format!(
            "miglock-pgb-{}-{}",
            std::process::id(),
            &cluster::random_hex16()[..8]
        ));
        cluster::make_owned_dir(&dir);
        for attempt in 1..=8 {
            let port = cluster::reserve_port();
            let config = format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pg_port} user=postgres password={password}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir = {dir}\n\
                 auth_type = trust\n\
                 auth_file = {dir}/users.txt\n\
                 admin_users = postgres\n\
                 pool_mode = {mode}\n\
                 default_pool_size = {pool_size}\n\
                 min_pool_size = 0\n\
                 max_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits, options\n\
                 logfile = {dir}/pgbouncer.log\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n",
                pg_port = cluster.port(),
                password = cluster.password(),
                dir = dir.display(),
            );
            write_owned(
                &dir.join("users.txt"),
                &format!("\"postgres\" \"{}\"\n", cluster.password()),
            );
            write_owned(&dir.join("pgbouncer.ini"), &config);
            // The shell ends PgBouncer (which refuses to run as root) and
            // removes the directory when its stdin closes: at drop, or when
            // this process dies.
            const SCRIPT: &str = r#""$0" "$1/pgbouncer.ini" >>"$1/stderr.log" 2>&1 &
pid=$!
read _eof
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$1""#;
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c")
                .arg(SCRIPT)
                .arg(pgbouncer())
                .arg(&dir)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .current_dir("/")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            if let Some((uid, gid)) = cluster::server_owner() {
                sh.uid(uid).gid(gid);
            }
            let watchdog = sh.spawn().expect("spawn pgbouncer");
            let pooler = Pooler {
                dir: dir.clone(),
                port,
                password: cluster.password().to_string(),
                watchdog,
            };
            let started = poll(Duration::from_secs(15), || {
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && pooler.log().contains("process up")
                {
                    return Some(true);
                }
                (pooler.log().contains("Address already in use") && attempt < 8).then_some(false)
            });
            match started {
                Some(true) => return pooler,
                Some(false) => {}
                None => panic!(
                    "pgbouncer did not start on port {port}:\n{}\n{}",
                    pooler.log(),
                    fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                ),
            }
            // Port taken: the stderr of the shell is gone with its directory,
            // so make it again for the next attempt.
            drop(pooler);
            cluster::make_owned_dir(&dir);
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `db` through the pooler.
    pub fn url(&self, db: &TestDb) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{}",
            self.password,
            self.port,
            db.name()
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

fn write_owned(path: &std::path::Path, contents: &str) {
    let mut file = fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(contents.as_bytes()).expect("write");
    if let Some((uid, gid)) = cluster::server_owner() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
}

#[test]
fn the_harness_pooler_forwards_queries_and_shares_server_sessions() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "transaction");
    let mut client = postgres::Client::connect(&pooler.url(&db), postgres::NoTls).expect("connect");
    let rows = client.simple_query("SELECT 1").expect("select");
    assert!(!rows.is_empty());
}

// ---------------------------------------------------------------------------
// miglock behind PgBouncer
// ---------------------------------------------------------------------------

/// Every migration records its version in `effects` (V1 creates it), and
/// sleeps a little so that replicas overlap.
fn counted_migrations(count: i64) -> MigrationDir {
    let dir = MigrationDir::with(&[("V1__create_effects.sql", EFFECTS)]);
    for v in 2..=count {
        dir.file(
            &format!("V{v}__step_{v}.sql"),
            &format!(
                "CREATE TABLE step_{v} (id int);\nSELECT pg_sleep(0.05);\n\
                 INSERT INTO effects (version) VALUES ({v});\n"
            ),
        );
    }
    dir
}

fn apply_through(pooler: &Pooler, db: &TestDb, dir: &MigrationDir, extra: &[&str]) -> Miglock {
    let mut m = Miglock::new();
    m.env("DATABASE_URL", pooler.url(db))
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .args(extra);
    m
}

/// Runs `count` replicas at once and returns their outputs.
fn replicas(count: usize, mut make: impl FnMut() -> Miglock) -> Vec<RunOutput> {
    let children: Vec<_> = (0..count).map(|_| make().spawn_watched()).collect();
    children.into_iter().map(|c| c.finish()).collect()
}

/// Advisory locks of this database, asked of the server directly (the
/// pooler keeps its server sessions open).
fn advisory_locks(db: &TestDb) -> i64 {
    db.query_i64(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
}

/// Whether a server session holds `key` itself (not a waiting mark).
fn held_key(db: &TestDb, key: i64) -> bool {
    !key_holders(db, key).is_empty()
}

#[test]
fn transaction_mode_through_transaction_pooling_applies_each_migration_once_and_leaves_no_lock() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "transaction");
    let dir = counted_migrations(5);
    let outs = replicas(20, || {
        let mut m = apply_through(
            &pooler,
            &db,
            &dir,
            &["--lock-mode", "transaction", "--wait", "60s"],
        );
        m.timeout(Duration::from_secs(120));
        m
    });
    for out in &outs {
        out.assert_code(0);
        assert!(!out.stderr.contains("POOLER_DETECTED"), "{}", out.stderr);
    }
    let applied: usize = outs
        .iter()
        .map(|o| o.stderr.matches("MIGRATION_APPLIED").count())
        .sum();
    assert_eq!(applied, 5, "each migration applied by exactly one replica");
    assert_eq!(db.history(), vec![1, 2, 3, 4, 5]);
    assert_eq!(effects(&db), once_each(1..=5));
    assert_eq!(
        advisory_locks(&db),
        0,
        "no advisory lock left on any server session"
    );
    // The same through MIGLOCK_LOCK_MODE, now a no-op.
    apply_through(&pooler, &db, &dir, &[])
        .env("MIGLOCK_LOCK_MODE", "transaction")
        .run()
        .assert_code(0)
        .assert_stderr_contains("SCHEMA_CURRENT");
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn transaction_mode_refuses_a_migration_without_a_transaction_up_front() {
    let db = Cluster::shared().create_db();
    let dir = counted_migrations(1);
    dir.file(
        "V2__index.sql",
        "CREATE INDEX CONCURRENTLY effects_version ON effects (version);\n",
    );
    let out = Miglock::for_db(&db)
        .args([
            "apply",
            "--format",
            "json",
            "--lock-mode",
            "transaction",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_code(6)
        .assert_stderr_contains("which --lock-mode transaction cannot lock")
        .assert_stderr_contains("V2__index")
        .assert_stderr_contains("direct connection");
    // The JSON result lists it, as every refusal of the set.
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["problems"][0]["kind"], "unsupported");
    assert_eq!(json["problems"][0]["version"], 2);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "nothing applied, not even V1"
    );
}

#[test]
fn session_mode_through_transaction_pooling_stops_on_the_pooler_and_applies_nothing_twice() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "transaction");
    let dir = counted_migrations(5);
    // A replica may wait for a lock stranded on a pooled server session
    // (exit 3): a short --wait keeps that short.
    let outs = replicas(8, || {
        apply_through(
            &pooler,
            &db,
            &dir,
            &["--lock-mode", "session", "--wait", "3s"],
        )
    });
    let detected = outs
        .iter()
        .filter(|o| o.stderr.contains("POOLER_DETECTED"))
        .count();
    for out in &outs {
        assert!(
            [0, 1, 3].contains(&out.code),
            "exit {}: {}",
            out.code,
            out.stderr
        );
        if out.code == 1 {
            out.assert_stderr_contains("POOLER_DETECTED")
                .assert_stderr_contains("--lock-mode transaction");
            assert!(
                !out.stderr.contains("already exists") && !out.stderr.contains("duplicate key"),
                "stopped by the guard, not by a migration failing: {}",
                out.stderr
            );
        }
    }
    assert!(detected > 0, "some replica noticed the pooler");
    // Whatever was applied was applied once, with its row.
    let history = db.history();
    assert_eq!(effects(&db), once_each(history));
    // A lock stranded on a pooled server session was reported with the
    // command that clears it; run it against the server directly.
    let key = db.default_key();
    if held_key(&db, key) {
        assert!(
            outs.iter().any(|o| o.stderr.contains(&format!(
                "Clear it with `miglock unlock --table refinery_schema_history --lock-key {key}`"
            ))),
            "the stranded lock was reported"
        );
        Miglock::for_db(&db)
            .args(["unlock", "--yes", "--lock-key", &key.to_string()])
            .run()
            .assert_code(0);
        assert!(!held_key(&db, key));
    }
    // What is left unfinished, a later run in transaction mode completes.
    apply_through(
        &pooler,
        &db,
        &dir,
        &["--lock-mode", "transaction", "--wait", "60s"],
    )
    .run()
    .assert_code(0);
    assert_eq!(effects(&db), once_each(1..=5));
    assert!(!held_key(&db, key));
}

#[test]
fn session_pooling_behaves_as_a_direct_connection() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "session");
    let dir = counted_migrations(4);
    let outs = replicas(4, || {
        apply_through(
            &pooler,
            &db,
            &dir,
            &["--lock-mode", "session", "--wait", "60s"],
        )
    });
    for out in &outs {
        out.assert_code(0);
        assert!(!out.stderr.contains("POOLER_DETECTED"), "{}", out.stderr);
        assert!(!out.stderr.contains("returned false"), "{}", out.stderr);
    }
    assert_eq!(effects(&db), once_each(1..=4));
    wait_for(
        "the pooled sessions to hold no advisory lock",
        Duration::from_secs(10),
        || advisory_locks(&db) == 0,
    );
}

#[test]
fn wait_and_status_work_through_every_pool_mode() {
    for pool_mode in ["transaction", "session", "statement"] {
        let db = Cluster::shared().create_db();
        let pooler = Pooler::start(&db, pool_mode);
        let dir = counted_migrations(2);
        let through = |command: &str, lock_mode: &str| {
            let mut m = Miglock::new();
            m.env("DATABASE_URL", pooler.url(&db))
                .args([command, "--lock-mode", lock_mode, "--migrations"])
                .arg(dir.path());
            m
        };
        through("status", "transaction")
            .arg("--check")
            .run()
            .assert_code(7);
        // The default, auto, polls behind every pooler: no LISTEN, no
        // waiting mark left on a pooled server session.
        through("wait", "auto")
            .args(["--timeout", "1s"])
            .run()
            .assert_code(7);
        assert_eq!(advisory_locks(&db), 0, "{pool_mode}");
        Miglock::for_db(&db)
            .args(["apply", "--migrations"])
            .arg(dir.path())
            .run()
            .assert_code(0);
        for lock_mode in ["auto", "session", "transaction"] {
            through("wait", lock_mode)
                .args(["--timeout", "10s"])
                .run()
                .assert_code(0)
                .assert_stderr_contains("SCHEMA_CURRENT");
            through("status", lock_mode).run().assert_code(0);
        }
    }
}

#[test]
fn a_transaction_mode_holder_shows_in_status_and_makes_others_wait_through_the_pooler() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "transaction");
    let dir = MigrationDir::with(&[(
        "V1__gated.sql",
        &format!(
            "CREATE TABLE effects (version int NOT NULL);\n{}\nINSERT INTO effects VALUES (1);\n",
            LockGate::SQL
        ),
    )]);
    let mut gate = LockGate::close(&db);
    let mut first = apply_through(
        &pooler,
        &db,
        &dir,
        &["--lock-mode", "transaction", "--wait", "60s"],
    );
    let first = first.spawn_watched();
    wait_for(
        "the holder to wait for the gate",
        Duration::from_secs(30),
        || LockGate::waiting_like(&db, "miglock apply holding (transaction) %") == 1,
    );
    let mut second = apply_through(
        &pooler,
        &db,
        &dir,
        &["--lock-mode", "transaction", "--wait", "60s"],
    );
    let mut second = second.spawn_watched();
    second.wait_for_stderr("LOCK_BUSY", Duration::from_secs(30));
    let status = Miglock::new()
        .env("DATABASE_URL", pooler.url(&db))
        .args([
            "status",
            "--format",
            "json",
            "--lock-mode",
            "transaction",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["lock"]["holder_mode"], "transaction", "{json}");
    Miglock::new()
        .env("DATABASE_URL", pooler.url(&db))
        .args(["status", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_stdout_contains("--lock-mode transaction: held by one migration's transaction");
    gate.open();
    first
        .finish()
        .assert_code(0)
        .assert_stderr_contains("MIGRATION_APPLIED version=1");
    second
        .finish()
        .assert_code(0)
        .assert_stderr_contains("LOCK_BUSY key=")
        .assert_stderr_contains("mode=transaction")
        .assert_stderr_contains("applied by another replica while this one waited");
    assert_eq!(effects(&db), vec![(1, 1)]);
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn transaction_mode_under_repeatable_read_by_default_still_applies_each_migration_once() {
    // The guard's history check needs a snapshot taken after the lock; a
    // database defaulting to repeatable read would take it at the guard.
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'",
            db.name()
        ))
        .unwrap();
    let dir = counted_migrations(4);
    let outs = replicas(8, || {
        let mut m = Miglock::for_db(&db);
        m.args([
            "apply",
            "--lock-mode",
            "transaction",
            "--wait",
            "60s",
            "--migrations",
        ])
        .arg(dir.path());
        m
    });
    for out in &outs {
        out.assert_code(0);
    }
    assert_eq!(effects(&db), once_each(1..=4));
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn transaction_mode_with_the_key_held_skips_with_exit_3_and_changes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = counted_migrations(2);
    let holder = hold_default_key(&db);
    Miglock::for_db(&db)
        .args([
            "apply",
            "--lock-mode",
            "transaction",
            "--wait",
            "0",
            "--migrations",
        ])
        .arg(dir.path())
        .run()
        .assert_code(3)
        .assert_stderr_contains("LOCK_WAIT_TIMEOUT");
    assert_eq!(db.history(), Vec::<i64>::new());
    drop(holder);
}

#[test]
fn session_mode_through_statement_pooling_applies_nothing_twice() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "statement");
    let dir = counted_migrations(4);
    let outs = replicas(6, || {
        apply_through(
            &pooler,
            &db,
            &dir,
            &["--lock-mode", "session", "--wait", "3s"],
        )
    });
    for out in &outs {
        // A refused guard leaves a failed transaction, on which PgBouncer
        // closes the client in statement pooling: the refusal may arrive
        // as POOLER_DETECTED or as a lost connection.
        assert!(
            [0, 1, 3, 5].contains(&out.code),
            "exit {}: {}",
            out.code,
            out.stderr
        );
        if out.code == 1 {
            assert!(
                out.stderr.contains("POOLER_DETECTED") || out.stderr.contains("connection"),
                "{}",
                out.stderr
            );
        }
    }
    let history = db.history();
    assert_eq!(effects(&db), once_each(history));
}

/// Behind a transaction pooler every setting miglock makes is local to a
/// migration's transaction, a retried lock attempt's included, and a
/// migration's own plain `SET` is undone before its COMMIT: nothing stays
/// on the server session for the next client. The database's defaults are
/// not PostgreSQL's (0 for each), so that a leaked `lock_timeout = 0` (or
/// the schedule's 50 ms) would show; with one server session in the pool,
/// the next client lands on the one miglock used.
#[test]
fn transaction_pooling_leaks_no_setting_to_the_next_client_after_a_retried_lock_attempt() {
    let db = Cluster::shared().create_db();
    let name = db.name();
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET lock_timeout = '7s'; \
             ALTER DATABASE {name} SET statement_timeout = '9s'; \
             ALTER DATABASE {name} SET idle_in_transaction_session_timeout = '1h'"
        ))
        .unwrap();
    let pooler = Pooler::start_sized(&db, "transaction", 1);
    let dir = MigrationDir::with(&[
        (
            "V1__t.sql",
            "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n",
        ),
        (
            "V2__alter_t.sql",
            "SET work_mem = '7MB';\nALTER TABLE t ADD COLUMN x int;\n\
             CREATE TABLE ran_on AS SELECT pg_backend_pid() AS pid;\n",
        ),
    ]);
    let through = |extra: &[&str]| {
        let mut m = apply_through(&pooler, &db, &dir, &["--lock-mode", "transaction"]);
        m.args(["--format", "json"]).args(extra);
        m
    };
    through(&["--target", "1"]).run().assert_code(0);
    // Idle in a transaction that read `t`, straight to PostgreSQL: through
    // the pooler it would hold the pool's one server session.
    let mut blocker = db.client();
    blocker
        .batch_execute("SET application_name = 'report'; BEGIN; SELECT * FROM t;")
        .unwrap();
    let mut child = through(&[]).spawn_watched();
    child.wait_for_stderr(
        "DDL_BLOCKED version=2 name=alter_t attempt=1 lock_timeout_ms=50 table=t",
        SETTLE,
    );
    child.wait_for_stderr("DDL_WAITING version=2 name=alter_t", SETTLE);
    blocker.batch_execute("COMMIT").unwrap();
    let out = child.finish();
    out.assert_code(0)
        .assert_stderr_contains("application_name=\"report\"")
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=alter_t");
    assert!(!out.stderr.contains("POOLER_DETECTED"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(versions(&json["applied"]), [2]);
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "x"));
    assert_eq!(advisory_locks(&db), 0);

    let mut next = postgres::Client::connect(&pooler.url(&db), postgres::NoTls).expect("connect");
    let show = |client: &mut postgres::Client, sql: &str| -> String {
        client
            .simple_query(sql)
            .expect(sql)
            .into_iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_default()
    };
    // The server session V2 ran on is the one this client is given.
    let ran_on = db.query_strings("SELECT pid::text FROM ran_on");
    assert_eq!(
        Some(show(&mut next, "SELECT pg_backend_pid()")),
        ran_on[0][0],
        "one server session in the pool"
    );
    assert_eq!(show(&mut next, "SHOW lock_timeout"), "7s");
    assert_eq!(show(&mut next, "SHOW statement_timeout"), "9s");
    assert_eq!(
        show(&mut next, "SHOW idle_in_transaction_session_timeout"),
        "1h"
    );
    assert_eq!(
        show(&mut next, "SHOW work_mem"),
        "4MB",
        "the migration's own SET"
    );
    // The check can see a leak: a session-level SET does stay there.
    next.batch_execute("SET lock_timeout = '1ms'").unwrap();
    let mut third = postgres::Client::connect(&pooler.url(&db), postgres::NoTls).expect("connect");
    assert_eq!(show(&mut third, "SHOW lock_timeout"), "1ms");
}

// ---------------------------------------------------------------------------
// --lock-mode auto (the default): the mode told from the connection
// ---------------------------------------------------------------------------

/// `V1` ([`EFFECTS`]) and `V2`, a concurrent index build: a file that runs
/// without a transaction, which only session mode can lock.
fn with_concurrent_index() -> MigrationDir {
    let dir = counted_migrations(1);
    dir.file(
        "V2__index.sql",
        "CREATE INDEX CONCURRENTLY effects_version ON effects (version);\n",
    );
    dir
}

/// Whether the index V2 of [`with_concurrent_index`] builds is there, valid.
fn valid_index(db: &TestDb) -> bool {
    db.query_i64(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = 'effects_version' AND i.indisvalid",
    ) == 1
}

/// The `LOCK_MODE` line's process ids, `key_pid` and `backend_pid`.
fn logged_pids(stderr: &str) -> (String, String) {
    let line = stderr
        .lines()
        .find(|l| l.contains("LOCK_MODE "))
        .unwrap_or_else(|| panic!("no LOCK_MODE line:\n{stderr}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    (field("key_pid="), field("backend_pid="))
}

#[test]
fn auto_on_a_direct_connection_chooses_session_mode_and_runs_a_file_without_a_transaction() {
    let db = Cluster::shared().create_db();
    let dir = with_concurrent_index();
    let out = Miglock::for_db(&db)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(0)
        .assert_stderr_contains("LOCK_MODE mode=session reason=direct key_pid=")
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=index");
    let (key_pid, backend_pid) = logged_pids(&out.stderr);
    assert_eq!(key_pid, backend_pid, "PostgreSQL's own cancel key");
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(json["lock"]["mode"], "session", "{json}");
    assert_eq!(json["lock"]["mode_reason"], "direct", "{json}");
    assert_eq!(versions(&json["applied"]), [1, 2]);
    assert_eq!(db.history(), [1, 2]);
    assert!(valid_index(&db));
    assert_quiet(&db, db.default_key());
}

#[test]
fn auto_over_a_unix_socket_chooses_session_mode_as_before() {
    let db = Cluster::shared().create_db();
    let cluster = db.cluster();
    let dir = with_concurrent_index();
    let out = Miglock::new()
        .env(
            "DATABASE_URL",
            format!(
                "host={} port={} user=postgres dbname={}",
                cluster.socket_dir().display(),
                cluster.port(),
                db.name()
            ),
        )
        .args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(0)
        .assert_stderr_contains("LOCK_MODE mode=session reason=unix_socket")
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=index");
    assert!(!out.stderr.contains("key_pid="), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["lock"]["mode"], "session", "{json}");
    assert_eq!(json["lock"]["mode_reason"], "unix_socket", "{json}");
    assert_eq!(db.history(), [1, 2]);
    assert!(valid_index(&db));
    assert_quiet(&db, db.default_key());
}

/// 20 replicas with the default flags through `pool_mode`: every one
/// exits 0 in transaction mode, each migration is applied once, and no
/// advisory lock or waiting mark is left on any server session (the
/// pooler keeps them open, so one would still show).
fn auto_replicas_through(pool_mode: &str) {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, pool_mode);
    let dir = counted_migrations(5);
    let outs = replicas(20, || {
        let mut m = apply_through(&pooler, &db, &dir, &["--format", "json", "--wait", "60s"]);
        m.timeout(Duration::from_secs(120));
        m
    });
    for out in &outs {
        out.assert_code(0);
        assert!(!out.stderr.contains("POOLER_DETECTED"), "{}", out.stderr);
        let json = out.json();
        assert_eq!(json["lock"]["mode"], "transaction", "{json}");
        assert_eq!(json["lock"]["mode_reason"], "pooler", "{json}");
    }
    // Said at info level by each replica that had something to apply.
    let told = outs
        .iter()
        .filter(|o| {
            o.stderr
                .contains("LOCK_MODE mode=transaction reason=pooler key_pid=")
        })
        .count();
    assert!(told > 0, "LOCK_MODE logged");
    for out in outs.iter().filter(|o| o.stderr.contains("LOCK_MODE ")) {
        let (key_pid, backend_pid) = logged_pids(&out.stderr);
        assert_ne!(key_pid, backend_pid, "PgBouncer's own cancel key");
    }
    let applied: usize = outs
        .iter()
        .map(|o| o.stderr.matches("MIGRATION_APPLIED").count())
        .sum();
    assert_eq!(applied, 5, "each migration applied by exactly one replica");
    assert_eq!(db.history(), vec![1, 2, 3, 4, 5]);
    assert_eq!(effects(&db), once_each(1..=5));
    assert_eq!(
        advisory_locks(&db),
        0,
        "no advisory lock or waiting mark left"
    );
    // A direct run after them finds the schema current, the key free.
    Miglock::for_db(&db)
        .args(["apply", "--wait", "0", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_code(0)
        .assert_stderr_contains("SCHEMA_CURRENT");
}

#[test]
fn auto_through_transaction_pooling_every_replica_exits_0_and_no_lock_is_left() {
    auto_replicas_through("transaction");
}

#[test]
fn auto_through_session_pooling_every_replica_exits_0_and_no_lock_is_left() {
    auto_replicas_through("session");
}

/// The accepted breaking change: behind a session-pooling port `auto`
/// chooses transaction mode, which refuses a file without a transaction
/// up front (exit 6, saying what to give); `--lock-mode session` runs it.
#[test]
fn auto_through_session_pooling_refuses_a_file_without_a_transaction_and_session_mode_runs_it() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "session");
    let dir = with_concurrent_index();
    let out = apply_through(&pooler, &db, &dir, &["--format", "json"]).run();
    out.assert_code(6)
        .assert_stderr_contains("V2__index")
        .assert_stderr_contains("--lock-mode auto chose that mode because a connection pooler")
        .assert_stderr_contains("give --lock-mode session");
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["problems"][0]["kind"], "unsupported");
    assert_eq!(json["problems"][0]["version"], 2);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "nothing applied, not even V1"
    );

    apply_through(&pooler, &db, &dir, &["--lock-mode", "session"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("LOCK_MODE mode=session reason=requested")
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=index");
    assert_eq!(db.history(), [1, 2]);
    assert!(valid_index(&db));
}

#[test]
fn auto_through_statement_pooling_exits_2_naming_the_pooler_and_applies_nothing() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "statement");
    let dir = counted_migrations(3);
    let outs = replicas(4, || {
        apply_through(&pooler, &db, &dir, &["--format", "json"])
    });
    for out in &outs {
        out.assert_code(2)
            .assert_stderr_contains("LOCK_MODE mode=none reason=statement_pooler key_pid=")
            .assert_stderr_contains("statement pooling mode (PgBouncer pool_mode = statement)")
            .assert_stderr_contains("Nothing was changed");
        assert!(!out.stderr.contains("LOCK_ACQUIRED"), "{}", out.stderr);
        let json = out.json();
        assert_eq!(json["outcome"], "usage", "{json}");
        assert_eq!(json["exit_code"], 2, "{json}");
        assert_eq!(json["lock"]["mode_reason"], "statement_pooler", "{json}");
    }
    assert_eq!(db.history(), Vec::<i64>::new());
    assert!(!db.table_exists("effects"));
    assert_eq!(advisory_locks(&db), 0);
}

/// `baseline` takes the session lock whatever the mode: under `auto`, a
/// pooler in the way refuses it (exit 2) before the lock is taken.
#[test]
fn auto_refuses_baseline_through_a_pooler_and_takes_no_lock() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "transaction");
    let dir = counted_migrations(2);
    let out = Miglock::new()
        .env("DATABASE_URL", pooler.url(&db))
        .args(["baseline", "--baseline-version", "1", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(2)
        .assert_stderr_contains("baseline takes the session-level lock")
        .assert_stderr_contains("a connection pooler sits between miglock and PostgreSQL");
    assert_eq!(db.history(), Vec::<i64>::new());
    assert_eq!(advisory_locks(&db), 0);
}

/// `--rebuild-invalid-indexes` needs the session lock: where auto chooses
/// transaction mode it is refused up front (exit 2), as with
/// `--lock-mode transaction`.
#[test]
fn auto_refuses_rebuild_invalid_indexes_through_a_pooler() {
    let db = Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "transaction");
    let dir = counted_migrations(1);
    let out = apply_through(&pooler, &db, &dir, &["--rebuild-invalid-indexes"]).run();
    out.assert_code(2)
        .assert_stderr_contains("--rebuild-invalid-indexes needs the session lock")
        .assert_stderr_contains("a connection pooler sits between miglock and PostgreSQL");
    assert_eq!(db.history(), Vec::<i64>::new());
    assert_eq!(advisory_locks(&db), 0);
}
