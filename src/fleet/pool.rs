//! The workers: at most `--jobs` targets at once, each on its own thread
//! with its own connection, results gathered in target order.

use std::sync::{mpsc, Mutex};
use std::time::Instant;

use super::job;
use super::summary::{Finished, Stopped};
use crate::config::{FleetConfig, Job};
use crate::context::Context;
use crate::outcome::Outcome;
use crate::output::Console;
use crate::report::Report;
use crate::targets::Target;
use crate::time::millis;

/// Failures count for `--canary`, `--max-failures` and `--fail-fast`; a busy lock, a pending schema or a signal
/// do not count as one. A migration blocked by another session's table
/// lock does: it would block the next tenants' just the same.
pub fn is_failure(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failed
            | Outcome::Usage
            | Outcome::Invalid
            | Outcome::Unavailable
            | Outcome::Blocked
    )
}

/// Every target's result (in target order), and why some never started.
pub struct Ran {
    pub finished: Vec<Finished>,
    pub stopped: Option<Stopped>,
}

/// Runs the targets, `--jobs` at once: first the `--canary` wave, whose
/// any failure leaves the rest unstarted, then the rest, which stop
/// starting targets once `--max-failures` failed (`--fail-fast`: one).
pub fn run_all(ctx: &Context, config: &FleetConfig, job: &Job, targets: &[Target]) -> Ran {
    let total = targets.len();
    let mut results: Vec<Option<(Report, u64)>> = (0..total).map(|_| None).collect();
    let overall = ctx.progress.bar(total as u64);
    if let Some(bar) = &overall {
        bar.set_message("targets, 0 failed");
    }
    let max_failures = match (config.max_failures, config.fail_fast) {
        (Some(max), true) => Some(max.min(1)),
        (max, fail_fast) => max.or(fail_fast.then_some(1)),
    };
    let canary = config.canary.min(total);
    let mut waves = Waves {
        ctx,
        config,
        job,
        targets,
        results: &mut results,
        overall: overall.as_ref(),
        failures: 0,
    };
    let mut stopped = None;
    if canary > 0 {
        log::info!("CANARY targets={canary} of={total}: the rest start once they all succeed");
        let failed = waves.run(0..canary, Some(1));
        if failed > 0 {
            let unstarted = waves.results.iter().filter(|r| r.is_none()).count();
            log::error!(
                "CANARY_FAILED {failed} of the first {canary} target(s) failed: the other \
                 {unstarted} were not started"
            );
            stopped = Some(Stopped::Canary);
        }
    }
    if stopped.is_none() && !ctx.interrupt.is_set() {
        let before = waves.failures;
        waves.run(
            canary..total,
            max_failures.map(|max| max.saturating_sub(before)),
        );
        if let Some(max) = max_failures.filter(|max| waves.failures >= *max) {
            if waves.results.iter().any(Option::is_none) {
                log::error!("MAX_FAILURES {max} target(s) failed: the others were not started");
                stopped = Some(Stopped::MaxFailures(max));
            }
        }
    }
    let finished = targets
        .iter()
        .zip(results)
        .map(|(target, result)| {
            let (report, ms) = match result {
                Some((report, ms)) => (Some(report), ms),
                None => (None, 0),
            };
            Finished {
                target: target.clone(),
                report,
                ms,
            }
        })
        .collect();
    Ran { finished, stopped }
}

/// A wave's shared state, under one lock.
struct Claim {
    next: usize,
    stop: bool,
    failed: usize,
}

/// What the waves share: where results go, and the failures so far.
struct Waves<'a, 'r> {
    ctx: &'a Context<'a>,
    config: &'a FleetConfig,
    job: &'a Job,
    targets: &'a [Target],
    results: &'r mut Vec<Option<(Report, u64)>>,
    overall: Option<&'a indicatif::ProgressBar>,
    failures: usize,
}

impl Waves<'_, '_> {
    /// Runs `range` of the targets, `--jobs` at once; a worker starts no
    /// other target once `stop_after` of this wave's have failed. Returns
    /// this wave's failures.
    fn run(&mut self, range: std::ops::Range<usize>, stop_after: Option<usize>) -> usize {
        let (config, job, targets) = (self.config, self.job, self.targets);
        // The next target to take, whether to take any more, and the
        // failures so far: one lock, so that no target is taken once the
        // failure that stops the wave is counted.
        let claim = Mutex::new(Claim {
            next: range.start,
            stop: stop_after == Some(0),
            failed: 0,
        });
        let (sender, receiver) = mpsc::channel::<(usize, Report, u64)>();
        let (progress, interrupt, format) =
            (self.ctx.progress, self.ctx.interrupt, self.ctx.format);
        let mut this_wave = 0;
        std::thread::scope(|scope| {
            for worker in 0..config.jobs.min(range.len()) {
                let sender = sender.clone();
                let (claim, end) = (&claim, range.end);
                let spawned = std::thread::Builder::new()
                    .name(format!("target-{worker}"))
                    .spawn_scoped(scope, move || {
                        // Consecutive targets of one database share a
                        // connection (see `connect::spare`).
                        let _kept = crate::connect::spare::enable();
                        loop {
                            // Each worker's own context: a target's text goes
                            // nowhere (the summary speaks for it).
                            let none = Console::none();
                            let ctx = Context {
                                progress,
                                interrupt,
                                format,
                                out: &none,
                            };
                            let index = {
                                let mut claim = claim.lock().unwrap_or_else(|p| p.into_inner());
                                if claim.stop || interrupt.is_set() || claim.next >= end {
                                    break;
                                }
                                claim.next += 1;
                                claim.next - 1
                            };
                            let started = Instant::now();
                            let report = run_one(&ctx, config, job, &targets[index]);
                            if is_failure(report.outcome) {
                                let mut claim = claim.lock().unwrap_or_else(|p| p.into_inner());
                                claim.failed += 1;
                                // Before the result is sent, so with --jobs 1
                                // the next target is never taken.
                                if stop_after.is_some_and(|max| claim.failed >= max) {
                                    claim.stop = true;
                                }
                            }
                            if sender
                                .send((index, report, millis(started.elapsed())))
                                .is_err()
                            {
                                break;
                            }
                        }
                    });
                if let Err(e) = spawned {
                    log::warn!("cannot start worker thread {worker}: {e}");
                }
            }
            drop(sender);
            for (index, report, ms) in receiver {
                let target = &targets[index];
                if is_failure(report.outcome) {
                    self.failures += 1;
                    this_wave += 1;
                }
                log::info!(
                    "TARGET_DONE target={} outcome={} exit_code={} applied={} ms={ms}",
                    target.label(),
                    report.outcome,
                    report.exit_code,
                    report.applied.len()
                );
                if let Some(bar) = self.overall {
                    bar.inc(1);
                    bar.set_message(format!("targets, {} failed", self.failures));
                }
                self.results[index] = Some((report, ms));
            }
        });
        this_wave
    }
}

/// One target, exactly as `miglock <command>` would run it alone; its
/// error is logged (naming the target) rather than printed bare.
fn run_one(ctx: &Context, config: &FleetConfig, job: &Job, target: &Target) -> Report {
    let label = target.label();
    crate::output::set_log_context(Some(label.clone()));
    let spinner = ctx.progress.spinner(label);
    let mut report = Report::new(job.name());
    let result = job::common(config, target)
        .map(|common| job::for_target(job, common, target.schema.as_deref()))
        .and_then(|job| job::run(ctx, &job, &mut report));
    match result {
        Ok(outcome) => report.finish(outcome, job::exit_code(job, outcome)),
        Err(failure) => {
            let failure = if ctx.interrupt.is_set() {
                failure.after_signal()
            } else {
                failure
            };
            log::error!("{}", failure.message());
            report.fail(&failure, job::exit_code(job, failure.outcome));
        }
    }
    // The connection is closed: a later signal has nothing to cancel here.
    ctx.interrupt.forget();
    drop(spinner);
    crate::output::set_log_context(None);
    report
}
