//! `--metrics-file`: the run's figures in Prometheus's text format, for a
//! single target and for many (a failed one and one never started
//! included), written whole or not at all.

use std::collections::BTreeMap;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, two_migrations, Miglock};

/// The samples of a metrics file, `name{labels}` → value; panics on a line
/// that is neither a comment nor a sample.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut found = BTreeMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP miglock_") || comment.starts_with("TYPE miglock_"),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(
            series.starts_with("miglock_") && series.ends_with('}'),
            "{line}"
        );
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(
            found.insert(series.to_string(), value).is_none(),
            "twice: {line}"
        );
    }
    found
}

fn target(db: &TestDb) -> String {
    format!("postgres@127.0.0.1:{}/{}", db.cluster().port(), db.name())
}

#[test]
fn one_target_writes_its_figures_and_an_unwritable_file_is_a_warning() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("miglock.prom");
    apply(&db, &dir)
        .arg("--metrics-file")
        .arg(&file)
        .run()
        .assert_success();
    let found = samples(&std::fs::read_to_string(&file).unwrap());
    let labels = format!("command=\"apply\",target=\"{}\"", target(&db));
    assert_eq!(found["miglock_run_exit_code{command=\"apply\"}"], 0.0);
    assert_eq!(
        found[&format!("miglock_target_outcome{{{labels},outcome=\"applied\"}}")],
        1.0
    );
    assert_eq!(
        found[&format!("miglock_target_migrations_applied{{{labels}}}")],
        2.0
    );
    assert_eq!(
        found[&format!("miglock_target_migrations_pending{{{labels}}}")],
        0.0
    );
    // Written through a temporary file renamed over it: nothing else left.
    let names: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);

    let out = apply(&db, &dir)
        .arg("--metrics-file")
        .arg(out_dir.path().join("no/such/folder/miglock.prom"))
        .run();
    out.assert_success()
        .assert_stderr_contains("METRICS_NOT_WRITTEN path=");
}

#[test]
fn many_targets_write_one_series_per_target_never_started_included() {
    let dbs: Vec<TestDb> = (0..3).map(|_| Cluster::shared().create_db()).collect();
    dbs[0]
        .client()
        .batch_execute("CREATE TABLE t (other int)")
        .unwrap();
    let list_dir = tempfile::tempdir().unwrap();
    let list = list_dir.path().join("targets.txt");
    let urls: Vec<String> = dbs.iter().map(|db| db.url()).collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    let file = list_dir.path().join("fleet.prom");
    let dir = two_migrations();
    let out = Miglock::new()
        .args(["apply", "--jobs", "1", "--fail-fast", "--databases-from"])
        .arg(&list)
        .arg("--migrations")
        .arg(dir.path())
        .arg("--metrics-file")
        .arg(&file)
        .run();
    out.assert_code(1);
    let found = samples(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(found["miglock_run_exit_code{command=\"apply\"}"], 1.0);
    assert_eq!(found["miglock_run_targets{command=\"apply\"}"], 3.0);
    // Each series names the targets file's line too: two lines may name
    // one database.
    let outcome = |line: usize, outcome: &str| {
        found.get(&format!(
            "miglock_target_outcome{{command=\"apply\",target=\"{}\",line=\"{line}\",outcome=\"{outcome}\"}}",
            target(&dbs[line - 1])
        ))
    };
    assert_eq!(outcome(1, "failed"), Some(&1.0));
    assert_eq!(outcome(2, "not_started"), Some(&1.0));
    assert_eq!(outcome(3, "not_started"), Some(&1.0));
    assert_eq!(
        found[&format!(
            "miglock_target_exit_code{{command=\"apply\",target=\"{}\",line=\"1\"}}",
            target(&dbs[0])
        )],
        1.0
    );
    // A target never started has an outcome and no other figure.
    let second = target(&dbs[1]);
    assert_eq!(found.keys().filter(|k| k.contains(&second)).count(), 1);
}
