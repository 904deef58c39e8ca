//! Many databases: `apply`, `status` and `wait` over a list of targets,
//! at most `--jobs` at once, with one summary and one exit code.
//!
//! Each target runs exactly the single-target command ([`job`]); the
//! workers ([`pool`]) hand targets to threads, and [`summary`] adds the
//! results up. Its own outcomes are not exit-code outcomes: a target never
//! started is `not_started`.

use anyhow::anyhow;

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
mod shard;
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
    metrics_file: Option<&std::path::Path>,
) -> u8 {
    let mut summary = Summary::new(command);
    let result = request
        .and_then(|request| prepare(request, env, ctx.interrupt))
        .map(|prepared| match prepared {
            Prepared::Disabled => Outcome::Disabled,
            Prepared::Run(run) => {
                let (config, job, targets) = *run;
                summary.shard = config.shard.map(|shard| (shard, targets.len()));
                let targets = shard::select(targets, config.shard);
                if let Some(job) = job {
                    let ran = pool::run_all(ctx, &config, &job, &targets);
                    summary.targets = ran.finished;
                    summary.stopped = ran.stopped;
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
    let code = stdout.exit_code(summary.outcome, summary.exit_code);
    if let Some(path) = metrics_file {
        let samples: Vec<crate::metrics::Sample> = summary
            .targets
            .iter()
            .map(|t| crate::metrics::Sample {
                target: t.target.database.to_string(),
                schema: t.target.schema.as_deref(),
                line: t.target.line.map(|line| line.to_string()),
                report: t.report.as_ref(),
                ms: t.ms,
            })
            .collect();
        crate::metrics::write(path, &crate::metrics::render(command, &samples, code));
    }
    code
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
        Source::AllSchemas { server, pattern } => {
            list_schemas(server, pattern.as_deref(), &config, interrupt)?
        }
    };
    // On the whole list: a list that came out empty is a wrong file or
    // pattern far more often than a wish to do nothing, and a run that
    // did nothing must not pass for one that migrated every tenant.
    let Some(first) = targets.first() else {
        let source = describe(&config.source);
        if !config.allow_no_targets {
            return Err(Failure::usage(anyhow!(
                "{source}: nothing was run. Give at least one target, or pass --allow-no-targets \
                 (MIGLOCK_ALLOW_NO_TARGETS=1) where an empty list is expected"
            )));
        }
        log::warn!("NO_TARGETS {source}; --allow-no-targets: nothing to do");
        return Ok(Prepared::Run(Box::new((config, None, targets))));
    };
    let mine = config
        .shard
        .map_or(targets.len(), |shard| shard::count(&targets, shard));
    log::info!(
        "TARGETS count={mine} jobs={}{}",
        config.jobs.min(mine),
        config.shard.map_or(String::new(), |shard| format!(
            " shard={}/{} of={}",
            shard.index,
            shard.count,
            targets.len()
        ))
    );
    if mine == 0 {
        log::info!("SHARD_EMPTY no target of the list falls in this shard: nothing to do");
        return Ok(Prepared::Run(Box::new((config, None, targets))));
    }
    // Built once, from the first target, so a bad setting is one usage
    // error rather than one per target.
    let job = (request.job)(job::common(&config, first)?)?;
    Ok(Prepared::Run(Box::new((config, Some(job), targets))))
}

/// What came out empty, for the message: the file (`-` for stdin) or the
/// pattern and the server.
fn describe(source: &Source) -> String {
    match source {
        Source::File(path) if path == "-" => {
            "--databases-from - (stdin) lists no targets (only comments and blank lines, or nothing)"
                .to_string()
        }
        Source::File(path) => format!(
            "--databases-from {path} lists no targets (only comments and blank lines, or nothing)"
        ),
        Source::AllDatabases {
            server,
            pattern: Some(pattern),
        } => format!(
            "--all-databases --match '{pattern}' matched no database of {server} that accepts \
             connections (templates are left out; in LIKE, _ and % are wildcards and \\_ is a \
             literal underscore)"
        ),
        Source::AllDatabases {
            server,
            pattern: None,
        } => format!(
            "--all-databases found no database of {server} that accepts connections besides {} \
             (templates and the maintenance database are left out)",
            server.database()
        ),
        Source::AllSchemas {
            server,
            pattern: Some(pattern),
        } => format!(
            "--all-schemas --schema-match '{pattern}' matched no schema of {server} (in LIKE, _ \
             and % are wildcards and \\_ is a literal underscore)"
        ),
        Source::AllSchemas {
            server,
            pattern: None,
        } => format!(
            "--all-schemas found no schema in {server} besides public and PostgreSQL's own"
        ),
    }
}

/// `--all-databases`: each database of the server a target.
fn list_all(
    server: &ConnectTarget,
    pattern: Option<&str>,
    config: &FleetConfig,
    interrupt: &Interrupt,
) -> Result<Vec<Target>, Failure> {
    let names = listed(server, config, interrupt, |client| {
        targets::list_databases(client, server.database(), pattern)
    })?;
    Ok(names
        .iter()
        .map(|name| Target {
            database: server.with_database(name),
            schema: None,
            line: None,
        })
        .collect())
}

/// `--all-schemas`: each schema of the database a target of it.
fn list_schemas(
    server: &ConnectTarget,
    pattern: Option<&str>,
    config: &FleetConfig,
    interrupt: &Interrupt,
) -> Result<Vec<Target>, Failure> {
    let names = listed(server, config, interrupt, |client| {
        targets::list_schemas(client, pattern)
    })?;
    Ok(names
        .into_iter()
        .map(|schema| Target {
            database: server.clone(),
            schema: Some(schema),
            line: None,
        })
        .collect())
}

/// What `list` reads on one connection to `server`, closed before any
/// target starts.
fn listed(
    server: &ConnectTarget,
    config: &FleetConfig,
    interrupt: &Interrupt,
    list: impl FnOnce(&mut postgres::Client) -> Result<Vec<String>, Failure>,
) -> Result<Vec<String>, Failure> {
    let name =
        crate::lock::Identity::new("list", config.instance.as_deref()).application_name(None);
    let mut client = connect::connect(server, config.connect_timeout, &name, interrupt)?.client;
    let names = list(&mut client);
    interrupt.forget();
    drop(client);
    names
}
