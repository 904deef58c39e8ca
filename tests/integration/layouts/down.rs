//! `miglock down --to VERSION`: each tool's down scripts, newest first,
//! each with its history change, under the lock; nothing runs when one is
//! missing; confirmed as `unlock` and `repair` are.

use super::{corpus, corpus_copy, corpus_files, goose_up, peer, psql_each, run_peer, schema};
use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, command, two_migrations, MigrationDir};

fn versions(json: &serde_json::Value) -> Vec<i64> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect()
}

/// The schema psql makes with the Up parts of the first `n` goose files.
fn goose_schema_up_to(cluster: &Cluster, n: usize) -> String {
    let db = cluster.create_db();
    let ups: Vec<String> = corpus_files("goose")
        .iter()
        .take(n)
        .map(|(_, text)| goose_up(text))
        .collect();
    if !ups.is_empty() {
        psql_each(&db, &ups);
    }
    schema(&db)
}

fn down(db: &TestDb, dir: &MigrationDir, to: &str) -> crate::harness::Miglock {
    let mut m = command(db, "down", dir);
    m.args(["--to", to]);
    m
}

#[test]
fn goose_down_runs_the_down_sections_newest_first_and_up_again() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let dir = corpus_copy("goose", |_| true);
    apply(&db, &dir).run().assert_success();

    // Without a terminal and without --yes: nothing is touched.
    down(&db, &dir, "8").run().assert_code(2);
    // --dry-run says what it would revert, and changes nothing.
    let out = down(&db, &dir, "9").arg("--dry-run").run();
    out.assert_success();
    assert_eq!(
        versions(&out.json()["reverted"]),
        (10..=16).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        db.query_i64("SELECT max(version_id) FROM goose_db_version"),
        16
    );

    // Down to 9: below it, 9's enum value could not be taken back (its Down
    // section says so), so the schema would not be 8's.
    let out = down(&db, &dir, "9").arg("--yes").run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_REVERTED version=16 name=org_counts")
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=10")
        .assert_stderr_contains("LOCK_RELEASED");
    let json = out.json();
    assert_eq!(json["outcome"], "reverted");
    assert_eq!(
        versions(&json["reverted"]),
        (10..=16).rev().collect::<Vec<_>>()
    );
    assert!(json["reverted"][0]["duration_ms"].is_u64());
    // goose's table as goose leaves it: the rows of 9 and above deleted.
    assert_eq!(
        db.query_strings("SELECT version_id FROM goose_db_version ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone().unwrap().parse::<i64>().unwrap())
            .collect::<Vec<_>>(),
        (0..=9).collect::<Vec<_>>()
    );
    assert_eq!(schema(&db), goose_schema_up_to(cluster, 9));

    // And up again: the same schema as one run up.
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 7);
    assert_eq!(schema(&db), goose_schema_up_to(cluster, 16));

    // Nothing above the target: nothing to revert.
    let out = down(&db, &dir, "16").arg("--yes").run();
    out.assert_success();
    assert_eq!(out.json()["reverted"], serde_json::json!([]));
}

#[test]
fn golang_migrate_down_moves_its_one_row_back() {
    let db = Cluster::shared().create_db();
    let dir = corpus_copy("golang-migrate", |_| true);
    let run = |m: &mut crate::harness::Miglock| m.args(["--layout", "golang-migrate"]).run();
    run(&mut apply(&db, &dir)).assert_success();
    let out = run(down(&db, &dir, "9").arg("--yes"));
    out.assert_success();
    assert_eq!(
        versions(&out.json()["reverted"]),
        (10..=16).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        db.query_strings("SELECT version, dirty FROM schema_migrations"),
        [[Some("9".to_string()), Some("f".to_string())]]
    );
    assert!(!db.table_exists("projects_org_id") && db.table_exists("orgs"));
    // All the way down: the table empty, as `migrate down` leaves it.
    run(down(&db, &dir, "0").arg("--yes")).assert_success();
    assert_eq!(db.query_i64("SELECT count(*) FROM schema_migrations"), 0);
    assert!(!db.table_exists("orgs"));
}

#[test]
fn dbmate_reads_what_down_left_as_its_own() {
    let db = Cluster::shared().create_db();
    let dir = corpus_copy("dbmate", |_| true);
    apply(&db, &dir).run().assert_success();
    let out = down(&db, &dir, "20240211111000").arg("--yes").run();
    out.assert_success();
    assert_eq!(out.json()["reverted"].as_array().unwrap().len(), 6);
    let dbmate = peer("dbmate", "MIGLOCK_DBMATE");
    let source = corpus("dbmate");
    let status = run_peer(
        &dbmate,
        &db,
        &["--migrations-dir", source.to_str().unwrap(), "status"],
    );
    assert!(
        status.contains("Applied: 10") && status.contains("Pending: 6"),
        "{status}"
    );
    // dbmate carries on from there.
    run_peer(
        &dbmate,
        &db,
        &[
            "--migrations-dir",
            source.to_str().unwrap(),
            "--no-dump-schema",
            "migrate",
        ],
    );
    assert!(db.table_exists("org_counts"));
}

#[test]
fn a_migration_without_a_down_script_stops_down_before_anything_runs() {
    let db = Cluster::shared().create_db();
    // sqlx's simple files have no down script.
    let sqlx = corpus_copy("sqlx", |_| true);
    apply(&db, &sqlx).run().assert_success();
    let out = down(&db, &sqlx, "20240216161500").arg("--yes").run();
    out.assert_code(6);
    let problems = &out.json()["problems"];
    assert_eq!(problems[0]["kind"], "no_down", "{problems}");
    assert!(db.table_exists("org_counts"), "nothing was reverted");

    // A goose file without its Down section, below one with it: neither
    // is reverted.
    let db = Cluster::shared().create_db();
    let goose = MigrationDir::with(&[
        ("00001_t.sql", "-- +goose Up\nCREATE TABLE t (id int);\n"),
        (
            "00002_u.sql",
            "-- +goose Up\nCREATE TABLE u (id int);\n-- +goose Down\nDROP TABLE u;\n",
        ),
    ]);
    apply(&db, &goose).run().assert_success();
    let out = down(&db, &goose, "0").arg("--yes").run();
    out.assert_code(6);
    let message = out.json()["problems"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("has no -- +goose Down section"),
        "{message}"
    );
    assert!(db.table_exists("t") && db.table_exists("u"));

    // sqlx's reversible pairs go down, and sqlx sees them pending again.
    let db = Cluster::shared().create_db();
    let pairs = MigrationDir::with(&[
        ("1_t.up.sql", "CREATE TABLE t (id int);\n"),
        ("1_t.down.sql", "DROP TABLE t;\n"),
        (
            "2_i.up.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
        ),
        (
            "2_i.down.sql",
            "-- no-transaction\nDROP INDEX CONCURRENTLY t_id;\n",
        ),
    ]);
    let sqlx = |m: &mut crate::harness::Miglock| m.args(["--layout", "sqlx"]).run();
    sqlx(&mut apply(&db, &pairs)).assert_success();
    sqlx(down(&db, &pairs, "1").arg("--yes"))
        .assert_success()
        .assert_stderr_contains("MIGRATION_NO_TRANSACTION version=2");
    assert!(db.table_exists("t") && !db.table_exists("t_id"));
    let info = run_peer(
        &peer("sqlx", "MIGLOCK_SQLX"),
        &db,
        &[
            "migrate",
            "info",
            "--source",
            pairs.path().to_str().unwrap(),
        ],
    );
    assert!(info.contains("2/pending"), "{info}");
}

#[test]
fn refinery_and_flyway_folders_have_no_down() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    let out = down(&db, &dir, "0").arg("--yes").run();
    out.assert_code(2);
    assert!(
        out.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the refinery layout has no down migrations"),
        "{}",
        out.details()
    );
    assert_eq!(db.history(), [1, 2]);
}
