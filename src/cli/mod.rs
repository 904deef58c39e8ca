//! Command-line parsing (clap, in [`args`]) and the seam that turns it into
//! plain configuration ([`to_config`]). Nothing past this module sees a
//! clap type; only `lib` imports it.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

mod args;
mod to_config;

pub use args::{Cli, Command};
pub use to_config::migrations_enabled;

impl Cli {
    /// Parses the process's command line (see [`Cli::parse_args`]).
    pub fn parse_command_line() -> Result<Cli, clap::Error> {
        Cli::parse_args(std::env::args_os())
    }

    /// As `Cli::try_parse_from`, also noting where the connection string
    /// came from: clap merges `--database-url` and `DATABASE_URL` into one
    /// value, and only its matches know which one it was.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut Cli::command()))?;
        cli.global.database_url_on_command_line =
            matches.value_source("database_url") == Some(ValueSource::CommandLine);
        Ok(cli)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use clap::Parser;

    use crate::config::Format;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
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
        ])
        .unwrap();
        assert_eq!(cli.global.lock_key, Some(7));
        assert_eq!(cli.global.format(), Format::Json);
        let Command::Apply(args) = &cli.command else {
            panic!("apply")
        };
        assert_eq!(args.lock_wait.wait, Some(Duration::from_secs(10)));
    }

    #[test]
    fn negative_and_non_numeric_keys_are_usage_errors() {
        for bad in ["-1", "abc", "1.5", "9223372036854775808"] {
            let err = Cli::try_parse_from(["miglock", "apply", "--lock-key", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn seed_deployment_wait_variable_is_honoured_below_the_flag() {
        let vars = |name: &str| (name == "MIGRATION_LOCK_WAIT_SECONDS").then(|| "12".to_string());
        let cli = Cli::try_parse_from(["miglock", "apply", "--database-url", "postgres://u@h/d"])
            .unwrap();
        let Command::Apply(args) = &cli.command else {
            panic!("apply")
        };
        let common = cli.global.common(&vars).unwrap();
        assert_eq!(
            args.config(common.clone(), &vars).unwrap().wait,
            Duration::from_secs(12)
        );
        let cli = Cli::try_parse_from(["miglock", "apply", "--wait", "3s"]).unwrap();
        let Command::Apply(args) = &cli.command else {
            panic!("apply")
        };
        assert_eq!(
            args.config(common, &vars).unwrap().wait,
            Duration::from_secs(3)
        );
    }

    fn no_vars(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn an_empty_database_url_is_a_usage_error_naming_where_it_came_from() {
        for blank in ["", "   ", "\t\n"] {
            let cli = Cli::parse_args(["miglock", "status", "--database-url", blank]).unwrap();
            let err = cli.global.common(&no_vars).err().expect("usage error");
            assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
            assert!(
                err.message().starts_with("--database-url is empty"),
                "{err}"
            );
        }
        // As DATABASE_URL: clap hands over the same value, from elsewhere.
        let mut cli = Cli::parse_args(["miglock", "status"]).unwrap();
        cli.global.database_url = Some(String::new());
        let err = cli.global.common(&no_vars).err().unwrap();
        assert!(
            err.message().starts_with("DATABASE_URL is set but empty"),
            "{err}"
        );
        // Unset: the libpq variables.
        cli.global.database_url = None;
        let vars = |name: &str| (name == "PGDATABASE").then(|| "from_pg".to_string());
        let common = cli.global.common(&vars).unwrap();
        assert_eq!(common.database.database(), "from_pg");
    }

    #[test]
    fn a_password_is_on_the_command_line_only_when_the_flag_gave_it() {
        for args in [
            &["miglock", "--database-url", "postgres://u:pw@h/d", "apply"][..],
            &["miglock", "apply", "--database-url", "postgres://u:pw@h/d"],
            &["miglock", "wait", "--database-url=host=h password=pw"],
        ] {
            let cli = Cli::parse_args(args).unwrap();
            assert!(cli.global.database_url_on_command_line, "{args:?}");
            assert!(cli.global.password_on_command_line(), "{args:?}");
        }
        let cli =
            Cli::parse_args(["miglock", "apply", "--database-url", "postgres://u@h/d"]).unwrap();
        assert!(cli.global.database_url_on_command_line);
        assert!(!cli.global.password_on_command_line());
        // Parsed without the flag (as from DATABASE_URL): never flagged.
        let mut cli = Cli::parse_args(["miglock", "apply"]).unwrap();
        assert!(!cli.global.database_url_on_command_line);
        cli.global.database_url = Some("postgres://u:pw@h/d".into());
        assert!(!cli.global.password_on_command_line());
    }

    #[test]
    fn parse_args_refuses_what_clap_refuses() {
        let err = Cli::parse_args(["miglock", "apply", "--wait", "soon"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn many_targets_options_are_checked_before_anything_runs() {
        let no_vars = |_: &str| None;
        let parse = |args: &[&str]| Cli::parse_args(args.iter().copied());
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
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
        let cli = parse(&[
            "miglock",
            "status",
            "--databases-from",
            "f",
            "--lock-key",
            "7",
        ])
        .unwrap();
        let Command::Status(args) = &cli.command else {
            panic!("status")
        };
        let err = cli.global.fleet(&args.fleet, &no_vars).err().unwrap();
        assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
        assert!(err.message().contains("--lock-key"), "{err}");
        let cli = parse(&["miglock", "wait", "--databases-from", "f", "--jobs", "9"]).unwrap();
        let Command::Wait(args) = &cli.command else {
            panic!("wait")
        };
        let config = cli.global.fleet(&args.fleet, &no_vars).unwrap().unwrap();
        assert_eq!((config.jobs, config.fail_fast), (9, false));
        // One target: not this module's business.
        let cli = parse(&["miglock", "apply", "--jobs", "9"]).unwrap();
        let Command::Apply(args) = &cli.command else {
            panic!("apply")
        };
        assert!(cli.global.fleet(&args.fleet, &no_vars).unwrap().is_none());
    }
}
