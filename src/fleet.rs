//! Many databases: `apply`, `status` and `wait` over a list of targets,
//! at most `--jobs` at once, with one summary and one exit code.
//!
//! Each target runs exactly the single-target command, with its own
//! connection, lock, wait, [`Report`] and outcome; this module only hands
//! targets to worker threads and adds the results up. Its own outcomes are
//! not exit-code outcomes: a target never started is `not_started`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde_json::{json, Value};

use crate::commands;
use crate::config::{AheadPolicy, ApplyConfig, Common, Format, StatusConfig, WaitConfig};
use crate::connect::{self, ConnectTarget};
use crate::env::Env;
use crate::error::Failure;
use crate::history::HistoryTable;
use crate::interrupt::Interrupt;
use crate::lock::LockKey;
use crate::lock::LockMode;
use crate::outcome::Outcome;
use crate::output::{self, Console, Progress};
use crate::report::Report;
use crate::targets::{self, Target};

/// Where the targets come from.
pub enum Source {
    /// `--databases-from` (`-` is stdin).
    File(String),
    /// `--all-databases [--match PATTERN]` on the server of `server`.
    AllDatabases {
        server: Box<ConnectTarget>,
        pattern: Option<String>,
    },
}

/// What every target shares; built by `GlobalArgs::fleet`.
pub struct FleetConfig {
    pub source: Source,
    pub jobs: usize,
    pub fail_fast: bool,
    pub migrations: PathBuf,
    pub table: HistoryTable,
    pub connect_timeout: Duration,
    pub instance: Option<String>,
    pub ahead: AheadPolicy,
    pub lock_mode: LockMode,
}

impl FleetConfig {
    /// The single-target configuration of one target: a tenant schema
    /// holds its own history table, so its key (derived from database and
    /// qualified table) differs from its neighbours'.
    fn common(&self, target: &Target) -> Result<Common, Failure> {
        let table = match &target.schema {
            Some(schema) => {
                let name = self.table.to_string();
                let name = name.rsplit('.').next().unwrap_or_default();
                HistoryTable::parse(&format!("{schema}.{name}"))
                    .map_err(|e| Failure::usage(anyhow!(e)))?
            }
            None => self.table.clone(),
        };
        Ok(Common {
            key: LockKey::derived(target.database.database(), &table),
            database: target.database.clone(),
            migrations: self.migrations.clone(),
            table,
            connect_timeout: self.connect_timeout,
            instance: self.instance.clone(),
            ahead: self.ahead,
            lock_mode: self.lock_mode,
        })
    }
}

/// The command every target runs, configured as for one target.
pub enum Job {
    Apply(ApplyConfig),
    Status(StatusConfig, bool),
    Wait(WaitConfig),
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::Apply(_) => "apply",
            Job::Status(..) => "status",
            Job::Wait(_) => "wait",
        }
    }

    fn exit_code(&self, outcome: Outcome) -> u8 {
        match self {
            Job::Status(_, check) => outcome.status_exit_code(*check),
            _ => outcome.exit_code(),
        }
    }

    /// This job for one target.
    fn for_target(&self, common: Common, schema: Option<&str>) -> Job {
        match self {
            Job::Apply(config) => {
                let mut config = config.clone();
                config.common = common;
                if let Some(schema) = schema {
                    with_schema_first(&mut config.settings, schema);
                }
                Job::Apply(config)
            }
            Job::Status(config, check) => {
                let mut config = config.clone();
                config.common = common;
                Job::Status(config, *check)
            }
            Job::Wait(config) => {
                let mut config = config.clone();
                config.common = common;
                Job::Wait(config)
            }
        }
    }

    fn run(
        &self,
        report: &mut Report,
        progress: &Progress,
        interrupt: &Interrupt,
    ) -> Result<Outcome, Failure> {
        let none = Console::none();
        match self {
            Job::Apply(config) => commands::apply::run(config, report, progress, interrupt, &none),
            Job::Status(config, _) => commands::status::run(config, report, interrupt, &none),
            Job::Wait(config) => commands::wait::run(config, report, progress, interrupt),
        }
    }
}

/// The tenant's schema goes first on `search_path`, before what `--set
/// search_path=…` gave or else `public`: its unqualified names are its own,
/// and shared objects in `public` stay reachable.
fn with_schema_first(settings: &mut Vec<(String, String)>, schema: &str) {
    let quoted = crate::sql::ident(schema);
    match settings.iter_mut().find(|(name, _)| name == "search_path") {
        Some((_, value)) => *value = format!("{quoted}, {value}"),
        None => settings.push(("search_path".into(), format!("{quoted}, public"))),
    }
}

/// What the command line asks of many targets, built at the seam
/// (`Cli::fleet_request`): the shared settings, and how to make one
/// target's job from its `Common`.
pub struct Request<'a> {
    /// `apply` with `RUN_MIGRATIONS` off: disabled before anything else.
    pub disabled: bool,
    pub config: FleetConfig,
    pub job: Box<dyn Fn(Common) -> Result<Job, Failure> + 'a>,
}

/// Runs `apply`, `status` or `wait` over many targets; `request` is
/// `Err` when the command line's own settings were refused.
pub fn run_many(
    command: &'static str,
    request: Result<Request, Failure>,
    env: Env,
    progress: &Progress,
    interrupt: &Interrupt,
    format: Format,
    stdout: &Console,
) -> u8 {
    let mut summary = Summary::new(command);
    let result = request
        .and_then(|request| prepare(request, env, interrupt))
        .map(|prepared| match prepared {
            Prepared::Disabled => Outcome::Disabled,
            Prepared::Run(run) => {
                let (config, job, targets) = *run;
                if let Some(job) = job {
                    summary.targets = run_all(&config, &job, &targets, progress, interrupt);
                }
                Outcome::Current
            }
        });
    match result {
        Ok(Outcome::Disabled) => {
            log::info!("MIGRATIONS_DISABLED RUN_MIGRATIONS is off: nothing was touched");
            summary.finish_with(Outcome::Disabled, None);
        }
        Ok(_) => summary.finish(interrupt.is_set()),
        Err(failure) => {
            let failure = if interrupt.is_set() {
                failure.after_signal()
            } else {
                failure
            };
            output::error_line(&format!("error: {}", failure.message()));
            summary.finish_with(failure.outcome, Some(failure.message()));
        }
    }
    summary.print(format, stdout);
    stdout.exit_code(summary.outcome, summary.exit_code)
}

enum Prepared {
    Disabled,
    /// No job when there is no target to build one from.
    Run(Box<(FleetConfig, Option<Job>, Vec<Target>)>),
}

/// Everything that can be refused before any target runs: the targets
/// file (one bad line and nothing runs), the list of databases, the job's
/// settings.
fn prepare(request: Request, env: Env, interrupt: &Interrupt) -> Result<Prepared, Failure> {
    if request.disabled {
        return Ok(Prepared::Disabled);
    }
    let config = request.config;
    let targets = match &config.source {
        Source::File(path) => targets::parse(&targets::read_file(path)?, path, env)?,
        Source::AllDatabases { server, pattern } => {
            list_all(server, pattern.as_deref(), &config, interrupt)?
        }
    };
    log::info!(
        "TARGETS count={} jobs={}",
        targets.len(),
        config.jobs.min(targets.len().max(1))
    );
    let Some(first) = targets.first() else {
        log::warn!("no targets: nothing to do");
        return Ok(Prepared::Run(Box::new((config, None, targets))));
    };
    // Built once, from the first target, so a bad setting is one usage
    // error rather than one per target.
    let job = (request.job)(config.common(first)?)?;
    Ok(Prepared::Run(Box::new((config, Some(job), targets))))
}

/// `--all-databases`: one connection to the server, closed before any
/// target starts.
fn list_all(
    server: &ConnectTarget,
    pattern: Option<&str>,
    config: &FleetConfig,
    interrupt: &Interrupt,
) -> Result<Vec<Target>, Failure> {
    let name =
        crate::lock::Identity::new("list", config.instance.as_deref()).application_name(None);
    let mut client = connect::connect(server, config.connect_timeout, &name, interrupt)?;
    let names = targets::list_databases(&mut client, server.database(), pattern);
    interrupt.forget();
    drop(client);
    Ok(names?
        .iter()
        .map(|name| Target {
            database: server.with_database(name),
            schema: None,
            line: None,
        })
        .collect())
}

/// One target's result; `None` for a target never started.
struct Finished {
    target: Target,
    report: Option<Report>,
    ms: u64,
}

/// Failures stop `--fail-fast`; a busy lock, a pending schema or a signal
/// do not count as one.
fn is_failure(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failed | Outcome::Usage | Outcome::Invalid | Outcome::Unavailable
    )
}

fn run_all(
    config: &FleetConfig,
    job: &Job,
    targets: &[Target],
    progress: &Progress,
    interrupt: &Interrupt,
) -> Vec<Finished> {
    let total = targets.len();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut results: Vec<Option<(Report, u64)>> = (0..total).map(|_| None).collect();
    let overall = progress.bar(total as u64);
    if let Some(bar) = &overall {
        bar.set_message("targets, 0 failed");
    }
    let mut failures = 0usize;
    let (sender, receiver) = mpsc::channel::<(usize, Report, u64)>();
    std::thread::scope(|scope| {
        for worker in 0..config.jobs.min(total) {
            let sender = sender.clone();
            let (next, stop) = (&next, &stop);
            let spawned = std::thread::Builder::new()
                .name(format!("target-{worker}"))
                .spawn_scoped(scope, move || loop {
                    if stop.load(Ordering::SeqCst) || interrupt.is_set() {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(target) = targets.get(index) else {
                        break;
                    };
                    let started = Instant::now();
                    let report = run_one(config, job, target, progress, interrupt);
                    if config.fail_fast && is_failure(report.outcome) {
                        // Before the result is sent, so with --jobs 1 the
                        // next target is never taken.
                        stop.store(true, Ordering::SeqCst);
                    }
                    if sender
                        .send((index, report, crate::millis(started.elapsed())))
                        .is_err()
                    {
                        break;
                    }
                });
            if let Err(e) = spawned {
                log::warn!("cannot start worker thread {worker}: {e}");
            }
        }
        drop(sender);
        for (index, report, ms) in receiver {
            let target = &targets[index];
            if is_failure(report.outcome) {
                failures += 1;
            }
            log::info!(
                "TARGET_DONE target={} outcome={} exit_code={} applied={} ms={ms}",
                target.label(),
                report.outcome,
                report.exit_code,
                report.applied.len()
            );
            if let Some(bar) = &overall {
                bar.inc(1);
                bar.set_message(format!("targets, {failures} failed"));
            }
            results[index] = Some((report, ms));
        }
    });
    targets
        .iter()
        .zip(results)
        .map(|(target, result)| {
            let (report, ms) = match result {
                Some((report, ms)) => (Some(report), ms),
                None => (None, 0),
            };
            Finished {
                target: target.clone(),
                report,
                ms,
            }
        })
        .collect()
}

/// One target, exactly as `miglock <command>` would run it alone; its
/// error is logged (naming the target) rather than printed bare.
fn run_one(
    config: &FleetConfig,
    job: &Job,
    target: &Target,
    progress: &Progress,
    interrupt: &Interrupt,
) -> Report {
    let label = target.label();
    crate::output::set_log_context(Some(label.clone()));
    let spinner = progress.spinner(label);
    let mut report = Report::new(job.name());
    let result = config
        .common(target)
        .map(|common| job.for_target(common, target.schema.as_deref()))
        .and_then(|job| job.run(&mut report, progress, interrupt));
    match result {
        Ok(outcome) => report.finish(outcome, job.exit_code(outcome)),
        Err(failure) => {
            let failure = if interrupt.is_set() {
                failure.after_signal()
            } else {
                failure
            };
            log::error!("{}", failure.message());
            report.fail(&failure, job.exit_code(failure.outcome));
        }
    }
    // The connection is closed: a later signal has nothing to cancel here.
    interrupt.forget();
    drop(spinner);
    crate::output::set_log_context(None);
    report
}

/// The aggregate result: every target's, and the worst of them.
struct Summary {
    command: &'static str,
    targets: Vec<Finished>,
    outcome: Outcome,
    exit_code: u8,
    error: Option<String>,
}

/// Worst first: the aggregate exit code is the first of these any target
/// (or, for 130, the signal) has.
const SEVERITY: [u8; 7] = [1, 2, 6, 5, 130, 3, 7];

impl Summary {
    fn new(command: &'static str) -> Summary {
        Summary {
            command,
            targets: Vec::new(),
            outcome: Outcome::Failed,
            exit_code: 1,
            error: None,
        }
    }

    fn finish_with(&mut self, outcome: Outcome, error: Option<String>) {
        self.outcome = outcome;
        self.exit_code = outcome.exit_code();
        self.error = error;
    }

    fn finish(&mut self, interrupted: bool) {
        let mut codes: Vec<u8> = self
            .targets
            .iter()
            .filter_map(|t| t.report.as_ref().map(|r| r.exit_code))
            .collect();
        if interrupted {
            codes.push(130);
        }
        let worst = SEVERITY
            .iter()
            .copied()
            .find(|code| codes.contains(code))
            .unwrap_or(0);
        self.exit_code = worst;
        self.outcome = match worst {
            1 => Outcome::Failed,
            2 => Outcome::Usage,
            6 => Outcome::Invalid,
            5 => Outcome::Unavailable,
            130 => Outcome::Interrupted,
            3 => Outcome::Skipped,
            7 => Outcome::Pending,
            _ if self.count(Outcome::Applied) > 0 => Outcome::Applied,
            _ => Outcome::Current,
        };
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
            Outcome::Interrupted,
        ]
        .iter()
        .map(|o| (o.as_str(), self.count(*o)))
        .collect();
        counts.push(("not_started", self.not_started()));
        counts.retain(|(_, n)| *n > 0);
        counts
    }

    fn print(&self, format: Format, stdout: &Console) {
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
        let mut text = format!(
            "SUMMARY {} targets: {} (outcome {}, exit {})\n",
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
            let first = report
                .error
                .as_ref()
                .and_then(|e| e.message.lines().next())
                .unwrap_or("");
            text.push_str(&format!(
                "  {} {}: {first}\n",
                report.outcome,
                t.target.label()
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
        let value = json!({
            "command": self.command,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "counts": counts,
            "targets": targets,
            "error": self.error.as_ref().map(|message| json!({ "message": message })),
        });
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
    use std::collections::HashSet;

    use super::*;
    // The tests build configurations the way the command line does.
    use crate::cli::{Cli, Command};

    #[test]
    fn the_tenant_schema_goes_first_on_the_search_path() {
        let mut settings = vec![("work_mem".to_string(), "64MB".to_string())];
        with_schema_first(&mut settings, "tenant_a");
        assert_eq!(
            settings[1],
            ("search_path".into(), "\"tenant_a\", public".into())
        );
        let mut settings = vec![("search_path".to_string(), "app, ext".to_string())];
        with_schema_first(&mut settings, "t");
        assert_eq!(settings, [("search_path".into(), "\"t\", app, ext".into())]);
    }

    #[test]
    fn many_targets_options_are_checked_before_anything_runs() {
        let no_vars = |_: &str| None;
        let parse = |args: &[&str]| Cli::parse_args(args.iter().copied());
        // --match only with --all-databases; one source at a time.
        for args in [
            &["miglock", "apply", "--match", "t%"][..],
            &[
                "miglock",
                "apply",
                "--all-databases",
                "--databases-from",
                "f",
            ],
            &["miglock", "status", "--databases-from", "f", "--jobs", "0"],
            &["miglock", "wait", "--databases-from", "f", "--jobs", "257"],
            &["miglock", "unlock", "--databases-from", "f"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
        let cli = parse(&[
            "miglock",
            "status",
            "--databases-from",
            "f",
            "--lock-key",
            "7",
        ])
        .unwrap();
        let Command::Status(args) = &cli.command else {
            panic!("status")
        };
        let err = cli.global.fleet(&args.fleet, &no_vars).err().unwrap();
        assert_eq!(err.outcome, Outcome::Usage);
        assert!(err.message().contains("--lock-key"), "{err}");
        let cli = parse(&["miglock", "wait", "--databases-from", "f", "--jobs", "9"]).unwrap();
        let Command::Wait(args) = &cli.command else {
            panic!("wait")
        };
        let config = cli.global.fleet(&args.fleet, &no_vars).unwrap().unwrap();
        assert_eq!((config.jobs, config.fail_fast), (9, false));
        // One target: not this module's business.
        let cli = parse(&["miglock", "apply", "--jobs", "9"]).unwrap();
        let Command::Apply(args) = &cli.command else {
            panic!("apply")
        };
        assert!(cli.global.fleet(&args.fleet, &no_vars).unwrap().is_none());
    }

    #[test]
    fn a_tenant_schema_qualifies_the_table_and_so_the_key() {
        let config = FleetConfig {
            source: Source::File("f".into()),
            jobs: 1,
            fail_fast: false,
            migrations: PathBuf::new(),
            table: HistoryTable::parse("app.history").unwrap(),
            connect_timeout: Duration::ZERO,
            instance: None,
            ahead: AheadPolicy::default(),
            lock_mode: LockMode::Session,
        };
        let mut target = finished(None).target;
        let plain = config.common(&target).unwrap();
        target.schema = Some("tenant_a".into());
        let a = config.common(&target).unwrap();
        target.schema = Some("tenant_b".into());
        let b = config.common(&target).unwrap();
        assert_eq!(plain.table.to_string(), "app.history");
        assert_eq!(a.table.to_string(), "tenant_a.history");
        assert_eq!(a.key.key, LockKey::derived("d", &a.table).key);
        assert!(
            a.key.source.contains("miglock:d:tenant_a.history"),
            "{}",
            a.key.source
        );
        let keys: HashSet<i64> = [plain.key.key, a.key.key, b.key.key].into();
        assert_eq!(keys.len(), 3);
    }

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
