//! A migration in one transaction: its SQL and its history row commit
//! together, in one round trip. refinery's own runner commits them in two
//! transactions, so a crash between the two leaves a migration applied but
//! unrecorded.

use std::ops::Range;
use std::time::Instant;

use anyhow::anyhow;
use postgres::error::{DbError, SqlState};

use super::retry::Attempts;
use super::step::{failed_line, guard_refused, reread, Step};
use super::{recovery, settings};
use crate::error::{ErrorDetail, Failure};
use crate::lock::mode::{self, LockMode};
use crate::lock::LockSession;
use crate::migrations::split;
use crate::pg_error;
use crate::sql::{Batch, Patch, Slot};

/// A script up to this size is sent whole, with the statements around it
/// (and, the last of a run, the key's release) in one round trip; a bigger
/// one in parts of about this size, cut between statements.
const WHOLE_MAX: usize = 1 << 20;

/// Applies `step`'s migration; with `release_after`, the same round trip
/// also releases the key (the last migration of a run).
pub fn apply(session: &mut LockSession, step: &Step) -> Result<(), Failure> {
    let Step {
        migration,
        lock_mode,
        applied_on,
        release_after,
        interrupt,
        options,
        baseline,
    } = *step;
    let table = &baseline.table;
    let mut attempts = Attempts::new(options, migration, None, Instant::now());
    let locks = migration
        .summary()
        .map(|s| s.locks.clone())
        .unwrap_or_default();
    // Built once, read from the file once: a retry sends it again.
    let script = reread(migration)?;
    let mut head = Batch::new();
    let lock_timeout = push_head(&mut head, session, step, &attempts);
    let mut message = if script.len() <= WHOLE_MAX {
        // One round trip: the head, the script and the tail in one query.
        let script_start = head.push_script(&script);
        drop(script);
        let mut batch = head;
        push_tail(&mut batch, step);
        // The last migration releases the key in the same round trip.
        let releasing = release_after && session.is_held();
        if releasing {
            session.push_notify(&mut batch);
        }
        batch.push("COMMIT");
        let unlocked = releasing.then(|| session.push_unlock(&mut batch));
        Message::Whole {
            batch,
            script_start,
            unlocked,
        }
    } else {
        // In parts, so that what is in flight is a part, not three copies
        // of the file (the query, the driver's message and its write
        // buffer); the key is released in a round trip of its own after.
        let mut tail = Batch::new();
        push_tail(&mut tail, step);
        tail.push("COMMIT");
        let parts = parts(&script);
        Message::Parts {
            head,
            script,
            parts,
            tail,
        }
    };
    let error = loop {
        if let (Some(at), Some(sql)) = (&lock_timeout, attempts.local_sql()) {
            message.patch(at, &sql);
        }
        let attempt = Instant::now();
        let (result, unlocked) = match &message {
            Message::Whole {
                batch, unlocked, ..
            } => (
                match unlocked {
                    // Transaction mode: the key came and went with the
                    // transaction.
                    _ if !session.is_held() => session.query(batch).map(drop),
                    Some(unlocked) => session.execute_releasing(batch, *unlocked),
                    None => session.execute(batch),
                }
                .map_err(Failed::from),
                unlocked.is_some(),
            ),
            Message::Parts {
                head,
                script,
                parts,
                tail,
            } => (send_parts(session, head, script, parts, tail), false),
        };
        let Err(error) = result else {
            return Ok(());
        };
        // Whatever failed, the transaction must not stay open on the session
        // that still holds the key.
        session.rollback();
        // An error after the COMMIT (a cancel landing on the unlock that
        // follows it) leaves the migration applied: its row says so.
        if unlocked && recovery::committed(session, table, migration, applied_on) {
            // The unlock after the COMMIT may have gone through too.
            session.recheck_held();
            return Ok(());
        }
        if let Some(code) = mode::guard_refusal(&error.error) {
            return Err(guard_refused(session, lock_mode, migration, code));
        }
        if interrupt.is_set() && error.error.code() == Some(&SqlState::QUERY_CANCELED) {
            return Err(Failure::interrupted());
        }
        // Not the migration's fault: the caller reconnects and looks.
        if session.is_closed() || pg_error::session_ended(&error.error) {
            return Err(pg_error::failed(
                &error.error,
                format!("the connection was lost during {migration}"),
            ));
        }
        if !attempts.is_lock_timeout(&error.error) {
            break error;
        }
        attempts.refused(session, &locks, attempt, interrupt)?;
    };

    let file = migration.path.display();
    let Some(db_error) = error.error.as_db_error() else {
        failed_line(migration, None, None);
        return Err(Failure::failed(anyhow!(
            "migration {migration} ({file}) did not complete: {}",
            pg_error::error_chain(&error.error)
        )));
    };
    let ErrorDetail { sqlstate, line, .. } = message.locate(db_error, error.part);
    failed_line(migration, None, sqlstate.as_deref());
    let (line, at) = super::failure_line::place(line, db_error, message.script());
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

/// The transaction's opening: its settings, the attempt's lock timeout
/// (returned, to patch before each attempt) and the guard.
fn push_head(
    batch: &mut Batch,
    session: &LockSession,
    step: &Step,
    attempts: &Attempts,
) -> Option<Patch> {
    if step.lock_mode == LockMode::Transaction {
        // The guard's history check must see every commit made before the
        // key was granted: its snapshot must come after the lock, which a
        // repeatable read transaction would take at the guard.
        batch.push("BEGIN ISOLATION LEVEL READ COMMITTED");
        batch.push(&settings::local_sql(
            step.options.statement_timeout,
            &step.options.settings,
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
    let already = step.baseline.table.already_applied(step.migration);
    for statement in mode::guard_sql(session.key(), &session.guard_tool_keys(), already.as_ref()) {
        batch.push(&statement);
    }
    lock_timeout
}

/// What follows the script in its transaction, up to its COMMIT.
fn push_tail(batch: &mut Batch, step: &Step) {
    // A migration that ends the transaction itself (a stray COMMIT) makes
    // this fail, so its row is never written outside it.
    batch.push("SAVEPOINT miglock_guard");
    // SET (not LOCAL) in a migration outlives its COMMIT: undone here,
    // committed with it, before its row (see `baseline`).
    step.baseline.push_restore(batch);
    batch.push(
        &step
            .baseline
            .table
            .record_sql(step.migration, step.applied_on),
    );
}

/// A migration's transaction as it is sent.
enum Message {
    Whole {
        batch: Batch,
        /// How many characters precede the script in the batch.
        script_start: usize,
        /// The key's release, after the COMMIT.
        unlocked: Option<Slot>,
    },
    Parts {
        head: Batch,
        script: String,
        parts: Vec<Part>,
        tail: Batch,
    },
}

/// A run of whole statements of a big script.
struct Part {
    span: Range<usize>,
    /// The line of the file it starts on, from 1.
    line: usize,
}

/// What failed, and in which part of a [`Message::Parts`] (none: in the
/// head or the tail).
struct Failed {
    error: postgres::Error,
    part: Option<usize>,
}

impl From<postgres::Error> for Failed {
    fn from(error: postgres::Error) -> Failed {
        Failed { error, part: None }
    }
}

impl Message {
    /// The migration's text.
    fn script(&self) -> &str {
        match self {
            Message::Whole { batch, .. } => batch.script(),
            Message::Parts { script, .. } => script,
        }
    }

    fn patch(&mut self, at: &Patch, sql: &str) {
        match self {
            Message::Whole { batch, .. } | Message::Parts { head: batch, .. } => {
                batch.patch(at, sql);
            }
        }
    }

    /// The error's SQLSTATE and its line in the file.
    fn locate(&self, db_error: &DbError, part: Option<usize>) -> ErrorDetail {
        match self {
            Message::Whole {
                batch,
                script_start,
                ..
            } => pg_error::locate(db_error, *script_start, batch.script()),
            Message::Parts { script, parts, .. } => {
                let Some(part) = part.and_then(|i| parts.get(i)) else {
                    // In the statements around the script.
                    return ErrorDetail {
                        sqlstate: Some(db_error.code().code().to_string()),
                        ..ErrorDetail::default()
                    };
                };
                let mut detail = pg_error::locate(db_error, 0, &script[part.span.clone()]);
                detail.line = detail.line.map(|line| line + part.line - 1);
                detail
            }
        }
    }
}

/// Cuts `script` into runs of whole statements of at least [`WHOLE_MAX`]
/// bytes (the last one shorter): one statement is never cut, however long.
fn parts(script: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut line = 1;
    for statement in split::statements(script) {
        if statement.start - start >= WHOLE_MAX {
            parts.push(Part {
                span: start..statement.start,
                line,
            });
            start = statement.start;
            line = statement.line;
        }
    }
    parts.push(Part {
        span: start..script.len(),
        line,
    });
    parts
}

/// Sends a big migration's transaction: its head, its parts one query at
/// a time, its tail.
fn send_parts(
    session: &mut LockSession,
    head: &Batch,
    script: &str,
    parts: &[Part],
    tail: &Batch,
) -> Result<(), Failed> {
    if session.is_held() {
        session.execute(head)?;
    } else {
        session.query(head)?;
    }
    for (i, part) in parts.iter().enumerate() {
        session
            .client()
            .batch_execute(&script[part.span.clone()])
            .map_err(|error| Failed {
                error,
                part: Some(i),
            })?;
    }
    if session.is_held() {
        session.execute(tail)?;
    } else {
        session.query(tail)?;
    }
    Ok(())
}
