//! Other tools' advisory keys, taken with miglock's own (issue #23).
//!
//! A team moving to miglock runs both for a while: a replica still on the
//! old release runs Flyway, golang-migrate, goose or sqlx, and a new one
//! runs miglock, against the same history table. Each tool only excludes
//! its own kind, so miglock also takes the old tool's key, computed as that
//! tool computes it, in the same attempt as its own: while either holds
//! it, the other waits.
//!
//! - Flyway (`PostgreSQLConnection.lock`): `0x466C79776179` ("Flyway") plus
//!   Java's `String.hashCode()` of `"schema"."table"`; taken by default
//!   with `pg_try_advisory_xact_lock` in each migration's transaction.
//! - golang-migrate (v4.15.0 on, `database/util.go`): `crc32(schema ‖ NUL
//!   ‖ table ‖ NUL ‖ database) * 1486364155` in 32-bit arithmetic, blocking
//!   `pg_advisory_lock`. The CLI names the database by the URL's path, its
//!   leading `/` included; a program calling `WithInstance` gets
//!   `current_database()`. Both keys are taken.
//! - goose: the library's opt-in `lock.NewPostgresSessionLocker()` takes
//!   the constant 4097083626; the CLI takes no lock.
//! - sqlx: the library's `Migrator::run` (`sqlx::migrate!()` at start-up)
//!   takes `0x3d32ad9e * crc32(current_database())`, blocking; the
//!   `sqlx migrate run` CLI takes none.
//! - refinery and dbmate take no lock: nothing is added to their runs.

use serde::Serialize;

use super::key::{self, LockKey, ACTIVITY_COLUMNS};
use crate::migrations::history::HistoryTable;
use crate::migrations::Layout;
use crate::sql;

/// Another tool's advisory key, as `pg_locks` shows it for that tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolKey {
    pub key: i64,
    /// `flyway`, `golang-migrate`, `goose` or `sqlx`.
    pub tool: &'static str,
    /// How the tool computes it, with the names it was computed from.
    pub source: String,
}

impl ToolKey {
    /// `tool=flyway tool_key=77433833903597 ` for the lock's log lines.
    pub fn log_fields(&self) -> String {
        format!("tool={} tool_key={} ", self.tool, self.key)
    }

    /// The key as miglock's own kind, for the SQL written for those.
    pub fn as_lock_key(&self) -> LockKey {
        LockKey {
            key: self.key,
            source: self.source.clone(),
        }
    }
}

/// The statement whose row gives what the keys are computed from:
/// `current_database()` and `current_schema()` (NULL when no schema of
/// the `search_path` exists).
pub const NAMES_SQL: &str = "SELECT current_database(), current_schema()";

/// The other tool's keys a session takes with its own: known once the
/// server has said its names, where the tool asks the server for them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolLocks {
    /// The history table (the layout is its tool), `None` when no key is
    /// taken: refinery's and dbmate's layouts, or `--tool-lock off`.
    table: Option<HistoryTable>,
    /// The database as the connection names it (golang-migrate's CLI
    /// takes the URL's path).
    url_database: String,
    /// The keys, once computed.
    keys: Option<Vec<ToolKey>>,
}

impl ToolLocks {
    /// The keys for `table`'s layout, unless `enabled` is false.
    pub fn new(table: &HistoryTable, url_database: &str, enabled: bool) -> ToolLocks {
        let takes = matches!(
            table.layout(),
            Layout::Flyway | Layout::GolangMigrate | Layout::Goose | Layout::Sqlx
        );
        let mut locks = ToolLocks {
            table: (enabled && takes).then(|| table.clone()),
            url_database: url_database.to_string(),
            keys: None,
        };
        if !locks.needs_names() {
            locks.keys = Some(locks.compute(None, None));
        }
        locks
    }

    /// Whether the keys need the server's names: [`NAMES_SQL`] is to ride
    /// on the next round trip (or be sent on its own before the key is
    /// tried).
    pub fn wants_names(&self) -> bool {
        self.keys.is_none()
    }

    fn needs_names(&self) -> bool {
        self.table
            .as_ref()
            .is_some_and(|table| match table.layout() {
                Layout::Sqlx => true,
                Layout::GolangMigrate => true,
                Layout::Flyway => table.schema().is_none(),
                _ => false,
            })
    }

    /// Computes the keys from [`NAMES_SQL`]'s row.
    pub fn learn_names(&mut self, database: Option<&str>, schema: Option<&str>) {
        if self.keys.is_none() {
            self.keys = Some(self.compute(database, schema));
        }
    }

    /// The keys; empty until the names are known (see
    /// [`ToolLocks::wants_names`]) or when none is taken.
    pub fn keys(&self) -> &[ToolKey] {
        self.keys.as_deref().unwrap_or_default()
    }

    fn compute(&self, database: Option<&str>, current_schema: Option<&str>) -> Vec<ToolKey> {
        let Some(table) = &self.table else {
            return Vec::new();
        };
        // The tools put their table in the schema named with it, else in
        // current_schema(); with none (no schema of the search_path
        // exists) they stop before any lock, and so does miglock.
        let schema = table.schema().or(current_schema);
        let name = table.name();
        let mut keys = Vec::new();
        match (table.layout(), schema, database) {
            (Layout::Flyway, Some(schema), _) => keys.push(flyway(schema, name)),
            (Layout::GolangMigrate, Some(schema), Some(database)) => {
                keys.push(golang_migrate(
                    schema,
                    name,
                    &format!("/{}", self.url_database),
                    "CLI",
                ));
                keys.push(golang_migrate(schema, name, database, "library"));
            }
            (Layout::Goose, _, _) => keys.push(ToolKey {
                key: GOOSE_KEY,
                tool: "goose",
                source: "goose's lock.NewPostgresSessionLocker() default (DefaultLockID)".into(),
            }),
            (Layout::Sqlx, _, Some(database)) => keys.push(sqlx(database)),
            _ => {}
        }
        keys.dedup_by_key(|k| k.key);
        keys
    }
}

/// Whether `layout`'s tool takes one key for the whole database, the same
/// for every schema: goose's constant, sqlx's from the database's name
/// (Flyway's and golang-migrate's name the schema).
pub fn one_per_database(layout: Layout) -> bool {
    matches!(layout, Layout::Goose | Layout::Sqlx)
}

/// goose's `lock.DefaultLockID`.
const GOOSE_KEY: i64 = 4_097_083_626;

static CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Flyway's key for its history table `schema.table`.
fn flyway(schema: &str, table: &str) -> ToolKey {
    const MAGIC: i64 =
        (0x46 << 40) + (0x6C << 32) + (0x79 << 24) + (0x77 << 16) + (0x61 << 8) + 0x79;
    let quoted = format!("{}.{}", java_quote(schema), java_quote(table));
    ToolKey {
        key: MAGIC + i64::from(java_hash_code(&quoted)),
        tool: "flyway",
        source: format!("Flyway's 0x466C79776179 + hashCode of {quoted}"),
    }
}

/// How Flyway's PostgreSQL dialect quotes a name in `Table.toString()`.
fn java_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Java's `String.hashCode()`: over UTF-16 code units, in wrapping 32-bit
/// arithmetic.
fn java_hash_code(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// golang-migrate's key, with the database as `which` names it.
fn golang_migrate(schema: &str, table: &str, database: &str, which: &str) -> ToolKey {
    let names = format!("{schema}\0{table}\0{database}");
    let key = CRC32.checksum(names.as_bytes()).wrapping_mul(1_486_364_155);
    ToolKey {
        key: i64::from(key),
        tool: "golang-migrate",
        source: format!(
            "golang-migrate {which}: crc32(\"{}\") * 1486364155",
            names.replace('\0', "\\0")
        ),
    }
}

/// sqlx's key for `database` (`generate_lock_id`).
fn sqlx(database: &str) -> ToolKey {
    // Below 2^30 * 2^32: the product stays within an i64, as in sqlx.
    let key = 0x3d32_ad9e * i64::from(CRC32.checksum(database.as_bytes()));
    ToolKey {
        key,
        tool: "sqlx",
        source: format!("sqlx Migrator: 0x3d32ad9e * crc32(\"{database}\")"),
    }
}

/// [`key::try_lock_sql`] taking `tools` with the own key, both or
/// neither; its one column is still `got`.
pub fn try_lock_sql(
    own: &LockKey,
    tools: &[ToolKey],
    holding_name: &str,
    waiting_name: &str,
) -> String {
    if tools.is_empty() {
        return key::try_lock_sql(own, holding_name, waiting_name);
    }
    let (high, low) = own.halves();
    format!(
        "WITH t AS (SELECT {busy} AS busy) \
         SELECT t.busy = 0 AS got, set_config('application_name', CASE WHEN t.busy = 0 THEN {holding} ELSE {waiting} END, false), \
         CASE WHEN t.busy = 0 THEN pg_advisory_unlock_shared({high}, {low}) END FROM t",
        busy = attempt_expr(own, tools),
        holding = sql::literal(holding_name),
        waiting = sql::literal(waiting_name),
    )
}

/// The lock attempt's expression, when tool keys come with the own one:
/// 0 when every key was taken, else 1 + the position of the first key
/// found busy (1: miglock's own), after giving back the ones taken before
/// it: both or neither. PostgreSQL evaluates a `CASE` in order and only
/// the branch chosen, so a key is tried only once the ones before it are
/// held.
pub fn attempt_expr(own: &LockKey, tools: &[ToolKey]) -> String {
    let keys: Vec<i64> = std::iter::once(own.key)
        .chain(tools.iter().map(|t| t.key))
        .collect();
    let mut expr = "0".to_string();
    for at in (0..keys.len()).rev() {
        let busy = if at == 0 {
            "1".to_string()
        } else {
            // num_nulls evaluates every unlock (none is NULL): its 0 only
            // carries them into the value.
            let unlocks: Vec<String> = keys[..at]
                .iter()
                .rev()
                .map(|k| format!("pg_advisory_unlock({k})"))
                .collect();
            format!("{} + num_nulls({})", at + 1, unlocks.join(", "))
        };
        expr = format!(
            "CASE WHEN pg_try_advisory_lock({key}) THEN {expr} ELSE {busy} END",
            key = keys[at]
        );
    }
    expr
}

/// The release of the own key and the tool keys, one statement whose
/// first value is the own key's `pg_advisory_unlock`. The tool keys go
/// first: a waiter woken by the release tries the own key first, and
/// finds the rest free once it gets it.
pub fn unlock_sql(own: &LockKey, tools: &[ToolKey]) -> String {
    if tools.is_empty() {
        return own.unlock_sql();
    }
    let unlocks: Vec<String> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| format!("pg_advisory_unlock({}) AS tool{i}", t.key))
        .collect();
    format!(
        "WITH t AS (SELECT {}) SELECT pg_advisory_unlock({}), t.* FROM t",
        unlocks.join(", "),
        own.key
    )
}

/// The session that holds the own key or, failing that, the first tool
/// key held, as [`super::Backend::from_row`] reads it, the key after its
/// columns (at [`HOLDER_KEY_COLUMN`]). Any lock mode: Flyway's
/// transaction-level lock shows like a session one.
pub fn holder_sql(own: &LockKey, tools: &[ToolKey]) -> String {
    let keys: Vec<String> = std::iter::once(own.key)
        .chain(tools.iter().map(|t| t.key))
        .enumerate()
        .map(|(i, key)| format!("({i}, {key}::int8)"))
        .collect();
    format!(
        "SELECT l.pid, {ACTIVITY_COLUMNS}, k.key \
         FROM (VALUES {}) k(ord, key) \
         JOIN pg_locks l ON ((l.classid::int8 << 32) | l.objid::int8) = k.key \
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.mode = 'ExclusiveLock' \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY k.ord, l.pid LIMIT 1",
        keys.join(", ")
    )
}

/// Where [`holder_sql`]'s row holds the key.
pub const HOLDER_KEY_COLUMN: usize = 9;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(layout: Layout, name: Option<&str>) -> HistoryTable {
        HistoryTable::for_layout(name, layout).unwrap()
    }

    #[test]
    fn java_hash_code_is_javas() {
        // Known values of "".hashCode(), "a".hashCode(), "hello".hashCode()
        // and "polygenelubricants".hashCode() (Integer.MIN_VALUE).
        assert_eq!(java_hash_code(""), 0);
        assert_eq!(java_hash_code("a"), 97);
        assert_eq!(java_hash_code("hello"), 99_162_322);
        assert_eq!(java_hash_code("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn flyway_key_is_flyways() {
        // As a JDK computes LOCK_MAGIC_NUM + "\"public\".\"flyway_schema_history\"".hashCode().
        assert_eq!(
            flyway("public", "flyway_schema_history").key,
            77_433_833_903_597
        );
        // Over UTF-16 code units: a JDK gives this for "\"Ünï\".\"flyway_schema_history\"".
        assert_eq!(
            flyway("Ünï", "flyway_schema_history").key,
            77_432_185_434_173
        );
        let mut locks = ToolLocks::new(&table(Layout::Flyway, None), "app", true);
        assert!(locks.wants_names());
        locks.learn_names(Some("app"), Some("public"));
        assert_eq!(locks.keys().len(), 1);
        assert_eq!(locks.keys()[0].key, 77_433_833_903_597);
        // A schema named with the table needs nothing from the server.
        let named = ToolLocks::new(
            &table(Layout::Flyway, Some("public.flyway_schema_history")),
            "app",
            true,
        );
        assert!(!named.wants_names());
        assert_eq!(named.keys()[0].key, 77_433_833_903_597);
    }

    #[test]
    fn golang_migrate_keys_are_the_cli_and_the_librarys() {
        let mut locks = ToolLocks::new(&table(Layout::GolangMigrate, None), "app", true);
        assert!(locks.wants_names());
        locks.learn_names(Some("app"), Some("public"));
        let keys: Vec<i64> = locks.keys().iter().map(|k| k.key).collect();
        assert_eq!(keys, [1_726_534_663, 1_787_120_056]);
        assert!(locks.keys()[0].source.contains("CLI"), "{:?}", locks.keys());
        assert!(locks.keys()[0]
            .source
            .contains(r#"public\0schema_migrations\0/app"#));
        // No schema: golang-migrate stops before its lock (ErrNoSchema).
        let mut none = ToolLocks::new(&table(Layout::GolangMigrate, None), "app", true);
        none.learn_names(Some("app"), None);
        assert!(none.keys().is_empty() && !none.wants_names());
    }

    #[test]
    fn goose_and_sqlx_keys() {
        let goose = ToolLocks::new(&table(Layout::Goose, None), "app", true);
        assert!(!goose.wants_names());
        assert_eq!(goose.keys()[0].key, 4_097_083_626);
        let mut sqlx = ToolLocks::new(&table(Layout::Sqlx, None), "app", true);
        sqlx.learn_names(Some("app"), None);
        assert_eq!(sqlx.keys()[0].key, 3_469_795_979_745_788_610);
    }

    #[test]
    fn refinery_dbmate_and_off_take_none() {
        for locks in [
            ToolLocks::new(&table(Layout::Refinery, None), "app", true),
            ToolLocks::new(&table(Layout::Dbmate, None), "app", true),
            ToolLocks::new(&table(Layout::Flyway, None), "app", false),
            ToolLocks::default(),
        ] {
            assert!(!locks.wants_names() || locks == ToolLocks::default());
            assert!(locks.keys().is_empty());
        }
    }

    #[test]
    fn the_attempt_gives_back_what_it_took() {
        let own = LockKey::explicit(7);
        let tools = [
            ToolKey {
                key: 8,
                tool: "golang-migrate",
                source: String::new(),
            },
            ToolKey {
                key: 9,
                tool: "golang-migrate",
                source: String::new(),
            },
        ];
        assert_eq!(
            attempt_expr(&own, &tools),
            "CASE WHEN pg_try_advisory_lock(7) THEN CASE WHEN pg_try_advisory_lock(8) THEN \
             CASE WHEN pg_try_advisory_lock(9) THEN 0 \
             ELSE 3 + num_nulls(pg_advisory_unlock(8), pg_advisory_unlock(7)) END \
             ELSE 2 + num_nulls(pg_advisory_unlock(7)) END ELSE 1 END"
        );
        assert_eq!(unlock_sql(&own, &[]), own.unlock_sql());
        assert_eq!(
            unlock_sql(&own, &tools[..1]),
            "WITH t AS (SELECT pg_advisory_unlock(8) AS tool0) SELECT pg_advisory_unlock(7), t.* FROM t"
        );
    }
}
