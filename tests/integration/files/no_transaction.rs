//! Files that do not run in one transaction: statements PostgreSQL
//! refuses in a transaction block (`CREATE INDEX CONCURRENTLY`, …), the
//! `-- miglock:no-transaction` marker, and transaction control or `COPY …
//! FROM stdin` refused up front in files that do.

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, Miglock, MigrationDir};

fn invalid_indexes(db: &TestDb) -> i64 {
    db.query_i64("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
}

#[test]
fn a_plain_create_index_concurrently_file_applies_without_a_marker() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (a int);\n"),
        (
            "V2__index.sql",
            "-- an index built without blocking writes\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
        ),
    ]);
    let out = Miglock::for_db(&db)
        .args(["status", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stdout_contains("V2__index  (no transaction: create_index_concurrently)");
    let out = apply(&db, &dir).arg("--dry-run").run();
    out.assert_code(7);
    assert_eq!(out.json()["pending"][1]["transaction"], false);
    assert!(out.json()["pending"][0].get("transaction").is_none());

    let out = apply(&db, &dir).run();
    out.assert_success().assert_stderr_contains(
        "MIGRATION_NO_TRANSACTION version=2 name=index reason=create_index_concurrently",
    );
    assert_eq!(out.json()["applied"][1]["transaction"], false);
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM pg_index WHERE indexrelid = 't_a'::regclass AND indisvalid"
        ),
        1
    );
    let out = Miglock::for_db(&db)
        .args(["status", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    assert_eq!(out.json()["applied"][1]["transaction"], false);
}

#[test]
fn a_mixed_file_and_a_marked_file_run_statement_by_statement() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        (
            "V1__mixed.sql",
            "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
        ),
        (
            "V2__marked.sql",
            "-- miglock:no-transaction\nBEGIN;\nINSERT INTO t VALUES (2);\nCOMMIT;\nVACUUM t;\n",
        ),
    ]);
    let out = apply(&db, &dir).run();
    out.assert_success()
        .assert_stderr_contains(
            "MIGRATION_NO_TRANSACTION version=1 name=mixed reason=create_index_concurrently mixed=true",
        )
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=2 name=marked reason=marker");
    assert_eq!(db.query_i64("SELECT sum(a) FROM t"), 3);
}

#[test]
fn a_stray_commit_in_a_transactional_file_is_refused_before_anything_runs() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (a int);\n"),
        (
            "V2__stray.sql",
            "INSERT INTO t VALUES (1);\n-- done\nCOMMIT;\nINSERT INTO t VALUES (2);\n",
        ),
    ]);
    let out = apply(&db, &dir).run();
    out.assert_code(6)
        .assert_stderr_contains("line 3: COMMIT controls the transaction")
        .assert_stderr_contains("-- miglock:no-transaction");
    let json = out.json();
    assert_eq!(json["problems"][0]["kind"], "transaction_control");
    assert_eq!(json["problems"][0]["line"], 3);
    assert!(json["problems"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("V2__stray.sql"));
    assert!(!db.table_exists("t"), "nothing may run");
    assert!(!db.table_exists("refinery_schema_history"));
    Miglock::for_db(&db)
        .args(["status", "--check", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_code(6)
        .assert_stdout_contains("transaction_control");
    // A function body's COMMIT (a procedure) is no transaction control of
    // the file's.
    let dir = MigrationDir::with(&[(
        "V1__proc.sql",
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$;\n",
    )]);
    apply(&db, &dir).run().assert_success();
}

#[test]
fn a_migration_that_ends_its_own_transaction_is_refused_before_anything_runs() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (id int);\n"),
        (
            "V2__rolls_back.sql",
            "CREATE TABLE lost (id int);\nROLLBACK;\n",
        ),
    ]);
    let out = apply(&db, &dir).run();
    out.assert_code(6)
        .assert_stderr_contains("line 2: ROLLBACK controls the transaction");
    assert_eq!(out.json()["problems"][0]["kind"], "transaction_control");
    assert!(!db.table_exists("t"), "nothing runs");
    assert!(!db.table_exists("lost"));
    assert!(!db.table_exists("refinery_schema_history"));
}

#[test]
fn copy_from_stdin_is_refused_up_front() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[(
        "V1__copy.sql",
        "CREATE TABLE t (a int);\nCOPY t (a) FROM stdin;\n1\n\\.\n",
    )]);
    let out = apply(&db, &dir).run();
    out.assert_code(6);
    assert_eq!(out.json()["problems"][0]["kind"], "unsupported");
    assert!(!db.table_exists("t"));
}

#[test]
fn a_failed_concurrent_index_leaves_no_invalid_index_and_names_its_statement() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (1);\n"),
        (
            "V2__unique.sql",
            "CREATE TABLE u (b int);\n\nCREATE UNIQUE INDEX CONCURRENTLY t_a_unique\n  ON t (a);\nCREATE TABLE v (c int);\n",
        ),
    ]);
    let out = apply(&db, &dir).run();
    out.assert_code(1)
        .assert_stderr_contains("failed at statement 2 of 3")
        .assert_stderr_contains("line 3")
        .assert_stderr_contains("statement 1 of 3 committed; nothing after")
        .assert_stderr_contains("INVALID_INDEX_DROPPED name=public.t_a_unique");
    let json = out.json();
    assert_eq!(json["error"]["sqlstate"], "23505");
    assert_eq!(json["error"]["line"], 3);
    assert_eq!(invalid_indexes(&db), 0);
    assert_eq!(db.history(), [1]);
    assert!(db.table_exists("u"));
    assert!(!db.table_exists("v"));
    // Fixed, and written to be re-runnable: the next apply succeeds.
    db.client()
        .batch_execute("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
        .unwrap();
    dir.file(
        "V2__unique.sql",
        "CREATE TABLE IF NOT EXISTS u (b int);\n\nCREATE UNIQUE INDEX CONCURRENTLY t_a_unique\n  ON t (a);\nCREATE TABLE v (c int);\n",
    );
    apply(&db, &dir).run().assert_success();
    assert_eq!(db.history(), [1, 2]);
}
