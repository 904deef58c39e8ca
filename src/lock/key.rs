//! The advisory lock's key and the SQL that takes it, releases it, and
//! finds the sessions that hold or wait for it.
//!
//! Only `pg_try_advisory_lock` is used. A session blocked in
//! `pg_advisory_lock` sits inside a statement holding a snapshot, and
//! `CREATE INDEX CONCURRENTLY` (in a migration of the holder, or of anyone)
//! waits for every such snapshot: the waiter and the holder deadlock.
//! Waiting is done client-side instead, idle, listening for the holder's
//! release notification.

use std::fmt;

use md5::{Digest, Md5};
use serde::Serialize;

use crate::migrations::history::HistoryTable;
use crate::sql;

/// The bigint advisory-lock key and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockKey {
    pub key: i64,
    /// How the key was chosen, for `status` and the JSON result.
    pub source: String,
}

impl LockKey {
    /// The default key: the first 60 bits of
    /// `md5('miglock:' || <database> || ':' || <table>)`, so it is never
    /// negative and anyone can recompute it in SQL:
    ///
    /// ```sql
    /// SELECT ('x0' || left(md5('miglock:' || 'mydb' || ':' || 'refinery_schema_history'), 15))::bit(64)::bigint;
    /// ```
    ///
    /// The database is the name miglock connects with and the table is
    /// the `--table` value as folded to lower case, so every replica
    /// configured alike agrees on the key. (Replicas that reach one
    /// database under different names, e.g. through a pooler alias, must
    /// share an explicit `--lock-key`.)
    pub fn derived(database: &str, table: &HistoryTable) -> LockKey {
        let digest = Md5::digest(format!("miglock:{database}:{table}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let key = (u64::from_be_bytes(first) >> 4) as i64;
        LockKey {
            key,
            source: format!("derived from md5('miglock:{database}:{table}')"),
        }
    }

    /// The key every replica configured alike agrees on: `--lock-key` when
    /// given, else [`LockKey::derived`]. The only place a key is chosen.
    pub fn for_target(explicit: Option<i64>, database: &str, table: &HistoryTable) -> LockKey {
        match explicit {
            Some(key) => LockKey::explicit(key),
            None => LockKey::derived(database, table),
        }
    }

    pub fn explicit(key: i64) -> LockKey {
        LockKey {
            key,
            source: "--lock-key".into(),
        }
    }

    /// The LISTEN/NOTIFY channel on which a holder announces its release.
    pub fn channel(&self) -> String {
        sql::ident(&format!("miglock_{}", self.key))
    }

    pub fn unlock_sql(&self) -> String {
        format!("SELECT pg_advisory_unlock({})", self.key)
    }

    /// Wakes the sessions waiting for the key (they LISTEN on its channel).
    pub fn notify_sql(&self) -> String {
        format!("NOTIFY {}", self.channel())
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)
    }
}

/// Where in `pg_locks` a session shows for the key. A bigint advisory key
/// shows as `classid = key >> 32`, `objid = key & 0xffffffff`,
/// `objsubid = 1`. `pg_try_advisory_lock` callers that failed never show,
/// so each waiting miglock session also holds a *shared* advisory lock on
/// the two-int4 key with the same halves, which shows with `objsubid = 2`:
/// a space no bigint key can collide with, and shared locks never block
/// one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRole {
    Holder,
    Waiter,
}

impl LockKey {
    /// The two int4 halves of the key, as `pg_locks` shows them.
    pub(super) fn halves(&self) -> (i32, i32) {
        ((self.key >> 32) as i32, self.key as u32 as i32)
    }

    /// Marks this session as waiting for the key (see [`LockRole`]).
    pub fn mark_waiting_sql(&self) -> String {
        let (high, low) = self.halves();
        format!("SELECT pg_try_advisory_lock_shared({high}, {low})")
    }

    /// The sessions holding or waiting for the key, in this database, as
    /// the columns [`Backend::from_row`] reads.
    pub fn sessions_sql(&self, role: LockRole) -> String {
        let (objsubid, mode) = match role {
            LockRole::Holder => (1, "ExclusiveLock"),
            LockRole::Waiter => (2, "ShareLock"),
        };
        format!(
            "SELECT l.pid, {ACTIVITY_COLUMNS} \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = {objsubid} AND l.mode = '{mode}' \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((l.classid::int8 << 32) | l.objid::int8) = {key}",
            key = self.key
        )
    }

    /// The sessions blocked behind the holder (on a table lock its
    /// migration took, say), as [`Backend::from_row`] reads them.
    pub fn blocked_sql(&self) -> String {
        format!(
            "SELECT a.pid, {ACTIVITY_COLUMNS} FROM pg_stat_activity a \
             WHERE EXISTS (SELECT 1 FROM ({holder}) h WHERE h.pid = ANY (pg_blocking_pids(a.pid))) \
             ORDER BY a.pid",
            holder = self.sessions_sql(LockRole::Holder)
        )
    }
}

/// What `pg_stat_activity` (as `a`) tells of a session, after its pid.
/// A migration's round trip starts with miglock's guard (see
/// `lock::mode`), which is cut off so the migration itself shows; a
/// waiting miglock session has only run miglock's own statements (a lock
/// attempt, a history read), which tell nothing: no query.
pub const ACTIVITY_COLUMNS: &str =
    "a.usename, a.application_name, host(a.client_addr) AS client_addr, \
     to_json(a.backend_start) #>> '{}' AS backend_start, a.state, \
     to_json(a.state_change) #>> '{}' AS state_since, \
     round(extract(epoch FROM clock_timestamp() - a.state_change)::numeric, 1) AS state_seconds, \
     left(CASE WHEN a.application_name LIKE 'miglock % waiting %' THEN NULL \
     WHEN strpos(a.query, '/*miglock:guard*/;') > 0 \
     THEN ltrim(substr(a.query, strpos(a.query, '/*miglock:guard*/;') + 18), E' \\n') \
     ELSE a.query END, 200) AS query";

/// One statement: try the key once and, in the same round trip, name this
/// session after the result (`… holding …` or `… waiting …`, so
/// `pg_stat_activity` tells a DBA who is who) and drop the waiting mark
/// once the key is ours. Its one column is `got`.
///
/// Kept lean: it is on the handover's critical path, where every planned
/// join (`pg_locks` ⋈ `pg_stat_activity` costs milliseconds to plan) would
/// delay the waiter that a release notification just woke. Who holds the
/// key is asked separately, only when it is busy.
///
/// Must follow exactly one [`LockKey::mark_waiting_sql`] on the session.
pub fn try_lock_sql(key: &LockKey, holding_name: &str, waiting_name: &str) -> String {
    let (high, low) = key.halves();
    format!(
        "WITH t AS (SELECT pg_try_advisory_lock({k}) AS got) \
         SELECT t.got, set_config('application_name', CASE WHEN t.got THEN {holding} ELSE {waiting} END, false), \
         CASE WHEN t.got THEN pg_advisory_unlock_shared({high}, {low}) END FROM t",
        k = key.key,
        holding = sql::literal(holding_name),
        waiting = sql::literal(waiting_name),
    )
}

impl LockKey {
    /// How many miglock sessions wait for the key.
    pub fn waiter_count_sql(&self) -> String {
        format!(
            "SELECT count(*) FROM ({}) w",
            self.sessions_sql(LockRole::Waiter)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_key_is_stable_and_non_negative() {
        let table = HistoryTable::default();
        let a = LockKey::derived("app", &table);
        // Pinned: changing the formula would let old and new replicas migrate at once.
        assert_eq!(a.key, LockKey::derived("app", &table).key);
        assert_eq!(
            a.key, 629_191_865_261_042_018,
            "the SQL in the doc comment gives this"
        );
        assert!(a.key >= 0);
        assert_ne!(a.key, LockKey::derived("app2", &table).key);
        assert_ne!(
            a.key,
            LockKey::derived("app", &HistoryTable::parse("other").unwrap()).key
        );
        assert!(a.source.contains("miglock:app:refinery_schema_history"));
    }

    #[test]
    fn channel_is_a_quoted_identifier() {
        assert_eq!(LockKey::explicit(42).channel(), "\"miglock_42\"");
        assert_eq!(LockKey::explicit(42).notify_sql(), "NOTIFY \"miglock_42\"");
    }
}
