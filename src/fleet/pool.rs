//! The workers: at most `--jobs` targets at once, each on its own thread
//! with its own connection, results gathered in target order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use super::job;
use super::summary::Finished;
use crate::config::{FleetConfig, Job};
use crate::context::Context;
use crate::outcome::Outcome;
use crate::output::Console;
use crate::report::Report;
use crate::targets::Target;
use crate::time::millis;

/// Failures stop `--fail-fast`; a busy lock, a pending schema or a signal
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

pub fn run_all(
    ctx: &Context,
    config: &FleetConfig,
    job: &Job,
    targets: &[Target],
) -> Vec<Finished> {
    let total = targets.len();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut results: Vec<Option<(Report, u64)>> = (0..total).map(|_| None).collect();
    let overall = ctx.progress.bar(total as u64);
    if let Some(bar) = &overall {
        bar.set_message("targets, 0 failed");
    }
    let mut failures = 0usize;
    let (sender, receiver) = mpsc::channel::<(usize, Report, u64)>();
    let (progress, interrupt, format) = (ctx.progress, ctx.interrupt, ctx.format);
    std::thread::scope(|scope| {
        for worker in 0..config.jobs.min(total) {
            let sender = sender.clone();
            let (next, stop) = (&next, &stop);
            let spawned = std::thread::Builder::new()
                .name(format!("target-{worker}"))
                .spawn_scoped(scope, move || loop {
                    // Each worker's own context: a target's text goes
                    // nowhere (the summary speaks for it).
                    let none = Console::none();
                    let ctx = Context {
                        progress,
                        interrupt,
                        format,
                        out: &none,
                    };
                    if stop.load(Ordering::SeqCst) || interrupt.is_set() {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(target) = targets.get(index) else {
                        break;
                    };
                    let started = Instant::now();
                    let report = run_one(&ctx, config, job, target);
                    if config.fail_fast && is_failure(report.outcome) {
                        // Before the result is sent, so with --jobs 1 the
                        // next target is never taken.
                        stop.store(true, Ordering::SeqCst);
                    }
                    if sender
                        .send((index, report, millis(started.elapsed())))
                        .is_err()
                    {
                        break;
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
                failures += 1;
            }
            log::info!(
                "TARGET_DONE target={} outcome={} exit_code={} applied={} ms={ms}",
                target.label(),
                report.outcome,
                report.exit_code,
                report.applied.len()
            );
            if let Some(bar) = &overall {
                bar.inc(1);
                bar.set_message(format!("targets, {failures} failed"));
            }
            results[index] = Some((report, ms));
        }
    });
    targets
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
        .collect()
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
