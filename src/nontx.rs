//! Migrations that cannot run in a transaction, run statement by statement
//! on the session that holds the key, and what keeps one migration's
//! session state from reaching the next one or miglock's own statements.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::anyhow;
use postgres::error::SqlState;
use postgres::Client;

use crate::config::ApplyConfig;
use crate::error::{ErrorDetail, Failure};
use crate::history::HistoryTable;
use crate::interrupt::Interrupt;
use crate::lock::LockSession;
use crate::migrations::{LocalMigration, Plan, Problem, ProblemKind, Problems};
use crate::outcome::Outcome;
use crate::pg_error;
use crate::split::{self, Mode, Statement};
use crate::sql::{self, Batch};

/// One migration to apply and what every step of it needs.
pub struct Step<'a> {
    pub migration: &'a LocalMigration,
    pub isolation: &'a Isolation,
    pub config: &'a ApplyConfig,
    /// Also what tells this run's history row from another replica's.
    pub applied_on: &'a str,
    /// The last migration of the run: its round trip also releases the key.
    pub release_after: bool,
    pub interrupt: &'a Interrupt,
}

/// A statement's place in its file: `index` of `total`, from 0.
#[derive(Clone, Copy)]
struct Position {
    index: usize,
    total: usize,
}

/// What every migration of a run shares: the history table, named with
/// the schema it was resolved to before any migration could change
/// `search_path`, and the statements that put the session back to
/// miglock's own settings after each migration.
#[derive(Debug, Clone)]
pub struct Isolation {
    pub table: HistoryTable,
    restore: Vec<String>,
}

impl Isolation {
    /// Resolves the history table's schema and records miglock's session
    /// settings, in one round trip, before the first migration.
    ///
    /// A migration may `SET search_path` (pg_dump's header empties it), `SET
    /// ROLE`, or change any setting for the session. psql would start every
    /// file on a fresh session; here each migration starts on the settings
    /// the session had before the first one. `RESET ALL` would also undo
    /// miglock's own (`statement_timeout`, keepalives, its
    /// `application_name`, which `status` reads), so the session's own
    /// values are recorded instead and set back, and whatever else a
    /// migration set goes back to its default.
    pub fn resolve(session: &mut LockSession, table: &HistoryTable) -> Result<Isolation, Failure> {
        let mut batch = Batch::new();
        let schema = batch.push(&table.schema_sql());
        let role = batch.push("SELECT current_setting('role')");
        let settings = batch.push(
            "SELECT name, setting FROM pg_settings WHERE source = 'session' \
             AND context IN ('user', 'superuser') AND name NOT LIKE 'transaction\\_%'",
        );
        let results = batch.query(session.client()).map_err(|e| {
            pg_error::failed(&e, format!("cannot resolve the history table {table}"))
        })?;
        let Some(schema) = results.value(schema) else {
            return Err(crate::history::no_schema(table));
        };
        let values: Vec<String> = results
            .rows(settings)
            .iter()
            .filter_map(|row| Some((row.get(0)?, row.get(1)?)))
            .map(|(name, value)| format!("({}, {})", sql::literal(name), sql::literal(value)))
            .collect();
        let mut restore = Vec::new();
        // The role first: what follows may need its privileges.
        if let Some(role) = results.value(role) {
            restore.push(format!(
                "SELECT set_config('role', {}, false)",
                sql::literal(role)
            ));
        }
        restore.push(format!(
            "SELECT count(set_config(p.name, coalesce(s.setting, p.reset_val), false)) \
             FROM pg_settings p LEFT JOIN (VALUES (NULL::text, NULL::text){}{}) AS s(name, setting) \
             ON s.name = p.name \
             WHERE (p.source = 'session' OR s.name IS NOT NULL) AND p.context IN ('user', 'superuser') \
             AND p.name NOT LIKE 'transaction\\_%' \
             AND p.setting IS DISTINCT FROM coalesce(s.setting, p.reset_val)",
            if values.is_empty() { "" } else { ", " },
            values.join(", ")
        ));
        Ok(Isolation {
            table: table.in_schema(schema),
            restore,
        })
    }

    /// No settings to put back: for `--lock-mode transaction`, where
    /// consecutive transactions may run on different server sessions.
    pub fn without_restore(table: HistoryTable) -> Isolation {
        Isolation {
            table,
            restore: Vec::new(),
        }
    }

    /// Adds the statements that put the session back (after a migration).
    pub fn push_restore(&self, batch: &mut Batch) {
        for statement in &self.restore {
            batch.push(statement);
        }
    }
}

/// The statements of a non-transactional migration, one round trip each
/// in autocommit, then its history row (and, for the last migration, the
/// key's release) in one more.
pub fn apply_statements(
    session: &mut LockSession,
    step: &Step,
    mode: &Mode,
    statements: &[Statement],
) -> Result<(), Failure> {
    let Step {
        migration,
        isolation,
        config,
        applied_on,
        release_after,
        interrupt,
    } = *step;
    let Mode::NoTransaction { reason, mixed } = mode else {
        return Err(Failure::failed(anyhow!("{migration} is transactional")));
    };
    log::info!(
        "MIGRATION_NO_TRANSACTION version={} name={} reason={reason}{}",
        migration.version,
        migration.name,
        if *mixed { " mixed=true" } else { "" }
    );
    if *mixed {
        log::warn!(
            "{migration} mixes statements PostgreSQL refuses in a transaction with others: it runs \
             statement by statement and is not atomic"
        );
    }
    // SET LOCAL needs a transaction; the session's lock_timeout bounds each
    // statement instead, and the restore after the migration undoes it.
    if let Some(timeout) = config.ddl_lock_timeout {
        session
            .client()
            .batch_execute(&format!(
                "SET lock_timeout = {}",
                timeout.as_millis().max(1)
            ))
            .map_err(|e| pg_error::failed(&e, "cannot set lock_timeout"))?;
    }
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
            statement,
            Position { index: i, total },
            in_transaction,
        )?;
        match statement.transaction_control() {
            Some("BEGIN" | "START TRANSACTION") => in_transaction = true,
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") if statement.chains() => {}
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT" | "PREPARE TRANSACTION") => {
                in_transaction = false;
            }
            _ => {}
        }
    }
    let mut batch = Batch::new();
    batch.push(&isolation.table.insert_sql(
        migration.version,
        &migration.name,
        applied_on,
        migration.checksum,
    ));
    isolation.push_restore(&mut batch);
    let result = if release_after {
        session.execute_then_release(batch)
    } else {
        session.execute(&batch)
    };
    result.map_err(|e| {
        pg_error::failed(
            &e,
            format!(
                "{migration}: all {total} statements committed, but its history row could not be \
                 written; the next apply runs it again"
            ),
        )
    })
}

/// One statement, retried after a DDL lock timeout as a whole migration
/// is in a transaction.
fn run_statement(
    session: &mut LockSession,
    step: &Step,
    statement: &Statement,
    position: Position,
    in_transaction: bool,
) -> Result<(), Failure> {
    let Step {
        migration,
        config,
        interrupt,
        ..
    } = *step;
    let Position { index, total } = position;
    let mut retries = 0;
    let mut pause = Duration::from_millis(500);
    let builds_index = statement.builds_index_concurrently();
    loop {
        let invalid_before = if builds_index {
            invalid_indexes(session.client()).unwrap_or_default()
        } else {
            BTreeSet::new()
        };
        let Err(error) = session.client().batch_execute(statement.sql) else {
            return Ok(());
        };
        // PostgreSQL keeps the INVALID index of a failed concurrent build:
        // it would make the re-run's CREATE INDEX fail (or, with IF NOT
        // EXISTS, skip a broken index). Only indexes this statement left.
        if builds_index && !session.is_closed() {
            drop_invalid_indexes(session.client(), statement, &invalid_before);
        }
        // psql's exit on error would end the file's own transaction with
        // the session; here the session lives on, so roll it back.
        if in_transaction && !session.is_closed() {
            let _ = session.client().batch_execute("ROLLBACK");
        }
        if interrupt.is_set() && error.code() == Some(&SqlState::QUERY_CANCELED) {
            return Err(interrupted(migration, index, total));
        }
        let lock_timeout = error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE);
        // Inside the file's own transaction, the statements before this one
        // went with the rollback: retrying this one alone would be wrong.
        if lock_timeout
            && !in_transaction
            && config.ddl_lock_timeout.is_some()
            && retries < config.ddl_retries
        {
            retries += 1;
            let wait = pause.mul_f64(0.5 + fastrand::f64() * 0.5);
            log::warn!(
                "MIGRATION_RETRY version={} name={} statement={} attempt={retries}/{} reason=lock_timeout retry_in_ms={}",
                migration.version,
                migration.name,
                index + 1,
                config.ddl_retries,
                crate::millis(wait)
            );
            if !interrupt.sleep(wait) {
                return Err(interrupted(migration, index, total));
            }
            pause = (pause * 2).min(Duration::from_secs(30));
            continue;
        }
        let mut failure = statement_failed(step, statement, position, retries, &error);
        if in_transaction {
            failure.error = anyhow!(
                "{}\nThe statements since the file's own BEGIN were rolled back with its transaction.",
                failure.message()
            );
        }
        return Err(failure);
    }
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
    step: &Step,
    statement: &Statement,
    position: Position,
    retries: u32,
    error: &postgres::Error,
) -> Failure {
    let Step {
        migration, config, ..
    } = *step;
    let Position { index, total } = position;
    let file = migration.path.display();
    let number = index + 1;
    let Some(db_error) = error.as_db_error() else {
        log::error!(
            "MIGRATION_FAILED version={} name={} statement={number} sqlstate=none",
            migration.version,
            migration.name
        );
        return Failure::failed(anyhow!(
            "migration {migration} ({file}) did not complete statement {number} of {total} (line {}): \
             {}\nIt runs without a transaction: {}, as far as this run knows.",
            statement.line,
            pg_error::error_chain(error),
            committed_before(index, total)
        ));
    };
    let ErrorDetail { sqlstate, line, .. } = pg_error::locate(db_error, 0, statement.sql);
    let line = statement.line + line.map_or(0, |l| l - 1);
    log::error!(
        "MIGRATION_FAILED version={} name={} statement={number} sqlstate={}",
        migration.version,
        migration.name,
        sqlstate.as_deref().unwrap_or("none")
    );
    let mut message = format!(
        "migration {migration} failed at statement {number} of {total} ({file}, line {line}): {}\n\
         It runs without a transaction: {}. No history row was written: fix the cause and apply \
         again, which runs the whole file again (write such files to be re-runnable, e.g. with \
         IF NOT EXISTS).",
        pg_error::text(db_error),
        committed_before(index, total)
    );
    if db_error.code() == &SqlState::LOCK_NOT_AVAILABLE {
        if let Some(timeout) = config.ddl_lock_timeout {
            message.push_str(&format!(
                "\nIt could not get a table lock within --ddl-lock-timeout {} in {} tries.",
                humantime::format_duration(timeout),
                retries + 1,
            ));
        }
    }
    Failure::failed(anyhow!(message)).with_detail(ErrorDetail {
        sqlstate,
        file: Some(migration.path.clone()),
        line: Some(line),
    })
}

/// Invalid indexes in the schemas this session's statements resolve
/// names in (its search_path), as `(schema-qualified SQL name, name,
/// table name)`. Other schemas are other tenants' (many databases with a
/// schema each), whose builds this run must never touch.
fn invalid_indexes(
    client: &mut Client,
) -> Result<BTreeSet<(String, String, String)>, postgres::Error> {
    let mut batch = Batch::new();
    let rows = batch.push(
        "SELECT format('%I.%I', n.nspname, c.relname), c.relname, t.relname FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid AND n.nspname = ANY (current_schemas(false))",
    );
    let results = batch.query(client)?;
    Ok(results
        .rows(rows)
        .iter()
        .filter_map(|r| {
            Some((
                r.get(0)?.to_string(),
                r.get(1)?.to_string(),
                r.get(2)?.to_string(),
            ))
        })
        .collect())
}

/// Drops the invalid indexes that appeared during `statement` and are its
/// own: the index it names, or for an unnamed one an index on the table it
/// names, or REINDEX CONCURRENTLY's `_ccnew`/`_ccold` copies; only in the
/// schemas of this session's search_path. (An unnamed build of another
/// session on the same table, at the same moment, cannot be told apart.)
fn drop_invalid_indexes(
    client: &mut Client,
    statement: &Statement,
    before: &BTreeSet<(String, String, String)>,
) {
    let Ok(after) = invalid_indexes(client) else {
        return;
    };
    let named = statement.created_index_name();
    let table = statement.indexed_table();
    for (qualified, name, on) in after.difference(before) {
        let ours = match &named {
            Some(named) => name == named,
            None if statement.refused_in_transaction() == Some("REINDEX CONCURRENTLY") => {
                name.contains("_ccnew") || name.contains("_ccold")
            }
            // CREATE INDEX CONCURRENTLY ON t(…): a name PostgreSQL chose.
            None => table.as_deref() == Some(on.as_str()),
        };
        if !ours {
            continue;
        }
        match client.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}")) {
            Ok(()) => log::warn!("INVALID_INDEX_DROPPED name={qualified}"),
            Err(e) => log::warn!(
                "cannot drop the invalid index {qualified} left by the failed statement ({}); drop it \
                 before the next apply",
                pg_error::error_chain(&e)
            ),
        }
    }
}

/// The pending files' statements that must not run (transaction control in
/// a file that runs in miglock's transaction, COPY FROM stdin…), as
/// problems, before anything runs. Applied files are not looked at: a rule
/// added later must not make an applied set invalid.
pub fn refuse(plan: &Plan) -> Result<(), Problems> {
    let mut problems = Vec::new();
    for migration in &plan.pending {
        let (mode, statements) = migration.plan();
        for refusal in split::refusals(&mode, &statements) {
            problems.push(Problem {
                kind: match refusal.kind {
                    "transaction_control" => ProblemKind::TransactionControl,
                    _ => ProblemKind::Unsupported,
                },
                message: format!("{}: {}", migration.path.display(), refusal.message),
                file: Some(migration.path.clone()),
                version: Some(migration.version.into()),
                line: Some(refusal.line),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(problems))
    }
}
