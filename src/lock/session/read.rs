//! The run's first round trip: the history, and what rides on it
//! (`pg_backend_pid()` for `--lock-mode auto`, the server's names for
//! another tool's key), so neither costs a round trip of its own.

use postgres::Client;

use crate::error::Failure;
use crate::lock::tool_keys::ToolLocks;
use crate::migrations::history::{self, HistoryRow, HistoryTable};

/// What reading the history gave.
pub(in crate::lock) type HistoryRead = Result<Option<Vec<HistoryRow>>, Failure>;

/// What the connecting thread read: the history, `pg_backend_pid()` when
/// it was asked for, and the server's names when the tool keys wanted them.
pub(in crate::lock) struct EarlyRead {
    pub history: HistoryRead,
    pub backend_pid: Option<i32>,
    pub names: Option<Names>,
}

/// `current_database()` and `current_schema()`, as [`ToolLocks`] learns them.
pub(in crate::lock) type Names = (Option<String>, Option<String>);

/// What a first round trip read (see [`read_history`]).
pub(in crate::lock) struct FirstRead {
    pub rows: Option<Vec<HistoryRow>>,
    pub extra: Option<String>,
    pub backend_pid: Option<i32>,
    /// `None` when not asked, or when the read failed before them (the
    /// table does not exist yet).
    pub names: Option<Names>,
}

/// The history, `extra`'s first value, with `with_pid`
/// `pg_backend_pid()` (see `lock::path`), and with `with_names` the
/// server's names (see [`ToolLocks::wants_names`]): one round trip.
pub(in crate::lock) fn read_history(
    client: &mut Client,
    table: &HistoryTable,
    extra: Option<&str>,
    with_pid: bool,
    with_names: bool,
) -> Result<FirstRead, Failure> {
    let mut extras = Vec::with_capacity(4);
    extras.extend(extra);
    if with_pid {
        extras.push("SELECT pg_backend_pid()");
    }
    // Two statements: a read keeps the first value of each.
    if with_names {
        extras.push("SELECT current_database()");
        extras.push("SELECT current_schema()");
    }
    let read = history::read_with(client, table, &extras)?;
    let mut values = read.extras.into_iter();
    let extra = extra.and_then(|_| values.next().flatten());
    let backend_pid = with_pid
        .then(|| values.next().flatten())
        .flatten()
        .and_then(|pid| pid.parse().ok());
    // A missing table ends the round trip before the extras: no database.
    let names = with_names
        .then(|| (values.next().flatten(), values.next().flatten()))
        .filter(|(database, _)| database.is_some());
    Ok(FirstRead {
        rows: read.rows,
        extra,
        backend_pid,
        names,
    })
}

impl FirstRead {
    /// Teaches `tools` the names this read carried, if any.
    pub fn teach(&self, tools: &mut ToolLocks) {
        if let Some((database, schema)) = &self.names {
            tools.learn_names(database.as_deref(), schema.as_deref());
        }
    }
}
