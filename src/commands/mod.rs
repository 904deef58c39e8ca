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

/// The server went away while this run waited (restart, failover): connect
/// again within what is left until `deadline`. Nothing is lost: the run
/// held no lock.
fn reconnect(
    common: &Common,
    identity: &Identity,
    deadline: std::time::Instant,
    interrupt: &Interrupt,
) -> Result<Client, Failure> {
    let remaining = deadline
        .saturating_duration_since(std::time::Instant::now())
        .max(std::time::Duration::from_secs(1));
    log::warn!(
        "CONNECT_RETRY the connection was lost while waiting; reconnecting to {} (for up to {})",
        common.target,
        humantime::format_duration(std::time::Duration::from_millis(millis(remaining)))
    );
    db::connect(
        &common.target,
        remaining,
        &identity.application_name(None),
        interrupt,
    )
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
