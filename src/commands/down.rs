//! `miglock down --to VERSION`: revert the applied migrations above a
//! version with their tool's down scripts (goose's and dbmate's Down
//! sections, golang-migrate's and sqlx's `.down.sql`), newest first, each
//! in one transaction with its history change, under the lock.
//!
//! Everything it will need is checked before anything runs: each
//! migration to revert has its file and a down script, the set reads
//! cleanly. What it will revert is shown and confirmed (as `unlock` and
//! `repair` confirm), then read again under the lock: a migration another
//! replica applied meanwhile is not reverted behind the user's back.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Instant;

use anyhow::anyhow;

use crate::config::DownConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::lock::{self, wait, LockMode, LockSession};
use crate::migrate::{self, Options, SessionBaseline, Step};
use crate::migrations::history::{self, HistoryRow};
use crate::migrations::{every_problem, Layout, LocalMigration, Problem, ProblemKind, Problems};
use crate::outcome::Outcome;
use crate::report::{AppliedEntry, Report};

pub fn run(ctx: &Context, config: &DownConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);
    report.dry_run = config.dry_run;
    let layout = common.table.layout();
    if matches!(layout, Layout::Refinery | Layout::Flyway) {
        return Err(Failure::usage(anyhow!(
            "the {layout} layout has no down migrations: write a new migration that reverts what \
             is to be undone (down runs goose's, dbmate's, golang-migrate's and sqlx's down \
             scripts)"
        )));
    }
    if !config.yes && !config.dry_run && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(anyhow!(
            "down reverts migrations: confirm with --yes when stdin is not a terminal (or see \
             what it would do with --dry-run)"
        )));
    }
    let mut reading = common.read_migrations();
    reading.judge_writable(common.allow_world_writable, true);
    let target = common.lock_target();
    let mut session = LockSession::connect(target, common.identity("down"), ctx.interrupt)?;
    let history = session.read_history()?.unwrap_or_default();
    let downs = to_revert(&reading, &history, config).map_err(|p| report.invalid(p))?;
    report.reverted = Some(entries(&downs, &[]));
    if downs.is_empty() {
        log::info!(
            "SCHEMA_CURRENT nothing is applied above {}: nothing to revert",
            config.to
        );
        ctx.out.print(&render(&downs, DownTo::Plan(config), true));
        return Ok(Outcome::Reverted);
    }
    if config.dry_run {
        ctx.out.print(&render(&downs, DownTo::Plan(config), true));
        return Ok(Outcome::Reverted);
    }
    if !config.yes {
        ctx.out.print(&render(&downs, DownTo::Plan(config), true));
        let question = format!("Revert {} migration(s)?", downs.len());
        let yes = crate::output::confirm(&question)
            .map_err(|e| Failure::failed(anyhow!("cannot read the answer: {e}")))?;
        if !yes {
            return Ok(Outcome::Declined);
        }
    }

    lock::session_lock_only("down", common.lock_mode, &mut session)?;
    let acquired = wait::acquire(
        &mut session,
        config.wait,
        ctx.interrupt,
        "nothing was reverted",
    )?;
    if !report.acquired(acquired) {
        return Ok(Outcome::Skipped);
    }
    // Read again under the lock: what was confirmed must still be so.
    let now = session.read_history()?.unwrap_or_default();
    // An error drops the session, which unlocks.
    let again = to_revert(&reading, &now, config).map_err(|p| report.invalid(p))?;
    let versions = |d: &[LocalMigration]| -> Vec<String> {
        d.iter().map(|m| m.id.version.to_string()).collect()
    };
    if versions(&again) != versions(&downs) {
        return Err(Failure::failed(anyhow!(
            "the history changed since it was read (another run applied or reverted \
             migrations): nothing was reverted; run down again to see what it would revert now"
        )));
    }
    revert(ctx, &mut session, &downs, report)
}

/// Runs each down migration in turn; the last one's round trip also
/// releases the key.
fn revert(
    ctx: &Context,
    session: &mut LockSession,
    downs: &[LocalMigration],
    report: &mut Report,
) -> Result<Outcome, Failure> {
    let options = Options::default();
    let baseline = SessionBaseline::new(
        session.table(),
        LockMode::Session,
        &options,
        session.identity(),
        session.server_version(),
    );
    let mut took = Vec::new();
    for (i, migration) in downs.iter().enumerate() {
        if ctx.interrupt.is_set() {
            return Err(Failure::interrupted());
        }
        let started = Instant::now();
        let applied_on = history::applied_on_now().map_err(Failure::failed)?;
        let step = Step {
            migration,
            baseline: &baseline,
            options: &options,
            lock_mode: LockMode::Session,
            applied_on: &applied_on,
            release_after: i + 1 == downs.len(),
            interrupt: ctx.interrupt,
        };
        if let Err(failure) = migrate::apply_one(session, &step) {
            report.reverted = Some(entries(&downs[..i], &took));
            return Err(failure);
        }
        let ms = started.elapsed().as_millis() as u64;
        log::info!(
            "MIGRATION_REVERTED version={} name={} ms={ms}",
            migration.id.version,
            migration.id.name
        );
        took.push(ms);
        report.reverted = Some(entries(&downs[..=i], &took));
    }
    ctx.out.print(&render(downs, DownTo::Done, false));
    Ok(Outcome::Reverted)
}

/// The down migrations of the applied ones above `--to`, newest first, or
/// every problem that keeps them from running.
fn to_revert(
    reading: &crate::migrations::Reading,
    history: &[HistoryRow],
    config: &DownConfig,
) -> Result<Vec<LocalMigration>, Problems> {
    let (plan, mut problems) = every_problem(reading, Some(history), None, config.common.ahead);
    let set = &reading.set;
    let mut downs = Vec::new();
    if let Some(plan) = &plan {
        for applied in plan.applied.iter().rev() {
            if applied.id.version <= config.to {
                break;
            }
            let Some(file) = set
                .migrations
                .iter()
                .find(|m| m.id.version == applied.id.version)
            else {
                problems.push(problem(
                    ProblemKind::Missing,
                    format!(
                        "{} is applied but its file is gone: it cannot be reverted",
                        applied.id
                    ),
                    applied,
                ));
                continue;
            };
            match set.down_of(file) {
                Ok(down) => downs.push(down),
                Err(why) => problems.push(problem(ProblemKind::NoDown, why, applied)),
            }
        }
        // The down scripts' own statements, as a pending file's are checked.
        for down in &downs {
            match down.summary() {
                Ok(summary) => problems.extend(crate::migrations::forbidden_in(
                    &down.path,
                    Some(&down.id.version),
                    summary,
                )),
                Err(problem) => problems.push(problem.clone()),
            }
        }
    }
    if problems.is_empty() {
        Ok(downs)
    } else {
        Err(Problems(problems))
    }
}

fn problem(kind: ProblemKind, message: String, applied: &HistoryRow) -> Problem {
    Problem {
        kind,
        message,
        file: None,
        version: Some(applied.id.version.clone()),
        line: None,
    }
}

/// The JSON's `reverted`, each with how long it took once it ran.
fn entries(downs: &[LocalMigration], took: &[u64]) -> Vec<AppliedEntry> {
    downs
        .iter()
        .enumerate()
        .map(|(i, m)| AppliedEntry {
            id: m.id.clone(),
            duration_ms: took.get(i).copied(),
            applied_on: None,
            transaction: m.no_transaction().map(|_| false),
        })
        .collect()
}

/// What a text run says: what it will revert, or what it reverted.
enum DownTo<'a> {
    Plan(&'a DownConfig),
    Done,
}

fn render(downs: &[LocalMigration], to: DownTo, plan: bool) -> String {
    let mut text = String::new();
    match to {
        DownTo::Plan(config) if downs.is_empty() => {
            let _ = writeln!(
                text,
                "Nothing is applied above {}: nothing to revert.",
                config.to
            );
            return text;
        }
        DownTo::Plan(config) => {
            let _ = writeln!(
                text,
                "{} {} migration(s), down to {}, newest first:",
                if plan { "Would revert" } else { "Reverted" },
                downs.len(),
                config.to
            );
        }
        DownTo::Done => {
            let _ = writeln!(text, "Reverted {} migration(s):", downs.len());
        }
    }
    for m in downs {
        let how = m
            .no_transaction()
            .map_or(String::new(), |why| format!("  (no transaction: {why})"));
        let _ = writeln!(text, "  {m}  {}{how}", m.path.display());
    }
    text
}
