//! SIGINT, SIGTERM and SIGHUP (the terminal or the SSH session went away):
//! stop promptly, but never leave the database half migrated. The signal only raises a flag and cancels the statement in
//! flight; the main thread then rolls back, releases the lock and exits
//! 130.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How long the main thread gets to roll back and unlock before the
/// process exits anyway. Closing the socket still ends the session, and
/// with it the lock and the open transaction.
const GRACE: Duration = Duration::from_secs(5);

/// Sleeps are cut in slices this long so a signal is noticed quickly.
const SLICE: Duration = Duration::from_millis(50);

/// The signals that interrupt a run. SIGHUP would otherwise end the
/// process at once (exit 129), leaving the session to the server.
const HANDLED: [libc::c_int; 3] = [SIGINT, SIGTERM, SIGHUP];

/// The name logged in `INTERRUPTED signal=…`.
fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "SIGTERM",
    }
}

/// Sends a cancel request for the statement running on a connection.
pub type Canceller = Box<dyn Fn() -> Result<(), postgres::Error> + Send + Sync>;

#[derive(Default)]
pub struct Interrupt {
    raised: AtomicBool,
    cancel: Mutex<Option<Arc<Canceller>>>,
}

impl Interrupt {
    pub fn new() -> Arc<Interrupt> {
        Arc::new(Interrupt::default())
    }

    /// Routes SIGINT, SIGTERM and SIGHUP to this handle (once per process).
    pub fn install(self: &Arc<Self>) -> std::io::Result<()> {
        let mut signals = Signals::new(HANDLED)?;
        let this = Arc::clone(self);
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if this.raised.swap(true, Ordering::SeqCst) {
                        // A second signal: the user insists.
                        std::process::exit(130);
                    }
                    let name = signal_name(signal);
                    log::warn!("INTERRUPTED signal={name}: rolling back and releasing the lock");
                    this.cancel_running_statement();
                    thread::spawn(|| {
                        thread::sleep(GRACE);
                        std::process::exit(130);
                    });
                }
            })?;
        Ok(())
    }

    pub fn is_set(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// How to cancel the statement a signal must stop (the connection's
    /// cancel token, with its TLS connector).
    pub fn watch(&self, canceller: Canceller) {
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(canceller));
    }

    fn cancel_running_statement(&self) {
        let canceller = self
            .cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(cancel) = canceller {
            // The cancel request opens its own connection; do not let a
            // slow network hold up the signal thread.
            thread::spawn(move || {
                if let Err(e) = cancel() {
                    log::debug!("cancel request failed: {e}");
                }
            });
        }
    }

    /// Sleeps `duration` unless interrupted first; `false` if interrupted.
    pub fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        loop {
            if self.is_set() {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(SLICE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_signal_has_its_own_name() {
        let names: Vec<&str> = HANDLED.iter().map(|s| signal_name(*s)).collect();
        assert_eq!(names, ["SIGINT", "SIGTERM", "SIGHUP"]);
    }
}
