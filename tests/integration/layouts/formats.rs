//! goose's and golang-migrate's folders and tables (their tools are in no
//! registry here: the rows are checked as their sources write them), what
//! `auto` makes of a folder, and the problems of another tool's files.

use super::{corpus, corpus_copy, corpus_files, goose_up, psql_each, schema};
use crate::cluster::Cluster;
use crate::harness::{apply, command, Miglock, MigrationDir};

#[test]
fn a_goose_folder_runs_its_up_sections_and_keeps_gooses_table() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let out = Miglock::for_db(&db)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(corpus("goose"))
        .run();
    out.assert_success()
        .assert_stderr_contains("LAYOUT layout=goose (told from the files of")
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=3 name=users_email_unique");
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 16);
    assert_eq!(out.json()["layout"], "goose");

    // goose's table: the version-0 row it makes with the table, then one
    // applied row per file, in order.
    let rows = db.query_strings(
        "SELECT version_id, is_applied, tstamp IS NOT NULL FROM goose_db_version ORDER BY id",
    );
    let expected: Vec<Vec<Option<String>>> = (0..=16)
        .map(|v| vec![Some(v.to_string()), Some("t".into()), Some("t".into())])
        .collect();
    assert_eq!(rows, expected);

    // psql running the Up parts in order makes the same schema: no Down
    // section ran.
    let by_psql = cluster.create_db();
    let ups: Vec<String> = corpus_files("goose")
        .iter()
        .map(|(_, text)| goose_up(text))
        .collect();
    psql_each(&by_psql, &ups);
    assert_eq!(schema(&db), schema(&by_psql));
    assert!(db.table_exists("org_counts"));

    // A second run is a no-op; status reads goose's table.
    let out = command(&db, "status", &corpus_copy("goose", |_| true)).run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["applied"][2]["name"], "users_email_unique");
}

#[test]
fn a_golang_migrate_folder_keeps_its_one_row_and_runs_past_it() {
    let cluster = Cluster::shared();
    let up_files = |upto: &str| -> Vec<String> {
        corpus_files("golang-migrate")
            .into_iter()
            .filter(|(n, _)| n.ends_with(".up.sql") && n.as_str() < upto)
            .map(|(_, t)| t)
            .collect()
    };
    // golang-migrate ran the first seven: its table says 7, clean.
    let db = cluster.create_db();
    psql_each(&db, &up_files("000008"));
    db.client()
        .batch_execute(
            "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
             INSERT INTO schema_migrations VALUES (7, false);",
        )
        .unwrap();
    // `auto` reads the pairs as golang-migrate's.
    let out = Miglock::for_db(&db)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(corpus("golang-migrate"))
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["layout"], "golang-migrate");
    let applied: Vec<i64> = json["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["version"].as_i64().unwrap())
        .collect();
    assert_eq!(applied, (8..=16).collect::<Vec<_>>());
    // One row, the newest version, clean: what `migrate version` reads.
    assert_eq!(
        db.query_strings("SELECT version, dirty FROM schema_migrations"),
        [[Some("16".to_string()), Some("f".to_string())]]
    );
    let by_psql = cluster.create_db();
    psql_each(&by_psql, &up_files("999999"));
    assert_eq!(schema(&db), schema(&by_psql));

    // A run that fails leaves the row as it was, never dirty.
    let dir = corpus_copy("golang-migrate", |_| true);
    dir.file("000017_broken.up.sql", "CREATE TABLE orgs (id int);\n");
    let out = command(&db, "apply", &dir)
        .args(["--layout", "golang-migrate"])
        .run();
    out.assert_code(1);
    assert_eq!(
        db.query_strings("SELECT version, dirty FROM schema_migrations"),
        [[Some("16".to_string()), Some("f".to_string())]]
    );
}

#[test]
fn a_dirty_golang_migrate_row_stops_the_run_before_anything_runs() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute(
            "CREATE TABLE orgs (id bigserial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
             INSERT INTO schema_migrations VALUES (2, true);",
        )
        .unwrap();
    let out = command(&db, "apply", &corpus_copy("golang-migrate", |_| true))
        .args(["--layout", "golang-migrate"])
        .run();
    out.assert_code(6);
    let problems = &out.json()["problems"];
    assert_eq!(problems[0]["kind"], "dirty", "{problems}");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("migrate force 2"),
        "{problems}"
    );
    assert!(!db.table_exists("users"), "nothing ran");
}

#[test]
fn auto_reads_pairs_as_golang_migrate_and_asks_for_sqlx_where_sqlx_migrated() {
    // sqlx's reversible pairs look like golang-migrate's: a database sqlx
    // migrated has `_sqlx_migrations`, and `auto` asks rather than start
    // golang-migrate's history beside it.
    let db = Cluster::shared().create_db();
    command(&db, "apply", &corpus_copy("golang-migrate", |_| true))
        .args(["--layout", "sqlx", "--target", "3"])
        .run()
        .assert_success();
    let out = apply(&db, &corpus_copy("golang-migrate", |_| true)).run();
    out.assert_code(6);
    let error = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        error.contains("reads as golang-migrate's") && error.contains("--layout sqlx"),
        "{error}"
    );
    assert!(!db.table_exists("schema_migrations") && !db.table_exists("projects"));
    // MIGLOCK_LAYOUT answers it.
    apply(&db, &corpus_copy("golang-migrate", |_| true))
        .env("MIGLOCK_LAYOUT", "sqlx")
        .run()
        .assert_success();
    assert!(db.table_exists("org_counts"));
    assert_eq!(
        db.query_strings("SELECT count(*) FROM _sqlx_migrations WHERE success"),
        [[Some("16".to_string())]]
    );
}

#[test]
fn a_refinery_folder_stays_refinery_whatever_else_is_in_it() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__create_t.sql", "CREATE TABLE t (id int);\n"),
        ("20240101000000_stray.sql", "CREATE TABLE stray (id int);\n"),
    ]);
    let out = apply(&db, &dir).run();
    out.assert_code(6);
    let json = out.json();
    assert_eq!(json["problems"][0]["kind"], "misnamed", "{json}");
    assert!(!db.table_exists("t"));
    dir.remove("20240101000000_stray.sql");
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert_eq!(out.json()["layout"], "refinery");
    assert!(!out.stderr.contains("LAYOUT"), "{}", out.details());
    assert_eq!(db.history(), [1]);
    assert!(!db.table_exists("_sqlx_migrations"));
}

#[test]
fn another_tools_annotations_read_as_that_tool_reads_them() {
    let db = Cluster::shared().create_db();
    for (layout, name, text, why) in [
        (
            "goose",
            "00001_x.sql",
            "CREATE TABLE x (id int);\n-- +goose Up\n",
            "line 1: SQL before -- +goose Up",
        ),
        ("goose", "00001_x.sql", "CREATE TABLE x (id int);\n", "line 1: SQL before"),
        (
            "goose",
            "00001_x.sql",
            "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE x (id int);\n",
            "line 2: StatementBegin without StatementEnd",
        ),
        (
            "dbmate",
            "1_x.sql",
            "-- migrate:up\nCREATE TABLE x (id int);\n",
            "no -- migrate:down",
        ),
        (
            "dbmate",
            "1_x.sql",
            "-- migrate:up\nCREATE TABLE x (id int);\n-- migrate:down\n-- migrate:up\nSELECT 1;\n-- migrate:down\n",
            "line 4: a second -- migrate:up",
        ),
    ] {
        let dir = MigrationDir::with(&[(name, text)]);
        let out = apply(&db, &dir).args(["--layout", layout]).run();
        out.assert_code(6);
        let problem = &out.json()["problems"][0];
        assert_eq!(problem["kind"], "annotation", "{problem}");
        let message = problem["message"].as_str().unwrap();
        assert!(message.contains(why), "{layout} {text:?}: {message}");
        assert!(!db.table_exists("x"), "nothing ran");
    }
}

#[test]
fn a_goose_down_section_never_runs_even_in_one_file_without_a_transaction() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        (
            "00001_t.sql",
            "-- +goose Up\nCREATE TABLE t (id int);\n\n-- +goose Down\nDROP TABLE t;\n",
        ),
        (
            "00002_i.sql",
            "-- +goose Up\n-- +goose NO TRANSACTION\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n\
             -- +goose Down\nDROP INDEX CONCURRENTLY t_id;\nDROP TABLE t;\n",
        ),
    ]);
    let out = apply(&db, &dir).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=2");
    assert!(db.table_exists("t") && db.table_exists("t_id"));
    assert_eq!(
        db.query_i64("SELECT count(*) FROM goose_db_version WHERE version_id > 0"),
        2
    );
}

#[test]
fn new_writes_the_next_file_as_the_folders_tool_would() {
    let db = Cluster::shared().create_db();
    let new = |dir: &MigrationDir, args: &[&str]| {
        let out = Miglock::new()
            .args(["new", "add_x", "--format", "json", "--migrations"])
            .arg(dir.path())
            .args(args)
            .run();
        out.assert_success();
        let path = out.json()["path"].as_str().unwrap().to_string();
        let name = std::path::Path::new(&path)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        (name, std::fs::read_to_string(&path).unwrap())
    };

    // goose, sequential: the next number, as wide as the others, its
    // annotations in place; apply then runs it as goose's.
    let goose = corpus_copy("goose", |_| true);
    let (name, text) = new(&goose, &["--no-transaction"]);
    assert_eq!(name, "00017_add_x.sql");
    assert_eq!(
        text,
        "-- +goose NO TRANSACTION\n-- +goose Up\n\n\n-- +goose Down\n\n"
    );
    apply(&db, &goose).run().assert_success();
    assert_eq!(
        db.query_i64("SELECT max(version_id) FROM goose_db_version"),
        17
    );

    // golang-migrate: the pair.
    let pairs = corpus_copy("golang-migrate", |_| true);
    let (name, _) = new(&pairs, &["--layout", "golang-migrate"]);
    assert_eq!(name, "000017_add_x.up.sql");
    assert!(pairs.path().join("000017_add_x.down.sql").is_file());

    // dbmate and sqlx: a UTC timestamp after the newest file.
    for (tool, first_line) in [("dbmate", "-- migrate:up\n"), ("sqlx", "-- Add migration")] {
        let dir = corpus_copy(tool, |_| true);
        let (name, text) = new(&dir, &[]);
        let (version, rest) = name.split_once('_').unwrap();
        assert_eq!(rest, "add_x.sql", "{tool}");
        assert_eq!(version.len(), 14, "{tool}: {name}");
        assert!(version > "20240217091600", "{tool}: {name}");
        assert!(text.starts_with(first_line), "{tool}: {text:?}");
    }
}

/// A refinery folder keeps reading as refinery's whatever strays beside
/// it: its files may all sit in subfolders, a misnamed one may sit on top.
#[test]
fn auto_never_moves_a_refinery_folder_to_another_layout() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("2024/V1__init.sql", "CREATE TABLE t (id int);\n"),
        ("2024/V2__seed.sql", "INSERT INTO t VALUES (1);\n"),
    ]);
    apply(&db, &dir).run().assert_success();
    for stray in ["V3__add-note.sql", "1_dev_seed.sql", "V0__x.sql", "V2.sql"] {
        dir.file(stray, "INSERT INTO t VALUES (2);\n");
        let out = apply(&db, &dir).run();
        out.assert_code(6);
        let json = out.json();
        assert_eq!(json["problems"][0]["kind"], "misnamed", "{stray}: {json}");
        assert_eq!(
            db.query_i64("SELECT count(*) FROM t"),
            1,
            "{stray}: nothing ran"
        );
        dir.remove(stray);
    }
    // A dotted version reads as Flyway's, but this database is refinery's:
    // nothing runs, and the error names refinery's layout.
    dir.file("V2.1__dotted.sql", "INSERT INTO t VALUES (2);\n");
    let out = apply(&db, &dir).run();
    out.assert_code(6);
    let error = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        error.contains("has refinery_schema_history") && error.contains("--layout refinery"),
        "{error}"
    );
    assert_eq!(db.query_i64("SELECT count(*) FROM t"), 1, "nothing ran");
    dir.remove("V2.1__dotted.sql");
    for other in [
        "_sqlx_migrations",
        "flyway_schema_history",
        "goose_db_version",
    ] {
        assert!(!db.table_exists(other), "{other}");
    }
}

/// A folder read as a tool's by `auto` on a database another tool
/// migrated: nothing runs, and the error names the layout to give.
#[test]
fn auto_stops_where_another_tools_table_is_and_its_own_is_not() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[("V1__t.sql", "CREATE TABLE t (id int);\n")]);
    apply(&db, &dir).run().assert_success();
    let sqlx = MigrationDir::with(&[("20240101000000_u.sql", "CREATE TABLE u (id int);\n")]);
    let out = apply(&db, &sqlx).run();
    out.assert_code(6);
    let error = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        error.contains("reads as sqlx's (--layout auto)")
            && error.contains("has refinery_schema_history"),
        "{error}"
    );
    assert!(!db.table_exists("u") && !db.table_exists("_sqlx_migrations"));
    // Given, the layout is the user's choice.
    apply(&db, &sqlx)
        .args(["--layout", "sqlx"])
        .run()
        .assert_success();
    assert!(db.table_exists("u"));
}

/// Tools miglock does not read are not guessed at, and their Down
/// sections are refused wherever they are.
#[test]
fn other_tools_down_sections_never_run() {
    let db = Cluster::shared().create_db();
    let sql_migrate = MigrationDir::with(&[(
        "1_init.sql",
        "-- +migrate Up\nCREATE TABLE people (id int);\n-- +migrate Down\nDROP TABLE people;\n",
    )]);
    let out = apply(&db, &sql_migrate).run();
    out.assert_code(6);
    let error = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(error.contains("holds sql-migrate's annotations"), "{error}");
    // Run as sqlx's anyway: the Down section is refused before anything runs.
    let out = apply(&db, &sql_migrate).args(["--layout", "sqlx"]).run();
    out.assert_code(6);
    let problem = &out.json()["problems"][0];
    assert_eq!(problem["kind"], "down_section", "{problem}");
    assert_eq!(problem["line"], 3);
    assert!(!db.table_exists("people") && !db.table_exists("_sqlx_migrations"));
}

/// What goose refuses, miglock refuses, before anything runs: a Go
/// migration, a name without `_`, a statement never ended, a BOM.
#[test]
fn goose_folders_goose_would_refuse_are_refused() {
    let db = Cluster::shared().create_db();
    for (name, text, kind, says) in [
        (
            "00002_backfill.go",
            "package migrations\n",
            "misnamed",
            "a goose Go migration",
        ),
        (
            "00002.sql",
            "-- +goose Up\nSELECT 1;\n",
            "misnamed",
            "goose wants a _",
        ),
        (
            "00002_x.sql",
            "-- +goose Up\nCREATE TABLE x (id int)\n-- +goose Down\nDROP TABLE x;\n",
            "annotation",
            "missing semicolon",
        ),
        (
            "00002_x.sql",
            "\u{feff}-- +goose Up\nCREATE TABLE x (id int);\n",
            "annotation",
            "byte-order mark",
        ),
    ] {
        let dir =
            MigrationDir::with(&[("00001_t.sql", "-- +goose Up\nCREATE TABLE t (id int);\n")]);
        dir.file(name, text);
        let out = apply(&db, &dir).args(["--layout", "goose"]).run();
        out.assert_code(6);
        let problems = &out.json()["problems"];
        let problem = problems
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["kind"] == kind)
            .unwrap_or_else(|| panic!("{name}: {problems}"));
        assert!(
            problem["message"].as_str().unwrap().contains(says),
            "{name}: {problem}"
        );
        assert!(
            !db.table_exists("t") && !db.table_exists("x"),
            "{name}: nothing ran"
        );
    }
}

/// Transaction lock mode (what `auto` picks behind a pooler) runs each
/// layout's guard: the key, and the tool's own row for the version.
#[test]
fn every_layout_runs_in_transaction_lock_mode() {
    for (layout, files) in [
        (
            "goose",
            [
                (
                    "00001_a.sql",
                    "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n",
                ),
                ("00002_b.sql", "-- +goose Up\nCREATE TABLE b (id int);\n"),
            ],
        ),
        (
            "dbmate",
            [
                (
                    "20240101000000_a.sql",
                    "-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\n",
                ),
                (
                    "20240102000000_b.sql",
                    "-- migrate:up\nCREATE TABLE b (id int);\n-- migrate:down\n",
                ),
            ],
        ),
        (
            "sqlx",
            [
                ("20240101000000_a.sql", "CREATE TABLE a (id int);\n"),
                ("20240102000000_b.sql", "CREATE TABLE b (id int);\n"),
            ],
        ),
        (
            "golang-migrate",
            [
                ("000001_a.up.sql", "CREATE TABLE a (id int);\n"),
                ("000002_b.up.sql", "CREATE TABLE b (id int);\n"),
            ],
        ),
        (
            "flyway",
            [
                ("V1.0__a.sql", "CREATE TABLE a (id int);\n"),
                ("V1.01.1__b.sql", "CREATE TABLE b (id int);\n"),
            ],
        ),
    ] {
        let db = Cluster::shared().create_db();
        let dir = MigrationDir::with(&files);
        let out = apply(&db, &dir)
            .args(["--layout", layout, "--lock-mode", "transaction"])
            .run();
        out.assert_success();
        assert_eq!(
            out.json()["applied"].as_array().unwrap().len(),
            2,
            "{layout}"
        );
        assert!(db.table_exists("a") && db.table_exists("b"), "{layout}");
        let out = apply(&db, &dir)
            .args(["--layout", layout, "--lock-mode", "transaction"])
            .run();
        out.assert_success();
        assert_eq!(out.json()["outcome"], "current", "{layout}");
        dir.file(
            match layout {
                "goose" => "00003_c.sql",
                "golang-migrate" => "000003_c.up.sql",
                "flyway" => "V2__c.sql",
                _ => "20240103000000_c.sql",
            },
            match layout {
                "goose" => "-- +goose Up\nCREATE TABLE c (id int);\n",
                "dbmate" => "-- migrate:up\nCREATE TABLE c (id int);\n-- migrate:down\n",
                _ => "CREATE TABLE c (id int);\n",
            },
        );
        let out = apply(&db, &dir)
            .args(["--layout", layout, "--lock-mode", "transaction"])
            .run();
        out.assert_success();
        assert_eq!(
            out.json()["applied"].as_array().unwrap().len(),
            1,
            "{layout}"
        );
        assert!(db.table_exists("c"), "{layout}");
    }
}

/// `baseline` writes each tool's rows, again without a word, and `apply`
/// carries on from them.
#[test]
fn baseline_records_another_tools_rows_and_apply_carries_on() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    // The schema of the first two goose files, made by hand.
    db.client()
        .batch_execute(
            "CREATE TABLE orgs (id bigserial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE users (id bigserial PRIMARY KEY, org_id bigint NOT NULL REFERENCES orgs (id), email text NOT NULL);
             CREATE INDEX users_org_id ON users (org_id);",
        )
        .unwrap();
    let dir = corpus_copy("goose", |_| true);
    for _ in 0..2 {
        let out = command(&db, "baseline", &dir)
            .args(["--baseline-version", "2"])
            .run();
        out.assert_success();
    }
    assert_eq!(
        db.query_strings("SELECT version_id FROM goose_db_version ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert_eq!(out.json()["applied"][0]["version"], 3);
    assert!(db.table_exists("org_counts"));
}

/// Many schemas of one database, each with its own sqlx history.
#[test]
fn all_schemas_keeps_the_layout_in_every_schema() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;")
        .unwrap();
    let dir = MigrationDir::with(&[
        ("20240101000000_t.sql", "CREATE TABLE t (id int);\n"),
        ("20240102000000_u.sql", "CREATE TABLE u (id int);\n"),
    ]);
    let out = apply(&db, &dir)
        .args(["--all-schemas", "--schema-match", "tenant%"])
        .run();
    out.assert_success();
    for schema in ["tenant_a", "tenant_b"] {
        assert_eq!(
            db.query_i64(&format!(
                "SELECT count(*) FROM {schema}._sqlx_migrations WHERE success"
            )),
            2,
            "{schema}"
        );
        assert!(db.table_exists(&format!("{schema}.u")), "{schema}");
    }
    assert!(!db.table_exists("public._sqlx_migrations"));
}
