//! What every command gets besides its configuration: where its text goes,
//! its progress display, the interrupt flag, and the output format.

use crate::config::Format;
use crate::interrupt::Interrupt;
use crate::output::{Console, Progress};

pub struct Context<'a> {
    /// Progress bars and spinners (only on a terminal).
    pub progress: &'a Progress,
    /// Raised by SIGINT, SIGTERM or SIGHUP.
    pub interrupt: &'a Interrupt,
    pub format: Format,
    /// Where the command's text goes: stdout in text mode, nowhere in JSON
    /// mode (the result object is printed instead) or for one of many
    /// targets (the summary is).
    pub out: &'a Console,
}

impl<'a> Context<'a> {
    /// The same context, its text going nowhere.
    pub fn quiet(&self, none: &'a Console) -> Context<'a> {
        Context {
            progress: self.progress,
            interrupt: self.interrupt,
            format: self.format,
            out: none,
        }
    }
}
