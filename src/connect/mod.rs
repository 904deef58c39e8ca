//! Connecting to PostgreSQL: where to (`target`, with libpq's conventions:
//! `conninfo`, `pgpass`, `tls`, `client_cert`), and the connection retried while the
//! server starts (`retry`), its cancel key read on the way (`sniff`); a
//! connection string as it may be shown (`redact`).

mod client_cert;
pub mod conninfo;
pub mod pgpass;
pub mod redact;
mod retry;
mod sniff;
mod target;
pub mod tls;

pub use retry::{connect, Connected, Connecting, Then};
pub use sniff::CancelKey;
pub use target::ConnectTarget;
