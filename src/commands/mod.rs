//! One module per command, each with one entry: `run(ctx, config,
//! report) -> Result<Outcome, Failure>` — orchestration only (read the
//! files, open a session, call the lock and migrate units, fill the
//! report). What two commands share lives below them, never beside.

pub mod apply;
pub mod baseline;
pub mod completions;
pub mod down;
pub mod lint;
pub mod man;
pub mod new;
pub mod repair;
pub mod status;
pub mod unlock;
pub mod wait;
