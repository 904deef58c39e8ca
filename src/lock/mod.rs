//! The advisory lock: its key, the session that waits for it and holds it,
//! the one wait loop, and the lock's own log lines.
//!
//! Only `pg_try_advisory_lock` is used. A session blocked in
//! `pg_advisory_lock` sits inside a statement holding a snapshot, and
//! `CREATE INDEX CONCURRENTLY` (in a migration of the holder, or of anyone)
//! waits for every such snapshot: the waiter and the holder deadlock.
//! Waiting is done client-side instead, idle, listening for the holder's
//! release notification.

mod backend;
mod create;
mod key;
pub mod mode;
mod path;
mod release;
mod session;
pub mod tool_keys;
pub mod wait;

pub use backend::{Backend, Identity};
pub use key::{LockKey, LockRole, ACTIVITY_COLUMNS};
pub use mode::{LockMode, LockModeFlag};
pub use path::{session_lock_only, Decision};
pub use session::{Attempt, LockSession, LockTarget, PendingSession};
pub use tool_keys::{ToolKey, ToolLocks};

/// `LOCK_WAIT_TIMEOUT`: the key stayed busy for the whole wait; who held
/// it (`tool`: the other tool's key it held, see `tool_keys`), and what
/// that left undone.
pub fn log_wait_timeout(
    key: &LockKey,
    mode: LockMode,
    waited_ms: u64,
    holder: Option<&Backend>,
    tool: Option<&ToolKey>,
    left: &str,
) {
    let holder = holder.map(Backend::holder_log_fields).unwrap_or_default();
    let mode = mode.log_suffix();
    let tool = tool.map(ToolKey::log_fields).unwrap_or_default();
    log::warn!("LOCK_WAIT_TIMEOUT key={key}{mode} {tool}waited_ms={waited_ms} {holder}: {left}");
}

/// `LOCK_ACQUIRED`, with how long the wait took.
pub fn log_acquired(key: &LockKey, mode: LockMode, waited_ms: u64) {
    let mode = mode.log_suffix();
    log::info!("LOCK_ACQUIRED key={key}{mode} waited_ms={waited_ms}");
}

/// `LOCK_BUSY`: who holds the key (`<gone>`: released since the attempt;
/// `tool`: the other tool's key it holds, see `tool_keys`), how long this
/// run has waited, and how long it will.
pub fn log_busy(
    key: &LockKey,
    mode: LockMode,
    holder: Option<&Backend>,
    tool: Option<&ToolKey>,
    waited_ms: u64,
    wait_ms: u64,
) {
    let who = holder.map_or("holder_pid=<gone>".to_string(), Backend::holder_log_fields);
    let mode = mode.log_suffix();
    let tool = tool.map(ToolKey::log_fields).unwrap_or_default();
    log::info!("LOCK_BUSY key={key}{mode} {tool}{who} waited_ms={waited_ms} wait_ms={wait_ms}");
}
