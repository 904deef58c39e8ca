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
use crate::report::Report;

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

/// Takes the key for a command that writes history rows without running
/// migrations (`baseline`, `repair`): the same tries as `apply`'s, without
/// its shortcut of finding the work done by the holder. `true` once held
/// (`LOCK_ACQUIRED`); `false` when `wait` ran out (`LOCK_WAIT_TIMEOUT`,
/// saying `left` undone). Either way `report` says how long it waited and
/// who held the key.
pub fn acquire(
    session: &mut LockSession,
    wait: Duration,
    interrupt: &Interrupt,
    report: &mut Report,
    left: &str,
) -> Result<bool, Failure> {
    let key = session.key().clone();
    let started = Instant::now();
    let mut backoff = Duration::from_millis(250);
    let mut logged = false;
    let acquired = until(session, started + wait, interrupt, |session, _| {
        if session.try_acquire(None)?.acquired {
            return Ok(Look::Done(()));
        }
        let (now, _) = session.busy()?;
        if !logged {
            logged = true;
            let who = now.as_ref().map_or(
                "holder_pid=<gone>".to_string(),
                super::Backend::holder_log_fields,
            );
            log::info!(
                "LOCK_BUSY key={key} {who} waited_ms={} wait_ms={}",
                crate::millis(started.elapsed()),
                crate::millis(wait)
            );
        }
        if now.is_some() {
            report.lock.holder = now;
        }
        // The holder's release notification ends the pause early; the
        // backoff only covers a holder that died without one.
        let pause = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        backoff = (backoff * 2).min(Duration::from_secs(8));
        Ok(Look::Again(pause))
    });
    report.lock.waited_ms = crate::millis(started.elapsed());
    if acquired?.is_some() {
        report.lock_acquired(&key, "");
        Ok(true)
    } else {
        report.lock_wait_timeout(&key, "", left);
        Ok(false)
    }
}
