//! What each command's help shows: only its options, under headings, with
//! one convention for value names, variables and defaults, two examples.

use std::collections::BTreeSet;

use super::super::*;
use super::{help, joined};

#[test]
fn each_command_shows_only_the_options_it_uses() {
    let connect = [
        "database_url",
        "connect_timeout",
        "table",
        "lock_key",
        "tool_lock",
        "migrations",
        "layout",
        "placeholders",
        "format",
        "log_format",
        "quiet",
        "verbose",
        "help",
        "version",
    ];
    let many = [
        "databases_from",
        "all_databases",
        "pattern",
        "jobs",
        "fail_fast",
        "allow_no_targets",
        "shard",
        "shards",
        "canary",
        "max_failures",
        "metrics_file",
        "all_schemas",
        "schema_match",
        "settings",
        "ahead",
        "allow_world_writable",
    ];
    let expected: [(&str, Vec<&str>); 11] = [
        (
            "apply",
            [
                &connect[..],
                &many,
                &[
                    "target",
                    "dry_run",
                    "statement_timeout",
                    "lock_mode",
                    "wait",
                    "ddl_lock_timeout",
                    "ddl_lock_budget",
                    "ddl_retries",
                    "cancel_blockers_after",
                    "rebuild_invalid_indexes",
                    "lint",
                    "lint_rules",
                    "lint_exclude",
                ],
            ]
            .concat(),
        ),
        ("status", [&connect[..], &many, &["check"]].concat()),
        (
            "wait",
            [&connect[..], &many, &["timeout", "lock_mode"]].concat(),
        ),
        (
            "unlock",
            [&connect[..], &["yes", "dry_run", "force"]]
                .concat()
                .into_iter()
                .filter(|id| !["migrations", "layout", "placeholders"].contains(id))
                .collect(),
        ),
        (
            "baseline",
            [
                &connect[..],
                &[
                    "baseline_version",
                    "print_version",
                    "dry_run",
                    "allow_world_writable",
                    "lock_mode",
                    "wait",
                ],
            ]
            .concat()
            .into_iter()
            .filter(|id| *id != "version")
            .collect(),
        ),
        (
            "new",
            vec![
                "name",
                "no_transaction",
                "migrations",
                "layout",
                "format",
                "log_format",
                "quiet",
                "verbose",
                "help",
                "version",
            ],
        ),
        (
            "repair",
            [
                &connect[..],
                &[
                    "versions",
                    "yes",
                    "dry_run",
                    "allow_world_writable",
                    "lock_mode",
                    "wait",
                ],
            ]
            .concat(),
        ),
        (
            "lint",
            vec![
                "files",
                "migrations",
                "layout",
                "placeholders",
                "lint_rules",
                "lint_exclude",
                "format",
                "log_format",
                "quiet",
                "verbose",
                "help",
                "version",
            ],
        ),
        (
            "down",
            [
                &connect[..],
                &[
                    "to",
                    "yes",
                    "dry_run",
                    "allow_world_writable",
                    "lock_mode",
                    "wait",
                ],
            ]
            .concat(),
        ),
        ("completions", vec!["shell", "help", "version"]),
        ("man", vec!["help", "version"]),
    ];
    let mut cli = command();
    cli.build();
    for (name, ids) in expected {
        let sub = cli.find_subcommand(name).unwrap();
        let shown: BTreeSet<&str> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .map(|a| a.get_id().as_str())
            .collect();
        let ids: BTreeSet<&str> = ids.into_iter().collect();
        assert_eq!(shown, ids, "{name}");
    }
    // The top level shows none of them: each command's help does.
    let top: Vec<&str> = cli
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .map(|a| a.get_id().as_str())
        .collect();
    assert_eq!(top, ["help", "version"]);
}

#[test]
fn help_groups_options_under_headings_and_renders_every_variable_alike() {
    for name in [
        "apply", "status", "wait", "unlock", "baseline", "repair", "new",
    ] {
        for flag in ["-h", "--help"] {
            let text = joined(&help(&["miglock", name, flag]));
            // A variable is named, never given a value: unset ones used
            // to read `[env: MIGLOCK_MIGRATIONS=]`, set ones their value.
            assert!(!text.contains("=]"), "{name} {flag}:\n{text}");
            assert!(text.contains("[env: MIGLOCK_FORMAT]"), "{name} {flag}");
            for heading in ["Migrations:", "Output:"] {
                assert!(text.contains(heading), "{name} {flag}: {heading}\n{text}");
            }
            if name != "new" {
                for heading in ["Connection:", "Lock:"] {
                    assert!(text.contains(heading), "{name} {flag}: {heading}\n{text}");
                }
            }
        }
    }
    let text = help(&["miglock", "apply", "-h"]);
    for heading in ["Table locks:", "Many databases:"] {
        assert!(text.contains(heading), "{heading}\n{text}");
    }
}

#[test]
fn help_with_variables_set_shows_no_value() {
    // The help is built from the environment clap sees: a value set
    // there must not show (nor end up in a man page made in a build).
    let text = command()
        .mut_subcommand("apply", |apply| {
            apply.mut_arg("migrations", |a| a.env("PATH"))
        })
        .try_get_matches_from(["miglock", "apply", "--help"])
        .unwrap_err()
        .render()
        .to_string();
    assert!(text.contains("[env: PATH]"), "{text}");
    assert!(!text.contains("[env: PATH="), "{text}");
}

#[test]
fn value_names_follow_one_convention() {
    let allowed = [
        "DURATION",
        "N",
        "VERSION",
        "KEY",
        "URL",
        "DIR",
        "FILE",
        "TABLE",
        "LAYOUT",
        "PATTERN",
        "NAME",
        "NAME=VALUE",
        "FORMAT",
        "MODE",
        "POLICY",
        "SHELL",
        "INDEX/COUNT",
        "RULES",
    ];
    let mut cli = command();
    cli.build();
    for sub in cli.get_subcommands() {
        let shown = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_action().takes_values());
        for arg in shown {
            for name in arg.get_value_names().unwrap_or_default() {
                assert!(
                    allowed.contains(&name.as_str()),
                    "{} --{:?}: <{name}>",
                    sub.get_name(),
                    arg.get_long()
                );
            }
            assert!(
                arg.get_value_names().is_some(),
                "{} {:?} has no value name",
                sub.get_name(),
                arg.get_id()
            );
        }
    }
}

#[test]
fn every_command_has_two_examples_and_its_exit_codes() {
    for name in [
        "apply",
        "status",
        "wait",
        "unlock",
        "baseline",
        "new",
        "repair",
        "lint",
        "completions",
        "man",
    ] {
        let long = help(&["miglock", name, "--help"]);
        let examples = &long[long.find("Examples:").expect(name)..];
        let commands = examples
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter(|l| l.trim_start().starts_with("miglock "))
            .count();
        assert_eq!(commands, 2, "{name}:\n{examples}");
        assert!(long.contains("Exit codes: 0 "), "{name}");
        let short = help(&["miglock", name, "-h"]);
        assert!(short.contains("Exit codes: 0 "), "{name}");
        assert!(!short.contains("Examples:"), "{name}");
    }
    // Where a replica's name applies, the help says how to give it.
    for name in ["apply", "status", "wait", "unlock", "baseline", "repair"] {
        assert!(
            help(&["miglock", name, "--help"]).contains("MIGLOCK_INSTANCE"),
            "{name}"
        );
    }
    let long = help(&["miglock", "--help"]);
    for mode in ["pg_try_advisory_lock", "pg_try_advisory_xact_lock"] {
        assert!(long.contains(mode), "{mode}");
    }
}

#[test]
fn the_match_example_escapes_like_s_wildcard() {
    let text = help(&["miglock", "apply", "--help"]);
    assert!(text.contains("'tenant\\_%'"), "{text}");
    assert!(!text.contains("'tenant_%')"), "{text}");
}

#[test]
fn completions_offer_folders_for_the_migrations_folder() {
    let mut cli = command();
    cli.build();
    for sub in ["apply", "status", "wait", "baseline", "new", "repair"] {
        let arg = cli
            .find_subcommand(sub)
            .unwrap()
            .get_arguments()
            .find(|a| a.get_id() == "migrations")
            .unwrap();
        assert_eq!(arg.get_value_hint(), clap::ValueHint::DirPath, "{sub}");
    }
}
