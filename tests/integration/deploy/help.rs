//! The command line a newcomer meets: each command's help lists its own
//! options, the options that were global still work before the command,
//! another tool's verb gets a hint, and the renamed or relaxed flags
//! (`baseline --baseline-version`, `repair` without `--checksums`) work
//! against a real database.

use crate::cluster::Cluster;
use crate::harness::{two_migrations, Miglock, MigrationDir};

/// The help as printed, its lines joined (clap wraps it to the terminal).
fn help(args: &[&str]) -> String {
    let out = Miglock::new().args(args).run();
    out.assert_success();
    assert!(out.stderr.is_empty(), "{args:?}: {}", out.stderr);
    out.stdout.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn each_command_s_help_lists_only_the_options_it_uses() {
    let database_only = [
        "--database-url",
        "--lock-key",
        "--lock-mode",
        "--ahead",
        "--connect-timeout",
        "--table",
    ];
    for command in ["new", "completions", "man"] {
        for flag in ["-h", "--help"] {
            let text = help(&[command, flag]);
            for option in database_only {
                assert!(
                    !text.contains(option),
                    "{command} {flag} lists {option}:\n{text}"
                );
            }
        }
    }
    for flag in ["-h", "--help"] {
        let text = help(&["completions", flag]);
        assert!(!text.contains("--format"), "{text}");
        assert!(text.contains("<SHELL> The shell to complete for"), "{text}");
        let text = help(&["unlock", flag]);
        for option in ["--migrations", "--ahead", "--lock-mode", "--wait"] {
            assert!(!text.contains(option), "unlock lists {option}:\n{text}");
        }
        let text = help(&["apply", flag]);
        for heading in [
            "Migrations:",
            "Connection:",
            "Lock:",
            "Table locks:",
            "Many databases:",
            "Output:",
        ] {
            assert!(text.contains(heading), "apply {flag}: {heading}\n{text}");
        }
        assert!(text.contains("--wait <DURATION>"), "{text}");
        assert!(text.contains("[env: MIGLOCK_MIGRATIONS] [default: migrations]"));
        assert!(!text.contains("=]"), "{text}");
    }
    let text = help(&["apply", "--help"]);
    assert!(text.contains("MIGLOCK_INSTANCE"), "{text}");
    assert!(text.contains("Examples:"), "{text}");
}

#[test]
fn the_options_that_were_global_still_work_before_the_command() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let out = Miglock::for_db(&db)
        .args(["--format", "json", "--migrations"])
        .arg(dir.path())
        .args(["--table", "app_history", "apply"])
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["outcome"], "applied", "{json:#}");
    assert_eq!(db.history_of("app_history"), [1, 2]);
    assert!(!db.table_exists("refinery_schema_history"));

    // As the README's scripts write it.
    let out = Miglock::for_db(&db)
        .args([
            "--format",
            "json",
            "status",
            "--table",
            "app_history",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["command"], "status");
    assert_eq!(json["outcome"], "current", "{json:#}");
}

#[test]
fn an_option_the_command_does_not_use_is_ignored_with_a_warning() {
    let dir = MigrationDir::new();
    let out = Miglock::new()
        .args(["--lock-key", "5", "new", "add_users", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stderr_contains("--lock-key does nothing for miglock new: ignored");
    assert!(dir.path().join("V1__add_users.sql").is_file());
    let out = Miglock::new()
        .args(["completions", "bash", "--format", "json"])
        .run();
    out.assert_success()
        .assert_stderr_contains("warning: --format does nothing for miglock completions: ignored")
        .assert_stdout_contains("_miglock()");
}

#[test]
fn other_tools_verbs_get_a_hint_and_exit_2() {
    for (verb, hint) in [
        ("migrate", "tip: did you mean 'miglock apply'?"),
        ("up", "tip: did you mean 'miglock apply'?"),
        ("create", "tip: did you mean 'miglock new NAME'?"),
        ("rollback", "tip: did you mean 'miglock down --to VERSION'?"),
    ] {
        let out = Miglock::new().arg(verb).run();
        out.assert_code(2)
            .assert_stderr_contains(&format!("unrecognized subcommand '{verb}'"))
            .assert_stderr_contains(hint);
        assert!(out.stdout.is_empty(), "{verb}: {}", out.stdout);
    }
    // With --format json, the JSON result too.
    let out = Miglock::new().args(["--format", "json", "up"]).run();
    out.assert_code(2)
        .assert_stderr_contains("tip: did you mean 'miglock apply'?");
    let json = out.json();
    assert_eq!(json["outcome"], "usage");
    assert_eq!(json["error"]["message"], "unrecognized subcommand 'up'");
}

#[test]
fn baseline_takes_baseline_version_and_the_old_spelling_with_a_warning() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let run = |args: &[&str]| {
        Miglock::for_db(&db)
            .args(["baseline", "--format", "json", "--migrations"])
            .arg(dir.path())
            .args(args)
            .run()
    };
    let out = run(&["--baseline-version", "1"]);
    out.assert_success();
    assert!(!out.stderr.contains("old spelling"), "{}", out.stderr);
    assert_eq!(out.json()["outcome"], "baselined");
    assert_eq!(db.history(), [1]);

    let out = run(&["--version", "2"]);
    out.assert_success().assert_stderr_contains(
        "baseline --version N is now --baseline-version N: the old spelling is accepted until the next release",
    );
    assert_eq!(db.history(), [1, 2]);

    // -V prints miglock's version, as for every other command.
    let out = Miglock::new().args(["baseline", "-V"]).run();
    out.assert_success()
        .assert_stdout_contains(env!("CARGO_PKG_VERSION"));
    let out = Miglock::new().args(["baseline"]).run();
    out.assert_code(2)
        .assert_stderr_contains("--baseline-version <VERSION>");
}

#[test]
fn repair_needs_no_checksums_flag_and_still_takes_it() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_success();
    dir.file("V1__create_t.sql", "-- edited\nCREATE TABLE t (id int);\n");
    let before: Vec<String> = db
        .query_strings("SELECT checksum FROM refinery_schema_history ORDER BY version")
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    for args in [&["--dry-run"][..], &["--checksums", "--dry-run"]] {
        let out = Miglock::for_db(&db)
            .args(["repair", "--format", "json", "--migrations"])
            .arg(dir.path())
            .args(args)
            .run();
        out.assert_success();
        let json = out.json();
        assert_eq!(json["outcome"], "repaired", "{args:?}");
        assert_eq!(json["repaired"][0]["version"], 1, "{args:?}");
    }
    let out = Miglock::for_db(&db)
        .args(["repair", "--yes", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stderr_contains("CHECKSUM_REPAIRED version=1");
    let after: Vec<String> = db
        .query_strings("SELECT checksum FROM refinery_schema_history ORDER BY version")
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
}
