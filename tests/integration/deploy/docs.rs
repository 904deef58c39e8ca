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
    assert!(page.starts_with(".TH MIGLOCK 1 "), "{}", &page[..40]);
    // man-pages(7)'s sections, in its order, each once.
    let sections = [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ];
    let found: Vec<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix(".SH "))
        .map(|name| name.trim_matches('"'))
        .collect();
    assert_eq!(found, sections);
    for sub in SUBCOMMANDS {
        let heading = format!(".SS \"miglock {sub}\"");
        assert!(page.contains(&heading), "no {heading}");
    }
    // Nothing cites pages that are never installed, and no Markdown.
    assert!(!page.contains("miglock\\-apply(1)"), "{page}");
    assert!(!page.contains('`'), "a backtick in the page");
    let exit_status = &page[page.find(".SH \"EXIT STATUS\"").unwrap()..];
    for code in [0, 1, 2, 3, 4, 5, 6, 7, 8, 130] {
        assert!(
            exit_status.contains(&format!("\\fB{code}\\fR\n")),
            "exit code {code} missing"
        );
    }
    let environment = &page[page.find(".SH ENVIRONMENT").unwrap()..page.find(".SH FILES").unwrap()];
    for variable in [
        "DATABASE_URL",
        "MIGLOCK_WAIT",
        "MIGLOCK_SET",
        "RUN_MIGRATIONS",
        "MIGLOCK_INSTANCE",
        "PGPASSFILE",
    ] {
        assert!(
            environment.contains(variable),
            "{variable} missing from ENVIRONMENT"
        );
    }
    let examples =
        &page[page.find(".SH EXAMPLES").unwrap()..page.find(".SH \"SEE ALSO\"").unwrap()];
    assert!(
        examples.contains("miglock apply \\-\\-migrations /app/migrations"),
        "{examples}"
    );
    // Renders without a warning, as man(1) would (-k runs preconv for the
    // UTF-8 in the help texts); scripts/setup-postgres.sh installs groff.
    let mut groff = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-P", "-cbou"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("groff, which scripts/setup-postgres.sh installs");
    {
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
    }
    let rendered = groff.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&rendered.stderr);
    assert!(
        rendered.status.success() && stderr.is_empty(),
        "groff: {stderr}"
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("miglock apply [OPTIONS]"), "{text}");
    // (-cbou: plain text, no overstrike; a minus sign may be any dash.)
    assert!(text.contains("migrations DIR"), "{text}");
}

#[test]
fn man_page_and_completions_know_the_new_commands() {
    let page = Miglock::new()
        .arg("man")
        .run()
        .assert_success()
        .stdout
        .clone();
    for sub in ["baseline", "new", "repair"] {
        let heading = format!(".SS \"miglock {sub}\"");
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
