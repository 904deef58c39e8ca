//! miglock: apply PostgreSQL migrations safely when many replicas start at
//! once.
//!
//! The `miglock` binary is a thin `main` over [`run`]. Applications that
//! migrate at start-up can do the same in-process with [`Migrator`]: the
//! same advisory lock, the same strict reading of the files, one
//! transaction per migration with its history row, so replicas running the
//! binary and replicas embedding the library share one lock and one
//! history (refinery's table).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let result = miglock::Migrator::new("postgres://app@db/app")
//!     .migrations("migrations")
//!     .wait(Duration::from_secs(30))
//!     .apply();
//! match result {
//!     Ok(miglock::Migrated::Applied(applied)) => println!("applied {}", applied.len()),
//!     Ok(miglock::Migrated::Current) => println!("nothing to do"),
//!     Ok(miglock::Migrated::Skipped) => println!("another replica is migrating"),
//!     Ok(other) => println!("{other:?}"),
//!     Err(e) => eprintln!("migrations failed (exit code {}): {e}", e.exit_code()),
//! }
//! ```
//!
//! [`Migrator::apply`] blocks; from an async service, run it with
//! `spawn_blocking` (see [`Migrator`]). Everything else in the crate is
//! internal to the binary.

mod api;
mod backoff;
mod cli;
mod commands;
mod config;
mod connect;
mod context;
mod env;
mod error;
mod fleet;
mod interrupt;
mod lock;
mod metrics;
mod migrate;
mod migrations;
mod outcome;
mod output;
mod parse;
mod pg_error;
mod report;
mod sql;
mod targets;
mod time;

pub use api::{AppliedMigration, CancelHandle, Error, ErrorKind, LockMode, Migrated, Migrator};
pub use migrations::Version;

/// Internals the property tests drive directly (parsers, quoting, name
/// checks): not part of the API, and only built with the `testing`
/// feature, which the crate's own tests turn on.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::connect::conninfo::take_params;
    pub use crate::connect::tls::SslMode;
    pub use crate::connect::ConnectTarget;
    pub use crate::lock::Identity;
    pub use crate::migrations::history::HistoryTable;
    pub use crate::migrations::{parse_file_name, MigrationSet, ProblemKind};
    pub use crate::targets::parse as parse_targets;
    pub mod parse {
        pub use crate::parse::*;
    }
    pub mod pgpass {
        pub use crate::connect::pgpass::*;
    }
    pub mod sql {
        pub use crate::sql::*;
    }
    pub mod split {
        pub use crate::migrations::split::*;
    }
}

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::Format;
use crate::context::Context;
use crate::env::Env;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::outcome::Outcome;
use crate::output::{Console, Progress};
use crate::report::Report;

/// Parses the command line, runs the command, prints the result, and
/// returns the exit code its outcome decides.
pub fn run() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let cli = match Cli::parse_command_line() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version: a reader that went away is fine, any
            // other failure to write them (a full disk) is not.
            return match e.print() {
                Err(io) if io.kind() != std::io::ErrorKind::BrokenPipe => {
                    output::error_line(&format!("error: cannot write to stdout: {io}"));
                    ExitCode::from(Outcome::Failed.exit_code())
                }
                _ => ExitCode::SUCCESS,
            };
        }
        Err(e) => return ExitCode::from(parse_failure(e, &env)),
    };
    let stdout = Console::stdout();
    // Before anything is said: `completions` and `man` take no
    // --log-format, but their warnings follow MIGLOCK_LOG_FORMAT.
    let json_logs = match cli.command.output() {
        Some(output) => output.json_logs(),
        None => env("MIGLOCK_LOG_FORMAT").as_deref() == Some("json"),
    };
    if json_logs {
        output::enable_json_logs();
    }
    match &cli.command {
        Command::Completions { shell } => {
            warn_ignored(&cli, None);
            stdout.print_bytes(&commands::completions::render(*shell, cli::command()));
            return ExitCode::from(stdout.exit_code(Outcome::Current, 0));
        }
        Command::Man => {
            warn_ignored(&cli, None);
            return ExitCode::from(match commands::man::render(cli::command()) {
                Ok(page) => {
                    stdout.print_bytes(&page);
                    stdout.exit_code(Outcome::Current, 0)
                }
                Err(e) => {
                    output::error_line(&format!("error: cannot render the man page: {e}"));
                    Outcome::Failed.exit_code()
                }
            });
        }
        _ => {}
    }
    // Every command past this point reports a result.
    let Some(output) = cli.command.output() else {
        return ExitCode::SUCCESS;
    };
    let progress = Progress::init(output.verbosity(), env("RUST_LOG").as_deref());
    warn_ignored(&cli, Some(&progress));
    let format = output.format();
    let interrupt = Interrupt::new();
    if let Err(e) = interrupt.install() {
        log::warn!("cannot handle SIGINT/SIGTERM/SIGHUP ({e}); a signal will end miglock abruptly");
    }
    // Text goes to stdout only in text mode; JSON mode prints the object.
    let none = Console::none();
    let ctx = Context {
        progress: &progress,
        interrupt: &interrupt,
        format,
        out: match format {
            Format::Text => &stdout,
            Format::Json => &none,
        },
    };

    // Many targets (--databases-from, --all-databases): src/fleet/.
    let metrics_file = cli.command.metrics_file();
    if let Some((command, request)) = cli.fleet_request(&env) {
        let code = fleet::run_many(&ctx, command, request, &env, &stdout, metrics_file);
        return ExitCode::from(code);
    }
    let started = std::time::Instant::now();

    // Present for every command but `new` (which never connects).
    let shared = cli.command.shared();
    let common = || match &shared {
        Some(shared) => shared.common(&env),
        None => Err(Failure::usage(anyhow::anyhow!(
            "this command needs no database"
        ))),
    };
    let exit_code = Outcome::exit_code;
    let report = match &cli.command {
        Command::Apply(args) => execute("apply", &interrupt, exit_code, |report| {
            // The gate comes first: a disabled replica must not fail on
            // settings it will never use.
            if !cli::migrations_enabled(&env)? {
                log::info!("MIGRATIONS_DISABLED RUN_MIGRATIONS is off: nothing was touched");
                return Ok(Outcome::Disabled);
            }
            let config = args.config(common()?, &env)?;
            commands::apply::run(&ctx, &config, report)
        }),
        Command::Status(args) => {
            let check = args.check;
            let exit_code = move |o: Outcome| o.status_exit_code(check);
            execute("status", &interrupt, exit_code, |report| {
                let config = args.config(common()?, &env)?;
                commands::status::run(&ctx, &config, report)
            })
        }
        Command::Wait(args) => execute("wait", &interrupt, exit_code, |report| {
            let config = args.config(common()?, &env)?;
            commands::wait::run(&ctx, &config, report)
        }),
        Command::Unlock(args) => execute("unlock", &interrupt, exit_code, |report| {
            let config = args.config(common()?);
            commands::unlock::run(&ctx, &config, report)
        }),
        Command::Baseline(args) => execute("baseline", &interrupt, exit_code, |report| {
            let config = args.config(common()?, &env)?;
            commands::baseline::run(&ctx, &config, report)
        }),
        Command::New(args) => execute("new", &interrupt, exit_code, |report| {
            commands::new::run(&ctx, &args.config()?, report)
        }),
        Command::Down(args) => execute("down", &interrupt, exit_code, |report| {
            let config = args.config(common()?, &env)?;
            commands::down::run(&ctx, &config, report)
        }),
        Command::Lint(args) => execute("lint", &interrupt, exit_code, |report| {
            commands::lint::run(&ctx, &args.config(&env)?, report)
        }),
        Command::Repair(args) => execute("repair", &interrupt, exit_code, |report| {
            let config = args.config(common()?, &env)?;
            commands::repair::run(&ctx, &config, report)
        }),
        Command::Completions { .. } | Command::Man => return ExitCode::SUCCESS,
    };
    let code = print_result(&report, format, &stdout);
    if let Some(path) = metrics_file {
        let sample = metrics::Sample {
            target: report.database.clone().unwrap_or_default(),
            schema: None,
            line: None,
            report: Some(&report),
            ms: time::millis(started.elapsed()),
        };
        metrics::write(path, &metrics::render(report.command, &[sample], code));
    }
    ExitCode::from(code)
}

/// An option the command does not use was given: accepted, as when every
/// option was global, and said to have done nothing. Before logging is set
/// up (`completions`, `man`), on stderr directly.
fn warn_ignored(cli: &Cli, logging: Option<&Progress>) {
    let name = cli.command.name();
    for flag in &cli.ignored {
        let text = format!("{flag} does nothing for miglock {name}: ignored");
        match logging {
            Some(_) => log::warn!("{text}"),
            None => output::error_line(&format!("warning: {text}")),
        }
    }
}

/// Prints the JSON object (with `--format json`) and decides the exit
/// code (see [`Console::exit_code`]).
fn print_result(report: &Report, format: Format, stdout: &Console) -> u8 {
    if format == Format::Json {
        stdout.line(&report.to_json());
    }
    let code = stdout.exit_code(report.outcome, report.exit_code);
    // `new`'s result is the path: say it where it can still be read.
    if let (Some(path), true) = (&report.path, code != report.exit_code) {
        output::error_line(&format!("{path} was created"));
    }
    code
}

/// A command line clap refused. It is still a result: `--format json`
/// gets its JSON object. And `apply` with `RUN_MIGRATIONS` off is disabled
/// before anything else: a replica that never migrates must not fail on a
/// migration setting it shares with the one that does (`MIGLOCK_WAIT`…).
fn parse_failure(error: clap::Error, env: Env) -> u8 {
    let seen = cli::command()
        .ignore_errors(true)
        .try_get_matches_from(std::env::args_os())
        .ok();
    let command = seen
        .as_ref()
        .and_then(|m| m.subcommand_name())
        .unwrap_or("miglock");
    // clap stops at the first error, so the format may lie beyond it.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let flag = |name: &str| {
        let prefix = format!("{name}=");
        args.windows(2)
            .rev()
            .find_map(|w| (w[0] == name).then(|| w[1].clone()))
            .or_else(|| {
                args.iter()
                    .rev()
                    .find_map(|a| a.strip_prefix(prefix.as_str()).map(str::to_string))
            })
    };
    let json = flag("--format")
        .or_else(|| env("MIGLOCK_FORMAT"))
        .as_deref()
        == Some("json");
    if flag("--log-format")
        .or_else(|| env("MIGLOCK_LOG_FORMAT"))
        .as_deref()
        == Some("json")
    {
        output::enable_json_logs();
    }
    let format = if json { Format::Json } else { Format::Text };
    let command: &'static str = match command {
        "apply" => "apply",
        "status" => "status",
        "wait" => "wait",
        "unlock" => "unlock",
        "baseline" => "baseline",
        "new" => "new",
        "repair" => "repair",
        _ => "miglock",
    };
    let stdout = Console::stdout();
    if command == "apply" && cli::migrations_enabled(env).ok() == Some(false) {
        let _ = Progress::init(output::Verbosity::Normal, None);
        let report = execute(command, &Interrupt::default(), Outcome::exit_code, |_| {
            log::info!("MIGRATIONS_DISABLED RUN_MIGRATIONS is off: nothing was touched");
            Ok(Outcome::Disabled)
        });
        return print_result(&report, format, &stdout);
    }
    // clap quotes the argument it refused; a connection string given as a
    // positional argument by mistake must not come back with its password.
    let mut rendered = error.render().to_string();
    for arg in &args {
        // `--wait=postgres://…`: clap quotes the value only.
        let value = arg
            .strip_prefix("--")
            .and_then(|flag| flag.split_once('='))
            .map(|(_, value)| value);
        for text in std::iter::once(arg.as_str()).chain(value) {
            if crate::connect::conninfo::may_hold_a_password(text) {
                rendered = scrubbed(&rendered, text);
            }
        }
    }
    output::error_text(&rendered);
    let mut report = Report::new(command);
    // clap's own first line: "invalid value 'abc' for '--wait <D>': …".
    let message = rendered
        .lines()
        .next()
        .map(|line| line.trim_start_matches("error: ").to_string())
        .filter(|line| !line.is_empty())
        .unwrap_or_else(|| "invalid command line".into());
    report.fail(
        &Failure::usage(anyhow::anyhow!(message)),
        Outcome::Usage.exit_code(),
    );
    print_result(&report, format, &stdout)
}

/// `rendered` without `text`, nor the start of it a message quotes when it
/// shortens a value (`invalid duration "postgres://app:s3cret@db.exampl…"`),
/// as written or escaped as a quoted string.
fn scrubbed(rendered: &str, text: &str) -> String {
    let escaped = format!("{text:?}");
    let escaped = &escaped[1..escaped.len() - 1];
    let mut rendered = rendered.to_string();
    for form in [text, escaped] {
        // The longest start of it that is there, down to 12 characters
        // (values are shortened to 20 or more).
        let ends = form.char_indices().map(|(at, _)| at).skip(12);
        let found = std::iter::once(form.len())
            .chain(ends.collect::<Vec<_>>().into_iter().rev())
            .map(|end| &form[..end])
            .find(|start| rendered.contains(start));
        if let Some(start) = found {
            rendered = rendered.replace(start, "<connection string>");
        }
    }
    rendered
}

/// Runs one command and records its result; the error is printed once, on
/// stderr.
fn execute(
    command: &'static str,
    interrupt: &Interrupt,
    exit_code: impl Fn(Outcome) -> u8,
    body: impl FnOnce(&mut Report) -> Result<Outcome, Failure>,
) -> Report {
    let mut report = Report::new(command);
    match body(&mut report) {
        Ok(outcome) => report.finish(outcome, exit_code(outcome)),
        Err(failure) => {
            // Whatever statement a signal's cancel request hit (a history
            // read, a lock attempt), the run was interrupted, not failed.
            let failure = if interrupt.is_set() {
                failure.after_signal()
            } else {
                failure
            };
            output::error_line(&format!("error: {}", failure.message()));
            report.fail(&failure, exit_code(failure.outcome));
        }
    }
    report
}
