//! The session baseline: what keeps one migration's session state from
//! reaching its history row, the next migration, or miglock's own
//! statements.
//!
//! A migration may `SET search_path` (pg_dump's header empties it), `SET
//! ROLE`, `SET SESSION AUTHORIZATION`, or change any setting for the
//! session. psql would start every file on a fresh session; here, inside
//! each migration's transaction and before its history row is written, the
//! session is put back to what it was before the first one:
//! `RESET SESSION AUTHORIZATION`, `RESET ROLE` and `RESET ALL` return every
//! setting to its connection-time value (the startup packet's, the role's
//! and the database's defaults — `RESET ALL` leaves the role alone, hence
//! the two before it), then miglock's own settings and `--set`'s are set
//! again, with the `application_name` that `status` reads.
//!
//! So the history row is written as the session's own role, with its own
//! `search_path` (the table is found where it was read), and what the
//! migration set commits or rolls back with it: nothing is left to do
//! after the COMMIT that could fail and leave a committed migration
//! reported as rolled back. It costs no catalog read and no round trip
//! (`RESET ALL` walks the server's settings in C, in microseconds); the
//! `pg_settings` view would render every setting as a row each time.

use super::settings;
use super::Options;
use crate::lock::mode::{self, LockMode};
use crate::lock::Identity;
use crate::migrations::history::HistoryTable;
use crate::sql::{self, Batch};

/// What every migration of a run shares: the history table, and the
/// statements that put the session back before the history row.
#[derive(Debug, Clone)]
pub struct SessionBaseline {
    pub table: HistoryTable,
    restore: Vec<String>,
}

impl SessionBaseline {
    /// `server_version`: the server's `server_version_num`, when known
    /// (see [`settings::session_sets`]).
    pub fn new(
        table: &HistoryTable,
        lock_mode: LockMode,
        options: &Options,
        identity: &Identity,
        server_version: Option<u32>,
    ) -> SessionBaseline {
        let mut restore = vec![
            "RESET SESSION AUTHORIZATION".to_string(),
            "RESET ROLE".to_string(),
            "RESET ALL".to_string(),
        ];
        match lock_mode {
            LockMode::Session => {
                match settings::session_sets(
                    options.statement_timeout,
                    &options.settings,
                    server_version,
                ) {
                    Some(sets) => restore.extend(sets),
                    None => restore.push(settings::session_sql(
                        options.statement_timeout,
                        &options.settings,
                    )),
                }
                restore.push(format!(
                    "SET application_name = {}",
                    sql::literal(&identity.application_name(Some("holding")))
                ));
            }
            // Local to the transaction, as every setting of this mode: the
            // server session is the pooler's, and the next client's.
            LockMode::Transaction => restore.push(settings::local_sql(
                options.statement_timeout,
                &options.settings,
                &identity.application_name(Some(mode::TRANSACTION_HOLDING)),
            )),
        }
        SessionBaseline {
            table: table.clone(),
            restore,
        }
    }

    /// Adds the statements that put the session back: in the migration's
    /// transaction (or, for a file without one, its history row's),
    /// before the history row.
    pub fn push_restore(&self, batch: &mut Batch) {
        for statement in &self.restore {
            batch.push(statement);
        }
    }
}
