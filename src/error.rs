//! The error a command ends with: an [`Outcome`] (which decides the exit
//! code), the chain of context for the human, and the structured parts the
//! JSON result carries.

use std::fmt;
use std::path::PathBuf;

use crate::outcome::Outcome;

/// Where a failure came from, for the JSON `error` object.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ErrorDetail {
    pub sqlstate: Option<String>,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
}

#[derive(Debug)]
pub struct Failure {
    pub outcome: Outcome,
    pub error: anyhow::Error,
    pub detail: ErrorDetail,
}

impl Failure {
    pub fn new(outcome: Outcome, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            outcome,
            error: error.into(),
            detail: ErrorDetail::default(),
        }
    }

    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure::new(Outcome::Usage, error)
    }

    pub fn invalid(error: impl Into<anyhow::Error>) -> Failure {
        Failure::new(Outcome::Invalid, error)
    }

    pub fn unavailable(error: impl Into<anyhow::Error>) -> Failure {
        Failure::new(Outcome::Unavailable, error)
    }

    pub fn failed(error: impl Into<anyhow::Error>) -> Failure {
        Failure::new(Outcome::Failed, error)
    }

    pub fn interrupted() -> Failure {
        Failure::new(
            Outcome::Interrupted,
            anyhow::anyhow!("interrupted by a signal; nothing was left half-applied"),
        )
    }

    /// A failure that came of a signal's cancel request (whatever statement
    /// it hit: a history read, a lock attempt, a migration) is the run's
    /// interruption, with what the statement was doing kept: a
    /// non-transactional migration says there what had committed.
    pub fn after_signal(self) -> Failure {
        if self.outcome != Outcome::Failed {
            return self;
        }
        Failure {
            outcome: Outcome::Interrupted,
            error: self.error.context("interrupted by a signal"),
            detail: self.detail,
        }
    }

    pub fn with_detail(mut self, detail: ErrorDetail) -> Failure {
        self.detail = detail;
        self
    }

    /// Whether the server ended the session: a connection error (class 08)
    /// or a shutdown or restart (57P01–57P03). The client may not know its
    /// connection is closed yet when the error arrives.
    pub fn connection_lost(&self) -> bool {
        self.detail.sqlstate.as_deref().is_some_and(|code| {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        })
    }

    /// The whole chain on one line, as it is printed and put in the JSON.
    pub fn message(&self) -> String {
        format!("{:#}", self.error)
    }
}

/// Whether an error with this SQLSTATE means the server ended (or is
/// ending) the session: a connection error (class 08) or an administrator
/// shutdown, crash shutdown or restart (57P01–57P03).
pub fn ends_the_session(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || matches!(sqlstate, "57P01" | "57P02" | "57P03")
}

/// Anything not classified otherwise is a plain failure (exit 1).
impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::failed(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}
