//! `apply --lint`: the pending files, linted before the lock is taken, so
//! that a replica refused for a finding never queues for the lock. A run
//! with nothing pending never gets here.

use crate::config::{ApplyConfig, LintMode};
use crate::error::Failure;
use crate::migrations::lint::{self, Level, LintReport};
use crate::migrations::{Plan, Problems};
use crate::report::Report;

/// `warn`: each finding is a `LINT_WARNING` line. `deny`: a finding at
/// deny level refuses the run (exit 6, the findings as problems); the
/// others are logged.
pub fn check(config: &ApplyConfig, plan: &Plan, report: &mut Report) -> Result<(), Failure> {
    let gate = &config.lint;
    if gate.mode == LintMode::Off || plan.pending.is_empty() {
        return Ok(());
    }
    let mut found = LintReport::default();
    for m in &plan.pending {
        match lint::migration(m, &gate.rules) {
            Ok(linted) => found.add(&m.path, linted),
            // The run reads the file again to run it, and says then what
            // is wrong with it.
            Err(e) => log::warn!(
                "LINT_SKIPPED file={} (cannot read it: {e})",
                m.path.display()
            ),
        }
    }
    let deny = gate.mode == LintMode::Deny;
    for finding in &found.findings {
        if !(deny && finding.level == Level::Deny) {
            finding.log();
        }
    }
    let denied = if deny { found.denied() } else { Vec::new() };
    report.lint = Some(found);
    if denied.is_empty() {
        Ok(())
    } else {
        Err(report.invalid(Problems(denied)))
    }
}
