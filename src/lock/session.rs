//! [`LockSession`]: the one connection that waits for the key, holds it,
//! runs the migrations and releases it — and the one way every command
//! connects.
//!
//! Holding is a property of the type: the key is released by
//! [`LockSession::release`], by the round trip of the last migration
//! ([`LockSession::execute_then_release`]), or, on any other way out (an
//! error, a signal, a panic), by `Drop`. A session whose connection is gone
//! holds nothing: PostgreSQL releases a session lock with its session.

use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use fallible_iterator::FallibleIterator;
use postgres::error::SqlState;
use postgres::Client;

use super::backend::{Backend, Identity};
use super::key::LockKey;
use super::mode::LockModeFlag;
use super::tool_keys::{try_lock_sql, ToolKey, ToolLocks};

use crate::connect::{self, spare, CancelKey, ConnectTarget, Connecting, Then};
use crate::error::{ErrorDetail, Failure};
use crate::interrupt::Interrupt;
use crate::migrations::history::{self, HistoryRow, HistoryTable};
use crate::pg_error;
use crate::sql::{Batch, Results};
use crate::time::human;

/// How often an idle wait looks at the interrupt flag.
const IDLE_SLICE: Duration = Duration::from_millis(100);

/// Where the lock lives: the database, the history table it guards, its
/// key. Owned by the session, so a session ties no lifetimes to the
/// configuration it came from.
#[derive(Clone)]
pub struct LockTarget {
    pub database: ConnectTarget,
    pub table: HistoryTable,
    pub key: LockKey,
    /// How long to keep trying to connect (and to reconnect).
    pub connect_timeout: Duration,
    /// `--lock-mode`: under `auto`, the first round trip also asks for
    /// `pg_backend_pid()` (see `lock::path`).
    pub lock_mode: LockModeFlag,
    /// Another tool's keys, taken with `key` (see `lock::tool_keys`).
    pub tools: ToolLocks,
}

pub struct LockSession {
    /// Taken out when the session ends, to be kept for the next target
    /// (see `connect::spare`).
    pub(super) client: ManuallyDrop<Client>,
    /// The cancel key this connection was given, and `pg_backend_pid()`
    /// once a round trip asked (see `lock::path`).
    pub(super) key: CancelKey,
    pub(super) backend_pid: Option<i32>,
    pub(super) target: LockTarget,
    pub(super) identity: Identity,
    /// Session settings sent once per connection, with the first attempt.
    pub(super) settings: Option<String>,
    /// Whether `settings` went to this connection.
    pub(super) settings_sent: bool,
    /// Whether this connection listens for the release and carries the
    /// waiting mark (see [`super::LockRole`]); redone after a reconnect.
    pub(super) listening: bool,
    /// Since when the key is held; `None` while it is not.
    pub(super) held_since: Option<Instant>,
    /// `pg_postmaster_start_time()` as seen by the first lock attempt on
    /// this connection: a new one after a lost connection means the server
    /// restarted (or another took over), the same one that only this
    /// session ended.
    pub(super) server_started: Option<String>,
    /// `server_version_num`, read with `server_started`: which settings the
    /// server has (see `migrate::SessionBaseline`).
    pub(super) server_version: Option<u32>,
    /// A migration's guard found this run's transactions on another server
    /// session than the lock (see `lock::mode`).
    pub(super) pooler: bool,
    /// `LOCK_RELEASED` for a release made in a migration's round trip,
    /// said once the caller has said what that migration did.
    pub(super) released_line: Option<(log::Level, String)>,
    /// The history as the connecting thread read it (see
    /// [`LockSession::start_reading_history`]), for the first
    /// [`LockSession::read_history`].
    pub(super) history_read: Option<HistoryRead>,
}

/// One try for the key.
pub enum Attempt {
    /// This session holds the key. The history, when asked for, was read in
    /// the same round trip with a snapshot taken after the lock (see
    /// [`LockSession::try_acquire`]): the truth to apply against.
    Acquired {
        history: Option<anyhow::Result<Vec<HistoryRow>>>,
    },
    /// Another session holds it. The history, when asked for, tells whether
    /// the holder has already done this replica's work.
    Busy {
        history: Option<anyhow::Result<Vec<HistoryRow>>>,
    },
    /// The server takes no writes: a hot standby (which also refuses
    /// `LISTEN`), or `default_transaction_read_only`.
    ReadOnly,
}

/// Who holds the key, and how many miglock sessions wait for it.
pub struct Holders {
    /// `None`: released since the attempt that found it busy.
    pub holder: Option<Backend>,
    /// The other tool's key the holder holds, when it holds that one
    /// rather than miglock's own (an old replica running that tool).
    pub tool: Option<ToolKey>,
    pub waiters: u32,
}

mod pending;
mod read;
mod tools;
pub use pending::PendingSession;
use read::{read_history, EarlyRead, HistoryRead};

impl LockSession {
    fn new(client: Client, key: CancelKey, target: LockTarget, identity: Identity) -> LockSession {
        LockSession {
            client: ManuallyDrop::new(client),
            key,
            backend_pid: None,
            target,
            identity,
            settings: None,
            settings_sent: false,
            listening: false,
            held_since: None,
            server_started: None,
            server_version: None,
            pooler: false,
            released_line: None,
            history_read: None,
        }
    }

    /// Connects, retrying for the connect timeout.
    pub fn connect(
        target: LockTarget,
        identity: Identity,
        interrupt: &Interrupt,
    ) -> Result<LockSession, Failure> {
        LockSession::start(target, identity, false).finish(interrupt)
    }

    /// Prepares the connection; with `early`, its first attempt starts at
    /// once on its own thread, so the server's backend start-up overlaps
    /// with what the caller does meanwhile (`apply` reads its files).
    pub fn start(target: LockTarget, identity: Identity, early: bool) -> PendingSession {
        LockSession::starting(target, identity, early, None)
    }

    /// As [`LockSession::start`] (early), and the connection reads the
    /// history as soon as it is made, in the connecting thread: on a run
    /// that finds nothing pending, that round trip overlaps the files'
    /// reading too. (Rows only ever join the history: read a moment early,
    /// it can only show less, which the lock attempt reads again.)
    pub fn start_reading_history(target: LockTarget, identity: Identity) -> PendingSession {
        let table = target.table.clone();
        let auto = target.lock_mode == LockModeFlag::Auto;
        let with_names = target.tools.wants_names();
        let then: Then = std::sync::Arc::new(move |client: &mut Client, key: CancelKey| {
            let with_pid = auto && !matches!(key, CancelKey::NotRead(_));
            let read = match read_history(client, &table, None, with_pid, with_names) {
                Ok(read) => EarlyRead {
                    history: Ok(read.rows),
                    backend_pid: read.backend_pid,
                    names: read.names,
                },
                Err(failure) => EarlyRead {
                    history: Err(failure),
                    backend_pid: None,
                    names: None,
                },
            };
            Box::new(read) as Box<dyn std::any::Any + Send>
        });
        LockSession::starting(target, identity, true, Some(then))
    }

    fn starting(
        target: LockTarget,
        identity: Identity,
        early: bool,
        then: Option<Then>,
    ) -> PendingSession {
        let connecting = Connecting::start(
            &target.database,
            target.connect_timeout,
            &identity.application_name(None),
            early,
            then,
        );
        PendingSession {
            connecting,
            target,
            identity,
        }
    }

    pub fn key(&self) -> &LockKey {
        &self.target.key
    }

    pub fn table(&self) -> &HistoryTable {
        &self.target.table
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Session mode found a transaction pooler in the way (`why`) before
    /// `what`, which did not run: logs `POOLER_DETECTED` and says the fix.
    /// From now on an unlock that finds nothing to release says where the
    /// key stayed (see [`mode::left_behind`]).
    pub fn pooler_detected(&mut self, what: &str, why: &str, code: &'static str) -> Failure {
        self.pooler = true;
        log::error!("POOLER_DETECTED key={} before={what}: {why}", self.key());
        Failure::failed(anyhow::anyhow!(
            "stopped before {what}: {why}, so a connection pooler in transaction (or statement) pooling \
             mode sits between miglock and PostgreSQL. Nothing of {what} ran. Session advisory locks \
             cannot work through it: run `miglock apply --lock-mode transaction` \
             (MIGLOCK_LOCK_MODE=transaction) through the pooler, or point DATABASE_URL at PostgreSQL \
             directly (or at a session-pooling port) for migrations."
        ))
        .with_detail(ErrorDetail {
            sqlstate: Some(code.to_string()),
            ..ErrorDetail::default()
        })
    }

    /// Session settings (one statement) to send with the first lock attempt
    /// on each connection.
    pub fn with_settings(mut self, settings: String) -> LockSession {
        self.settings = Some(settings);
        self
    }

    /// The connection, for the units that run SQL on it (`lock`, `migrate`):
    /// commands go through [`LockSession::query`] and friends.
    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Sends `batch` and keeps every statement's rows.
    pub fn query(&mut self, batch: &Batch) -> Result<Results, postgres::Error> {
        batch.query(&mut self.client)
    }

    /// Sends the session settings to this connection, unless they went
    /// already (for the commands that never try the key: `status`, `wait`).
    pub fn send_settings(&mut self) -> Result<(), Failure> {
        if self.settings_sent {
            return Ok(());
        }
        if let Some(settings) = &self.settings {
            self.client
                .batch_execute(settings)
                .map_err(|e| pg_error::failed(&e, "cannot set the session's settings"))?;
        }
        self.settings_sent = true;
        Ok(())
    }

    /// Reads the history (one round trip); `None` when the table does not
    /// exist yet.
    pub fn read_history(&mut self) -> Result<Option<Vec<HistoryRow>>, Failure> {
        // A failed early read is read again, for the error of this moment.
        if let Some(Ok(history)) = self.history_read.take() {
            // That first read looked for other tools' tables.
            self.target.table.looked_for_others();
            return Ok(history);
        }
        let with_pid = self.wants_backend_pid();
        let with_names = self.target.tools.wants_names();
        let read = read_history(
            &mut self.client,
            &self.target.table,
            None,
            with_pid,
            with_names,
        )?;
        self.target.table.looked_for_others();
        self.backend_pid = self.backend_pid.or(read.backend_pid);
        read.teach(&mut self.target.tools);
        Ok(read.rows)
    }

    /// [`LockSession::read_history`] with one more statement in the same
    /// round trip (`apply`'s look for invalid indexes), and its first value.
    pub fn read_history_with(
        &mut self,
        extra: &str,
    ) -> Result<(Option<Vec<HistoryRow>>, Option<String>), Failure> {
        // An early read is of no use here, and must not serve a later one.
        self.history_read = None;
        let with_pid = self.wants_backend_pid();
        let with_names = self.target.tools.wants_names();
        let read = read_history(
            &mut self.client,
            &self.target.table,
            Some(extra),
            with_pid,
            with_names,
        )?;
        self.target.table.looked_for_others();
        self.backend_pid = self.backend_pid.or(read.backend_pid);
        read.teach(&mut self.target.tools);
        Ok((read.rows, read.extra))
    }

    /// Ends whatever transaction a failed round trip left open (aborted):
    /// it must not stay open on the session that holds the key. On a lost
    /// connection this fails too, and the server rolls back by itself.
    pub fn rollback(&mut self) {
        let _ = self.client.batch_execute("ROLLBACK");
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// When the server of the first lock attempt started, if it was asked.
    pub fn server_started(&self) -> Option<&str> {
        self.server_started.as_deref()
    }

    /// The server's `server_version_num` (150018 for 15.18), read with the
    /// first lock attempt on this connection.
    pub fn server_version(&self) -> Option<u32> {
        self.server_version
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
            self.target.database,
            human(remaining)
        );
        self.held_since = None;
        self.listening = false;
        self.settings_sent = false;
        let connected = connect::connect(
            &self.target.database,
            remaining,
            &self.identity.application_name(None),
            interrupt,
        )?;
        // The old connection is dropped (closed) here.
        *self.client = connected.client;
        self.key = connected.key;
        self.backend_pid = None;
        Ok(())
    }

    /// Reconnects within the connect timeout, after the connection was lost.
    pub fn reconnect_now(&mut self, why: &str, interrupt: &Interrupt) -> Result<(), Failure> {
        let deadline = Instant::now() + self.target.connect_timeout;
        self.reconnect(why, deadline, interrupt)
    }

    /// On a connection's first wait: listen for the holder's release and
    /// take the waiting mark.
    fn push_listen(&mut self, batch: &mut Batch) {
        if self.listening {
            return;
        }
        let key = &self.target.key;
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
        batch.push(&self.target.key.mark_waiting_sql());
        batch.execute(&mut self.client).map_err(|e| {
            self.listening = false;
            pg_error::failed(&e, "cannot listen for the lock's release")
        })
    }

    /// Tries the key once, never blocking in the server; with `history`,
    /// re-reads it in the same round trip. Once the key is ours that read
    /// is the truth to apply against; while it is busy it tells when the
    /// holder has already done this replica's work.
    pub fn try_acquire(&mut self, history: bool) -> Result<Attempt, Failure> {
        // Known by now on most runs: the history read carried the names.
        self.resolve_tool_keys()?;
        let tools = self.tool_keys();
        let mut batch = Batch::new();
        // The history must be read with a snapshot taken after the lock,
        // but the whole batch is one implicit transaction, whose snapshot
        // a database defaulting to repeatable read or serializable takes at
        // its first query, before the attempt. Read committed, set before
        // any query, gives every statement a snapshot of its own. (Ending
        // the implicit transaction with a COMMIT instead made the server
        // log `WARNING: there is no transaction in progress` on every
        // attempt; in an implicit block SET TRANSACTION does not warn.)
        if history {
            batch.push("SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
        }
        // Once per connection, on the first attempt's round trip: nothing
        // is added to a run that finds nothing pending.
        let read_only = (!self.listening).then(|| {
            batch.push(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on', \
                 pg_postmaster_start_time()::text, current_setting('server_version_num')",
            )
        });
        if !self.settings_sent {
            if let Some(settings) = &self.settings {
                batch.push(settings);
            }
        }
        self.push_listen(&mut batch);
        let key = &self.target.key;
        let attempt = batch.push(&try_lock_sql(
            key,
            &tools,
            &self.identity.application_name(Some("holding")),
            &self.identity.application_name(Some("waiting")),
        ));
        let rows = history.then(|| batch.push(&self.target.table.select_sql()));
        // Notifications that arrived before this attempt are answered by it.
        self.drain_notifications();
        log::trace!("lock attempt: {batch:?}");
        let results = match batch.query(&mut self.client) {
            Ok(results) => results,
            Err(e) => {
                self.listening = false;
                // A hot standby refuses the LISTEN before the lock is tried.
                if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
                    return Ok(Attempt::ReadOnly);
                }
                let key = &self.target.key;
                return Err(pg_error::failed(&e, format!("cannot try the lock {key}")));
            }
        };
        self.settings_sent = true;
        if let Some(row) = read_only.and_then(|slot| results.rows(slot).first()) {
            let column = |i: usize| row.try_get(i).ok().flatten();
            self.server_started = column(1).map(str::to_string);
            self.server_version = column(2).and_then(|v| v.parse().ok());
        }
        if read_only.is_some_and(|slot| results.value(slot) == Some("t")) {
            // Taken on a primary that refuses writes: of no use.
            self.held_since = results
                .value(attempt)
                .filter(|got| *got == "t")
                .map(|_| Instant::now());
            self.unlock();
            return Ok(Attempt::ReadOnly);
        }
        let acquired = match results.value(attempt) {
            Some(got) => got == "t",
            None => {
                return Err(Failure::failed(anyhow::anyhow!(
                    "the lock attempt returned no row"
                )))
            }
        };
        let history = rows
            .map(|slot| history::rows_from_rows(results.rows(slot), self.target.table.layout()));
        if acquired {
            self.held_since = Some(Instant::now());
            Ok(Attempt::Acquired { history })
        } else {
            Ok(Attempt::Busy { history })
        }
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
}

impl Drop for LockSession {
    fn drop(&mut self) {
        self.unlock();
        // SAFETY: the client is taken once, here, and never used after.
        let client = unsafe { ManuallyDrop::take(&mut self.client) };
        // Kept only if it is PostgreSQL's own session (see `connect::spare`).
        if !self.pooler {
            let key = spare::key(&self.target.database, &self.identity.application_name(None));
            spare::keep(key, client, self.key, self.backend_pid);
        }
    }
}
