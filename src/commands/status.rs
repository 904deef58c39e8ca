//! `miglock status`: what is applied, pending, divergent or missing, and
//! who holds or waits for the lock — the `pg_locks` ⋈ `pg_stat_activity`
//! query no DBA should have to write by hand again.

use std::fmt::Write as _;

use crate::config::StatusConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::lock::{Backend, LockMode, LockRole, LockSession};
use crate::migrate::{invalid_indexes, settings};
use crate::migrations::every_problem;
use crate::outcome::Outcome;
use crate::pg_error;
use crate::report::{AppliedEntry, Report, TableReport, ToolKeyState};
use crate::sql::Batch;

pub fn run(ctx: &Context, config: &StatusConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);

    // A set that cannot be read is still a state to describe, with the
    // history and the lock beside it.
    let mut reading = common.read_migrations();
    reading.judge_writable(common.allow_world_writable, false);
    let set = &reading.set;
    let mut session = LockSession::connect(
        common.lock_target(),
        common.identity("status"),
        ctx.interrupt,
    )?;

    settings::check(&mut session, &config.settings)?;
    if let Some(sql) = settings::given_sql(&config.settings) {
        session = session.with_settings(sql);
        session.send_settings()?;
    }

    let history = session.read_history()?;
    // A round trip only where the history read could not carry the names.
    session.resolve_tool_keys()?;
    let tools = session.tool_keys();
    let key = &common.key;
    let mut batch = Batch::new();
    let schema = batch.push(&common.table.schema_sql());
    let holder = batch.push(&key.sessions_sql(LockRole::Holder));
    let waiting = batch.push(&key.sessions_sql(LockRole::Waiter));
    let blocked = batch.push(&key.blocked_sql());
    let invalid = batch.push(invalid_indexes::LIST_SQL);
    let tool_holders: Vec<_> = tools
        .iter()
        .map(|tool| batch.push(&tool.as_lock_key().sessions_sql(LockRole::Holder)))
        .collect();
    let results = session
        .query(&batch)
        .map_err(|e| pg_error::failed(&e, "cannot read the lock's sessions"))?;
    report.table = Some(TableReport {
        // The schema is the next field's.
        name: common.table.name().to_string(),
        // Where search_path resolved the table to (or would create it).
        schema: results.value(schema).map(str::to_string),
        exists: history.is_some(),
    });
    let history = history.unwrap_or_default();

    let sessions = |slot| -> Vec<Backend> {
        results
            .rows(slot)
            .iter()
            .filter_map(|row| Backend::from_row(row, 0))
            .collect()
    };
    report.lock.holder = sessions(holder).into_iter().next();
    report.lock.holder_mode = report
        .lock
        .holder
        .as_ref()
        .and_then(Backend::lock_mode)
        .map(LockMode::as_str);
    report.lock.waiting = sessions(waiting);
    report.lock.blocked = sessions(blocked);
    report.lock.tool_keys = tools
        .into_iter()
        .zip(tool_holders)
        .map(|(key, slot)| ToolKeyState {
            key,
            holder: sessions(slot).into_iter().next(),
        })
        .collect();
    let mut found = invalid_indexes::from_rows(results.rows(invalid));
    invalid_indexes::attribute(&mut found, set, &history);
    invalid_indexes::log_found(&found, false);
    report.invalid_indexes = Some(found);

    // Every problem at once, as `apply` finds them.
    let (plan, problems) = every_problem(&reading, Some(&history), None, common.ahead);
    if let Some(plan) = &plan {
        report.set_plan(plan);
        report.add_table_sizes(&mut session);
    }
    // As the plan reads them: another tool's rows with their files' names
    // (golang-migrate's one row as every file up to it).
    let rows = plan.as_ref().map_or(&history[..], |plan| &plan.applied[..]);
    report.applied = rows
        .iter()
        .map(|a| AppliedEntry {
            id: a.id.clone(),
            duration_ms: None,
            applied_on: Some(a.applied_on.clone()),
            transaction: set
                .migrations
                .iter()
                .find(|m| m.id.version == a.id.version)
                .and_then(|m| m.no_transaction())
                .map(|_| false),
        })
        .collect();
    report.problems = problems;
    let outcome = if !report.problems.is_empty() {
        Outcome::Invalid
    } else if report.pending.is_empty() {
        Outcome::Current
    } else {
        Outcome::Pending
    };
    ctx.out.print(&render(config, report, outcome));
    Ok(outcome)
}

fn render(config: &StatusConfig, report: &Report, outcome: Outcome) -> String {
    let common = &config.common;
    let mut out = String::new();
    let table_state = match &report.table {
        Some(t) if t.exists => "",
        _ => " (does not exist yet: nothing applied)",
    };
    let _ = writeln!(out, "Database    {}", common.database);
    let _ = writeln!(out, "Migrations  {}", common.migrations.display());
    if common.table.layout() != crate::migrations::Layout::Refinery {
        let _ = writeln!(out, "Layout      {}", common.table.layout());
    }
    let table = match report
        .table
        .as_ref()
        .map(|t| (t.schema.as_deref(), common.table.schema()))
    {
        Some((Some(schema), None)) => format!("{schema}.{}", common.table),
        Some((None, None)) => format!(
            "{} (search_path names no existing schema: give --table schema.table)",
            common.table
        ),
        _ => common.table.to_string(),
    };
    let _ = writeln!(out, "Table       {table}{table_state}");
    let _ = writeln!(out, "Lock key    {} ({})", common.key, common.key.source);
    match &report.lock.holder {
        None => {
            let _ = writeln!(out, "Lock        free");
        }
        Some(holder) => {
            let _ = writeln!(out, "Lock        held by {}", holder.summary());
            match holder.lock_mode() {
                Some(LockMode::Transaction) => {
                    let _ = writeln!(
                        out,
                        "            (--lock-mode transaction: held by one migration's transaction, \
                         released at its COMMIT or ROLLBACK)"
                    );
                }
                Some(LockMode::Session) => {
                    let _ = writeln!(
                        out,
                        "            (--lock-mode session: held by the session until it unlocks or ends)"
                    );
                }
                None => {}
            }
            if holder.details_hidden() {
                let _ = writeln!(
                    out,
                    "            (state, query and client are hidden from this role: connect as the holder's \
                     role, a superuser, or a member of pg_read_all_stats to see them)"
                );
            }
        }
    }
    for tool in &report.lock.tool_keys {
        let state = match (&tool.holder, &report.lock.holder) {
            (None, _) => "free".to_string(),
            (Some(by), Some(holder)) if by.pid == holder.pid => {
                format!("held with the lock, by pid {}", by.pid)
            }
            (Some(by), _) => format!("held by {}", by.summary()),
        };
        let key = &tool.key;
        let _ = writeln!(
            out,
            "Tool lock   {} {} ({}): {state}",
            key.tool, key.key, key.source
        );
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
    let names: Vec<String> = report.applied.iter().map(ToString::to_string).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (name, applied) in names.iter().zip(&report.applied) {
        let _ = writeln!(
            out,
            "  {name:<width$}  {}",
            applied.applied_on.as_deref().unwrap_or("")
        );
    }
    if !report.ahead.is_empty() {
        let _ = writeln!(
            out,
            "\nAhead ({}): applied by a newer release, newer than every file here (kept; this \
             release runs on the schema they leave)",
            report.ahead.len()
        );
        for ahead in &report.ahead {
            let _ = writeln!(out, "  {}  {}", ahead.id, ahead.applied_on);
        }
    }
    if !report.pending.is_empty() {
        let _ = writeln!(out, "\nPending ({})", report.pending.len());
        for pending in &report.pending {
            match &pending.no_transaction {
                Some(why) => {
                    let _ = writeln!(out, "  {pending}  (no transaction: {why})");
                }
                None => {
                    let _ = writeln!(out, "  {pending}");
                }
            }
            // Each statement that will lock a table hard, rewrite or scan it.
            let statements = &pending.statements;
            let omitted = pending.statements_omitted;
            out.push_str(&crate::report::plan_lines(statements, omitted, "      "));
        }
    }
    if !report.problems.is_empty() {
        let _ = writeln!(out, "\nProblems ({})", report.problems.len());
        for problem in &report.problems {
            let _ = writeln!(out, "  {}: {}", problem.kind.as_str(), problem.message);
        }
        if let Some(hint) = crate::migrations::layout_hint(&report.problems) {
            for line in hint.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    if let Some(found) = report.invalid_indexes.as_ref().filter(|f| !f.is_empty()) {
        let _ = writeln!(
            out,
            "\nInvalid indexes ({}): used by no query (a unique one guarantees nothing)",
            found.len()
        );
        for index in found {
            let what = match (&index.migration, &index.copy_of) {
                (Some(by), Some(of)) => format!(
                    "a copy of {of} (built by {by}) an interrupted rebuild left; `miglock apply \
                     --rebuild-invalid-indexes` drops it"
                ),
                (Some(by), None) => format!(
                    "left by a concurrent build of {by}; `miglock apply --rebuild-invalid-indexes` \
                     rebuilds it"
                ),
                (None, _) => {
                    "no applied migration builds it: rebuild or drop it by hand".to_string()
                }
            };
            let _ = writeln!(
                out,
                "  {} on {}  ({what})\n      {}",
                index.qualified, index.table, index.definition
            );
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
