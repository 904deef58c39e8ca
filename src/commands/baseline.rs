//! `miglock baseline --baseline-version N`: adopt miglock on a database whose
//! schema already matches the files up to V<N>, by recording them as
//! applied (refinery's rows, checksums included) without running them.
//!
//! The rows are written under the lock and in one transaction, so a
//! replica applying at the same time either sees all of them or none, and
//! never runs a file the baseline is about to vouch for.

use std::fmt::Write as _;

use anyhow::anyhow;

use crate::config::BaselineConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::lock::{self, wait, LockSession};
use crate::migrations::history::{self, HistoryRow};
use crate::migrations::{LocalMigration, MigrationSet, Problem, ProblemKind, Problems, Version};
use crate::outcome::Outcome;
use crate::pg_error;
use crate::report::{PendingEntry, Report};
use crate::sql::Batch;

pub fn run(
    ctx: &Context,
    config: &BaselineConfig,
    report: &mut Report,
) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);
    report.dry_run = config.dry_run;
    let mut reading = common.read_migrations();
    reading.judge_writable(common.allow_world_writable, true);
    let set = reading.strict().map_err(|p| report.invalid(p))?;
    check_version(config, &set)?;
    let target = common.lock_target();
    let identity = common.identity("baseline");

    if config.dry_run {
        let mut session = LockSession::connect(target, identity, ctx.interrupt)?;
        let history = session.read_history()?;
        let record = to_record(
            &set,
            &config.version,
            history.as_deref().unwrap_or_default(),
        )
        .map_err(|p| report.invalid(p))?;
        report.baselined = Some(entries(&record));
        ctx.out.print(&render(config, &record, true));
        return Ok(Outcome::Baselined);
    }

    let mut session = LockSession::connect(target, identity, ctx.interrupt)?;
    lock::session_lock_only("baseline", common.lock_mode, &mut session)?;
    let acquired = wait::acquire(
        &mut session,
        config.wait,
        ctx.interrupt,
        "nothing was recorded",
    )?;
    if !report.acquired(acquired) {
        return Ok(Outcome::Skipped);
    }

    // Read under the lock: what an apply that just finished wrote counts.
    let history = session.read_history()?;
    let record = to_record(
        &set,
        &config.version,
        history.as_deref().unwrap_or_default(),
    )
    .map_err(|p| report.invalid(p))?;
    if !record.is_empty() {
        let applied_on = history::applied_on_now()?;
        let mut batch = Batch::new();
        batch.push("BEGIN");
        let schema_missing = history
            .is_none()
            .then(|| history::push_create(&mut batch, &common.table))
            .flatten();
        for m in &record {
            batch.push(&common.table.insert_sql(m, &applied_on));
        }
        batch.push("COMMIT");
        let results = session.query(&batch).map_err(|e| {
            // The transaction must not stay open on the session holding the key.
            session.rollback();
            pg_error::failed(
                &e,
                format!("cannot record the baseline in {}", common.table),
            )
        })?;
        history::log_schema_created(&results, schema_missing, &common.table);
    }
    session.release();
    log::info!(
        "BASELINED version={} recorded={}",
        config.version,
        record.len()
    );
    report.baselined = Some(entries(&record));
    ctx.out.print(&render(config, &record, false));
    Ok(Outcome::Baselined)
}

/// N must name a file: a baseline vouches for the schema as the files up
/// to N make it, so N must be one of them.
fn check_version(config: &BaselineConfig, set: &MigrationSet) -> Result<(), Failure> {
    let n = &config.version;
    let folder = config.common.migrations.display();
    match set.last_version() {
        None => Err(Failure::invalid(anyhow!(
            "--baseline-version {n}: there are no migration files in {folder}; nothing was recorded"
        ))),
        Some(last) if n > last => Err(Failure::invalid(anyhow!(
            "--baseline-version {n} is beyond the newest migration in {folder} (V{last}); nothing was recorded"
        ))),
        Some(_) if set.migrations.iter().all(|m| m.id.version != *n) => Err(Failure::invalid(anyhow!(
            "--baseline-version {n}: no file in {folder} has version {n} (a baseline ends at a file); \
             nothing was recorded"
        ))),
        Some(_) => Ok(()),
    }
}

/// The files up to `n` the history does not hold yet. Refuses when a row
/// up to `n` disagrees with its file or has none: recording the others
/// would vouch for a schema that is not the files'.
fn to_record<'a>(
    set: &'a MigrationSet,
    n: &Version,
    history: &[HistoryRow],
) -> Result<Vec<&'a LocalMigration>, Problems> {
    let mut problems = Vec::new();
    for row in history.iter().filter(|a| a.id.version <= *n) {
        let file = set
            .migrations
            .iter()
            .find(|m| m.id.version == row.id.version);
        match file {
            None => problems.push(Problem {
                kind: ProblemKind::Missing,
                message: format!(
                    "{} is recorded as applied (on {}) but has no file: restore the file, or \
                     choose a version below {}",
                    row.id, row.applied_on, row.id.version
                ),
                file: None,
                version: Some(row.id.version.clone()),
                line: None,
            }),
            // As the layout's tool compares them (refinery: name and
            // checksum; goose, dbmate, golang-migrate keep neither).
            Some(m) if !crate::migrations::matches(row, m) => problems.push(Problem {
                kind: ProblemKind::Divergent,
                message: format!(
                    "{}: version {} is already recorded as {} with checksum {}, the file is \
                         {m} with checksum {} (see `miglock repair`)",
                    m.path.display(),
                    row.id.version,
                    row.id,
                    row.checksum,
                    m.checksum
                ),
                file: Some(m.path.clone()),
                version: Some(row.id.version.clone()),
                line: None,
            }),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(set
        .migrations
        .iter()
        .filter(|m| m.id.version <= *n)
        .filter(|m| history.iter().all(|a| a.id.version != m.id.version))
        .collect())
}

fn entries(record: &[&LocalMigration]) -> Vec<PendingEntry> {
    record
        .iter()
        .map(|m| PendingEntry {
            id: m.id.clone(),
            // Baselined files are recorded, never run.
            transaction: None,
            no_transaction: None,
            locks: Vec::new(),
            statements: Vec::new(),
            statements_omitted: 0,
        })
        .collect()
}

fn render(config: &BaselineConfig, record: &[&LocalMigration], dry_run: bool) -> String {
    let common = &config.common;
    let mut text = format!(
        "Baseline up to V{} for {} (table {}):\n",
        config.version, common.database, common.table
    );
    let verb = if dry_run { "would record" } else { "recorded" };
    for m in record {
        let _ = writeln!(text, "  {verb} {m}  ({})", m.path.display());
    }
    let _ = if dry_run {
        writeln!(
            text,
            "{} to record as applied without running them; nothing was changed (--dry-run).",
            record.len()
        )
    } else {
        writeln!(
            text,
            "{} recorded as applied; none of them was run. `miglock apply` runs the versions after V{}.",
            record.len(),
            config.version
        )
    };
    text
}
