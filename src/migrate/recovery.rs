//! After a migration's round trip failed: did it commit, who was in its
//! way, and — after a lost connection — whether the run can carry on.

use anyhow::anyhow;

use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::lock::{LockMode, LockSession};
use crate::migrations::history::HistoryTable;
use crate::migrations::LocalMigration;
use crate::sql::Batch;

/// Whether the history holds this run's row for `migration` (its
/// `applied_on` tells it from a row another replica wrote).
pub fn committed(
    session: &mut LockSession,
    table: &HistoryTable,
    migration: &LocalMigration,
    applied_on: &str,
) -> bool {
    let mut batch = Batch::new();
    let row = batch.push(&table.committed_sql(migration, applied_on));
    session
        .query(&batch)
        .is_ok_and(|results| !results.rows(row).is_empty())
}

/// A migration whose connection went away.
pub struct Lost<'a> {
    pub migration: &'a LocalMigration,
    /// This run's `applied_on` for it, to find its row.
    pub applied_on: String,
    pub failure: Failure,
}

/// The connection died during a migration: connect again and read the
/// history to learn what committed. A transactional migration committed
/// with its row or not at all, so the run can carry on; a non-transactional
/// one without its row may have committed part of its statements, which
/// nobody can tell from here (exit 1). No connection within the connect
/// timeout: exit 5. `true` when the migration's own commit went through
/// before the loss.
///
/// Carrying on is right after a restart or a failover: a new server
/// (another postmaster start time than `started_before`) ended every
/// session. With the same server still up, the session was ended on
/// purpose (a DBA's `pg_terminate_backend`, `miglock unlock --force`) or
/// the network failed, and rust-postgres does not always pass on the
/// server's 57P01 that would tell them apart: running the migration again
/// at once could defeat a DBA, so the run stops and says so. Unless its own
/// commit went through before the session ended.
pub fn after_connection_loss(
    session: &mut LockSession,
    lost: &Lost,
    started_before: Option<&str>,
    lock_mode: LockMode,
    interrupt: &Interrupt,
) -> Result<bool, Failure> {
    let Lost {
        migration,
        applied_on,
        failure,
    } = lost;
    let message = failure.message();
    let history = session
        .reconnect_now(
            &format!(
                "the connection was lost during {migration} ({})",
                failure
                    .detail
                    .sqlstate
                    .as_deref()
                    .map_or("no SQLSTATE".to_string(), |code| format!("SQLSTATE {code}"))
            ),
            interrupt,
        )
        .and_then(|()| session.read_history())
        .map_err(|reconnect| {
            if interrupt.is_set() {
                return Failure::interrupted();
            }
            Failure::unavailable(anyhow!(
                "{message}\nReconnecting failed: {}. Each migration commits with its history row, so \
                 {migration} is either applied and recorded or not at all; `miglock status` tells which, \
                 and the next apply carries on from there.",
                reconnect.message()
            ))
        })?;
    let row = history
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.id.version == migration.id.version);
    let ours = row
        .as_ref()
        .is_some_and(|row| row.applied_on == *applied_on);
    if !ours && started_before.is_some() && session.server_start_time().as_deref() == started_before
    {
        return Err(lost_while_server_stayed_up(failure, migration, &message));
    }
    // The row says who applied it: a waiter may have taken over and
    // applied the migration since, with its own applied_on.
    let what = match row {
        Some(_) if ours => "it had committed, with its history row, before the connection was lost",
        Some(_) => "this run's attempt was rolled back; another replica has applied it since",
        None if migration.no_transaction().is_some() => {
            return Err(Failure::failed(anyhow!(
                "{message}\nThe connection was lost during {migration}, which runs without a transaction: \
                 its history row was not written, and statements before the loss may have committed. \
                 miglock cannot tell which; check the database, then apply again (it runs the whole \
                 file again, so write such files to be re-runnable)."
            )));
        }
        None => "the server rolled it back",
    };
    let under = match lock_mode {
        LockMode::Session => " under the lock",
        LockMode::Transaction => "",
    };
    log::warn!(
        "CONNECT_RETRY reconnected after losing the connection during {migration}: {what}; \
         carrying on{under}"
    );
    Ok(ours)
}

/// The connection was lost during `migration` while the server stayed up
/// (the same postmaster start time after reconnecting): an administrator
/// ended the session on purpose (`pg_terminate_backend`, `miglock unlock
/// --force`), or the network failed. rust-postgres does not always pass on
/// the server's 57P01 that would tell them apart, and running the migration
/// again at once could defeat the administrator: the run stops (exit 1).
fn lost_while_server_stayed_up(
    failure: &Failure,
    migration: &LocalMigration,
    lost: &str,
) -> Failure {
    super::step::failed_line(migration, None, failure.detail.sqlstate.as_deref());
    let how = if failure.detail.sqlstate.as_deref() == Some("57P01") {
        "an administrator ended this session (pg_terminate_backend, as `miglock unlock --force` does)"
    } else {
        "either an administrator ended this session (pg_terminate_backend, as `miglock unlock \
         --force` does) or the network to the server failed; miglock cannot tell which"
    };
    Failure::failed(anyhow!(
        "{lost}\nThe connection was lost during {migration} while the server stayed up: {how}. \
         So this run stops here: its attempt at {migration} was rolled back (`miglock status` \
         shows whether another replica has applied it since), and the next apply carries on."
    ))
    .with_detail(failure.detail.clone())
}
