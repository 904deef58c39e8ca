//! Connecting to PostgreSQL: where to (`target`, with libpq's conventions:
//! `conninfo`, `pgpass`, `tls`), and the connection retried while the
//! server starts (`retry`).

pub mod conninfo;
pub mod pgpass;
mod retry;
mod target;
pub mod tls;

pub use retry::{connect, Connecting};
pub use target::ConnectTarget;
