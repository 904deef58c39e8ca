//! `miglock completions SHELL`: the shell completion script.

/// The script for `shell`, for the command line `command` describes.
pub fn render(shell: clap_complete::Shell, mut command: clap::Command) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "miglock", &mut script);
    script
}
