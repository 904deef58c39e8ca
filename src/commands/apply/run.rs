//! What both lock modes of one `apply` run share: its inputs, its plan,
//! and how an applied migration is reported.

use std::time::Instant;

use crate::config::ApplyConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::migrations::history::HistoryRow;
use crate::migrations::{LocalMigration, MigrationSet, Plan};
use crate::report::{AppliedEntry, Report};
use crate::time::millis;

/// One apply run's fixed inputs, shared by its steps.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub config: &'a ApplyConfig,
    pub set: &'a MigrationSet,
    pub ctx: &'a Context<'a>,
    /// INVALID indexes applied builds left are to be rebuilt under the
    /// lock (`--rebuild-invalid-indexes`, and some were found).
    pub rebuild: bool,
}

impl<'a> Run<'a> {
    /// The plan against `history`, its problems in the report.
    pub fn plan(&self, history: &[HistoryRow], report: &mut Report) -> Result<Plan<'a>, Failure> {
        let common = &self.config.common;
        Plan::new(
            self.set,
            history,
            self.config.target_version.as_ref(),
            common.ahead,
        )
        .map_err(|p| report.invalid(p))
    }

    /// `MIGRATION_APPLIED`, and the migration in the report.
    pub fn applied(&self, report: &mut Report, migration: &LocalMigration, started: Instant) {
        let duration_ms = millis(started.elapsed());
        log::info!(
            "MIGRATION_APPLIED version={} name={} ms={duration_ms}",
            migration.id.version,
            migration.id.name
        );
        // Applied in order: the first pending entry, found at once and
        // taken off the front (a `retain` compared every entry and moved
        // the rest, for every migration of the run).
        if let Some(at) = report.pending.iter().position(|p| p.id == migration.id) {
            report.pending.remove(at);
        }
        report
            .applied
            .push(AppliedEntry::by_this_run(migration, Some(duration_ms)));
    }
}
