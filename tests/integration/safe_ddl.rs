//! Safe DDL by default: a migration never stalls the application behind a
//! lock queue. Each attempt waits a short lock_timeout; an older
//! transaction in the way is named and waited out without queueing; the
//! budget ends in exit 8 with nothing of the migration applied; a
//! concurrent index build never leaves an INVALID index recorded as
//! applied.

use std::time::{Duration, Instant};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, finish_all, send_signal, versions, wait_for, MigrationDir, RunOutput};
use crate::probes::backend_exists;

const SETTLE: Duration = Duration::from_secs(60);

/// V1 makes `t`; V2 alters it (ACCESS EXCLUSIVE).
fn alter_set(db: &TestDb) -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file(
        "V1__t.sql",
        "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n",
    )
    .file("V2__alter_t.sql", "ALTER TABLE t ADD COLUMN x int;\n");
    apply(db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    dir
}

/// A session idle in a transaction that read `t` (ACCESS SHARE), named.
fn idle_reader(db: &TestDb, name: &str) -> (postgres::Client, i32) {
    let mut client = db.client();
    client
        .batch_execute(&format!(
            "SET application_name = '{name}'; BEGIN; SELECT * FROM t;"
        ))
        .unwrap();
    let pid = client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get::<_, i32>(0);
    (client, pid)
}

fn has_column(db: &TestDb, table: &str, column: &str) -> bool {
    db.query_i64(&format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' \
         AND column_name = '{column}'"
    )) == 1
}

/// Sessions whose query is `SELECT … FROM t` waiting for a lock: traffic
/// queued behind an ALTER.
fn queued_readers(db: &TestDb) -> i64 {
    db.query_i64(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query LIKE 'SELECT count(*) FROM t%'",
    )
}

#[test]
fn an_old_blocker_is_named_and_waited_out_while_traffic_flows() {
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    let (mut blocker, pid) = idle_reader(&db, "forgotten-psql");
    let mut child = apply(&db, &dir).spawn_watched();
    child.wait_for_stderr(
        "DDL_BLOCKED version=2 name=alter_t attempt=1 lock_timeout_ms=50 table=t",
        SETTLE,
    );
    child.wait_for_stderr("DDL_WAITING version=2 name=alter_t", SETTLE);
    // While miglock waits for the blocker, nothing queues behind it: a
    // reader gets through at once, many times over.
    for _ in 0..20 {
        let mut reader = db.client();
        reader
            .batch_execute("SET statement_timeout = '2s'; SELECT count(*) FROM t")
            .expect("a reader is not queued behind the migration");
    }
    assert_eq!(queued_readers(&db), 0);
    assert!(!has_column(&db, "t", "x"));
    blocker.batch_execute("COMMIT").unwrap();
    let out = child.finish();
    out.assert_success()
        .assert_stderr_contains(&format!(
            "blocker_pid={pid} application_name=\"forgotten-psql\" state=\"idle in transaction\""
        ))
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=alter_t");
    assert_eq!(versions(&out.json()["applied"]), [2]);
    assert_eq!(db.history(), [1, 2]);
    assert!(has_column(&db, "t", "x"));
}

#[test]
fn a_blocker_that_outlives_the_budget_is_exit_8_with_nothing_of_the_migration_applied() {
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    dir.file("V3__after.sql", "CREATE TABLE after_alter (id int);\n");
    let (mut blocker, pid) = idle_reader(&db, "long-report");
    let out = apply(&db, &dir).args(["--ddl-lock-budget", "1s"]).run();
    out.assert_code(8)
        .assert_stderr_contains("DDL_BLOCKED version=2 name=alter_t")
        .assert_stderr_contains(&format!("blocker_pid={pid}"))
        .assert_stderr_contains("could not get its table locks within --ddl-lock-budget 1s")
        .assert_stderr_contains("Nothing of V2__alter_t was applied")
        .assert_stderr_contains("LOCK_RELEASED");
    let json = out.json();
    assert_eq!(json["outcome"], "blocked");
    assert_eq!(json["exit_code"], 8);
    assert_eq!(json["blockers"][0]["pid"], pid);
    assert_eq!(json["blockers"][0]["application_name"], "long-report");
    assert_eq!(db.history(), [1]);
    assert!(!has_column(&db, "t", "x"));
    assert!(!db.table_exists("after_alter"));
    blocker.batch_execute("COMMIT").unwrap();
    apply(&db, &dir).run().assert_success();
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn cancel_blockers_after_ends_an_idle_in_transaction_blocker() {
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    let (mut blocker, pid) = idle_reader(&db, "stuck-worker");
    let out = apply(&db, &dir)
        .args(["--cancel-blockers-after", "300ms"])
        .timeout(SETTLE)
        .run();
    out.assert_success().assert_stderr_contains(&format!(
        "BLOCKER_TERMINATED pid={pid} application_name=\"stuck-worker\""
    ));
    assert_eq!(db.history(), [1, 2]);
    assert!(has_column(&db, "t", "x"));
    // The blocker's session is gone.
    assert!(blocker.batch_execute("SELECT 1").is_err());
    // With --dry-run it is a usage error: it would end sessions.
    let out = apply(&db, &dir)
        .args(["--dry-run", "--cancel-blockers-after", "1s"])
        .run();
    out.assert_code(2)
        .assert_stderr_contains("--cancel-blockers-after");
}

#[test]
fn ddl_lock_timeout_off_waits_as_postgresql_makes_it() {
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    let (mut blocker, _) = idle_reader(&db, "report");
    let child = apply(&db, &dir).args(["--ddl-lock-timeout", "off"]).spawn();
    wait_for("the ALTER to queue for its lock", SETTLE, || {
        db.query_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE t%'",
        ) == 1
    });
    blocker.batch_execute("COMMIT").unwrap();
    RunOutput::from_child(child).assert_success();
    assert!(has_column(&db, "t", "x"));
}

#[test]
fn a_fixed_timeout_with_a_retry_cap_is_exit_8_once_its_attempts_are_spent() {
    // --ddl-retries caps the attempts (0: one), whatever is left of the
    // budget.
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    let (mut blocker, _) = idle_reader(&db, "report");
    let out = apply(&db, &dir)
        .args([
            "--ddl-lock-timeout",
            "100ms",
            "--ddl-retries",
            "0",
            "--ddl-lock-budget",
            "30s",
        ])
        .run();
    out.assert_code(8)
        .assert_stderr_contains("lock_timeout_ms=100")
        .assert_stderr_contains("(1 attempt(s))");
    assert_eq!(db.history(), [1]);
    blocker.batch_execute("COMMIT").unwrap();
}

#[test]
fn transaction_mode_bounds_each_migration_with_the_schedule_too() {
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    dir.file(
        "V3__seen.sql",
        "CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS inside;\n",
    );
    apply(&db, &dir)
        .args(["--lock-mode", "transaction"])
        .run()
        .assert_success();
    let inside = db.query_strings("SELECT inside FROM seen");
    assert_eq!(inside[0][0].as_deref(), Some("50ms"));
}

#[test]
fn a_concurrent_index_build_behind_a_blocker_leaves_no_invalid_index() {
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    dir.remove("V2__alter_t.sql").file(
        "V2__index.sql",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
    );
    // A writer idle in its transaction: the build waits for it.
    let mut writer = db.client();
    writer
        .batch_execute("SET application_name = 'writer'; BEGIN; INSERT INTO t VALUES (2);")
        .unwrap();
    let out = apply(&db, &dir).args(["--ddl-lock-budget", "1s"]).run();
    out.assert_code(8)
        .assert_stderr_contains("DDL_BLOCKED version=2 name=index statement=1");
    assert_eq!(db.history(), [1]);
    writer.batch_execute("COMMIT").unwrap();
    // Whatever the cut build left was dropped, now or by this run, before
    // it builds again: the index is valid, and only then recorded.
    apply(&db, &dir).run().assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 't_id' AND i.indisvalid"
        ),
        1
    );
}

#[test]
fn an_invalid_index_left_by_an_earlier_build_is_dropped_before_building_it_again() {
    let db = Cluster::shared().create_db();
    let dir = alter_set(&db);
    dir.remove("V2__alter_t.sql").file(
        "V2__index.sql",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
    );
    // An earlier build cut off: a duplicate makes the unique build fail,
    // and PostgreSQL keeps the INVALID index.
    let mut client = db.client();
    client.batch_execute("INSERT INTO t VALUES (1)").unwrap();
    assert!(client
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id)")
        .is_err());
    client
        .batch_execute("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
        .unwrap();
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 't_id' AND NOT i.indisvalid"
        ),
        1
    );
    // IF NOT EXISTS alone would skip it with a notice and record V2.
    let out = apply(&db, &dir).run();
    out.assert_success().assert_stderr_contains(
        "INVALID_INDEX_DROPPED name=public.t_id (left INVALID by an earlier build)",
    );
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 't_id' AND i.indisvalid"
        ),
        1
    );
    assert_eq!(db.history(), [1, 2]);
}

// ---------------------------------------------------------------------------
// A concurrent build cut off while it waits for an old transaction
// ---------------------------------------------------------------------------

/// V1 makes `t` (applied); V2 builds a unique index on it concurrently, as
/// a re-runnable file would (pending). A writer idle in its transaction
/// (an old transaction the build must wait for) is returned.
fn index_behind_an_old_writer(db: &TestDb) -> (MigrationDir, postgres::Client) {
    let dir = alter_set(db);
    dir.remove("V2__alter_t.sql").file(
        "V2__index.sql",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
    );
    let mut writer = db.client();
    writer
        .batch_execute("SET application_name = 'writer'; BEGIN; INSERT INTO t VALUES (2);")
        .unwrap();
    (dir, writer)
}

/// The backend of the miglock run building `t_id`, once its build waits
/// for the old writer (a lock wait on the writer's transaction).
fn build_waiting(db: &TestDb) -> i64 {
    let mut pid = 0;
    wait_for("the build to wait for the old writer", SETTLE, || {
        let found = db.query_strings(
            "SELECT pid::text FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'miglock apply holding%' AND wait_event_type = 'Lock' \
             AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%'",
        );
        match found.as_slice() {
            [row] => {
                pid = row[0].as_deref().unwrap().parse().unwrap();
                true
            }
            _ => false,
        }
    });
    pid
}

/// `(valid, invalid)` indexes named `t_id`.
fn t_id(db: &TestDb) -> (i64, i64) {
    let count = |valid: &str| {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 't_id' AND i.indisvalid = {valid}"
        ))
    };
    (count("true"), count("false"))
}

#[test]
fn a_concurrent_build_cut_by_sigkill_is_recorded_only_once_its_index_is_valid() {
    let db = Cluster::shared().create_db();
    let (dir, mut writer) = index_behind_an_old_writer(&db);
    let mut child = apply(&db, &dir).spawn();
    let backend = build_waiting(&db);
    // No handler runs: the server finds the client gone (miglock's
    // client_connection_check_interval) and ends the build mid-way.
    child.kill().unwrap();
    let out = RunOutput::from_child(child);
    assert_eq!(out.code, -9, "killed by SIGKILL\n{}", out.details());
    wait_for("the killed run's backend to end", SETTLE, || {
        !backend_exists(&db, backend)
    });
    // What PostgreSQL leaves: the INVALID index, and V2 not recorded.
    assert_eq!(t_id(&db), (0, 1));
    assert_eq!(db.history(), [1]);
    // The old transaction ends; the next run drops the leftover and builds
    // the index again before recording V2.
    writer.batch_execute("COMMIT").unwrap();
    let out = apply(&db, &dir).run();
    out.assert_success()
        .assert_stderr_contains(
            "INVALID_INDEX_DROPPED name=public.t_id (left INVALID by an earlier build)",
        )
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=index");
    assert_eq!(versions(&out.json()["applied"]), [2]);
    assert_eq!(t_id(&db), (1, 0));
    assert_eq!(db.history(), [1, 2]);
    // Recorded once: a later run has nothing to do.
    apply(&db, &dir)
        .run()
        .assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");
    assert_eq!(db.history(), [1, 2]);
}

/// README ("No INVALID index is left recorded"): on SIGTERM the cleanup
/// waits at most 2 s, inside the 5 s miglock gives itself before exiting
/// 130 whatever is left.
const SIGNAL_DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn sigterm_during_a_concurrent_build_behind_an_old_transaction_exits_130_within_the_deadline() {
    let db = Cluster::shared().create_db();
    let (dir, mut writer) = index_behind_an_old_writer(&db);
    let child = apply(&db, &dir).spawn();
    build_waiting(&db);
    let sent = Instant::now();
    send_signal(child.id(), "TERM");
    // finish_all notes when the process ended (it polls every 5 ms), and
    // fails if it is still running well past the deadline.
    let (out, ended) = finish_all(vec![child], SETTLE).pop().unwrap();
    let took = ended.duration_since(sent);
    eprintln!(
        "FIGURE SIGTERM during a concurrent build behind an old transaction: exit {} after {} ms",
        out.code,
        took.as_millis()
    );
    // The drop of the half-built index waits for the same old writer: it
    // gives up at its bound, and says what it left.
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGTERM")
        .assert_stderr_contains("INVALID_INDEX_LEFT name=public.t_id")
        .assert_stderr_contains("the next apply drops it before building it again")
        .assert_stderr_contains("LOCK_RELEASED");
    // A JSON result: it exited through the rollback path, not the grace's
    // last resort.
    assert_eq!(out.json()["outcome"], "interrupted");
    // One second for a loaded machine to schedule the exit and the poll.
    assert!(
        took < SIGNAL_DEADLINE + Duration::from_secs(1),
        "exit 130 after {took:?}, past the documented {SIGNAL_DEADLINE:?}\n{}",
        out.details()
    );
    assert_eq!(t_id(&db), (0, 1), "the INVALID index it could not drop");
    assert_eq!(db.history(), [1]);
    // The next run, the old transaction gone, cleans it and builds anew.
    writer.batch_execute("COMMIT").unwrap();
    let out = apply(&db, &dir).run();
    out.assert_success()
        .assert_stderr_contains(
            "INVALID_INDEX_DROPPED name=public.t_id (left INVALID by an earlier build)",
        )
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=index");
    assert_eq!(t_id(&db), (1, 0));
    assert_eq!(db.history(), [1, 2]);
}
