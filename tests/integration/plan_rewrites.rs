//! `apply --dry-run` says which tables a pending file rewrites or scans,
//! statement by statement, with their size from the catalog; each claim
//! held against what PostgreSQL does: a rewrite gives the table a new file
//! (`pg_relation_filenode` changes), anything else keeps it.

use crate::cluster::Cluster;
use crate::harness::Miglock;
use crate::plan::dry_run_each;

/// A statement on `t`, and what the plan says it does to t's rows.
const KINDS: &[(&str, &str, Option<&str>)] = &[
    ("add_column", "ALTER TABLE t ADD COLUMN c int", None),
    (
        "constant_default",
        "ALTER TABLE t ADD COLUMN d int DEFAULT 0",
        None,
    ),
    (
        "volatile_default",
        "ALTER TABLE t ADD COLUMN e float8 DEFAULT random()",
        Some("rewrite"),
    ),
    (
        "serial",
        "ALTER TABLE t ADD COLUMN f bigserial",
        Some("rewrite"),
    ),
    (
        "type_change",
        "ALTER TABLE t ALTER COLUMN id TYPE bigint",
        Some("rewrite"),
    ),
    // varchar(10) to varchar(20) coerces as binary: no rewrite, which the
    // words alone cannot know.
    (
        "widen",
        "ALTER TABLE t ALTER COLUMN v TYPE varchar(20)",
        Some("may_rewrite"),
    ),
    (
        "set_not_null",
        "ALTER TABLE t ALTER COLUMN id SET NOT NULL",
        Some("scan"),
    ),
    (
        "check",
        "ALTER TABLE t ADD CONSTRAINT t_pos CHECK (id >= 0)",
        Some("scan"),
    ),
    (
        "check_not_valid",
        "ALTER TABLE t ADD CONSTRAINT t_pos CHECK (id >= 0) NOT VALID",
        None,
    ),
    ("index", "CREATE INDEX t_v ON t (v)", Some("scan")),
    ("cluster", "CLUSTER t USING t_id", Some("rewrite")),
    ("unlogged", "ALTER TABLE t SET UNLOGGED", Some("rewrite")),
];

#[test]
fn the_plan_says_which_tables_are_rewritten_or_scanned_as_postgresql_does_it() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute(
            "CREATE TABLE t (id int, v varchar(10)); CREATE INDEX t_id ON t (id); \
             INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 1000) i; ANALYZE t;",
        )
        .unwrap();
    let (dir, pending) = dry_run_each(&db, KINDS.iter().map(|(name, sql, _)| (*name, *sql)));
    for (entry, (name, sql, claim)) in pending.iter().zip(KINDS) {
        let lock = &entry["locks"][0];
        assert_eq!(lock["table"], "t", "{name}: {entry}");
        assert_eq!(lock["work"].as_str(), *claim, "{name}: {entry}");
        if claim.is_some() {
            // The catalog's figures: the table with its index, 1000 rows.
            assert!(lock["bytes"].as_i64().unwrap() > 16384, "{name}: {entry}");
            assert_eq!(lock["rows"], 1000, "{name}: {entry}");
        } else {
            assert!(lock.get("bytes").is_none(), "{name}: {entry}");
        }
        // The statement says the same, with its line and text.
        let statements = entry["statements"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{name}: {entry}");
        let statement = &statements[0];
        assert_eq!(statement["line"], 1, "{name}");
        let text = statement["sql"].as_str().unwrap();
        assert!(
            sql.starts_with(text.trim_end_matches('…')),
            "{name}: {text}"
        );
        for field in ["table", "mode", "work", "bytes", "rows"] {
            assert_eq!(statement.get(field), lock.get(field), "{name}: {field}");
        }
        // What PostgreSQL does, in a transaction rolled back.
        let mut client = db.client();
        let mut tx = client.transaction().unwrap();
        let filenode = |tx: &mut postgres::Transaction| -> u32 {
            tx.query_one("SELECT pg_relation_filenode('t')", &[])
                .unwrap()
                .get(0)
        };
        let before = filenode(&mut tx);
        tx.batch_execute(sql).unwrap();
        let rewritten = filenode(&mut tx) != before;
        tx.rollback().unwrap();
        assert_eq!(rewritten, *claim == Some("rewrite"), "{name}: {sql}");
    }
    // The text plan says it on the statement's line, with the size.
    let text = Miglock::for_db(&db)
        .args(["apply", "--dry-run", "--migrations"])
        .arg(dir.path())
        .run();
    text.assert_code(7);
    for (entry, (name, _, claim)) in pending.iter().zip(KINDS) {
        let statement = &entry["statements"][0];
        let start = format!(
            "        line 1  {}  {}",
            statement["sql"].as_str().unwrap(),
            statement["mode"].as_str().unwrap()
        );
        let line = text
            .stdout
            .lines()
            .find(|line| line.starts_with(&start))
            .unwrap_or_else(|| panic!("{name}: {start}\n{}", text.stdout));
        let cost = &line[start.len()..];
        match claim {
            Some(work) => {
                let verb = match *work {
                    "rewrite" => "rewrites",
                    "may_rewrite" => "may rewrite",
                    _ => "scans",
                };
                assert!(
                    cost.starts_with(&format!(", {verb} t (")) && cost.ends_with(", ~1.0 k rows)"),
                    "{name}: {line}"
                );
            }
            None => assert_eq!(cost, " on t", "{name}: {line}"),
        }
    }
    assert!(db.column_exists("t", "v") && !db.column_exists("t", "c"));
    assert!(db.history().is_empty(), "--dry-run changed nothing");
}
