//! One migration, applied on the [`LockSession`] that holds the key: its
//! SQL and its history row in one transaction and one round trip.
//! refinery's own runner commits them in two transactions, so a crash
//! between the two leaves a migration applied but unrecorded.

use std::time::Duration;

use anyhow::anyhow;
use postgres::error::SqlState;
use postgres::Client;

use crate::config::ApplyConfig;
use crate::error::{ErrorDetail, Failure};
use crate::history::HistoryTable;
use crate::lock::mode::{self, LockMode};
use crate::lock::LockSession;
use crate::migrations::LocalMigration;
use crate::nontx::{self, Isolation, Step};
use crate::pg_error;
use crate::sql::Batch;

/// Applies `migration`; with `release_after`, the same round trip also
/// releases the key (the last migration of a run).
///
/// With `--ddl-lock-timeout`, a migration that times out waiting for a
/// table lock (55P03) is rolled back and tried again after a pause, up to
/// `--ddl-retries` times: queued behind a long query, its ALTER TABLE
/// would otherwise block every other query on that table while it waits.
pub fn apply_one(session: &mut LockSession, step: &Step) -> Result<(), Failure> {
    let Step {
        migration,
        isolation,
        config,
        applied_on,
        release_after,
        interrupt,
    } = *step;
    let lock_mode = config.common.lock_mode;
    let (mode, statements) = migration.plan();
    if !mode.transactional() {
        // Its statements commit one by one, so no transaction can carry
        // the guard; a lone round trip at least tells whether this
        // connection still reaches the session that holds the key.
        if session.is_held() {
            let guard = guard_sql(config, isolation, migration);
            // Any other error is met, and reported, by the first statement.
            if let Err(error) = session.client().batch_execute(&guard) {
                if let Some(code) = mode::refusal(&error) {
                    return Err(refused(session, config, migration, code));
                }
            }
        }
        return nontx::apply_statements(session, step, &mode, &statements);
    }
    let table = &isolation.table;
    let mut retries = 0;
    let mut pause = Duration::from_millis(500);
    let (error, script_start) = loop {
        let mut batch = Batch::new();
        if lock_mode == LockMode::Transaction {
            // The guard's history check must see every commit made before
            // the key was granted: its snapshot must come after the lock,
            // which a repeatable read transaction would take at the guard.
            batch.push("BEGIN ISOLATION LEVEL READ COMMITTED");
            batch.push(&mode::local_settings_sql(
                config.statement_timeout,
                &config.settings,
                &session
                    .identity()
                    .application_name(Some(mode::TRANSACTION_HOLDING)),
            ));
        } else {
            batch.push("BEGIN");
        }
        batch.push(&guard_sql(config, isolation, migration));
        if let Some(timeout) = config.ddl_lock_timeout {
            batch.push(&format!(
                "SET LOCAL lock_timeout = {}",
                timeout.as_millis().max(1)
            ));
        }
        let script_start = batch.push_script(migration.script());
        // A migration that ends the transaction itself (a stray COMMIT)
        // makes this fail, so its row is never written outside it.
        batch.push("SAVEPOINT miglock_guard");
        batch.push(&table.insert_sql(
            migration.version,
            &migration.name,
            applied_on,
            migration.checksum,
        ));
        batch.push("COMMIT");
        // SET (not LOCAL) in a migration outlives its COMMIT.
        isolation.push_restore(&mut batch);
        let result = if !session.is_held() {
            // Transaction mode: the key came and went with the transaction.
            batch.execute(session.client())
        } else if release_after {
            session.execute_then_release(batch)
        } else {
            session.execute(&batch)
        };
        let Err(error) = result else {
            return Ok(());
        };
        // Whatever failed, the transaction must not stay open on the session
        // that still holds the key. On a lost connection this fails too,
        // and the server rolls back by itself.
        let _ = session.client().batch_execute("ROLLBACK");
        // An error after the COMMIT (a cancel landing on the unlock that
        // follows it) leaves the migration applied: its row says so.
        if release_after && committed(session.client(), table, migration, applied_on) {
            // The unlock after the COMMIT may have gone through too.
            session.recheck_held();
            return Ok(());
        }
        if let Some(code) = mode::refusal(&error) {
            return Err(refused(session, config, migration, code));
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
        let lock_timeout = error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE);
        if !(lock_timeout && config.ddl_lock_timeout.is_some() && retries < config.ddl_retries) {
            break (error, script_start);
        }
        retries += 1;
        let wait = pause.mul_f64(0.5 + fastrand::f64() * 0.5);
        log::warn!(
            "MIGRATION_RETRY version={} name={} attempt={retries}/{} reason=lock_timeout retry_in_ms={}",
            migration.version,
            migration.name,
            config.ddl_retries,
            crate::millis(wait)
        );
        if !interrupt.sleep(wait) {
            return Err(Failure::interrupted());
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    };

    let file = migration.path.display();
    let Some(db_error) = error.as_db_error() else {
        log::error!(
            "MIGRATION_FAILED version={} name={} sqlstate=none",
            migration.version,
            migration.name
        );
        return Err(Failure::failed(anyhow!(
            "migration {migration} ({file}) did not complete: {}",
            pg_error::error_chain(&error)
        )));
    };
    let ErrorDetail { sqlstate, line, .. } =
        pg_error::locate(db_error, script_start, migration.script());
    log::error!(
        "MIGRATION_FAILED version={} name={} sqlstate={}",
        migration.version,
        migration.name,
        sqlstate.as_deref().unwrap_or("none")
    );
    let at = line.map_or(String::new(), |l| format!(", line {l}"));
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
    if db_error.code() == &SqlState::LOCK_NOT_AVAILABLE {
        if let Some(timeout) = config.ddl_lock_timeout {
            message.push_str(&format!(
                "\nIt could not get a table lock within --ddl-lock-timeout {} in {} tries.{}",
                humantime::format_duration(timeout),
                retries + 1,
                table_lock_holders(session.client())
            ));
        }
    }
    Err(Failure::failed(anyhow!(message)).with_detail(ErrorDetail {
        sqlstate,
        file: Some(migration.path.clone()),
        line,
    }))
}

fn guard_sql(config: &ApplyConfig, isolation: &Isolation, migration: &LocalMigration) -> String {
    mode::guard_sql(
        &config.common.key,
        &isolation.table,
        Some(migration.version),
    )
}

/// The guard refused `migration` (rolled back, nothing of it ran). In
/// transaction mode that is the lock being busy or the work done, which
/// the caller reads from the SQLSTATE; in session mode it means this
/// transaction did not run on the server session that holds the key: a
/// transaction pooler is in the way.
fn refused(
    session: &mut LockSession,
    config: &ApplyConfig,
    migration: &LocalMigration,
    code: &'static str,
) -> Failure {
    let detail = ErrorDetail {
        sqlstate: Some(code.to_string()),
        ..ErrorDetail::default()
    };
    if config.common.lock_mode == LockMode::Transaction {
        return Failure::failed(anyhow!("{migration}: the lock guard refused ({code})"))
            .with_detail(detail);
    }
    let why = if code == mode::KEY_ELSEWHERE {
        "its transaction ran on another server session than the one holding the session lock"
    } else {
        "its transaction ran on a server session that another client already migrated on, \
         and both held the session lock through it"
    };
    mode::pooler_detected(session, &migration.to_string(), why, code)
}

/// Whether the history holds this run's row for `migration` (its
/// `applied_on` tells it from a row another replica wrote).
fn committed(
    client: &mut Client,
    table: &HistoryTable,
    migration: &LocalMigration,
    applied_on: &str,
) -> bool {
    let mut batch = Batch::new();
    let row = batch.push(&format!(
        "SELECT 1 FROM {} WHERE version = {} AND applied_on = {}",
        table.sql_name(),
        migration.version,
        crate::sql::literal(applied_on)
    ));
    batch
        .query(client)
        .is_ok_and(|results| !results.rows(row).is_empty())
}

/// After a DDL lock timeout: who holds table locks now, longest first —
/// the session a migration queues behind is usually among them.
fn table_lock_holders(client: &mut Client) -> String {
    let mut batch = Batch::new();
    let holders = batch.push(
        "SELECT l.pid, a.application_name, l.relation::regclass::text, l.mode, a.state, \
         round(extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.state_change))::numeric, 1), \
         left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) \
         FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() AND l.relation >= 16384 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY 6 DESC NULLS LAST LIMIT 5",
    );
    let Ok(results) = batch.query(client) else {
        return String::new();
    };
    let lines: Vec<String> = results
        .rows(holders)
        .iter()
        .map(|r| {
            let col = |i: usize| r.get(i).unwrap_or("?");
            format!(
                "\n  pid {} {:?} holds {} on {} ({} for {}s): {}",
                col(0),
                col(1),
                col(3),
                col(2),
                col(4),
                col(5),
                col(6)
            )
        })
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(" Sessions holding table locks now:{}", lines.concat())
    }
}

/// The connection was lost during `migration` while the server stayed up
/// (the same postmaster start time after reconnecting): an administrator
/// ended the session on purpose (`pg_terminate_backend`, `miglock unlock
/// --force`), or the network failed. rust-postgres does not always pass on
/// the server's 57P01 that would tell them apart, and running the migration
/// again at once could defeat the administrator: the run stops (exit 1).
pub fn lost_while_server_stayed_up(
    failure: &Failure,
    migration: &LocalMigration,
    lost: &str,
) -> Failure {
    log::error!(
        "MIGRATION_FAILED version={} name={} sqlstate={}",
        migration.version,
        migration.name,
        failure.detail.sqlstate.as_deref().unwrap_or("none")
    );
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
