//! Plain configuration the commands run from, many targets' included. The
//! command-line types in `cli` stop here, so commands can be called without
//! a process (the library API and the tests do).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::connect::ConnectTarget;
use crate::error::Failure;
use crate::lock::{Identity, LockKey, LockModeFlag, LockTarget, ToolLocks};
use crate::migrate;
use crate::migrations::history::HistoryTable;
use crate::migrations::layout::placeholders::Placeholders;
use crate::migrations::lint::Rules;
use crate::migrations::{AheadPolicy, MigrationSet, Reading, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What every database command needs.
#[derive(Clone)]
pub struct Common {
    pub database: ConnectTarget,
    pub migrations: PathBuf,
    pub table: HistoryTable,
    /// The values of Flyway's `${placeholders}` (`--placeholder`).
    pub placeholders: Arc<Placeholders>,
    pub key: LockKey,
    pub connect_timeout: Duration,
    /// A name for this replica (`MIGLOCK_INSTANCE`, e.g. a CI job id),
    /// kept in `application_name` so a DBA can tell sessions apart.
    pub instance: Option<String>,
    /// Whether what a newer release applied counts as current (`--ahead`).
    pub ahead: AheadPolicy,
    /// What the advisory lock is tied to (`--lock-mode`), or `auto`: told
    /// from the connection.
    pub lock_mode: LockModeFlag,
    /// Migrations that every user may write to are run all the same
    /// (`--allow-world-writable`).
    pub allow_world_writable: bool,
    /// The other tool's advisory key is taken with miglock's own, where
    /// the layout's tool takes one (`--tool-lock`, see `lock::tool_keys`).
    pub tool_lock: bool,
}

impl Common {
    /// The migrations folder, read in the table's layout.
    pub fn read_migrations(&self) -> Reading {
        MigrationSet::read_with(&self.migrations, self.table.layout(), &self.placeholders)
    }

    /// Where the lock lives, for a session of this command.
    pub fn lock_target(&self) -> LockTarget {
        LockTarget {
            database: self.database.clone(),
            table: self.table.clone(),
            key: self.key.clone(),
            connect_timeout: self.connect_timeout,
            lock_mode: self.lock_mode,
            tools: ToolLocks::new(&self.table, self.database.database(), self.tool_lock),
        }
    }

    /// Who runs `command`: the user's own name for it (`MIGLOCK_INSTANCE`,
    /// else the connection's `application_name`) is kept.
    pub fn identity(&self, command: &'static str) -> Identity {
        Identity::new(
            command,
            self.instance
                .as_deref()
                .or(self.database.application_name()),
        )
    }
}

#[derive(Clone)]
pub struct ApplyConfig {
    pub common: Common,
    /// How long to keep retrying the lock; zero means one try.
    pub wait: Duration,
    /// Apply up to and including this version.
    pub target_version: Option<Version>,
    pub dry_run: bool,
    /// Rebuild the INVALID indexes applied concurrent builds left, under
    /// the lock, before the pending migrations.
    pub rebuild_invalid_indexes: bool,
    /// How each migration runs.
    pub migrate: migrate::Options,
    /// The lint of the pending files, before the lock is taken.
    pub lint: LintGate,
}

/// `apply --lint`: what a finding in a pending file does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LintMode {
    /// Nothing is linted.
    Off,
    /// Each finding is logged (`LINT_WARNING`); the run goes on.
    Warn,
    /// A finding at `deny` level refuses the run (exit 6).
    Deny,
}

#[derive(Debug, Clone)]
pub struct LintGate {
    pub mode: LintMode,
    pub rules: Rules,
}

/// `miglock lint`.
#[derive(Debug, Clone)]
pub struct LintConfig {
    pub migrations: PathBuf,
    /// The files named; none: every file of `migrations`.
    pub files: Vec<PathBuf>,
    pub rules: Rules,
    /// The folder's layout: what of each file runs.
    pub layout: crate::migrations::Layout,
    /// Flyway's placeholders' values (`--placeholder`).
    pub placeholders: Arc<Placeholders>,
}

#[derive(Clone)]
pub struct StatusConfig {
    pub common: Common,
    /// Exit 7 when migrations are pending, 6 when the set is invalid.
    pub check: bool,
    /// `--set`, for this session.
    pub settings: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct WaitConfig {
    pub common: Common,
    /// Give up (exit 7) after this long.
    pub timeout: Duration,
    /// `--set`, for this session (on each connection).
    pub settings: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct UnlockConfig {
    pub common: Common,
    /// Terminate without asking.
    pub yes: bool,
    /// Show what would be terminated, terminate nothing.
    pub dry_run: bool,
    /// Also terminate a holder running a statement right now.
    pub force: bool,
}

#[derive(Clone)]
pub struct BaselineConfig {
    pub common: Common,
    /// Record the local files up to and including this version.
    pub version: Version,
    /// How long to keep retrying the lock; zero means one try.
    pub wait: Duration,
    pub dry_run: bool,
}

/// `new` needs no database: only the folder.
#[derive(Clone)]
pub struct NewConfig {
    pub migrations: PathBuf,
    pub name: String,
    /// Start the file with the no-transaction marker.
    pub no_transaction: bool,
    /// Whose layout the folder is in: the file is named and laid out as
    /// that tool's `new` would.
    pub layout: crate::migrations::Layout,
}

/// `down --to`: what to revert, and how.
#[derive(Clone)]
pub struct DownConfig {
    pub common: Common,
    /// Every applied migration above it is reverted.
    pub to: Version,
    pub yes: bool,
    pub dry_run: bool,
    pub wait: Duration,
}

#[derive(Clone)]
pub struct RepairConfig {
    pub common: Common,
    /// Only these versions (sorted, no duplicates); empty means every
    /// divergent one.
    pub versions: Vec<Version>,
    /// Repair without asking.
    pub yes: bool,
    /// Show what would be repaired, change nothing.
    pub dry_run: bool,
    /// How long to keep retrying the lock; zero means one try.
    pub wait: Duration,
}

/// Where many targets come from.
pub enum Source {
    /// `--databases-from` (`-` is stdin).
    File(String),
    /// `--all-databases [--match PATTERN]` on the server of `server`.
    AllDatabases {
        server: Box<ConnectTarget>,
        pattern: Option<String>,
    },
    /// `--all-schemas [--schema-match PATTERN]` in the database of `server`.
    AllSchemas {
        server: Box<ConnectTarget>,
        pattern: Option<String>,
    },
}

/// What every target of a many-targets run shares.
pub struct FleetConfig {
    pub source: Source,
    pub jobs: usize,
    pub fail_fast: bool,
    /// `--canary N`: the first N targets run before the rest, which start
    /// only if none of them failed (0: no canary).
    pub canary: usize,
    /// `--max-failures N`: no target starts once N failed.
    pub max_failures: Option<usize>,
    /// An empty list of targets runs nothing and succeeds, instead of being
    /// refused (`--allow-no-targets`).
    pub allow_no_targets: bool,
    pub migrations: PathBuf,
    pub table: HistoryTable,
    /// The table each target's lock key is derived from (see `Common`'s
    /// key).
    pub key_table: HistoryTable,
    pub placeholders: Arc<Placeholders>,
    pub connect_timeout: Duration,
    pub instance: Option<String>,
    pub ahead: AheadPolicy,
    pub lock_mode: LockModeFlag,
    pub allow_world_writable: bool,
    pub tool_lock: bool,
    /// `--shard INDEX/COUNT` (or `--shards` with `JOB_COMPLETION_INDEX`):
    /// run only the targets of this shard.
    pub shard: Option<Shard>,
}

/// One worker's slice of the targets: those whose hash, modulo `count`,
/// is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The command every target runs, configured as for one target.
pub enum Job {
    Apply(ApplyConfig),
    Status(StatusConfig),
    Wait(WaitConfig),
}

impl Job {
    pub fn name(&self) -> &'static str {
        match self {
            Job::Apply(_) => "apply",
            Job::Status(_) => "status",
            Job::Wait(_) => "wait",
        }
    }
}

/// What the command line asks of many targets: the shared settings, and
/// how to make one target's job from its `Common`.
pub struct FleetRequest<'a> {
    /// `apply` with `RUN_MIGRATIONS` off: disabled before anything else.
    pub disabled: bool,
    pub config: FleetConfig,
    pub job: Box<dyn Fn(Common) -> Result<Job, Failure> + 'a>,
}
