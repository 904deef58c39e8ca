//! The command line as users type it.

use super::*;

mod help;
mod parsing;

fn parse(args: &[&str]) -> Cli {
    Cli::parse_args(args.iter().copied()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn no_vars(_: &str) -> Option<String> {
    None
}

/// The help as printed.
fn help(args: &[&str]) -> String {
    let err = Cli::parse_args(args.iter().copied()).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
    err.render().to_string()
}

/// Its lines joined: clap wraps help to the terminal.
fn joined(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
