//! `--set` and `MIGLOCK_SET`: names that are no setting names, values the
//! server refuses, SQL in a value. Refused as usage errors (exit 2),
//! before connecting when the form is wrong, before taking the lock when
//! the server says no; nothing touched.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::harness::{apply, MigrationDir};
use crate::probes::key_holders;

use super::{apply_without_db, assert_usage, bad, bad_input_db, create_t, HISTORY};

#[test]
fn a_setting_name_with_a_semicolon_is_refused() {
    bad(
        "apply",
        &["--set", "a;b=1"],
        2,
        "usage",
        &["\"a;b\" is not a setting name"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn a_setting_name_with_a_space_in_the_environment_is_refused() {
    bad(
        "apply",
        &[],
        2,
        "usage",
        &["\"bad name\" is not a setting name"],
    )
    .env("MIGLOCK_SET", "bad name=1")
    .assert_refused(&bad_input_db());
}

/// The value reaches the server as a quoted literal: the attempt to end
/// it and drop table `y` is an invalid value, and `y` stays.
#[test]
fn a_setting_value_cannot_inject_sql() {
    bad(
        "apply",
        &["--set", "statement_timeout=1'; DROP TABLE y; --"],
        2,
        "usage",
        &[
            "invalid value for parameter \"statement_timeout\"",
            "SQLSTATE 22023",
        ],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn an_unknown_setting_is_refused() {
    bad(
        "apply",
        &["--set", "no_such_setting=1"],
        2,
        "usage",
        &["unrecognized configuration parameter \"no_such_setting\""],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn malformed_settings_are_usage_errors_before_any_connection() {
    let dir = create_t();
    // Nothing listens there: a connection attempt would retry for 30 s.
    let nowhere = "postgres://u@127.0.0.1:1/db";
    let long = format!("search_path={}", "s".repeat(9000));
    for (set, message) in [
        ("a..b=1", "\"a..b\" is not a setting name"),
        ("app.=1", "\"app.\" is not a setting name"),
        ("1x=1", "\"1x\" is not a setting name"),
        ("work-mem=1MB", "\"work-mem\" is not a setting name"),
        (
            long.as_str(),
            "the value of search_path is too long (9000 bytes",
        ),
    ] {
        let started = Instant::now();
        let out = apply_without_db(&dir)
            .env("DATABASE_URL", nowhere)
            .args(["--set", set])
            .run();
        assert_usage(&out, message);
        assert!(!out.stderr.contains("CONNECT_RETRY"), "{}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(10), "{set}");
    }
    let out = apply_without_db(&dir)
        .env("DATABASE_URL", nowhere)
        .env("MIGLOCK_SET", format!("work_mem=1MB;{long}"))
        .run();
    assert_usage(&out, "MIGLOCK_SET: the value of search_path is too long");
}

#[test]
fn settings_the_server_refuses_are_usage_errors_that_touch_nothing() {
    let db = Cluster::shared().create_db();
    let dir = create_t();
    for (args, dry_run, message, sqlstate) in [
        (
            vec!["--set", "no_such_setting=1"],
            false,
            "unrecognized configuration parameter \"no_such_setting\"",
            "42704",
        ),
        (
            vec!["--set", "work_mem=1MB", "--set", "statement_timeout=soon"],
            false,
            "invalid value for parameter \"statement_timeout\"",
            "22023",
        ),
        (
            vec!["--set", "no_such_setting=1", "--dry-run"],
            true,
            "unrecognized configuration parameter \"no_such_setting\"",
            "42704",
        ),
    ] {
        let out = apply(&db, &dir).args(&args).run();
        assert_usage(&out, message);
        let setting = args[args.len() - if dry_run { 2 } else { 1 }];
        let (name, value) = setting.split_once('=').unwrap();
        out.assert_stderr_contains(&format!(
            "the setting {name}=\"{value}\" (--set or MIGLOCK_SET) is refused by the server"
        ))
        .assert_stderr_contains("nothing was changed");
        assert!(!out.stderr.contains("LOCK_ACQUIRED"), "{}", out.stderr);
        assert_eq!(out.json()["error"]["sqlstate"], sqlstate);
        assert!(!db.table_exists(HISTORY), "{args:?}: nothing was touched");
        assert!(!db.table_exists("t"));
        assert!(key_holders(&db, db.default_key()).is_empty());
    }
    // The same from MIGLOCK_SET.
    let out = apply(&db, &dir)
        .env(
            "MIGLOCK_SET",
            "work_mem=1MB;search_path=public;lock_timeout=never",
        )
        .run();
    assert_usage(&out, "invalid value for parameter \"lock_timeout\"");
    out.assert_stderr_contains("the setting lock_timeout=\"never\"");
    assert!(!db.table_exists(HISTORY));

    // Accepted settings go through, also when nothing is pending.
    apply(&db, &dir)
        .args(["--set", "work_mem=2MB", "--set", "app.note=it's fine"])
        .run()
        .assert_success();
    assert_eq!(db.history(), [1]);
    apply(&db, &dir)
        .args(["--set", "app.note=again"])
        .run()
        .assert_success();
    // And a refused one is reported on a current schema too.
    let out = apply(&db, &dir).args(["--set", "no_such_setting=1"]).run();
    assert_usage(&out, "unrecognized configuration parameter");
}

#[test]
fn a_search_path_without_a_schema_names_the_fix() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[("V1__t.sql", "CREATE TABLE public.t (a int);\n")]);
    let out = apply(&db, &dir)
        .args(["--set", "search_path=nowhere"])
        .run();
    out.assert_code(2)
        .assert_stderr_contains("selects no existing schema")
        .assert_stderr_contains("--table schema.table");
}
