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
use super::tool_keys::ToolKey;
use crate::migrations::history::{AlreadyApplied, HistoryTable};
use crate::sql;

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

/// What `--lock-mode` (`MIGLOCK_LOCK_MODE`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockModeFlag {
    /// Session mode on a direct connection, transaction mode behind a
    /// pooler (see `lock::path`).
    #[default]
    Auto,
    Session,
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
/// The guard refused: the other tool's key (see `lock::tool_keys`) is
/// held, by that tool (an old replica) or by a miglock session.
pub const TOOL_KEY_HELD: &str = "MLK03";

/// The application_name a transaction-mode holder shows (set with
/// `is_local`, so it ends with the transaction): `status` tells the modes
/// apart by it, since `pg_locks` shows a transaction-level and a
/// session-level advisory lock alike.
pub const TRANSACTION_HOLDING: &str = "holding (transaction)";

/// Ends the guard's last statement, so that `status` can show a holder's
/// migration from just past it.
pub const GUARD_END: &str = "/*miglock:guard*/";

/// The first statements of a migration's transaction: take the key at
/// transaction level (at once for the session already holding it at
/// session level, since advisory locks are reentrant), then check, under
/// it, that `version` has no history row yet. Either failure raises an
/// error that names one of the codes above, so nothing after it runs and
/// the client rolls back.
///
/// Plain SQL, not a `DO` block: PL/pgSQL costs a library load on a
/// session's first block (about a millisecond, on the handover's path) and
/// tens of microseconds on each. SQL has no `RAISE`, so a refusal is the
/// cast of its message to `int` (22P02, "invalid input syntax … miglock:
/// MLK01 …"), in a `CASE` whose volatile condition keeps the planner from
/// folding the cast. Two statements: under READ COMMITTED each takes its
/// own snapshot, so the check sees every commit made before the key was
/// granted, which one statement's snapshot, taken before its lock, would not.
///
/// `tools`: the other tool's keys, taken in the same statement after the
/// own one (in transaction mode; a session that holds them all for its run
/// passes none). Whichever is refused, the error rolls back every key.
pub fn guard_sql(
    key: &LockKey,
    tools: &[ToolKey],
    already: Option<&AlreadyApplied>,
) -> Vec<String> {
    let key = key.key;
    let tools: String = tools
        .iter()
        .map(|tool| {
            format!(
                " WHEN NOT pg_try_advisory_xact_lock({k}) \
                 THEN 'miglock:{TOOL_KEY_HELD}: {name}''s lock {k} is held by another session'",
                k = tool.key,
                name = tool.tool,
            )
        })
        .collect();
    let mut statements = vec![format!(
        "SELECT (CASE WHEN NOT pg_try_advisory_xact_lock({key}) \
         THEN 'miglock:{KEY_ELSEWHERE}: the lock {key} is held by another server session'{tools} END)::int"
    )];
    if let Some(already) = already {
        // The name comes from a file's: quoted as any other text.
        let refusal = sql::literal(&format!(
            "miglock:{ALREADY_APPLIED}: {} is already in the history table",
            already.what
        ));
        statements.push(format!(
            "SELECT (CASE WHEN EXISTS ({}) THEN {refusal} END)::int",
            already.query
        ));
    }
    if let Some(last) = statements.last_mut() {
        last.push(' ');
        last.push_str(GUARD_END);
    }
    statements
}

/// The guard's verdict on a failed round trip, if it was the guard.
pub fn guard_refusal(error: &postgres::Error) -> Option<&'static str> {
    let db = error.as_db_error()?;
    if db.code() != &postgres::error::SqlState::INVALID_TEXT_REPRESENTATION {
        return None;
    }
    [KEY_ELSEWHERE, ALREADY_APPLIED, TOOL_KEY_HELD]
        .into_iter()
        .find(|code| db.message().contains(&format!("\"miglock:{code}:")))
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
    fn the_guard_is_two_statements_each_naming_its_code() {
        let already = AlreadyApplied {
            what: "version 3".into(),
            query: "SELECT 1 FROM t WHERE version = 3".into(),
        };
        let sql = guard_sql(&LockKey::explicit(42), &[], Some(&already));
        assert_eq!(sql.len(), 2);
        assert!(sql[0].contains("pg_try_advisory_xact_lock(42)"), "{sql:?}");
        assert!(sql[0].contains("'miglock:MLK01:"), "{sql:?}");
        assert!(
            sql[1].contains("EXISTS (SELECT 1 FROM t WHERE version = 3)")
                && sql[1].contains("E'miglock:MLK02: version 3 is already"),
            "{sql:?}"
        );
        assert!(sql[1].ends_with(GUARD_END), "{sql:?}");
        let lock_only = guard_sql(&LockKey::explicit(42), &[], None);
        assert_eq!(lock_only.len(), 1);
        assert!(lock_only[0].ends_with(GUARD_END), "{lock_only:?}");
        let goose = ToolKey {
            key: 4_097_083_626,
            tool: "goose",
            source: String::new(),
        };
        let with_tool = guard_sql(&LockKey::explicit(42), &[goose], None);
        assert!(
            with_tool[0].contains(
                "THEN 'miglock:MLK01: the lock 42 is held by another server session' \
                 WHEN NOT pg_try_advisory_xact_lock(4097083626) THEN 'miglock:MLK03: goose''s lock"
            ),
            "{with_tool:?}"
        );
    }
}
