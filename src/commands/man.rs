//! `miglock man`: one man page — the top-level command, each subcommand's
//! options, then the exit codes scripts branch on.

use crate::outcome::Outcome;

/// The page for the command line `command` describes.
pub fn render(command: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("miglock {}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(name.clone());
        let man = clap_mangen::Man::new(sub);
        page.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        man.render_description_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_options_section(&mut page)?;
    }
    page.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for outcome in [
        Outcome::Applied,
        Outcome::Failed,
        Outcome::Usage,
        Outcome::Skipped,
        Outcome::Disabled,
        Outcome::Unavailable,
        Outcome::Invalid,
        Outcome::Pending,
        Outcome::Blocked,
        Outcome::Interrupted,
    ] {
        page.extend_from_slice(
            format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                outcome.exit_code(),
                outcome.meaning()
            )
            .as_bytes(),
        );
    }
    Ok(page)
}
