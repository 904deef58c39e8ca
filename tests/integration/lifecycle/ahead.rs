//! A database ahead of the files: a newer release applied migrations an
//! older image (a replica not yet replaced in a rolling deploy, or the
//! image rolled back to) has no file for. Those count as current unless
//! `--ahead reject`; a gap below the newest file is still refused.

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    migrated_by_newer_release, release, versions, Miglock, MigrationDir, RunOutput,
};

fn run(db: &TestDb, dir: &MigrationDir, args: &[&str]) -> RunOutput {
    Miglock::for_db(db)
        .args(args)
        .arg("--migrations")
        .arg(dir.path())
        .run()
}

/// Every command that checks the history against the files.
const EVERY_CHECK: [&[&str]; 4] = [
    &["apply"],
    &["apply", "--dry-run"],
    &["wait", "--timeout", "60s"],
    &["status", "--check"],
];

#[track_caller]
fn assert_one_ahead_line(out: &RunOutput) {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("SCHEMA_AHEAD"))
        .collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(
        lines[0].contains("SCHEMA_AHEAD newest_local=V4 ahead=V5__add_d"),
        "{out:?}"
    );
}

#[track_caller]
fn assert_ahead_json(json: &Value) {
    assert_eq!(versions(&json["ahead"]), [5], "{json:#}");
    assert_eq!(json["ahead"][0]["name"], "add_d", "{json:#}");
    assert!(
        json["ahead"][0]["applied_on"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{json:#}"
    );
    assert_eq!(json["pending"], serde_json::json!([]), "{json:#}");
    assert!(json.get("problems").is_none(), "{json:#}");
}

#[test]
fn apply_on_a_newer_schema_is_current() {
    let db = migrated_by_newer_release();
    let old = release(4);
    let out = run(&db, &old, &["apply", "--format", "json"]);
    out.assert_success();
    assert_one_ahead_line(&out);
    let json = out.json();
    assert_eq!(json["outcome"], "current", "{json:#}");
    assert_ahead_json(&json);
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);

    // Text mode says so too, and the environment variable works as the flag.
    let out = Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(old.path())
        .env("MIGLOCK_AHEAD", "allow")
        .run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT version=V5__add_d applied=5");
    assert_one_ahead_line(&out);
}

#[test]
fn dry_run_on_a_newer_schema_is_current() {
    let db = migrated_by_newer_release();
    let out = run(
        &db,
        &release(4),
        &["apply", "--dry-run", "--format", "json"],
    );
    out.assert_success();
    assert_one_ahead_line(&out);
    assert_ahead_json(&out.json());
}

#[test]
fn wait_on_a_newer_schema_returns_at_once() {
    let db = migrated_by_newer_release();
    let out = run(
        &db,
        &release(4),
        &["wait", "--timeout", "60s", "--format", "json"],
    );
    out.assert_success();
    assert_one_ahead_line(&out);
    let json = out.json();
    assert_eq!(json["outcome"], "current", "{json:#}");
    assert_ahead_json(&json);
}

#[test]
fn status_lists_what_a_newer_release_applied() {
    let db = migrated_by_newer_release();
    let old = release(4);
    let out = run(&db, &old, &["status"]);
    out.assert_success()
        .assert_stdout_contains("Ahead (1): applied by a newer release")
        .assert_stdout_contains("  V5__add_d  ")
        .assert_stdout_contains("Status      current (nothing pending)");
    run(&db, &old, &["status", "--check"]).assert_success();
    let out = run(&db, &old, &["status", "--check", "--format", "json"]);
    out.assert_success();
    let json = out.json();
    assert_ahead_json(&json);
    // `applied` is the whole history, the newer release's rows included.
    assert_eq!(versions(&json["applied"]), [1, 2, 3, 4, 5], "{json:#}");
}

#[test]
fn nothing_ahead_is_an_empty_list() {
    let db = Cluster::shared().create_db();
    let dir = release(2);
    let json = run(&db, &dir, &["apply", "--format", "json"])
        .assert_success()
        .json();
    assert_eq!(json["ahead"], serde_json::json!([]), "{json:#}");
    for args in [&["status"][..], &["wait"], &["apply", "--dry-run"]] {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let out = run(&db, &dir, &args);
        out.assert_success();
        assert!(!out.stderr.contains("SCHEMA_AHEAD"), "{out:?}");
        assert_eq!(out.json()["ahead"], serde_json::json!([]), "{args:?}");
    }
}

#[test]
fn ahead_reject_refuses_a_newer_schema() {
    let db = migrated_by_newer_release();
    let old = release(4);
    for args in EVERY_CHECK {
        let mut args = args.to_vec();
        args.extend(["--format", "json", "--ahead", "reject"]);
        let out = run(&db, &old, &args);
        out.assert_code(6);
        let json = out.json();
        let problems = json["problems"].as_array().expect("problems");
        assert_eq!(problems.len(), 1, "{args:?} {json:#}");
        assert_eq!(problems[0]["kind"], "ahead", "{json:#}");
        assert_eq!(problems[0]["version"], 5, "{json:#}");
        let message = problems[0]["message"].as_str().unwrap();
        assert!(message.contains("newer than this image"), "{message}");
        assert!(!message.contains("gone"), "{message}");
        assert!(!out.stderr.contains("SCHEMA_AHEAD"), "{out:?}");
    }
    // The environment variable, in text mode.
    Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(old.path())
        .env("MIGLOCK_AHEAD", "reject")
        .run()
        .assert_code(6)
        .assert_stderr_contains("V5__add_d was applied on")
        .assert_stderr_contains("newer than this image, whose newest migration is V4");
    // A typo is a usage error, not a silent default.
    Miglock::for_db(&db)
        .args(["status", "--migrations"])
        .arg(old.path())
        .env("MIGLOCK_AHEAD", "rejct")
        .run()
        .assert_code(2);
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);
}

#[test]
fn a_file_gone_below_the_newest_file_is_still_missing() {
    let db = migrated_by_newer_release();
    let old = release(4);
    old.remove("V2__add_a.sql");
    for args in EVERY_CHECK {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let out = run(&db, &old, &args);
        out.assert_code(6);
        let json = out.json();
        let problems = json["problems"].as_array().expect("problems");
        // V2 is missing; V5 is only ahead, and no problem.
        assert_eq!(problems.len(), 1, "{args:?} {json:#}");
        assert_eq!(problems[0]["kind"], "missing", "{json:#}");
        assert_eq!(problems[0]["version"], 2, "{json:#}");
        assert!(
            problems[0]["message"]
                .as_str()
                .unwrap()
                .contains("its file is gone"),
            "{json:#}"
        );
    }
}

#[test]
fn a_changed_file_is_still_divergent_on_a_newer_schema() {
    let db = migrated_by_newer_release();
    let old = release(4);
    old.file("V3__add_b.sql", "ALTER TABLE t ADD COLUMN b varchar;\n");
    let json = run(&db, &old, &["apply", "--format", "json"])
        .assert_code(6)
        .json();
    let kinds: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["divergent"], "{json:#}");
}

#[test]
fn an_empty_folder_is_not_taken_for_an_old_release() {
    let db = migrated_by_newer_release();
    let empty = MigrationDir::new();
    let json = run(&db, &empty, &["apply", "--format", "json"])
        .assert_code(6)
        .json();
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 5, "{json:#}");
    assert!(problems.iter().all(|p| p["kind"] == "missing"), "{json:#}");
}
