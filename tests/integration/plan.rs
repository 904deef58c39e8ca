//! `apply --dry-run` shows, for each pending file, the tables it locks and
//! in what mode, and under it each statement that locks a table harder
//! than ROW EXCLUSIVE, rewrites or scans it; each mode is the one
//! PostgreSQL really takes, as `pg_locks` shows it from the statement's
//! own transaction.

use std::collections::BTreeMap;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, command, Miglock, MigrationDir};

/// The tables the statements lock: each kind names one or both.
const TABLES: &[&str] = &["parent", "t"];

/// What the kinds below need: `t` with an index, a constraint left to
/// validate and a trigger function, and `parent` for a foreign key.
const SETUP: &str = "CREATE TABLE parent (id int PRIMARY KEY); \
     CREATE TABLE t (id int, v text); CREATE INDEX t_id ON t (id); \
     ALTER TABLE t ADD CONSTRAINT t_nn CHECK (id IS NOT NULL) NOT VALID; \
     CREATE FUNCTION t_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;";

/// Statement kinds a migration holds, each on `t` (and `parent`).
const KINDS: &[(&str, &str)] = &[
    ("add_column", "ALTER TABLE t ADD COLUMN c int"),
    (
        "add_column_default",
        "ALTER TABLE t ADD COLUMN d int DEFAULT 0",
    ),
    ("set_not_null", "ALTER TABLE t ALTER COLUMN id SET NOT NULL"),
    ("insert", "INSERT INTO t (id) VALUES (1)"),
    ("update", "UPDATE t SET v = 'x'"),
    ("delete", "DELETE FROM t WHERE id = 0"),
    ("create_index", "CREATE INDEX t_v ON t (v)"),
    ("truncate", "TRUNCATE t"),
    ("drop_table", "DROP TABLE t"),
    ("rename", "ALTER TABLE t RENAME COLUMN v TO w"),
    (
        "foreign_key",
        "ALTER TABLE t ADD CONSTRAINT t_parent FOREIGN KEY (id) REFERENCES parent (id)",
    ),
    ("validate", "ALTER TABLE t VALIDATE CONSTRAINT t_nn"),
    (
        "trigger",
        "CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION t_touch()",
    ),
    (
        "set_statistics",
        "ALTER TABLE t ALTER COLUMN v SET STATISTICS 500",
    ),
    ("comment", "COMMENT ON TABLE t IS 'calls'"),
    ("lock_share", "LOCK TABLE t IN SHARE MODE"),
    ("reindex", "REINDEX TABLE t"),
    ("cluster", "CLUSTER t USING t_id"),
    (
        "volatile_default",
        "ALTER TABLE t ADD COLUMN e float8 DEFAULT random()",
    ),
];

/// The strongest mode PostgreSQL takes on each of [`TABLES`] for `sql`
/// run alone in its own transaction, rolled back; as the plan names modes
/// (`SHARE ROW EXCLUSIVE`).
fn taken(db: &TestDb, sql: &str) -> BTreeMap<String, String> {
    let mut client = db.client();
    let mut tx = client.transaction().unwrap();
    // The oids first: a DROP TABLE leaves no name to look up.
    let oids: Vec<(String, u32)> = TABLES
        .iter()
        .map(|table| {
            let oid: u32 = tx
                .query_one(&format!("SELECT '{table}'::regclass::oid"), &[])
                .unwrap()
                .get(0);
            (table.to_string(), oid)
        })
        .collect();
    tx.batch_execute(sql).unwrap();
    let mut strongest = BTreeMap::new();
    for (table, oid) in oids {
        let modes: Vec<String> = tx
            .query(
                "SELECT mode FROM pg_locks WHERE locktype = 'relation' AND pid = pg_backend_pid() \
                 AND relation = $1",
                &[&oid],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mode = [
            "AccessExclusiveLock",
            "ExclusiveLock",
            "ShareRowExclusiveLock",
            "ShareLock",
            "ShareUpdateExclusiveLock",
            "RowExclusiveLock",
            "RowShareLock",
            "AccessShareLock",
        ]
        .into_iter()
        .find(|mode| modes.iter().any(|m| m == mode));
        if let Some(mode) = mode {
            strongest.insert(table, as_sql(mode));
        }
    }
    tx.rollback().unwrap();
    strongest
}

/// `ShareRowExclusiveLock` as `SHARE ROW EXCLUSIVE`.
fn as_sql(pg_locks_mode: &str) -> String {
    pg_locks_mode
        .trim_end_matches("Lock")
        .chars()
        .fold(String::new(), |mut acc, c| {
            if c.is_ascii_uppercase() && !acc.is_empty() {
                acc.push(' ');
            }
            acc.push(c.to_ascii_uppercase());
            acc
        })
}

/// A statement as the plan shows it: on one line, cut at 60 characters
/// with `…` (these statements hold no comment, and single spaces).
fn excerpt(sql: &str) -> String {
    // A literal's text is left out (the corpus has one, unescaped).
    let sql = &match (sql.find('\''), sql.rfind('\'')) {
        (Some(open), Some(close)) if close > open + 1 => {
            format!("{}'…'{}", &sql[..open], &sql[close + 1..])
        }
        _ => sql.to_string(),
    };
    if sql.chars().count() <= 60 {
        return sql.to_string();
    }
    let cut: String = sql.chars().take(59).collect();
    format!("{}…", cut.trim_end())
}

/// Weaker than what a plan shows statement by statement: plain DML's.
fn weak(mode: &str) -> bool {
    ["ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE"].contains(&mode)
}

/// One file per `(name, sql)`, `V1__<name>.sql` on, and `apply --dry-run`
/// over them (exit 7): the folder, and the JSON plan's pending entries,
/// one a file, in order.
pub(crate) fn dry_run_each<'a>(
    db: &TestDb,
    files: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> (MigrationDir, Vec<serde_json::Value>) {
    let dir = MigrationDir::new();
    let count = files.len();
    for (i, (name, sql)) in files.enumerate() {
        dir.file(&format!("V{}__{name}.sql", i + 1), &format!("{sql};\n"));
    }
    let out = apply(db, &dir).arg("--dry-run").run();
    out.assert_code(7);
    let pending = out.json()["pending"].as_array().unwrap().clone();
    assert_eq!(pending.len(), count);
    (dir, pending)
}

fn database_untouched(db: &TestDb) {
    assert!(db.table_exists("t"), "--dry-run changed nothing");
    assert!(!db.column_exists("t", "c"), "--dry-run changed nothing");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_indexes WHERE tablename = 't'"),
        1
    );
    assert!(db.history().is_empty());
}

#[test]
fn the_plan_names_each_tables_lock_as_postgresql_takes_it() {
    let db = Cluster::shared().create_db();
    db.client().batch_execute(SETUP).unwrap();
    let (dir, pending) = dry_run_each(&db, KINDS.iter().copied());
    for (entry, (name, sql)) in pending.iter().zip(KINDS) {
        let planned: BTreeMap<String, String> = entry["locks"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no locks in {entry}"))
            .iter()
            .map(|lock| {
                let table = lock["table"].as_str().unwrap().to_string();
                (table, lock["mode"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(
            planned,
            taken(&db, sql),
            "{name}: planned, and what PostgreSQL took"
        );
    }
    // The text plan says the same under each file.
    let out = Miglock::for_db(&db)
        .args(["apply", "--dry-run", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(7)
        .assert_stdout_contains("apply V1__add_column")
        .assert_stdout_contains("        locks t ACCESS EXCLUSIVE")
        .assert_stdout_contains("        locks t ROW EXCLUSIVE")
        .assert_stdout_contains("        locks parent SHARE ROW EXCLUSIVE, t SHARE ROW EXCLUSIVE");
    database_untouched(&db);
}

/// One file holding every kind, one statement a line: the plan shows each
/// statement that takes more than ROW EXCLUSIVE, on its line, in the mode
/// PostgreSQL takes for that statement alone; plain DML shows nothing.
#[test]
fn the_plan_shows_each_statements_lock_as_postgresql_takes_it() {
    let db = Cluster::shared().create_db();
    db.client().batch_execute(SETUP).unwrap();
    let script: String = KINDS.iter().map(|(_, sql)| format!("{sql};\n")).collect();
    let dir = MigrationDir::with(&[("V1__every_kind.sql", &script)]);
    let out = apply(&db, &dir).arg("--dry-run").run();
    out.assert_code(7);
    let json = out.json();
    let statements = json["pending"][0]["statements"]
        .as_array()
        .unwrap_or_else(|| panic!("no statements: {json:#}"));
    assert!(json["pending"][0].get("statements_omitted").is_none());
    // status says the same under the pending file, and exits 0 (before the
    // statements below run: a rolled-back INSERT still grows the table).
    let status = command(&db, "status", &dir).run();
    status.assert_success();
    assert_eq!(
        status.json()["pending"][0]["statements"],
        json["pending"][0]["statements"]
    );
    let text = Miglock::for_db(&db)
        .args(["apply", "--dry-run", "--migrations"])
        .arg(dir.path())
        .run();
    text.assert_code(7);
    let lines: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.starts_with("        line "))
        .collect();
    let mut shown = 0;
    for (i, (name, sql)) in KINDS.iter().enumerate() {
        let line = i + 1;
        let planned: BTreeMap<String, String> = statements
            .iter()
            .filter(|s| s["line"] == line)
            .map(|s| {
                assert_eq!(s["sql"], excerpt(sql), "{name}");
                let table = s["table"].as_str().unwrap().to_string();
                (table, s["mode"].as_str().unwrap().to_string())
            })
            .collect();
        let taken: BTreeMap<String, String> = taken(&db, sql)
            .into_iter()
            .filter(|(_, mode)| !weak(mode))
            .collect();
        assert_eq!(planned, taken, "{name}: planned, and what PostgreSQL took");
        // The text has the statement's line when, and only when, it takes
        // such a lock, with the mode.
        let label = format!("        line {line:<2}  {}  ", excerpt(sql));
        let shown_line = lines.iter().find(|l| l.starts_with(&label));
        if taken.is_empty() {
            assert!(shown_line.is_none(), "{name}: {}", text.stdout);
            continue;
        }
        shown += 1;
        let shown_line = shown_line.unwrap_or_else(|| panic!("{name}: {}", text.stdout));
        for mode in taken.values() {
            assert!(shown_line.contains(mode.as_str()), "{name}: {shown_line}");
        }
    }
    assert_eq!(lines.len(), shown, "{}", text.stdout);
    // Two tables in one statement: one entry each, one line of text.
    let fk = KINDS.iter().position(|(n, _)| *n == "foreign_key").unwrap() + 1;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("        line {fk}  "))
                && l.contains("  SHARE ROW EXCLUSIVE on parent and t, scans t (")),
        "{}",
        text.stdout
    );
    database_untouched(&db);
}

/// A file of many DDL statements among its data: the first 50 that lock a
/// table are shown, then how many more; its INSERTs are never listed.
#[test]
fn a_long_file_shows_its_first_statements_and_counts_the_rest() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute("CREATE TABLE t (id int, v text)")
        .unwrap();
    let mut script = String::new();
    for i in 0..57 {
        script.push_str(&format!(
            "INSERT INTO t VALUES ({i}, 'row {i}');\nCREATE INDEX t_{i} ON t (id) -- for report {i}\n;\n"
        ));
    }
    let dir = MigrationDir::with(&[("V1__many_indexes.sql", &script)]);
    let out = apply(&db, &dir).arg("--dry-run").run();
    out.assert_code(7);
    let json = out.json();
    let entry = &json["pending"][0];
    let statements = entry["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 50, "{entry:#}");
    assert_eq!(entry["statements_omitted"], 7);
    assert_eq!(statements[0]["line"], 2);
    assert_eq!(statements[0]["sql"], "CREATE INDEX t_0 ON t (id)");
    assert_eq!(statements[0]["mode"], "SHARE");
    assert_eq!(statements[0]["work"], "scan");
    assert!(statements[0]["bytes"].as_i64().unwrap() > 0, "{entry:#}");
    assert_eq!(statements[49]["line"], 149);
    let text = Miglock::for_db(&db)
        .args(["status", "--migrations"])
        .arg(dir.path())
        .run();
    text.assert_success()
        .assert_stdout_contains("\n      line 2    CREATE INDEX t_0 ON t (id)   SHARE, scans t (")
        .assert_stdout_contains("\n      line 149  CREATE INDEX t_49 ON t (id)  SHARE, scans t (")
        .assert_stdout_contains(
            "\n      … and 7 more such statements (the plan shows the first 50)\n",
        );
    assert!(!text.stdout.contains("INSERT"), "{}", text.stdout);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_indexes WHERE tablename = 't'"),
        0
    );
    assert_eq!(db.query_i64("SELECT count(*) FROM t"), 0);
    assert!(db.history().is_empty());
}
