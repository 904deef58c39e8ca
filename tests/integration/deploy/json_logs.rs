//! `--log-format json` (`MIGLOCK_LOG_FORMAT=json`): every line on stderr
//! is one JSON object, whatever happened (applied, failed, many targets,
//! a command line refused), with the text line's token as `event` and its
//! `key=value` pairs as `fields`. The harness's secret sweep runs on these
//! lines as on the text ones.

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{apply, two_migrations, Miglock, MigrationDir, RunOutput};

/// Each stderr line, parsed; panics on a line that is not a JSON object.
#[track_caller]
fn lines(out: &RunOutput) -> Vec<Value> {
    out.stderr
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", out.details()));
            assert!(value.is_object(), "{line}");
            for key in ["time", "level", "message"] {
                assert!(value.get(key).is_some(), "no {key}: {line}");
            }
            value
        })
        .collect()
}

fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().filter_map(|l| l["event"].as_str()).collect()
}

#[test]
fn every_line_is_a_json_object_when_migrations_apply_and_when_one_fails() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let out = apply(&db, &dir).args(["--log-format", "json"]).run();
    out.assert_success();
    let logged = lines(&out);
    let found = events(&logged);
    for event in [
        "LOCK_ACQUIRED",
        "MIGRATION_APPLIED",
        "SCHEMA_CURRENT",
        "LOCK_RELEASED",
    ] {
        assert!(found.contains(&event), "no {event} in {found:?}");
    }
    let applied: Vec<i64> = logged
        .iter()
        .filter(|l| l["event"] == "MIGRATION_APPLIED")
        .map(|l| l["fields"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(applied, [1, 2]);
    // All at info, but the lint's warnings (an `int` column), whose
    // fields parse as every line's do.
    let lint: Vec<&Value> = logged
        .iter()
        .filter(|l| l["event"] == "LINT_WARNING")
        .collect();
    assert!(lint.iter().all(|l| l["level"] == "WARN"
        && l["fields"]["rule"] == "prefer-bigint-over-int"
        && l["fields"]["line"] == 1));
    assert!(
        logged
            .iter()
            .filter(|l| l["event"] != "LINT_WARNING")
            .all(|l| l["level"] == "INFO"),
        "{logged:?}"
    );

    let failing = MigrationDir::with(&[("V1__broken.sql", "SELECT nosuch FROM nowhere;")]);
    let db = Cluster::shared().create_db();
    let mut m = apply(&db, &failing);
    m.env("MIGLOCK_LOG_FORMAT", "json");
    let out = m.run();
    out.assert_code(1);
    let logged = lines(&out);
    let error = logged
        .iter()
        .find(|l| l["level"] == "ERROR" && l.get("event").is_none())
        .expect("the error line");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("migration V1__broken failed"),
        "{error}"
    );
    assert!(events(&logged).contains(&"MIGRATION_FAILED"));
}

#[test]
fn many_targets_and_a_refused_command_line_log_json_too() {
    let dbs: Vec<_> = (0..2).map(|_| Cluster::shared().create_db()).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.txt");
    let urls: Vec<String> = dbs.iter().map(|db| db.url()).collect();
    std::fs::write(&file, urls.join("\n")).unwrap();
    let migrations = two_migrations();
    let out = Miglock::new()
        .args(["apply", "--log-format", "json", "--databases-from"])
        .arg(&file)
        .arg("--migrations")
        .arg(migrations.path())
        .run();
    out.assert_success();
    let logged = lines(&out);
    let done: Vec<&Value> = logged
        .iter()
        .filter(|l| l["event"] == "TARGET_DONE")
        .collect();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|l| l["fields"]["outcome"] == "applied"));
    // A worker's own lines name their target.
    assert!(logged
        .iter()
        .any(|l| l["event"] == "MIGRATION_APPLIED" && l["target"].is_string()));
    assert!(events(&logged).contains(&"SUMMARY"));

    let out = Miglock::new()
        .args(["apply", "--log-format", "json", "--wait", "10x"])
        .run();
    out.assert_code(2);
    let logged = lines(&out);
    assert_eq!(logged[0]["level"], "ERROR");
    assert!(logged[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid value '10x' for '--wait <DURATION>'"));
}
