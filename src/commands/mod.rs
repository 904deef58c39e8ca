//! One module per command: orchestration only (read the files, open a
//! session, call the lock and migrate layers, fill the report).

pub mod apply;
pub mod apply_transaction;
pub mod baseline;
pub mod completions;
pub mod man;
pub mod new;
pub mod repair;
pub mod status;
pub mod unlock;
pub mod wait;
