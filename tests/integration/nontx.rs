//! `--set search_path` naming no schema (to be moved to its story).

use crate::cluster::{Cluster, TestDb};
use crate::harness::{Miglock, MigrationDir};

fn apply(db: &TestDb, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

#[test]
fn a_search_path_without_a_schema_names_the_fix() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file("V1__t.sql", "CREATE TABLE public.t (a int);\n");
    let out = apply(&db, &dir)
        .args(["--set", "search_path=nowhere"])
        .run();
    out.assert_code(2)
        .assert_stderr_contains("selects no existing schema")
        .assert_stderr_contains("--table schema.table");
}
