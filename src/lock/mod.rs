//! The advisory lock: its key, the session that waits for it and holds it,
//! and the one wait loop.
//!
//! Only `pg_try_advisory_lock` is used. A session blocked in
//! `pg_advisory_lock` sits inside a statement holding a snapshot, and
//! `CREATE INDEX CONCURRENTLY` (in a migration of the holder, or of anyone)
//! waits for every such snapshot: the waiter and the holder deadlock.
//! Waiting is done client-side instead, idle, listening for the holder's
//! release notification.

mod key;
pub mod mode;
mod session;
pub mod wait;

pub use key::{Backend, Identity, LockKey, LockRole};
pub use mode::LockMode;
pub use session::{connect_as, LockSession};

/// `LOCK_WAIT_TIMEOUT`: the key stayed busy for the whole wait; who held
/// it, and what that left undone.
pub fn log_wait_timeout(
    key: &LockKey,
    mode: &str,
    waited_ms: u64,
    holder: Option<&Backend>,
    left: &str,
) {
    let holder = holder.map(Backend::holder_log_fields).unwrap_or_default();
    log::warn!("LOCK_WAIT_TIMEOUT key={key}{mode} waited_ms={waited_ms} {holder}: {left}");
}

/// `LOCK_ACQUIRED`, with how long the wait took.
pub fn log_acquired(key: &LockKey, mode: &str, waited_ms: u64) {
    log::info!("LOCK_ACQUIRED key={key}{mode} waited_ms={waited_ms}");
}
