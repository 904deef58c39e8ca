//! `miglock wait`: block until every local migration is applied, for the
//! services that never migrate (`RUN_MIGRATIONS=0`) and must not start on
//! an old schema.
//!
//! One connection, idle between looks: it listens for the holder's release
//! notification, so it returns as soon as the migrating replica is done,
//! and otherwise reads the history every few seconds at most.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use postgres::Client;

use crate::config::WaitConfig;
use crate::db;
use crate::error::Failure;
use crate::history;
use crate::interrupt::Interrupt;
use crate::lock::{self, Identity};
use crate::migrations::{MigrationSet, Plan};
use crate::outcome::Outcome;
use crate::output::Progress;
use crate::report::Report;

use super::millis;

const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(5);

pub fn run(
    config: &WaitConfig,
    report: &mut Report,
    progress: &Progress,
    interrupt: &Interrupt,
) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.describe(common);
    let set = MigrationSet::load(&common.migrations).map_err(|problems| {
        report.problems = problems.0.clone();
        Failure::invalid(problems)
    })?;

    let started = Instant::now();
    let deadline = started + config.timeout;
    let identity = super::identity("wait", common);
    let mut client = super::connect(common, &identity, interrupt)?;
    listen(&mut client, config, &identity)?;

    let mut pause = FIRST_PAUSE;
    let mut spinner: Option<indicatif::ProgressBar> = None;
    let mut announced: Option<usize> = None;
    loop {
        let history = match history::read(&mut client, &common.table) {
            Ok(history) => history.unwrap_or_default(),
            Err(_) if client.is_closed() => {
                client = super::reconnect(common, &identity, deadline, interrupt)?;
                listen(&mut client, config, &identity)?;
                continue;
            }
            Err(failure) => return Err(failure),
        };
        let plan = Plan::new(&set, &history, None).map_err(|problems| {
            report.problems = problems.0.clone();
            Failure::invalid(problems)
        })?;
        report.set_pending(&plan);
        report.lock.waited_ms = millis(started.elapsed());
        let names: Vec<String> = plan.pending.iter().map(|m| m.to_string()).collect();
        if names.is_empty() {
            let version = plan.applied.last().map_or("none".to_string(), |a| {
                format!("V{}__{}", a.version, a.name)
            });
            log::info!(
                "SCHEMA_CURRENT version={version} applied={} waited_ms={}",
                plan.applied.len(),
                report.lock.waited_ms
            );
            return Ok(Outcome::Current);
        }
        if announced != Some(names.len()) {
            announced = Some(names.len());
            log::info!(
                "WAITING_FOR_SCHEMA pending={} next={}",
                names.len(),
                names[0]
            );
            let message = format!("waiting for {} to be applied", list(&names));
            match &spinner {
                Some(bar) => bar.set_message(message),
                None => spinner = progress.spinner(message),
            }
        }

        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::new(
                Outcome::Pending,
                anyhow!(
                    "timed out after {} (--timeout): still pending: {}",
                    humantime::format_duration(config.timeout),
                    names.join(", ")
                ),
            ));
        }
        let jitter = 0.75 + fastrand::f64() * 0.25;
        let waited = lock::idle_wait(&mut client, pause.mul_f64(jitter).min(remaining), interrupt);
        if interrupt.is_set() {
            return Err(Failure::interrupted());
        }
        match waited {
            // A release: look at once, and quickly again if still pending.
            Ok(true) => pause = FIRST_PAUSE,
            Ok(false) => pause = (pause * 2).min(MAX_PAUSE),
            Err(_) if client.is_closed() => {
                client = super::reconnect(common, &identity, deadline, interrupt)?;
                listen(&mut client, config, &identity)?
            }
            Err(e) => return Err(db::failed(&e, "the connection failed")),
        }
    }
}

/// Names this session and listens for the holder's release; the waiting
/// mark lets `status` list this session among the waiters.
fn listen(client: &mut Client, config: &WaitConfig, identity: &Identity) -> Result<(), Failure> {
    let key = &config.common.key;
    client
        .simple_query(&format!(
            "SELECT set_config('application_name', {}, false); LISTEN {}; {}",
            crate::sql::literal(&identity.application_name(Some("waiting"))),
            key.channel(),
            key.mark_waiting_sql()
        ))
        .map_err(|e| db::failed(&e, "cannot listen for the lock's release"))?;
    Ok(())
}

fn list(names: &[String]) -> String {
    match names {
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        [] => String::new(),
    }
}
