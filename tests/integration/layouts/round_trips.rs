//! sqlx-cli and dbmate themselves, before and after miglock, on one
//! database: each carries on where the other stopped, reads the other's
//! rows as its own, and the schema is the one the tool alone makes.

use sha2::Digest;

use super::{corpus, corpus_copy, corpus_files, peer, run_peer, schema};
use crate::cluster::Cluster;
use crate::harness::{apply, command, Miglock};

fn sqlx() -> std::path::PathBuf {
    peer("sqlx", "MIGLOCK_SQLX")
}

fn dbmate() -> std::path::PathBuf {
    peer("dbmate", "MIGLOCK_DBMATE")
}

/// The versions of the sqlx corpus, in order.
fn sqlx_versions() -> Vec<String> {
    corpus_files("sqlx")
        .into_iter()
        .map(|(name, _)| name.split('_').next().unwrap().to_string())
        .collect()
}

#[test]
fn sqlx_and_miglock_carry_on_from_each_other_on_one_database() {
    let cluster = Cluster::shared();
    let source = corpus("sqlx");
    let source = source.to_str().unwrap();
    let versions = sqlx_versions();
    assert_eq!(versions.len(), 16);

    // sqlx applies the first seven, miglock (told nothing: auto) the rest.
    let db = cluster.create_db();
    run_peer(
        &sqlx(),
        &db,
        &[
            "migrate",
            "run",
            "--source",
            source,
            "--target-version",
            &versions[6],
        ],
    );
    let out = Miglock::for_db(&db)
        .args(["apply", "--format", "json", "--migrations", source])
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(json["applied"].as_array().unwrap().len(), 9);
    // The key is refinery's table's, whatever the layout: `unlock`, which
    // reads no folder, finds it.
    assert_eq!(json["lock"]["key"], db.default_key());

    // Each row is as sqlx writes it: the file's SHA-384, success.
    let rows = db.query_strings(
        "SELECT version, description, encode(checksum, 'hex'), success, execution_time >= 0 \
         FROM _sqlx_migrations ORDER BY version",
    );
    assert_eq!(rows.len(), 16);
    for ((name, text), row) in corpus_files("sqlx").iter().zip(&rows) {
        let (version, rest) = name.split_once('_').unwrap();
        let description = rest.trim_end_matches(".sql").replace('_', " ");
        let sum: String = sha2::Sha384::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let got: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap()).collect();
        assert_eq!(got, [version, &description, &sum, "t", "t"], "{name}");
    }

    // sqlx sees every migration installed, none changed, nothing to run.
    let info = run_peer(&sqlx(), &db, &["migrate", "info", "--source", source]);
    assert_eq!(info.matches("installed").count(), 16, "{info}");
    assert!(
        !info.contains("different checksum") && !info.contains("pending"),
        "{info}"
    );
    let run = run_peer(&sqlx(), &db, &["migrate", "run", "--source", source]);
    assert!(!run.contains("Applied"), "{run}");

    // The other way round: miglock applies the first seven, sqlx the rest.
    let other = cluster.create_db();
    apply(&other, &corpus_copy("sqlx", |_| true))
        .args(["--target", &versions[6]])
        .run()
        .assert_success();
    let run = run_peer(&sqlx(), &other, &["migrate", "run", "--source", source]);
    assert_eq!(run.matches("Applied").count(), 9, "{run}");

    // sqlx alone makes the same schema.
    let alone = cluster.create_db();
    run_peer(&sqlx(), &alone, &["migrate", "run", "--source", source]);
    let expected = schema(&alone);
    assert!(expected.contains("CREATE MATERIALIZED VIEW public.org_counts"));
    assert_eq!(schema(&db), expected);
    assert_eq!(schema(&other), expected);
}

#[test]
fn a_changed_sqlx_file_is_divergent_as_sqlx_says_and_nothing_runs() {
    let db = Cluster::shared().create_db();
    let dir = corpus_copy("sqlx", |name| name < "20240105");
    apply(&db, &dir).run().assert_success();
    let (name, text) = corpus_files("sqlx").remove(1);
    dir.file(&name, &format!("{text}-- edited\n"));
    let late = corpus_files("sqlx").remove(4);
    dir.file(&late.0, &late.1);

    let out = apply(&db, &dir).run();
    out.assert_code(6);
    let problems = &out.json()["problems"];
    assert_eq!(problems[0]["kind"], "divergent", "{problems}");
    assert_eq!(problems.as_array().unwrap().len(), 1, "{problems}");
    assert!(!db.column_exists("users", "updated_at"), "nothing ran");
    // sqlx refuses it too, for the same reason.
    let source = dir.path().to_str().unwrap().to_string();
    let out = std::process::Command::new(sqlx())
        .args(["migrate", "run", "--source", &source])
        .env("DATABASE_URL", format!("{}?sslmode=disable", db.url()))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("was previously applied but has been modified"),
        "{said}"
    );
}

#[test]
fn dbmate_and_miglock_carry_on_from_each_other_on_one_database() {
    let cluster = Cluster::shared();
    let dbmate = dbmate();
    let first_seven = corpus_copy("dbmate", |name| name < "20240109");
    let part = first_seven.path().to_str().unwrap().to_string();
    let source = corpus("dbmate");
    let source = source.to_str().unwrap();

    let db = cluster.create_db();
    run_peer(
        &dbmate,
        &db,
        &["--migrations-dir", &part, "--no-dump-schema", "migrate"],
    );
    let out = Miglock::for_db(&db)
        .args(["apply", "--format", "json", "--migrations", source])
        .run();
    out.assert_success();
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 9);
    // dbmate's rows: the file's digits, as text.
    let recorded: Vec<String> = db
        .query_strings("SELECT version FROM schema_migrations ORDER BY version")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let names: Vec<String> = corpus_files("dbmate")
        .into_iter()
        .filter(|(n, _)| n.ends_with(".sql"))
        .map(|(n, _)| n[..14].to_string())
        .collect();
    assert_eq!(recorded, names);

    let status = run_peer(&dbmate, &db, &["--migrations-dir", source, "status"]);
    assert!(
        status.contains("Applied: 16") && status.contains("Pending: 0"),
        "{status}"
    );

    let alone = cluster.create_db();
    run_peer(
        &dbmate,
        &alone,
        &["--migrations-dir", source, "--no-dump-schema", "migrate"],
    );
    assert_eq!(schema(&db), schema(&alone));

    // dbmate rolls back what miglock applied: its Down section, its row.
    run_peer(
        &dbmate,
        &db,
        &["--migrations-dir", source, "--no-dump-schema", "rollback"],
    );
    assert!(!db.table_exists("org_counts"));
    assert_eq!(
        db.query_i64("SELECT count(*) FROM schema_migrations WHERE version = '20240217091600'"),
        0
    );
    // And miglock applies it again.
    let out = command(&db, "apply", &corpus_copy("dbmate", |_| true)).run();
    out.assert_success();
    assert_eq!(out.json()["applied"][0]["version"], 20240217091600_i64);
    assert!(db.table_exists("org_counts"));
}
