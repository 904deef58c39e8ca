//! `miglock lint`: squawk's rules over the migration files (the folder's,
//! or the files named), at miglock's levels. No database: a CI step.

use anyhow::anyhow;

use crate::config::LintConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::migrations::lint::{self, Level, LintReport};
use crate::migrations::{parse_file_name, MigrationSet, Problems, Version};
use crate::outcome::Outcome;
use crate::report::Report;

pub fn run(ctx: &Context, config: &LintConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let mut found = LintReport::default();
    let mut problems = Vec::new();
    if config.files.is_empty() {
        let reading =
            MigrationSet::read_with(&config.migrations, config.layout, &config.placeholders);
        problems.extend(reading.problems.iter().cloned());
        let set = &reading.set;
        for m in set.migrations.iter().chain(&set.repeatables) {
            if ctx.interrupt.is_set() {
                return Err(Failure::interrupted());
            }
            let linted =
                lint::migration(m, &config.rules).map_err(|e| Failure::failed(anyhow!(e)))?;
            found.add(&m.path, linted);
        }
    } else {
        for path in &config.files {
            // A V<version>__<name>.sql file is named by its version too.
            let version = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| parse_file_name(n).ok())
                .map(|(v, _)| Version::from(v));
            let linted = lint::file(path, version.as_ref(), None, &config.rules)
                .map_err(|e| Failure::failed(anyhow!(e)))?;
            found.add(path, linted);
        }
    }
    ctx.out.print(&render(&found));
    let denied = found.denied();
    report.lint = Some(found);
    if !problems.is_empty() {
        // The folder's own problems (a misnamed file…) are said as every
        // command says them.
        problems.extend(denied);
        return Err(report.invalid(Problems(problems)));
    }
    if denied.is_empty() {
        Ok(Outcome::Linted)
    } else {
        report.problems = denied;
        Ok(Outcome::Invalid)
    }
}

/// The text output: each finding, then a count.
fn render(found: &LintReport) -> String {
    let mut text = String::new();
    for f in &found.findings {
        text.push_str(&format!(
            "{}:{}:{}: {} {}: {}\n  fix: {}\n",
            f.file, f.line, f.column, f.level, f.rule, f.message, f.fix
        ));
    }
    for path in &found.skipped {
        text.push_str(&format!(
            "{path}: not linted (bigger than {} bytes)\n",
            lint::MAX_BYTES
        ));
    }
    let deny = found
        .findings
        .iter()
        .filter(|f| f.level == Level::Deny)
        .count();
    text.push_str(&format!(
        "{} finding{} ({deny} deny, {} warn) in {} file{}\n",
        found.findings.len(),
        plural(found.findings.len()),
        found.findings.len() - deny,
        found.files.len(),
        plural(found.files.len()),
    ));
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
