//! A connection being made for a [`LockSession`], its first attempt
//! already under way (see [`LockSession::start`]).

use super::{EarlyRead, Identity, LockSession, LockTarget};
use crate::connect::{Connected, Connecting};
use crate::error::Failure;
use crate::interrupt::Interrupt;

/// A connection being made for a [`LockSession`], its first attempt
/// already under way (see [`LockSession::start`]).
pub struct PendingSession {
    pub(super) connecting: Connecting,
    pub(super) target: LockTarget,
    pub(super) identity: Identity,
}

impl PendingSession {
    /// Waits for the connection, retrying for the connect timeout.
    pub fn finish(self, interrupt: &Interrupt) -> Result<LockSession, Failure> {
        let connected = self.connecting.finish(interrupt)?;
        Ok(LockSession::connected(
            connected,
            self.target,
            self.identity,
        ))
    }

    /// The attempt under way, and no retry (see [`Connecting::finish_once`]):
    /// for a run that wants the database only if it is there now.
    pub fn finish_once(self, interrupt: &Interrupt) -> Result<LockSession, Failure> {
        let connected = self.connecting.finish_once(interrupt)?;
        Ok(LockSession::connected(
            connected,
            self.target,
            self.identity,
        ))
    }
}

impl LockSession {
    fn connected(connected: Connected, target: LockTarget, identity: Identity) -> LockSession {
        let mut session = LockSession::new(connected.client, connected.key, target, identity);
        if let Some(read) = connected
            .then
            .and_then(|then| then.downcast::<EarlyRead>().ok())
        {
            session.history_read = Some(read.history);
            session.backend_pid = read.backend_pid;
            if let Some((database, schema)) = &read.names {
                let tools = &mut session.target.tools;
                tools.learn_names(database.as_deref(), schema.as_deref());
            }
        }
        session
    }
}
