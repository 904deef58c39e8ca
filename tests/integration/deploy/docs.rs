//! The generated documents: `--help` lists every exit code, shell
//! completions and the man page cover every command.

use std::process::Command;

use crate::harness::Miglock;

#[test]
fn help_lists_every_exit_code() {
    for args in [&["--help"][..], &["help"][..]] {
        let out = Miglock::new().args(args).run();
        let case = format!("{args:?}");
        out.assert_success();
        assert!(
            !out.stderr.contains("panicked"),
            "[{case}]\n{}",
            out.details()
        );
        // Help is wrapped to the terminal width: compare with whitespace
        // collapsed so a line break inside "4 disabled" does not matter.
        let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        for code in [
            "0 applied",
            "1 failed",
            "2 usage",
            "3 skipped",
            "4 disabled",
            "5 unavailable",
            "6 invalid",
            "7 pending",
            "8 blocked",
            "130 interrupted",
        ] {
            assert!(
                text.contains(code),
                "[{case}] help lacks {code:?}\n{}",
                out.details()
            );
        }
    }
}

const SUBCOMMANDS: [&str; 6] = ["apply", "status", "wait", "unlock", "completions", "man"];

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Miglock::new().args(["completions", shell]).run();
        out.assert_success();
        for word in SUBCOMMANDS {
            out.assert_stdout_contains(word);
        }
        out.assert_stdout_contains("database-url");
        assert!(out.stderr.is_empty(), "{shell}: {}", out.stderr);
    }
    // The bash script must at least parse in bash.
    let script = Miglock::new().args(["completions", "bash"]).run().stdout;
    let check = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    Miglock::new()
        .args(["completions", "tcsh"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("invalid value 'tcsh'")
        .assert_stderr_contains("bash");
    Miglock::new().arg("completions").run().assert_code(2);
}

#[test]
fn man_page_documents_every_subcommand_and_the_exit_codes() {
    let out = Miglock::new().arg("man").run();
    out.assert_success();
    let page = &out.stdout;
    // clap_mangen opens with a string definition, then the title.
    let first_macro = page
        .lines()
        .find(|line| line.starts_with(".TH") || line.starts_with(".SH"))
        .unwrap();
    assert!(first_macro.starts_with(".TH miglock 1"), "{first_macro}");
    for sub in SUBCOMMANDS {
        let heading = format!(".SH \"MIGLOCK {}\"", sub.to_uppercase());
        assert!(page.contains(&heading), "no {heading}");
    }
    let exit_status = &page[page.find(".SH \"EXIT STATUS\"").expect("EXIT STATUS")..];
    for code in [0, 1, 2, 3, 4, 5, 6, 7, 8, 130] {
        assert!(
            exit_status.contains(&format!("\\fB{code}\\fR\n")),
            "exit code {code} missing"
        );
    }
    // Renders without warnings where groff is installed; -k runs preconv, as
    // man(1) does, for the UTF-8 in the help texts.
    if let Ok(mut groff) = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let rendered = groff.wait_with_output().unwrap();
        assert!(
            rendered.status.success() && rendered.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
}

#[test]
fn man_page_and_completions_know_the_new_commands() {
    let page = Miglock::new()
        .arg("man")
        .run()
        .assert_success()
        .stdout
        .clone();
    for sub in ["BASELINE", "NEW", "REPAIR"] {
        let heading = format!(".SH \"MIGLOCK {sub}\"");
        assert!(page.contains(&heading), "no {heading}");
    }
    for option in [
        "\\-\\-baseline\\-version",
        "\\-\\-no\\-transaction",
        "\\-\\-rebuild\\-invalid\\-indexes",
    ] {
        assert!(page.contains(option), "no {option}");
    }
    let bash = Miglock::new().args(["completions", "bash"]).run();
    bash.assert_success();
    for word in [
        "baseline",
        "repair",
        "--baseline-version",
        "--no-transaction",
    ] {
        bash.assert_stdout_contains(word);
    }
}
