//! Migration files as they come from real projects: other tools' names,
//! editors' byte-order marks, CRLF line ends and swap files, stray NUL
//! bytes, a last line without its semicolon, pg_dump's header.

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, Miglock, MigrationDir};

fn problems(json: &Value) -> &Vec<Value> {
    json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list in {json:#}"))
}

/// The problem about the file whose path ends in `file`.
#[track_caller]
fn problem_for<'j>(json: &'j Value, file: &str) -> &'j Value {
    problems(json)
        .iter()
        .find(|p| p["file"].as_str().is_some_and(|f| f.ends_with(file)))
        .unwrap_or_else(|| panic!("no problem for {file} in {json:#}"))
}

#[track_caller]
fn assert_nothing_applied(db: &TestDb) {
    assert!(
        !db.table_exists("refinery_schema_history"),
        "the history table was created"
    );
    assert!(!db.table_exists("t"), "a migration ran");
}

#[test]
fn every_reason_a_name_fails_is_given_in_one_run_with_one_flyway_hint() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__ok.sql", "CREATE TABLE t (id int);"),
        ("V1.0.10__add-users.sql", "SELECT 1;"),
        ("V2_1__x.sql", "SELECT 1;"),
        ("R__views.sql", "SELECT 1;"),
        ("U3__undo.sql", "SELECT 1;"),
        ("V99999999999__big-one.sql", "SELECT 1;"),
    ]);

    // Read as refinery's: `auto` reads a dotted version as Flyway's.
    let text = Miglock::for_db(&db)
        .args(["apply", "--layout", "refinery", "--migrations"])
        .arg(dir.path())
        .run();
    text.assert_code(6)
        .assert_stderr_contains("the migration set is unsafe to run (5 problems)");
    let hint = "some names look like Flyway's";
    assert_eq!(text.stderr.matches(hint).count(), 1, "{}", text.stderr);
    assert!(text.stderr.contains("V1.0.10 → V10010"), "{}", text.stderr);

    let out = apply(&db, &dir).args(["--layout", "refinery"]).run();
    out.assert_code(6);
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(problems(&json).len(), 5, "{json:#}");
    assert!(problems(&json).iter().all(|p| p["kind"] == "misnamed"));
    let message = |file| {
        problem_for(&json, file)["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The three rounds of renaming the issue describes, now in one message.
    let dotted = message("V1.0.10__add-users.sql");
    assert!(
        dotted.contains("\"1.0.10\" is not a whole number"),
        "{dotted}"
    );
    assert!(dotted.contains("the name contains '-'"), "{dotted}");
    let big = message("V99999999999__big-one.sql");
    assert!(big.contains("too large") && big.contains("'-'"), "{big}");
    assert!(message("R__views.sql").contains("repeatable (R__) migrations are not supported"));
    assert!(message("U3__undo.sql").contains("unversioned (U) migrations are not supported"));
    let error = json["error"]["message"].as_str().unwrap();
    assert_eq!(error.matches(hint).count(), 1, "{error}");
    assert_nothing_applied(&db);
}

#[test]
fn a_byte_order_mark_is_applied_without_it_and_checksummed_with_it() {
    let db = Cluster::shared().create_db();
    let text = "\u{feff}CREATE TABLE t (id int);\r\nINSERT INTO t VALUES (1);\r\n";
    let dir = MigrationDir::with(&[("V1__bom.sql", text)]);

    let out = apply(&db, &dir).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.query_i64("SELECT count(*) FROM t"), 1);
    let rows = db.query_strings("SELECT checksum FROM refinery_schema_history WHERE version = 1");
    let theirs = refinery::Migration::unapplied("V1__bom", text).unwrap();
    assert_eq!(
        rows[0][0].as_deref(),
        Some(theirs.checksum().to_string().as_str())
    );
    // The file as it is matches what was applied: current, not divergent.
    apply(&db, &dir).run().assert_success();

    // An error's line is counted in the file, the mark taking no line.
    dir.file(
        "V2__bad.sql",
        "\u{feff}SELECT 1;\nSELECT 2;\nSELECT nosuch;\n",
    );
    let out = apply(&db, &dir).run();
    out.assert_code(1);
    let json = out.json();
    assert_eq!(json["error"]["line"], 3, "{json:#}");
    assert_eq!(db.history(), [1]);
}

#[test]
fn a_nul_byte_is_a_problem_for_apply_dry_run_and_status() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file("V1__ok.sql", "CREATE TABLE t (id int);")
        .bytes("V2__nul.sql", b"SELECT 1;\nSELECT 'a\0b';\n");
    let reason = "contains a NUL byte (line 2, offset 19)";
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = apply(&db, &dir).args(extra).run();
        out.assert_code(6);
        let json = out.json();
        assert_eq!(json["outcome"], "invalid", "{extra:?}");
        assert_eq!(problems(&json).len(), 1, "{json:#}");
        let problem = problem_for(&json, "V2__nul.sql");
        assert_eq!(problem["kind"], "unreadable");
        assert_eq!(problem["version"], 2);
        assert!(
            problem["message"].as_str().unwrap().contains(reason),
            "{json:#}"
        );
        assert_nothing_applied(&db);
    }
    let text = Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run();
    text.assert_code(6).assert_stderr_contains(reason);

    let status = Miglock::for_db(&db)
        .args(["status", "--check", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    status.assert_code(6);
    let json = status.json();
    assert_eq!(problem_for(&json, "V2__nul.sql")["kind"], "unreadable");
    let status = Miglock::for_db(&db)
        .args(["status", "--check", "--migrations"])
        .arg(dir.path())
        .run();
    status.assert_code(6).assert_stdout_contains(reason);
    assert_nothing_applied(&db);
}

#[test]
fn a_last_line_comment_or_missing_semicolon_does_not_swallow_the_history_row() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__no_semicolon.sql", "CREATE TABLE a (id int)"),
        (
            "V2__trailing_comment.sql",
            "CREATE TABLE b (id int); -- done",
        ),
        ("V3__crlf.sql", "CREATE TABLE c (id int);\r\n-- windows\r\n"),
    ]);
    apply(&db, &dir).run().assert_success();
    assert_eq!(db.history(), [1, 2, 3]);
    assert!(db.table_exists("a") && db.table_exists("b") && db.table_exists("c"));
}

#[test]
fn hidden_files_in_the_migrations_folder_are_ignored() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[("V1__create_t.sql", "CREATE TABLE t (id int);\n")]);
    dir.file(".V1__create_t.sql.swp", "\u{0}binary swap junk")
        .file(".V2__draft.sql", "CREATE TABLE draft (id int);\n")
        .file(
            "sub/.V3__also_hidden.sql",
            "CREATE TABLE hidden (id int);\n",
        );
    // Emacs' lock file: a dangling symbolic link.
    std::os::unix::fs::symlink("me@host.4242:1700000000", dir.path().join(".#V8__x.sql")).unwrap();
    let out = apply(&db, &dir).arg("-v").run();
    out.assert_success()
        .assert_stderr_contains("ignoring hidden file")
        .assert_stderr_contains(".#V8__x.sql");
    assert_eq!(db.history(), [1]);
    assert!(!db.table_exists("draft"));
    assert!(!db.table_exists("hidden"));
    // Not worth a line at the default level.
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert!(!out.stderr.contains("hidden"), "{}", out.stderr);
    Miglock::for_db(&db)
        .args(["status", "--check", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_success();
    // A visible misnamed file still makes the set invalid.
    dir.file("v2__lower_case.sql", "SELECT 1;\n");
    apply(&db, &dir).run().assert_code(6);
}

#[test]
fn a_pg_dump_header_applies_and_leaks_nothing_into_the_next_migration() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        (
            "V1__dump.sql",
        "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n\
         SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
         SELECT pg_catalog.set_config('search_path', '', false);\nSET check_function_bodies = false;\n\
         SET xmloption = content;\nSET client_min_messages = warning;\nSET row_security = off;\n\
         CREATE TABLE public.dumped (a integer);\n",
        ),
        (
            "V2__after.sql",
            // Unqualified: needs the session's own search_path back.
            "CREATE TABLE after_dump (a int);\nINSERT INTO after_dump SELECT current_setting('row_security')::bool::int;\n",
        ),
    ]);
    apply(&db, &dir)
        .arg("--statement-timeout")
        .arg("1h")
        .run()
        .assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert!(db.table_exists("after_dump"));
    assert_eq!(db.query_i64("SELECT a FROM public.after_dump"), 1);
}

/// A goose or dbmate file renamed to `V<n>__…` keeps its Down section, a
/// comment to PostgreSQL: run whole, it would drop what its Up section
/// made, and record the file as applied. Refused before anything runs, in
/// `--dry-run` and `--target` runs too; `-- +goose Up` and the statement
/// annotations alone are harmless and run.
#[test]
fn another_tools_down_section_is_refused_before_anything_runs() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        (
            "V1__create_t.sql",
            "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE t (id int);\n\
             -- +goose StatementEnd\n\n-- +goose Down\nDROP TABLE t;\n",
        ),
        (
            "V2__add_note.sql",
            "-- migrate:up\nALTER TABLE t ADD COLUMN note text;\n\n-- migrate:down\n\
             ALTER TABLE t DROP COLUMN note;\n",
        ),
    ]);
    // With --target 1 only V1 is pending, and only pending files are read
    // for what they hold.
    for (extra, files) in [
        (
            &[][..],
            &[("V1__create_t.sql", 6), ("V2__add_note.sql", 4)][..],
        ),
        (&["--target", "1"], &[("V1__create_t.sql", 6)]),
        (
            &["--dry-run"],
            &[("V1__create_t.sql", 6), ("V2__add_note.sql", 4)],
        ),
    ] {
        let out = apply(&db, &dir).args(extra).run();
        out.assert_code(6).assert_stderr_contains(
            "line 6: -- +goose Down starts goose's Down section, which miglock would run",
        );
        let json = out.json();
        assert_eq!(problems(&json).len(), files.len(), "{json:#}");
        for (file, line) in files {
            let problem = problem_for(&json, file);
            assert_eq!(problem["kind"], "down_section", "{problem}");
            assert_eq!(problem["line"], *line, "{problem}");
        }
        if files.len() == 2 {
            out.assert_stderr_contains("line 4: -- migrate:down starts dbmate's Down section");
        }
        assert_nothing_applied(&db);
    }

    // Without its Down section the same file runs, its annotations as comments.
    dir.file(
        "V1__create_t.sql",
        "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE t (id int);\n-- +goose StatementEnd\n",
    )
    .remove("V2__add_note.sql");
    apply(&db, &dir).run().assert_success();
    assert!(db.table_exists("t"));
}

/// A folder of goose, dbmate, sqlx or golang-migrate names read as
/// refinery's (`--layout refinery`) gets one hint on the layout that reads
/// it as it is, and on what converting it takes, from `apply` and from
/// `status`.
#[test]
fn other_tools_names_get_one_hint_on_converting_them() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("00001_create_t.sql", "CREATE TABLE t (id int);"),
        (
            "20210425153745_add_note.sql",
            "ALTER TABLE t ADD COLUMN note text;",
        ),
        ("0003_index.up.sql", "CREATE INDEX t_id ON t (id);"),
        ("0003_index.down.sql", "DROP INDEX t_id;"),
    ]);
    let hint = "hint: some names look like goose's, dbmate's or sqlx's (<version>_<name>.sql) or \
                golang-migrate's (.up.sql and .down.sql pairs)";
    let out = apply(&db, &dir).args(["--layout", "refinery"]).run();
    out.assert_code(6)
        .assert_stderr_contains(hint)
        .assert_stderr_contains("--layout goose, dbmate, sqlx or golang-migrate")
        .assert_stderr_contains("Renaming is not enough: take each file's Down section out");
    assert_eq!(out.stderr.matches(hint).count(), 1, "{}", out.details());
    let json = out.json();
    assert_eq!(problems(&json).len(), 4, "{json:#}");
    assert!(problems(&json).iter().all(|p| p["kind"] == "misnamed"));
    assert_nothing_applied(&db);

    let mut status = Miglock::for_db(&db);
    let out = status
        .args(["status", "--layout", "refinery", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success().assert_stdout_contains(hint);
}
