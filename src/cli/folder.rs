//! The folder's side of the configuration: its layout (given, or told
//! from the folder), the history table that layout keeps, and Flyway's
//! placeholders.

use std::sync::Arc;

use anyhow::anyhow;

use super::to_config::Shared;
use crate::connect::ConnectTarget;
use crate::env::Env;
use crate::error::Failure;
use crate::migrations::history::HistoryTable;
use crate::migrations::layout::placeholders::Placeholders;
use crate::migrations::layout::{Layout, LayoutFlag};

impl Shared<'_> {
    /// The folder's layout: as given, or told from the folder (a folder
    /// whose layout cannot be told is invalid, exit 6); refinery for a
    /// command that reads no folder.
    pub(super) fn layout(&self) -> Result<Layout, Failure> {
        match self.folder {
            Some(folder) => folder
                .layout
                .resolve(&self.migrations())
                .map_err(|e| Failure::invalid(anyhow!(e))),
            None => Ok(Layout::Refinery),
        }
    }

    /// The history table in `layout`, and the table the lock key is derived
    /// from: `--table` as given, else refinery's name whatever the layout,
    /// so that `unlock` (no folder) and `apply` agree on the key.
    pub(super) fn tables(&self, layout: Layout) -> Result<(HistoryTable, HistoryTable), Failure> {
        let given = self.database.table.as_deref();
        let usage = |e: String| Failure::usage(anyhow!(e));
        let mut table = HistoryTable::for_layout(given, layout).map_err(usage)?;
        // Told from the folder, and not named: the table where another
        // tool's is, is looked for before anything runs.
        if given.is_none() && self.folder.is_some_and(|f| f.layout == LayoutFlag::Auto) {
            table = table.told();
        }
        let key_table = match given {
            Some(_) => HistoryTable::parse(given.unwrap_or_default()).map_err(usage)?,
            None => HistoryTable::default(),
        };
        Ok((table, key_table))
    }

    /// `--placeholder`, else `MIGLOCK_PLACEHOLDERS` (`;`-separated), and
    /// Flyway's built-ins; given in another layout, a warning.
    pub(super) fn placeholders(
        &self,
        env: Env,
        table: &HistoryTable,
        database: Option<&ConnectTarget>,
    ) -> Result<Arc<Placeholders>, Failure> {
        let given = match self.placeholders {
            Some(args) => args.given(env)?,
            None => Vec::new(),
        };
        if table.layout() != Layout::Flyway {
            if given.is_empty() {
                return Ok(Arc::default());
            }
            log::warn!(
                "--placeholder is for Flyway's ${{…}} placeholders, and this folder's layout is \
                 {}: ignored",
                table.layout()
            );
            return Ok(Arc::default());
        }
        Ok(Arc::new(Placeholders::new(
            &given,
            table.name(),
            table.schema(),
            database.map(ConnectTarget::database),
            database.map(ConnectTarget::user),
        )))
    }
}
