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
