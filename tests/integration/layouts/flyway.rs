//! A Flyway folder as it is (`--layout flyway`): dotted and `_`-parted
//! versions in Flyway's order, a subfolder, `${placeholders}`, and
//! `flyway_schema_history` as Flyway writes it, checksums included. Flyway
//! is in no registry here: its rows are checked as its source writes
//! them, the schema against psql running the files in Flyway's order.

use super::{corpus, psql_each, schema};
use crate::cluster::Cluster;
use crate::harness::{apply, wait_for, Miglock, MigrationDir, RunOutput, SETTLE};

/// The corpus files in Flyway's order: (path from the folder, version as
/// Flyway writes it, description).
const ORDER: [(&str, &str, &str); 16] = [
    ("V1__create_orgs.sql", "1", "create orgs"),
    ("V1.1__create_users.sql", "1.1", "create users"),
    ("V1.2__users_email_unique.sql", "1.2", "users email unique"),
    ("V1.10__user_roles.sql", "1.10", "user roles"),
    ("V2__touch_updated_at.sql", "2", "touch updated at"),
    ("V2_1__create_projects.sql", "2.1", "create projects"),
    ("V2.1.1__seed_orgs.sql", "2.1.1", "seed orgs"),
    (
        "release3/V3__active_users_view.sql",
        "3",
        "active users view",
    ),
    ("release3/V3.0.1__role_owner.sql", "3.0.1", "role owner"),
    (
        "release3/V3.1__projects_org_index.sql",
        "3.1",
        "projects org index",
    ),
    ("V004__comments.sql", "004", "comments"),
    ("V5__audit_log.sql", "5", "audit log"),
    ("V5.1__audit_function.sql", "5.1", "audit function"),
    ("V6__projects_name_check.sql", "6", "projects name check"),
    (
        "V6.1__validate_projects_name.sql",
        "6.1",
        "validate projects name",
    ),
    (
        "V20210608_1249__org_counts.sql",
        "20210608.1249",
        "org counts",
    ),
];

/// The corpus's repeatable files, in Flyway's order (by description),
/// after the versioned ones.
const REPEATABLES: [(&str, &str); 2] = [
    ("R__org_overview.sql", "org overview"),
    ("release3/R__project_names_fn.sql", "project names fn"),
];

/// A corpus file's text as it runs: its placeholders replaced.
fn replaced(path: &str) -> String {
    std::fs::read_to_string(corpus("flyway").join(path))
        .unwrap()
        .replace("${schema}", "public")
        .replace("${org_prefix}", "ACME-")
        .replace("${flyway:table}", "flyway_schema_history")
}

const PLACEHOLDERS: [&str; 4] = [
    "--placeholder",
    "schema=public",
    "--placeholder",
    "ORG_PREFIX=ACME-",
];

/// Flyway's checksum, written here apart from miglock's: the CRC-32 of
/// the file's lines (their ends and a leading BOM left out), signed.
fn flyway_checksum(bytes: &[u8]) -> i32 {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let lines: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&lines) as i32
}

fn flyway(db: &crate::cluster::TestDb, dir: &std::path::Path) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args([
        "apply",
        "--format",
        "json",
        "--layout",
        "flyway",
        "--migrations",
    ])
    .arg(dir)
    .args(PLACEHOLDERS);
    m
}

#[test]
fn a_flyway_folder_runs_in_flyways_order_and_keeps_flyways_table() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let out = flyway(&db, &corpus("flyway")).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=1.2 name=users_email_unique");
    let applied: Vec<String> = out.json()["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["version"].to_string().trim_matches('"').to_string())
        .collect();
    let mut expected: Vec<String> = ORDER
        .iter()
        .map(|(_, v, _)| {
            // JSON keeps whole numbers as numbers, dotted ones as text.
            v.trim_start_matches('0').to_string()
        })
        .collect();
    // The repeatables last, with no version.
    expected.extend(["null".to_string(), "null".to_string()]);
    assert_eq!(applied, expected);

    // Each row as Flyway writes it.
    let rows = db.query_strings(
        "SELECT installed_rank, version, description, type, script, checksum, \
         installed_by, success FROM flyway_schema_history ORDER BY installed_rank",
    );
    assert_eq!(rows.len(), 18);
    for (i, ((path, version, description), row)) in ORDER.iter().zip(&rows).enumerate() {
        let bytes = std::fs::read(corpus("flyway").join(path)).unwrap();
        let rank = (i + 1).to_string();
        let checksum = flyway_checksum(&bytes).to_string();
        let got: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap()).collect();
        assert_eq!(
            got,
            [
                rank.as_str(),
                version,
                description,
                "SQL",
                path,
                checksum.as_str(),
                "postgres",
                "t"
            ]
        );
    }
    // A repeatable's row has no version, and its checksum is of the file
    // with its placeholders replaced, as Flyway sums a repeatable.
    for (i, ((path, description), row)) in REPEATABLES.iter().zip(&rows[16..]).enumerate() {
        let rank = (i + 17).to_string();
        let checksum = flyway_checksum(replaced(path).as_bytes()).to_string();
        let got: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
        assert_eq!(
            got,
            [
                Some(rank.as_str()),
                None,
                Some(*description),
                Some("SQL"),
                Some(*path),
                Some(checksum.as_str()),
                Some("postgres"),
                Some("t")
            ]
        );
    }
    // Flyway's own constraint and index.
    assert!(db.table_exists("flyway_schema_history_pk"));
    assert!(db.table_exists("flyway_schema_history_s_idx"));

    // psql running the files in Flyway's order, placeholders replaced,
    // makes the same schema.
    let by_psql = cluster.create_db();
    let texts: Vec<String> = ORDER
        .iter()
        .map(|(path, _, _)| replaced(path))
        .chain(REPEATABLES.iter().map(|(path, _)| replaced(path)))
        .collect();
    psql_each(&by_psql, &texts);
    assert_eq!(schema(&db), schema(&by_psql));
    assert_eq!(
        db.query_strings("SELECT name FROM orgs ORDER BY id")[0][0].as_deref(),
        Some("ACME-Acme; Inc.")
    );

    // Run again: current.
    let out = flyway(&db, &corpus("flyway")).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
}

#[test]
fn auto_tells_flyways_folder_by_its_versions_and_says_what_to_do_otherwise() {
    // The corpus, refinery's names beside dotted ones: Flyway's, as it is.
    let db = Cluster::shared().create_db();
    let out = Miglock::for_db(&db)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(corpus("flyway"))
        .args(PLACEHOLDERS)
        .run();
    out.assert_success()
        .assert_stderr_contains("LAYOUT layout=flyway");
    assert_eq!(out.json()["layout"], "flyway");
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 18);
    assert_eq!(
        db.query_strings("SELECT count(*) FROM flyway_schema_history WHERE success"),
        [[Some("18".to_string())]]
    );
    assert!(!db.table_exists("refinery_schema_history"));

    // Told refinery's, the corpus is refused with the hint.
    let db = Cluster::shared().create_db();
    let out = Miglock::for_db(&db)
        .args(["apply", "--layout", "refinery", "--migrations"])
        .arg(corpus("flyway"))
        .run();
    out.assert_code(6)
        .assert_stderr_contains("--layout flyway (MIGLOCK_LAYOUT=flyway) runs the folder as it is");
    assert!(!db.table_exists("orgs") && !db.table_exists("refinery_schema_history"));

    // Flyway migrated the database; the folder, whole-number versions
    // only, reads as refinery's: the missing refinery table beside
    // Flyway's stops the run before anything runs again.
    let dir = MigrationDir::with(&[
        ("V1__a.sql", "CREATE TABLE a (id int);\n"),
        ("V2__b.sql", "CREATE TABLE b (id int);\n"),
    ]);
    apply(&db, &dir)
        .args(["--layout", "flyway"])
        .run()
        .assert_success();
    dir.file("V3__c.sql", "CREATE TABLE c (id int);\n");
    let out = apply(&db, &dir).run();
    out.assert_code(6);
    let error = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        error.contains("has flyway_schema_history, the history table of flyway")
            && error.contains("--layout flyway"),
        "{error}"
    );
    assert!(!db.table_exists("c") && !db.table_exists("refinery_schema_history"));
    // Told, it carries on.
    apply(&db, &dir)
        .args(["--layout", "flyway"])
        .run()
        .assert_success();
    assert!(db.table_exists("c"));

    // Dotted versions only, and no refinery name: auto knows Flyway's.
    let db = Cluster::shared().create_db();
    let dotted = MigrationDir::with(&[
        ("V1.0__a.sql", "CREATE TABLE a (id int);\n"),
        ("V1_1__b.sql", "CREATE TABLE b (id int);\n"),
    ]);
    apply(&db, &dotted).run().assert_success();
    assert_eq!(
        db.query_strings("SELECT version FROM flyway_schema_history ORDER BY installed_rank"),
        [[Some("1.0".to_string())], [Some("1.1".to_string())]]
    );
}

#[test]
fn flyways_problems_stop_the_run_before_anything_runs() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__create_t.sql", "CREATE TABLE t (id int);\n"),
        (
            "V1.1__note.sql",
            "ALTER TABLE t ADD COLUMN note text; -- ${why}\n",
        ),
    ]);
    // A placeholder without a value: a problem, with its line.
    let out = apply(&db, &dir).args(["--layout", "flyway"]).run();
    out.assert_code(6);
    let problem = &out.json()["problems"][0];
    assert_eq!(problem["kind"], "placeholder", "{problem}");
    assert_eq!(problem["line"], 1);
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("--placeholder why=VALUE"),
        "{problem}"
    );
    assert!(!db.table_exists("t"));
    // Given in MIGLOCK_PLACEHOLDERS, the run goes on.
    apply(&db, &dir)
        .args(["--layout", "flyway"])
        .env("MIGLOCK_PLACEHOLDERS", "why=because")
        .run()
        .assert_success();

    // However long the line, a placeholder is found, replaced, or refused.
    let long = "y".repeat(5000);
    dir.file(
        "V1.2__long.sql",
        &format!("CREATE TABLE long AS SELECT '{long}' AS pad, '${{env}}' AS env;\n"),
    );
    let out = apply(&db, &dir)
        .args(["--layout", "flyway"])
        .env("MIGLOCK_PLACEHOLDERS", "why=because")
        .run();
    out.assert_code(6);
    assert!(
        out.json()["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("${env} has no value"),
        "{}",
        out.details()
    );
    apply(&db, &dir)
        .args(["--layout", "flyway"])
        .env("MIGLOCK_PLACEHOLDERS", "why=because;env=prod")
        .run()
        .assert_success();
    assert_eq!(
        db.query_strings("SELECT env FROM long")[0][0].as_deref(),
        Some("prod")
    );
    dir.remove("V1.2__long.sql");
    dir.file(
        "V1.2__long.sql",
        &format!("CREATE TABLE long AS SELECT '{long}' AS pad, '${{env}}' AS env;\n"),
    );

    // An applied file changed: divergent, as Flyway's validate says.
    dir.file("V1__create_t.sql", "CREATE TABLE t (id bigint);\n");
    dir.file("V2__more.sql", "CREATE TABLE more (id int);\n");
    let out = apply(&db, &dir)
        .args(["--layout", "flyway"])
        .env("MIGLOCK_PLACEHOLDERS", "why=because")
        .run();
    out.assert_code(6);
    assert_eq!(out.json()["problems"][0]["kind"], "divergent");
    assert!(!db.table_exists("more"));

    // Callbacks would run under Flyway: refused, not skipped.
    for name in ["afterMigrate.sql", "beforeMigrate.sql"] {
        let dir = MigrationDir::with(&[("V1.5__x.sql", "SELECT 1;\n"), (name, "SELECT 1;\n")]);
        let out = apply(&db, &dir).args(["--layout", "flyway"]).run();
        out.assert_code(6);
        let problem = &out.json()["problems"][0];
        assert_eq!(problem["kind"], "misnamed", "{name}: {problem}");
    }
}

#[test]
fn a_flyway_baseline_row_stands_for_every_version_up_to_it() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    // Flyway baselined the database at 2.1 (its schema made by hand).
    let texts: Vec<String> = ORDER[..6]
        .iter()
        .map(|(path, _, _)| std::fs::read_to_string(corpus("flyway").join(path)).unwrap())
        .collect();
    psql_each(&db, &texts);
    db.client()
        .batch_execute(
            r#"CREATE TABLE "public"."flyway_schema_history" ("installed_rank" INT NOT NULL, "version" VARCHAR(50), "description" VARCHAR(200) NOT NULL, "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL, "checksum" INTEGER, "installed_by" VARCHAR(100) NOT NULL, "installed_on" TIMESTAMP NOT NULL DEFAULT now(), "execution_time" INTEGER NOT NULL, "success" BOOLEAN NOT NULL);
               INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (1, '2.1', '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', NULL, 'postgres', 0, TRUE);"#,
        )
        .unwrap();
    let out = flyway(&db, &corpus("flyway")).run();
    out.assert_success();
    let json = out.json();
    // Ten versions past the baseline, then the two repeatables.
    assert_eq!(json["applied"].as_array().unwrap().len(), 12);
    assert_eq!(json["applied"][0]["version"], "2.1.1");
    assert_eq!(
        db.query_i64("SELECT max(installed_rank) FROM flyway_schema_history"),
        13
    );
}

#[test]
fn a_repeatable_runs_after_the_versions_and_again_only_when_it_changes() {
    let db = Cluster::shared().create_db();
    // Up to a target below the newest version: no repeatable yet (a view
    // may read what a later version makes).
    let out = flyway(&db, &corpus("flyway")).args(["--target", "2"]).run();
    out.assert_success();
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 5);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM flyway_schema_history WHERE version IS NULL"),
        0
    );
    // status lists them pending once nothing is past a target.
    let out = Miglock::for_db(&db)
        .args(["status", "--layout", "flyway", "--migrations"])
        .arg(corpus("flyway"))
        .args(PLACEHOLDERS)
        .run();
    out.assert_success()
        .assert_stdout_contains("R__org_overview")
        .assert_stdout_contains("R__project_names_fn");
    flyway(&db, &corpus("flyway")).run().assert_success();
    let out = flyway(&db, &corpus("flyway")).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM flyway_schema_history"),
        18
    );

    // Changed: it runs again, alone, recorded in a row of its own.
    let dir = super::corpus_copy("flyway", |_| true);
    dir.file(
        "R__org_overview.sql",
        "CREATE OR REPLACE VIEW ${schema}.org_overview AS\n    SELECT o.id, o.name, count(p.id) AS projects, \
         count(p.id) FILTER (WHERE p.archived) AS archived\n    FROM orgs o LEFT JOIN projects p ON \
         p.org_id = o.id\n    GROUP BY o.id, o.name;\n",
    );
    let out = flyway(&db, dir.path()).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=R name=org_overview");
    let applied = &out.json()["applied"];
    assert_eq!(applied.as_array().unwrap().len(), 1, "{applied}");
    assert_eq!(applied[0]["version"], serde_json::Value::Null);
    assert_eq!(applied[0]["name"], "org_overview");
    assert_eq!(
        db.query_strings(
            "SELECT installed_rank, version IS NULL, description FROM flyway_schema_history \
             ORDER BY installed_rank DESC LIMIT 1"
        ),
        [[
            Some("19".to_string()),
            Some("t".to_string()),
            Some("org overview".to_string())
        ]]
    );
    assert!(db.column_exists("org_overview", "archived"));
    flyway(&db, dir.path()).run().assert_success();
    assert_eq!(
        db.query_i64("SELECT count(*) FROM flyway_schema_history"),
        19
    );

    // Flyway also takes the checksum of the file as it is (placeholders
    // left) for the same repeatable: not run again.
    let raw = flyway_checksum(&std::fs::read(dir.path().join("R__org_overview.sql")).unwrap());
    db.client()
        .batch_execute(&format!(
            "UPDATE flyway_schema_history SET checksum = {raw} WHERE installed_rank = 19"
        ))
        .unwrap();
    let out = flyway(&db, dir.path()).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM flyway_schema_history"),
        19
    );

    // Two repeatables of one description: Flyway refuses them, and so
    // does miglock, before anything runs.
    dir.file("release3/R__org_overview.sql", "SELECT 1;\n");
    dir.file("V7__more.sql", "CREATE TABLE more (id int);\n");
    let out = flyway(&db, dir.path()).run();
    out.assert_code(6);
    let problem = &out.json()["problems"][0];
    assert_eq!(problem["kind"], "duplicate", "{problem}");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("the repeatable migration \"org_overview\" is in 2 files"),
        "{problem}"
    );
    assert!(!db.table_exists("more"));
}

#[test]
fn a_flyway_script_configuration_is_read_as_flyway_reads_it() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (id int PRIMARY KEY, note text);\n"),
        (
            "V2__backfill.sql",
            "INSERT INTO t VALUES (1, '${kept}');\nINSERT INTO t VALUES (2, 'two');\n",
        ),
        (
            "V2__backfill.sql.conf",
            "# Flyway's script configuration\nexecuteInTransaction=false\nplaceholderReplacement : false\nencoding=UTF-8\n",
        ),
    ]);
    // Statement by statement, its `${…}` left as it is (no value given).
    let out = apply(&db, &dir).args(["--layout", "flyway"]).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=2 name=backfill reason=marker");
    let json = out.json();
    assert_eq!(json["applied"][1]["transaction"], false, "{json}");
    assert_eq!(
        db.query_strings("SELECT note FROM t ORDER BY id"),
        [[Some("${kept}".to_string())], [Some("two".to_string())]]
    );
    // Its checksum is the script's alone, as Flyway's.
    let bytes = std::fs::read(dir.path().join("V2__backfill.sql")).unwrap();
    assert_eq!(
        db.query_i64("SELECT checksum FROM flyway_schema_history WHERE version = '2'"),
        i64::from(flyway_checksum(&bytes))
    );

    // A key miglock cannot honour stops the run before anything runs.
    dir.file("V3__more.sql", "CREATE TABLE more (id int);\n");
    dir.file("V3__more.sql.conf", "shouldExecute=${enabled}\n");
    let out = apply(&db, &dir).args(["--layout", "flyway"]).run();
    out.assert_code(6);
    let problem = &out.json()["problems"][0];
    assert_eq!(problem["kind"], "annotation", "{problem}");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("V3__more.sql.conf: line 1: \"shouldExecute\" is not a script configuration"),
        "{problem}"
    );
    assert!(!db.table_exists("more"));

    // Read as refinery's, a `.conf` named like a migration is still a
    // file that would never run.
    let refinery = Cluster::shared().create_db();
    let out = apply(&refinery, &dir).args(["--layout", "refinery"]).run();
    out.assert_code(6);
    assert!(
        out.json()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["file"]
                .as_str()
                .unwrap()
                .ends_with("V2__backfill.sql.conf")
                && p["kind"] == "misnamed"),
        "{}",
        out.stdout
    );
}

#[test]
fn behind_a_pooler_a_repeatable_runs_once_and_a_replica_that_finds_it_run_leaves_it() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__t.sql", "CREATE TABLE t (id int);\n"),
        (
            "R__my_view.sql",
            "CREATE OR REPLACE VIEW my_view AS SELECT id FROM t;\n",
        ),
    ]);
    let run = |dir: &MigrationDir| {
        let mut m = apply(&db, dir);
        m.args(["--layout", "flyway", "--lock-mode", "transaction"]);
        m
    };
    let repeated =
        || db.query_i64("SELECT count(*) FROM flyway_schema_history WHERE version IS NULL");
    // New, an `_` in its name (its row holds the description): once.
    let out = run(&dir).run();
    out.assert_success();
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 2);
    assert_eq!(repeated(), 1);
    // Changed: once more; then current.
    dir.file(
        "R__my_view.sql",
        "CREATE OR REPLACE VIEW my_view AS SELECT id, id + 1 AS next FROM t;\n",
    );
    let out = run(&dir).run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT version=V1__t applied=2");
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 1);
    assert_eq!(repeated(), 2);
    let out = run(&dir).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    assert_eq!(repeated(), 2);

    // Changed again; this replica waits for its table while another runs
    // it (its row written here): the guard of its next try finds the
    // newest row of the file as it is, and it runs nothing.
    let text = "CREATE OR REPLACE VIEW my_view AS SELECT id, id + 2 AS later FROM t;\n";
    dir.file("R__my_view.sql", text);
    let mut blocker = db.client();
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let child = run(&dir).args(["--ddl-lock-timeout", "100ms"]).spawn();
    wait_for("the view to wait for its table", SETTLE, || {
        db.query_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%CREATE OR REPLACE VIEW my_view%'",
        ) == 1
    });
    let checksum = flyway_checksum(text.as_bytes());
    db.client()
        .batch_execute(&format!(
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, \
             script, checksum, installed_by, execution_time, success) SELECT max(installed_rank) + 1, \
             NULL, 'my view', 'SQL', 'R__my_view.sql', {checksum}, 'other', 1, true \
             FROM flyway_schema_history"
        ))
        .unwrap();
    // It ends while the table is still locked: its try after the row
    // never reached the view.
    let out = RunOutput::from_child(child);
    blocker.batch_execute("ROLLBACK").unwrap();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current", "{}", out.stdout);
    assert_eq!(repeated(), 3);
    assert!(
        !db.column_exists("my_view", "later"),
        "the view never ran here"
    );
}
