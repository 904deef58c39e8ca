//! The one wait loop, shared by `apply` (waiting for the key) and `wait`
//! (waiting for the schema): look, and if it is not done yet, wait idle —
//! no statement running, so no snapshot held (a waiter inside
//! `pg_advisory_lock` would deadlock a `CREATE INDEX CONCURRENTLY`) — until
//! the holder's release notification or the next look, within a deadline.
//! A connection lost meanwhile is made again here, and only here.

use std::time::{Duration, Instant};

use super::session::{Attempt, LockSession};
use super::{log_acquired, log_busy, log_wait_timeout, Backend, LockMode, ToolKey};
use crate::backoff::Backoff;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::pg_error;
use crate::time::millis;

/// What a look found.
pub enum Look<T> {
    Done(T),
    /// Not yet: look again after this pause, or sooner on a notification.
    Again(Duration),
}

/// Why the previous pause ended, for the next look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The first look on this connection.
    Start,
    /// A release notification came.
    Notified,
    /// The pause ran out.
    Timeout,
}

/// Looks until `look` is done (`Some`) or `deadline` passes (`None`).
/// Errors end the loop, except a lost connection, which is made again
/// within the deadline; a signal ends it with `interrupted`.
pub fn until<T>(
    session: &mut LockSession,
    deadline: Instant,
    interrupt: &Interrupt,
    mut look: impl FnMut(&mut LockSession, Woken) -> Result<Look<T>, Failure>,
) -> Result<Option<T>, Failure> {
    let mut woken = Woken::Start;
    loop {
        let pause = match look(session, woken) {
            Ok(Look::Done(value)) => return Ok(Some(value)),
            Ok(Look::Again(pause)) => pause,
            Err(failure)
                if (session.is_closed() || failure.connection_lost()) && !interrupt.is_set() =>
            {
                session.reconnect("the connection was lost while waiting", deadline, interrupt)?;
                woken = Woken::Start;
                continue;
            }
            Err(failure) => return Err(failure),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(None);
        }
        let waited = session.idle_wait(pause.min(remaining), interrupt);
        if interrupt.is_set() {
            return Err(Failure::interrupted());
        }
        woken = match waited {
            Ok(true) => Woken::Notified,
            Ok(false) => Woken::Timeout,
            Err(e) if session.is_closed() || pg_error::session_ended(&e) => {
                session.reconnect("the connection was lost while waiting", deadline, interrupt)?;
                Woken::Start
            }
            Err(e) => return Err(pg_error::failed(&e, "the connection failed while waiting")),
        };
    }
}

/// How a wait for the key ended.
pub struct Acquired {
    pub held: bool,
    pub waited_ms: u64,
    /// Who held the key while this run waited.
    pub holder: Option<Backend>,
    /// The other tool's key the holder held, when that kept this run waiting.
    pub holder_tool: Option<ToolKey>,
}

/// Takes the key for a command that writes history rows without running
/// migrations (`baseline`, `repair`): the same tries as `apply`'s, without
/// its shortcut of finding the work done by the holder. Logs
/// `LOCK_ACQUIRED` once held, or `LOCK_WAIT_TIMEOUT` (saying `left` undone)
/// when `wait` ran out.
pub fn acquire(
    session: &mut LockSession,
    wait: Duration,
    interrupt: &Interrupt,
    left: &str,
) -> Result<Acquired, Failure> {
    let mut holder = None;
    let mut holder_tool = None;
    let key = session.key().clone();
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
    let mut logged = false;
    let acquired = until(session, started + wait, interrupt, |session, _| {
        if matches!(session.try_acquire(false)?, Attempt::Acquired { .. }) {
            return Ok(Look::Done(()));
        }
        let now = session.holders()?;
        if !logged {
            logged = true;
            log_busy(
                &key,
                LockMode::Session,
                now.holder.as_ref(),
                now.tool.as_ref(),
                millis(started.elapsed()),
                millis(wait),
            );
        }
        if now.holder.is_some() {
            holder = now.holder;
            holder_tool = now.tool;
        }
        // The holder's release notification ends the pause early; the
        // backoff only covers a holder that died without one (or another
        // tool holding its key, which sends none).
        Ok(Look::Again(backoff.next_pause()))
    });
    let waited_ms = millis(started.elapsed());
    let held = acquired?.is_some();
    if held {
        log_acquired(&key, LockMode::Session, waited_ms);
    } else {
        log_wait_timeout(
            &key,
            LockMode::Session,
            waited_ms,
            holder.as_ref(),
            holder_tool.as_ref(),
            left,
        );
    }
    Ok(Acquired {
        held,
        waited_ms,
        holder,
        holder_tool,
    })
}
