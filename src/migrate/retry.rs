//! `--ddl-lock-timeout`: a migration (or, outside a transaction, a
//! statement) that times out waiting for a table lock (55P03) is rolled back
//! and tried again after a pause, up to `--ddl-retries` times. Queued behind
//! a long query, its ALTER TABLE would otherwise block every other query on
//! that table while it waits.

use std::time::Duration;

use postgres::error::SqlState;

use super::Options;
use crate::backoff::Backoff;
use crate::interrupt::Interrupt;
use crate::migrations::LocalMigration;
use crate::time::{human, millis};

/// The tries of one migration or statement.
pub struct DdlRetry<'a> {
    options: &'a Options,
    retries: u32,
    backoff: Backoff,
}

/// A signal came during the pause.
pub struct Interrupted;

impl<'a> DdlRetry<'a> {
    pub fn new(options: &'a Options) -> DdlRetry<'a> {
        DdlRetry {
            options,
            retries: 0,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        }
    }

    /// `SET LOCAL lock_timeout` for a migration's transaction, when one is set.
    pub fn local_sql(&self) -> Option<String> {
        self.options
            .ddl_lock_timeout
            .map(|t| format!("SET LOCAL lock_timeout = {}", t.as_millis().max(1)))
    }

    /// `SET lock_timeout` for the session of a migration without a
    /// transaction (SET LOCAL needs one); the session's restore after the
    /// migration undoes it.
    pub fn session_sql(&self) -> Option<String> {
        self.options
            .ddl_lock_timeout
            .map(|t| format!("SET lock_timeout = {}", t.as_millis().max(1)))
    }

    /// After a failed try: pauses and says `true` when it was a lock timeout
    /// with tries left; `false` to give up with `error`.
    pub fn again(
        &mut self,
        error: &postgres::Error,
        migration: &LocalMigration,
        statement: Option<usize>,
        interrupt: &Interrupt,
    ) -> Result<bool, Interrupted> {
        let lock_timeout = error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE);
        if !(lock_timeout
            && self.options.ddl_lock_timeout.is_some()
            && self.retries < self.options.ddl_retries)
        {
            return Ok(false);
        }
        self.retries += 1;
        let pause = self.backoff.next_pause();
        let statement = statement.map_or(String::new(), |n| format!(" statement={n}"));
        log::warn!(
            "MIGRATION_RETRY version={} name={}{statement} attempt={}/{} reason=lock_timeout retry_in_ms={}",
            migration.id.version,
            migration.id.name,
            self.retries,
            self.options.ddl_retries,
            millis(pause)
        );
        if interrupt.sleep(pause) {
            Ok(true)
        } else {
            Err(Interrupted)
        }
    }

    /// What a lock timeout that ended the tries adds to the failure.
    pub fn gave_up(&self, error: &postgres::Error) -> Option<String> {
        let timeout = self.options.ddl_lock_timeout?;
        (error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)).then(|| {
            format!(
                "\nIt could not get a table lock within --ddl-lock-timeout {} in {} tries.",
                human(timeout),
                self.retries + 1
            )
        })
    }
}
