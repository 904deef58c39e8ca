//! A migration in one transaction: its SQL and its history row commit
//! together, in one round trip. refinery's own runner commits them in two
//! transactions, so a crash between the two leaves a migration applied but
//! unrecorded.

use std::time::Instant;

use anyhow::anyhow;
use postgres::error::SqlState;

use super::retry::Attempts;
use super::step::{failed_line, guard_refused, reread, Step};
use super::{recovery, settings};
use crate::error::{ErrorDetail, Failure};
use crate::lock::mode::{self, LockMode};
use crate::lock::LockSession;
use crate::pg_error;
use crate::sql::Batch;

/// A script up to this size releases the key in its own round trip.
const RELEASE_WITH_MAX: usize = 1 << 20;

/// Applies `step`'s migration; with `release_after`, the same round trip
/// also releases the key (the last migration of a run).
pub fn apply(session: &mut LockSession, step: &Step) -> Result<(), Failure> {
    let Step {
        migration,
        baseline,
        options,
        lock_mode,
        applied_on,
        release_after,
        interrupt,
    } = *step;
    let table = &baseline.table;
    let mut attempts = Attempts::new(options, migration, None, Instant::now());
    let locks = migration
        .summary()
        .map(|s| s.locks.clone())
        .unwrap_or_default();
    // Built once, read from the file once: a retry sends it again.
    let mut batch = Batch::new();
    if lock_mode == LockMode::Transaction {
        // The guard's history check must see every commit made before the
        // key was granted: its snapshot must come after the lock, which a
        // repeatable read transaction would take at the guard.
        batch.push("BEGIN ISOLATION LEVEL READ COMMITTED");
        batch.push(&settings::local_sql(
            options.statement_timeout,
            &options.settings,
            &session
                .identity()
                .application_name(Some(mode::TRANSACTION_HOLDING)),
        ));
    } else {
        batch.push("BEGIN");
    }
    // Before the guard, so that `status` (which shows a holder's query
    // from just past the guard) shows the migration itself.
    let lock_timeout = attempts.local_sql().map(|sql| batch.push_patchable(&sql));
    batch.push(&mode::guard_sql(
        session.key(),
        table,
        Some(&migration.id.version),
    ));
    let script_start = batch.push_script(&reread(migration)?);
    // A migration that ends the transaction itself (a stray COMMIT) makes
    // this fail, so its row is never written outside it.
    batch.push("SAVEPOINT miglock_guard");
    // SET (not LOCAL) in a migration outlives its COMMIT: undone here,
    // committed with it, before its row (see `baseline`).
    baseline.push_restore(&mut batch);
    batch.push(&table.insert_sql(&migration.id, applied_on, migration.checksum));
    batch.push("COMMIT");
    // The last migration releases the key in the same round trip, unless
    // it is big: then every statement's result would be kept to read the
    // unlock's, and the release is a round trip of its own after it.
    let unlocked = (release_after && session.is_held() && batch.script().len() <= RELEASE_WITH_MAX)
        .then(|| session.push_release(&mut batch));
    let error = loop {
        if let (Some(at), Some(sql)) = (&lock_timeout, attempts.local_sql()) {
            batch.patch(at, &sql);
        }
        let attempt = Instant::now();
        let result = match unlocked {
            // Transaction mode: the key came and went with the transaction.
            _ if !session.is_held() => session.query(&batch).map(drop),
            Some(unlocked) => session.execute_releasing(&batch, unlocked),
            None => session.execute(&batch),
        };
        let Err(error) = result else {
            return Ok(());
        };
        // Whatever failed, the transaction must not stay open on the session
        // that still holds the key.
        session.rollback();
        // An error after the COMMIT (a cancel landing on the unlock that
        // follows it) leaves the migration applied: its row says so.
        if unlocked.is_some() && recovery::committed(session, table, migration, applied_on) {
            // The unlock after the COMMIT may have gone through too.
            session.recheck_held();
            return Ok(());
        }
        if let Some(code) = mode::guard_refusal(&error) {
            return Err(guard_refused(session, lock_mode, migration, code));
        }
        if interrupt.is_set() && error.code() == Some(&SqlState::QUERY_CANCELED) {
            return Err(Failure::interrupted());
        }
        // Not the migration's fault: the caller reconnects and looks.
        if session.is_closed() || pg_error::session_ended(&error) {
            return Err(pg_error::failed(
                &error,
                format!("the connection was lost during {migration}"),
            ));
        }
        if !attempts.is_lock_timeout(&error) {
            break error;
        }
        attempts.refused(session, &locks, attempt, interrupt)?;
    };

    let file = migration.path.display();
    let Some(db_error) = error.as_db_error() else {
        failed_line(migration, None, None);
        return Err(Failure::failed(anyhow!(
            "migration {migration} ({file}) did not complete: {}",
            pg_error::error_chain(&error)
        )));
    };
    let ErrorDetail { sqlstate, line, .. } =
        pg_error::locate(db_error, script_start, batch.script());
    failed_line(migration, None, sqlstate.as_deref());
    let (line, at) = super::failure_line::place(line, db_error, batch.script());
    let mut message = format!(
        "migration {migration} failed ({file}{at}): {}",
        pg_error::text(db_error)
    );
    if db_error.code() == &SqlState::NO_ACTIVE_SQL_TRANSACTION {
        message.push_str(
            "\nThe migration ended its own transaction (a COMMIT or ROLLBACK in the file), so its \
             history row was not written. miglock runs each migration in one transaction with its \
             row: take the transaction control out of the file. Anything the file committed itself \
             stays; check it before the next apply.",
        );
    } else if !session.is_closed() {
        message.push_str("\nIt was rolled back: nothing of it was applied.");
    }
    Err(Failure::failed(anyhow!(message)).with_detail(ErrorDetail {
        sqlstate,
        file: Some(migration.path.clone()),
        line,
    }))
}
