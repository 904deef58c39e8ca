//! `miglock completions SHELL`: the shell completion script.

use clap::CommandFactory;

use crate::cli::Cli;

pub fn render(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "miglock", &mut script);
    script
}
