//! `--lock-mode`: what the advisory lock is tied to, and the guard every
//! migration's transaction starts with.
//!
//! A transaction pooler (PgBouncer `pool_mode = transaction`, RDS Proxy
//! once pinning ends) hands each transaction to whichever server session
//! is free. A session advisory lock then stays on a server session that
//! other clients' transactions run on (advisory locks are reentrant for
//! their session, so all of those "hold" it too), and the unlock may run
//! on another one and return false. A transaction-level advisory lock
//! lives and dies with the transaction that took it, which a pooler
//! never splits.

use super::key::LockKey;
use crate::migrations::history::HistoryTable;
use crate::migrations::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// `pg_try_advisory_lock` on one connection for the whole run, waiters
    /// woken by NOTIFY (needs a direct connection or session pooling).
    #[default]
    Session,
    /// `pg_try_advisory_xact_lock` inside each migration's transaction;
    /// nothing is kept on the server session between transactions.
    Transaction,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Session => "session",
            LockMode::Transaction => "transaction",
        }
    }

    /// What the lock's log lines add after the key: nothing for the
    /// session lock (the usual one), ` mode=transaction` otherwise.
    pub fn log_suffix(self) -> &'static str {
        match self {
            LockMode::Session => "",
            LockMode::Transaction => " mode=transaction",
        }
    }
}

/// The guard refused: the key is held by another server session. In
/// session mode that session should have been this run's own, so a pooler
/// put this transaction elsewhere.
pub const KEY_ELSEWHERE: &str = "MLK01";
/// The guard refused: this version's history row is already there, read
/// under the key.
pub const ALREADY_APPLIED: &str = "MLK02";

/// The application_name a transaction-mode holder shows (set with
/// `is_local`, so it ends with the transaction): `status` tells the modes
/// apart by it, since `pg_locks` shows a transaction-level and a
/// session-level advisory lock alike.
pub const TRANSACTION_HOLDING: &str = "holding (transaction)";

/// The first statement of a migration's transaction: takes the key at
/// transaction level (at once for the session already holding it at
/// session level, since advisory locks are reentrant), then checks,
/// under it, that `version` has no history row yet. Either failure raises
/// one of the SQLSTATEs above, so nothing after it runs and the client
/// rolls back. Under READ COMMITTED the check's snapshot is taken after
/// the lock, so it sees every earlier holder's commit.
pub fn guard_sql(key: &LockKey, table: &HistoryTable, version: Option<&Version>) -> String {
    let applied = version.map_or(String::new(), |version| {
        format!(
            " IF EXISTS (SELECT 1 FROM {table} WHERE version = {version}) THEN \
             RAISE EXCEPTION 'miglock: version {version} is already in the history table' \
             USING ERRCODE = '{ALREADY_APPLIED}'; END IF;",
            table = table.sql_name(),
        )
    });
    format!(
        "DO $miglock$BEGIN IF NOT pg_try_advisory_xact_lock({key}) THEN \
         RAISE EXCEPTION 'miglock: the lock {key} is held by another server session' \
         USING ERRCODE = '{KEY_ELSEWHERE}'; END IF;{applied} END$miglock$",
        key = key.key,
    )
}

/// The guard's verdict on a failed round trip, if it was the guard.
pub fn guard_refusal(error: &postgres::Error) -> Option<&'static str> {
    match error.code().map(|c| c.code()) {
        Some(KEY_ELSEWHERE) => Some(KEY_ELSEWHERE),
        Some(ALREADY_APPLIED) => Some(ALREADY_APPLIED),
        _ => None,
    }
}

/// `baseline` and `repair` write history rows under the session lock
/// whatever `--lock-mode` says (they run rarely, by hand): say so when
/// transaction mode is asked for, since through a transaction pooler that
/// lock does not protect them.
pub fn warn_session_only(command: &str, mode: LockMode, key: &LockKey) {
    if mode == LockMode::Transaction {
        log::warn!(
            "{command} takes the session-level lock {key} whatever --lock-mode says: run it over a direct \
             connection (or a session-pooling port), not through a transaction pooler"
        );
    }
}

/// What a session-mode run behind a transaction pooler says when its
/// unlock ran on another server session: the key (and waiting marks) stay
/// on pooled server sessions until they close, which the pooler may never
/// do on its own.
pub fn left_behind(key: &LockKey, table: &HistoryTable) -> String {
    format!(
        "LOCK_RELEASED key={key}: POOLER_DETECTED, pg_advisory_unlock returned false: the unlock ran on \
         another pooled server session than the lock, which may still hold it (and waiting marks). \
         Clear it with `miglock unlock --table {table} --lock-key {key}` against a direct DATABASE_URL \
         (not the pooler), or with `RECONNECT <db>` (or `KILL <db>`) on the PgBouncer admin console."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_raises_its_own_sqlstates() {
        let sql = guard_sql(
            &LockKey::explicit(42),
            &HistoryTable::default(),
            Some(&3.into()),
        );
        assert!(sql.starts_with("DO $miglock$"), "{sql}");
        assert!(sql.contains("pg_try_advisory_xact_lock(42)"), "{sql}");
        assert!(sql.contains("ERRCODE = 'MLK01'") && sql.contains("ERRCODE = 'MLK02'"));
        assert!(sql.contains("WHERE version = 3"), "{sql}");
        let lock_only = guard_sql(&LockKey::explicit(42), &HistoryTable::default(), None);
        assert!(!lock_only.contains("MLK02"), "{lock_only}");
    }
}
