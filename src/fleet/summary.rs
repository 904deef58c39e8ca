//! The aggregate of many targets: one line or object per target, the
//! counts, and the worst outcome, which decides the exit code.

use serde_json::{json, Value};

use crate::config::{Format, Shard};
use crate::outcome::Outcome;
use crate::output::{self, Console};
use crate::report::Report;
use crate::targets::Target;

/// One target's result; `None` for a target never started.
pub struct Finished {
    pub target: Target,
    pub report: Option<Report>,
    pub ms: u64,
}

/// Why targets were left unstarted (`None`: every target ran, or a
/// signal stopped them, which the summary says by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A target of the `--canary` wave failed: the rest never started.
    Canary,
    /// `--max-failures` (or `--fail-fast`, which is 1) was reached.
    MaxFailures(usize),
}

impl Stopped {
    pub fn as_str(self) -> &'static str {
        match self {
            Stopped::Canary => "canary",
            Stopped::MaxFailures(_) => "max_failures",
        }
    }
}

/// The aggregate result: every target's, and the worst of them.
pub struct Summary {
    command: &'static str,
    pub targets: Vec<Finished>,
    pub outcome: Outcome,
    pub exit_code: u8,
    error: Option<String>,
    /// `--shard`: this worker's slice, and how many targets the whole
    /// list held.
    pub shard: Option<(Shard, usize)>,
    /// Why some targets never started (`--canary`, `--max-failures`).
    pub stopped: Option<Stopped>,
}

impl Summary {
    pub fn new(command: &'static str) -> Summary {
        Summary {
            command,
            targets: Vec::new(),
            outcome: Outcome::Failed,
            exit_code: 1,
            error: None,
            shard: None,
            stopped: None,
        }
    }

    pub fn finish_with(&mut self, outcome: Outcome, error: Option<String>) {
        self.outcome = outcome;
        self.exit_code = outcome.exit_code();
        self.error = error;
    }

    pub fn finish(&mut self, interrupted: bool) {
        let mut codes: Vec<u8> = self
            .targets
            .iter()
            .filter_map(|t| t.report.as_ref().map(|r| r.exit_code))
            .collect();
        if interrupted {
            codes.push(Outcome::Interrupted.exit_code());
        }
        self.outcome = Outcome::of_many(&codes, self.count(Outcome::Applied) > 0);
        self.exit_code = self.outcome.exit_code();
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.targets
            .iter()
            .filter(|t| t.report.as_ref().is_some_and(|r| r.outcome == outcome))
            .count()
    }

    fn not_started(&self) -> usize {
        self.targets.iter().filter(|t| t.report.is_none()).count()
    }

    /// `applied 27, failed 1, not_started 2`: the outcomes present, in a
    /// fixed order.
    fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<(&'static str, usize)> = [
            Outcome::Applied,
            Outcome::Current,
            Outcome::Pending,
            Outcome::Skipped,
            Outcome::Failed,
            Outcome::Usage,
            Outcome::Invalid,
            Outcome::Unavailable,
            Outcome::Blocked,
            Outcome::Interrupted,
        ]
        .iter()
        .map(|o| (o.as_str(), self.count(*o)))
        .collect();
        counts.push(("not_started", self.not_started()));
        counts.retain(|(_, n)| *n > 0);
        counts
    }

    pub fn print(&self, format: Format, stdout: &Console) {
        let dry_run = self
            .targets
            .iter()
            .any(|t| t.report.as_ref().is_some_and(|r| r.dry_run));
        if format == Format::Text && (self.command == "status" || dry_run) {
            for t in &self.targets {
                stdout.line(&status_line(t));
            }
        }
        if self.error.is_none() && self.outcome != Outcome::Disabled {
            output::error_text(&self.render());
        }
        if format == Format::Json {
            stdout.line(&self.to_json());
        }
    }

    /// The summary on stderr: counts, then each target that went wrong
    /// with the first line of its error.
    fn render(&self) -> String {
        let counts: Vec<String> = self
            .counts()
            .iter()
            .map(|(word, n)| format!("{n} {word}"))
            .collect();
        let shard = match self.shard {
            Some((shard, of)) => format!(" (shard {}/{} of {of})", shard.index, shard.count),
            None => String::new(),
        };
        let stopped = match self.stopped {
            Some(Stopped::Canary) => "; stopped: a canary target failed".to_string(),
            Some(Stopped::MaxFailures(n)) => format!("; stopped: {n} failed (--max-failures)"),
            None => String::new(),
        };
        let mut text = format!(
            "SUMMARY {} targets{shard}: {} (outcome {}, exit {}{stopped})\n",
            self.targets.len(),
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            },
            self.outcome,
            self.exit_code
        );
        for t in &self.targets {
            let Some(report) = &t.report else { continue };
            if report.exit_code == 0 || report.outcome == Outcome::Pending {
                continue;
            }
            text.push_str(&format!(
                "  {} {}: {}\n",
                report.outcome,
                t.target.label(),
                reason(report)
            ));
        }
        text
    }

    fn to_json(&self) -> String {
        let targets: Vec<Value> = self.targets.iter().map(target_json).collect();
        let counts: serde_json::Map<String, Value> = self
            .counts()
            .into_iter()
            .map(|(word, n)| (word.to_string(), json!(n)))
            .collect();
        let mut value = json!({
            "command": self.command,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "counts": counts,
            "targets": targets,
            "error": self.error.as_ref().map(|message| json!({ "message": message })),
        });
        if let (Some(stopped), Value::Object(object)) = (self.stopped, &mut value) {
            object.insert("stopped".into(), json!(stopped.as_str()));
        }
        if let (Some((shard, of)), Value::Object(object)) = (self.shard, &mut value) {
            object.insert(
                "shard".into(),
                json!({ "index": shard.index, "count": shard.count, "of": of }),
            );
        }
        serde_json::to_string_pretty(&value).unwrap_or_else(|e| {
            json!({
                "command": self.command,
                "outcome": "failed",
                "exit_code": 1,
                "error": { "message": format!("cannot encode the result: {e}") },
            })
            .to_string()
        })
    }
}

/// Why a target went wrong, on one line: its error's first line, and the
/// line after it when the first only announces a list (`… (2 problems):`);
/// a skipped target has no error, but a holder.
fn reason(report: &Report) -> String {
    if let Some(error) = &report.error {
        let mut lines = error.message.lines().map(str::trim);
        let first = lines.next().unwrap_or_default();
        return match lines.next() {
            Some(next) if first.ends_with(':') => format!("{first} {next}"),
            _ => first.to_string(),
        };
    }
    match (report.outcome, &report.lock.holder) {
        (Outcome::Skipped, Some(holder)) => format!(
            "the lock stayed busy for the whole --wait, held by {}",
            holder.summary()
        ),
        (Outcome::Skipped, None) => "the lock stayed busy for the whole --wait".to_string(),
        (outcome, _) => outcome.meaning().to_string(),
    }
}

/// A target's own result object (the single-target fields), plus where it
/// came from.
fn target_json(t: &Finished) -> Value {
    let mut value = match &t.report {
        Some(report) => serde_json::to_value(report).unwrap_or_else(|_| json!({})),
        None => json!({ "outcome": "not_started", "exit_code": null }),
    };
    if let Value::Object(object) = &mut value {
        object.insert("target".into(), json!(t.target.database.to_string()));
        object.insert("schema".into(), json!(t.target.schema));
        object.insert("line".into(), json!(t.target.line));
        object.insert("duration_ms".into(), json!(t.ms));
    }
    value
}

/// `status` (and `apply --dry-run`) with many targets: one line each
/// rather than the full page (or plan).
fn status_line(t: &Finished) -> String {
    match &t.report {
        Some(report) => format!(
            "{}  {}  applied={} pending={}",
            t.target.label(),
            report.outcome,
            report.applied.len(),
            report.pending.len()
        ),
        None => format!("{}  not_started", t.target.label()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ConnectTarget;

    fn finished(outcome: Option<Outcome>) -> Finished {
        let target = Target {
            database: ConnectTarget::resolve(Some("postgres://u@h/d"), &|_| None).unwrap(),
            schema: None,
            line: None,
        };
        let report = outcome.map(|o| {
            let mut r = Report::new("apply");
            r.finish(o, o.exit_code());
            r
        });
        Finished {
            target,
            report,
            ms: 0,
        }
    }

    #[test]
    fn the_worst_outcome_decides_the_exit_code() {
        use Outcome::*;
        let cases: [(&[Option<Outcome>], bool, u8, Outcome); 8] = [
            (&[Some(Applied), Some(Current)], false, 0, Applied),
            (&[Some(Current)], false, 0, Current),
            (&[Some(Pending), Some(Skipped)], false, 3, Skipped),
            (&[Some(Skipped), None], true, 130, Interrupted),
            (
                &[Some(Unavailable), Some(Interrupted)],
                true,
                5,
                Unavailable,
            ),
            (&[Some(Unavailable), Some(Invalid)], false, 6, Invalid),
            (&[Some(Invalid), Some(Failed), None], false, 1, Failed),
            (&[], false, 0, Current),
        ];
        for (outcomes, interrupted, code, outcome) in cases {
            let mut summary = Summary::new("apply");
            summary.targets = outcomes.iter().map(|o| finished(*o)).collect();
            summary.finish(interrupted);
            assert_eq!(
                (summary.exit_code, summary.outcome),
                (code, outcome),
                "{outcomes:?}"
            );
        }
    }
}
