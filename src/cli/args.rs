//! The command line as clap reads it: each command's flags, their help and
//! environment variables. The options several commands share come in
//! groups, flattened into the commands that use them (and only those), each
//! under its heading. `to_config` turns these into plain configuration;
//! `help` adds the examples and the footers.
//!
//! Value names say what kind of value a flag takes: `<DURATION>` (`500ms`,
//! `30s`, `2m`, `1h 30m`, or seconds), `<N>` (a count), `<VERSION>`,
//! `<KEY>`, `<URL>`, `<DIR>`, `<FILE>`, `<TABLE>`, `<PATTERN>`, `<NAME>`;
//! a choice is named for what it chooses (`<FORMAT>`, `<MODE>`, `<POLICY>`)
//! and lists its values.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::migrate::DdlTimeout;
use crate::parse;

use super::help;
pub use super::lint_args::{ApplyLintArgs, LintArgs, LINT_EXIT, LINT_LONG};
pub use super::shared::{
    AheadArg, AheadArgs, DatabaseArgs, FleetArgs, FolderArgs, FormatArg, LockModeArg, LockModeArgs,
    LockWaitArgs, MetricsArgs, OutputArgs, PlaceholderArgs, SetArgs, ToolLockArg, WritableArgs,
};

// The headings, in the order a command's help shows them (the order in
// which its fields first use them).
pub const MIGRATIONS: &str = "Migrations";
pub const CONNECTION: &str = "Connection";
pub const LOCK: &str = "Lock";
pub const TABLE_LOCKS: &str = "Table locks";
pub const MANY: &str = "Many databases";
pub const OUTPUT: &str = "Output";

#[derive(Debug, Parser)]
#[command(
    name = "miglock",
    version,
    about = "Apply PostgreSQL migrations safely when many replicas start at once",
    long_about = help::LONG_ABOUT,
    after_help = help::AFTER_HELP,
    after_long_help = help::AFTER_LONG_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// The options given on the command line that the command does not
    /// use (accepted, as they always were, and warned about). Set by
    /// [`Cli::parse_args`].
    #[arg(skip)]
    pub ignored: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Wait (bounded) for the lock, apply every pending migration, release the lock
    ///
    /// Reads the folder, connects, and applies every pending migration in its own transaction
    /// together with its history row, under the advisory lock: when many replicas start at
    /// once, one migrates and the others find the schema current (exit 0) or, past --wait,
    /// skip (exit 3). Nothing pending costs one query and takes no lock. Bad files, applied
    /// files that changed and statements miglock will not run are refused before anything
    /// runs, all of them at once (exit 6). RUN_MIGRATIONS=0/false/no/off disables it (exit 4,
    /// no file read, no connection made).
    #[command(after_help = help::APPLY_EXIT, after_long_help = help::APPLY_LONG)]
    Apply(ApplyArgs),

    /// Show applied, pending, divergent and missing migrations, and who holds or waits for the lock
    ///
    /// Also the sessions blocked behind the lock's holder, and every problem apply would refuse
    /// to run for. Exit 0 whatever the state; with --check, 7 when migrations are pending and 6
    /// when the set is invalid (divergent, missing, badly named files).
    #[command(after_help = help::STATUS_EXIT, after_long_help = help::STATUS_LONG)]
    Status(StatusArgs),

    /// Block until the schema is current (every local migration applied) — for services that never migrate
    ///
    /// Exit 0 once current, 7 when --timeout passes first (naming what is still pending), 6 when
    /// the applied set does not match the files. Idle between looks: it listens for the lock
    /// holder's release and otherwise looks every 0.5-5 s.
    #[command(after_help = help::WAIT_EXIT, after_long_help = help::WAIT_LONG)]
    Wait(WaitArgs),

    /// Free a stuck lock by terminating the session that holds it, with confirmation and safety checks
    ///
    /// Lists the holder first. A holder running a statement right now (e.g. a long migration) is
    /// left alone unless --force. Without a terminal, --yes is required.
    #[command(after_help = help::UNLOCK_EXIT, after_long_help = help::UNLOCK_LONG)]
    Unlock(UnlockArgs),

    /// Record versions up to N of the local files as applied without running them (adopting miglock)
    ///
    /// For a database whose schema already matches the files up to V<N> (made by hand, by another
    /// tool, or restored from a dump): under the lock, and in one transaction, writes refinery's
    /// history rows (checksums included) for every local file up to N not recorded yet, creating
    /// the history table if needed. Rows already recorded identically are left alone. Refuses
    /// (exit 6, nothing written) when N has no file or is beyond the newest file, when a version
    /// up to N is recorded with another checksum or name, or when one recorded up to N has no
    /// file. Version numbers without a file are normal (versions need not be contiguous).
    // Its `--version` was the version to baseline: kept, hidden, as the old
    // spelling of --baseline-version for a release, so the command's own
    // version flag is -V only until then (see BaselineArgs).
    #[command(disable_version_flag = true,
              after_help = help::BASELINE_EXIT, after_long_help = help::BASELINE_LONG)]
    Baseline(BaselineArgs),

    /// Create the next migration file, V<next>__<NAME>.sql, in the migrations folder
    ///
    /// The version is one above the highest local one (1 in an empty folder), zero-padded like the
    /// widest zero-padded version there (V001__a.sql → V002__…). A full file name (V7__add_users,
    /// V7__add_users.sql) is taken as it is, if its version is above every local one. The folder
    /// is created when missing. Never overwrites a file; needs no database. Prints the new file's
    /// path. In another tool's folder (--layout), the file is named and laid out as that tool's
    /// own command writes it: a UTC timestamp version (or the next number in a numbered folder),
    /// goose's and dbmate's annotations, golang-migrate's .up.sql/.down.sql pair.
    #[command(after_help = help::NEW_EXIT, after_long_help = help::NEW_LONG)]
    New(NewArgs),

    /// Store the file's checksum for applied migrations whose file was edited (divergent)
    ///
    /// Shows each divergent migration (old and new checksum, a name change, the file's size) and,
    /// once confirmed, stores the file's checksum and name under the lock; the migration's SQL is
    /// never run. The history keeps no text of the applied file, so no diff of what changed can be
    /// shown: check the edit yourself (e.g. with git) before repairing. Without a terminal, --yes
    /// is required.
    #[command(after_help = help::REPAIR_EXIT, after_long_help = help::REPAIR_LONG)]
    Repair(RepairArgs),

    /// Revert applied migrations down to a version, with their tool's down scripts
    ///
    /// For the layouts that have down scripts (goose's and dbmate's Down sections,
    /// golang-migrate's and sqlx's .down.sql files): every applied migration above --to, newest
    /// first, each in one transaction with its history change (its row taken away), under the
    /// lock. Every migration to revert must have its file and a down script: otherwise nothing
    /// runs (exit 6). Shows what it will revert and asks; without a terminal, --yes is required.
    /// refinery and Flyway folders have no down scripts (exit 2).
    #[command(after_help = help::DOWN_EXIT, after_long_help = help::DOWN_LONG)]
    Down(DownArgs),
    /// Lint migration files with squawk's rules: table locks, rewrites, and more, before you deploy
    ///
    /// Every file of the migrations folder, or the FILEs named. Each finding names the file, line,
    /// rule, level and the fix. A rule about a table lock or a rewrite that stalls the application
    /// is deny (exit 6), the others warn; the rules miglock makes moot are off. squawk's own
    /// comments (-- squawk-ignore RULE) silence a statement. A file miglock runs in a
    /// transaction is linted as one. Needs no database.
    #[command(after_help = LINT_EXIT, after_long_help = LINT_LONG)]
    Lint(LintArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout
    #[command(after_help = help::OTHER_EXIT, after_long_help = help::COMPLETIONS_LONG)]
    Completions {
        /// The shell to complete for
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) on stdout
    #[command(after_help = help::OTHER_EXIT, after_long_help = help::MAN_LONG)]
    Man,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Apply up to and including this version (at most the newest file's)
    #[arg(long, value_name = "VERSION", value_parser = parse::version)]
    pub target: Option<i64>,

    /// Print the plan and change nothing (exit 7 when migrations are pending, 0 when current)
    #[arg(long)]
    pub dry_run: bool,

    /// Bound on each migration statement, or off (never on the lock wait)
    #[arg(long, env = "MIGLOCK_STATEMENT_TIMEOUT", value_name = "DURATION", default_value = "off",
          value_parser = parse::pg_duration_or_off, allow_hyphen_values = true)]
    pub statement_timeout: Duration,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub placeholders: PlaceholderArgs,
    #[command(flatten)]
    pub ahead: AheadArgs,
    #[command(flatten)]
    pub writable: WritableArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub set: SetArgs,
    #[command(flatten)]
    pub lock_mode: LockModeArgs,
    #[command(flatten)]
    pub lock_wait: LockWaitArgs,

    /// Table-lock wait of each attempt: auto (50 ms growing to 3 s), a fixed DURATION, or off
    ///
    /// An ALTER TABLE queued behind a long or idle transaction blocks every later query on that
    /// table while it waits. Each attempt waits at most this long for its table locks (SET LOCAL
    /// lock_timeout), is rolled back when refused, and is tried again: as soon as an older
    /// transaction in its way ends (logged as DDL_BLOCKED), or after a jittered pause, until
    /// --ddl-lock-budget runs out (exit 8, nothing of that migration applied). off (or 0): wait
    /// as PostgreSQL makes it (the behaviour before safe DDL). Never applies to the
    /// advisory-lock wait.
    #[arg(long, env = "MIGLOCK_DDL_LOCK_TIMEOUT", value_name = "DURATION", default_value = "auto",
          value_parser = ddl_timeout, allow_hyphen_values = true, help_heading = TABLE_LOCKS)]
    pub ddl_lock_timeout: DdlTimeout,

    /// How long one migration may keep trying for its table locks before exit 8
    // The default is the library's, written as clap shows it.
    #[arg(long, env = "MIGLOCK_DDL_LOCK_BUDGET", value_name = "DURATION", default_value = "3m",
          value_parser = parse::duration, allow_hyphen_values = true, help_heading = TABLE_LOCKS)]
    pub ddl_lock_budget: Duration,

    /// At most N attempts after the first for one migration (0 to 100000), within the budget
    // `::std::option::Option`: clap's derive then leaves the field
    // alone, so that the default can be a word ("unlimited") that the
    // parser reads as None.
    #[arg(long, env = "MIGLOCK_DDL_RETRIES", value_name = "N", default_value = "unlimited",
          value_parser = parse::retries, help_heading = TABLE_LOCKS)]
    pub ddl_retries: ::std::option::Option<u32>,

    /// End sessions idle in transaction that have blocked a migration this long, or off
    ///
    /// pg_cancel_backend, then pg_terminate_backend, on a session that has been in the way of a
    /// migration's table locks for DURATION while idle in its transaction (a forgotten psql, a
    /// stuck worker), logged as BLOCKER_TERMINATED. Needs pg_signal_backend or membership in its
    /// role.
    #[arg(long, env = "MIGLOCK_CANCEL_BLOCKERS_AFTER", value_name = "DURATION",
          default_value = "off", value_parser = parse::duration_or_off,
          allow_hyphen_values = true, help_heading = TABLE_LOCKS)]
    pub cancel_blockers_after: ::std::option::Option<Duration>,

    /// Rebuild, under the lock, INVALID indexes that applied concurrent builds left behind
    ///
    /// An index named by an applied file's CREATE INDEX CONCURRENTLY that is INVALID (a build
    /// cut off or failed, which earlier releases recorded as applied) is rebuilt with
    /// REINDEX INDEX CONCURRENTLY (PostgreSQL 12+) before the pending migrations, within
    /// --ddl-lock-budget, and logged as INVALID_INDEX_REBUILT. Without it apply only reports
    /// them (INVALID_INDEX_FOUND), and only when it has migrations to apply (status always
    /// does); other INVALID indexes are never touched. Needs the session lock: --lock-mode
    /// session, or auto on a direct connection (exit 2 otherwise).
    #[arg(long, env = "MIGLOCK_REBUILD_INVALID_INDEXES", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new(), help_heading = TABLE_LOCKS)]
    pub rebuild_invalid_indexes: bool,

    #[command(flatten)]
    pub lint: ApplyLintArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 7 when migrations are pending, 6 when the set is invalid
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub placeholders: PlaceholderArgs,
    #[command(flatten)]
    pub ahead: AheadArgs,
    #[command(flatten)]
    pub writable: WritableArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub set: SetArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up after this long (exit 7)
    #[arg(long, env = "MIGLOCK_WAIT_TIMEOUT", value_name = "DURATION", default_value = "5m",
          value_parser = parse::duration, allow_hyphen_values = true)]
    pub timeout: Duration,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub placeholders: PlaceholderArgs,
    #[command(flatten)]
    pub ahead: AheadArgs,
    #[command(flatten)]
    pub writable: WritableArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub set: SetArgs,
    #[command(flatten)]
    pub lock_mode: LockModeArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub output: OutputArgs,
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

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Record the local files up to and including this version (it must have a file)
    #[arg(long, value_name = "VERSION", value_parser = parse::version,
          required_unless_present = "old_version_flag", conflicts_with = "old_version_flag")]
    pub baseline_version: Option<i64>,

    /// The old spelling of --baseline-version (until the next release)
    #[arg(long = "version", id = "old_version_flag", value_name = "VERSION",
          value_parser = parse::version, hide = true)]
    pub old_version: Option<i64>,

    /// Show what would be recorded; take no lock, write nothing
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub placeholders: PlaceholderArgs,
    #[command(flatten)]
    pub writable: WritableArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub lock_mode: LockModeArgs,
    #[command(flatten)]
    pub lock_wait: LockWaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The migration's name: letters, digits and _ (refinery's \w), e.g. add_users_email
    ///
    /// A full file name, V<version>__<name> (.sql or not), is taken as it is when its version is
    /// above every local one.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Start the file with the -- miglock:no-transaction marker (for CREATE INDEX CONCURRENTLY…)
    ///
    /// In another tool's folder, that tool's own: -- +goose NO TRANSACTION, dbmate's
    /// transaction:false, sqlx's -- no-transaction (golang-migrate has none: refused).
    #[arg(long)]
    pub no_transaction: bool,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Revert every applied migration above this version (0: all of them)
    #[arg(long, value_name = "VERSION", value_parser = parse::down_to)]
    pub to: i64,

    /// Revert without asking (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Show what would be reverted; take no lock, change nothing
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub placeholders: PlaceholderArgs,
    #[command(flatten)]
    pub writable: WritableArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub lock_mode: LockModeArgs,
    #[command(flatten)]
    pub lock_wait: LockWaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Only these applied versions [default: every divergent one]
    #[arg(value_name = "VERSION", value_parser = parse::version)]
    pub versions: Vec<i64>,

    /// Store the checksums without asking (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Show what would be repaired; take no lock, change nothing
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,

    /// Repair divergent checksums: what repair does, with or without this flag
    // Required until checksums became the default; still accepted.
    #[arg(long, hide = true)]
    pub checksums: bool,

    #[command(flatten)]
    pub folder: FolderArgs,
    #[command(flatten)]
    pub placeholders: PlaceholderArgs,
    #[command(flatten)]
    pub writable: WritableArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub lock_mode: LockModeArgs,
    #[command(flatten)]
    pub lock_wait: LockWaitArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

// `--ddl-lock-budget`'s default, "3m", is the library's.
const _: () = assert!(crate::migrate::DEFAULT_BUDGET.as_secs() == 180);

/// `--ddl-lock-timeout`: `auto`, `off` (or `0`), or a duration.
fn ddl_timeout(text: &str) -> Result<DdlTimeout, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(DdlTimeout::Auto),
        "off" => Ok(DdlTimeout::Off),
        _ => match parse::pg_duration(text) {
            Ok(d) if d.is_zero() => Ok(DdlTimeout::Off),
            Ok(d) => Ok(DdlTimeout::Fixed(d)),
            Err(e) => Err(format!("{e}; or auto, or off")),
        },
    }
}
