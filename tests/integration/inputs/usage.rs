//! Bad flags and environment variables, and commands that make no sense:
//! usage errors (exit 2), refused before anything is touched, with the
//! JSON result wherever the format is known; `RUN_MIGRATIONS=0` wins
//! over all of them.

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{apply, Miglock};

use super::{
    assert_json, assert_run, assert_untouched, assert_usage_untouched, bad, bad_input_db, good_dir,
    run_text_and_json, usage_setup, with_port,
};

struct Usage {
    case: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    needles: Vec<&'static str>,
}

fn usage(
    case: &'static str,
    args: &[&str],
    env: &[(&'static str, &str)],
    needles: &[&'static str],
) -> Usage {
    Usage {
        case,
        args: args.iter().map(|a| a.to_string()).collect(),
        env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        needles: needles.to_vec(),
    }
}

/// Refused by the command-line parser, before miglock knows the format, so
/// there is no JSON result to check (see
/// `parser_errors_still_print_the_json_result`).
#[test]
fn command_line_usage_errors() {
    let (db, dir) = usage_setup();
    let cases = [
        usage(
            "--wait abc",
            &["--wait", "abc"],
            &[],
            &[
                "invalid value 'abc' for '--wait <DURATION>'",
                "invalid duration",
            ],
        ),
        // Written with `=` the value reaches the duration parser.
        usage(
            "--wait=-5s",
            &["--wait=-5s"],
            &[],
            &[
                "invalid value '-5s' for '--wait <DURATION>'",
                "invalid duration",
            ],
        ),
        // Without `=`, clap reads `-5s` as short flags ("unexpected argument
        // '-5' found"); either wording quotes the value.
        usage("--wait -5s", &["--wait", "-5s"], &[], &["'-5"]),
        usage(
            "--connect-timeout 10parsecs",
            &["--connect-timeout", "10parsecs"],
            &[],
            &[
                "invalid value '10parsecs' for '--connect-timeout <DURATION>'",
                "unknown unit \"parsecs\"",
            ],
        ),
        usage(
            "MIGLOCK_WAIT=abc",
            &[],
            &[("MIGLOCK_WAIT", "abc")],
            &["for '--wait <DURATION>'", "invalid duration \"abc\""],
        ),
        usage(
            "--lock-key -1",
            &["--lock-key", "-1"],
            &[],
            &[
                "invalid value '-1' for '--lock-key <KEY>'",
                "below 0: a lock key is a whole number from 0 to 9223372036854775807",
            ],
        ),
        usage(
            "--lock-key abc",
            &["--lock-key", "abc"],
            &[],
            &["invalid value 'abc' for '--lock-key <KEY>'"],
        ),
        usage(
            "--lock-key overflow",
            &["--lock-key", "99999999999999999999"],
            &[],
            &[
                "invalid value '99999999999999999999' for '--lock-key <KEY>'",
                "above 9223372036854775807: a lock key is a whole number",
            ],
        ),
        usage(
            "--target 0",
            &["--target", "0"],
            &[],
            &[
                "invalid value '0' for '--target <VERSION>'",
                "below 1: a version is a whole number from 1 to 9223372036854775807",
            ],
        ),
        usage(
            "--format xml",
            &["--format", "xml"],
            &[],
            &[
                "invalid value 'xml' for '--format <FORMAT>'",
                "[possible values: text, json]",
            ],
        ),
        usage(
            "unknown flag",
            &["--no-such-flag"],
            &[],
            &["unexpected argument '--no-such-flag' found"],
        ),
    ];
    for case in cases {
        let mut m = Miglock::for_db(&db);
        m.args(["apply", "--migrations"])
            .arg(dir.path())
            .args(&case.args);
        for (k, v) in &case.env {
            m.env(k, v);
        }
        let out = m.run();
        let mut needles = vec!["error: "];
        needles.extend(&case.needles);
        assert_run(case.case, &out, 2, &needles);
        assert_usage_untouched(case.case, &db);
    }
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let (db, dir) = usage_setup();
    // Alone: the help goes to stderr, since the invocation was wrong.
    let out = Miglock::for_db(&db).run();
    assert_run(
        "no arguments",
        &out,
        2,
        &["Usage: miglock <COMMAND>", "apply"],
    );
    let out = Miglock::for_db(&db)
        .arg("--migrations")
        .arg(dir.path())
        .run();
    assert_run(
        "options without a subcommand",
        &out,
        2,
        &["requires a subcommand but one was not provided", "apply"],
    );
    assert_usage_untouched("no subcommand", &db);
}

/// Refused by miglock itself, after parsing: the JSON result is printed.
#[test]
fn configuration_usage_errors() {
    let (db, dir) = usage_setup();
    let long_table = "t".repeat(64);
    let invalid_table = "invalid history table name";
    let cases = [
        usage(
            "--table injection",
            &["--table", "x; drop table y"],
            &[],
            &[invalid_table, "\"x; drop table y\"", "unexpected character"],
        ),
        usage(
            "--table double quote",
            &["--table", "a\"b"],
            &[],
            &[invalid_table, "unexpected character"],
        ),
        usage(
            "--table single quote",
            &["--table", "a'b"],
            &[],
            &[invalid_table, "\"a'b\"", "unexpected character"],
        ),
        usage(
            "--table 64 chars",
            &["--table", &long_table],
            &[],
            &[invalid_table, "longer than 63 bytes"],
        ),
        usage(
            "--table a.b.c",
            &["--table", "a.b.c"],
            &[],
            &[invalid_table, "more than one '.'"],
        ),
        usage(
            "MIGLOCK_TABLE injection",
            &[],
            &[("MIGLOCK_TABLE", "y; DROP TABLE y")],
            &[invalid_table],
        ),
        usage(
            "MIGRATION_LOCK_WAIT_SECONDS=x",
            &[],
            &[("MIGRATION_LOCK_WAIT_SECONDS", "x")],
            &["MIGRATION_LOCK_WAIT_SECONDS: invalid duration \"x\""],
        ),
        usage(
            "RUN_MIGRATIONS=maybe",
            &[],
            &[("RUN_MIGRATIONS", "maybe")],
            &[
                "RUN_MIGRATIONS=\"maybe\" is not understood",
                "0/false/no/off",
            ],
        ),
        usage(
            "RUN_MIGRATIONS empty",
            &[],
            &[("RUN_MIGRATIONS", "")],
            &["RUN_MIGRATIONS=\"\" is not understood"],
        ),
        usage(
            // The folder's newest file is V100.
            "--target beyond",
            &["--target", "101"],
            &[],
            &["--target 101 is beyond the newest migration", "(V100)"],
        ),
    ];
    for case in cases {
        let mut m = Miglock::for_db(&db);
        m.args(["apply", "--migrations"])
            .arg(dir.path())
            .args(&case.args);
        for (k, v) in &case.env {
            m.env(k, v);
        }
        let (text, json) = run_text_and_json(&mut m);
        assert_run(case.case, &text, 2, &case.needles);
        assert_run(case.case, &json, 2, &case.needles);
        assert_json(case.case, &json, 2, "usage", &case.needles);
        assert_usage_untouched(case.case, &db);
    }
}

#[test]
fn parser_errors_still_print_the_json_result() {
    // CONTRACT.md: `--format json` prints one JSON object describing the
    // result, and `usage` is one of the outcomes. A typo in MIGLOCK_WAIT
    // must not leave a JSON-reading entrypoint with empty stdout.
    let (db, dir) = usage_setup();
    let out = Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .env("MIGLOCK_FORMAT", "json")
        .env("MIGLOCK_WAIT", "abc")
        .run();
    assert_run("MIGLOCK_WAIT=abc json", &out, 2, &["invalid duration"]);
    assert_json(
        "MIGLOCK_WAIT=abc json",
        &out,
        2,
        "usage",
        &["invalid duration"],
    );
    assert_usage_untouched("MIGLOCK_WAIT=abc json", &db);
}

#[test]
fn disabled_gate_wins_over_everything_else() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let missing = dir.path().join("no-such-folder");
    let malformed = with_port(&db, "notaport");
    for value in ["0", "false", "no", "off", "OFF", " 0 "] {
        let case = format!("RUN_MIGRATIONS={value:?}");
        // With everything valid: the gate alone stops it.
        let valid = run_text_and_json(
            Miglock::for_db(&db)
                .args(["apply", "--migrations"])
                .arg(dir.path())
                .env("RUN_MIGRATIONS", value),
        );
        // With a malformed URL, a missing folder and a bad table: the gate is
        // checked before any of them.
        let broken = run_text_and_json(
            Miglock::new()
                .args(["apply", "--migrations"])
                .arg(&missing)
                .args(["--database-url", &malformed])
                .env("MIGLOCK_TABLE", "x; drop table y")
                .env("RUN_MIGRATIONS", value),
        );
        for (variant, (text, json)) in [("valid", valid), ("broken", broken)] {
            let case = format!("{case} {variant}");
            for out in [&text, &json] {
                assert_run(&case, out, 4, &["MIGRATIONS_DISABLED"]);
                assert!(
                    !out.stderr.contains("error:"),
                    "[{case}] disabled is not an error\n{}",
                    out.details()
                );
            }
            let value: Value = serde_json::from_str(&json.stdout)
                .unwrap_or_else(|e| panic!("[{case}] not JSON: {e}\n{}", json.details()));
            assert_eq!(value["outcome"], "disabled", "[{case}] {value:#}");
            assert_eq!(value["exit_code"], 4, "[{case}] {value:#}");
            assert_eq!(value["error"], Value::Null, "[{case}] {value:#}");
            assert_untouched(&case, &db);
        }
    }
}

#[test]
fn odd_command_lines_are_usage_errors_without_echoing_secrets() {
    let (db, dir) = usage_setup();
    // A connection string given as a positional argument by mistake.
    let out = Miglock::new()
        .args(["apply", "--format", "json"])
        .arg(db.url())
        .run();
    out.assert_code(2)
        .assert_stderr_contains("unexpected argument '<connection string>'");
    assert_eq!(out.json()["outcome"], "usage");
    // Without its scheme, as a variable's assignment, as a flag's value,
    // or quoted shortened by a value's own refusal.
    for (args, secret) in [
        (&["apply", "app:Zq7Xk9Wp@db/app"][..], "Zq7Xk9Wp"),
        (&["apply", "admin@srv:Zq7Xk9Wp@db/app"][..], "Zq7Xk9Wp"),
        (&["apply", "PGPASSWORD=Zq7Xk9Wp"][..], "Zq7Xk9Wp"),
        (
            &["apply", "--wait=postgres://u:Zq7Xk9Wp@h/d"][..],
            "Zq7Xk9Wp",
        ),
        (
            &[
                "apply",
                "--wait",
                "postgres://deploy:Zq7Xk9Wp@db.internal.example.com/app",
            ][..],
            "Zq7Xk9Wp",
        ),
    ] {
        let out = Miglock::new().args(args).args(["--format", "json"]).run();
        out.assert_code(2);
        assert_eq!(out.json()["outcome"], "usage", "{}", out.details());
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{args:?}: the password is shown\n{}",
            out.details()
        );
        assert!(
            out.stderr.contains("<connection string>"),
            "{}",
            out.details()
        );
    }
    // Timeouts PostgreSQL cannot hold.
    apply(&db, &dir)
        .args(["--statement-timeout", "30d"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("too long for a PostgreSQL timeout");
    // An argument that is not UTF-8.
    let out = Miglock::for_db(&db)
        .args(["apply", "--wait", "bogus", "--migrations"])
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff"))
        .run();
    out.assert_code(2);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_usage_untouched("odd command lines", &db);
}

// ---------------------------------------------------------------------------
// One bad value each, for every command
// ---------------------------------------------------------------------------

#[test]
fn ddl_retries_above_100000_are_refused() {
    bad(
        "apply",
        &["--ddl-retries", "100001"],
        2,
        "usage",
        &["above 100000: the number of retries is a whole number from 0 to 100000"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn negative_ddl_retries_are_refused() {
    bad(
        "apply",
        &["--ddl-retries", "-1"],
        2,
        "usage",
        &["unexpected argument '-1'"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn a_statement_timeout_over_366_days_is_refused() {
    bad(
        "apply",
        &["--statement-timeout", "400d"],
        2,
        "usage",
        &["duration \"400d\" is too long (at most 366 days)"],
    )
    .assert_refused(&bad_input_db());
}

/// A sum of u64::MAX seconds and a second of nanoseconds: the duration
/// parser's own overflow aborted the process (exit 134) before the check.
#[test]
fn a_connect_timeout_summing_past_u64_seconds_is_refused() {
    bad(
        "apply",
        &["--connect-timeout", "18446744073709551615s 1000ms"],
        2,
        "usage",
        &["is too long (at most 366 days)"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn a_wait_in_exponent_notation_is_refused() {
    bad(
        "apply",
        &["--wait", "1e3"],
        2,
        "usage",
        &["invalid duration \"1e3\""],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn a_target_that_is_no_number_is_refused() {
    bad(
        "apply",
        &["--target", "abc"],
        2,
        "usage",
        &["invalid value 'abc' for '--target <VERSION>'"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn a_negative_target_is_refused() {
    bad(
        "apply",
        &["--target", "-1"],
        2,
        "usage",
        &["unexpected argument '-1'"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn a_negative_lock_key_in_the_environment_is_refused() {
    bad(
        "apply",
        &[],
        2,
        "usage",
        &["below 0: a lock key is a whole number from 0 to 9223372036854775807"],
    )
    .env("MIGLOCK_LOCK_KEY", "-5")
    .assert_refused(&bad_input_db());
}

#[test]
fn an_empty_table_name_is_refused() {
    bad(
        "apply",
        &["--table", ""],
        2,
        "usage",
        &["invalid history table name \"\": empty name"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn a_non_ascii_table_name_is_refused() {
    bad(
        "apply",
        &["--table", "tablé"],
        2,
        "usage",
        &["\"tablé\": unexpected character"],
    )
    .assert_refused(&bad_input_db());
}

/// Not a usage error: the name is fine, the table is no history table.
/// It fails (exit 1), and the application's table is left as it was.
#[test]
fn an_application_table_given_as_the_history_table_is_left_alone() {
    bad(
        "apply",
        &["--table", "users"],
        1,
        "failed",
        &[
            "cannot read the history table users",
            "column \"version\" does not exist (SQLSTATE 42703)",
        ],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn status_refuses_a_table_name_with_sql_in_it() {
    bad(
        "status",
        &["--table", "x; drop table y"],
        2,
        "usage",
        &["invalid history table name \"x; drop table y\""],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn wait_refuses_a_timeout_that_is_no_duration() {
    bad(
        "wait",
        &["--timeout", "abc"],
        2,
        "usage",
        &["invalid duration \"abc\""],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn wait_refuses_a_timeout_over_366_days() {
    bad(
        "wait",
        &["--timeout", "400d"],
        2,
        "usage",
        &["is too long (at most 366 days)"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn unlock_refuses_a_negative_lock_key() {
    bad(
        "unlock",
        &["--lock-key", "-1", "--yes"],
        2,
        "usage",
        &["below 0: a lock key is a whole number from 0 to 9223372036854775807"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn unlock_refuses_a_lock_key_that_is_no_number() {
    bad(
        "unlock",
        &["--lock-key", "abc", "--yes"],
        2,
        "usage",
        &["invalid value 'abc' for '--lock-key <KEY>'"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn unlock_refuses_a_table_name_with_a_quote_from_the_environment() {
    bad(
        "unlock",
        &["--yes"],
        2,
        "usage",
        &["invalid history table name"],
    )
    .env("MIGLOCK_TABLE", "a\"b")
    .assert_refused(&bad_input_db());
}
