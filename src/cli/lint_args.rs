//! The lint options: `miglock lint`'s, and the ones `apply` shares with it
//! (which rules, at which level), under their own heading.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, ValueEnum, ValueHint};

use super::shared::{FolderArgs, OutputArgs};
use crate::config::{LintConfig, LintGate, LintMode};
use crate::env::Env;
use crate::error::Failure;
use crate::migrations::lint::Rules;

pub const LINT: &str = "Lint";

/// Which rules run, at which level: `lint` and `apply`.
#[derive(Debug, Args)]
pub struct LintRuleArgs {
    /// Rules and levels, comma-separated: RULE (on), RULE=deny|warn|off, all=LEVEL
    ///
    /// Applied left to right over the defaults (docs/guide/before-you-deploy.md lists every rule
    /// and its default level): require-statement-timeout turns a rule that is off by default on
    /// at its level, prefer-robust-stmts=deny raises one, all=warn makes every rule that is on a
    /// warning. Rule names are squawk's.
    #[arg(long, env = "MIGLOCK_LINT_RULES", value_name = "RULES", help_heading = LINT,
          display_order = 41)]
    pub lint_rules: Option<String>,

    /// Rules to turn off, comma-separated (wins over --lint-rules)
    #[arg(long, env = "MIGLOCK_LINT_EXCLUDE", value_name = "RULES", help_heading = LINT,
          display_order = 42)]
    pub lint_exclude: Option<String>,
}

/// `apply --lint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintModeArg {
    Off,
    Warn,
    Deny,
}

/// `apply`'s lint of its pending files.
#[derive(Debug, Args)]
pub struct ApplyLintArgs {
    /// Lint the pending files before taking the lock: off, warn (log each finding), or deny
    ///
    /// warn: each finding is a LINT_WARNING line, and the run goes on. deny: a finding at deny
    /// level (a table lock or rewrite that stalls the application) refuses the run before the
    /// lock is taken, exit 6 with the findings as problems, nothing applied. Only pending files
    /// are linted; a run with nothing pending pays nothing for it.
    #[arg(long, env = "MIGLOCK_LINT", value_enum, value_name = "MODE",
          default_value_t = LintModeArg::Warn, help_heading = LINT, display_order = 40)]
    pub lint: LintModeArg,

    #[command(flatten)]
    pub rules: LintRuleArgs,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Files to lint [default: every file of the migrations folder]
    #[arg(value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub placeholders: super::shared::PlaceholderArgs,
    #[command(flatten)]
    pub rules: LintRuleArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub const LINT_EXIT: &str = "\
Exit codes: 0 no finding at deny level, 1 a file cannot be read, 2 usage (an unknown rule), 6 a \
finding at deny level (or a badly named file).";

pub const LINT_LONG: &str = "\
Examples:
  # Every file of the folder db, as CI would
  miglock lint --migrations db
  # The files a branch adds, with prefer-robust-stmts as an error, as JSON
  miglock lint --lint-rules prefer-robust-stmts=deny --format json $(git diff --name-only main -- db)

Exit codes: 0 no finding at deny level, 1 a file cannot be read, 2 usage (an unknown rule), 6 a \
finding at deny level (or a badly named file).";

impl LintRuleArgs {
    /// The rules over the defaults; `safe_ddl`: apply's own lock_timeout
    /// schedule is on (`lint` assumes it, as `apply`'s default).
    fn rules(&self, safe_ddl: bool) -> Result<Rules, Failure> {
        let mut rules = Rules::defaults(safe_ddl);
        if let Some(spec) = &self.lint_rules {
            rules.select(spec).map_err(|e| Failure::usage(anyhow!(e)))?;
        }
        if let Some(spec) = &self.lint_exclude {
            rules
                .exclude(spec)
                .map_err(|e| Failure::usage(anyhow!("--lint-exclude: {e}")))?;
        }
        Ok(rules)
    }
}

impl ApplyLintArgs {
    pub fn config(&self, safe_ddl: bool) -> Result<LintGate, Failure> {
        Ok(LintGate {
            mode: match self.lint {
                LintModeArg::Off => LintMode::Off,
                LintModeArg::Warn => LintMode::Warn,
                LintModeArg::Deny => LintMode::Deny,
            },
            rules: self.rules.rules(safe_ddl)?,
        })
    }
}

impl LintArgs {
    pub fn config(&self, env: Env) -> Result<LintConfig, Failure> {
        let migrations = self.folder.migrations.clone();
        let layout = self
            .folder
            .layout
            .resolve(&migrations)
            .map_err(|e| Failure::invalid(anyhow::anyhow!(e)))?;
        // What runs of a Flyway file is what is linted: its placeholders
        // replaced (the database's built-ins are not known here).
        let placeholders =
            std::sync::Arc::new(crate::migrations::layout::placeholders::Placeholders::new(
                &self.placeholders.given(env)?,
                layout.default_table(),
                None,
                None,
                None,
            ));
        Ok(LintConfig {
            migrations,
            files: self.files.clone(),
            rules: self.rules.rules(true)?,
            layout,
            placeholders,
        })
    }
}
