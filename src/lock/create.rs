//! The history table, created by whoever writes its first row, in a
//! transaction that takes the key: concurrent first runs never race on it.

use postgres::error::SqlState;

use super::mode;
use super::session::LockSession;
use crate::error::Failure;
use crate::migrations::history::{self, HistoryRow};
use crate::pg_error;
use crate::sql::Batch;

impl LockSession {
    /// Holding the key (session mode): creates the history table in a
    /// transaction that takes the key too, which only a pooler can refuse.
    pub fn create_history(&mut self) -> Result<Vec<HistoryRow>, Failure> {
        match self.create_history_under_key()? {
            Some(rows) => Ok(rows),
            None => {
                let what = format!("creating the history table {}", self.table());
                Err(self.pooler_detected(
                    &what,
                    "its transaction ran on another server session than the one holding the session lock",
                    mode::KEY_ELSEWHERE,
                ))
            }
        }
    }

    /// Creates the table (and its schema) in one transaction that first
    /// takes the key at transaction level: concurrent `CREATE TABLE IF NOT
    /// EXISTS` can still fail on the catalog's unique indexes, and behind a
    /// transaction pooler the session lock does not cover this transaction.
    /// `None` when the key (or the other tool's) is held by another server
    /// session (see `lock::mode`): nothing was created.
    pub fn create_history_under_key(&mut self) -> Result<Option<Vec<HistoryRow>>, Failure> {
        let table = self.table().clone();
        let mut batch = Batch::new();
        batch.push("BEGIN");
        for statement in mode::guard_sql(self.key(), &self.guard_tool_keys(), None) {
            batch.push(&statement);
        }
        let schema_missing = history::push_create(&mut batch, &table);
        batch.push("COMMIT");
        let rows = batch.push(&table.select_sql());
        let results = match self.query(&batch) {
            Ok(results) => results,
            Err(e) => {
                self.rollback();
                // The own key elsewhere, or (transaction mode) the other
                // tool's key held: busy either way.
                if let Some(mode::KEY_ELSEWHERE | mode::TOOL_KEY_HELD) = mode::guard_refusal(&e) {
                    return Ok(None);
                }
                if e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) && table.schema().is_none() {
                    return Err(history::no_schema(&table));
                }
                return Err(pg_error::failed(
                    &e,
                    format!("cannot create the history table {table}"),
                ));
            }
        };
        history::log_schema_created(&results, schema_missing, &table);
        Ok(Some(history::rows_from_rows(
            results.rows(rows),
            table.layout(),
        )?))
    }
}
