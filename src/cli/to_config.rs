//! The seam: clap's types in, plain configuration out. Connection
//! strings are resolved, names and keys validated, environment fallbacks
//! applied here, once; nothing past this file sees a clap type.

use std::time::Duration;

use anyhow::anyhow;

use super::args::{
    AheadArg, ApplyArgs, BaselineArgs, DatabaseArgs, DownArgs, FleetArgs, FolderArgs, FormatArg,
    LockModeArg, LockWaitArgs, NewArgs, OutputArgs, PlaceholderArgs, RepairArgs, SetArgs,
    StatusArgs, ToolLockArg, UnlockArgs, WaitArgs,
};
use super::{Cli, Command};
use crate::config::{
    ApplyConfig, BaselineConfig, Common, DownConfig, FleetConfig, FleetRequest, Format, Job,
    NewConfig, RepairConfig, Shard, Source, StatusConfig, UnlockConfig, WaitConfig,
};
use crate::connect::conninfo;
use crate::connect::ConnectTarget;
use crate::env::Env;
use crate::error::Failure;
use crate::lock::{LockKey, LockModeFlag};
use crate::migrate;
use crate::migrations::{AheadPolicy, Version};
use crate::output::Verbosity;
use crate::parse;

impl OutputArgs {
    pub fn format(&self) -> Format {
        match self.format {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
        }
    }

    /// `--log-format json`.
    pub fn json_logs(&self) -> bool {
        self.log_format == FormatArg::Json
    }

    pub fn verbosity(&self) -> Verbosity {
        Verbosity::from_flags(self.quiet, self.verbose)
    }
}

/// The options a command that connects shares with the others, gathered
/// from the groups it has; what it has not (`unlock` reads no folder) is
/// the default, which it never uses.
pub struct Shared<'a> {
    pub(super) database: &'a DatabaseArgs,
    pub(super) folder: Option<&'a FolderArgs>,
    /// `--placeholder` (none for a command without it).
    pub(super) placeholders: Option<&'a PlaceholderArgs>,
    allow_world_writable: bool,
    lock_mode: LockModeArg,
    ahead: AheadArg,
}

impl Command {
    /// The shared options of a command that connects; `None` for `new`,
    /// `completions` and `man`.
    pub fn shared(&self) -> Option<Shared<'_>> {
        let shared = Shared::defaults;
        Some(match self {
            Command::Apply(a) => Shared {
                placeholders: Some(&a.placeholders),
                allow_world_writable: a.writable.allow_world_writable,
                lock_mode: a.lock_mode.lock_mode,
                ahead: a.ahead.ahead,
                ..shared(&a.database, Some(&a.folder))
            },
            Command::Status(a) => Shared {
                placeholders: Some(&a.placeholders),
                allow_world_writable: a.writable.allow_world_writable,
                ahead: a.ahead.ahead,
                ..shared(&a.database, Some(&a.folder))
            },
            Command::Wait(a) => Shared {
                placeholders: Some(&a.placeholders),
                allow_world_writable: a.writable.allow_world_writable,
                lock_mode: a.lock_mode.lock_mode,
                ahead: a.ahead.ahead,
                ..shared(&a.database, Some(&a.folder))
            },
            Command::Unlock(a) => shared(&a.database, None),
            Command::Baseline(a) => Shared {
                placeholders: Some(&a.placeholders),
                allow_world_writable: a.writable.allow_world_writable,
                lock_mode: a.lock_mode.lock_mode,
                ..shared(&a.database, Some(&a.folder))
            },
            Command::Down(a) => Shared {
                placeholders: Some(&a.placeholders),
                allow_world_writable: a.writable.allow_world_writable,
                lock_mode: a.lock_mode.lock_mode,
                ..shared(&a.database, Some(&a.folder))
            },
            Command::Repair(a) => Shared {
                placeholders: Some(&a.placeholders),
                allow_world_writable: a.writable.allow_world_writable,
                lock_mode: a.lock_mode.lock_mode,
                ..shared(&a.database, Some(&a.folder))
            },
            Command::New(_) | Command::Lint(_) | Command::Completions { .. } | Command::Man => {
                return None
            }
        })
    }

    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Apply(_) => "apply",
            Command::Status(_) => "status",
            Command::Wait(_) => "wait",
            Command::Unlock(_) => "unlock",
            Command::Baseline(_) => "baseline",
            Command::New(_) => "new",
            Command::Lint(_) => "lint",
            Command::Repair(_) => "repair",
            Command::Down(_) => "down",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
        }
    }

    /// `--metrics-file`, for the commands that take it.
    pub fn metrics_file(&self) -> Option<&std::path::Path> {
        match self {
            Command::Apply(a) => a.metrics.metrics_file.as_deref(),
            Command::Status(a) => a.metrics.metrics_file.as_deref(),
            Command::Wait(a) => a.metrics.metrics_file.as_deref(),
            _ => None,
        }
    }

    /// `--format`, `-q`, `-v`; `None` for `completions` and `man`.
    pub fn output(&self) -> Option<&OutputArgs> {
        match self {
            Command::Apply(a) => Some(&a.output),
            Command::Status(a) => Some(&a.output),
            Command::Wait(a) => Some(&a.output),
            Command::Unlock(a) => Some(&a.output),
            Command::Baseline(a) => Some(&a.output),
            Command::New(a) => Some(&a.output),
            Command::Lint(a) => Some(&a.output),
            Command::Repair(a) => Some(&a.output),
            Command::Down(a) => Some(&a.output),
            Command::Completions { .. } | Command::Man => None,
        }
    }
}

impl<'a> Shared<'a> {
    fn defaults(database: &'a DatabaseArgs, folder: Option<&'a FolderArgs>) -> Shared<'a> {
        Shared {
            database,
            folder,
            placeholders: None,
            allow_world_writable: false,
            lock_mode: LockModeArg::Session,
            ahead: AheadArg::Allow,
        }
    }

    pub(super) fn migrations(&self) -> std::path::PathBuf {
        self.folder
            .map_or_else(|| "migrations".into(), |f| f.migrations.clone())
    }

    /// The seam: resolves the connection and validates names and keys.
    pub fn common(&self, env: Env) -> Result<Common, Failure> {
        let db = self.database;
        let (table, key_table) = self.tables(self.layout()?)?;
        let url = db.database_url.as_deref();
        if url.is_some_and(|u| u.trim().is_empty()) {
            return Err(Failure::usage(anyhow!(db.empty_database_url())));
        }
        if db.password_on_command_line() {
            log::warn!(
                "the --database-url value holds a password, which every local user can read in the \
                 process list: give it in DATABASE_URL, PGPASSWORD or ~/.pgpass instead"
            );
        }
        let database = ConnectTarget::resolve(url, env)?;
        let key = LockKey::for_target(db.lock_key, database.database(), &key_table);
        let instance = env("MIGLOCK_INSTANCE").filter(|v| !v.trim().is_empty());
        let placeholders = self.placeholders(env, &table, Some(&database))?;
        Ok(Common {
            database,
            migrations: self.migrations(),
            placeholders,
            table,
            key,
            connect_timeout: db.connect_timeout,
            instance,
            ahead: self.ahead_policy(),
            lock_mode: self.lock_mode(),
            allow_world_writable: self.allow_world_writable,
            tool_lock: db.tool_lock == ToolLockArg::On,
        })
    }

    fn lock_mode(&self) -> LockModeFlag {
        match self.lock_mode {
            LockModeArg::Auto => LockModeFlag::Auto,
            LockModeArg::Session => LockModeFlag::Session,
            LockModeArg::Transaction => LockModeFlag::Transaction,
        }
    }

    fn ahead_policy(&self) -> AheadPolicy {
        match self.ahead {
            AheadArg::Allow => AheadPolicy::Allow,
            AheadArg::Reject => AheadPolicy::Reject,
        }
    }
}

impl DatabaseArgs {
    /// An empty connection string is a mistake (an unfilled template, a
    /// secret that did not load), not a wish for libpq's defaults: those
    /// would be tried for the whole --connect-timeout against the wrong
    /// server. Unset, `DATABASE_URL` still leaves the PG* variables to it.
    fn empty_database_url(&self) -> String {
        if self.database_url_on_command_line {
            "--database-url is empty: give a connection URL, or leave the flag out to connect with \
             DATABASE_URL or the libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE…)"
                .into()
        } else {
            "DATABASE_URL is set but empty: give it a connection URL, or unset it to connect with \
             the libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE…)"
                .into()
        }
    }

    /// A password given as an argument (in the URL or a `password=` key)
    /// rather than in the environment or a file.
    pub fn password_on_command_line(&self) -> bool {
        self.database_url_on_command_line
            && self
                .database_url
                .as_deref()
                .is_some_and(conninfo::has_password)
    }
}

/// `RUN_MIGRATIONS`, checked before anything else `apply` does.
pub fn migrations_enabled(env: Env) -> Result<bool, Failure> {
    parse::run_migrations(env("RUN_MIGRATIONS").as_deref()).map_err(|e| Failure::usage(anyhow!(e)))
}

impl LockWaitArgs {
    /// `--wait`, else `MIGLOCK_WAIT` (clap reads both), else
    /// `MIGRATION_LOCK_WAIT_SECONDS`, else clap's default, 30 s.
    pub fn wait(&self, env: Env) -> Result<Duration, Failure> {
        if self.wait_given {
            return Ok(self.wait);
        }
        match env("MIGRATION_LOCK_WAIT_SECONDS").filter(|v| !v.trim().is_empty()) {
            Some(seconds) => parse::duration(&seconds)
                .map_err(|e| Failure::usage(anyhow!("MIGRATION_LOCK_WAIT_SECONDS: {e}"))),
            None => Ok(self.wait),
        }
    }
}

impl ApplyArgs {
    pub fn config(&self, common: Common, env: Env) -> Result<ApplyConfig, Failure> {
        if self.dry_run && self.cancel_blockers_after.is_some() {
            return Err(Failure::usage(anyhow!(
                "--cancel-blockers-after ends other sessions: it cannot go with --dry-run, which \
                 changes nothing"
            )));
        }
        if self.rebuild_invalid_indexes && common.lock_mode == LockModeFlag::Transaction {
            return Err(Failure::usage(anyhow!(
                "--rebuild-invalid-indexes cannot go with --lock-mode transaction: REINDEX INDEX \
                 CONCURRENTLY runs outside a transaction, so no transaction can hold the key for \
                 it. Rebuild over a direct connection (or a session-pooling port) with --lock-mode \
                 session"
            )));
        }
        Ok(ApplyConfig {
            common,
            wait: self.lock_wait.wait(env)?,
            target_version: self.target.map(Version::from),
            dry_run: self.dry_run,
            rebuild_invalid_indexes: self.rebuild_invalid_indexes,
            migrate: migrate::Options {
                statement_timeout: Some(self.statement_timeout).filter(|t| !t.is_zero()),
                settings: self.set.settings(env)?,
                ddl: migrate::DdlPolicy {
                    timeout: self.ddl_lock_timeout,
                    budget: self.ddl_lock_budget,
                    retries: self.ddl_retries,
                    cancel_blockers_after: self.cancel_blockers_after,
                },
            },
            lint: self
                .lint
                .config(self.ddl_lock_timeout != migrate::DdlTimeout::Off)?,
        })
    }
}

impl SetArgs {
    /// `--set`, else `MIGLOCK_SET` (`;`-separated).
    fn settings(&self, env: Env) -> Result<Vec<(String, String)>, Failure> {
        Ok(if self.settings.is_empty() {
            match env("MIGLOCK_SET") {
                Some(list) => list
                    .split(';')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        parse::setting(s).map_err(|e| Failure::usage(anyhow!("MIGLOCK_SET: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            }
        } else {
            self.settings.clone()
        })
    }
}

impl StatusArgs {
    pub fn config(&self, common: Common, env: Env) -> Result<StatusConfig, Failure> {
        Ok(StatusConfig {
            common,
            check: self.check,
            settings: self.set.settings(env)?,
        })
    }
}

impl WaitArgs {
    pub fn config(&self, common: Common, env: Env) -> Result<WaitConfig, Failure> {
        Ok(WaitConfig {
            common,
            timeout: self.timeout,
            settings: self.set.settings(env)?,
        })
    }
}

impl BaselineArgs {
    pub fn config(&self, common: Common, env: Env) -> Result<BaselineConfig, Failure> {
        if self.old_version.is_some() {
            log::warn!(
                "baseline --version N is now --baseline-version N: the old spelling is accepted \
                 until the next release, whose --version prints miglock's version as every other \
                 command's does"
            );
        }
        // clap requires one of the two.
        let version = self
            .baseline_version
            .or(self.old_version)
            .ok_or_else(|| Failure::usage(anyhow!("give the version: --baseline-version N")))?;
        Ok(BaselineConfig {
            common,
            version: version.into(),
            wait: self.lock_wait.wait(env)?,
            dry_run: self.dry_run,
        })
    }
}

impl NewArgs {
    /// Takes the folder only: `new` must work without a database, so the
    /// connection settings are never resolved.
    pub fn config(&self) -> Result<NewConfig, Failure> {
        let migrations = self.folder.migrations.clone();
        let layout = self
            .folder
            .layout
            .resolve(&migrations)
            .map_err(|e| Failure::invalid(anyhow!(e)))?;
        Ok(NewConfig {
            migrations,
            name: self.name.clone(),
            no_transaction: self.no_transaction,
            layout,
        })
    }
}

impl DownArgs {
    pub fn config(&self, common: Common, env: Env) -> Result<DownConfig, Failure> {
        Ok(DownConfig {
            common,
            to: Version::from(self.to),
            yes: self.yes,
            dry_run: self.dry_run,
            wait: self.lock_wait.wait(env)?,
        })
    }
}

impl RepairArgs {
    pub fn config(&self, common: Common, env: Env) -> Result<RepairConfig, Failure> {
        let mut versions = self.versions.clone();
        versions.sort_unstable();
        versions.dedup();
        Ok(RepairConfig {
            common,
            versions: versions.into_iter().map(Version::from).collect(),
            yes: self.yes,
            dry_run: self.dry_run,
            wait: self.lock_wait.wait(env)?,
        })
    }
}

impl UnlockArgs {
    pub fn config(&self, common: Common) -> UnlockConfig {
        UnlockConfig {
            common,
            yes: self.yes,
            dry_run: self.dry_run,
            force: self.force,
        }
    }
}

impl Shared<'_> {
    /// `None` for a single target; otherwise the settings every target
    /// shares. Each target derives its own lock key, so `--lock-key`
    /// (which would make every tenant of one database wait for the
    /// others) is refused.
    pub fn fleet(&self, args: &FleetArgs, env: Env) -> Result<Option<FleetConfig>, Failure> {
        let shard = shard(args, env)?;
        let source = match (&args.databases_from, args.all_databases) {
            (Some(path), _) if !path.trim().is_empty() => Source::File(path.clone()),
            (_, true) => Source::AllDatabases {
                server: Box::new(self.common(env)?.database),
                pattern: args.pattern.clone(),
            },
            _ if args.all_schemas => Source::AllSchemas {
                server: Box::new(self.common(env)?.database),
                pattern: args.schema_match.clone(),
            },
            _ if shard.is_some() => return Err(no_list_to_shard()),
            _ => return Ok(None),
        };
        let db = self.database;
        if db.lock_key.is_some() {
            return Err(Failure::usage(anyhow!(
                "--lock-key (MIGLOCK_LOCK_KEY) cannot be used with many targets: each target \
                 derives its own key from its database, schema and table"
            )));
        }
        let (table, key_table) = self.tables(self.layout()?)?;
        // Each target's database and user differ: no flyway:database or
        // flyway:user for many targets.
        let placeholders = self.placeholders(env, &table, None)?;
        Ok(Some(FleetConfig {
            source,
            jobs: usize::from(args.jobs),
            fail_fast: args.fail_fast,
            canary: args.canary.unwrap_or(0),
            max_failures: args.max_failures,
            allow_no_targets: args.allow_no_targets,
            migrations: self.migrations(),
            table,
            key_table,
            placeholders,
            connect_timeout: db.connect_timeout,
            instance: env("MIGLOCK_INSTANCE").filter(|v| !v.trim().is_empty()),
            ahead: self.ahead_policy(),
            lock_mode: self.lock_mode(),
            allow_world_writable: self.allow_world_writable,
            tool_lock: db.tool_lock == ToolLockArg::On,
            shard,
        }))
    }
}

fn no_list_to_shard() -> Failure {
    Failure::usage(anyhow!(
        "--shard and --shards split a list of targets: give --databases-from FILE or \
         --all-databases too"
    ))
}

/// `--shard INDEX/COUNT`, or `--shards COUNT` with the index a Kubernetes
/// Indexed Job gives each pod.
fn shard(args: &FleetArgs, env: Env) -> Result<Option<Shard>, Failure> {
    if let Some((index, count)) = args.shard {
        return Ok(Some(Shard { index, count }));
    }
    let Some(count) = args.shards else {
        return Ok(None);
    };
    let Some(given) = env("JOB_COMPLETION_INDEX").filter(|v| !v.trim().is_empty()) else {
        return Err(Failure::usage(anyhow!(
            "--shards {count} takes this worker's index from JOB_COMPLETION_INDEX, which is not \
             set (a Kubernetes Indexed Job sets it); elsewhere give --shard INDEX/{count}"
        )));
    };
    let (index, count) = parse::shard(&format!("{}/{count}", given.trim())).map_err(|e| {
        Failure::usage(anyhow!(
            "JOB_COMPLETION_INDEX={given:?} with --shards {count}: {e}"
        ))
    })?;
    Ok(Some(Shard { index, count }))
}

impl Cli {
    /// Many targets (`--databases-from`, `--all-databases`) for `apply`,
    /// `status` or `wait`: the command's name and what the runner in
    /// `fleet` needs; `None` for one target (the usual path).
    pub fn fleet_request<'a>(
        &'a self,
        env: Env<'a>,
    ) -> Option<(&'static str, Result<FleetRequest<'a>, Failure>)> {
        let (command, fleet): (&'static str, &FleetArgs) = match &self.command {
            Command::Apply(args) => ("apply", &args.fleet),
            Command::Status(args) => ("status", &args.fleet),
            Command::Wait(args) => ("wait", &args.fleet),
            _ => return None,
        };
        if fleet.databases_from.as_deref().is_none_or(str::is_empty)
            && !fleet.all_databases
            && !fleet.all_schemas
        {
            if fleet.shard.is_some() || fleet.shards.is_some() {
                return Some((command, Err(no_list_to_shard())));
            }
            return None;
        }
        let shared = self.command.shared()?;
        let request = (|| {
            // The gate comes first, as for one target.
            let disabled = matches!(self.command, Command::Apply(_)) && !migrations_enabled(env)?;
            let config = match shared.fleet(fleet, env)? {
                Some(config) => config,
                None => return Err(Failure::usage(anyhow!("no targets given"))),
            };
            let job = move |common| -> Result<Job, Failure> {
                Ok(match &self.command {
                    Command::Apply(args) => Job::Apply(args.config(common, env)?),
                    Command::Status(args) => Job::Status(args.config(common, env)?),
                    Command::Wait(args) => Job::Wait(args.config(common, env)?),
                    _ => {
                        return Err(Failure::usage(anyhow!(
                            "many targets: apply, status or wait"
                        )))
                    }
                })
            };
            Ok(FleetRequest {
                disabled,
                config,
                job: Box::new(job),
            })
        })();
        Some((command, request))
    }
}
