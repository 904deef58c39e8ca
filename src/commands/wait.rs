//! `miglock wait`: block until every local migration is applied, for the
//! services that never migrate (`RUN_MIGRATIONS=0`) and must not start on
//! an old schema.
//!
//! One connection, idle between looks: it listens for the holder's release
//! notification, so it returns as soon as the migrating replica is done,
//! and otherwise reads the history every few seconds at most.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::backoff::Backoff;
use crate::config::WaitConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::lock::wait::{self, Look, Woken};
use crate::lock::{LockMode, LockModeFlag, LockSession};
use crate::migrate::settings;
use crate::migrations::Plan;
use crate::outcome::Outcome;
use crate::report::{self, Report};
use crate::time::{human, millis};

/// Looks come quickly after a release (another may follow at once), then
/// slow down while nothing happens.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(5);

pub fn run(ctx: &Context, config: &WaitConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);
    let mut reading = common.read_migrations();
    // A warning only: a refusing `wait` would keep applications from
    // starting, and it runs no migration.
    reading.judge_writable(common.allow_world_writable, false);
    let set = reading.strict().map_err(|p| report.invalid(p))?;

    let started = Instant::now();
    let deadline = started + config.timeout;
    let mut session =
        LockSession::connect(common.lock_target(), common.identity("wait"), ctx.interrupt)?;
    settings::check(&mut session, &config.settings)?;
    if let Some(sql) = settings::given_sql(&config.settings) {
        session = session.with_settings(sql);
    }

    let mut backoff = Backoff::new(FIRST_PAUSE, MAX_PAUSE).jitter(0.75);
    let mut spinner: Option<indicatif::ProgressBar> = None;
    let mut announced: Option<usize> = None;
    let mut pending = Vec::new();
    // Behind a pooler LISTEN and the waiting mark would stay on a pooled
    // server session: transaction mode only polls. Under auto, the first
    // look tells (its history read asks for pg_backend_pid() too).
    let mut listens = match common.lock_mode {
        LockModeFlag::Session => Some(true),
        LockModeFlag::Transaction => Some(false),
        LockModeFlag::Auto => None,
    };
    let current = wait::until(&mut session, deadline, ctx.interrupt, |session, woken| {
        if listens == Some(true) {
            session.listen()?;
        }
        // On each connection: a lost one is made again by the loop.
        session.send_settings()?;
        let history = session.read_history()?.unwrap_or_default();
        let plan = Plan::new(&set, &history, None, common.ahead).map_err(|p| report.invalid(p))?;
        report.set_plan(&plan);
        report.lock.waited_ms = millis(started.elapsed());
        if plan.pending.is_empty() {
            report::schema_current(
                plan.newest_applied(),
                plan.applied.len(),
                &format!("waited_ms={}", report.lock.waited_ms),
            );
            return Ok(Look::Done(()));
        }
        // Before the first look's early return below: a deadline that
        // passes right after it (a slow connection, a short --timeout)
        // still names what is pending.
        pending = plan.pending.iter().map(ToString::to_string).collect();
        if listens.is_none() {
            let decision = session.decide_lock_mode(LockModeFlag::Auto, false)?;
            decision.log(log::Level::Debug);
            listens = Some(decision.mode == LockMode::Session);
            if listens == Some(true) {
                // Listen, and look again at once: a release between this
                // look and the LISTEN would not wake this waiter.
                return Ok(Look::Again(Duration::ZERO));
            }
        }
        if announced != Some(pending.len()) {
            announced = Some(pending.len());
            log::info!(
                "WAITING_FOR_SCHEMA pending={} next={}",
                pending.len(),
                pending[0]
            );
            let message = format!("waiting for {} to be applied", list(&pending));
            match &spinner {
                Some(bar) => bar.set_message(message),
                None => spinner = ctx.progress.spinner(message),
            }
        }
        // A release: look at once, and quickly again if still pending.
        if matches!(woken, Woken::Notified | Woken::Start) {
            backoff.reset();
        }
        Ok(Look::Again(backoff.next_pause()))
    })?;
    match current {
        Some(()) => Ok(Outcome::Current),
        None => Err(Failure::new(
            Outcome::Pending,
            anyhow!(
                "timed out after {} (--timeout): still pending: {}",
                human(config.timeout),
                pending.join(", ")
            ),
        )),
    }
}

fn list(names: &[String]) -> String {
    match names {
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        [] => String::new(),
    }
}
