//! `miglock apply`: wait (bounded) for the lock, apply what is pending,
//! release the lock.
//!
//! This module reads the files, connects, plans and picks the lock mode
//! (`--lock-mode auto`: from the connection, see `lock::path`);
//! waiting for the key and applying in order is [`session_mode`]'s or
//! [`transaction_mode`]'s, and running each migration is `migrate`'s.
//!
//! Round trips, in the common cases:
//! - nothing pending (every replica but one, every restart): connect, read
//!   the history, done. No lock is taken: committed history rows are proof
//!   enough that the schema is current. The first connection attempt, and
//!   its history read, run while the files are read.
//! - something pending: one round trip that sets the session up, listens
//!   for the release notification, tries the lock and re-reads the history;
//!   then one round trip per migration, the last of which also unlocks and
//!   notifies the waiters.

use anyhow::anyhow;

use crate::config::ApplyConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::lock::{Decision, LockMode, LockModeFlag, LockSession, PendingSession};
use crate::migrate::invalid_indexes::{self, InvalidIndex};
use crate::migrate::settings;
use crate::migrations::history::HistoryRow;
use crate::migrations::{every_problem, MigrationSet, Plan, Problems, Reading, WithoutHistory};
use crate::outcome::Outcome;
use crate::report::{plan_lines, Report};

mod lint;
mod run;
mod session_mode;
mod transaction_mode;

use run::Run;

pub fn run(ctx: &Context, config: &ApplyConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);
    report.dry_run = config.dry_run;

    // The server starts a backend for this run while the files are read:
    // on a no-op run those are the two costs, and they overlap. Migrations
    // need a primary: of a multi-host URL's servers, one that takes writes.
    let mut target = common.lock_target();
    target.database = target.database.preferring_writes();
    // With no --set, the history is read as soon as the connection is
    // made (with one, its settings are checked first).
    let connecting = if config.migrate.settings.is_empty() {
        LockSession::start_reading_history(target, common.identity("apply"))
    } else {
        LockSession::start(target, common.identity("apply"), true)
    };
    let mut reading = common.read_migrations();
    reading.judge_writable(common.allow_world_writable, true);
    if !reading.problems.is_empty() {
        return Err(invalid_set(ctx, config, connecting, &reading, report));
    }
    let set = reading.set;
    if set.migrations.is_empty() && set.repeatables.is_empty() {
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

    let mut session = connecting.finish(ctx.interrupt)?;
    settings::check(&mut session, &config.migrate.settings)?;
    let mut session = session.with_settings(settings::session_sql(
        config.migrate.statement_timeout,
        &config.migrate.settings,
    ));

    // A run with nothing pending sends one query, the history's, and adds
    // nothing to it: even the cheapest look for INVALID indexes (one scan
    // of pg_index, in the same round trip) costs a new backend about
    // 0.3 ms of a no-op run's 10. Asked for rebuilds, it looks so;
    // otherwise it looks only when it has migrations to apply. Under
    // --lock-mode auto, the history read asks for pg_backend_pid() too: on
    // a direct connection the mode is known without a round trip more.
    let (history, any_invalid) = if config.rebuild_invalid_indexes {
        session.read_history_with(invalid_indexes::PROBE_SQL)?
    } else {
        (session.read_history()?, None)
    };
    let decision = decide_lock_mode(&mut session, common.lock_mode, report)?;
    if config.rebuild_invalid_indexes && decision.mode == LockMode::Transaction {
        return Err(refuse_rebuild(&decision));
    }
    let mut run = Run {
        config,
        set: &set,
        ctx,
        rebuild: false,
    };
    // Every problem at once: the history's, and the statements of the
    // pending files, before anything runs. The history only grows, so no
    // later plan has a pending file this one lacks.
    let (plan, mut problems) = Plan::joined(
        &set,
        history.as_deref().unwrap_or_default(),
        config.target_version.as_ref(),
        common.ahead,
    );
    // First, as it reads each pending file whole and gives it its summary:
    // the refusals below then read none again.
    let linted = lint::pending(config, &plan);
    problems.extend(plan.forbidden());
    if decision.mode == LockMode::Transaction {
        problems.extend(transaction_mode::refuse_non_transactional(
            &plan,
            decision.reason,
        ));
    }
    if !problems.is_empty() {
        return Err(report.invalid(Problems(problems)));
    }
    lint::check(config, &plan, linted, report)?;
    report.set_plan(&plan);
    let some_invalid = any_invalid.as_deref() == Some("t");
    if some_invalid || !plan.pending.is_empty() {
        let found = find_invalid(&mut session, &set, history.as_deref().unwrap_or_default());
        invalid_indexes::log_found(&found, config.rebuild_invalid_indexes);
        // Only an index an applied build names is this set's to rebuild.
        run.rebuild =
            config.rebuild_invalid_indexes && found.iter().any(|index| index.migration.is_some());
        report.invalid_indexes = Some(found);
    } else if config.rebuild_invalid_indexes {
        report.invalid_indexes = Some(Vec::new());
    }
    let rebuild = run.rebuild;
    // Said where it matters: before the lock is first tried.
    let quiet = (plan.pending.is_empty() && !rebuild) || config.dry_run;
    decision.log(if quiet {
        log::Level::Debug
    } else {
        log::Level::Info
    });
    if config.dry_run && (rebuild || !plan.pending.is_empty()) {
        report.add_table_sizes(&mut session);
        ctx.out.print(&render_plan(config, &plan, report));
        if plan.pending.is_empty() {
            return Ok(report.current(&plan, "nothing pending"));
        }
        return Ok(Outcome::Pending);
    }
    if plan.pending.is_empty() && !rebuild {
        return Ok(report.current(&plan, "nothing pending"));
    }
    log::debug!("pending: {}", names(&plan));
    match decision.mode {
        LockMode::Transaction => transaction_mode::apply(&mut session, run, history, report),
        LockMode::Session => session_mode::apply(session, run, history.is_some(), report),
    }
}

/// The run's lock mode (see `lock::path`), in the report; a statement
/// pooler ends the run (exit 2).
fn decide_lock_mode(
    session: &mut LockSession,
    flag: LockModeFlag,
    report: &mut Report,
) -> Result<Decision, Failure> {
    match session.decide_lock_mode(flag, true) {
        Ok(decision) => {
            report.lock.mode = Some(decision.mode.as_str());
            report.lock.mode_reason = Some(decision.reason);
            Ok(decision)
        }
        Err(failure) => {
            if failure.outcome == Outcome::Usage {
                report.lock.mode_reason = Some("statement_pooler");
            }
            Err(failure)
        }
    }
}

/// `--rebuild-invalid-indexes` where `--lock-mode auto` chose transaction
/// mode: as with `--lock-mode transaction` (exit 2), before anything runs.
fn refuse_rebuild(decision: &Decision) -> Failure {
    decision.log(log::Level::Info);
    Failure::usage(anyhow!(
        "--rebuild-invalid-indexes needs the session lock, and --lock-mode auto chose transaction \
         mode ({}): REINDEX INDEX CONCURRENTLY runs outside a transaction, so no transaction can \
         hold the key for it. Rebuild over a direct connection, or give --lock-mode session if \
         this port pools sessions; nothing was changed",
        decision.why()
    ))
}

/// A folder that cannot run as it is: the failure that lists all of its
/// problems. The history tells which files are pending, so it is read if
/// the database answers the attempt already under way; it is not waited
/// for (the run ends invalid whatever it says, and a database that is not
/// up yet must not hold back that answer for `--connect-timeout`).
fn invalid_set(
    ctx: &Context,
    config: &ApplyConfig,
    connecting: PendingSession,
    reading: &Reading,
    report: &mut Report,
) -> Failure {
    let common = &config.common;
    let history = connecting
        .finish_once(ctx.interrupt)
        .and_then(|mut session| {
            settings::check(&mut session, &config.migrate.settings)?;
            let mut session = session.with_settings(settings::session_sql(
                config.migrate.statement_timeout,
                &config.migrate.settings,
            ));
            let history = session.read_history()?;
            // The mode as a run would choose it, but for statement pooling,
            // which needs a round trip more: problems are listed as behind
            // a transaction pooler then.
            let decision = session
                .decide_lock_mode(common.lock_mode, false)
                .ok()
                .filter(|d| d.mode == LockMode::Transaction);
            Ok((history, decision))
        });
    if ctx.interrupt.is_set() {
        return Failure::interrupted();
    }
    let target = config.target_version.as_ref();
    match history {
        Ok((history, transaction)) => {
            let history = history.unwrap_or_default();
            let (plan, mut problems) = every_problem(reading, Some(&history), target, common.ahead);
            if let (Some(plan), Some(decision)) = (plan, transaction) {
                problems.extend(transaction_mode::refuse_non_transactional(
                    &plan,
                    decision.reason,
                ));
            }
            report.invalid(Problems(problems))
        }
        Err(failure) => {
            let (_, problems) = every_problem(reading, None, target, common.ahead);
            report.problems = problems.clone();
            Failure::invalid(WithoutHistory {
                problems: Problems(problems),
                why: format!("{:#}", failure.error),
            })
        }
    }
}

fn check_target_version(config: &ApplyConfig, set: &MigrationSet) -> Result<(), Failure> {
    let Some(target) = &config.target_version else {
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

/// The INVALID indexes to report, each with the applied file that builds
/// it. Not finding them is said, and no reason to stop: the migrations are
/// the run's work.
fn find_invalid(
    session: &mut LockSession,
    set: &MigrationSet,
    history: &[HistoryRow],
) -> Vec<InvalidIndex> {
    match invalid_indexes::list(session) {
        Ok(mut found) => {
            invalid_indexes::attribute(&mut found, set, history);
            found
        }
        Err(e) => {
            log::warn!(
                "cannot list the invalid indexes: {}",
                crate::pg_error::error_chain(&e)
            );
            Vec::new()
        }
    }
}

/// What `--dry-run` prints.
fn render_plan(config: &ApplyConfig, plan: &Plan, report: &Report) -> String {
    let common = &config.common;
    let mut text = format!(
        "Plan for {} (table {}, lock key {}):\n",
        common.database, common.table, common.key
    );
    // `report.pending` is the plan's pending files, in order, with their locks.
    for (m, entry) in plan.pending.iter().zip(&report.pending) {
        let how = m
            .no_transaction()
            .map_or(String::new(), |why| format!("  [no transaction: {why}]"));
        text.push_str(&format!("  apply {m}  ({}){how}\n", m.path.display()));
        // The tables it locks, and how hard: what the application feels
        // while the migration runs (or waits).
        let locks = &entry.locks;
        if !locks.is_empty() {
            let locks: Vec<String> = locks
                .iter()
                .map(|lock| format!("{} {}", lock.table, lock.mode))
                .collect();
            text.push_str(&format!("        locks {}\n", locks.join(", ")));
        }
        // Which statement takes which lock, and what it does to the rows:
        // a rewrite or a scan takes as long as the table is big, under
        // that lock.
        text.push_str(&plan_lines(
            &entry.statements,
            entry.statements_omitted,
            "        ",
        ));
    }
    if let Some(found) = &report.invalid_indexes {
        text.push_str(&invalid_indexes::plan_lines(
            found,
            config.rebuild_invalid_indexes,
        ));
    }
    text.push_str(&format!(
        "{} pending, {} applied; nothing was changed (--dry-run).\n",
        plan.pending.len(),
        plan.applied.len()
    ));
    text
}
