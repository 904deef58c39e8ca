//! miglock: apply PostgreSQL migrations safely when many replicas start at
//! once. The binary is a thin `main` over [`run`]; commands take plain
//! configuration (`config`) so they can be driven without a process.

pub mod cli;
pub mod commands;
pub mod config;
pub mod conninfo;
pub mod db;
pub mod error;
pub mod history;
pub mod interrupt;
pub mod lock;
pub mod migrations;
pub mod outcome;
pub mod output;
pub mod parse;
pub mod pgpass;
pub mod report;
pub mod settings;
pub mod sql;
pub mod tls;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::Format;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::outcome::Outcome;
use crate::output::Progress;
use crate::report::Report;

/// Parses the command line, runs the command, prints the result, and
/// returns the exit code its outcome decides.
pub fn run() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let cli = match Cli::parse_command_line() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return ExitCode::from(parse_failure(e, &env)),
    };
    match &cli.command {
        Command::Completions { shell } => return print_completions(*shell),
        Command::Man => return print_man_page(),
        _ => {}
    }
    let progress = Progress::init(cli.global.verbosity(), env("RUST_LOG").as_deref());
    let format = cli.global.format();
    let interrupt = Interrupt::new();
    if let Err(e) = interrupt.install() {
        log::warn!("cannot handle SIGINT/SIGTERM ({e}); a signal will end miglock abruptly");
    }

    let global = &cli.global;
    let report = match &cli.command {
        Command::Apply(args) => {
            execute("apply", format, &interrupt, Outcome::exit_code, |report| {
                // The gate comes first: a disabled replica must not fail on
                // settings it will never use.
                if !cli::migrations_enabled(&env)? {
                    log::info!("MIGRATIONS_DISABLED RUN_MIGRATIONS is off: nothing was touched");
                    return Ok(Outcome::Disabled);
                }
                let config = args.config(global.common(&env)?, &env)?;
                commands::apply::run(&config, report, &progress, &interrupt, format)
            })
        }
        Command::Status(args) => {
            let check = args.check;
            execute(
                "status",
                format,
                &interrupt,
                move |o: Outcome| o.status_exit_code(check),
                |report| {
                    let config = args.config(global.common(&env)?);
                    commands::status::run(&config, report, &interrupt, format)
                },
            )
        }
        Command::Wait(args) => execute("wait", format, &interrupt, Outcome::exit_code, |report| {
            let config = args.config(global.common(&env)?);
            commands::wait::run(&config, report, &progress, &interrupt)
        }),
        Command::Unlock(args) => {
            execute("unlock", format, &interrupt, Outcome::exit_code, |report| {
                let config = args.config(global.common(&env)?);
                commands::unlock::run(&config, report, &interrupt, format)
            })
        }
        Command::Completions { .. } | Command::Man => return ExitCode::SUCCESS,
    };
    ExitCode::from(report.exit_code)
}

fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "miglock", &mut script);
    write_stdout(&script)
}

/// One page: the top-level command, each subcommand's options, then the
/// exit codes scripts branch on.
fn print_man_page() -> ExitCode {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut page = Vec::new();
    let rendered = clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .and_then(|()| {
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("miglock {}", sub.get_name());
                let sub = sub
                    .clone()
                    .display_name(name.clone())
                    .bin_name(name.clone());
                let man = clap_mangen::Man::new(sub);
                page.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
                man.render_description_section(&mut page)?;
                man.render_synopsis_section(&mut page)?;
                man.render_options_section(&mut page)?;
            }
            Ok(())
        });
    if let Err(e) = rendered {
        eprintln!("error: cannot render the man page: {e}");
        return ExitCode::from(Outcome::Failed.exit_code());
    }
    page.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for outcome in [
        Outcome::Applied,
        Outcome::Failed,
        Outcome::Usage,
        Outcome::Skipped,
        Outcome::Disabled,
        Outcome::Unavailable,
        Outcome::Invalid,
        Outcome::Pending,
        Outcome::Interrupted,
    ] {
        page.extend_from_slice(
            format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                outcome.exit_code(),
                outcome.describe()
            )
            .as_bytes(),
        );
    }
    write_stdout(&page)
}

/// Writes a generated document; a reader that went away (`| head`) is fine.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::from(Outcome::Failed.exit_code())
        }
    }
}

/// A command line clap refused. It is still a result: `--format json`
/// gets its JSON object. And `apply` with `RUN_MIGRATIONS` off is disabled
/// before anything else: a replica that never migrates must not fail on a
/// migration setting it shares with the one that does (`MIGLOCK_WAIT`…).
fn parse_failure(error: clap::Error, env: db::Env) -> u8 {
    use clap::CommandFactory;
    let seen = Cli::command()
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
    let flag = args
        .windows(2)
        .rev()
        .find_map(|w| (w[0] == "--format").then(|| w[1].clone()))
        .or_else(|| {
            args.iter()
                .rev()
                .find_map(|a| a.strip_prefix("--format=").map(str::to_string))
        });
    let json = flag.or_else(|| env("MIGLOCK_FORMAT")).as_deref() == Some("json");
    let format = if json { Format::Json } else { Format::Text };
    let command: &'static str = match command {
        "apply" => "apply",
        "status" => "status",
        "wait" => "wait",
        "unlock" => "unlock",
        _ => "miglock",
    };
    if command == "apply" && cli::migrations_enabled(env).ok() == Some(false) {
        let _ = Progress::init(output::Verbosity::Normal, None);
        let report = execute(
            command,
            format,
            &Interrupt::default(),
            Outcome::exit_code,
            |_| {
                log::info!("MIGRATIONS_DISABLED RUN_MIGRATIONS is off: nothing was touched");
                Ok(Outcome::Disabled)
            },
        );
        return report.exit_code;
    }
    // clap quotes the argument it refused; a connection string given as a
    // positional argument by mistake must not come back with its password.
    let mut rendered = error.render().to_string();
    for arg in &args {
        if arg.contains("://") || arg.contains("password") {
            rendered = rendered.replace(arg.as_str(), "<connection string>");
        }
    }
    eprint!("{rendered}");
    if json {
        // clap's own first line: "invalid value 'abc' for '--wait <D>': …".
        let message = rendered
            .lines()
            .next()
            .map(|line| line.trim_start_matches("error: ").to_string())
            .filter(|line| !line.is_empty())
            .unwrap_or_else(|| "invalid command line".into());
        let mut report = Report::new(command);
        report.fail(
            &Failure::usage(anyhow::anyhow!(message)),
            Outcome::Usage.exit_code(),
        );
        println!("{}", report.to_json());
    }
    Outcome::Usage.exit_code()
}

/// Runs one command and prints its result: the error once on stderr, the
/// JSON object on stdout with `--format json`.
fn execute(
    command: &'static str,
    format: Format,
    interrupt: &Interrupt,
    exit_code: impl Fn(Outcome) -> u8,
    body: impl FnOnce(&mut Report) -> Result<Outcome, Failure>,
) -> Report {
    let mut report = Report::new(command);
    match body(&mut report) {
        Ok(outcome) => report.finish(outcome, exit_code(outcome)),
        // Whatever statement a signal's cancel request hit (a history
        // read, a lock attempt), the run was interrupted, not failed.
        Err(failure) if failure.outcome == Outcome::Failed && interrupt.is_set() => {
            let failure = Failure::interrupted();
            eprintln!("error: {}", failure.message());
            report.fail(&failure, exit_code(failure.outcome));
        }
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            report.fail(&failure, exit_code(failure.outcome));
        }
    }
    if format == Format::Json {
        println!("{}", report.to_json());
    }
    report
}
