//! Running ONE migration on the [`LockSession`] that holds the key (or, in
//! transaction mode, takes it with each migration): in one transaction
//! with its history row ([`transactional`]), or statement by statement for
//! a file PostgreSQL cannot run in one ([`statements`]). [`apply_one`] is
//! the only entry the commands call; what a run does around it (waiting
//! for the key, the order, the report) is theirs.
//!
//! - [`baseline`]: the session state each migration starts from;
//! - [`settings`]: the migrating session's settings, `--set` included;
//! - [`retry`]: what a table-lock timeout does;
//! - [`recovery`]: after a failed round trip or a lost connection;
//! - [`invalid_indexes`]: INVALID indexes already there, reported and rebuilt.

use crate::error::Failure;
use crate::lock::LockSession;

mod baseline;
mod blockers;
mod failure_line;
mod indexes;
pub mod invalid_indexes;
mod recovery;
mod retry;
pub mod settings;
mod statements;
mod step;
pub mod table_sizes;
mod transactional;

pub use baseline::SessionBaseline;
pub use recovery::{after_connection_loss, Lost};
pub use retry::{Blocked, DdlPolicy, DdlTimeout, DEFAULT_BUDGET};
pub use step::{Options, Step};

/// Applies `step`'s migration, its history row with it.
pub fn apply_one(session: &mut LockSession, step: &Step) -> Result<(), Failure> {
    if step.migration.execution().transactional() {
        transactional::apply(session, step)
    } else {
        statements::apply(session, step)
    }
}
