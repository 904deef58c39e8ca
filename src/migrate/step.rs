//! One migration to run and what every step of it needs, and what both
//! ways of running it say when it fails.

use std::time::Duration;

use anyhow::anyhow;

use crate::error::{ErrorDetail, Failure};
use crate::interrupt::Interrupt;
use crate::lock::mode::{self, LockMode};
use crate::lock::LockSession;
use crate::migrations::LocalMigration;

use super::baseline::SessionBaseline;
use super::retry::DdlPolicy;

/// How migrations run, as the user asked (`apply`'s flags).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Bound on each migration statement; `None` means none at all.
    pub statement_timeout: Option<Duration>,
    /// Session settings given with `--set`, applied over miglock's own.
    pub settings: Vec<(String, String)>,
    /// How each attempt's table locks are bounded (safe DDL).
    pub ddl: DdlPolicy,
}

/// One migration to apply and what every step of it needs.
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub migration: &'a LocalMigration,
    pub baseline: &'a SessionBaseline,
    pub options: &'a Options,
    pub lock_mode: LockMode,
    /// Also what tells this run's history row from another replica's.
    pub applied_on: &'a str,
    /// The last migration of the run: its round trip also releases the key.
    pub release_after: bool,
    pub interrupt: &'a Interrupt,
}

/// `MIGRATION_FAILED`, with the statement's number in a file without a
/// transaction.
pub(super) fn failed_line(
    migration: &LocalMigration,
    statement: Option<usize>,
    sqlstate: Option<&str>,
) {
    let statement = statement.map_or(String::new(), |n| format!(" statement={n}"));
    log::error!(
        "MIGRATION_FAILED version={} name={}{statement} sqlstate={}",
        migration.id.version,
        migration.id.name,
        sqlstate.unwrap_or("none")
    );
}

/// The guard refused `migration` (rolled back, nothing of it ran). In
/// transaction mode that is the lock being busy or the work done, which
/// the caller reads from the SQLSTATE; in session mode it means this
/// transaction did not run on the server session that holds the key: a
/// transaction pooler is in the way.
pub(super) fn guard_refused(
    session: &mut LockSession,
    lock_mode: LockMode,
    migration: &LocalMigration,
    code: &'static str,
) -> Failure {
    let detail = ErrorDetail {
        sqlstate: Some(code.to_string()),
        ..ErrorDetail::default()
    };
    if lock_mode == LockMode::Transaction {
        return Failure::failed(anyhow!("{migration}: the lock guard refused ({code})"))
            .with_detail(detail);
    }
    let why = if code == mode::KEY_ELSEWHERE {
        "its transaction ran on another server session than the one holding the session lock"
    } else {
        "its transaction ran on a server session that another client already migrated on, \
         and both held the session lock through it"
    };
    session.pooler_detected(&migration.to_string(), why, code)
}

/// The migration's text, read again to run it: refused (exit 6, nothing
/// of it ran) when it is not the file the run planned with.
pub(super) fn reread(migration: &LocalMigration) -> Result<String, Failure> {
    migration.read_script().map_err(|problem| {
        Failure::invalid(anyhow!(
            "{problem}; nothing of {migration} ran (apply again to run the file as it is now)"
        ))
        .with_detail(ErrorDetail {
            sqlstate: None,
            file: Some(migration.path.clone()),
            line: None,
        })
    })
}
