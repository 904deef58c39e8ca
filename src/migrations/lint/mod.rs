//! Linting migration files with squawk's rules (`miglock lint`, `apply
//! --lint`), at miglock's levels ([`rules`]). A file is linted whole, as
//! squawk-cli does (some rules look back: a `SET lock_timeout` earlier in
//! the file, a table the file created), as in a transaction when miglock
//! runs it in one; a file above [`MAX_BYTES`] is skipped with a logged
//! line, so a data migration of many megabytes never becomes a syntax tree
//! in memory.
//!
//! Nothing of squawk is touched before a file is linted: a run with
//! nothing pending pays nothing for it.

use std::path::Path;

use serde::Serialize;

use super::split;
use super::{LocalMigration, Problem, ProblemKind, Version};

mod depth;
mod engine;
mod rules;

use rules::{by_name, RuleId};
pub use rules::{Level, Off, RuleInfo, LOCK_TIMEOUT_MOOT, RULES};

/// The biggest file linted (1 MiB): the syntax tree of a file takes many
/// times its size, and a migration this big is data rather than schema.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// Which rules run, at which level: one level per entry of [`RULES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    levels: Vec<Level>,
}

impl Rules {
    /// The documented defaults. `safe_ddl`: `apply`'s own lock_timeout
    /// schedule is on, which makes `require-lock-timeout` moot; without it
    /// that rule is on.
    pub fn defaults(safe_ddl: bool) -> Rules {
        let levels = RULES
            .iter()
            .map(|rule| match rule.off {
                Off::No => rule.level,
                Off::Moot(LOCK_TIMEOUT_MOOT) if !safe_ddl => rule.level,
                Off::Moot(_) | Off::OptIn => Level::Off,
            })
            .collect();
        Rules { levels }
    }

    /// `--lint-rules`: a comma-separated list of `RULE` (on, at its
    /// level), `RULE=LEVEL` (`deny`, `warn` or `off`) and `all=LEVEL` (every
    /// rule that is on so far, at that level), applied left to right.
    pub fn select(&mut self, spec: &str) -> Result<(), String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, level) = match item.split_once('=') {
                Some((name, level)) => {
                    let level = Level::parse(level).ok_or_else(|| {
                        format!("--lint-rules {item}: the level is deny, warn or off")
                    })?;
                    (name.trim(), Some(level))
                }
                None => (item, None),
            };
            if name == "all" {
                let level = level.ok_or("--lint-rules all needs a level: all=warn")?;
                for l in self.levels.iter_mut().filter(|l| **l != Level::Off) {
                    *l = level;
                }
                continue;
            }
            for rule in by_name(name).ok_or_else(|| unknown(name))? {
                self.levels[index(rule.id)] = level.unwrap_or(rule.level);
            }
        }
        Ok(())
    }

    /// `--lint-exclude`: a comma-separated list of rules to turn off.
    pub fn exclude(&mut self, spec: &str) -> Result<(), String> {
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            for rule in by_name(name).ok_or_else(|| unknown(name))? {
                self.levels[index(rule.id)] = Level::Off;
            }
        }
        Ok(())
    }

    /// Each rule with its level here.
    pub fn levels(&self) -> impl Iterator<Item = (&'static RuleInfo, Level)> + '_ {
        RULES.iter().zip(self.levels.iter().copied())
    }

    fn level(&self, id: RuleId) -> Level {
        self.levels[index(id)]
    }

    fn any_on(&self) -> bool {
        self.levels.iter().any(|l| *l != Level::Off)
    }
}

fn index(id: RuleId) -> usize {
    RULES.iter().position(|r| r.id == id).unwrap_or(0)
}

fn unknown(name: &str) -> String {
    format!(
        "unknown lint rule '{name}' (the rules are squawk's; docs/guide/before-you-deploy.md \
         lists them)"
    )
}

/// One finding: a rule a statement breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// 1-based, of the file.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub rule: &'static str,
    pub level: Level,
    pub message: String,
    pub fix: String,
}

impl Finding {
    /// The problem a `deny` finding is for `apply --lint deny` and `lint`.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: ProblemKind::Lint,
            message: format!(
                "{}, line {}: {} ({}): {} Fix: {}",
                self.file, self.line, self.rule, self.level, self.message, self.fix
            ),
            file: Some(self.file.clone().into()),
            version: self.version.clone(),
            line: Some(self.line),
        }
    }

    /// The `LINT_WARNING` log line.
    pub fn log(&self) {
        log::warn!(
            "LINT_WARNING file={} line={} rule={} level={} message={:?} fix={:?}",
            self.file,
            self.line,
            self.rule,
            self.level,
            self.message,
            self.fix
        );
    }
}

/// What a lint found, for the JSON result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LintReport {
    /// The files linted.
    pub files: Vec<LintedFile>,
    pub findings: Vec<Finding>,
    /// Files above [`MAX_BYTES`], or nested too deep, not linted.
    pub skipped: Vec<String>,
}

impl LintReport {
    /// Adds what linting `path` gave.
    pub fn add(&mut self, path: &Path, linted: Linted) {
        match linted {
            Linted::Findings {
                transaction,
                findings,
            } => {
                self.files.push(LintedFile {
                    file: path.display().to_string(),
                    transaction,
                });
                self.findings.extend(findings);
            }
            // Said here, as the report takes it, not when the file was
            // looked at: `apply` lints before its refusals, and a refused
            // run says nothing of the lint.
            Linted::TooBig { bytes } => {
                log::info!(
                    "LINT_SKIPPED file={} bytes={bytes} limit={MAX_BYTES} (a file this big is not linted)",
                    path.display()
                );
                self.skipped.push(path.display().to_string());
            }
            Linted::TooDeep { levels } => {
                log::info!(
                    "LINT_SKIPPED file={} levels={levels} (nested this deep, the linter's parser \
                     would run out of stack: not linted)",
                    path.display()
                );
                self.skipped.push(path.display().to_string());
            }
        }
    }

    /// The findings at `deny` level, as problems.
    pub fn denied(&self) -> Vec<Problem> {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Deny)
            .map(Finding::problem)
            .collect()
    }
}

/// A file linted, and whether it was linted as in a transaction (miglock
/// runs it in one).
#[derive(Debug, Clone, Serialize)]
pub struct LintedFile {
    pub file: String,
    pub transaction: bool,
}

/// What linting one file gave.
pub enum Linted {
    Findings {
        transaction: bool,
        findings: Vec<Finding>,
    },
    /// Above [`MAX_BYTES`] (its size): not linted (logged as
    /// `LINT_SKIPPED` when added to a [`LintReport`]).
    TooBig { bytes: u64 },
    /// Nested more deeply than the linter's parser can take (the levels
    /// it could recurse): not linted, logged as `LINT_SKIPPED` too.
    TooDeep { levels: usize },
}

/// Lints the file at `path`. `transactional`: whether miglock runs it in a
/// transaction; `None` works it out from the text, as a run would.
pub fn file(
    path: &Path,
    version: Option<&Version>,
    transactional: Option<bool>,
    rules: &Rules,
) -> Result<Linted, String> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if bytes > MAX_BYTES {
        return Ok(Linted::TooBig { bytes });
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    lint_text(path, text, version, transactional, rules)
}

/// Lints a migration of the set: what runs of it, its Up part only in
/// another tool's layout (a Down section is never run, so never linted),
/// Flyway's placeholders replaced. The text is read as a run reads it (its
/// checksum checked against the folder's read), and gives the migration
/// its summary too when nothing has read that yet: one read of each
/// pending file before the lock, not two.
pub fn migration(m: &LocalMigration, rules: &Rules) -> Result<Linted, String> {
    if m.size.bytes > MAX_BYTES {
        return Ok(Linted::TooBig {
            bytes: m.size.bytes,
        });
    }
    let text = m.read_script().map_err(|p| p.message)?;
    m.summarize_text(&text);
    let transactional = m.execution().transactional();
    lint_text(
        &m.path,
        &text,
        Some(&m.id.version),
        Some(transactional),
        rules,
    )
}

fn lint_text(
    path: &Path,
    text: &str,
    version: Option<&Version>,
    transactional: Option<bool>,
    rules: &Rules,
) -> Result<Linted, String> {
    let transactional = match transactional {
        Some(t) => t,
        None => split::summarize(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?
            .execution
            .transactional(),
    };
    let name = path.display().to_string();
    if !rules.any_on() {
        return Ok(Linted::Findings {
            transaction: transactional,
            findings: Vec::new(),
        });
    }
    let raw = match engine::lint(text, transactional, rules) {
        Ok(raw) => raw,
        Err(levels) => return Ok(Linted::TooDeep { levels }),
    };
    Ok(Linted::Findings {
        transaction: transactional,
        findings: raw
            .into_iter()
            .map(|raw| Finding {
                file: name.clone(),
                version: version.cloned(),
                line: raw.line,
                column: raw.column,
                rule: raw.rule.name,
                level: raw.level,
                message: raw.message,
                fix: raw.fix.unwrap_or_else(|| raw.rule.fix.to_string()),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::Layout;

    fn lint(sql: &str, rules: &Rules) -> Vec<(usize, &'static str, Level)> {
        engine::lint(sql, true, rules)
            .expect("nested shallowly enough")
            .into_iter()
            .map(|f| (f.line, f.rule.name, f.level))
            .collect()
    }

    /// The summary the lint's text gives a migration is the one the file's
    /// stream gives (Up sections, markers, placeholders and byte-order
    /// marks alike): the refusals before a run read it, not the file.
    #[test]
    fn the_lints_text_gives_the_summary_the_stream_gives() {
        use crate::migrations::layout::placeholders::Placeholders;
        use crate::migrations::MigrationSet;
        use std::sync::Arc;
        let cic = "CREATE INDEX CONCURRENTLY i ON t (a);\n";
        let cases = [
            (
                Layout::Refinery,
                "V1__a.sql",
                format!("\u{feff}-- miglock:no-transaction\n{cic}"),
            ),
            (
                Layout::Refinery,
                "V1__a.sql",
                "\u{feff}ALTER TABLE t ADD COLUMN b int;\nCOMMIT;\n".into(),
            ),
            (
                Layout::Goose,
                "00001_a.sql",
                format!(
                    "-- +goose NO TRANSACTION\r\n-- +goose Up\r\n{cic}-- +goose Down\r\nBEGIN;\n"
                ),
            ),
            (
                Layout::Dbmate,
                "20240101000000_a.sql",
                format!("-- migrate:up transaction:false\n{cic}\n-- migrate:down\nDROP INDEX i;\n"),
            ),
            (
                Layout::Sqlx,
                "00001_a.sql",
                format!("-- no-transaction\n{cic}"),
            ),
            (
                Layout::Flyway,
                "V1.1__a.sql",
                "ALTER TABLE ${schema}.t ADD COLUMN b int;\nLOCK TABLE ${schema}.u;\n".into(),
            ),
        ];
        let values = Arc::new(Placeholders::new(
            &[("schema".into(), "app".into())],
            "flyway_schema_history",
            None,
            None,
            None,
        ));
        for (layout, name, text) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(name), &text).unwrap();
            let read = || {
                let reading = MigrationSet::read_with(dir.path(), layout, &values);
                assert!(
                    reading.problems.is_empty(),
                    "{layout:?}: {:?}",
                    reading.problems
                );
                reading.set
            };
            let (streamed, linted) = (read(), read());
            let streamed = streamed.migrations[0].summary().unwrap().clone();
            let m = &linted.migrations[0];
            assert!(matches!(
                migration(m, &Rules::defaults(true)),
                Ok(Linted::Findings { .. })
            ));
            assert_eq!(m.summary().unwrap(), &streamed, "{layout:?}: {text:?}");
            // From the text alone: with the file gone, a summary can only
            // be the text's.
            let from_text = read();
            let m = &from_text.migrations[0];
            let script = m.read_script().unwrap();
            std::fs::remove_file(dir.path().join(name)).unwrap();
            m.summarize_text(&script);
            assert_eq!(m.summary().unwrap(), &streamed, "{layout:?}: {text:?}");
            // Not two defaults alike: each case is read for what it holds.
            assert!(
                !streamed.execution.transactional() || !streamed.locks.is_empty(),
                "{layout:?}: {streamed:?}"
            );
        }
    }

    #[test]
    fn defaults_deny_locks_warn_style_and_leave_moot_rules_off() {
        let rules = Rules::defaults(true);
        let found = lint(
            "SELECT 1;\nCREATE INDEX i ON t (a);\nALTER TABLE t ADD COLUMN b timestamp;\n",
            &rules,
        );
        assert!(found.contains(&(2, "require-concurrent-index-creation", Level::Deny)));
        assert!(found.contains(&(3, "prefer-timestamp-tz", Level::Warn)));
        assert!(found.iter().all(|f| !f.1.contains("timeout")), "{found:?}");
        let found = lint(
            "ALTER TABLE t ADD COLUMN b text;\n",
            &Rules::defaults(false),
        );
        assert!(
            found.contains(&(1, "require-lock-timeout", Level::Warn)),
            "{found:?}"
        );
    }

    #[test]
    fn flags_select_exclude_and_set_levels() {
        let mut rules = Rules::defaults(true);
        rules
            .select("prefer-timestamptz=deny,require-statement-timeout")
            .unwrap();
        rules.exclude("require-concurrent-index-creation").unwrap();
        let found = lint(
            "CREATE INDEX i ON t (a);\nALTER TABLE t ADD b timestamp;\n",
            &rules,
        );
        assert!(found.contains(&(2, "prefer-timestamp-tz", Level::Deny)));
        assert!(found.contains(&(1, "require-statement-timeout", Level::Warn)));
        assert!(!found
            .iter()
            .any(|f| f.1 == "require-concurrent-index-creation"));
        rules.select("all=warn").unwrap();
        assert!(lint("CREATE INDEX i ON t (a);\n", &rules)
            .iter()
            .all(|f| f.2 == Level::Warn));
        assert!(rules.select("no-such-rule").is_err());
        assert!(rules.select("ban-drop-table=loud").is_err());
        assert!(rules.exclude("nope").is_err());
    }

    #[test]
    fn squawk_ignore_comments_are_honoured() {
        let rules = Rules::defaults(true);
        let sql = "-- squawk-ignore require-concurrent-index-creation\n\
                   CREATE INDEX i ON t (a);\n";
        assert_eq!(lint(sql, &rules), []);
    }

    /// The linter reads untrusted text in `apply` (a release build aborts
    /// on a panic): statements cut anywhere, and any text at all, lint
    /// without one.
    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        const TOKENS: &[&str] = &[
            "ALTER",
            "TABLE",
            "t",
            "ADD",
            "COLUMN",
            "CONSTRAINT",
            "CHECK",
            "(",
            ")",
            ",",
            ";",
            "CREATE",
            "INDEX",
            "CONCURRENTLY",
            "ON",
            "DROP",
            "DEFAULT",
            "random()",
            "NOT",
            "NULL",
            "VALID",
            "BEGIN",
            "COMMIT",
            "TYPE",
            "bigint",
            "'x''y'",
            "$$",
            "$f$",
            "--",
            "/*",
            "*/",
            "-- squawk-ignore",
            "-- squawk-ignore-file",
            "\n",
            "E'\\'",
            "\"q\"",
            "USING",
            "REFERENCES",
            "VACUUM",
            "FULL",
            "SET",
            "lock_timeout",
            "=",
            "'1s'",
            "UPDATE",
            "WHERE",
            "DO",
            "LANGUAGE",
            "plpgsql",
            "\\i",
            "::",
            "[",
        ];

        proptest! {
            #[test]
            fn token_soup_never_panics(words in proptest::collection::vec(
                proptest::sample::select(TOKENS), 0..80)
            ) {
                let sql = words.join(" ");
                for transactional in [true, false] {
                    let _ = engine::lint(&sql, transactional, &Rules::defaults(false));
                }
            }

            #[test]
            fn any_text_never_panics(sql in "\\PC{0,200}") {
                let _ = engine::lint(&sql, true, &Rules::defaults(true));
            }
        }
    }
}
