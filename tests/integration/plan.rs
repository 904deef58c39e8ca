//! `apply --dry-run` shows, for each pending file, the tables it locks and
//! in what mode; each mode is the one PostgreSQL really takes, as
//! `pg_locks` shows it from the statement's own transaction.

use crate::cluster::Cluster;
use crate::harness::{apply, MigrationDir};

/// Statement kinds a migration holds, one file each, on table `t`.
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
];

#[test]
fn the_plan_names_each_tables_lock_as_postgresql_takes_it() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute("CREATE TABLE t (id int, v text)")
        .unwrap();
    let dir = MigrationDir::new();
    for (i, (name, sql)) in KINDS.iter().enumerate() {
        dir.file(&format!("V{}__{name}.sql", i + 1), &format!("{sql};\n"));
    }
    let out = apply(&db, &dir).arg("--dry-run").run();
    out.assert_code(7);
    let json = out.json();
    let pending = json["pending"].as_array().unwrap();
    assert_eq!(pending.len(), KINDS.len());
    for (entry, (name, sql)) in pending.iter().zip(KINDS) {
        let planned = entry["locks"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no locks in {entry}"));
        assert_eq!(planned.len(), 1, "{name}: {entry}");
        assert_eq!(planned[0]["table"], "t", "{name}");
        let planned = planned[0]["mode"].as_str().unwrap();
        // What PostgreSQL takes: the strongest mode on t held by the
        // statement's own transaction, rolled back.
        let mut client = db.client();
        let mut tx = client.transaction().unwrap();
        // Its oid first: a DROP TABLE leaves no name to look up.
        let oid: u32 = tx
            .query_one("SELECT 't'::regclass::oid", &[])
            .unwrap()
            .get(0);
        tx.batch_execute(sql).unwrap();
        let taken: Vec<String> = tx
            .query(
                "SELECT mode FROM pg_locks WHERE locktype = 'relation' AND pid = pg_backend_pid() \
                 AND relation = $1",
                &[&oid],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.rollback().unwrap();
        let strongest = [
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
        .find(|mode| taken.iter().any(|t| t == mode))
        .unwrap_or_else(|| panic!("{name}: no lock on t: {taken:?}"));
        let as_sql =
            strongest
                .trim_end_matches("Lock")
                .chars()
                .fold(String::new(), |mut acc, c| {
                    if c.is_ascii_uppercase() && !acc.is_empty() {
                        acc.push(' ');
                    }
                    acc.push(c.to_ascii_uppercase());
                    acc
                });
        assert_eq!(
            planned, as_sql,
            "{name}: planned {planned}, PostgreSQL took {strongest}"
        );
    }
    // The text plan says the same under each file.
    let out = crate::harness::Miglock::for_db(&db)
        .args(["apply", "--dry-run", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(7)
        .assert_stdout_contains("apply V1__add_column")
        .assert_stdout_contains("        locks t ACCESS EXCLUSIVE")
        .assert_stdout_contains("        locks t ROW EXCLUSIVE");
    assert!(db.table_exists("t"), "--dry-run changed nothing");
}
