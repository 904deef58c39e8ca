//! Output errors: a reader that goes away (`| head`) ends the output
//! quietly with the outcome's code; any other write error on stdout (a full
//! disk, a closed stdout) is exit 1 with an `error:` line, which says when
//! the migrations were applied all the same.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::cluster::Cluster;
use crate::harness::{apply, two_migrations, Miglock, MigrationDir, RunOutput};

/// Enough pending migrations that `status` writes far more than a pipe
/// holds (64 KiB), so its write meets the closed pipe.
fn many_migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    for version in 1..=3000 {
        dir.file(
            &format!("V{version}__a_migration_with_a_rather_long_name.sql"),
            "SELECT 1;",
        );
    }
    dir
}

/// Runs `miglock` with its stdout closed, as `miglock … >&-` does.
fn with_stdout_closed(m: &mut Miglock) -> &mut Miglock {
    m.program("/bin/sh").args([
        "-c",
        "exec \"$0\" \"$@\" >&-",
        env!("CARGO_BIN_EXE_miglock"),
    ])
}

fn assert_no_panic(out: &RunOutput) {
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("failed printing"),
        "miglock panicked on an output error:\n{}",
        out.stderr
    );
}

#[test]
fn a_reader_that_goes_away_ends_status_quietly_with_its_own_code() {
    let db = Cluster::shared().create_db();
    let dir = many_migrations();
    for format in ["text", "json"] {
        let mut child = Miglock::for_db(&db)
            .args(["status", "--format", format, "--migrations"])
            .arg(dir.path())
            .spawn();
        // `| head -1`: one line, then the reader is gone.
        let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        drop(reader);
        let out = RunOutput::from_child(child);
        assert_no_panic(&out);
        // status without --check exits 0 whatever the state.
        out.assert_code(0);
        assert!(
            !out.stderr.contains("error:"),
            "{format}: a closed pipe is no error:\n{}",
            out.stderr
        );
        if format == "text" {
            assert!(first.starts_with("Database "), "{first:?}");
        } else {
            assert_eq!(first, "{\n");
        }
    }
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn status_check_keeps_its_pending_code_when_the_reader_goes_away() {
    let db = Cluster::shared().create_db();
    let dir = many_migrations();
    let mut child = Miglock::for_db(&db)
        .args(["status", "--check", "--migrations"])
        .arg(dir.path())
        .spawn();
    drop(child.stdout.take());
    let out = RunOutput::from_child(child);
    assert_no_panic(&out);
    out.assert_code(7);
}

#[test]
fn a_full_disk_after_a_successful_apply_is_exit_1_saying_the_migrations_were_applied() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let full = File::options().write(true).open("/dev/full").unwrap();
    let out = apply(&db, &dir).stdout(Stdio::from(full)).run();
    assert_no_panic(&out);
    out.assert_code(1)
        .assert_stderr_contains("MIGRATION_APPLIED version=2")
        .assert_stderr_contains("error: cannot write the result to stdout: No space left on device")
        .assert_stderr_contains("The migrations were applied");
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn a_full_disk_under_status_is_exit_1() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let full = File::options().write(true).open("/dev/full").unwrap();
    let out = Miglock::for_db(&db)
        .args(["status", "--migrations"])
        .arg(dir.path())
        .stdout(Stdio::from(full))
        .run();
    assert_no_panic(&out);
    out.assert_code(1)
        .assert_stderr_contains("error: cannot write the result to stdout");
    assert!(
        !out.stderr.contains("migrations were applied"),
        "status applies nothing:\n{}",
        out.stderr
    );
}

#[test]
fn a_closed_stdout_loses_no_json_silently() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let mut m = Miglock::for_db(&db);
    let out = with_stdout_closed(&mut m)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    assert_no_panic(&out);
    out.assert_code(1)
        .assert_stderr_contains("error: cannot write the result to stdout: stdout is closed")
        .assert_stderr_contains("The migrations were applied");
    assert_eq!(db.history(), [1, 2]);

    // Text output of apply is the log on stderr: nothing is lost.
    let dir = two_migrations();
    dir.file("V3__more.sql", "ALTER TABLE t ADD COLUMN more int;");
    let mut m = Miglock::for_db(&db);
    let out = with_stdout_closed(&mut m)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=3");
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn generated_documents_stop_quietly_at_a_closed_pipe() {
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let mut child = Miglock::new().args(args).spawn();
        drop(child.stdout.take());
        let out = RunOutput::from_child(child);
        assert_no_panic(&out);
        out.assert_code(0);
        let full = File::options().write(true).open("/dev/full").unwrap();
        let out = Miglock::new().args(args).stdout(Stdio::from(full)).run();
        out.assert_code(1)
            .assert_stderr_contains("error: cannot write the result to stdout");
    }
}

#[test]
fn a_stdout_opened_read_write_on_dev_null_is_no_error() {
    // Python's subprocess.DEVNULL and Node's stdio 'ignore' open /dev/null
    // read-write for stdout: not a closed stdout.
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();
    let out = apply(&db, &dir).stdout(Stdio::from(null)).run();
    assert_no_panic(&out);
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=2");
    assert!(!out.stderr.contains("error:"), "{}", out.stderr);
    assert_eq!(db.history(), [1, 2]);
}
