//! The command line as clap reads it: the flags, their help, their
//! environment variables. `to_config` turns these into plain configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::migrate::DdlTimeout;
use crate::parse;

const AFTER_HELP: &str = "\
Exit codes: 0 applied/current, 1 failed, 2 usage, 3 skipped (lock busy), 4 disabled \
(RUN_MIGRATIONS off), 5 unavailable, 6 invalid migration set, 7 pending, 130 interrupted.";

#[derive(Debug, Parser)]
#[command(
    name = "miglock",
    version,
    about = "Apply PostgreSQL migrations safely when many replicas start at once",
    long_about = "Apply refinery-format SQL migrations (V<version>__<name>.sql) to PostgreSQL \
                  under a session advisory lock taken with pg_try_advisory_lock in a bounded \
                  retry loop: exactly one replica migrates, the others find the schema current \
                  or skip. Each migration and its history row commit in one transaction.",
    after_help = AFTER_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PostgreSQL connection URL (or key=value string); never printed
    ///
    /// Without it, the libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
    /// PGSSLMODE and PGAPPNAME are used. They also fill whatever the URL leaves out. An empty
    /// value is a usage error. Keep the password out of this flag (the process list shows it):
    /// use DATABASE_URL, PGPASSWORD or ~/.pgpass.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        global = true
    )]
    pub database_url: Option<String>,

    /// Whether `database_url` came from the flag rather than from
    /// `DATABASE_URL`: a password there is in the process list. Set by
    /// [`Cli::parse_command_line`].
    #[arg(skip)]
    pub database_url_on_command_line: bool,

    /// Folder of V<version>__<name>.sql files
    #[arg(
        long,
        env = "MIGLOCK_MIGRATIONS",
        value_name = "DIR",
        default_value = "migrations",
        global = true
    )]
    pub migrations: PathBuf,

    /// History table, optionally schema-qualified (schema.table)
    #[arg(long, env = "MIGLOCK_TABLE", value_name = "NAME", default_value = crate::migrations::history::DEFAULT_TABLE, global = true)]
    pub table: String,

    /// Advisory-lock key (0 to 9223372036854775807)
    ///
    /// By default derived from the database name and the table:
    /// ('x0' || left(md5('miglock:' || <database> || ':' || <table>), 15))::bit(64)::bigint.
    /// Set it when replicas reach one database under different names.
    #[arg(long, env = "MIGLOCK_LOCK_KEY", value_name = "N", global = true,
          value_parser = clap::value_parser!(i64).range(0..), allow_negative_numbers = true)]
    pub lock_key: Option<i64>,

    /// Keep retrying the first connection this long (the database may still be starting)
    #[arg(long, env = "MIGLOCK_CONNECT_TIMEOUT", value_name = "D", default_value = "30s",
          value_parser = parse::duration, allow_hyphen_values = true, global = true)]
    pub connect_timeout: Duration,

    /// Output: text, or one JSON object on stdout describing the result
    #[arg(long, env = "MIGLOCK_FORMAT", value_enum, default_value_t = FormatArg::Text, global = true)]
    pub format: FormatArg,

    /// Migrations applied above the newest local file (by a newer release): allow or reject
    ///
    /// allow: they count as current (exit 0, a SCHEMA_AHEAD warning), so an older image still
    /// starts during a rolling deploy or after a rollback. reject: they make the set invalid
    /// (exit 6). Applied migrations below the newest local file whose file is gone are invalid
    /// either way.
    #[arg(long, env = "MIGLOCK_AHEAD", value_enum, default_value_t = AheadArg::Allow, global = true)]
    pub ahead: AheadArg,

    /// What the advisory lock is tied to: auto, session, or transaction
    ///
    /// auto: session on a direct connection, transaction behind a connection pooler, told from
    /// the connection (the cancel key PostgreSQL gives carries its pg_backend_pid(), a
    /// pooler's does not); a pooler in statement pooling mode is refused (exit 2); over a Unix
    /// socket, session. session: one connection holds the lock for the whole run; needs a
    /// direct connection or session pooling. transaction: each migration's transaction takes
    /// the lock itself (pg_try_advisory_xact_lock) and re-reads the history under it, so
    /// PgBouncer's pool_mode=transaction is safe; migrations without a transaction are refused
    /// (exit 6).
    #[arg(long, env = "MIGLOCK_LOCK_MODE", value_enum, default_value_t = LockModeArg::Auto, global = true)]
    pub lock_mode: LockModeArg,

    /// Run migrations from a folder or file every user may write to (refused otherwise)
    ///
    /// A migrations folder (or subfolder) or a migration file that every user may write to
    /// (o+w, as on a shared volume; a sticky folder like /tmp included) lets whoever can write
    /// there run SQL with the migrator's privileges at the next deploy: apply, baseline and
    /// repair refuse it (exit 6, problem unsafe_permissions), status and wait warn. This flag
    /// allows it, for a folder that is meant to be shared.
    #[arg(long, env = "MIGLOCK_ALLOW_WORLD_WRITABLE", global = true,
          action = ArgAction::SetTrue, value_parser = parse::switch)]
    pub allow_world_writable: bool,

    /// Log warnings and errors only
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Log more (-v debug, -vv trace); RUST_LOG applies when neither -q nor -v is given
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AheadArg {
    Allow,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockModeArg {
    Auto,
    Session,
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Wait (bounded) for the lock, apply every pending migration, release the lock
    ///
    /// RUN_MIGRATIONS=0/false/no/off disables it (exit 4, no connection is made).
    Apply(ApplyArgs),

    /// Show applied, pending, divergent and missing migrations, and who holds or waits for the lock
    ///
    /// Exit 0 whatever the state; with --check, 7 when migrations are pending and 6 when the
    /// set is invalid (divergent, missing, badly named files).
    Status(StatusArgs),

    /// Block until the schema is current (every local migration applied) — for services that never migrate
    ///
    /// Exit 0 once current, 7 when --timeout passes first (naming what is still pending), 6 when
    /// the applied set does not match the files.
    Wait(WaitArgs),

    /// Free a stuck lock by terminating the session that holds it, with confirmation and safety checks
    ///
    /// Lists the holder first. A holder running a statement right now (e.g. a long migration) is
    /// left alone unless --force. Without a terminal, --yes is required.
    Unlock(UnlockArgs),

    /// Record versions 1..=N of the local files as applied without running them (adopting miglock)
    ///
    /// For a database whose schema already matches the files up to V<N> (made by hand, by another
    /// tool, or restored from a dump): under the lock, and in one transaction, writes refinery's
    /// history rows (checksums included) for every local file up to N not recorded yet, creating
    /// the history table if needed. Rows already recorded identically are left alone. Refuses
    /// (exit 6, nothing written) when N has no file or is beyond the newest file, when a version
    /// up to N is recorded with another checksum or name, or when one recorded up to N has no
    /// file. Version numbers without a file are normal (versions need not be contiguous).
    // --version is the version to baseline, not miglock's own version.
    #[command(disable_version_flag = true)]
    Baseline(BaselineArgs),

    /// Create the next migration file, V<next>__<NAME>.sql, in the migrations folder
    ///
    /// The version is one above the highest local one (1 in an empty folder), zero-padded like the
    /// widest zero-padded version there (V001__a.sql → V002__…). The folder is created when
    /// missing. Never overwrites a file; needs no database. Prints the new file's path.
    New(NewArgs),

    /// Store the file's checksum for applied migrations whose file was edited (divergent)
    ///
    /// Shows each divergent migration (old and new checksum, a name change, the file's size) and,
    /// once confirmed, stores the file's checksum and name under the lock; the migration's SQL is
    /// never run. The history keeps no text of the applied file, so no diff of what changed can be
    /// shown: check the edit yourself (e.g. with git) before repairing. Without a terminal, --yes
    /// is required.
    Repair(RepairArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout
    ///
    /// e.g. `miglock completions bash > /etc/bash_completion.d/miglock`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) on stdout
    ///
    /// e.g. `miglock man > /usr/local/share/man/man1/miglock.1`
    Man,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 7 when migrations are pending, 6 when the set is invalid
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub set: SetArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up after this long (exit 7)
    #[arg(long, env = "MIGLOCK_WAIT_TIMEOUT", value_name = "D", default_value = "5m", value_parser = parse::duration, allow_hyphen_values = true)]
    pub timeout: Duration,

    #[command(flatten)]
    pub set: SetArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Terminate without asking (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Show what would be terminated; terminate nothing (exit 3 when the lock is held, 0 when free)
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,

    /// Also terminate a holder that is running a statement right now (its migration rolls back)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Record versions up to and including N (N must have a file)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub version: i32,

    #[command(flatten)]
    pub lock_wait: LockWaitArgs,

    /// Show what would be recorded; take no lock, write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The migration's name: letters, digits and _ only (refinery's \w), e.g. add_users_email
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Start the file with the `-- miglock:no-transaction` marker
    #[arg(long)]
    pub no_transaction: bool,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Repair divergent checksums (the only kind of repair there is; required, to say so)
    #[arg(long, required = true)]
    pub checksums: bool,

    /// Only these applied versions (default: every divergent one)
    #[arg(value_name = "VERSION", value_parser = clap::value_parser!(i32).range(1..))]
    pub versions: Vec<i32>,

    /// Store the checksums without asking (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Show what would be repaired; take no lock, change nothing
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,

    #[command(flatten)]
    pub lock_wait: LockWaitArgs,
}

/// `--set`: settings for the session of `apply`, `status` and `wait`, so
/// that an apply line copied to `status` or `wait` (`--set search_path=…`)
/// finds the same history table.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Set a PostgreSQL setting for the session (repeatable)
    ///
    /// apply: overrides miglock's own choices for the migrating session: statement_timeout=0 (or
    /// --statement-timeout), lock_timeout=0 (given here, it replaces the --ddl-lock-timeout
    /// schedule), idle_session_timeout=0, idle_in_transaction_session_timeout=0,
    /// tcp_keepalives_idle=5, tcp_keepalives_interval=5, tcp_keepalives_count=3,
    /// client_connection_check_interval=1000 (ms). status, wait: set for their session too.
    /// Without the flag, MIGLOCK_SET holds them separated by ';' (a value may hold commas, as in
    /// search_path=app,public). Once connected, the server is asked whether it takes them before
    /// anything else: an unknown setting or a refused value is a usage error (exit 2).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse::setting)]
    pub settings: Vec<(String, String)>,
}

/// `--wait`: how long the commands that take the lock keep trying it.
#[derive(Debug, Args)]
pub struct LockWaitArgs {
    /// How long to keep retrying the lock; 0 = one try (exit 3 when it stays busy) [default: 30s]
    ///
    /// MIGRATION_LOCK_WAIT_SECONDS is read when neither this flag nor MIGLOCK_WAIT is set.
    #[arg(long, env = "MIGLOCK_WAIT", value_name = "D", value_parser = parse::duration, allow_hyphen_values = true)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub lock_wait: LockWaitArgs,

    /// Bound on each migration statement (never on the lock wait) [default: off]
    #[arg(long, env = "MIGLOCK_STATEMENT_TIMEOUT", value_name = "D", value_parser = parse::pg_duration, allow_hyphen_values = true)]
    pub statement_timeout: Option<Duration>,

    /// Apply up to and including version V
    #[arg(long, value_name = "V", value_parser = clap::value_parser!(i32).range(1..))]
    pub target: Option<i32>,

    /// Print the plan and change nothing (exit 7 when migrations are pending, 0 when current)
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub set: SetArgs,

    /// Table-lock wait of each attempt: auto (50 ms growing to 3 s), a fixed D, or off [default: auto]
    ///
    /// An ALTER TABLE queued behind a long or idle transaction blocks every later query on that
    /// table while it waits. Each attempt waits at most this long for its table locks (SET LOCAL
    /// lock_timeout), is rolled back when refused, and is tried again: as soon as an older
    /// transaction in its way ends (logged as DDL_BLOCKED), or after a jittered pause, until
    /// --ddl-lock-budget runs out (exit 8, nothing of that migration applied). off: wait as
    /// PostgreSQL makes it (the behaviour before safe DDL). Never applies to the advisory-lock wait.
    #[arg(long, env = "MIGLOCK_DDL_LOCK_TIMEOUT", value_name = "auto|off|D", value_parser = ddl_timeout, allow_hyphen_values = true)]
    pub ddl_lock_timeout: Option<DdlTimeout>,

    /// How long one migration may keep trying for its table locks before exit 8 [default: 3m]
    #[arg(long, env = "MIGLOCK_DDL_LOCK_BUDGET", value_name = "D", value_parser = parse::duration, allow_hyphen_values = true)]
    pub ddl_lock_budget: Option<Duration>,

    /// At most N attempts after the first for one migration, within the budget [default: no limit]
    #[arg(long, env = "MIGLOCK_DDL_RETRIES", value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub ddl_retries: Option<u32>,

    /// End sessions idle in transaction that have blocked a migration this long (off by default)
    ///
    /// pg_cancel_backend, then pg_terminate_backend, on a session that has been in the way of a
    /// migration's table locks for D while idle in its transaction (a forgotten psql, a stuck
    /// worker), logged as BLOCKER_TERMINATED. Needs pg_signal_backend or membership in its role.
    #[arg(long, env = "MIGLOCK_CANCEL_BLOCKERS_AFTER", value_name = "D", value_parser = parse::duration, allow_hyphen_values = true)]
    pub cancel_blockers_after: Option<Duration>,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

// Many databases (`apply`, `status`, `wait`): the options, and the seam
// to `fleet::FleetConfig`. The runner is src/fleet.rs.

#[derive(Debug, Args)]
#[command(next_help_heading = "Many databases")]
pub struct FleetArgs {
    /// Run on every target listed in FILE ('-' = stdin): one connection string per line
    ///
    /// URL or key=value; '#' comments and blank lines are ignored. A line may add
    /// schema=NAME (a URL query parameter, a token after the URL, or a key=value pair) to
    /// migrate that schema of the database: first on search_path, history table and lock
    /// key in it. The libpq variables fill what a line leaves out.
    #[arg(
        long,
        env = "MIGLOCK_DATABASES_FROM",
        value_name = "FILE",
        conflicts_with = "all_databases"
    )]
    pub databases_from: Option<String>,

    /// Run on every database of the --database-url server that accepts connections
    ///
    /// Templates are left out, and so is the database of --database-url (the maintenance
    /// database) unless --match matches it.
    #[arg(long)]
    pub all_databases: bool,

    /// With --all-databases: only the databases whose name is LIKE PATTERN (e.g. 'tenant_%')
    #[arg(long = "match", value_name = "PATTERN", requires = "all_databases")]
    pub pattern: Option<String>,

    /// With many targets: how many run at once, one connection each (1 to 256)
    #[arg(long, env = "MIGLOCK_JOBS", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,

    /// With many targets: start no other target after the first failure (they are not_started)
    #[arg(long)]
    pub fail_fast: bool,

    /// With many targets: an empty list (no line in FILE, no database matching) is no error
    ///
    /// Without it, a targets file holding only comments and blank lines, or an --all-databases
    /// (--match) that finds no database, is a usage error (exit 2): an empty list is far more
    /// often a wrong file or pattern than a wish to do nothing.
    #[arg(long, env = "MIGLOCK_ALLOW_NO_TARGETS", action = ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_no_targets: bool,
}

/// `--ddl-lock-timeout`: `auto`, `off` (or `0`), or a duration.
fn ddl_timeout(text: &str) -> Result<DdlTimeout, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(DdlTimeout::Auto),
        "off" => Ok(DdlTimeout::Off),
        _ => match parse::pg_duration(text)? {
            d if d.is_zero() => Ok(DdlTimeout::Off),
            d => Ok(DdlTimeout::Fixed(d)),
        },
    }
}
