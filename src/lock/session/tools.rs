//! The other tool's keys on a [`LockSession`] (see `lock::tool_keys`):
//! made known, tried with the own key, and looked up when busy.

use postgres::SimpleQueryRow;

use super::{Holders, LockSession};
use crate::error::Failure;
use crate::lock::backend::Backend;
use crate::lock::key::LockRole;
use crate::lock::tool_keys::{self, ToolKey, HOLDER_KEY_COLUMN, NAMES_SQL};
use crate::pg_error;
use crate::sql::Batch;

impl LockSession {
    /// The other tool's keys this session takes with its own (none for
    /// refinery's and dbmate's layouts, or with `--tool-lock off`); one
    /// that is the own key (`--lock-key` set to it, to share it) is not
    /// taken twice.
    pub fn tool_keys(&self) -> Vec<ToolKey> {
        let own = self.target.key.key;
        self.target
            .tools
            .keys()
            .iter()
            .filter(|tool| tool.key != own)
            .cloned()
            .collect()
    }

    /// The keys a migration's guard takes at transaction level: the tool
    /// keys in transaction mode; none while this session holds them all at
    /// session level, for the whole run.
    pub fn guard_tool_keys(&self) -> Vec<ToolKey> {
        if self.is_held() {
            Vec::new()
        } else {
            self.tool_keys()
        }
    }

    /// Asks the server for the names the tool keys are computed from, when
    /// no round trip carried them yet (the history read carries them, but
    /// fails before them while the table does not exist): one round trip,
    /// on a first run, before the key is first tried.
    pub fn resolve_tool_keys(&mut self) -> Result<(), Failure> {
        if !self.target.tools.wants_names() {
            return Ok(());
        }
        let mut batch = Batch::new();
        let names = batch.push(NAMES_SQL);
        let results = self.query(&batch).map_err(|e| {
            pg_error::failed(
                &e,
                "cannot read the database's name for the other tool's lock",
            )
        })?;
        let row = results.rows(names).first();
        let value = |i: usize| row.and_then(|row| row.try_get(i).ok().flatten());
        self.target.tools.learn_names(value(0), value(1));
        log::debug!("other tool's lock keys: {:?}", self.target.tools.keys());
        Ok(())
    }

    /// One statement whose row names who holds the key or, with tool
    /// keys, the first of them held (the own key first); see
    /// [`LockSession::holder_from_rows`].
    pub fn holder_sql(&self) -> String {
        let tools = self.tool_keys();
        if tools.is_empty() {
            self.target.key.sessions_sql(LockRole::Holder)
        } else {
            tool_keys::holder_sql(&self.target.key, &tools)
        }
    }

    /// The holder [`LockSession::holder_sql`] found, and the other tool's
    /// key it holds when that one, not miglock's own, is what it holds.
    pub fn holder_from_rows(&self, rows: &[SimpleQueryRow]) -> (Option<Backend>, Option<ToolKey>) {
        let row = rows.first();
        let tool = row
            .and_then(|row| row.try_get(HOLDER_KEY_COLUMN).ok().flatten())
            .and_then(|held| held.parse::<i64>().ok())
            .and_then(|held| self.tool_keys().into_iter().find(|t| t.key == held));
        (row.and_then(|row| Backend::from_row(row, 0)), tool)
    }

    /// Who holds the key now (see [`LockSession::holder_sql`]), and how
    /// many miglock sessions wait for it. Off the handover's path: asked
    /// only after a failed attempt.
    pub fn holders(&mut self) -> Result<Holders, Failure> {
        let key = &self.target.key;
        let mut batch = Batch::new();
        let holder = batch.push(&self.holder_sql());
        let waiters = batch.push(&key.waiter_count_sql());
        let results = batch
            .query(&mut self.client)
            .map_err(|e| pg_error::failed(&e, format!("cannot read who holds the lock {key}")))?;
        let (holder, tool) = self.holder_from_rows(results.rows(holder));
        Ok(Holders {
            holder,
            tool,
            waiters: results
                .value(waiters)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        })
    }
}
