//! Letting go of the key: in the last migration's round trip (its
//! notification inside the migration's transaction, the unlock right after
//! its COMMIT), or on its own, with `LOCK_RELEASED` said once the caller has
//! said what the migration did.

use postgres::error::SqlState;

use super::mode;
use super::session::LockSession;
use super::tool_keys;
use crate::pg_error;
use crate::sql::{Batch, Results, Slot};
use crate::time::millis;

impl LockSession {
    /// Adds the release notification to a migration's transaction, before
    /// its COMMIT: the waiters are told at that commit, which already
    /// writes and flushes WAL. (A NOTIFY of its own would be a transaction
    /// of its own, with an ID and a WAL flush, on the handover's path.)
    pub fn push_notify(&self, batch: &mut Batch) {
        batch.push(&self.target.key.notify_sql());
    }

    /// Adds the key's release, and the other tool's keys', to `batch`
    /// after its COMMIT (a session lock let go before the commit would let
    /// a waiter read a history without this migration); see
    /// [`LockSession::execute_releasing`].
    pub fn push_unlock(&self, batch: &mut Batch) -> Slot {
        batch.push(&tool_keys::unlock_sql(&self.target.key, &self.tool_keys()))
    }

    /// Runs `batch`, which ends with the key's release (`unlocked`, from
    /// [`LockSession::push_release`]): one round trip less on the handover
    /// to the next waiter. When the batch fails, the key is still held.
    pub fn execute_releasing(
        &mut self,
        batch: &Batch,
        unlocked: Slot,
    ) -> Result<(), postgres::Error> {
        let results = batch.query(&mut self.client)?;
        self.released(&results, unlocked);
        Ok(())
    }

    /// Asks the server whether this session still holds the key, after a
    /// round trip that failed past its unlock (say, on the `NOTIFY` after
    /// it): without this, the release would unlock a second time and warn
    /// that the key was no longer held.
    pub fn recheck_held(&mut self) {
        if self.held_since.is_none() {
            return;
        }
        let mut batch = Batch::new();
        let held = batch.push(&format!(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid = pg_backend_pid() AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = {})",
            self.target.key.key
        ));
        if let Ok(results) = batch.query(&mut self.client) {
            if results.value(held) == Some("f") {
                log::info!("LOCK_RELEASED key={}", self.target.key);
                self.held_since = None;
            }
        }
    }

    /// Unlocks and wakes the waiters. On a lost connection the server has
    /// already released the key with the session.
    pub fn release(mut self) {
        self.unlock();
    }

    /// Says a release made earlier (see `released_line`).
    fn say_released(&mut self) {
        if let Some((level, line)) = self.released_line.take() {
            log::log!(level, "{line}");
        }
    }

    pub(super) fn unlock(&mut self) {
        self.say_released();
        if self.held_since.is_none() {
            return;
        }
        let key = &self.target.key;
        if self.client.is_closed() {
            log::warn!("LOCK_RELEASED key={key} with the session: the connection was lost");
            self.held_since = None;
            return;
        }
        let mut batch = Batch::new();
        // The notification needs a transaction ID, and its commit would
        // wait for a WAL flush that nothing here needs.
        batch.push("SELECT set_config('synchronous_commit', 'off', true)");
        let unlocked = batch.push(&tool_keys::unlock_sql(key, &self.tool_keys()));
        batch.push(&key.notify_sql());
        let mut results = batch.query(&mut self.client);
        // A signal's cancel request, sent from its own thread, may land on
        // the unlock rather than on the migration it was meant for.
        if results
            .as_ref()
            .is_err_and(|e| e.code() == Some(&SqlState::QUERY_CANCELED))
        {
            results = batch.query(&mut self.client);
        }
        match results {
            Ok(results) => {
                self.released(&results, unlocked);
                self.say_released();
            }
            Err(e) => {
                log::warn!(
                    "LOCK_RELEASED key={} with the session: unlock failed ({})",
                    self.target.key,
                    pg_error::error_chain(&e)
                );
                self.held_since = None;
            }
        }
    }

    fn released(&mut self, results: &Results, unlocked: Slot) {
        let key = &self.target.key;
        let held_ms = self.held_since.take().map_or(0, |t| millis(t.elapsed()));
        self.released_line = Some(if results.value(unlocked) == Some("t") {
            (
                log::Level::Info,
                format!("LOCK_RELEASED key={key} held_ms={held_ms}"),
            )
        } else if self.pooler {
            (log::Level::Warn, mode::left_behind(key, &self.target.table))
        } else {
            // pg_advisory_unlock said this session did not hold the key:
            // something else released it, or (behind a pooler) this
            // statement ran on another server session than the lock.
            (
                log::Level::Warn,
                format!(
                    "LOCK_RELEASED key={key}: the session no longer held it (pg_advisory_unlock \
                     returned false)"
                ),
            )
        });
    }
}
