//! [`LockSession`]: the one connection that waits for the key, holds it,
//! runs the migrations and releases it.
//!
//! Holding is a property of the type: the key is released by
//! [`LockSession::release`], by the round trip of the last migration
//! ([`LockSession::execute_then_release`]), or, on any other way out (an
//! error, a signal, a panic), by `Drop`. A session whose connection is gone
//! holds nothing: PostgreSQL releases a session lock with its session.

use std::time::{Duration, Instant};

use fallible_iterator::FallibleIterator;
use postgres::error::SqlState;
use postgres::Client;

use super::key::{try_lock_sql, Backend, Identity, LockRole};
use crate::config::Common;
use crate::connect;
use crate::error::Failure;
use crate::history::{self, AppliedMigration, HistoryTable};
use crate::interrupt::Interrupt;
use crate::pg_error;
use crate::sql::{Batch, Results, Slot};

/// How often an idle wait looks at the interrupt flag.
const IDLE_SLICE: Duration = Duration::from_millis(100);

pub struct LockSession<'c> {
    client: Client,
    common: &'c Common,
    identity: Identity,
    /// Session settings sent once per connection, with the first attempt.
    settings: Option<String>,
    /// Whether this connection listens for the release and carries the
    /// waiting mark (see [`LockRole`]); redone after a reconnect.
    listening: bool,
    /// Since when the key is held; `None` while it is not.
    held_since: Option<Instant>,
    /// `pg_postmaster_start_time()` as seen by the first lock attempt on
    /// this connection: a new one after a lost connection means the server
    /// restarted (or another took over), the same one that only this
    /// session ended.
    server_started: Option<String>,
    /// A migration's guard found this run's transactions on another server
    /// session than the lock (see `lock::mode`).
    pooler: bool,
}

/// One try for the key.
pub struct Attempt {
    pub acquired: bool,
    /// The server takes no writes: a hot standby (which also refuses
    /// `LISTEN`), or `default_transaction_read_only`. Never `acquired`.
    pub read_only: bool,
    /// The history, read in the same round trip with a snapshot taken
    /// after the lock (see [`LockSession::try_acquire`]): `None`
    /// when the table was not asked for.
    pub history: Option<anyhow::Result<Vec<AppliedMigration>>>,
}

impl<'c> LockSession<'c> {
    pub fn new(client: Client, common: &'c Common, identity: Identity) -> LockSession<'c> {
        LockSession {
            client,
            common,
            identity,
            settings: None,
            listening: false,
            held_since: None,
            server_started: None,
            pooler: false,
        }
    }

    pub fn key(&self) -> &super::LockKey {
        &self.common.key
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Notes that a transaction pooler is in the way, so that an unlock
    /// that finds nothing to release says where the key stayed.
    pub fn pooler_detected(&mut self) {
        self.pooler = true;
    }

    /// Connects, retrying for the connect timeout.
    pub fn connect(
        common: &'c Common,
        identity: Identity,
        interrupt: &Interrupt,
    ) -> Result<LockSession<'c>, Failure> {
        let client = connect_as(common, &identity, interrupt)?;
        Ok(LockSession::new(client, common, identity))
    }

    /// Session settings (one statement) to send with the first lock attempt
    /// on each connection.
    pub fn with_settings(mut self, settings: String) -> LockSession<'c> {
        self.settings = Some(settings);
        self
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// When the server of the first lock attempt started, if it was asked.
    pub fn server_started(&self) -> Option<&str> {
        self.server_started.as_deref()
    }

    /// When the server this session is connected to started (`None` if it
    /// cannot be asked): after a lost connection, a new value means the
    /// server restarted or another took over.
    pub fn server_start_time(&mut self) -> Option<String> {
        let mut batch = Batch::new();
        let started = batch.push("SELECT pg_postmaster_start_time()::text");
        let results = batch.query(&mut self.client).ok()?;
        results.value(started).map(str::to_string)
    }

    pub fn is_held(&self) -> bool {
        self.held_since.is_some()
    }

    /// Connects again (`why`: the server went away, or is read-only) within
    /// what is left until `deadline`. Whatever this session held went with
    /// the old connection.
    pub fn reconnect(
        &mut self,
        why: &str,
        deadline: Instant,
        interrupt: &Interrupt,
    ) -> Result<(), Failure> {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        log::warn!(
            "CONNECT_RETRY {why}; reconnecting to {} (for up to {})",
            self.common.database,
            humantime::format_duration(Duration::from_millis(crate::millis(remaining)))
        );
        self.held_since = None;
        self.listening = false;
        self.client = connect::connect(
            &self.common.database,
            remaining,
            &self.identity.application_name(None),
            interrupt,
        )?;
        Ok(())
    }

    /// On a connection's first wait: listen for the holder's release and
    /// take the waiting mark.
    fn push_listen(&mut self, batch: &mut Batch) {
        if self.listening {
            return;
        }
        let key = &self.common.key;
        batch.push(&format!("LISTEN {}", key.channel()));
        batch.push(&key.mark_waiting_sql());
        self.listening = true;
    }

    /// Makes this session a waiter `status` can list, woken by the holder's
    /// release (for `wait`, which never takes the key).
    pub fn listen(&mut self) -> Result<(), Failure> {
        if self.listening {
            return Ok(());
        }
        let name = format!(
            "SELECT set_config('application_name', {}, false)",
            crate::sql::literal(&self.identity.application_name(Some("waiting")))
        );
        let mut batch = Batch::new();
        batch.push(&name);
        self.push_listen(&mut batch);
        let Err(e) = batch.execute(&mut self.client) else {
            return Ok(());
        };
        if e.code() != Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
            self.listening = false;
            return Err(pg_error::failed(&e, "cannot listen for the lock's release"));
        }
        // A hot standby refuses LISTEN (and no NOTIFY reaches it anyway):
        // the waiter polls, at the pace it keeps without notifications.
        log::debug!("the server is a hot standby: no LISTEN, polling the history");
        let mut batch = Batch::new();
        batch.push(&name);
        batch.push(&self.common.key.mark_waiting_sql());
        batch.execute(&mut self.client).map_err(|e| {
            self.listening = false;
            pg_error::failed(&e, "cannot listen for the lock's release")
        })
    }

    /// Tries the key once, never blocking in the server; with `history`,
    /// re-reads it in the same round trip. Once the key is ours that read
    /// is the truth to apply against; while it is busy it tells when the
    /// holder has already done this replica's work.
    pub fn try_acquire(&mut self, history: Option<&HistoryTable>) -> Result<Attempt, Failure> {
        let key = &self.common.key;
        let mut batch = Batch::new();
        // The history must be read with a snapshot taken after the lock,
        // but the whole batch is one implicit transaction, whose snapshot
        // a database defaulting to repeatable read or serializable takes at
        // its first query, before the attempt. Read committed, set before
        // any query, gives every statement a snapshot of its own. (Ending
        // the implicit transaction with a COMMIT instead made the server
        // log `WARNING: there is no transaction in progress` on every
        // attempt; in an implicit block SET TRANSACTION does not warn.)
        if history.is_some() {
            batch.push("SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
        }
        // Once per connection, on the first attempt's round trip: nothing
        // is added to a run that finds nothing pending.
        let read_only = (!self.listening).then(|| {
            batch.push(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on', \
                 pg_postmaster_start_time()::text",
            )
        });
        if !self.listening {
            if let Some(settings) = &self.settings {
                batch.push(settings);
            }
        }
        self.push_listen(&mut batch);
        let attempt = batch.push(&try_lock_sql(
            key,
            &self.identity.application_name(Some("holding")),
            &self.identity.application_name(Some("waiting")),
        ));
        let rows = history.map(|table| batch.push(&table.select_sql()));
        // Notifications that arrived before this attempt are answered by it.
        self.drain_notifications();
        log::trace!("lock attempt: {batch:?}");
        let results = match batch.query(&mut self.client) {
            Ok(results) => results,
            Err(e) => {
                self.listening = false;
                // A hot standby refuses the LISTEN before the lock is tried.
                if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
                    return Ok(Attempt {
                        acquired: false,
                        read_only: true,
                        history: None,
                    });
                }
                return Err(pg_error::failed(&e, format!("cannot try the lock {key}")));
            }
        };
        if let Some(started) = read_only.and_then(|slot| results.rows(slot).first()?.get(1)) {
            self.server_started = Some(started.to_string());
        }
        if read_only.is_some_and(|slot| results.value(slot) == Some("t")) {
            // Taken on a primary that refuses writes: of no use.
            self.held_since = results
                .value(attempt)
                .filter(|got| *got == "t")
                .map(|_| Instant::now());
            self.unlock();
            return Ok(Attempt {
                acquired: false,
                read_only: true,
                history: None,
            });
        }
        let acquired = match results.value(attempt) {
            Some(got) => got == "t",
            None => {
                return Err(Failure::failed(anyhow::anyhow!(
                    "the lock attempt returned no row"
                )))
            }
        };
        if acquired {
            self.held_since = Some(Instant::now());
        }
        Ok(Attempt {
            acquired,
            read_only: false,
            history: rows.map(|slot| history::rows_from_rows(results.rows(slot))),
        })
    }

    /// Who holds the key now (`None`: released since the attempt), and how
    /// many miglock sessions wait for it. Off the handover's path: asked
    /// only after a failed attempt.
    pub fn busy(&mut self) -> Result<(Option<Backend>, u32), Failure> {
        let key = &self.common.key;
        let mut batch = Batch::new();
        let holder = batch.push(&key.sessions_sql(LockRole::Holder));
        let waiters = batch.push(&key.waiter_count_sql());
        let results = batch
            .query(&mut self.client)
            .map_err(|e| pg_error::failed(&e, format!("cannot read who holds the lock {key}")))?;
        let holder = results
            .rows(holder)
            .first()
            .and_then(|row| Backend::from_row(row, 0));
        let waiters = results
            .value(waiters)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Ok((holder, waiters))
    }

    /// Waits idle (no statement, no snapshot) for a notification on a
    /// channel this session listens to, for at most `duration`; `true` if
    /// one came. Returns early, `false`, once `interrupt` is raised.
    pub fn idle_wait(
        &mut self,
        duration: Duration,
        interrupt: &Interrupt,
    ) -> Result<bool, postgres::Error> {
        let end = Instant::now() + duration;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || interrupt.is_set() {
                return Ok(false);
            }
            if self
                .client
                .notifications()
                .timeout_iter(left.min(IDLE_SLICE))
                .next()?
                .is_some()
            {
                return Ok(true);
            }
        }
    }

    fn drain_notifications(&mut self) {
        let mut notifications = self.client.notifications();
        let mut received = notifications.iter();
        while let Ok(Some(_)) = received.next() {}
    }

    /// Runs `batch` under the key.
    pub fn execute(&mut self, batch: &Batch) -> Result<(), postgres::Error> {
        debug_assert!(self.is_held());
        batch.execute(&mut self.client)
    }

    /// Runs `batch` under the key and releases the key in the same round
    /// trip, which takes a round trip off the handover to the next waiter.
    /// When the batch fails, the key is still held.
    pub fn execute_then_release(&mut self, mut batch: Batch) -> Result<(), postgres::Error> {
        let key = &self.common.key;
        let unlocked = batch.push(&key.unlock_sql());
        batch.push(&key.notify_sql());
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
            self.common.key.key
        ));
        if let Ok(results) = batch.query(&mut self.client) {
            if results.value(held) == Some("f") {
                log::info!("LOCK_RELEASED key={}", self.common.key);
                self.held_since = None;
            }
        }
    }

    /// Unlocks and wakes the waiters. On a lost connection the server has
    /// already released the key with the session.
    pub fn release(mut self) {
        self.unlock();
    }

    fn unlock(&mut self) {
        if self.held_since.is_none() {
            return;
        }
        let key = &self.common.key;
        if self.client.is_closed() {
            log::warn!("LOCK_RELEASED key={key} with the session: the connection was lost");
            self.held_since = None;
            return;
        }
        let mut batch = Batch::new();
        let unlocked = batch.push(&key.unlock_sql());
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
            Ok(results) => self.released(&results, unlocked),
            Err(e) => {
                log::warn!(
                    "LOCK_RELEASED key={key} with the session: unlock failed ({})",
                    pg_error::error_chain(&e)
                );
                self.held_since = None;
            }
        }
    }

    fn released(&mut self, results: &Results, unlocked: Slot) {
        let key = &self.common.key;
        let held_ms = self
            .held_since
            .take()
            .map_or(0, |t| crate::millis(t.elapsed()));
        if results.value(unlocked) == Some("t") {
            log::info!("LOCK_RELEASED key={key} held_ms={held_ms}");
        } else if self.pooler {
            log::warn!("{}", super::mode::left_behind(key, &self.common.table));
        } else {
            // pg_advisory_unlock said this session did not hold the key:
            // something else released it, or (behind a pooler) this
            // statement ran on another server session than the lock.
            log::warn!(
                "LOCK_RELEASED key={key}: the session no longer held it (pg_advisory_unlock returned false)"
            );
        }
    }
}

/// A plain connection named after `identity`, retried for the connect
/// timeout: for the commands that look at the lock without waiting for it.
pub fn connect_as(
    common: &Common,
    identity: &Identity,
    interrupt: &Interrupt,
) -> Result<Client, Failure> {
    connect::connect(
        &common.database,
        common.connect_timeout,
        &identity.application_name(None),
        interrupt,
    )
}

impl Drop for LockSession<'_> {
    fn drop(&mut self) {
        self.unlock();
    }
}
