//! Files written for psql: meta-commands (`\set`, `\i`, `\connect`,
//! `\gset`…) are psql's own, and PostgreSQL refuses them. miglock refuses
//! them before anything runs, each on its line, and reads the statements
//! around them as themselves.

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{apply, command, Miglock, MigrationDir};

/// A pending file as a psql user writes it: its meta-commands, and a
/// `BEGIN` right after one (which used to be read as part of it).
const PSQL_FILE: &str = "\\set ON_ERROR_STOP on\n\
                         CREATE TABLE psql_t (id int);\n\
                         \\i more.sql\n\
                         SELECT count(*) AS n FROM psql_t \\gset\n\
                         BEGIN;\n\
                         \\connect app_elsewhere\n";

/// `(kind, line)` of each problem, in order.
fn kinds_and_lines(json: &Value) -> Vec<(String, i64)> {
    json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {json:#}"))
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["line"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn psql_meta_commands_are_refused_each_on_its_line_before_anything_runs() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__create_t.sql", "CREATE TABLE t (id int);\n"),
        ("V2__psql.sql", PSQL_FILE),
    ]);
    let expected: Vec<(String, i64)> = [
        ("psql_meta_command", 1),
        ("psql_meta_command", 3),
        ("psql_meta_command", 4),
        ("transaction_control", 5),
        ("psql_meta_command", 6),
    ]
    .iter()
    .map(|(k, l)| (k.to_string(), *l))
    .collect();

    let out = apply(&db, &dir).run();
    out.assert_code(6);
    let json = out.json();
    assert_eq!(json["outcome"], "invalid", "{json:#}");
    assert_eq!(kinds_and_lines(&json), expected, "{json:#}");
    let messages: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert!(
        messages[0].contains("V2__psql.sql: line 1: `\\set` is a psql meta-command"),
        "{messages:#?}"
    );
    assert!(messages[1].contains("reads another file"), "{messages:#?}");
    assert!(messages[2].contains("DO block"), "{messages:#?}");
    assert!(
        messages[4].contains("`\\connect`") && !messages[4].contains("app_elsewhere"),
        "the arguments stay out of the message: {messages:#?}"
    );

    let text = Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run();
    text.assert_code(6)
        .assert_stderr_contains("the migration set is unsafe to run (5 problems)")
        .assert_stderr_contains("line 4: `\\gset` is a psql meta-command");

    let status = command(&db, "status", &dir).arg("--check").run();
    status.assert_code(6);
    assert_eq!(kinds_and_lines(&status.json()), expected);

    // Nothing ran, not even V1.
    assert!(!db.table_exists("refinery_schema_history"));
    assert!(!db.table_exists("t") && !db.table_exists("psql_t"));
}

/// A file already applied is not read again: a meta-command in it (say,
/// from a history that refinery or a baseline wrote) stops nothing.
#[test]
fn an_applied_file_with_a_meta_command_is_not_looked_at_again() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        (
            "V1__old.sql",
            "\\echo made by hand\nCREATE TABLE t (id int);\n",
        ),
        ("V2__add_note.sql", "ALTER TABLE t ADD COLUMN note text;\n"),
    ]);
    db.client()
        .batch_execute("CREATE TABLE t (id int)")
        .unwrap();
    command(&db, "baseline", &dir)
        .args(["--baseline-version", "1"])
        .run()
        .assert_success();
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1, 2]);
    assert!(db.column_exists("t", "note"));
}
