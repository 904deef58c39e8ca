//! The history table: its name, its SQL, and the rows read from it.
//!
//! In refinery's layout the table, its columns and the checksum are
//! refinery's own, so a database migrated by refinery or refinery_cli is
//! recognised and the other way round: `version INT4 PRIMARY KEY, name
//! VARCHAR(255), applied_on VARCHAR(255), checksum VARCHAR(255)`,
//! `applied_on` in RFC 3339, `checksum` a decimal u64. In another tool's
//! layout the table is that tool's, read and written as it does
//! ([`shape`]).

use std::fmt;

use postgres::Client;

use super::{Layout, LocalMigration, MigrationId, Version};
use crate::error::Failure;
use crate::sql::{self, Batch, Results, Slot};

pub const DEFAULT_TABLE: &str = "refinery_schema_history";

/// A validated, optionally schema-qualified table name.
///
/// refinery splices the name unquoted into its SQL, so PostgreSQL folds it
/// to lower case; miglock folds it the same way and then always quotes it,
/// so the name can never carry SQL of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTable {
    schema: Option<String>,
    name: String,
    /// Whose table it is: its columns and how rows are written.
    layout: Layout,
    /// The layout was told from the folder (`--layout auto`), not given:
    /// another tool's table where this one is missing stops the run.
    auto: bool,
}

mod rows;
mod shape;

pub use rows::rows_from_rows;

impl HistoryTable {
    /// The table named `text` (or, with `None`, the layout's own), in
    /// `layout`'s shape.
    pub fn for_layout(text: Option<&str>, layout: Layout) -> Result<HistoryTable, String> {
        let mut table = HistoryTable::parse(text.unwrap_or(layout.default_table()))?;
        table.layout = layout;
        Ok(table)
    }

    /// The same table in `schema` (a tenant's), its layout kept.
    pub fn in_schema(&self, schema: &str) -> Result<HistoryTable, String> {
        let mut table = HistoryTable::parse(&format!("{schema}.{}", self.name))?;
        table.layout = self.layout;
        table.auto = self.auto;
        Ok(table)
    }

    /// Other tools' tables were looked for once: a session's later reads
    /// (`wait`'s polls) need not look again.
    pub fn looked_for_others(&mut self) {
        self.auto = false;
    }

    /// The same table, its layout told from the folder.
    pub fn told(mut self) -> HistoryTable {
        self.auto = true;
        self
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn parse(text: &str) -> Result<HistoryTable, String> {
        let invalid = |why: &str| {
            format!(
                "invalid history table name {:?}: {why}; use letters, digits, _ and $, starting with a letter or _, \
                 at most 63 bytes, optionally schema-qualified as schema.table",
                crate::parse::shorten(text, 80)
            )
        };
        let mut parts = text.split('.');
        let (schema, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => (None, name),
            (Some(schema), Some(name), None) => (Some(schema), name),
            _ => return Err(invalid("more than one '.'")),
        };
        let identifier = |part: &str| -> Result<String, String> {
            if part.is_empty() {
                return Err(invalid("empty name"));
            }
            if part.len() > 63 {
                return Err(invalid("longer than 63 bytes"));
            }
            let mut chars = part.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                return Err(invalid("unexpected character"));
            }
            Ok(part.to_ascii_lowercase())
        };
        Ok(HistoryTable {
            schema: schema.map(identifier).transpose()?,
            name: identifier(name)?,
            layout: Layout::Refinery,
            auto: false,
        })
    }

    /// The quoted name to put in SQL.
    pub fn sql_name(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", sql::ident(schema), sql::ident(&self.name)),
            None => sql::ident(&self.name),
        }
    }

    /// The table's own name, without its schema.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema named with `--table schema.table`, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// One statement whose value is `t` when the `--table` schema does not
    /// exist yet (`None` without one).
    pub fn schema_missing_sql(&self) -> Option<String> {
        self.schema.as_ref().map(|schema| {
            format!(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {})",
                sql::literal(schema)
            )
        })
    }

    /// One statement whose value is the schema the table is in, or, when
    /// it does not exist yet, the schema it would be created in.
    pub fn schema_sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("SELECT {}", sql::literal(schema)),
            None => format!(
                "SELECT coalesce((SELECT relnamespace::regnamespace::text FROM pg_class \
                 WHERE oid = to_regclass({})), current_schema())",
                sql::literal(&self.sql_name())
            ),
        }
    }

    /// Creates the table (and its schema, which no migration can create
    /// first since the table comes before any migration), one statement
    /// each.
    pub fn create_sql(&self) -> Vec<String> {
        let mut statements = Vec::new();
        if let Some(schema) = &self.schema {
            statements.push(format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                sql::ident(schema)
            ));
        }
        statements.extend(shape::create(self));
        statements
    }

    /// The rows, as `version, name, applied_on, checksum[, clean]`.
    pub fn select_sql(&self) -> String {
        shape::select(self)
    }

    /// Points an applied row at the file as it is now, guarded by the row
    /// as it was read: a row changed meanwhile returns no version (the
    /// statement's rows say which versions were updated).
    pub fn repair_sql(&self, applied: &HistoryRow, name: &str, checksum: u64) -> String {
        format!(
            "UPDATE {} SET name = {}, checksum = '{checksum}' WHERE version = {} AND name = {} \
             AND checksum = {} RETURNING version",
            self.sql_name(),
            sql::literal(name),
            applied.id.version,
            sql::literal(&applied.id.name),
            sql::literal(&applied.checksum),
        )
    }

    /// The row that records `migration` as applied at `applied_on`, one
    /// statement.
    pub fn insert_sql(&self, migration: &LocalMigration, applied_on: &str) -> String {
        shape::insert(self, migration, applied_on)
    }

    /// What running `migration` changes in the history, one statement: its
    /// row written, or, for a down migration, the row it reverts taken
    /// away.
    pub fn record_sql(&self, migration: &LocalMigration, applied_on: &str) -> String {
        match migration.reverts() {
            Some(previous) => shape::remove(self, migration, previous),
            None => shape::insert(self, migration, applied_on),
        }
    }

    /// One statement whose rows say whether the history holds the row this
    /// run wrote for `id` (where the table keeps a time, its `applied_on`
    /// tells it from another replica's).
    pub fn committed_sql(&self, migration: &LocalMigration, applied_on: &str) -> String {
        shape::committed(self, migration, applied_on)
    }

    /// The condition on a row of this table that records `version`.
    pub fn holds_sql(&self, version: &Version) -> String {
        shape::holds(self, version)
    }

    /// What the guard in `migration`'s transaction checks the history does
    /// not hold yet: a query whose row says it does, and what to call it.
    /// `None` for a down migration (its version is there, and must be).
    pub fn already_applied(&self, migration: &LocalMigration) -> Option<AlreadyApplied> {
        if migration.reverts().is_some() {
            return None;
        }
        let version = &migration.id.version;
        Some(if version.is_repeatable() {
            AlreadyApplied {
                what: format!("{} as it is now", migration.id),
                query: shape::repeatable_current(self, migration),
            }
        } else {
            AlreadyApplied {
                what: format!("version {version}"),
                query: format!(
                    "SELECT 1 FROM {} WHERE {}",
                    self.sql_name(),
                    self.holds_sql(version)
                ),
            }
        })
    }
}

impl Default for HistoryTable {
    fn default() -> Self {
        HistoryTable {
            schema: None,
            name: DEFAULT_TABLE.into(),
            layout: Layout::Refinery,
            auto: false,
        }
    }
}

/// The name as the user would write it (folded to lower case, unquoted).
impl fmt::Display for HistoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A migration the history holds already, as the guard asks it: another
/// replica applied it since this one read the history.
pub struct AlreadyApplied {
    /// `version 3`, `R__views as it is now`.
    pub what: String,
    /// Its row, if there is one.
    pub query: String,
}

/// One row of the history table: an applied migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub id: MigrationId,
    pub applied_on: String,
    /// Kept as text: a row written by another tool may not hold a number.
    /// Empty where the table keeps none.
    pub checksum: String,
    /// The tool marked it half applied (golang-migrate's `dirty`, sqlx's
    /// and Flyway's `success = false`).
    pub dirty: bool,
    /// It stands for every version up to its own (golang-migrate's one
    /// row, Flyway's baseline row).
    pub through: bool,
}

impl HistoryRow {
    /// The row running `migration` wrote, as its table keeps it (Flyway's
    /// description for its name): what a run that does not read the
    /// history again plans the next round with.
    pub fn written_for(migration: &LocalMigration, applied_on: String) -> HistoryRow {
        HistoryRow {
            id: MigrationId {
                version: migration.id.version.clone(),
                name: migration
                    .layout
                    .recorded_name(&migration.id.name)
                    .into_owned(),
            },
            applied_on,
            checksum: migration.recorded_checksum().unwrap_or_default(),
            dirty: false,
            through: false,
        }
    }
}

/// What [`read_with`] gave: the rows (`None` when the table does not
/// exist), and the first value of each extra statement (none when the
/// table does not exist: the failed read ends the round trip before them).
pub struct Read {
    pub rows: Option<Vec<HistoryRow>>,
    pub extras: Vec<Option<String>>,
}

/// Reads the history, with `extras` (one statement each) in the same
/// round trip.
pub fn read_with(
    client: &mut Client,
    table: &HistoryTable,
    extras: &[&str],
) -> Result<Read, Failure> {
    let mut batch = Batch::new();
    let rows = batch.push(&table.select_sql());
    let slots: Vec<_> = extras.iter().map(|sql| batch.push(sql)).collect();
    match batch.query(client) {
        Ok(results) => Ok(Read {
            rows: Some(rows_from_rows(results.rows(rows), table.layout())?),
            extras: slots
                .into_iter()
                .map(|slot| results.value(slot).map(str::to_string))
                .collect(),
        }),
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => {
            if table.auto {
                refuse_other_tools(client, table)?;
            }
            Ok(Read {
                rows: None,
                extras: vec![None; extras.len()],
            })
        }
        Err(e) => Err(crate::pg_error::failed(
            &e,
            format!("cannot read the history table {table}"),
        )),
    }
}

/// The folder's layout was told from its files, the table not named, and
/// the table is missing:
/// when another tool's history table is there, that tool migrated this
/// database, and reading the folder as the wrong tool's would run every
/// migration again. One query, on a first run only.
fn refuse_other_tools(client: &mut Client, table: &HistoryTable) -> Result<(), Failure> {
    // A refinery folder's names are refinery's: only Flyway's folders look
    // like it (and Rails' or another app's `schema_migrations` beside it is
    // no question).
    let others: Vec<String> = Layout::ALL
        .iter()
        .filter(|l| table.layout != Layout::Refinery || **l == Layout::Flyway)
        .map(|l| l.default_table())
        .filter(|name| *name != table.name())
        .map(sql::literal)
        .collect();
    let sql = format!(
        "SELECT string_agg(relname, ', ' ORDER BY relname) FROM pg_class WHERE relkind IN \
         ('r', 'p') AND pg_table_is_visible(oid) AND relname IN ({})",
        others.join(", ")
    );
    let found = client
        .simple_query(&sql)
        .map_err(|e| crate::pg_error::failed(&e, "cannot look for other tools' history tables"))?
        .into_iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        });
    let Some(found) = found else {
        return Ok(());
    };
    let layout = table.layout;
    let tools: Vec<&str> = Layout::ALL
        .iter()
        .filter(|l| found.split(", ").any(|t| t == l.default_table()))
        .map(|l| l.name())
        .collect();
    Err(Failure::invalid(anyhow::anyhow!(
        "the migrations folder reads as {layout}'s (--layout auto), but this database has no \
         {table} and has {found}, the history table of {}: name the layout that migrated it \
         (--layout {}), or give --layout {layout} to start {layout}'s history here",
        tools.join(" or "),
        tools.first().copied().unwrap_or("…")
    )))
}

/// `applied_on` for a row written now: RFC 3339 in UTC, as refinery
/// writes it.
pub fn applied_on_now() -> anyhow::Result<String> {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("cannot format the time: {e}"))
}

/// Adds the statements that create the table (and its schema) to `batch`,
/// quietly, for a transaction the caller opened: whoever writes the first
/// rows creates the table in the same transaction, under the lock, so
/// concurrent first runs never race on it. The slot, when the table names a
/// schema, says whether that schema was missing (see [`log_schema_created`]).
pub fn push_create(batch: &mut Batch, table: &HistoryTable) -> Option<Slot> {
    // Replicas that saw no table before waiting would each log "relation
    // already exists, skipping".
    batch.push("SET LOCAL client_min_messages = warning");
    let schema_missing = table.schema_missing_sql().map(|sql| batch.push(&sql));
    for statement in table.create_sql() {
        batch.push(&statement);
    }
    schema_missing
}

/// Logs `HISTORY_SCHEMA_CREATED` when [`push_create`]'s batch created the
/// schema.
pub fn log_schema_created(results: &Results, slot: Option<Slot>, table: &HistoryTable) {
    if let (Some(slot), Some(schema)) = (slot, table.schema()) {
        if results.value(slot) == Some("t") {
            log::info!("HISTORY_SCHEMA_CREATED schema={schema} (for the history table {table})");
        }
    }
}

/// The session's search_path names no existing schema, so an unqualified
/// history table has nowhere to be (exit 2: a setting to fix).
pub fn no_schema(table: &HistoryTable) -> Failure {
    Failure::usage(anyhow::anyhow!(
        "the session's search_path selects no existing schema (current_schema() is NULL), so the \
         history table {table} has no schema to live in; name one with --table schema.table \
         (e.g. --table public.{table}), or fix the role's search_path"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_qualified_names_are_folded_and_quoted() {
        let t = HistoryTable::parse("refinery_schema_history").unwrap();
        assert_eq!(t.sql_name(), "\"refinery_schema_history\"");
        assert_eq!(t.to_string(), "refinery_schema_history");
        let t = HistoryTable::parse("App.Schema_History$1").unwrap();
        assert_eq!(t.sql_name(), "\"app\".\"schema_history$1\"");
        assert_eq!(t.to_string(), "app.schema_history$1");
        assert_eq!(
            HistoryTable::default(),
            HistoryTable::parse(DEFAULT_TABLE).unwrap()
        );
    }

    #[test]
    fn injection_and_odd_names_are_refused() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "x; drop table y",
            "a\"b",
            "a'b",
            "a.b.c",
            ".a",
            "a.",
            "1abc",
            "a b",
            "tablé",
            long.as_str(),
            "a-b",
        ] {
            let err = HistoryTable::parse(bad).unwrap_err();
            assert!(err.contains("invalid history table name"), "{bad:?}: {err}");
        }
        assert!(HistoryTable::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn insert_quotes_every_text_value() {
        let t = HistoryTable::default();
        let m = LocalMigration::new(
            MigrationId {
                version: 3.into(),
                name: "it's".into(),
            },
            "V3__it's.sql".into(),
            42,
            super::super::Size::default(),
        );
        assert_eq!(
            t.insert_sql(&m, "2026-01-01T00:00:00Z"),
            "INSERT INTO \"refinery_schema_history\" (version, name, applied_on, checksum) \
             VALUES (3, E'it''s', E'2026-01-01T00:00:00Z', '42')"
        );
    }
}
