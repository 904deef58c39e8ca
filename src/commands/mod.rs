//! One module per command.

pub mod apply;
pub mod status;
pub mod unlock;
pub mod wait;

use postgres::Client;

use crate::config::Common;
use crate::db;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::lock::Identity;

/// Who this run is, for `application_name`: the user's own name for it
/// (`MIGLOCK_INSTANCE`, else the application name of the connection) is kept.
fn identity(command: &'static str, common: &Common) -> Identity {
    Identity::new(
        command,
        common
            .instance
            .as_deref()
            .or(common.target.application_name()),
    )
}

/// Connects, retrying for the connect timeout.
fn connect(common: &Common, identity: &Identity, interrupt: &Interrupt) -> Result<Client, Failure> {
    db::connect(
        &common.target,
        common.connect_timeout,
        &identity.application_name(None),
        interrupt,
    )
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
