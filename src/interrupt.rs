//! SIGINT, SIGTERM and SIGHUP (the terminal or the SSH session went away):
//! stop promptly, but never leave the database half migrated. The signal only raises a flag and cancels the statement in
//! flight; the main thread then rolls back, releases the lock and exits
//! 130.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
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
    /// One canceller per thread: each thread runs at most one connection
    /// at a time (a single target on the main thread, or one per worker
    /// with many targets), and a reconnect replaces its own entry only.
    cancel: Mutex<HashMap<ThreadId, Arc<Canceller>>>,
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
                    log::warn!(
                        "INTERRUPTED signal={name}: stopping; what is in progress is rolled back, \
                         and a lock held is released"
                    );
                    this.cancel_running_statement();
                    thread::spawn(|| {
                        thread::sleep(GRACE);
                        std::process::exit(130);
                    });
                }
            })?;
        Ok(())
    }

    /// Raises the flag and cancels the statements in flight, as a signal
    /// does, without ending the process (the library's cancel handle).
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::SeqCst) {
            log::warn!("INTERRUPTED by the cancel handle: rolling back and releasing the lock");
            self.cancel_running_statement();
        }
    }

    pub fn is_set(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// How to cancel the statement a signal must stop (the connection's
    /// cancel token, with its TLS connector).
    pub fn watch(&self, canceller: Canceller) {
        self.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(thread::current().id(), Arc::new(canceller));
    }

    /// Drops this thread's canceller once its connection is done with, so
    /// a signal does not send cancel requests for finished targets.
    pub fn forget(&self) {
        self.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&thread::current().id());
    }

    fn cancel_running_statement(&self) {
        let cancellers: Vec<Arc<Canceller>> = self
            .cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for cancel in cancellers {
            // The cancel request opens its own connection; do not let a
            // slow network hold up the signal thread, nor one target's
            // server the others.
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
    fn every_watching_thread_is_cancelled_and_forgetting_is_per_thread() {
        use std::sync::atomic::AtomicUsize;
        let interrupt = Interrupt::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let watch = |interrupt: &Interrupt| {
            let calls = Arc::clone(&calls);
            interrupt.watch(Box::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }));
        };
        thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| watch(&interrupt));
            }
            s.spawn(|| {
                watch(&interrupt);
                interrupt.forget();
            });
        });
        // A second watch on one thread replaces its first.
        watch(&interrupt);
        watch(&interrupt);
        assert_eq!(interrupt.cancel.lock().unwrap().len(), 4);
        interrupt.cancel_running_statement();
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn every_handled_signal_has_its_own_name() {
        let names: Vec<&str> = HANDLED.iter().map(|s| signal_name(*s)).collect();
        assert_eq!(names, ["SIGINT", "SIGTERM", "SIGHUP"]);
    }
}
