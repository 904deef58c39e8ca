//! Command-line parsing (clap, in [`args`], with what the derive cannot
//! say in [`help`]) and the seam that turns it into plain configuration
//! ([`to_config`]). Nothing past this module sees a clap type; only `lib`
//! imports it.

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};

mod args;
mod folder;
mod help;
mod hints;
mod lint_args;
mod shared;
mod to_config;

pub use args::{Cli, Command};
pub use help::command;
pub use to_config::migrations_enabled;

impl Cli {
    /// Parses the process's command line (see [`Cli::parse_args`]).
    pub fn parse_command_line() -> Result<Cli, clap::Error> {
        Cli::parse_args(std::env::args_os())
    }

    /// As `Cli::try_parse_from` on [`command`], also noting what only the
    /// matches know: where the connection string, the folder and the lock
    /// wait came from (clap merges a flag and its variable into one value),
    /// and the options given that the command does not use.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = command();
        // Read before parsing, which gives every command the hidden copies.
        let own = own_options(&command);
        let matches = command
            .try_get_matches_from_mut(args)
            .map_err(hints::explain)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        if let Some((name, sub)) = matches.subcommand() {
            cli.note_sources(sub);
            cli.ignored = ignored(&own, name, sub);
        }
        Ok(cli)
    }

    fn note_sources(&mut self, matches: &ArgMatches) {
        let from = |id: &str| {
            matches
                .try_get_raw(id)
                .ok()
                .and_then(|_| matches.value_source(id))
        };
        let on_command_line = from("database_url") == Some(ValueSource::CommandLine);
        let wait_given = from("wait").is_some_and(|s| s != ValueSource::DefaultValue);
        let migrations_from = from("migrations");
        let (database, folder, lock_wait) = match &mut self.command {
            Command::Apply(a) => (
                Some(&mut a.database),
                Some(&mut a.folder),
                Some(&mut a.lock_wait),
            ),
            Command::Status(a) => (Some(&mut a.database), Some(&mut a.folder), None),
            Command::Wait(a) => (Some(&mut a.database), Some(&mut a.folder), None),
            Command::Unlock(a) => (Some(&mut a.database), None, None),
            Command::Baseline(a) => (
                Some(&mut a.database),
                Some(&mut a.folder),
                Some(&mut a.lock_wait),
            ),
            Command::Repair(a) => (
                Some(&mut a.database),
                Some(&mut a.folder),
                Some(&mut a.lock_wait),
            ),
            Command::Down(a) => (
                Some(&mut a.database),
                Some(&mut a.folder),
                Some(&mut a.lock_wait),
            ),
            Command::New(a) => (None, Some(&mut a.folder), None),
            Command::Lint(a) => (None, Some(&mut a.folder), None),
            Command::Completions { .. } | Command::Man => (None, None, None),
        };
        if let Some(database) = database {
            database.database_url_on_command_line = on_command_line;
        }
        if let Some(folder) = folder {
            folder.migrations_from = migrations_from;
        }
        if let Some(lock_wait) = lock_wait {
            lock_wait.wait_given = wait_given;
        }
    }
}

/// Of the options that may come before the command, those each command
/// has of its own: read off the tree that parses, before parsing builds
/// it. A second tree built for this alone cost 0.4 M of a no-op run's
/// 10.7 M instructions, before its connection could start.
fn own_options(command: &clap::Command) -> Vec<(String, Vec<&'static str>)> {
    command
        .get_subcommands()
        .map(|sub| {
            let own = help::BEFORE_THE_COMMAND
                .iter()
                .copied()
                .filter(|id| sub.get_arguments().any(|a| a.get_id() == *id))
                .collect();
            (sub.get_name().to_string(), own)
        })
        .collect()
}

/// The options given on the command line to the command `name` that it
/// does not use (the hidden copies [`command`] gives it), as `--flag`.
fn ignored(own: &[(String, Vec<&'static str>)], name: &str, matches: &ArgMatches) -> Vec<String> {
    let Some((_, own)) = own.iter().find(|(sub, _)| *sub == name) else {
        return Vec::new();
    };
    help::BEFORE_THE_COMMAND
        .iter()
        .filter(|id| !own.contains(id))
        .filter(|id| {
            matches.try_get_raw(id).is_ok()
                && matches.value_source(id) == Some(ValueSource::CommandLine)
        })
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect()
}

#[cfg(test)]
mod tests;
