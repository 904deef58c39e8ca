//! The session baseline: what keeps one migration's session state from
//! reaching the next migration or miglock's own statements.

use crate::error::Failure;
use crate::lock::LockSession;
use crate::migrations::history::{self, HistoryTable};
use crate::pg_error;
use crate::sql::{self, Batch};

/// What every migration of a run shares: the history table, named with
/// the schema it was resolved to before any migration could change
/// `search_path`, and the statements that put the session back to
/// miglock's own settings after each migration.
#[derive(Debug, Clone)]
pub struct SessionBaseline {
    pub table: HistoryTable,
    restore: Vec<String>,
}

impl SessionBaseline {
    /// Resolves the history table's schema and records miglock's session
    /// settings, in one round trip, before the first migration.
    ///
    /// A migration may `SET search_path` (pg_dump's header empties it), `SET
    /// ROLE`, or change any setting for the session. psql would start every
    /// file on a fresh session; here each migration starts on the settings
    /// the session had before the first one. `RESET ALL` would also undo
    /// miglock's own (`statement_timeout`, keepalives, its
    /// `application_name`, which `status` reads), so the session's own
    /// values are recorded instead and set back, and whatever else a
    /// migration set goes back to its default.
    pub fn record(session: &mut LockSession) -> Result<SessionBaseline, Failure> {
        let table = session.table().clone();
        let mut batch = Batch::new();
        let schema = batch.push(&table.schema_sql());
        let role = batch.push("SELECT current_setting('role')");
        let settings = batch.push(
            "SELECT name, setting FROM pg_settings WHERE source = 'session' \
             AND context IN ('user', 'superuser') AND name NOT LIKE 'transaction\\_%'",
        );
        let results = session.query(&batch).map_err(|e| {
            pg_error::failed(&e, format!("cannot resolve the history table {table}"))
        })?;
        let Some(schema) = results.value(schema) else {
            return Err(history::no_schema(&table));
        };
        let values: Vec<String> = results
            .rows(settings)
            .iter()
            .filter_map(|row| Some((row.get(0)?, row.get(1)?)))
            .map(|(name, value)| format!("({}, {})", sql::literal(name), sql::literal(value)))
            .collect();
        let mut restore = Vec::new();
        // The role first: what follows may need its privileges.
        if let Some(role) = results.value(role) {
            restore.push(format!(
                "SELECT set_config('role', {}, false)",
                sql::literal(role)
            ));
        }
        restore.push(format!(
            "SELECT count(set_config(p.name, coalesce(s.setting, p.reset_val), false)) \
             FROM pg_settings p LEFT JOIN (VALUES (NULL::text, NULL::text){}{}) AS s(name, setting) \
             ON s.name = p.name \
             WHERE (p.source = 'session' OR s.name IS NOT NULL) AND p.context IN ('user', 'superuser') \
             AND p.name NOT LIKE 'transaction\\_%' \
             AND p.setting IS DISTINCT FROM coalesce(s.setting, p.reset_val)",
            if values.is_empty() { "" } else { ", " },
            values.join(", ")
        ));
        Ok(SessionBaseline {
            table: table.in_schema(schema),
            restore,
        })
    }

    /// The history table with its schema resolved once, before any
    /// migration could change `search_path`, and no settings to put back:
    /// for `--lock-mode transaction`, where consecutive transactions may
    /// run on different server sessions.
    pub fn for_transactions(session: &mut LockSession) -> Result<SessionBaseline, Failure> {
        let table = session.table().clone();
        let mut batch = Batch::new();
        let schema = batch.push(&table.schema_sql());
        let results = session.query(&batch).map_err(|e| {
            pg_error::failed(&e, format!("cannot resolve the history table {table}"))
        })?;
        let Some(schema) = results.value(schema) else {
            return Err(history::no_schema(&table));
        };
        Ok(SessionBaseline {
            table: table.in_schema(schema),
            restore: Vec::new(),
        })
    }

    /// Adds the statements that put the session back (after a migration).
    pub fn push_restore(&self, batch: &mut Batch) {
        for statement in &self.restore {
            batch.push(statement);
        }
    }
}
