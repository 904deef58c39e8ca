//! The one wait loop, shared by `apply` (waiting for the key) and `wait`
//! (waiting for the schema): look, and if it is not done yet, wait idle —
//! no statement running, so no snapshot held (a waiter inside
//! `pg_advisory_lock` would deadlock a `CREATE INDEX CONCURRENTLY`) — until
//! the holder's release notification or the next look, within a deadline.
//! A connection lost meanwhile is made again here, and only here.

use std::time::{Duration, Instant};

use super::session::LockSession;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::pg_error;

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
                session.reconnect("while waiting", deadline, interrupt)?;
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
            Err(e) if session.is_closed() || is_shutdown(&e) => {
                session.reconnect("while waiting", deadline, interrupt)?;
                Woken::Start
            }
            Err(e) => return Err(pg_error::failed(&e, "the connection failed while waiting")),
        };
    }
}

fn is_shutdown(e: &postgres::Error) -> bool {
    pg_error::failed(e, "").connection_lost()
}
