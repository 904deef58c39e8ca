//! `miglock man`: one man page, in the sections man-pages(7) orders —
//! NAME, SYNOPSIS, DESCRIPTION, COMMANDS (each command's description,
//! options under its help headings, exit codes), EXIT STATUS, ENVIRONMENT,
//! FILES, EXAMPLES, SEE ALSO.
//!
//! Written from the same clap command as `--help`, so the two cannot
//! drift: the options, their value names, defaults, variables and values
//! come from the arguments; the examples and each command's exit codes
//! from its long help's "Examples:" and "Exit codes:" blocks. (clap_mangen
//! renders one page per command with its own DESCRIPTION/SYNOPSIS/OPTIONS
//! headings; stacked in one page they repeat, and its list of commands
//! cites pages such as miglock-apply(1) that are never installed.)

use std::io;

use clap::{Arg, ArgAction, Command};
use roff::{bold, italic, roman, Inline, Roff};

use crate::outcome::Outcome;

/// Variables read besides the options' own, for ENVIRONMENT.
const OTHER_VARIABLES: &[(&str, &str)] = &[
    (
        "MIGLOCK_SET",
        "As --set, several separated by ';' (a value may hold commas, as in \
         search_path=app,public).",
    ),
    (
        "RUN_MIGRATIONS",
        "0, false, no or off disables apply: it exits 4 at once, reading no file and making no \
         connection (for the replicas of a service that must never migrate). 1, true, yes, on \
         or unset: apply runs.",
    ),
    (
        "MIGLOCK_INSTANCE",
        "Names this replica (a pod name, a CI job id) in the session's application_name, so \
         that status, unlock and a DBA's pg_stat_activity tell the replicas apart. Default: \
         HOSTNAME.",
    ),
    (
        "PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGAPPNAME",
        "Where and as whom to connect when DATABASE_URL (--database-url) is not set, or for \
         what it leaves out, as libpq reads them.",
    ),
    (
        "PGPASSFILE",
        "The password file (default ~/.pgpass), read when the URL and PGPASSWORD give no \
         password.",
    ),
    (
        "PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY",
        "TLS settings when the URL gives none (sslmode, sslrootcert, sslcert, sslkey).",
    ),
    (
        "PGTARGETSESSIONATTRS",
        "target_session_attrs when the URL gives none (apply prefers a read-write host by \
         itself).",
    ),
    (
        "RUST_LOG",
        "Log filter (env_logger syntax) when neither -q nor -v is given.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "migrations/",
        "The default migrations folder (--migrations), read recursively: one \
         V<version>__<name>.sql file per migration, run in version order, each in its own \
         transaction unless its first line is the -- miglock:no-transaction marker.",
    ),
    (
        "~/.pgpass",
        "Passwords, as libpq reads them (PGPASSFILE); ignored when readable by others.",
    ),
    (
        "~/.postgresql/root.crt",
        "The certificate authorities to trust for sslmode=verify-ca and verify-full when \
         sslrootcert is not given (otherwise the system's).",
    ),
];

const SEE_ALSO: &str = "psql(1), pg_dump(1), and the guide and reference in the docs/ folder \
    of miglock's source (README.md links them).";

/// The page for the command line `command` describes.
pub fn render(command: Command) -> io::Result<Vec<u8>> {
    let commands: Vec<&Command> = command
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
        .collect();
    let mut page = Roff::new();
    page.control("SH", ["NAME"]).text([roman(format!(
        "miglock - {}",
        lower_first(&text(command.get_about()))
    ))]);

    page.control("SH", ["SYNOPSIS"]);
    let mut lines = vec![
        bold("miglock"),
        roman(" "),
        italic("COMMAND"),
        roman(" ["),
        italic("OPTIONS"),
        roman("]"),
    ];
    for sub in &commands {
        lines.push(Inline::LineBreak);
        lines.extend(synopsis(sub));
    }
    lines.extend([
        Inline::LineBreak,
        bold("miglock --help"),
        roman(" | "),
        bold("--version"),
    ]);
    page.text(lines);

    page.control("SH", ["DESCRIPTION"]);
    paragraphs(&mut page, &text(command.get_long_about()));
    paragraphs(
        &mut page,
        &before_blocks(&text(command.get_after_long_help())),
    );

    page.control("SH", ["COMMANDS"]);
    for sub in &commands {
        page.control("SS", [format!("miglock {}", sub.get_name()).as_str()]);
        let description = sub.get_long_about().or(sub.get_about());
        paragraphs(&mut page, &text(description));
        options(&mut page, sub);
        if let Some(codes) = block(&text(sub.get_after_long_help()), "Exit codes:") {
            page.control("PP", [])
                .text([italic("Exit codes:"), roman(" ")]);
            page.text([roman(codes)]);
        }
    }

    page.control("SH", ["EXIT STATUS"]);
    page.text([roman(
        "apply's codes, which the other commands share where they apply (each command's own \
         are listed with it above). Scripts and entrypoints branch on them.",
    )]);
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
        page.control("TP", [])
            .text([bold(outcome.exit_code().to_string())])
            .text([roman(outcome.meaning())]);
    }

    page.control("SH", ["ENVIRONMENT"]);
    page.text([roman(
        "Each option's variable (given after it above) sets it when the option is not on the \
         command line:",
    )]);
    for (variable, option) in option_variables(&commands) {
        page.control("TP", [])
            .text([bold(variable)])
            .text([roman(format!("As {option}."))]);
    }
    for (variable, meaning) in OTHER_VARIABLES {
        page.control("TP", [])
            .text([bold(*variable)])
            .text([roman(*meaning)]);
    }

    page.control("SH", ["FILES"]);
    for (file, meaning) in FILES {
        page.control("TP", [])
            .text([italic(*file)])
            .text([roman(*meaning)]);
    }

    page.control("SH", ["EXAMPLES"]);
    for sub in &commands {
        let long_help = text(sub.get_after_long_help());
        let Some(examples) = block(&long_help, "Examples:") else {
            continue;
        };
        page.control("PP", [])
            .control("nf", [])
            .control("RS", ["4"]);
        for line in examples.lines() {
            page.text([roman(line.trim_start())]);
        }
        page.control("RE", []).control("fi", []);
    }

    page.control("SH", ["SEE ALSO"]).text([roman(SEE_ALSO)]);

    let version = command.get_version().unwrap_or_default();
    let mut out =
        format!(".TH MIGLOCK 1 \"\" \"miglock {version}\" \"User Commands\"\n").into_bytes();
    page.to_writer(&mut out)?;
    Ok(out)
}

/// `miglock apply [OPTIONS]`, `miglock new [OPTIONS] NAME`, `miglock repair
/// [OPTIONS] [VERSION]...`.
fn synopsis(sub: &Command) -> Vec<Inline> {
    let mut line = vec![bold(format!("miglock {}", sub.get_name()))];
    if shown(sub).any(|a| !a.is_positional()) {
        line.extend([roman(" ["), italic("OPTIONS"), roman("]")]);
    }
    for arg in shown(sub).filter(|a| a.is_positional()) {
        let name = value_name(arg);
        let repeated = matches!(arg.get_action(), ArgAction::Append);
        match (arg.is_required_set(), repeated) {
            (true, _) => line.extend([roman(" "), italic(name)]),
            (false, false) => line.extend([roman(" ["), italic(name), roman("]")]),
            (false, true) => line.extend([roman(" ["), italic(name), roman("]...")]),
        }
    }
    line
}

/// The command's options, under the headings `--help` shows them with,
/// in the same order.
fn options(page: &mut Roff, sub: &Command) {
    let mut headings: Vec<&str> = Vec::new();
    for arg in shown(sub) {
        let heading = heading(arg);
        if !headings.contains(&heading) {
            headings.push(heading);
        }
    }
    // clap lists the arguments, then the options without a heading, then
    // the headings.
    headings.sort_by_key(|h| match *h {
        "Arguments" => 0,
        "Options" => 1,
        _ => 2,
    });
    for name in headings {
        page.control("PP", []).text([italic(format!("{name}:"))]);
        for arg in shown(sub).filter(|a| heading(a) == name) {
            option(page, arg);
        }
    }
}

fn option(page: &mut Roff, arg: &Arg) {
    let mut term = Vec::new();
    if arg.is_positional() {
        term.push(italic(value_name(arg)));
    } else {
        if let Some(short) = arg.get_short() {
            term.extend([bold(format!("-{short}")), roman(", ")]);
        }
        if let Some(long) = arg.get_long() {
            term.push(bold(format!("--{long}")));
        }
        if arg.get_action().takes_values() {
            term.extend([roman(" "), italic(value_name(arg))]);
        }
    }
    page.control("TP", []).text(term);
    let mut help = text(arg.get_long_help().or(arg.get_help()));
    let mut facts = Vec::new();
    // A help text that says its own "[default: …]" or "[env: …]" (one
    // clap cannot render, as --set's ';'-separated variable): as a fact.
    let first_end = help.find("\n\n").unwrap_or(help.len());
    let mut first = help[..first_end].trim_end().to_string();
    let mut said = Vec::new();
    while first.ends_with(']') {
        let Some(open) = first.rfind(" [") else { break };
        let inner = first[open + 2..first.len() - 1].to_string();
        let fact = if let Some(v) = inner.strip_prefix("default: ") {
            format!("Default: {v}.")
        } else if let Some(v) = inner.strip_prefix("env: ") {
            format!("Environment: {v}.")
        } else {
            break;
        };
        said.insert(0, fact);
        first.truncate(open);
    }
    help = format!("{first}{}", &help[first_end..]);
    let possible = arg.get_possible_values();
    let values: Vec<&str> = possible
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name())
        .collect();
    if !values.is_empty() && arg.get_action().takes_values() {
        facts.push(format!("Values: {}.", values.join(", ")));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && arg.get_action().takes_values() {
        facts.push(format!("Default: {}.", defaults.join(", ")));
    }
    if let Some(env) = arg.get_env() {
        facts.push(format!("Environment: {}.", env.to_string_lossy()));
    }
    facts.extend(said);
    let mut parts = help.split("\n\n");
    let summary = parts.next().unwrap_or_default();
    let stop = if summary.ends_with(['.', '…']) {
        ""
    } else {
        "."
    };
    page.text([roman(
        format!("{summary}{stop} {}", facts.join(" ")).trim_end(),
    )]);
    for more in parts {
        page.control("IP", []).text([roman(more)]);
    }
}

/// The variables of every command's options, each with the option it
/// sets, in the order the commands first use them.
fn option_variables(commands: &[&Command]) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for sub in commands {
        for arg in shown(sub) {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let env = env.to_string_lossy().into_owned();
            if !found.iter().any(|(e, _)| *e == env) {
                found.push((env, format!("--{long}")));
            }
        }
    }
    found
}

/// The arguments `--help` shows: not hidden, and not -h/-V.
fn shown(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|a| {
        !a.is_hide_set()
            && !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

fn heading(arg: &Arg) -> &str {
    arg.get_help_heading().unwrap_or(if arg.is_positional() {
        "Arguments"
    } else {
        "Options"
    })
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}

fn text(styled: Option<&clap::builder::StyledStr>) -> String {
    styled.map(|s| s.to_string()).unwrap_or_default()
}

/// Paragraphs (blank-line separated), each filled by the formatter.
fn paragraphs(page: &mut Roff, text: &str) {
    for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        page.control("PP", []).text([roman(paragraph.trim())]);
    }
}

/// A long help's block that starts with `title` (up to the next blank
/// line), without the title.
fn block<'a>(text: &'a str, title: &str) -> Option<&'a str> {
    let start = text.find(title)? + title.len();
    let rest = &text[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    Some(rest[..end].trim_matches(|c: char| c == '\n' || c == ' '))
}

/// The text before the first "Examples:" or "Exit codes:" block (those
/// have their own sections).
fn before_blocks(text: &str) -> String {
    let end = ["Examples:", "Exit codes:"]
        .iter()
        .filter_map(|title| text.find(title))
        .min()
        .unwrap_or(text.len());
    text[..end].to_string()
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
