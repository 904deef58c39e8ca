//! `miglock apply`: wait (bounded) for the lock, apply what is pending,
//! release the lock.
//!
//! Round trips, in the common cases:
//! - nothing pending (every replica but one, every restart): connect, read
//!   the history, done. No lock is taken: committed history rows are proof
//!   enough that the schema is current. The first connection attempt runs
//!   while the files are read.
//! - something pending: one round trip that sets the session up, listens
//!   for the release notification, tries the lock and re-reads the history;
//!   then one round trip per migration, the last of which also unlocks and
//!   notifies the waiters.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::config::ApplyConfig;
use crate::connect::Connecting;
use crate::error::Failure;
use crate::history::{self, AppliedMigration};
use crate::interrupt::Interrupt;
use crate::lock::wait::{self, Look};
use crate::lock::{Backend, Identity, LockSession};
use crate::migrate;
use crate::migrations::{LocalMigration, MigrationSet, Plan};
use crate::nontx::{Isolation, Step};
use crate::outcome::Outcome;
use crate::output::{Console, Progress};
use crate::report::{self, AppliedEntry, Report};
use crate::settings;

/// First pause between lock attempts; it doubles up to [`MAX_BACKOFF`].
/// Waiters are woken by the holder's NOTIFY on release, so polling is only
/// the fallback for a holder that died without one: it can be slow, and
/// must be, so a hundred waiting replicas do not hammer the server.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The polling budget shared by all the replicas waiting for one key.
const ATTEMPTS_PER_SECOND: f64 = 20.0;

pub fn run(
    config: &ApplyConfig,
    report: &mut Report,
    progress: &Progress,
    interrupt: &Interrupt,
    out: &Console,
) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);
    report.dry_run = config.dry_run;

    // The server starts a backend for this run while the files are read:
    // on a no-op run those are the two costs, and they overlap.
    let identity = Identity::for_command("apply", common);
    let connecting = Connecting::start(
        &common.database,
        common.connect_timeout,
        &identity.application_name(None),
        true,
    );
    let set = MigrationSet::load(&common.migrations).map_err(|p| report.invalid(p))?;
    if set.migrations.is_empty() {
        log::warn!("no migration files in {}", common.migrations.display());
    }
    log::debug!(
        "read {} migration files from {} (newest {})",
        set.migrations.len(),
        common.migrations.display(),
        set.migrations
            .last()
            .map_or("none".to_string(), ToString::to_string)
    );
    check_target_version(config, &set)?;

    let mut client = connecting.finish(interrupt)?;
    settings::check_on_server(&mut client, &config.settings)?;
    let mut session =
        LockSession::new(client, common, identity).with_settings(session_settings_sql(config));

    let history = history::read(session.client(), &common.table)?;
    let table_exists = history.is_some();
    let plan = Plan::new(
        &set,
        history.as_deref().unwrap_or_default(),
        config.target_version,
        common.ahead,
    )
    .map_err(|p| report.invalid(p))?;
    // Before anything runs; the history only grows, so no later plan has a
    // pending file this one lacks.
    crate::nontx::refuse(&plan).map_err(|p| report.invalid(p))?;
    let transaction_mode = common.lock_mode == crate::lock::LockMode::Transaction;
    if transaction_mode {
        super::apply_transaction::refuse_non_transactional(&plan)?;
    }
    report.set_plan(&plan);
    if plan.pending.is_empty() {
        return Ok(report.current(&plan, "nothing pending"));
    }
    log::debug!("pending: {}", names(&plan));
    if config.dry_run {
        out.print(&render_plan(config, &plan));
        return Ok(Outcome::Pending);
    }

    let steps = Run {
        config,
        set: &set,
        progress,
        interrupt,
    };
    if transaction_mode {
        return super::apply_transaction::run(&mut session, &steps, history, report);
    }

    // A connection lost under the lock (a restart, a failover) is not the
    // migration's fault: reconnect, find out from the history what
    // committed, and wait for the key again with what is left of --wait.
    // --wait bounds the time spent waiting, not the time spent migrating.
    let mut table_exists = table_exists;
    let mut waited_total = Duration::ZERO;
    loop {
        let waited = Instant::now();
        let deadline = waited + config.wait.saturating_sub(waited_total);
        let wait = steps.wait_for_lock(&mut session, table_exists, deadline, report);
        waited_total += waited.elapsed();
        report.lock.waited_ms = crate::millis(waited_total);
        let history = match wait? {
            LockWait::Acquired(history) => history,
            LockWait::CurrentMeanwhile(plan) => {
                return Ok(current_after(
                    report,
                    &plan,
                    "applied by another replica while this one waited",
                ))
            }
            LockWait::TimedOut if report.applied.is_empty() => {
                return Ok(report.lock_wait_timeout(
                    &common.key,
                    "",
                    "nothing was changed by this run",
                ))
            }
            // It applied some before losing its connection, then the key
            // stayed busy: not "nothing was changed", so not exit 3.
            LockWait::TimedOut => {
                let applied = report.applied.len();
                report.lock_wait_timeout(&common.key, "", &format!("this run applied {applied}"));
                return Err(Failure::failed(anyhow!(
                    "this run applied {applied} migration(s), lost its connection, then the lock {} \
                     stayed busy for the rest of --wait {}; what is left is pending (miglock status)",
                    common.key,
                    humantime::format_duration(config.wait)
                )));
            }
        };
        report.lock_acquired(&common.key, "");

        // From here the session holds the key; it lets go of it on every path
        // (the last migration's round trip, `release`, or its Drop).
        let history = match history {
            Some(history) => history.map_err(Failure::failed)?,
            None => crate::lock::mode::create_history(&mut session, common)?,
        };
        let plan = Plan::new(&set, &history, config.target_version, common.ahead)
            .map_err(|p| report.invalid(p))?;
        report.set_plan(&plan);
        if plan.pending.is_empty() {
            return Ok(current_after(
                report,
                &plan,
                "applied by another replica before the lock was taken",
            ));
        }
        match steps.migrate_pending(&mut session, &plan, report) {
            Ok(outcome) => {
                session.release();
                return Ok(outcome);
            }
            Err(Stop::Lost {
                migration,
                applied_on,
                failure,
            }) => {
                if steps.after_connection_loss(&mut session, migration, &applied_on, failure)? {
                    // Its commit went through before the loss: this run's.
                    report.applied.push(AppliedEntry {
                        version: migration.version.into(),
                        name: migration.name.clone(),
                        duration_ms: None,
                        applied_on: None,
                        transaction: migration.no_transaction().map(|_| false),
                    });
                }
                table_exists = true;
            }
            Err(Stop::Failed(failure)) => return Err(failure),
        }
    }
}

/// The schema is current after waiting. A run that applied some
/// migrations before it lost its connection, and found the rest applied
/// by another replica after reconnecting, still applied them.
fn current_after(report: &mut Report, plan: &Plan, why: &str) -> Outcome {
    match report.current(plan, why) {
        Outcome::Current if !report.applied.is_empty() => Outcome::Applied,
        outcome => outcome,
    }
}

fn check_target_version(config: &ApplyConfig, set: &MigrationSet) -> Result<(), Failure> {
    let Some(target) = config.target_version else {
        return Ok(());
    };
    match set.last_version() {
        Some(last) if target <= last => Ok(()),
        last => Err(Failure::usage(anyhow!(
            "--target {target} is beyond the newest migration in {} ({})",
            config.common.migrations.display(),
            last.map_or("there is none".to_string(), |v| format!("V{v}"))
        ))),
    }
}

fn names(plan: &Plan) -> String {
    plan.pending
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `--dry-run` prints.
fn render_plan(config: &ApplyConfig, plan: &Plan) -> String {
    let common = &config.common;
    let mut text = format!(
        "Plan for {} (table {}, lock key {}):\n",
        common.database, common.table, common.key
    );
    for m in &plan.pending {
        let how = m
            .no_transaction()
            .map_or(String::new(), |why| format!("  [no transaction: {why}]"));
        text.push_str(&format!("  apply {m}  ({}){how}\n", m.path.display()));
    }
    text.push_str(&format!(
        "{} pending, {} applied; nothing was changed (--dry-run).\n",
        plan.pending.len(),
        plan.applied.len()
    ));
    text
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
/// - `lock_timeout` 0 for the same reason: a role or database default (often
///   set for the application's role, which migrates too) would make a
///   migration queued behind a long query fail rather than wait; bounding
///   that wait is `--ddl-lock-timeout`'s job, which retries (SET LOCAL);
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
        ("lock_timeout", "0"),
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

/// The server stayed read-only for the whole connect timeout (exit 5, as
/// for a server that cannot be reached: the primary is what is missing).
fn read_only(config: &ApplyConfig) -> Failure {
    Failure::unavailable(anyhow!(
        "{} is a read-only server (a hot standby, or default_transaction_read_only is on) and was \
         still read-only after --connect-timeout {}: migrations need the primary. Point \
         --database-url at the primary (or list every host with target_session_attrs=read-write).",
        config.common.database,
        humantime::format_duration(config.common.connect_timeout)
    ))
}

/// Why applying stopped short.
enum Stop<'a> {
    /// The connection went away during `migration`.
    Lost {
        migration: &'a LocalMigration,
        applied_on: String,
        failure: Failure,
    },
    Failed(Failure),
}

impl From<Failure> for Stop<'_> {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

/// One apply run's fixed inputs, shared by its steps (and by the
/// transaction-mode run in `apply_transaction`).
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    pub(super) config: &'a ApplyConfig,
    pub(super) set: &'a MigrationSet,
    pub(super) progress: &'a Progress,
    pub(super) interrupt: &'a Interrupt,
}

impl<'a> Run<'a> {
    /// Tries the key until it is ours, the schema turns out current (another
    /// replica did the work meanwhile), or `--wait` runs out.
    fn wait_for_lock(
        &self,
        session: &mut LockSession,
        table_exists: bool,
        deadline: Instant,
        report: &mut Report,
    ) -> Result<LockWait<'a>, Failure> {
        let Run {
            config,
            set,
            progress,
            interrupt,
        } = *self;
        let common = &config.common;
        let key = common.key.clone();
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut spinner: Option<indicatif::ProgressBar> = None;
        let mut busy_logged: Option<Option<i32>> = None;
        let mut read_only_since: Option<Instant> = None;
        let waited = wait::until(session, deadline, interrupt, |session, _| {
            let attempt = session.try_acquire(table_exists.then_some(&common.table))?;
            if attempt.read_only {
                // As libpq's target_session_attrs=read-write: a failover
                // promotes a new primary within seconds, and a new
                // connection (DNS, a multi-host URL, a proxy) may reach it.
                let since = *read_only_since.get_or_insert_with(|| {
                    log::warn!(
                        "SERVER_READ_ONLY {} takes no writes (a hot standby, or default_transaction_read_only); \
                         retrying for up to --connect-timeout {}",
                        common.database,
                        humantime::format_duration(common.connect_timeout)
                    );
                    Instant::now()
                });
                let left = common.connect_timeout.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(read_only(config));
                }
                session.reconnect("the server is read-only", Instant::now() + left, interrupt)?;
                let pause = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                return Ok(Look::Again(pause));
            }
            read_only_since = None;
            if attempt.acquired {
                return Ok(Look::Done(LockWait::Acquired(attempt.history)));
            }
            if let Some(history) = attempt.history {
                let plan = Plan::new(set, &history?, config.target_version, common.ahead)
                    .map_err(|p| report.invalid(p))?;
                if plan.pending.is_empty() {
                    return Ok(Look::Done(LockWait::CurrentMeanwhile(plan)));
                }
                report.set_plan(&plan);
            }
            let (holder, waiters) = session.busy()?;
            // Logged the first time, and whenever the holder changes (a holder
            // gone between the attempt and this look is logged as such).
            let holder_pid = holder.as_ref().map(|h| h.pid);
            if busy_logged != Some(holder_pid) {
                busy_logged = Some(holder_pid);
                let who = holder
                    .as_ref()
                    .map_or("holder_pid=<gone>".to_string(), Backend::holder_log_fields);
                log::info!(
                    "LOCK_BUSY key={key} {who} waited_ms={} wait_ms={}",
                    crate::millis(started.elapsed()),
                    crate::millis(config.wait)
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
            // However many replicas wait, together they poll the server at
            // most about ATTEMPTS_PER_SECOND times a second: each waits at least
            // its share. The release notification, not the polling, is what
            // makes the handover quick.
            let share = Duration::from_secs_f64(f64::from(waiters) / ATTEMPTS_PER_SECOND / 0.75);
            let jitter = 0.5 + fastrand::f64() * 0.5;
            let pause = backoff.max(share).mul_f64(jitter);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            Ok(Look::Again(pause))
        })?;
        match waited {
            Some(waited) => Ok(waited),
            None if read_only_since.is_some() => Err(read_only(config)),
            None => Ok(LockWait::TimedOut),
        }
    }

    /// Applies what is pending, in order; the last migration's round trip
    /// also releases the key.
    fn migrate_pending(
        &self,
        session: &mut LockSession,
        plan: &Plan<'a>,
        report: &mut Report,
    ) -> Result<Outcome, Stop<'a>> {
        let Run {
            config,
            progress,
            interrupt,
            ..
        } = *self;
        let isolation = Isolation::resolve(session, &config.common.table)?;
        let bar = progress.bar(plan.pending.len() as u64);
        for (i, migration) in plan.pending.iter().enumerate() {
            if interrupt.is_set() {
                return Err(Failure::interrupted().into());
            }
            if let Some(bar) = &bar {
                bar.set_message(migration.to_string());
            }
            let started = Instant::now();
            // Also what tells this run's history row from another replica's.
            let applied_on = history::applied_on_now().map_err(Failure::failed)?;
            let last = i + 1 == plan.pending.len();
            let step = Step {
                migration,
                isolation: &isolation,
                config,
                applied_on: &applied_on,
                release_after: last,
                interrupt,
            };
            match migrate::apply_one(session, &step) {
                Ok(()) => {}
                Err(failure)
                    if failure.outcome == Outcome::Failed
                        && (session.is_closed() || failure.connection_lost()) =>
                {
                    return Err(Stop::Lost {
                        migration,
                        applied_on,
                        failure,
                    });
                }
                Err(failure) => return Err(Stop::Failed(failure)),
            }
            let duration_ms = crate::millis(started.elapsed());
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
                transaction: migration.no_transaction().map(|_| false),
            });
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        report::schema_current(
            plan.pending.last().map(ToString::to_string),
            plan.applied.len() + plan.pending.len(),
            &format!("this run applied {}", plan.pending.len()),
        );
        Ok(Outcome::Applied)
    }

    /// The connection died during a migration: connect again and read the
    /// history to learn what committed. A transactional migration committed
    /// with its row or not at all, so the run can carry on; a
    /// non-transactional one without its row may have committed part of its
    /// statements, which nobody can tell from here (exit 1). No connection
    /// within --connect-timeout: exit 5. `true` when the migration's own
    /// commit went through before the loss.
    fn after_connection_loss(
        &self,
        session: &mut LockSession,
        migration: &LocalMigration,
        applied_on: &str,
        failure: Failure,
    ) -> Result<bool, Failure> {
        let Run {
            config, interrupt, ..
        } = *self;
        let common = &config.common;
        let lost = failure.message();
        let started_before = session.server_started().map(str::to_string);
        let history = session
            .reconnect(
                &format!(
                    "the connection was lost during {migration} ({})",
                    failure
                        .detail
                        .sqlstate
                        .as_deref()
                        .map_or("no SQLSTATE".to_string(), |code| format!("SQLSTATE {code}"))
                ),
                Instant::now() + common.connect_timeout,
                interrupt,
            )
            .and_then(|()| history::read(session.client(), &common.table))
            .map_err(|reconnect| {
                if interrupt.is_set() {
                    return Failure::interrupted();
                }
                Failure::unavailable(anyhow!(
                    "{lost}\nReconnecting failed: {}. Each migration commits with its history row, so \
                     {migration} is either applied and recorded or not at all; `miglock status` tells which, \
                     and the next apply carries on from there.",
                    reconnect.message()
                ))
            })?;
        // Carrying on is right after a restart or a failover: a new server
        // (another postmaster start time) ended every session. With the
        // same server still up, the session was ended on purpose (a DBA's
        // pg_terminate_backend, `miglock unlock --force`) or the network
        // failed, and rust-postgres does not always pass on the server's
        // 57P01 that would tell them apart: running the migration again at
        // once could defeat a DBA, so the run stops and says so. Unless its
        // own commit went through before the session ended.
        let committed = history.as_ref().is_some_and(|h| {
            h.iter()
                .any(|a| a.version == i64::from(migration.version) && a.applied_on == applied_on)
        });
        if !committed && started_before.is_some() && session.server_start_time() == started_before {
            return Err(migrate::lost_while_server_stayed_up(
                &failure, migration, &lost,
            ));
        }
        // The row says who applied it: a waiter may have taken over and
        // applied the migration since, with its own applied_on.
        let row = history
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.version == i64::from(migration.version));
        let ours = row.as_ref().is_some_and(|row| row.applied_on == applied_on);
        let what = match row {
            Some(row) if row.applied_on == applied_on => {
                "it had committed, with its history row, before the connection was lost"
            }
            Some(_) => "this run's attempt was rolled back; another replica has applied it since",
            None if migration.no_transaction().is_some() => {
                return Err(Failure::failed(anyhow!(
                    "{lost}\nThe connection was lost during {migration}, which runs without a transaction: \
                     its history row was not written, and statements before the loss may have committed. \
                     miglock cannot tell which; check the database, then apply again (it runs the whole \
                     file again, so write such files to be re-runnable)."
                )));
            }
            None => "the server rolled it back",
        };
        log::warn!(
            "CONNECT_RETRY reconnected after losing the connection during {migration}: {what}; \
             carrying on under the lock"
        );
        Ok(ours)
    }
}
