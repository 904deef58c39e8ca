//! The corpus under `tests/corpus/`: files written the way real projects
//! write them (enums, functions and triggers, DO blocks, concurrent
//! indexes, pg_dump output, BEGIN ATOMIC bodies, every kind of quoting),
//! applied by miglock and by psql: both give the same schema.

use std::path::Path;
use std::process::Command;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{versions, Miglock};

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
