//! What a test asks the database about miglock's sessions: who holds or
//! waits for a lock, which sessions are there, and what the migrations
//! did; and the [`LockGate`] that keeps a migration running until the
//! test lets it go.
#![allow(dead_code)]

use postgres::Client;

use crate::cluster::TestDb;
use crate::harness::{wait_for, SETTLE};

/// The backend pids holding the advisory `key` (its `objsubid = 1` lock,
/// granted) in the database, in order.
pub fn key_holders(db: &TestDb, key: i64) -> Vec<i64> {
    db.query_strings(&format!(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND ((classid::int8 << 32) | objid::int8) = {key} ORDER BY pid"
    ))
    .into_iter()
    .map(|row| row[0].as_deref().unwrap().parse().unwrap())
    .collect()
}

/// How many "waiting" marks on `key` are held in the database: the shared
/// lock on the two-int4 key with the same halves (`objsubid = 2`) that
/// miglock takes while it waits (see `LockRole` in src/lock/key.rs).
pub fn waiting_marks(db: &TestDb, key: i64) -> i64 {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND ((classid::int8 << 32) | objid::int8) = {key}"
    ))
}

/// How many sessions of the database whose `application_name` is LIKE
/// `pattern` hold the waiting mark (whatever the key; see [`waiting_marks`]).
pub fn marked_waiting_like(db: &TestDb, pattern: &str) -> i64 {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.mode = 'ShareLock' \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND a.application_name LIKE '{pattern}'"
    ))
}

/// How many sessions of the database have an `application_name` LIKE
/// `pattern` (`"miglock apply waiting%"`).
pub fn sessions_like(db: &TestDb, pattern: &str) -> i64 {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name LIKE '{pattern}'"
    ))
}

/// The backend pids of those sessions, in order.
pub fn backends_like(db: &TestDb, pattern: &str) -> Vec<i64> {
    db.query_strings(&format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name LIKE '{pattern}' ORDER BY pid"
    ))
    .into_iter()
    .map(|row| row[0].as_deref().unwrap().parse().unwrap())
    .collect()
}

/// No miglock session is left in the database, nobody holds `key`, no
/// waiting mark is left behind. Backends end a moment after their client,
/// hence the wait.
#[track_caller]
pub fn assert_quiet(db: &TestDb, key: i64) {
    wait_for(
        "no miglock session, lock or waiting mark to be left",
        SETTLE,
        || {
            sessions_like(db, "miglock %") == 0
                && key_holders(db, key).is_empty()
                && waiting_marks(db, key) == 0
        },
    );
}

/// Whether backend `pid` is still there.
pub fn backend_exists(db: &TestDb, pid: i64) -> bool {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
    )) == 1
}

/// The backend pid of a session of the test.
pub fn backend_pid(client: &mut Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// Names the session and takes the session-level advisory `key` on it, as
/// another replica mid-migration would; returns its backend pid. The lock
/// goes with the session.
pub fn hold_key_as(client: &mut Client, key: i64, application_name: &str) -> i32 {
    client
        .batch_execute(&format!(
            "SET application_name = '{application_name}'; SELECT pg_advisory_lock({key})"
        ))
        .unwrap();
    backend_pid(client)
}

/// A session of the test holding the database's default key (the lock
/// every miglock command of the database takes); dropping it lets go.
pub fn hold_default_key(db: &TestDb) -> Client {
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({})", db.default_key()))
        .unwrap();
    holder
}

/// `(version, how many times its side effect happened)` from the
/// `effects` table of the counting sets (`harness::EFFECTS`); empty
/// while the table does not exist.
pub fn effects(db: &TestDb) -> Vec<(i64, i64)> {
    effects_in(db, "effects")
}

/// The same from a table of that shape with another name.
pub fn effects_in(db: &TestDb, table: &str) -> Vec<(i64, i64)> {
    if !db.table_exists(table) {
        return Vec::new();
    }
    db.query_strings(&format!(
        "SELECT version, count(*) FROM {table} GROUP BY version ORDER BY version"
    ))
    .into_iter()
    .map(|row| {
        (
            row[0].as_deref().unwrap().parse().unwrap(),
            row[1].as_deref().unwrap().parse().unwrap(),
        )
    })
    .collect()
}

/// What [`effects`] shows when each of `versions` ran exactly once.
pub fn once_each(versions: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
    versions.into_iter().map(|v| (v, 1)).collect()
}

/// An advisory lock the test holds on a session of its own, so that a
/// statement taking the same key (a migration's [`LockGate::SQL`]) stays
/// active, waiting on a lock, until the test opens the gate: a "still
/// running" state that no amount of machine load can end early. Advisory
/// keys are per database; the gate opens on drop at the latest.
pub struct LockGate {
    client: Option<postgres::Client>,
}

impl LockGate {
    pub const KEY: i64 = 515_151;
    /// The statement that waits for the gate (transaction-level, so the
    /// migration's commit or rollback releases it), as long as it takes:
    /// without the `SET LOCAL`, miglock's safe-DDL `lock_timeout` would cut
    /// the wait, as it cuts any lock wait of a migration.
    pub const SQL: &'static str =
        "SET LOCAL lock_timeout = 0;\nSELECT pg_advisory_xact_lock(515151);";

    pub fn close(db: &TestDb) -> LockGate {
        let mut client = db.client();
        client
            .batch_execute(&format!("SELECT pg_advisory_lock({})", LockGate::KEY))
            .expect("close the gate");
        LockGate {
            client: Some(client),
        }
    }

    pub fn open(&mut self) {
        if let Some(mut client) = self.client.take() {
            // The session may be gone (a server restart ends it, and its
            // lock with it).
            let _ = client.batch_execute(&format!("SELECT pg_advisory_unlock({})", LockGate::KEY));
        }
    }

    /// How many sessions of the database wait for the gate, whatever the
    /// statement that takes it.
    pub fn waiting(db: &TestDb) -> i64 {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::int8 << 32) | objid::int8) = {}",
            LockGate::KEY
        ))
    }

    /// How many sessions whose `application_name` is LIKE `pattern` are
    /// active and waiting for the gate.
    pub fn waiting_like(db: &TestDb, pattern: &str) -> i64 {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND NOT l.granted AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((l.classid::int8 << 32) | l.objid::int8) = {} \
             AND a.state = 'active' AND a.wait_event_type = 'Lock' \
             AND a.application_name LIKE '{pattern}'",
            LockGate::KEY
        ))
    }
}

impl Drop for LockGate {
    fn drop(&mut self) {
        self.open();
    }
}
