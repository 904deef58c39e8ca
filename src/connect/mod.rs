//! Connecting to PostgreSQL: where to (`target`, with libpq's conventions:
//! `conninfo`, `pgpass`, `tls`, `client_cert`), and the connection retried while the
//! server starts (`retry`), its cancel key read on the way (`sniff`); a
//! connection string as it may be shown (`redact`), and what one must
//! look like before it is parsed (`url_shape`).

mod client_cert;
pub mod conninfo;
pub mod pgpass;
pub mod redact;
mod retry;
mod sniff;
pub mod spare;
mod target;
pub mod tls;
mod url_shape;

pub use retry::{connect, Connected, Connecting, Then};
pub use sniff::CancelKey;
pub use target::ConnectTarget;
