//! Real-world migration files: statements PostgreSQL refuses in a
//! transaction, transaction control, pg_dump's header, and the corpus under
//! `tests/corpus/` applied by miglock and by psql and compared.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use postgres::SimpleQueryMessage;
use proptest::prelude::*;

use miglock::testing::split;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{versions, Miglock, MigrationDir};

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
fn a_plain_create_index_concurrently_file_applies_without_a_marker() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file("V1__t.sql", "CREATE TABLE t (a int);\n").file(
        "V2__index.sql",
        "-- an index built without blocking writes\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    );
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
    let dir = MigrationDir::new();
    dir.file(
        "V1__mixed.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    )
    .file(
        "V2__marked.sql",
        "-- miglock:no-transaction\nBEGIN;\nINSERT INTO t VALUES (2);\nCOMMIT;\nVACUUM t;\n",
    );
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
    let dir = MigrationDir::new();
    dir.file("V1__t.sql", "CREATE TABLE t (a int);\n").file(
        "V2__stray.sql",
        "INSERT INTO t VALUES (1);\n-- done\nCOMMIT;\nINSERT INTO t VALUES (2);\n",
    );
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
    let dir = MigrationDir::new();
    dir.file(
        "V1__proc.sql",
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$;\n",
    );
    apply(&db, &dir).run().assert_success();
}

#[test]
fn copy_from_stdin_is_refused_up_front() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__copy.sql",
        "CREATE TABLE t (a int);\nCOPY t (a) FROM stdin;\n1\n\\.\n",
    );
    let out = apply(&db, &dir).run();
    out.assert_code(6);
    assert_eq!(out.json()["problems"][0]["kind"], "unsupported");
    assert!(!db.table_exists("t"));
}

#[test]
fn a_failed_concurrent_index_leaves_no_invalid_index_and_names_its_statement() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__t.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (1);\n",
    )
    .file(
        "V2__unique.sql",
        "CREATE TABLE u (b int);\n\nCREATE UNIQUE INDEX CONCURRENTLY t_a_unique\n  ON t (a);\nCREATE TABLE v (c int);\n",
    );
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

#[test]
fn a_pg_dump_header_applies_and_leaks_nothing_into_the_next_migration() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__dump.sql",
        "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n\
         SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
         SELECT pg_catalog.set_config('search_path', '', false);\nSET check_function_bodies = false;\n\
         SET xmloption = content;\nSET client_min_messages = warning;\nSET row_security = off;\n\
         CREATE TABLE public.dumped (a integer);\n",
    )
    .file(
        "V2__after.sql",
        // Unqualified: needs the session's own search_path back.
        "CREATE TABLE after_dump (a int);\nINSERT INTO after_dump SELECT current_setting('row_security')::bool::int;\n",
    );
    apply(&db, &dir)
        .arg("--statement-timeout")
        .arg("1h")
        .run()
        .assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert!(db.table_exists("after_dump"));
    assert_eq!(db.query_i64("SELECT a FROM public.after_dump"), 1);
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

// -------------------------------------------------------------------------
// The corpus: miglock and psql give the same schema.
// -------------------------------------------------------------------------

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn schema_dump(db: &TestDb) -> String {
    let cluster = db.cluster();
    let out = Command::new(cluster.bindir().join("pg_dump"))
        .args([
            "--schema-only",
            "--no-owner",
            "--exclude-table=refinery_schema_history",
        ])
        .arg("-d")
        .arg(db.url())
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_corpus_applies_as_psql_applies_it() {
    let cluster = Cluster::shared();
    let by_miglock = cluster.create_db();
    let by_psql = cluster.create_db();
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        name[1..name.find("__").unwrap()].parse::<i32>().unwrap()
    });
    assert!(files.len() >= 8, "corpus: {files:?}");
    let out = Miglock::for_db(&by_miglock)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(corpus_dir())
        .run();
    out.assert_success();
    assert_eq!(versions(&out.json()["applied"]).len(), files.len());
    for file in &files {
        let out = Command::new(cluster.bindir().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(file)
            .arg(by_psql.url())
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (a, b) = (schema_dump(&by_miglock), schema_dump(&by_psql));
    assert!(a.contains("CREATE TABLE"), "{a}");
    assert_eq!(a, b);
}

// -------------------------------------------------------------------------
// The splitter against the server's own parser.
// -------------------------------------------------------------------------

/// Pieces of SQL text that hold `;` and quotes in every way the lexer
/// knows; each is a complete expression.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'a;b'".to_string()),
        Just("'it''s; ok'".to_string()),
        Just("E'\\';x'".to_string()),
        Just("e'\\n;\\t'".to_string()),
        Just("'back\\'".to_string()),
        Just("U&'d\\0061t;a'".to_string()),
        Just("$$ ; $ $x$ ' \" $$".to_string()),
        Just("$body$ $$ ; ' $body$".to_string()),
        Just("$a_1$ ;; $a_1$".to_string()),
        Just("(SELECT 1 AS \"semi;colon\")".to_string()),
        Just("(SELECT 2 AS \"q\"\"q;\")".to_string()),
        Just("1e2".to_string()),
        Just("x'1f'".to_string()),
        Just("(1 /* c; /* nested; */ c; */ + 2)".to_string()),
        Just("3 -- a comment; here\n".to_string()),
        Just("CASE WHEN true THEN 'x;' END".to_string()),
        "[a-z;' ]{0,6}".prop_map(|s| format!("$q${s}$q$")),
        "[a-z;]{0,6}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
    ]
}

/// A statement built from pieces: a SELECT, a DO block, a function with a
/// `$$` body, a SQL-standard function body, or nothing (`;;`).
fn statement() -> impl Strategy<Value = String> {
    let pieces = || proptest::collection::vec(piece(), 1..4);
    prop_oneof![
        4 => pieces().prop_map(|p| format!("SELECT {}", p.join(", "))),
        1 => pieces().prop_map(|p| format!(
            "DO $do$ BEGIN PERFORM {}; END $do$", p.join(", ")
        )),
        1 => (0u32..1000, pieces()).prop_map(|(n, p)| format!(
            "CREATE OR REPLACE FUNCTION f{n}_{}() RETURNS void LANGUAGE plpgsql AS $fn$ BEGIN PERFORM {}; END $fn$",
            p.len(),
            p.join(", ")
        )),
        1 => (0u32..1000, pieces()).prop_map(|(n, p)| format!(
            "CREATE OR REPLACE FUNCTION g{n}() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1 WHERE {} IS NOT NULL;\n  SELECT CASE WHEN true THEN 2 END;\nEND",
            p[0]
        )),
        1 => Just(String::new()),
        1 => Just("/* only a comment; */".to_string()),
    ]
}

/// How many statements the server ran: its CommandComplete messages for
/// the whole text sent as one query. A final `SELECT 0` keeps a text of
/// only comments from being an empty query (whose EmptyQueryResponse the
/// client reports as a CommandComplete too).
fn server_count(client: &mut postgres::Client, sql: &str) -> Result<usize, postgres::Error> {
    client.batch_execute("BEGIN")?;
    let messages = client.simple_query(&format!("{sql}\nSELECT 0"));
    client.batch_execute("ROLLBACK")?;
    Ok(messages?
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count()
        - 1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The split has as many statements as the server parses in the whole
    /// file, and each piece runs on its own.
    #[test]
    fn the_split_agrees_with_the_server(
        statements in proptest::collection::vec(statement(), 1..6),
        separators in proptest::collection::vec(
            prop_oneof![Just(";\n"), Just(";"), Just(" ;\n\n-- c;\n"), Just(";;")], 6)
    ) {
        let mut file = String::new();
        for (i, s) in statements.iter().enumerate() {
            file.push_str(s);
            file.push_str(separators[i]);
        }
        let db = shared_db();
        let mut client = db.client();
        let expected = server_count(&mut client, &file)
            .unwrap_or_else(|e| panic!("the server refused {file:?}: {e}"));
        let split = split::split(&file);
        prop_assert_eq!(split.len(), expected, "{:?} split as {:#?}", file, split);
        client.batch_execute("BEGIN").unwrap();
        for s in &split {
            let sent = client.simple_query(s.sql);
            prop_assert!(sent.is_ok(), "{:?} alone: {:?}", s.sql, sent.err());
            let complete = sent.unwrap().iter().filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))).count();
            prop_assert_eq!(complete, 1, "{:?} is not one statement", s.sql);
        }
        client.batch_execute("ROLLBACK").unwrap();
    }
}

/// One database for every case of the property (each case rolls back).
fn shared_db() -> &'static TestDb<'static> {
    static DB: std::sync::OnceLock<TestDb<'static>> = std::sync::OnceLock::new();
    DB.get_or_init(|| Cluster::shared().create_db())
}
