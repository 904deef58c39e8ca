//! `apply --lint`: the pending files, linted before the lock is taken, so
//! that a replica refused for a finding never queues for the lock. A run
//! with nothing pending never gets here.

use crate::config::{ApplyConfig, LintMode};
use crate::error::Failure;
use crate::migrations::lint::{self, Level, LintReport};
use crate::migrations::{LocalMigration, Plan, Problems};
use crate::report::Report;

/// What linting the pending files gave, each file's in order; `None`
/// when the lint is off or nothing is pending.
pub struct PendingLinted(Option<Vec<Result<lint::Linted, String>>>);

/// Lints the pending files, before the plan's refusals are read: each is
/// read once for both, as the lint's text gives it its summary
/// ([`lint::migration`]). Nothing is said yet: [`check`] says it, once
/// the run is not refused.
pub fn pending(config: &ApplyConfig, plan: &Plan) -> PendingLinted {
    let gate = &config.lint;
    if gate.mode == LintMode::Off || plan.pending.is_empty() {
        return PendingLinted(None);
    }
    // Parsing is CPU work, and it is on the way to the lock: the second
    // half of many files is linted on a second thread, in order all the
    // same.
    let lint = |files: &[&LocalMigration]| -> Vec<Result<lint::Linted, String>> {
        files
            .iter()
            .map(|m| lint::migration(m, &gate.rules))
            .collect()
    };
    let pending = &plan.pending[..];
    PendingLinted(Some(if pending.len() >= 32 {
        let (first, second) = pending.split_at(pending.len() / 2);
        std::thread::scope(|scope| {
            let other = scope.spawn(|| lint(second));
            let mut results = lint(first);
            match other.join() {
                Ok(rest) => results.extend(rest),
                Err(panic) => std::panic::resume_unwind(panic),
            }
            results
        })
    } else {
        lint(pending)
    }))
}

/// `warn`: each finding is a `LINT_WARNING` line. `deny`: a finding at
/// deny level refuses the run (exit 6, the findings as problems); the
/// others are logged.
pub fn check(
    config: &ApplyConfig,
    plan: &Plan,
    linted: PendingLinted,
    report: &mut Report,
) -> Result<(), Failure> {
    let gate = &config.lint;
    let PendingLinted(Some(results)) = linted else {
        return Ok(());
    };
    let pending = &plan.pending[..];
    let mut found = LintReport::default();
    for (m, result) in pending.iter().zip(results) {
        match result {
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
