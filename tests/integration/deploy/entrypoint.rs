//! `examples/entrypoint.sh` against a real PostgreSQL, for every exit
//! code of `miglock apply` it branches on: it starts the application (by
//! `exec`, so it gets the orchestrator's signals), waits for the schema,
//! or exits without starting it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, closed_port, migrated_by_newer_release, release, send_signal, two_migrations,
    wait_until, Miglock, RunOutput, SETTLE,
};
use crate::probes::{backend_pid, hold_default_key, sessions_like};

use super::{read_repo_file, repo_path, MIGLOCK};

/// Runs a command to completion and returns its output with the pid it had,
/// which is the pid of whatever it `exec`ed.
fn run_with_pid(m: &mut Miglock) -> (RunOutput, u32) {
    let child = m.spawn();
    let pid = child.id();
    (RunOutput::from_child(child), pid)
}

/// The application the entrypoint starts: it prints its pid and arguments
/// (an argument with a space must arrive intact) and leaves a marker file,
/// so a test can tell whether, and when, it ran.
pub(super) struct App {
    dir: tempfile::TempDir,
}

impl App {
    const SCRIPT: &'static str = r#"printf 'APP_STARTED pid=%s' "$$"; printf ' [%s]' "$@"; echo; echo started > "$APP_MARKER""#;

    pub(super) fn new() -> App {
        App {
            dir: tempfile::tempdir().expect("create app tempdir"),
        }
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("started")
    }

    pub(super) fn command(&self, m: &mut Miglock) {
        m.env("APP_MARKER", self.marker()).args([
            "sh",
            "-c",
            Self::SCRIPT,
            "app",
            "--name",
            "two words",
        ]);
    }

    pub(super) fn started(&self) -> bool {
        self.marker().exists()
    }

    /// Started by `exec`: the same pid as the entrypoint, so it gets the
    /// orchestrator's signals itself.
    #[track_caller]
    pub(super) fn assert_started(&self, out: &RunOutput, entrypoint_pid: u32) {
        out.assert_stdout_contains(&format!(
            "APP_STARTED pid={entrypoint_pid} [--name] [two words]\n"
        ));
        assert!(self.started(), "no marker file");
    }

    #[track_caller]
    pub(super) fn assert_not_started(&self, out: &RunOutput) {
        assert!(
            !out.stdout.contains("APP_STARTED") && !self.started(),
            "the app ran\n{out:?}"
        );
    }
}

/// [`entrypoint`] with `env` set and the test [`App`] as its command.
fn with_app(db: &TestDb, dir: &Path, env: &[(&str, &str)]) -> (App, Miglock) {
    let app = App::new();
    let mut m = entrypoint(db, dir);
    for (key, value) in env {
        m.env(key, value);
    }
    app.command(&mut m);
    (app, m)
}

/// `sh examples/entrypoint.sh` with the harness's clean environment and
/// password checks, the binary under test as MIGLOCK_BIN, and `dir` as the
/// migrations folder.
pub(super) fn entrypoint(db: &TestDb, dir: &Path) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.program("sh")
        .arg(repo_path("examples/entrypoint.sh"))
        .env("MIGLOCK_BIN", MIGLOCK)
        .env("MIGLOCK_MIGRATIONS", dir);
    m
}

#[test]
fn entrypoint_is_posix_sh() {
    let script = repo_path("examples/entrypoint.sh");
    let mut shells = vec![vec!["sh", "-n"], vec!["bash", "--posix", "-n"]];
    if Path::new("/usr/bin/dash").exists() || Path::new("/bin/dash").exists() {
        shells.push(vec!["dash", "-n"]);
    }
    // Not required (often missing), but the strictest check there is.
    if Command::new("shellcheck").arg("--version").output().is_ok() {
        shells.push(vec!["shellcheck", "--shell=sh"]);
    }
    for shell in shells {
        let out = Command::new(shell[0])
            .args(&shell[1..])
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("run {shell:?}: {e}"));
        assert!(
            out.status.success(),
            "{shell:?} rejects the entrypoint:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = read_repo_file("examples/entrypoint.sh");
    assert!(text.starts_with("#!/bin/sh\n"));
    assert!(text.contains("\nset -eu\n"));
    assert!(text.contains("\nexec \"$@\"\n"));
}

#[test]
fn entrypoint_applies_then_execs_the_app() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let (app, mut m) = with_app(&db, dir.path(), &[]);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=2")
        .assert_stderr_contains("miglock-entrypoint: apply exited 0 (the schema is current)")
        .assert_stderr_contains("miglock-entrypoint: starting sh\n");
    app.assert_started(&out, pid);
    // Only the program is logged: arguments may hold secrets.
    assert!(!out.stderr.contains("two words"), "{}", out.stderr);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_starts_the_app_when_the_schema_is_current() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir).run().assert_success();
    let (app, mut m) = with_app(&db, dir.path(), &[]);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT")
        .assert_stderr_contains("miglock-entrypoint: apply exited 0 (the schema is current)");
    assert!(!out.stderr.contains("MIGRATION_APPLIED"), "{}", out.stderr);
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_without_an_app_only_migrates() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let out = entrypoint(&db, dir.path()).run();
    out.assert_success()
        .assert_stderr_contains("miglock-entrypoint: no app command given: exit 0");
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_starts_without_waiting_when_the_lock_is_busy_by_default() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let _holder = hold_default_key(&db);
    let (app, mut m) = with_app(&db, dir.path(), &[("MIGLOCK_WAIT", "0")]);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("LOCK_BUSY")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 3 (skipped: another replica holds the lock); \
             MIGLOCK_ON_BUSY=start: starting without waiting",
        );
    app.assert_started(&out, pid);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "the holder never migrated, nor did we"
    );
}

#[test]
fn entrypoint_waits_for_the_schema_when_the_lock_is_busy_in_wait_mode() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let holder = hold_default_key(&db);
    let (app, mut m) = with_app(
        &db,
        dir.path(),
        &[
            ("MIGLOCK_WAIT", "0"),
            ("MIGLOCK_ON_BUSY", "wait"),
            ("MIGLOCK_WAIT_TIMEOUT", "60s"),
        ],
    );
    let child = m.spawn();
    let pid = child.id();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 1);
    assert!(!app.started(), "the app started while the schema was old");
    // The holder finishes its work: it lets go, and the migrations land.
    drop(holder);
    apply(&db, &dir).run().assert_success();
    let out = RunOutput::from_child(child);
    out.assert_success()
        .assert_stderr_contains("MIGLOCK_ON_BUSY=wait: waiting for the schema")
        .assert_stderr_contains("WAITING_FOR_SCHEMA")
        .assert_stderr_contains("miglock-entrypoint: wait exited 0 (the schema is current)");
    assert!(!out.stderr.contains("MIGRATION_APPLIED"), "{}", out.stderr);
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_starts_at_once_when_migrations_are_disabled() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let (app, mut m) = with_app(&db, dir.path(), &[("RUN_MIGRATIONS", "0")]);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("MIGRATIONS_DISABLED")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 4 (disabled: RUN_MIGRATIONS is off)\n",
        );
    app.assert_started(&out, pid);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "a disabled replica touches nothing"
    );
}

#[test]
fn entrypoint_waits_for_the_migrator_when_disabled_and_told_to() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let (app, mut m) = with_app(
        &db,
        dir.path(),
        &[
            ("RUN_MIGRATIONS", "0"),
            ("MIGLOCK_WAIT_WHEN_DISABLED", "1"),
            ("MIGLOCK_WAIT_TIMEOUT", "60s"),
        ],
    );
    let child = m.spawn();
    let pid = child.id();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 1);
    assert!(!app.started(), "the app started while the schema was old");
    apply(&db, &dir).run().assert_success();
    let out = RunOutput::from_child(child);
    out.assert_success()
        .assert_stderr_contains("MIGLOCK_WAIT_WHEN_DISABLED=1: waiting for the schema")
        .assert_stderr_contains("miglock-entrypoint: wait exited 0 (the schema is current)");
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2]);
}

/// A rolling deploy or a rollback: the newer image migrated to V5, and a
/// replica of the older one (files V1..V4) still has to start.
#[test]
fn entrypoint_starts_an_older_image_on_a_newer_schema() {
    let db = Cluster::shared().create_db();
    let new = release(5);
    let out = entrypoint(&db, new.path()).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=5");
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);

    let old = release(4);
    let (app, mut m) = with_app(&db, old.path(), &[]);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("SCHEMA_AHEAD newest_local=V4 ahead=V5__add_d")
        .assert_stderr_contains("miglock-entrypoint: apply exited 0 (the schema is current)");
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);
}

/// The same for a replica that never migrates but waits for the schema.
#[test]
fn entrypoint_waiting_when_disabled_starts_an_older_image_on_a_newer_schema() {
    let db = migrated_by_newer_release();
    let old = release(4);
    let (app, mut m) = with_app(
        &db,
        old.path(),
        &[
            ("RUN_MIGRATIONS", "0"),
            ("MIGLOCK_WAIT_WHEN_DISABLED", "1"),
            ("MIGLOCK_WAIT_TIMEOUT", "60s"),
        ],
    );
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("MIGLOCK_WAIT_WHEN_DISABLED=1: waiting for the schema")
        .assert_stderr_contains("SCHEMA_AHEAD newest_local=V4 ahead=V5__add_d")
        .assert_stderr_contains("miglock-entrypoint: wait exited 0 (the schema is current)");
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);
}

/// `--ahead reject` through the entrypoint: the older image does not start.
#[test]
fn entrypoint_refuses_a_newer_schema_with_ahead_reject() {
    let db = migrated_by_newer_release();
    let old = release(4);
    let (app, mut m) = with_app(&db, old.path(), &[("MIGLOCK_AHEAD", "reject")]);
    let out = m.run();
    out.assert_code(6)
        .assert_stderr_contains("newer than this image")
        .assert_stderr_contains("miglock-entrypoint: apply exited 6 (invalid");
    app.assert_not_started(&out);
}

#[test]
fn entrypoint_does_not_start_when_the_wait_times_out() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let (app, mut m) = with_app(
        &db,
        dir.path(),
        &[
            ("RUN_MIGRATIONS", "0"),
            ("MIGLOCK_WAIT_WHEN_DISABLED", "1"),
            ("MIGLOCK_WAIT_TIMEOUT", "1s"),
        ],
    );
    let out = m.run();
    out.assert_code(7).assert_stderr_contains(
        "miglock-entrypoint: wait exited 7 (pending: the schema is still not current at \
         MIGLOCK_WAIT_TIMEOUT): not starting the app; exit 7",
    );
    app.assert_not_started(&out);
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn entrypoint_exits_75_without_starting_when_the_database_is_unavailable() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let dir = two_migrations();
    // The cluster's real password, so the harness checks it is never shown.
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/{}",
        cluster.password(),
        closed_port(),
        db.name()
    );
    let (app, mut m) = with_app(
        &db,
        dir.path(),
        &[("DATABASE_URL", &url), ("MIGLOCK_CONNECT_TIMEOUT", "1s")],
    );
    let out = m.run();
    out.assert_code(75)
        .assert_stderr_contains("CONNECT_RETRY")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 5 (unavailable: no database connection): \
             not starting the app; exit 75",
        );
    app.assert_not_started(&out);
    assert_eq!(db.history(), Vec::<i64>::new());
}

/// Exit 8 (a table lock stayed held for the whole budget) is temporary, as
/// 5 is: nothing of the migration was applied, and a later start tries
/// again.
#[test]
fn entrypoint_exits_75_without_starting_when_a_migration_is_blocked() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply(&db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    // A session idle in a transaction that read `t`, which V2 alters.
    let mut blocker = db.client();
    blocker
        .batch_execute("SET application_name = 'nightly-report'; BEGIN; SELECT * FROM t;")
        .unwrap();
    let pid = backend_pid(&mut blocker);
    let (app, mut m) = with_app(&db, dir.path(), &[("MIGLOCK_DDL_LOCK_BUDGET", "1s")]);
    let out = m.run();
    out.assert_code(75)
        .assert_stderr_contains(&format!(
            "DDL_BLOCKED version=2 name=add_note attempt=1 lock_timeout_ms=50 table=t \
             mode=AccessShareLock blocker_pid={pid} application_name=\"nightly-report\""
        ))
        .assert_stderr_contains("could not get its table locks within --ddl-lock-budget 1s")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 8 (blocked: a migration's table lock stayed held by \
             another session): not starting the app; exit 75 so that the orchestrator retries",
        );
    app.assert_not_started(&out);
    assert_eq!(db.history(), [1], "nothing of V2 applied");
    assert!(!db.column_exists("t", "note"));
    // Once the blocker is gone, the next start migrates and starts the app.
    blocker.batch_execute("COMMIT").unwrap();
    let (app, mut m) = with_app(&db, dir.path(), &[("MIGLOCK_DDL_LOCK_BUDGET", "1s")]);
    let (out, entrypoint_pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=2 name=add_note");
    app.assert_started(&out, entrypoint_pid);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_does_not_start_after_a_failed_migration() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    dir.file(
        "V2__add_note.sql",
        "ALTER TABLE no_such_table ADD COLUMN note text;\n",
    );
    let (app, mut m) = with_app(&db, dir.path(), &[]);
    let out = m.run();
    out.assert_code(1)
        .assert_stderr_contains("MIGRATION_FAILED version=2")
        .assert_stderr_contains("miglock-entrypoint: apply exited 1 (failed: ")
        .assert_stderr_contains("not starting the app; exit 1");
    app.assert_not_started(&out);
    assert_eq!(db.history(), [1], "V1 committed, V2 rolled back");
}

#[test]
fn entrypoint_does_not_start_with_an_invalid_migration_set() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    dir.file("V3-add_phone.sql", "ALTER TABLE t ADD COLUMN phone text;\n");
    let (app, mut m) = with_app(&db, dir.path(), &[]);
    let out = m.run();
    out.assert_code(6)
        .assert_stderr_contains("V3-add_phone.sql")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 6 (invalid: the migration set is unsafe to run): \
             not starting the app; exit 6",
        );
    app.assert_not_started(&out);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "nothing runs from a bad set"
    );
}

#[test]
fn entrypoint_refuses_its_own_bad_settings_before_running_miglock() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    for (name, value) in [
        ("MIGLOCK_ON_BUSY", "wiat"),
        ("MIGLOCK_WAIT_WHEN_DISABLED", "maybe"),
    ] {
        let (app, mut m) = with_app(&db, dir.path(), &[(name, value)]);
        let out = m.run();
        out.assert_code(2)
            .assert_stderr_contains(&format!("miglock-entrypoint: {name} must be "))
            .assert_stderr_contains("not starting the app; exit 2");
        assert!(!out.stderr.contains("apply exited"), "{}", out.stderr);
        app.assert_not_started(&out);
    }
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn entrypoint_forwards_sigterm_to_miglock_and_does_not_start() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let _holder = hold_default_key(&db);
    let (app, mut m) = with_app(&db, dir.path(), &[("MIGLOCK_WAIT", "60s")]);
    let child = m.spawn();
    let pid = child.id();
    wait_until(SETTLE, || sessions_like(&db, "miglock apply waiting%") == 1);
    // To the shell only, as `docker stop` signals PID 1.
    // Exit 130, not 3: it was the signal, not the end of MIGLOCK_WAIT
    // (the lock stays held), that ended it.
    let sent = Instant::now();
    send_signal(pid, "TERM");
    let out = RunOutput::from_child(child);
    eprintln!("entrypoint SIGTERM: exited after {:?}", sent.elapsed());
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGTERM")
        .assert_stderr_contains("miglock-entrypoint: apply exited 130 (interrupted)");
    app.assert_not_started(&out);
    assert_eq!(sessions_like(&db, "miglock apply%"), 0);
    assert_eq!(db.history(), Vec::<i64>::new());
}
