//! Migrations that cannot run in a transaction (`CREATE INDEX
//! CONCURRENTLY`, …), run statement by statement on the session that holds
//! the key, then their history row; and the INVALID indexes a failed
//! concurrent build leaves behind.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::anyhow;
use postgres::error::SqlState;

use super::indexes;
use super::retry::Attempts;
use super::step::{failed_line, guard_refused, reread, Step};
use crate::error::{ErrorDetail, Failure};
use crate::lock::mode;
use crate::lock::LockSession;
use crate::migrations::split::{classify, Execution, Planned};
use crate::migrations::LocalMigration;
use crate::outcome::Outcome;
use crate::pg_error;
use crate::sql::Batch;
use crate::time::millis;

/// A statement's place in its file: `index` of `total`, from 0.
#[derive(Clone, Copy)]
struct Position {
    index: usize,
    total: usize,
}

/// The statements of a non-transactional migration, one round trip each
/// in autocommit, then its history row (and, for the last migration, the
/// key's release) in one more.
pub fn apply(session: &mut LockSession, step: &Step) -> Result<(), Failure> {
    let Step {
        migration,
        baseline,
        lock_mode,
        applied_on,
        release_after,
        interrupt,
        ..
    } = *step;
    let script = reread(migration)?;
    let classified = classify(&script);
    let Execution::NoTransaction { reason, mixed } = &classified.execution else {
        return Err(Failure::failed(anyhow!("{migration} is transactional")));
    };
    // Its statements commit one by one, so no transaction can carry the
    // guard; a lone round trip at least tells whether this connection still
    // reaches the session that holds the key.
    if session.is_held() {
        let already = baseline.table.already_applied(migration);
        let tools = session.guard_tool_keys();
        let guard = mode::guard_sql(session.key(), &tools, already.as_ref()).join(";\n");
        // Any other error is met, and reported, by the first statement.
        if let Err(error) = session.client().batch_execute(&guard) {
            if let Some(code) = mode::guard_refusal(&error) {
                return Err(guard_refused(session, lock_mode, migration, code));
            }
        }
    }
    log::info!(
        "MIGRATION_NO_TRANSACTION version={} name={} reason={reason}{}",
        migration.id.version,
        migration.id.name,
        if *mixed { " mixed=true" } else { "" }
    );
    if *mixed {
        log::warn!(
            "{migration} mixes statements PostgreSQL refuses in a transaction with others: it runs \
             statement by statement and is not atomic"
        );
    }
    let started = Instant::now();
    let statements = &classified.statements;
    let total = statements.len();
    // Inside the file's own BEGIN … COMMIT (a file with the marker).
    let mut in_transaction = false;
    for (i, statement) in statements.iter().enumerate() {
        if interrupt.is_set() {
            return Err(interrupted(migration, i, total));
        }
        run_statement(
            session,
            step,
            statement.sql(&script),
            statement,
            Position { index: i, total },
            in_transaction,
            started,
        )?;
        match statement.control {
            Some("BEGIN" | "START TRANSACTION") => in_transaction = true,
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") if statement.chains => {}
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT" | "PREPARE TRANSACTION") => {
                in_transaction = false;
            }
            _ => {}
        }
    }
    let mut batch = Batch::new();
    batch.push("BEGIN");
    baseline.push_restore(&mut batch);
    batch.push(&baseline.table.record_sql(migration, applied_on));
    if release_after {
        session.push_notify(&mut batch);
    }
    batch.push("COMMIT");
    let result = if release_after {
        let unlocked = session.push_unlock(&mut batch);
        session.execute_releasing(&batch, unlocked)
    } else {
        session.execute(&batch)
    };
    result.map_err(|e| {
        // Its transaction must not stay open on the session holding the key.
        session.rollback();
        pg_error::failed(
            &e,
            format!(
                "{migration}: all {total} statements committed, but its history row could not be \
                 written; the next apply runs it again"
            ),
        )
    })
}

/// One statement, in autocommit unless the file opened its own
/// transaction. Its table locks come on the same schedule as a whole
/// migration's in a transaction (see `retry`), with the migration's one
/// budget; a concurrent build or drop, whose waits stall no traffic and
/// whose refusal throws its work away, gets what is left of the budget at
/// once.
fn run_statement(
    session: &mut LockSession,
    step: &Step,
    sql: &str,
    statement: &Planned,
    position: Position,
    in_transaction: bool,
    started: Instant,
) -> Result<(), Failure> {
    let Step {
        migration,
        options,
        interrupt,
        ..
    } = *step;
    let Position { index, total } = position;
    let mut attempts = Attempts::new(options, migration, Some(index + 1), started);
    let concurrent = is_concurrent(sql);
    if let Some(build) = &statement.index_build {
        indexes::clear_leftover(session, build, &attempts)?;
    }
    loop {
        let timeout = if concurrent {
            attempts.budget_timeout()
        } else {
            attempts.timeout()
        };
        if let Some(timeout) = timeout {
            // SET LOCAL needs a transaction; the session's value bounds this
            // statement, and the restore after the file undoes it.
            session
                .client()
                .batch_execute(&format!("SET lock_timeout = {}", millis(timeout).max(1)))
                .map_err(|e| pg_error::failed(&e, "cannot set lock_timeout"))?;
        }
        let invalid_before = match statement.index_build {
            Some(_) => indexes::invalid(session).unwrap_or_default(),
            None => BTreeSet::new(),
        };
        let attempt = Instant::now();
        let Err(error) = session.client().batch_execute(sql) else {
            if let Some(build) = &statement.index_build {
                indexes::check_valid(session, build, migration, index + 1)?;
            }
            return Ok(());
        };
        // PostgreSQL keeps the INVALID index of a failed concurrent build:
        // it would make the re-run's CREATE INDEX fail (or, with IF NOT
        // EXISTS, skip a broken index). Only indexes this statement left.
        if let Some(build) = &statement.index_build {
            if !session.is_closed() {
                indexes::drop_new_invalid(session, build, &invalid_before, interrupt.is_set());
            }
        }
        // psql's exit on error would end the file's own transaction with
        // the session; here the session lives on, so roll it back.
        if in_transaction && !session.is_closed() {
            session.rollback();
        }
        if interrupt.is_set() && error.code() == Some(&SqlState::QUERY_CANCELED) {
            return Err(interrupted(migration, index, total));
        }
        // Inside the file's own transaction, the statements before this one
        // went with the rollback: retrying this one alone would be wrong.
        if !in_transaction && attempts.is_lock_timeout(&error) {
            if concurrent {
                return Err(attempts.exhausted(session, &statement.locks, attempt));
            }
            attempts.refused(session, &statement.locks, attempt, interrupt)?;
            continue;
        }
        let mut failure = statement_failed(migration, sql, statement, position, &error);
        if in_transaction {
            failure.error = anyhow!(
                "{}\nThe statements since the file's own BEGIN were rolled back with its transaction.",
                failure.message()
            );
        }
        return Err(failure);
    }
}

/// A concurrent build or drop (`CREATE INDEX CONCURRENTLY`, `REINDEX …
/// CONCURRENTLY`, `DROP INDEX CONCURRENTLY`, …).
fn is_concurrent(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(6)
        .map(str::to_ascii_uppercase)
        .collect();
    words.iter().any(|w| w == "CONCURRENTLY")
}

/// What committed before statement `index` (from 0) of `total`.
fn committed_before(index: usize, total: usize) -> String {
    match index {
        0 => format!("no statement of {total} committed"),
        1 => format!("statement 1 of {total} committed; nothing after"),
        n => format!("statements 1–{n} of {total} committed; nothing after"),
    }
}

fn interrupted(migration: &LocalMigration, index: usize, total: usize) -> Failure {
    Failure::new(
        Outcome::Interrupted,
        anyhow!(
            "interrupted by a signal during {migration}, which runs without a transaction: {}. No \
             history row was written; the next apply runs the whole file again.",
            committed_before(index, total)
        ),
    )
}

fn statement_failed(
    migration: &LocalMigration,
    sql: &str,
    statement: &Planned,
    position: Position,
    error: &postgres::Error,
) -> Failure {
    let Position { index, total } = position;
    let file = migration.path.display();
    let number = index + 1;
    let Some(db_error) = error.as_db_error() else {
        failed_line(migration, Some(number), None);
        return Failure::failed(anyhow!(
            "migration {migration} ({file}) did not complete statement {number} of {total} (line {}): \
             {}\nIt runs without a transaction: {}, as far as this run knows.",
            statement.line,
            pg_error::error_chain(error),
            committed_before(index, total)
        ));
    };
    let ErrorDetail { sqlstate, line, .. } = pg_error::locate(db_error, 0, sql);
    let line = statement.line + line.map_or(0, |l| l - 1);
    failed_line(migration, Some(number), sqlstate.as_deref());
    let message = format!(
        "migration {migration} failed at statement {number} of {total} ({file}, line {line}): {}\n\
         It runs without a transaction: {}. No history row was written: fix the cause and apply \
         again, which runs the whole file again (write such files to be re-runnable, e.g. with \
         IF NOT EXISTS).",
        pg_error::text(db_error),
        committed_before(index, total)
    );
    Failure::failed(anyhow!(message)).with_detail(ErrorDetail {
        sqlstate,
        file: Some(migration.path.clone()),
        line: Some(line),
    })
}
