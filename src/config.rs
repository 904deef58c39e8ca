//! Plain configuration the commands run from. The command-line types in
//! `cli` stop here, so commands can be called without a process.

use std::path::PathBuf;
use std::time::Duration;

use crate::connect::ConnectTarget;
use crate::history::HistoryTable;
use crate::lock::{LockKey, LockMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What to make of applied migrations above the newest local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AheadPolicy {
    /// A newer release applied them: the schema is current for this one.
    #[default]
    Allow,
    /// A problem (exit 6), for teams that never run an image older than
    /// its database.
    Reject,
}

/// What every database command needs.
#[derive(Clone)]
pub struct Common {
    pub database: ConnectTarget,
    pub migrations: PathBuf,
    pub table: HistoryTable,
    pub key: LockKey,
    pub connect_timeout: Duration,
    /// A name for this replica (`MIGLOCK_INSTANCE`, e.g. a CI job id),
    /// kept in `application_name` so a DBA can tell sessions apart.
    pub instance: Option<String>,
    /// Whether what a newer release applied counts as current (`--ahead`).
    pub ahead: AheadPolicy,
    /// What the advisory lock is tied to (`--lock-mode`).
    pub lock_mode: LockMode,
}

#[derive(Clone)]
pub struct ApplyConfig {
    pub common: Common,
    /// How long to keep retrying the lock; zero means one try.
    pub wait: Duration,
    /// Bound on each migration statement; `None` means none at all.
    pub statement_timeout: Option<Duration>,
    /// Apply up to and including this version.
    pub target_version: Option<i32>,
    pub dry_run: bool,
    /// Session settings given with `--set`, applied over miglock's own.
    pub settings: Vec<(String, String)>,
    /// `lock_timeout` inside each migration's transaction.
    pub ddl_lock_timeout: Option<Duration>,
    /// How often a migration that hit the DDL lock timeout is retried.
    pub ddl_retries: u32,
}

#[derive(Clone)]
pub struct StatusConfig {
    pub common: Common,
}

#[derive(Clone)]
pub struct WaitConfig {
    pub common: Common,
    /// Give up (exit 7) after this long.
    pub timeout: Duration,
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
    pub version: i32,
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
}

#[derive(Clone)]
pub struct RepairConfig {
    pub common: Common,
    /// Only these versions (sorted, no duplicates); empty means every
    /// divergent one.
    pub versions: Vec<i32>,
    /// Repair without asking.
    pub yes: bool,
    /// Show what would be repaired, change nothing.
    pub dry_run: bool,
    /// How long to keep retrying the lock; zero means one try.
    pub wait: Duration,
}
