//! `--metrics-file PATH`: the run's figures in Prometheus's text exposition
//! format (0.0.4), for node_exporter's textfile collector or a push to a
//! Pushgateway, written at the end of a run.
//!
//! Hand-written, on purpose: the format is a few lines of `# HELP`,
//! `# TYPE` and samples, every metric here is a gauge (a snapshot of one
//! run), and the Rust client crates encode OpenMetrics (`# EOF`, counters
//! renamed `_total`), which is not what the textfile collector documents.
//!
//! The file is written beside its final name and renamed over it, so a
//! collector never reads half of it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::outcome::Outcome;
use crate::report::Report;

/// One target's run: its labels and its result (`None`: never started).
pub struct Sample<'a> {
    /// As logged: `user@host:port/database`, never a password.
    pub target: String,
    pub schema: Option<&'a str>,
    /// The line of the targets file: two lines may name one target.
    pub line: Option<String>,
    pub report: Option<&'a Report>,
    pub ms: u64,
}

/// How a per-target figure is read from a sample (`None`: not there).
type Figure = fn(&Sample) -> Option<f64>;

/// The text for `command`'s targets, and the run's exit code.
pub fn render(command: &str, samples: &[Sample], exit_code: u8) -> String {
    let mut text = String::new();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let run = [("command", command)];
    family(
        &mut text,
        "miglock_run_exit_code",
        "The exit code of the run.",
    );
    sample(
        &mut text,
        "miglock_run_exit_code",
        &run,
        f64::from(exit_code),
    );
    family(
        &mut text,
        "miglock_run_end_timestamp_seconds",
        "When the run ended, in Unix time.",
    );
    sample(&mut text, "miglock_run_end_timestamp_seconds", &run, now);
    family(
        &mut text,
        "miglock_run_targets",
        "How many targets the run had.",
    );
    sample(&mut text, "miglock_run_targets", &run, samples.len() as f64);

    let per_target: [(&str, &str, Figure); 5] = [
        (
            "miglock_target_exit_code",
            "The target's exit code (absent for a target never started).",
            |s| s.report.map(|r| f64::from(r.exit_code)),
        ),
        (
            "miglock_target_migrations_applied",
            "Migrations this run applied on the target (apply only).",
            // `status` and `wait` list what the history holds there.
            |s| {
                s.report
                    .filter(|r| r.command == "apply")
                    .map(|r| r.applied.len() as f64)
            },
        ),
        (
            "miglock_target_migrations_pending",
            "Migrations still pending on the target when the run ended (when its history was read).",
            // Not 0 for a target whose history was never read.
            |s| {
                s.report
                    .filter(|r| {
                        !matches!(
                            r.outcome,
                            Outcome::Unavailable | Outcome::Usage | Outcome::Disabled
                        )
                    })
                    .map(|r| r.pending.len() as f64)
            },
        ),
        (
            "miglock_target_lock_wait_seconds",
            "How long the target's run waited for the lock.",
            |s| s.report.map(|r| r.lock.waited_ms as f64 / 1000.0),
        ),
        (
            "miglock_target_duration_seconds",
            "How long the target's run took.",
            |s| s.report.map(|_| s.ms as f64 / 1000.0),
        ),
    ];
    family(
        &mut text,
        "miglock_target_outcome",
        "1 for the target's outcome (applied, current, failed, blocked, not_started…).",
    );
    for s in samples {
        let outcome = s.report.map_or("not_started", |r| r.outcome.as_str());
        let labels = labels(command, s, Some(outcome));
        sample(&mut text, "miglock_target_outcome", &labels, 1.0);
    }
    for (name, help, value) in per_target {
        if !samples.iter().any(|s| value(s).is_some()) {
            continue;
        }
        family(&mut text, name, help);
        for s in samples {
            if let Some(value) = value(s) {
                sample(&mut text, name, &labels(command, s, None), value);
            }
        }
    }
    text
}

fn labels<'a>(
    command: &'a str,
    s: &'a Sample,
    outcome: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![("command", command), ("target", s.target.as_str())];
    if let Some(schema) = s.schema {
        labels.push(("schema", schema));
    }
    if let Some(line) = &s.line {
        labels.push(("line", line.as_str()));
    }
    if let Some(outcome) = outcome {
        labels.push(("outcome", outcome));
    }
    labels
}

fn family(text: &mut String, name: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn sample(text: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    let labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
        .collect();
    let _ = writeln!(text, "{name}{{{}}} {value}", labels.join(","));
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `text` to `path` through a temporary file beside it, renamed
/// over it. A failure is logged (`METRICS_NOT_WRITTEN`) and changes no
/// exit code: the migrations are what the code is about.
pub fn write(path: &Path, text: &str) {
    let file_name = path
        .file_name()
        .map_or_else(|| "metrics".into(), |n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    // A new file only: never through a link someone left under that name.
    let _ = std::fs::remove_file(&temporary);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    match written {
        Ok(()) => log::debug!("metrics written to {}", path.display()),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            log::warn!(
                "METRICS_NOT_WRITTEN path={} reason={:?}",
                path.display(),
                e.to_string()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_prometheus_exposition_with_escaped_labels() {
        let mut report = Report::new("apply");
        report.finish(Outcome::Applied, 0);
        report.lock.waited_ms = 1500;
        let samples = [
            Sample {
                target: "app@db:5432/t\"1".into(),
                schema: Some("tenant\\a"),
                line: None,
                report: Some(&report),
                ms: 250,
            },
            Sample {
                target: "app@db:5432/t2".into(),
                schema: None,
                line: Some("7".into()),
                report: None,
                ms: 0,
            },
        ];
        let text = render("apply", &samples, 0);
        assert!(text.contains(
            "# TYPE miglock_run_exit_code gauge\nmiglock_run_exit_code{command=\"apply\"} 0\n"
        ));
        assert!(text.contains(
            "miglock_target_outcome{command=\"apply\",target=\"app@db:5432/t\\\"1\",schema=\"tenant\\\\a\",outcome=\"applied\"} 1\n"
        ), "{text}");
        assert!(text.contains("outcome=\"not_started\"} 1\n"), "{text}");
        assert!(text.contains("miglock_target_lock_wait_seconds{command=\"apply\",target=\"app@db:5432/t\\\"1\",schema=\"tenant\\\\a\"} 1.5\n"), "{text}");
        // A target never started has an outcome and nothing else.
        assert_eq!(
            text.matches("target=\"app@db:5432/t2\"").count(),
            1,
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }
}
