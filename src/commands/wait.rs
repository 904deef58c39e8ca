//! `miglock wait`: block until every local migration is applied, for the
//! services that never migrate (`RUN_MIGRATIONS=0`) and must not start on
//! an old schema.
//!
//! One connection, idle between looks: it listens for the holder's release
//! notification, so it returns as soon as the migrating replica is done,
//! and otherwise reads the history every few seconds at most.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::config::WaitConfig;
use crate::error::Failure;
use crate::history;
use crate::interrupt::Interrupt;
use crate::lock::wait::{self, Look, Woken};
use crate::lock::{Identity, LockSession};
use crate::migrations::{MigrationSet, Plan};
use crate::outcome::Outcome;
use crate::output::Progress;
use crate::report::{self, Report};

const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(5);

pub fn run(
    config: &WaitConfig,
    report: &mut Report,
    progress: &Progress,
    interrupt: &Interrupt,
) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);
    let set = MigrationSet::load(&common.migrations).map_err(|p| report.invalid(p))?;

    let started = Instant::now();
    let deadline = started + config.timeout;
    let identity = Identity::for_command("wait", common);
    let mut session = LockSession::connect(common, identity, interrupt)?;

    let mut pause = FIRST_PAUSE;
    let mut spinner: Option<indicatif::ProgressBar> = None;
    let mut announced: Option<usize> = None;
    let mut pending = Vec::new();
    let current = wait::until(&mut session, deadline, interrupt, |session, woken| {
        // Behind a transaction pooler LISTEN and the waiting mark would
        // stay on a pooled server session: transaction mode only polls.
        if common.lock_mode == crate::lock::LockMode::Session {
            session.listen()?;
        }
        let history = history::read(session.client(), &common.table)?.unwrap_or_default();
        let plan = Plan::new(&set, &history, None, common.ahead).map_err(|p| report.invalid(p))?;
        report.set_plan(&plan);
        report.lock.waited_ms = crate::millis(started.elapsed());
        if plan.pending.is_empty() {
            report::schema_current(
                plan.applied.last().map(ToString::to_string),
                plan.applied.len(),
                &format!("waited_ms={}", report.lock.waited_ms),
            );
            return Ok(Look::Done(()));
        }
        pending = plan.pending.iter().map(ToString::to_string).collect();
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
                None => spinner = progress.spinner(message),
            }
        }
        // A release: look at once, and quickly again if still pending.
        pause = match woken {
            Woken::Notified | Woken::Start => FIRST_PAUSE,
            Woken::Timeout => (pause * 2).min(MAX_PAUSE),
        };
        let jitter = 0.75 + fastrand::f64() * 0.25;
        Ok(Look::Again(pause.mul_f64(jitter)))
    })?;
    match current {
        Some(()) => Ok(Outcome::Current),
        None => Err(Failure::new(
            Outcome::Pending,
            anyhow!(
                "timed out after {} (--timeout): still pending: {}",
                humantime::format_duration(config.timeout),
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
