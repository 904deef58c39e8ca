//! The README's quick start, run as written: the block a newcomer pastes
//! after pointing `DATABASE_URL` at a database must create, write and apply
//! the first migration, print what the README shows, and leave the table.
//! (The block before it starts PostgreSQL with `docker run`; there is no
//! container engine in the test environment, so the test's own database
//! stands in for it.)

use std::process::Command;

use super::{read_repo_file, MIGLOCK};
use crate::cluster::Cluster;

/// The fenced blocks of the README's "Quick start" section: (info string,
/// body).
fn quick_start_blocks() -> Vec<(String, String)> {
    let readme = read_repo_file("README.md");
    let start = readme
        .find("\n## Quick start\n")
        .expect("a Quick start section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| {
            let (info, body) = block.split_once('\n').unwrap_or((block, ""));
            (info.trim().to_string(), body.to_string())
        })
        .collect()
}

#[test]
fn the_quick_start_runs_as_written() {
    let blocks = quick_start_blocks();
    let (setup, commands, shown) = match &blocks[..] {
        [setup, commands, shown, ..] => (setup, commands, shown),
        _ => panic!("the quick start has three blocks: {blocks:?}"),
    };
    // The set-up only says where the database is; the test gives its own.
    assert!(
        setup.1.contains("export DATABASE_URL=postgres://"),
        "{setup:?}"
    );
    assert_eq!(commands.0, "sh");
    assert!(
        commands
            .1
            .lines()
            .all(|line| !line.contains("examples/migrations")),
        "the quick start must not touch the demo's migrations"
    );

    let db = Cluster::shared().create_db();
    let work = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(MIGLOCK).parent().unwrap();
    let run = |script: &str| {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(work.path())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("DATABASE_URL", db.url())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&commands.1);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // What the README shows: the new file's path on stdout, then log lines
    // (their timestamps elided with …, the duration varies).
    let mut shown_lines = shown.1.lines();
    assert_eq!(shown.0, "text");
    assert_eq!(stdout.trim_end(), shown_lines.next().unwrap());
    for line in shown_lines {
        let line = line
            .strip_prefix("… ")
            .expect("a log line, its timestamp elided");
        let fixed = line.split(" ms=").next().unwrap();
        assert!(
            stderr.lines().any(|logged| logged.contains(fixed)),
            "README shows {line:?}; the run logged:\n{stderr}"
        );
    }
    assert!(db.table_exists("accounts"));
    assert_eq!(
        db.query_i64("SELECT count(*) FROM refinery_schema_history WHERE version = 1"),
        1
    );

    // "Run it again": nothing pending, exit 0.
    let again = commands.1.lines().last().unwrap();
    assert_eq!(again, "miglock apply --migrations db");
    let (code, _, stderr) = run(again);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("SCHEMA_CURRENT version=V1__create_accounts"),
        "{stderr}"
    );
    assert!(stderr.contains("(nothing pending)"), "{stderr}");
    assert!(!stderr.contains("LOCK_ACQUIRED"), "no lock taken: {stderr}");
}
