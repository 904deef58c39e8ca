//! `miglock status`: what is applied, pending, divergent or missing, and
//! who holds or waits for the lock — the `pg_locks` ⋈ `pg_stat_activity`
//! query no DBA should have to write by hand again.

use std::fmt::Write as _;

use crate::config::{Format, StatusConfig};
use crate::db;
use crate::error::Failure;
use crate::history;
use crate::interrupt::Interrupt;
use crate::lock::{self, LockHolder, LockRole};
use crate::migrations::{MigrationSet, Plan};
use crate::outcome::Outcome;
use crate::report::{AppliedEntry, Report, TableReport};

pub fn run(
    config: &StatusConfig,
    report: &mut Report,
    interrupt: &Interrupt,
    format: Format,
) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.describe(common);

    // A set that cannot be read is still a state to describe, with the
    // history and the lock beside it.
    let set = MigrationSet::load(&common.migrations);
    let identity = super::identity("status", common);
    let mut client = super::connect(common, &identity, interrupt)?;

    let history = history::read(&mut client, &common.table)?;
    report.table = Some(TableReport {
        name: common.table.to_string(),
        exists: history.is_some(),
    });
    let history = history.unwrap_or_default();
    report.applied = history
        .iter()
        .map(|a| AppliedEntry {
            version: a.version,
            name: a.name.clone(),
            duration_ms: None,
            applied_on: Some(a.applied_on.clone()),
        })
        .collect();

    let key = &common.key;
    let messages = client
        .simple_query(&format!(
            "{}; {}; {}",
            key.sessions_sql(LockRole::Holder),
            key.sessions_sql(LockRole::Waiter),
            key.blocked_sql()
        ))
        .map_err(|e| db::failed(&e, "cannot read the lock's sessions"))?;
    let statements = lock::rows_per_statement(&messages);
    let sessions = |i: usize| -> Vec<LockHolder> {
        statements
            .get(i)
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| LockHolder::from_row(row, 0))
                    .collect()
            })
            .unwrap_or_default()
    };
    report.lock.holder = sessions(0).into_iter().next();
    report.lock.waiting = sessions(1);
    report.lock.blocked = sessions(2);

    let outcome = match &set {
        Err(problems) => {
            report.problems = problems.0.clone();
            Outcome::Invalid
        }
        Ok(set) => match Plan::new(set, &history, None) {
            Err(problems) => {
                report.problems = problems.0;
                Outcome::Invalid
            }
            Ok(plan) => {
                report.set_pending(&plan);
                if plan.pending.is_empty() {
                    Outcome::Current
                } else {
                    Outcome::Pending
                }
            }
        },
    };
    if format == Format::Text {
        print!("{}", render(config, report, outcome));
    }
    Ok(outcome)
}

fn render(config: &StatusConfig, report: &Report, outcome: Outcome) -> String {
    let common = &config.common;
    let mut out = String::new();
    let table_state = match &report.table {
        Some(t) if t.exists => "",
        _ => " (does not exist yet: nothing applied)",
    };
    let _ = writeln!(out, "Database    {}", common.target);
    let _ = writeln!(out, "Migrations  {}", common.migrations.display());
    let _ = writeln!(out, "Table       {}{table_state}", common.table);
    let _ = writeln!(out, "Lock key    {} ({})", common.key, common.key.source);
    match &report.lock.holder {
        None => {
            let _ = writeln!(out, "Lock        free");
        }
        Some(holder) => {
            let _ = writeln!(out, "Lock        held by {}", holder.summary());
            if holder.details_hidden() {
                let _ = writeln!(
                    out,
                    "            (state, query and client are hidden from this role: connect as the holder's \
                     role, a superuser, or a member of pg_read_all_stats to see them)"
                );
            }
        }
    }
    if !report.lock.waiting.is_empty() {
        let _ = writeln!(
            out,
            "Waiting     {} miglock session(s):",
            report.lock.waiting.len()
        );
        for waiter in &report.lock.waiting {
            let _ = writeln!(out, "            {}", waiter.summary());
        }
    }
    if !report.lock.blocked.is_empty() {
        let _ = writeln!(
            out,
            "Blocked     {} session(s) wait for locks the holder has (pg_blocking_pids):",
            report.lock.blocked.len()
        );
        for blocked in &report.lock.blocked {
            let _ = writeln!(out, "            {}", blocked.summary());
        }
    }

    let _ = writeln!(out, "\nApplied ({})", report.applied.len());
    let names: Vec<String> = report
        .applied
        .iter()
        .map(|a| format!("V{}__{}", a.version, a.name))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (name, applied) in names.iter().zip(&report.applied) {
        let _ = writeln!(
            out,
            "  {name:<width$}  {}",
            applied.applied_on.as_deref().unwrap_or("")
        );
    }
    if !report.pending.is_empty() {
        let _ = writeln!(out, "\nPending ({})", report.pending.len());
        for pending in &report.pending {
            let _ = writeln!(out, "  V{}__{}", pending.version, pending.name);
        }
    }
    if !report.problems.is_empty() {
        let _ = writeln!(out, "\nProblems ({})", report.problems.len());
        for problem in &report.problems {
            let _ = writeln!(out, "  {}: {}", problem.kind.as_str(), problem.message);
        }
    }
    let summary = match outcome {
        Outcome::Current => "current (nothing pending)".to_string(),
        Outcome::Pending => format!("pending ({} migration(s) to apply)", report.pending.len()),
        _ => format!(
            "invalid ({} problem(s): apply would refuse to run)",
            report.problems.len()
        ),
    };
    let _ = writeln!(out, "\nStatus      {summary}");
    out
}
