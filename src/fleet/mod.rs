//! Many databases: `apply`, `status` and `wait` over a list of targets,
//! at most `--jobs` at once, with one summary and one exit code.
//!
//! Each target runs exactly the single-target command ([`job`]); the
//! workers ([`pool`]) hand targets to threads, and [`summary`] adds the
//! results up. Its own outcomes are not exit-code outcomes: a target never
//! started is `not_started`.

use crate::config::{FleetConfig, FleetRequest, Job, Source};
use crate::connect::{self, ConnectTarget};
use crate::context::Context;
use crate::env::Env;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::outcome::Outcome;
use crate::output::{self, Console};
use crate::targets::{self, Target};

mod job;
mod pool;
mod summary;

use summary::Summary;

/// Runs `apply`, `status` or `wait` over many targets; `request` is
/// `Err` when the command line's own settings were refused.
pub fn run_many(
    ctx: &Context,
    command: &'static str,
    request: Result<FleetRequest, Failure>,
    env: Env,
    stdout: &Console,
) -> u8 {
    let mut summary = Summary::new(command);
    let result = request
        .and_then(|request| prepare(request, env, ctx.interrupt))
        .map(|prepared| match prepared {
            Prepared::Disabled => Outcome::Disabled,
            Prepared::Run(run) => {
                let (config, job, targets) = *run;
                if let Some(job) = job {
                    summary.targets = pool::run_all(ctx, &config, &job, &targets);
                }
                Outcome::Current
            }
        });
    match result {
        Ok(Outcome::Disabled) => {
            log::info!("MIGRATIONS_DISABLED RUN_MIGRATIONS is off: nothing was touched");
            summary.finish_with(Outcome::Disabled, None);
        }
        Ok(_) => summary.finish(ctx.interrupt.is_set()),
        Err(failure) => {
            let failure = if ctx.interrupt.is_set() {
                failure.after_signal()
            } else {
                failure
            };
            output::error_line(&format!("error: {}", failure.message()));
            summary.finish_with(failure.outcome, Some(failure.message()));
        }
    }
    summary.print(ctx.format, stdout);
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
fn prepare(request: FleetRequest, env: Env, interrupt: &Interrupt) -> Result<Prepared, Failure> {
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
    let job = (request.job)(job::common(&config, first)?)?;
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
