//! Where options may go, what they mean, and how bad values are refused.

use std::time::Duration;

use super::super::*;
use super::{help, no_vars, parse};

use crate::config::Format;

#[test]
fn cli_definition_is_consistent() {
    command().debug_assert();
}

#[test]
fn options_may_follow_the_command() {
    let cli = parse(&[
        "miglock",
        "apply",
        "--database-url",
        "postgres://u@h/d",
        "--wait",
        "10s",
        "--lock-key",
        "7",
        "--format",
        "json",
    ]);
    let Command::Apply(args) = &cli.command else {
        panic!("apply")
    };
    assert_eq!(args.database.lock_key, Some(7));
    assert_eq!(args.output.format(), Format::Json);
    assert_eq!(args.lock_wait.wait, Duration::from_secs(10));
    assert!(args.lock_wait.wait_given);
}

#[test]
fn the_options_that_were_global_may_come_before_the_command() {
    let cli = parse(&[
        "miglock",
        "--format",
        "json",
        "--database-url",
        "postgres://u@h/d",
        "--migrations",
        "db",
        "--table",
        "app.history",
        "--lock-key",
        "7",
        "--connect-timeout",
        "3s",
        "--ahead",
        "reject",
        "--lock-mode",
        "transaction",
        "--allow-world-writable",
        "-vv",
        "wait",
        "--timeout",
        "1m",
    ]);
    let Command::Wait(args) = &cli.command else {
        panic!("wait")
    };
    assert_eq!(args.output.format(), Format::Json);
    assert_eq!(args.output.verbose, 2);
    assert_eq!(args.folder.migrations, std::path::Path::new("db"));
    assert_eq!(args.database.table.as_deref(), Some("app.history"));
    assert_eq!(args.database.connect_timeout, Duration::from_secs(3));
    assert!(args.database.database_url_on_command_line);
    assert!(cli.ignored.is_empty(), "{:?}", cli.ignored);
    let common = cli.command.shared().unwrap().common(&no_vars).unwrap();
    assert_eq!(common.key.key, 7);
    assert_eq!(common.lock_mode, crate::lock::LockModeFlag::Transaction);
    assert_eq!(common.ahead, crate::migrations::AheadPolicy::Reject);
    assert!(common.allow_world_writable);
    assert_eq!(common.database.database(), "d");

    // `miglock --format json status`, as the README's scripts write it.
    let cli = parse(&["miglock", "--format", "json", "status"]);
    assert_eq!(cli.command.output().unwrap().format(), Format::Json);
    // After wins over before, as a flag wins over its variable.
    let cli = parse(&["miglock", "--format", "json", "status", "--format", "text"]);
    assert_eq!(cli.command.output().unwrap().format(), Format::Text);
}

#[test]
fn an_option_a_command_does_not_use_is_accepted_and_named_as_ignored() {
    let cli = parse(&[
        "miglock",
        "--database-url",
        "postgres://u@h/d",
        "new",
        "add_users",
        "--lock-key",
        "5",
    ]);
    assert_eq!(cli.ignored, ["--database-url", "--lock-key"]);
    let cli = parse(&["miglock", "completions", "bash", "--format", "json"]);
    assert_eq!(cli.ignored, ["--format"]);
    let cli = parse(&["miglock", "unlock", "--migrations", "db", "--yes"]);
    assert_eq!(cli.ignored, ["--migrations"]);
    // Variables are not the command line: nothing to say about them.
    let cli = parse(&["miglock", "new", "x"]);
    assert!(cli.ignored.is_empty());
    // Options that never were global stay refused where they mean nothing.
    let err = Cli::parse_args(["miglock", "new", "x", "--wait", "1s"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
}

/// The options each command's help shows (by id): only those it uses.
/// The help as printed, its lines joined (clap wraps it to the terminal).
#[test]
fn baseline_takes_baseline_version_and_the_old_spelling_for_now() {
    for args in [
        &["miglock", "baseline", "--baseline-version", "3"][..],
        &["miglock", "baseline", "--version", "3"],
        &["miglock", "baseline", "--version=3"],
    ] {
        let cli = parse(args);
        let Command::Baseline(b) = &cli.command else {
            panic!("baseline")
        };
        let common = cli.command.shared().unwrap().common(&no_vars).unwrap();
        assert_eq!(b.config(common, &no_vars).unwrap().version, 3.into());
    }
    // -V is miglock's version again.
    let err = Cli::parse_args(["miglock", "baseline", "-V"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
    // Both at once, or neither: usage errors.
    for args in [
        &[
            "miglock",
            "baseline",
            "--baseline-version",
            "3",
            "--version",
            "3",
        ][..],
        &["miglock", "baseline"],
    ] {
        assert_eq!(
            Cli::parse_args(args).unwrap_err().exit_code(),
            2,
            "{args:?}"
        );
    }
    // The old spelling is not advertised.
    assert!(!help(&["miglock", "baseline", "--help"]).contains("--version <"));
}

#[test]
fn repair_needs_no_flag_to_say_what_it_repairs() {
    for args in [
        &["miglock", "repair", "--yes"][..],
        &["miglock", "repair", "--checksums", "--yes", "3"],
    ] {
        let cli = parse(args);
        assert!(matches!(cli.command, Command::Repair(_)), "{args:?}");
    }
}

#[test]
fn negative_and_non_numeric_keys_are_usage_errors() {
    for bad in ["-1", "abc", "1.5", "9223372036854775808"] {
        let err = Cli::parse_args(["miglock", "apply", "--lock-key", bad]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad}");
        let text = err.to_string();
        assert!(
            text.contains("a lock key is a whole number from 0 to 9223372036854775807"),
            "{text}"
        );
        assert!(!text.contains(".."), "{text}");
    }
}

#[test]
fn seed_deployment_wait_variable_is_honoured_below_the_flag() {
    let vars = |name: &str| (name == "MIGRATION_LOCK_WAIT_SECONDS").then(|| "12".to_string());
    let config = |args: &[&str]| {
        let cli = parse(args);
        let common = cli.command.shared().unwrap().common(&vars).unwrap();
        let Command::Apply(apply) = &cli.command else {
            panic!("apply")
        };
        apply.config(common, &vars).unwrap().wait
    };
    assert_eq!(config(&["miglock", "apply"]), Duration::from_secs(12));
    assert_eq!(
        config(&["miglock", "apply", "--wait", "3s"]),
        Duration::from_secs(3)
    );
    // Said as the default is, it is still given.
    assert_eq!(
        config(&["miglock", "apply", "--wait", "30s"]),
        Duration::from_secs(30)
    );
    let cli = parse(&["miglock", "baseline", "--baseline-version", "1"]);
    let Command::Baseline(b) = &cli.command else {
        panic!("baseline")
    };
    assert_eq!(b.lock_wait.wait(&no_vars).unwrap(), Duration::from_secs(30));
}

#[test]
fn defaults_shown_as_words_mean_what_they_say() {
    let cli = parse(&["miglock", "apply"]);
    let common = cli.command.shared().unwrap().common(&no_vars).unwrap();
    let Command::Apply(apply) = &cli.command else {
        panic!("apply")
    };
    let config = apply.config(common, &no_vars).unwrap();
    assert_eq!(config.migrate.statement_timeout, None);
    assert_eq!(config.migrate.ddl, crate::migrate::DdlPolicy::default());
    let cli = parse(&[
        "miglock",
        "apply",
        "--statement-timeout",
        "5s",
        "--ddl-retries",
        "3",
        "--cancel-blockers-after",
        "0",
        "--ddl-lock-timeout",
        "off",
    ]);
    let common = cli.command.shared().unwrap().common(&no_vars).unwrap();
    let Command::Apply(apply) = &cli.command else {
        panic!("apply")
    };
    let config = apply.config(common, &no_vars).unwrap();
    assert_eq!(
        config.migrate.statement_timeout,
        Some(Duration::from_secs(5))
    );
    assert_eq!(config.migrate.ddl.retries, Some(3));
    assert_eq!(
        config.migrate.ddl.cancel_blockers_after,
        Some(Duration::ZERO)
    );
    assert_eq!(config.migrate.ddl.timeout, crate::migrate::DdlTimeout::Off);
}

#[test]
fn an_empty_database_url_is_a_usage_error_naming_where_it_came_from() {
    for blank in ["", "   ", "\t\n"] {
        let cli = parse(&["miglock", "status", "--database-url", blank]);
        let err = cli
            .command
            .shared()
            .unwrap()
            .common(&no_vars)
            .err()
            .expect("usage error");
        assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
        assert!(
            err.message().starts_with("--database-url is empty"),
            "{err}"
        );
    }
    // As DATABASE_URL: clap hands over the same value, from elsewhere.
    let mut cli = parse(&["miglock", "status"]);
    let Command::Status(status) = &mut cli.command else {
        panic!("status")
    };
    status.database.database_url = Some(String::new());
    let err = cli
        .command
        .shared()
        .unwrap()
        .common(&no_vars)
        .err()
        .unwrap();
    assert!(
        err.message().starts_with("DATABASE_URL is set but empty"),
        "{err}"
    );
    // Unset: the libpq variables.
    let cli = parse(&["miglock", "status"]);
    let vars = |name: &str| (name == "PGDATABASE").then(|| "from_pg".to_string());
    let common = cli.command.shared().unwrap().common(&vars).unwrap();
    assert_eq!(common.database.database(), "from_pg");
}

#[test]
fn a_password_is_on_the_command_line_only_when_the_flag_gave_it() {
    let database = |cli: &Cli| match &cli.command {
        Command::Apply(a) => a.database.password_on_command_line(),
        Command::Wait(a) => a.database.password_on_command_line(),
        _ => panic!("apply or wait"),
    };
    for args in [
        &["miglock", "--database-url", "postgres://u:pw@h/d", "apply"][..],
        &["miglock", "apply", "--database-url", "postgres://u:pw@h/d"],
        &["miglock", "wait", "--database-url=host=h password=pw"],
    ] {
        assert!(database(&parse(args)), "{args:?}");
    }
    assert!(!database(&parse(&[
        "miglock",
        "apply",
        "--database-url",
        "postgres://u@h/d"
    ])));
    // Parsed without the flag (as from DATABASE_URL): never flagged.
    let mut cli = parse(&["miglock", "apply"]);
    let Command::Apply(apply) = &mut cli.command else {
        panic!("apply")
    };
    apply.database.database_url = Some("postgres://u:pw@h/d".into());
    assert!(!apply.database.password_on_command_line());
}

#[test]
fn parse_args_refuses_what_clap_refuses() {
    let err = Cli::parse_args(["miglock", "apply", "--wait", "soon"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("invalid duration"), "{err}");
}

#[test]
fn many_targets_options_are_checked_before_anything_runs() {
    let attempt = |args: &[&str]| Cli::parse_args(args.iter().copied());
    // --match only with --all-databases; one source at a time.
    for args in [
        &["miglock", "apply", "--match", "t%"][..],
        &[
            "miglock",
            "apply",
            "--all-databases",
            "--databases-from",
            "f",
        ],
        &["miglock", "status", "--databases-from", "f", "--jobs", "0"],
        &["miglock", "wait", "--databases-from", "f", "--jobs", "257"],
        &["miglock", "unlock", "--databases-from", "f"],
    ] {
        assert_eq!(attempt(args).unwrap_err().exit_code(), 2, "{args:?}");
    }
    let cli = parse(&[
        "miglock",
        "status",
        "--databases-from",
        "f",
        "--lock-key",
        "7",
    ]);
    let Command::Status(args) = &cli.command else {
        panic!("status")
    };
    let shared = cli.command.shared().unwrap();
    let err = shared.fleet(&args.fleet, &no_vars).err().unwrap();
    assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
    assert!(err.message().contains("--lock-key"), "{err}");
    let cli = parse(&["miglock", "wait", "--databases-from", "f", "--jobs", "9"]);
    let Command::Wait(args) = &cli.command else {
        panic!("wait")
    };
    let config = cli
        .command
        .shared()
        .unwrap()
        .fleet(&args.fleet, &no_vars)
        .unwrap()
        .unwrap();
    assert_eq!((config.jobs, config.fail_fast), (9, false));
    // One target: not this module's business.
    let cli = parse(&["miglock", "apply", "--jobs", "9"]);
    let Command::Apply(args) = &cli.command else {
        panic!("apply")
    };
    assert!(cli
        .command
        .shared()
        .unwrap()
        .fleet(&args.fleet, &no_vars)
        .unwrap()
        .is_none());
}
