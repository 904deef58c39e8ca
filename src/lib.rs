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
pub mod report;
pub mod sql;
pub mod tls;

use std::process::ExitCode;

use clap::Parser;

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Outcome::Usage.exit_code()
            } else {
                0
            });
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let progress = Progress::init(cli.global.verbosity(), env("RUST_LOG").as_deref());
    let format = cli.global.format();
    let interrupt = Interrupt::new();
    if let Err(e) = interrupt.install() {
        log::warn!("cannot handle SIGINT/SIGTERM ({e}); a signal will end miglock abruptly");
    }

    let global = &cli.global;
    let report = match &cli.command {
        Command::Apply(args) => execute("apply", format, Outcome::exit_code, |report| {
            // The gate comes first: a disabled replica must not fail on
            // settings it will never use.
            if !cli::migrations_enabled(&env)? {
                log::info!("MIGRATIONS_DISABLED RUN_MIGRATIONS is off: nothing was touched");
                return Ok(Outcome::Disabled);
            }
            let config = args.config(global.common(&env)?, &env)?;
            commands::apply::run(&config, report, &progress, &interrupt, format)
        }),
        Command::Status(args) => {
            let check = args.check;
            execute(
                "status",
                format,
                move |o| o.status_exit_code(check),
                |report| {
                    let config = args.config(global.common(&env)?);
                    commands::status::run(&config, report, &interrupt, format)
                },
            )
        }
        Command::Wait(args) => execute("wait", format, Outcome::exit_code, |report| {
            let config = args.config(global.common(&env)?);
            commands::wait::run(&config, report, &progress, &interrupt)
        }),
        Command::Unlock(args) => execute("unlock", format, Outcome::exit_code, |report| {
            let config = args.config(global.common(&env)?);
            commands::unlock::run(&config, report, &interrupt, format)
        }),
    };
    ExitCode::from(report.exit_code)
}

/// Runs one command and prints its result: the error once on stderr, the
/// JSON object on stdout with `--format json`.
fn execute(
    command: &'static str,
    format: Format,
    exit_code: impl Fn(Outcome) -> u8,
    body: impl FnOnce(&mut Report) -> Result<Outcome, Failure>,
) -> Report {
    let mut report = Report::new(command);
    match body(&mut report) {
        Ok(outcome) => report.finish(outcome, exit_code(outcome)),
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
