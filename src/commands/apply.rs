//! `miglock apply`: wait (bounded) for the lock, apply what is pending,
//! release the lock.
//!
//! Round trips, in the common cases:
//! - nothing pending (every replica but one, every restart): connect, read
//!   the history, done. No lock is taken: committed history rows are proof
//!   enough that the schema is current.
//! - something pending: one round trip that sets the session up, listens
//!   for the release notification, tries the lock and re-reads the history;
//!   then one round trip per migration, the last of which also unlocks and
//!   notifies the waiters.
//!
//! The first connection attempt runs while the files are read.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use postgres::error::SqlState;
use postgres::Client;
use time::format_description::well_known::Rfc3339;

use crate::config::{ApplyConfig, Format};
use crate::db;
use crate::error::{ErrorDetail, Failure};
use crate::history::{self, AppliedMigration, HistoryTable};
use crate::interrupt::Interrupt;
use crate::lock::{self, Identity, LockHolder, LockKey};
use crate::migrations::{LocalMigration, MigrationSet, Plan, Problems};
use crate::outcome::Outcome;
use crate::output::Progress;
use crate::report::{AppliedEntry, Report};

use super::millis;

/// First pause between lock attempts; it doubles up to [`MAX_BACKOFF`].
/// Waiters are woken by the holder's NOTIFY on release, so polling is only
/// the fallback for a holder that died without one: it can be slow, and
/// must be, so a hundred waiting replicas do not hammer the server.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The polling budget shared by all the replicas waiting for one key.
const ATTEMPTS_PER_SECOND: f64 = 20.0;

/// What each migration transaction starts with. Sent in the same round
/// trip as the migration's SQL; error positions are shifted by its length.
const BEGIN: &str = "BEGIN;\n";

pub fn run(
    config: &ApplyConfig,
    report: &mut Report,
    progress: &Progress,
    interrupt: &Interrupt,
    format: Format,
) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.describe(common);
    report.dry_run = config.dry_run;

    // The server starts a backend for this run while the files are read:
    // on a no-op run those are the two costs, and they overlap.
    let identity = super::identity("apply", common);
    let connecting = db::Connecting::start(
        &common.target,
        common.connect_timeout,
        &identity.application_name(None),
        true,
    );
    let set = MigrationSet::load(&common.migrations).map_err(|p| invalid(report, p))?;
    if set.migrations.is_empty() {
        log::warn!("no migration files in {}", common.migrations.display());
    }
    log::debug!(
        "read {} migration files from {} (newest {})",
        set.migrations.len(),
        common.migrations.display(),
        set.migrations
            .last()
            .map_or("none".to_string(), |m| m.to_string())
    );
    if let Some(target) = config.target_version {
        match set.last_version() {
            Some(last) if target <= last => {}
            last => {
                return Err(Failure::usage(anyhow!(
                    "--target {target} is beyond the newest migration in {} ({})",
                    common.migrations.display(),
                    last.map_or("there is none".to_string(), |v| format!("V{v}"))
                )))
            }
        }
    }

    let mut client = connecting.finish(interrupt)?;
    crate::settings::check_on_server(&mut client, &config.settings)?;

    let history = history::read(&mut client, &common.table)?;
    let table_exists = history.is_some();
    log::debug!(
        "history table {}: {}",
        common.table,
        history
            .as_ref()
            .map_or("does not exist yet".to_string(), |h| format!(
                "{} applied",
                h.len()
            ))
    );
    let history = history.unwrap_or_default();
    let plan = Plan::new(&set, &history, config.target_version).map_err(|p| invalid(report, p))?;
    report.set_pending(&plan);
    if plan.pending.is_empty() {
        return Ok(current(&plan, config, "nothing pending"));
    }
    log::debug!(
        "pending: {}",
        plan.pending
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if config.dry_run {
        print_plan(config, &plan, format);
        return Ok(Outcome::Pending);
    }

    let waited = Instant::now();
    let history = match wait_for_lock(
        &mut client,
        config,
        &set,
        &identity,
        table_exists,
        report,
        progress,
        interrupt,
    )? {
        LockWait::Acquired(history) => history,
        LockWait::CurrentMeanwhile(plan) => {
            report.pending.clear();
            report.lock.waited_ms = millis(waited.elapsed());
            return Ok(current(
                &plan,
                config,
                "applied by another replica while this one waited",
            ));
        }
        LockWait::TimedOut => {
            report.lock.waited_ms = millis(waited.elapsed());
            let holder = report
                .lock
                .holder
                .as_ref()
                .map(LockHolder::describe)
                .unwrap_or_default();
            log::warn!(
                "LOCK_WAIT_TIMEOUT key={} waited_ms={} {holder}: nothing was changed by this run",
                common.key,
                report.lock.waited_ms
            );
            return Ok(Outcome::Skipped);
        }
    };
    report.lock.waited_ms = millis(waited.elapsed());
    let held_since = Instant::now();
    log::info!(
        "LOCK_ACQUIRED key={} waited_ms={}",
        common.key,
        report.lock.waited_ms
    );

    // From here on, every path goes through the release below.
    let mut released = false;
    let result = match history {
        Some(history) => history.map_err(Failure::failed),
        None => create_history_table(&mut client, &common.table),
    }
    .and_then(|history| {
        migrate_locked(
            &mut client,
            config,
            &set,
            &history,
            report,
            progress,
            interrupt,
            &mut released,
        )
    });
    if released {
        log::info!(
            "LOCK_RELEASED key={} held_ms={}",
            common.key,
            millis(held_since.elapsed())
        );
    } else {
        release(&mut client, &common.key, held_since);
    }
    result
}

fn invalid(report: &mut Report, problems: Problems) -> Failure {
    report.problems = problems.0.clone();
    Failure::invalid(problems)
}

fn current(plan: &Plan, config: &ApplyConfig, why: &str) -> Outcome {
    let version = plan.applied.last().map_or("none".to_string(), |a| {
        format!("V{}__{}", a.version, a.name)
    });
    log::info!(
        "SCHEMA_CURRENT version={version} applied={} ({why})",
        plan.applied.len()
    );
    if plan.beyond_target > 0 {
        log::info!(
            "{} migration(s) beyond --target {} left for a later run",
            plan.beyond_target,
            config.target_version.unwrap_or_default()
        );
    }
    Outcome::Current
}

fn print_plan(config: &ApplyConfig, plan: &Plan, format: Format) {
    if format == Format::Json {
        return;
    }
    let common = &config.common;
    println!(
        "Plan for {} (table {}, lock key {}):",
        common.target, common.table, common.key
    );
    for m in &plan.pending {
        println!("  apply {m}  ({})", m.path.display());
    }
    println!(
        "{} pending, {} applied; nothing was changed (--dry-run).",
        plan.pending.len(),
        plan.applied.len()
    );
}

enum LockWait<'a> {
    /// This session holds the key; the history as read under it (`None`:
    /// the table has yet to be created).
    Acquired(Option<anyhow::Result<Vec<AppliedMigration>>>),
    /// Another replica applied everything while this one waited.
    CurrentMeanwhile(Plan<'a>),
    TimedOut,
}

/// Settings for the migrating session, in one statement. miglock's own are
/// set only where the server knows the name (`idle_session_timeout` and
/// `client_connection_check_interval` came in PostgreSQL 14); those given
/// with `--set` replace them and must exist.
/// - `statement_timeout` as given, or 0 so a role default cannot cut a long
///   migration (the lock wait runs no statement, so it is never bounded by it);
/// - `idle_session_timeout` and `idle_in_transaction_session_timeout` 0 so a
///   server default cannot end the session and take the lock away silently;
/// - server-side TCP keepalives and `client_connection_check_interval`, so a
///   holder whose network vanishes loses the lock in about 21 s instead of
///   the kernel's default of over two hours.
fn session_settings_sql(config: &ApplyConfig) -> String {
    let statement_timeout = config
        .statement_timeout
        .map_or(0, |t| t.as_millis().max(1))
        .to_string();
    let defaults = [
        ("statement_timeout", statement_timeout.as_str()),
        ("idle_session_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
        ("tcp_keepalives_idle", "5"),
        ("tcp_keepalives_interval", "5"),
        ("tcp_keepalives_count", "3"),
        ("client_connection_check_interval", "1000"),
    ];
    let given = |name: &str| config.settings.iter().any(|(n, _)| n == name);
    let values: Vec<String> = defaults
        .iter()
        .filter(|(name, _)| !given(name))
        .map(|(name, value)| format!("('{name}', '{value}')"))
        .collect();
    let mut columns = Vec::new();
    if !values.is_empty() {
        // current_setting(…, true) is NULL for a name the server does not
        // know; much cheaper than the pg_settings view, which renders
        // every setting.
        columns.push(format!(
            "(SELECT count(set_config(v.name, v.setting, false)) FROM (VALUES {}) AS v(name, setting) \
             WHERE current_setting(v.name, true) IS NOT NULL)",
            values.join(", ")
        ));
    }
    for (name, value) in &config.settings {
        columns.push(format!(
            "set_config({}, {}, false)",
            crate::sql::literal(name),
            crate::sql::literal(value)
        ));
    }
    format!("SELECT {}", columns.join(", "))
}

#[allow(clippy::too_many_arguments)]
fn wait_for_lock<'a>(
    client: &mut Client,
    config: &ApplyConfig,
    set: &'a MigrationSet,
    identity: &Identity,
    table_exists: bool,
    report: &mut Report,
    progress: &Progress,
    interrupt: &Interrupt,
) -> Result<LockWait<'a>, Failure> {
    let common = &config.common;
    let key = &common.key;
    let deadline = Instant::now() + config.wait;
    let try_lock = lock::try_lock_sql(
        key,
        &identity.application_name(Some("holding")),
        &identity.application_name(Some("waiting")),
    );
    // The history is re-read in the same round trip as every attempt: once
    // the key is ours it is the truth to apply against, and while it is
    // busy it tells when the holder has already done this replica's work.
    // The COMMIT ends the attempt's implicit transaction, so the history
    // is read with a snapshot taken after the lock (a database whose
    // default isolation is repeatable read would otherwise share the
    // attempt's, taken before it).
    let read_history = if table_exists {
        format!("; COMMIT; {}", common.table.select_sql())
    } else {
        String::new()
    };
    // Once per connection: the session settings, the LISTEN and the mark.
    let setup = format!(
        "{}; LISTEN {}; {}; ",
        session_settings_sql(config),
        key.channel(),
        key.mark_waiting_sql(),
    );
    let attempt_sql = format!("{try_lock}{read_history}");
    let mut first_attempt = true;
    let mut backoff = FIRST_BACKOFF;
    let mut spinner: Option<indicatif::ProgressBar> = None;
    let mut busy_logged: Option<Option<i32>> = None;
    let started = Instant::now();
    loop {
        // Notifications that arrived before this attempt are answered by it.
        lock::drain_notifications(client);
        let batch = if first_attempt {
            format!("{setup}{attempt_sql}")
        } else {
            attempt_sql.clone()
        };
        log::trace!("lock attempt: {batch}");
        let messages = match client.simple_query(&batch) {
            Ok(messages) => messages,
            Err(_) if client.is_closed() => {
                *client = super::reconnect(common, identity, deadline, interrupt)?;
                first_attempt = true;
                continue;
            }
            Err(e) => return Err(db::failed(&e, format!("cannot try the lock {key}"))),
        };
        let statements = lock::rows_per_statement(&messages);
        let skip = if first_attempt { 3 } else { 0 };
        first_attempt = false;
        let attempt = statements
            .get(skip)
            .and_then(|rows| rows.first())
            .ok_or_else(|| Failure::failed(anyhow!("the lock attempt returned no row")))?;
        let got = attempt.get(0) == Some("t");
        // Parsed here, but a parse error after `got` is only raised under
        // the lock's protection (see `run`), so the lock is still released.
        let history = statements
            .get(skip + 2)
            .map(|rows| history::rows_from_rows(rows));

        if got {
            return Ok(LockWait::Acquired(history));
        }

        if let Some(history) = history {
            let history = history?;
            let plan =
                Plan::new(set, &history, config.target_version).map_err(|p| invalid(report, p))?;
            if plan.pending.is_empty() {
                return Ok(LockWait::CurrentMeanwhile(plan));
            }
            report.set_pending(&plan);
        }

        // Busy: who holds it, and how many wait (off the handover's path).
        let (holder, waiters) = match client.simple_query(&key.busy_sql()) {
            Ok(messages) => {
                let statements = lock::rows_per_statement(&messages);
                let holder = statements
                    .first()
                    .and_then(|rows| rows.first())
                    .and_then(|row| LockHolder::from_row(row, 0));
                let waiters = lock::first_value(&messages, 1)
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(1);
                (holder, waiters)
            }
            Err(_) if client.is_closed() => {
                *client = super::reconnect(common, identity, deadline, interrupt)?;
                first_attempt = true;
                continue;
            }
            Err(e) => {
                return Err(db::failed(
                    &e,
                    format!("cannot read who holds the lock {key}"),
                ))
            }
        };
        // Logged the first time, and whenever the holder changes (a holder
        // gone between the attempt and this look is logged as such).
        let holder_pid = holder.as_ref().map(|h| h.pid);
        if busy_logged != Some(holder_pid) {
            busy_logged = Some(holder_pid);
            let who = holder
                .as_ref()
                .map_or("holder_pid=<gone>".to_string(), LockHolder::describe);
            log::info!(
                "LOCK_BUSY key={key} {who} waited_ms={} wait_ms={}",
                millis(started.elapsed()),
                millis(config.wait)
            );
            let message = format!("waiting for lock {key} ({who})");
            match &spinner {
                Some(bar) => bar.set_message(message),
                None => spinner = progress.spinner(message),
            }
        }
        if holder.is_some() {
            report.lock.holder = holder;
        }

        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(LockWait::TimedOut);
        }
        // However many replicas wait, together they poll the server at
        // most about ATTEMPTS_PER_SECOND times a second: each waits at least
        // its share. The release notification, not the polling, is what
        // makes the handover quick.
        let share = Duration::from_secs_f64(f64::from(waiters) / ATTEMPTS_PER_SECOND / 0.75);
        let jitter = 0.5 + fastrand::f64() * 0.5;
        let pause = backoff.max(share).mul_f64(jitter).min(remaining);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        match lock::idle_wait(client, pause, interrupt) {
            Ok(_) if interrupt.is_set() => return Err(Failure::interrupted()),
            Ok(_) => {}
            Err(_) if client.is_closed() => {
                *client = super::reconnect(common, identity, deadline, interrupt)?;
                first_attempt = true;
            }
            Err(e) => {
                return Err(db::failed(
                    &e,
                    format!("lost the connection while waiting for the lock {key}"),
                ))
            }
        }
    }
}

/// Creates the history table under the lock, so concurrent first runs
/// never race on it, and reads it back.
fn create_history_table(
    client: &mut Client,
    table: &HistoryTable,
) -> Result<Vec<AppliedMigration>, Failure> {
    let messages = client
        // Quietly: replicas that saw no table before waiting would each
        // log "relation already exists, skipping".
        .simple_query(&format!(
            "BEGIN; SET LOCAL client_min_messages = warning; {}; COMMIT; {}",
            table.create_sql(),
            table.select_sql()
        ))
        .map_err(|e| db::failed(&e, format!("cannot create the history table {table}")))?;
    let statements = lock::rows_per_statement(&messages);
    Ok(history::rows_from_rows(
        statements.last().map(Vec::as_slice).unwrap_or_default(),
    )?)
}

/// Applies what is pending; the last migration's round trip also releases
/// the lock and wakes the waiters (`released` says so), which takes a
/// round trip off the handover.
#[allow(clippy::too_many_arguments)]
fn migrate_locked(
    client: &mut Client,
    config: &ApplyConfig,
    set: &MigrationSet,
    history: &[AppliedMigration],
    report: &mut Report,
    progress: &Progress,
    interrupt: &Interrupt,
    released: &mut bool,
) -> Result<Outcome, Failure> {
    let plan = Plan::new(set, history, config.target_version).map_err(|p| invalid(report, p))?;
    report.set_pending(&plan);
    if plan.pending.is_empty() {
        return Ok(current(
            &plan,
            config,
            "applied by another replica before the lock was taken",
        ));
    }
    let bar = progress.bar(plan.pending.len() as u64);
    for (i, migration) in plan.pending.iter().enumerate() {
        if interrupt.is_set() {
            return Err(Failure::interrupted());
        }
        let last = i + 1 == plan.pending.len();
        if let Some(bar) = &bar {
            bar.set_message(migration.to_string());
        }
        let started = Instant::now();
        let then_release = last.then_some(&config.common.key);
        // Also what tells this run's history row from another replica's.
        let applied_on = time::OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .map_err(|e| anyhow!("cannot format the time: {e}"))?;
        match apply_one(
            client,
            migration,
            config,
            &applied_on,
            then_release,
            interrupt,
        ) {
            Ok(released_with_it) => *released = released_with_it,
            Err(failure) if client.is_closed() && failure.outcome == Outcome::Failed => {
                return Err(after_connection_loss(
                    config,
                    migration,
                    &applied_on,
                    failure,
                    interrupt,
                ));
            }
            Err(failure) => return Err(failure),
        }
        let duration_ms = millis(started.elapsed());
        log::info!(
            "MIGRATION_APPLIED version={} name={} ms={duration_ms}",
            migration.version,
            migration.name
        );
        report.pending.remove(0);
        report.applied.push(AppliedEntry {
            version: migration.version.into(),
            name: migration.name.clone(),
            duration_ms: Some(duration_ms),
            applied_on: None,
        });
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    let last = plan
        .pending
        .last()
        .map(|m| m.to_string())
        .unwrap_or_default();
    log::info!(
        "SCHEMA_CURRENT version={last} applied={} (this run applied {})",
        plan.applied.len() + plan.pending.len(),
        plan.pending.len()
    );
    Ok(Outcome::Applied)
}

/// The migration's SQL and its history row, in one transaction and one
/// round trip. refinery's own runner commits them in two transactions, so
/// a crash between the two leaves a migration applied but unrecorded.
///
/// With `--ddl-lock-timeout`, a migration that times out waiting for a
/// table lock (55P03) is rolled back and tried again after a pause, up to
/// `--ddl-retries` times: queued behind a long query, its ALTER TABLE
/// would otherwise block every other query on that table while it waits.
fn apply_one(
    client: &mut Client,
    migration: &LocalMigration,
    config: &ApplyConfig,
    applied_on: &str,
    then_release: Option<&LockKey>,
    interrupt: &Interrupt,
) -> Result<bool, Failure> {
    let table = &config.common.table;
    let begin = match config.ddl_lock_timeout {
        Some(timeout) => format!(
            "{BEGIN}SET LOCAL lock_timeout = {};\n",
            timeout.as_millis().max(1)
        ),
        None => BEGIN.to_string(),
    };
    let mut retries = 0;
    let mut pause = Duration::from_millis(500);
    let error = loop {
        // The newline after the SQL ends a trailing `--` comment; the `;`
        // ends a last statement written without one.
        let release = then_release.map_or(String::new(), |key| format!(";\n{}", key.unlock_sql()));
        let batch = format!(
            "{begin}{}\n;\nSAVEPOINT miglock_guard;\n{};\nCOMMIT{release}",
            migration.sql,
            table.insert_sql(
                migration.version,
                &migration.name,
                applied_on,
                migration.checksum
            )
        );
        let Err(error) = client.batch_execute(&batch) else {
            return Ok(then_release.is_some());
        };
        // Whatever failed, the transaction must not stay open on the session
        // that still holds the lock. On a lost connection this fails too,
        // and the server rolls back by itself.
        let _ = client.batch_execute("ROLLBACK");
        // An error after the COMMIT (a cancel landing on the unlock that
        // follows it) leaves the migration applied: its row says so.
        if then_release.is_some() && committed(client, table, migration, applied_on) {
            return Ok(false);
        }
        if interrupt.is_set() && error.code() == Some(&SqlState::QUERY_CANCELED) {
            return Err(Failure::interrupted());
        }
        let lock_timeout = error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE);
        if !(lock_timeout && config.ddl_lock_timeout.is_some() && retries < config.ddl_retries) {
            break error;
        }
        retries += 1;
        let wait = pause.mul_f64(0.5 + fastrand::f64() * 0.5);
        log::warn!(
            "MIGRATION_RETRY version={} name={} attempt={retries}/{} reason=lock_timeout retry_in_ms={}",
            migration.version,
            migration.name,
            config.ddl_retries,
            millis(wait)
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
            db::error_chain(&error)
        )));
    };
    let ErrorDetail { sqlstate, line, .. } = db::locate(db_error, &begin, &migration.sql);
    log::error!(
        "MIGRATION_FAILED version={} name={} sqlstate={}",
        migration.version,
        migration.name,
        sqlstate.as_deref().unwrap_or("none")
    );
    let at = line.map_or(String::new(), |l| format!(", line {l}"));
    let mut message = format!(
        "migration {migration} failed ({file}{at}): {}",
        db::db_error_text(db_error)
    );
    if db_error.code() == &SqlState::NO_ACTIVE_SQL_TRANSACTION {
        message.push_str(
            "\nThe migration ended its own transaction (a COMMIT or ROLLBACK in the file), so its \
             history row was not written. miglock runs each migration in one transaction with its \
             row: take the transaction control out of the file. Anything the file committed itself \
             stays; check it before the next apply.",
        );
    }
    if db_error.code() == &SqlState::LOCK_NOT_AVAILABLE {
        if let Some(timeout) = config.ddl_lock_timeout {
            message.push_str(&format!(
                "\nIt could not get a table lock within --ddl-lock-timeout {} in {} tries.{}",
                humantime::format_duration(timeout),
                retries + 1,
                table_lock_holders(client)
            ));
        }
    }
    if !client.is_closed() {
        message.push_str("\nIt was rolled back: nothing of it was applied.");
    }
    Err(Failure::failed(anyhow!(message)).with_detail(ErrorDetail {
        sqlstate,
        file: Some(migration.path.clone()),
        line,
    }))
}

/// Whether the history holds this run's row for `migration` (its
/// `applied_on` tells it from a row another replica wrote).
fn committed(
    client: &mut Client,
    table: &HistoryTable,
    migration: &LocalMigration,
    applied_on: &str,
) -> bool {
    let query = format!(
        "SELECT 1 FROM {} WHERE version = {} AND applied_on = {}",
        table.sql_name(),
        migration.version,
        crate::sql::literal(applied_on)
    );
    client.simple_query(&query).is_ok_and(|messages| {
        lock::rows_per_statement(&messages)
            .first()
            .is_some_and(|rows| !rows.is_empty())
    })
}

/// After a DDL lock timeout: who holds table locks now, longest first —
/// the session a migration queues behind is usually among them.
fn table_lock_holders(client: &mut Client) -> String {
    let query = "SELECT l.pid, a.application_name, l.relation::regclass::text, l.mode, a.state, \
         round(extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.state_change))::numeric, 1), \
         left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) \
         FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() AND l.relation >= 16384 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY 6 DESC NULLS LAST LIMIT 5";
    let Ok(messages) = client.simple_query(query) else {
        return String::new();
    };
    let lines: Vec<String> = lock::rows_per_statement(&messages)
        .first()
        .map(|rows| {
            rows.iter()
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
                .collect()
        })
        .unwrap_or_default();
    if lines.is_empty() {
        String::new()
    } else {
        format!(" Sessions holding table locks now:{}", lines.concat())
    }
}

/// The connection died during a migration: whether its COMMIT went through
/// is unknown from here, so look again on a new connection and say which.
fn after_connection_loss(
    config: &ApplyConfig,
    migration: &LocalMigration,
    applied_on: &str,
    failure: Failure,
    interrupt: &Interrupt,
) -> Failure {
    let common = &config.common;
    let lost = failure.message();
    log::warn!("CONNECT_RETRY the connection was lost during {migration}; reconnecting to check what was applied");
    let identity = super::identity("apply", common);
    let checked = super::connect(common, &identity, interrupt)
        .and_then(|mut client| history::read(&mut client, &common.table));
    match checked {
        Ok(history) => {
            // The row says who applied it: a waiter may have taken over and
            // applied the migration since, with its own applied_on.
            let row = history
                .unwrap_or_default()
                .into_iter()
                .find(|a| a.version == i64::from(migration.version));
            let what = match row {
                Some(row) if row.applied_on == applied_on => {
                    "it had committed (with its history row) before the connection was lost"
                }
                Some(_) => "this run's attempt was rolled back; another replica has applied it since",
                None => "it was not applied: the server rolled it back",
            };
            Failure::failed(anyhow!(
                "{lost}\nThe connection was lost during {migration}; checked on a new connection: {what}. \
                 The next apply carries on from there."
            ))
        }
        Err(reconnect) => Failure::unavailable(anyhow!(
            "{lost}\nThe connection was lost during {migration}, and reconnecting to check whether it \
             committed failed: {}. Each migration commits with its history row, so it is either applied \
             and recorded or not at all; `miglock status` tells which.",
            reconnect.message()
        )),
    }
}

/// Unlocks and wakes the waiters. On a lost connection the server has
/// already released the lock with the session.
fn release(client: &mut Client, key: &LockKey, held_since: Instant) {
    let mut unlocked = client.simple_query(&key.unlock_sql());
    // A signal's cancel request, sent from its own thread, may land on the
    // unlock rather than on the migration it was meant for: unlock again.
    if unlocked
        .as_ref()
        .is_err_and(|e| e.code() == Some(&SqlState::QUERY_CANCELED))
    {
        unlocked = client.simple_query(&key.unlock_sql());
    }
    match unlocked {
        Ok(messages) => {
            let released = lock::first_value(&messages, 0) == Some("t");
            if released {
                log::info!(
                    "LOCK_RELEASED key={key} held_ms={}",
                    millis(held_since.elapsed())
                );
            } else {
                log::warn!("LOCK_RELEASED key={key}: the session no longer held it");
            }
        }
        Err(e) => log::warn!(
            "LOCK_RELEASED key={key} with the session: unlock failed ({})",
            db::error_chain(&e)
        ),
    }
}
