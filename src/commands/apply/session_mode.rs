//! `apply` in session mode (the default): one connection waits for the
//! key, holds it while every pending migration runs, and releases it with
//! the last one's round trip.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::run::Run;
use crate::backoff::Backoff;
use crate::error::Failure;
use crate::lock::wait::{self, Look, Woken};
use crate::lock::{self, Attempt, LockMode, LockSession};
use crate::migrate::{self, invalid_indexes, Lost, SessionBaseline, Step};
use crate::migrations::history::{self, HistoryRow};
use crate::migrations::Plan;
use crate::outcome::Outcome;
use crate::report::{self, AppliedEntry, Report};
use crate::time::{human, millis};

/// First pause between lock attempts; it doubles up to eight seconds.
/// Waiters are woken by the holder's NOTIFY on release, so polling is only
/// the fallback for a holder that died without one: it can be slow, and
/// must be, so a hundred waiting replicas do not hammer the server.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The polling budget shared by all the replicas waiting for one key.
const ATTEMPTS_PER_SECOND: f64 = 20.0;

/// Tries after a release notification (or finding the key released since
/// the last try), and the pause before the first (growing by as much again
/// each time: 2, 4, 6, 8, 10 ms).
const QUICK_TRIES: u32 = 5;
const QUICK_PAUSE: Duration = Duration::from_millis(2);

pub(super) fn apply(
    mut session: LockSession,
    run: Run,
    table_exists: bool,
    report: &mut Report,
) -> Result<Outcome, Failure> {
    let config = run.config;
    let common = &config.common;
    // A connection lost under the lock (a restart, a failover) is not the
    // migration's fault: reconnect, find out from the history what
    // committed, and wait for the key again with what is left of --wait.
    // --wait bounds the time spent waiting, not the time spent migrating.
    let mut table_exists = table_exists;
    let mut waited_total = Duration::ZERO;
    // Here for the INVALID indexes alone (see below).
    let nothing_pending = report.pending.is_empty();
    loop {
        let waited = Instant::now();
        let deadline = waited + config.wait.saturating_sub(waited_total);
        let wait = wait_for_lock(&mut session, run, table_exists, deadline, report);
        waited_total += waited.elapsed();
        report.lock.waited_ms = millis(waited_total);
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
                    LockMode::Session,
                    "nothing was changed by this run",
                ))
            }
            // It applied some before losing its connection, then the key
            // stayed busy: not "nothing was changed", so not exit 3.
            LockWait::TimedOut => {
                let applied = report.applied.len();
                report.lock_wait_timeout(
                    &common.key,
                    LockMode::Session,
                    &format!("this run applied {applied}"),
                );
                return Err(Failure::failed(anyhow!(
                    "this run applied {applied} migration(s), lost its connection, then the lock {} \
                     stayed busy for the rest of --wait {}; what is left is pending (miglock status)",
                    common.key,
                    human(config.wait)
                )));
            }
        };
        report.lock_acquired(&common.key, LockMode::Session);

        // From here the session holds the key; it lets go of it on every path
        // (the last migration's round trip, `release`, or its Drop).
        let history = match history {
            Some(history) => history.map_err(Failure::failed)?,
            None => session.create_history()?,
        };
        let plan = run.plan(&history, report)?;
        report.set_plan(&plan);
        // The past before the new: a pending migration may need the index
        // (a foreign key needs a valid unique one), and a rebuild that
        // fails stops the run before anything new is applied.
        if run.rebuild {
            report.invalid_indexes = Some(invalid_indexes::rebuild(
                &mut session,
                run.set,
                &history,
                &config.migrate,
                run.ctx.interrupt,
            )?);
        }
        if plan.pending.is_empty() {
            let why = if nothing_pending {
                "nothing pending"
            } else {
                "applied by another replica before the lock was taken"
            };
            return Ok(current_after(report, &plan, why));
        }
        match migrate_pending(&mut session, run, &plan, report) {
            Ok(outcome) => {
                session.release();
                return Ok(outcome);
            }
            Err(Stop::Lost(lost)) => {
                let started_before = session.server_started().map(str::to_string);
                let ours = migrate::after_connection_loss(
                    &mut session,
                    &lost,
                    started_before.as_deref(),
                    LockMode::Session,
                    run.ctx.interrupt,
                )?;
                if ours {
                    // Its commit went through before the loss: this run's.
                    report
                        .applied
                        .push(AppliedEntry::by_this_run(lost.migration, None));
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

enum LockWait<'a> {
    /// This session holds the key; the history as read under it (`None`:
    /// the table has yet to be created).
    Acquired(Option<anyhow::Result<Vec<HistoryRow>>>),
    /// Another replica applied everything while this one waited.
    CurrentMeanwhile(Plan<'a>),
    TimedOut,
}

/// The server stayed read-only for the whole connect timeout (exit 5, as
/// for a server that cannot be reached: the primary is what is missing).
fn read_only(run: Run) -> Failure {
    let common = &run.config.common;
    Failure::unavailable(anyhow!(
        "{} is a read-only server (a hot standby, or default_transaction_read_only is on) and was \
         still read-only after --connect-timeout {}: migrations need the primary. Point \
         --database-url at the primary (or list every host with target_session_attrs=read-write).",
        common.database,
        human(common.connect_timeout)
    ))
}

/// Why applying stopped short.
enum Stop<'a> {
    /// The connection went away during a migration.
    Lost(Lost<'a>),
    Failed(Failure),
}

impl From<Failure> for Stop<'_> {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

/// Tries the key until it is ours, the schema turns out current (another
/// replica did the work meanwhile), or `--wait` runs out.
fn wait_for_lock<'a>(
    session: &mut LockSession,
    run: Run<'a>,
    table_exists: bool,
    deadline: Instant,
    report: &mut Report,
) -> Result<LockWait<'a>, Failure> {
    let Run { config, ctx, .. } = run;
    let common = &config.common;
    let key = common.key.clone();
    let started = Instant::now();
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut spinner: Option<indicatif::ProgressBar> = None;
    let mut busy_logged: Option<Option<i32>> = None;
    let mut read_only_since: Option<Instant> = None;
    let mut quick_tries = 0;
    let waited = wait::until(session, deadline, ctx.interrupt, |session, woken| {
        let history = match session.try_acquire(table_exists)? {
            Attempt::ReadOnly => {
                // As libpq's target_session_attrs=read-write: a failover
                // promotes a new primary within seconds, and a new
                // connection (DNS, a multi-host URL, a proxy) may reach it.
                let since = *read_only_since.get_or_insert_with(|| {
                    log::warn!(
                        "SERVER_READ_ONLY {} takes no writes (a hot standby, or default_transaction_read_only); \
                         retrying for up to --connect-timeout {}",
                        common.database,
                        human(common.connect_timeout)
                    );
                    Instant::now()
                });
                let left = common.connect_timeout.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(read_only(run));
                }
                session.reconnect(
                    "the server is read-only",
                    Instant::now() + left,
                    ctx.interrupt,
                )?;
                return Ok(Look::Again(backoff.next_pause()));
            }
            Attempt::Acquired { history } => return Ok(Look::Done(LockWait::Acquired(history))),
            Attempt::Busy { history } => history,
        };
        read_only_since = None;
        if let Some(history) = history {
            let plan = run.plan(&history?, report)?;
            // A run here to rebuild indexes waits for the key all the same.
            if plan.pending.is_empty() && !run.rebuild {
                return Ok(Look::Done(LockWait::CurrentMeanwhile(plan)));
            }
            report.set_plan(&plan);
        }
        let holders = session.holders()?;
        // Logged the first time, and whenever the holder changes (a holder
        // gone between the attempt and this look is logged as such).
        let holder_pid = holders.holder.as_ref().map(|h| h.pid);
        if busy_logged != Some(holder_pid) {
            busy_logged = Some(holder_pid);
            lock::log_busy(
                &key,
                LockMode::Session,
                holders.holder.as_ref(),
                holders.tool.as_ref(),
                millis(started.elapsed()),
                millis(config.wait),
            );
            let who = holders.holder.as_ref().map_or(
                "holder_pid=<gone>".to_string(),
                crate::lock::Backend::holder_log_fields,
            );
            let tool = holders.tool.as_ref().map_or(String::new(), |t| {
                format!("{}'s lock {} held: ", t.tool, t.key)
            });
            let message = format!("waiting for lock {key} ({tool}{who})");
            match &spinner {
                Some(bar) => bar.set_message(message),
                None => spinner = ctx.progress.spinner(message),
            }
        }
        let gone = holders.holder.is_none();
        if !gone {
            report.lock.holder = holders.holder;
            report.lock.holder_tool_key = holders.tool;
        }
        // A release is under way: the holder's notification comes with its
        // last COMMIT and its unlock microseconds after, so an attempt woken
        // by it (or one that finds the holder already gone) may just have
        // been too early. Try again at once, a few times, rather than wait
        // for a notification already spent.
        if woken == Woken::Notified {
            quick_tries = 0;
        }
        if (gone || woken == Woken::Notified || quick_tries > 0) && quick_tries < QUICK_TRIES {
            quick_tries += 1;
            return Ok(Look::Again(QUICK_PAUSE * quick_tries));
        }
        quick_tries = 0;
        // However many replicas wait, together they poll the server at
        // most about ATTEMPTS_PER_SECOND times a second: each waits at least
        // its share. The release notification, not the polling, is what
        // makes the handover quick.
        let share =
            Duration::from_secs_f64(f64::from(holders.waiters) / ATTEMPTS_PER_SECOND / 0.75);
        Ok(Look::Again(backoff.next_pause_at_least(share)))
    })?;
    match waited {
        Some(waited) => Ok(waited),
        None if read_only_since.is_some() => Err(read_only(run)),
        None => Ok(LockWait::TimedOut),
    }
}

/// Applies what is pending, in order; the last migration's round trip
/// also releases the key.
fn migrate_pending<'a>(
    session: &mut LockSession,
    run: Run<'a>,
    plan: &Plan<'a>,
    report: &mut Report,
) -> Result<Outcome, Stop<'a>> {
    let Run { config, ctx, .. } = run;
    let baseline = SessionBaseline::new(
        session.table(),
        LockMode::Session,
        &config.migrate,
        session.identity(),
        session.server_version(),
    );
    let bar = ctx.progress.bar(plan.pending.len() as u64);
    for (i, migration) in plan.pending.iter().enumerate() {
        if ctx.interrupt.is_set() {
            return Err(Failure::interrupted().into());
        }
        if let Some(bar) = &bar {
            bar.set_message(migration.to_string());
        }
        let started = Instant::now();
        // Also what tells this run's history row from another replica's.
        let applied_on = history::applied_on_now().map_err(Failure::failed)?;
        let step = Step {
            migration,
            baseline: &baseline,
            options: &config.migrate,
            lock_mode: LockMode::Session,
            applied_on: &applied_on,
            release_after: i + 1 == plan.pending.len(),
            interrupt: ctx.interrupt,
        };
        match migrate::apply_one(session, &step) {
            Ok(()) => {}
            Err(failure)
                if failure.outcome == Outcome::Failed
                    && (session.is_closed() || failure.connection_lost()) =>
            {
                return Err(Stop::Lost(Lost {
                    migration,
                    applied_on,
                    failure,
                }));
            }
            Err(failure) => return Err(Stop::Failed(failure)),
        }
        run.applied(report, migration, started);
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    // What this run applied, a lost connection's carried-through ones
    // included (the JSON lists the same).
    report::schema_current(
        plan.newest_after(),
        plan.recorded_after(),
        &format!("this run applied {}", report.applied.len()),
    );
    Ok(Outcome::Applied)
}
