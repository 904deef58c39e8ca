//! Files without a transaction and `--set search_path` (to be moved to
//! their stories).

use std::time::Duration;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{Miglock, MigrationDir};

fn apply(db: &TestDb, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

fn invalid_indexes(db: &TestDb) -> i64 {
    db.query_i64("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
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

#[test]
fn a_non_transactional_statement_is_retried_after_a_ddl_lock_timeout() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file("V1__t.sql", "CREATE TABLE t (a int);\n")
        .file("V2__index.sql", "CREATE INDEX CONCURRENTLY t_a ON t (a);\n");
    apply(&db, &dir)
        .arg("--target")
        .arg("1")
        .run()
        .assert_success();
    let mut blocker = db.client();
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut run = apply(&db, &dir);
    run.args(["--ddl-lock-timeout", "100ms", "--ddl-retries", "50"]);
    let mut child = run.spawn_watched();
    child.wait_for_stderr(
        "MIGRATION_RETRY version=2 name=index statement=1 attempt=1/50 reason=lock_timeout",
        Duration::from_secs(30),
    );
    blocker.batch_execute("COMMIT").unwrap();
    child.finish().assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(invalid_indexes(&db), 0);
    // lock_timeout went back to the session's own after the migration:
    // nothing to observe from outside but the row, and no invalid index.
}
