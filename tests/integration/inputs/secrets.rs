//! Secrets in the inputs: a password given on the command line is warned
//! about; a password is never printed, at any verbosity, in text or JSON,
//! on success or failure, nor shown in `pg_stat_activity` or the server
//! log, however it was given (the harness also fails any run whose output
//! holds a cluster's password). Lines starting with `FIGURE` count the
//! runs checked, as RELIABILITY.md quotes them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, finish_all, gated_migrations, wait_until, Miglock, MigrationDir, RunOutput, SETTLE,
};
use crate::probes::{sessions_like, LockGate};

use super::{assert_run, create_t, good_dir, history_rows, GOOD_TABLE};

/// `logged`: what proves the requested level was in effect.
fn verbose_run_prints_no_secret(
    case: &str,
    flag: Option<&str>,
    rust_log: Option<&str>,
    logged: &[&str],
) {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let mut m = Miglock::for_db(&db);
    m.args(["apply", "--migrations"]).arg(dir.path());
    if let Some(flag) = flag {
        m.arg(flag);
    }
    if let Some(level) = rust_log {
        m.env("RUST_LOG", level);
    }
    // The harness already fails on the cluster password; "pw-" is its
    // prefix, which catches a partly printed or differently encoded one.
    let out = m.run();
    assert_run(case, &out, 0, &["MIGRATION_APPLIED version=100 name=good"]);
    // The sweep proves nothing unless the requested level was in effect.
    assert!(!logged.is_empty(), "[{case}] name what proves the level");
    assert_run(case, &out, 0, logged);
    let url = db.url();
    let password = db.cluster().password();
    let encoded = utf8_percent_encode(password, NON_ALPHANUMERIC).to_string();
    for secret in [
        "pw-",
        password,
        &encoded,
        &url,
        "postgres://",
        "postgresql://",
        "password=",
    ] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "[{case}] the output contains {secret:?}\n{}",
            out.details()
        );
    }
    assert_eq!(
        history_rows(&db).map(|rows| rows.len()),
        Some(1),
        "[{case}] V100 recorded"
    );
    assert!(db.table_exists(GOOD_TABLE), "[{case}] V100 applied");
}

#[test]
fn very_verbose_run_prints_no_password() {
    // -vv is trace for miglock's own lines (dependencies stay at warn): the
    // debug lines about connecting and the trace of each lock attempt.
    verbose_run_prints_no_secret(
        "-vv",
        Some("-vv"),
        None,
        &[" DEBUG ", "connected to ", " TRACE ", "lock attempt: "],
    );
    verbose_run_prints_no_secret("-v", Some("-v"), None, &[" DEBUG ", "connected to "]);
    // The flag wins over RUST_LOG, which cannot turn it down.
    verbose_run_prints_no_secret(
        "-vv RUST_LOG=error",
        Some("-vv"),
        Some("error"),
        &[" DEBUG ", " TRACE ", "lock attempt: "],
    );
}

#[test]
fn rust_log_trace_prints_no_password() {
    // tokio-postgres traces every statement and socket poll at this level.
    verbose_run_prints_no_secret(
        "RUST_LOG=trace",
        None,
        Some("trace"),
        &[
            " TRACE ",
            // tokio-postgres at trace (its statements are never echoed).
            "poll_read: ",
            "connected to ",
            "lock attempt: ",
        ],
    );
    verbose_run_prints_no_secret(
        "RUST_LOG=debug",
        None,
        Some("debug"),
        &[" DEBUG ", "connected to "],
    );
    verbose_run_prints_no_secret(
        "RUST_LOG=miglock=trace,tokio_postgres=trace,postgres=trace",
        None,
        Some("miglock=trace,tokio_postgres=trace,postgres=trace"),
        &[" TRACE ", "poll_read: ", "lock attempt: "],
    );
}

/// A Flyway placeholder's value (a token given in the environment, to
/// keep it out of the files) is in the statement sent and never in the
/// output, at any log level: tokio-postgres echoes each statement at
/// debug, and echoed this one with the token in it.
#[test]
fn a_placeholder_value_is_never_printed_at_any_log_level() {
    let token = "tok-Zq7Xk9Wp";
    for (case, rust_log, flag, logged) in [
        ("RUST_LOG=debug", Some("debug"), None, " DEBUG "),
        ("RUST_LOG=trace", Some("trace"), None, "poll_read: "),
        ("-vv", None, Some("-vv"), " TRACE "),
    ] {
        let db = Cluster::shared().create_db();
        let dir = MigrationDir::with(&[(
            "V1.1__token.sql",
            "CREATE TABLE tokens (v text);\nINSERT INTO tokens VALUES ('${api_token}');\n",
        )]);
        let mut m = Miglock::for_db(&db);
        m.args(["apply", "--layout", "flyway", "--migrations"])
            .arg(dir.path())
            .env("MIGLOCK_PLACEHOLDERS", format!("api_token={token}"));
        if let Some(level) = rust_log {
            m.env("RUST_LOG", level);
        }
        if let Some(flag) = flag {
            m.arg(flag);
        }
        let out = m.run();
        assert_run(
            case,
            &out,
            0,
            &["MIGRATION_APPLIED version=1.1 name=token", logged],
        );
        assert!(
            !out.stdout.contains(token) && !out.stderr.contains(token),
            "[{case}] the placeholder's value is printed\n{}",
            out.details()
        );
        assert_eq!(
            db.query_i64(&format!("SELECT count(*) FROM tokens WHERE v = '{token}'")),
            1,
            "[{case}]"
        );
    }
}

const PASSWORD_WARNING: &str = "the --database-url value holds a password, which every local user \
                                can read in the process list: give it in DATABASE_URL, PGPASSWORD \
                                or ~/.pgpass instead";

#[test]
fn a_password_on_the_command_line_is_warned_about_once() {
    let db = Cluster::shared().create_db();
    let dir = create_t();
    let cluster = db.cluster();
    // In the URL.
    let out = Miglock::new()
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .args(["--database-url", &db.url()])
        .run();
    out.assert_success()
        .assert_stderr_contains(PASSWORD_WARNING);
    assert_eq!(out.stderr.matches("holds a password").count(), 1);
    assert_eq!(db.history(), [1]);
    // As a password= key, with any command.
    let key_value = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} password={}",
        cluster.port(),
        db.name(),
        cluster.password()
    );
    for command in ["apply", "status", "wait"] {
        let out = Miglock::new()
            .args([command, "--migrations"])
            .arg(dir.path())
            .args(["--database-url", &key_value])
            .run();
        out.assert_success()
            .assert_stderr_contains(PASSWORD_WARNING);
    }
    // In DATABASE_URL, from PGPASSWORD, or with no password at all: no warning.
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert!(!out.stderr.contains("holds a password"), "{}", out.stderr);
    let out = Miglock::new()
        .env("PGPASSWORD", cluster.password())
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .args([
            "--database-url",
            &format!(
                "postgres://postgres@127.0.0.1:{}/{}",
                cluster.port(),
                db.name()
            ),
        ])
        .run();
    out.assert_success();
    assert!(!out.stderr.contains("holds a password"), "{}", out.stderr);
    // RUN_MIGRATIONS=0 looks at nothing, so it says nothing either.
    let out = Miglock::new()
        .env("RUN_MIGRATIONS", "0")
        .args(["apply", "--database-url", &db.url()])
        .run();
    out.assert_code(4);
    assert!(!out.stderr.contains("holds a password"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// The sweep: one password given every way, to every command
// ---------------------------------------------------------------------------

/// Environment variables for a run: (name, value).
type Env = Vec<(&'static str, String)>;

/// A superuser role of its own whose password holds every character a
/// URL must encode (`@:/?#&=% '"\é+`), and that password given four ways:
/// in a URL, as `PGPASSWORD`, in a password file, in a `key=value`
/// string. [`Sweep::check`] fails a run whose output holds it.
struct Sweep<'d> {
    db: &'d TestDb<'d>,
    /// An alphanumeric part of the password, the same encoded or not.
    marker: String,
    password: String,
    encoded: String,
    /// The URL without a password.
    base: String,
    with_password: String,
    key_value: String,
    pgpass: PathBuf,
    _pgpass_dir: tempfile::TempDir,
    /// The folder every run is pointed at.
    dir: MigrationDir,
    runs: usize,
}

impl<'d> Sweep<'d> {
    fn new(db: &'d TestDb<'d>) -> Sweep<'d> {
        let cluster = db.cluster();
        let marker = format!("Sweep{}Zq", std::process::id());
        let password = format!("{marker}@:/?#&=% '\"\\é+");
        let role = format!("sweeper_{}", db.name());
        db.client()
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{}'",
                password.replace('\'', "''")
            ))
            .unwrap();
        let encoded = utf8_percent_encode(&password, NON_ALPHANUMERIC).to_string();
        let base = format!(
            "postgres://{role}@127.0.0.1:{}/{}",
            cluster.port(),
            db.name()
        );
        let with_password = format!(
            "postgres://{role}:{encoded}@127.0.0.1:{}/{}",
            cluster.port(),
            db.name()
        );
        let key_value = format!(
            "host=127.0.0.1 port={} user={role} dbname={} password='{}'",
            cluster.port(),
            db.name(),
            password.replace('\\', "\\\\").replace('\'', "\\'")
        );
        let pgpass_dir = tempfile::tempdir().unwrap();
        let pgpass = pgpass_dir.path().join("pgpass");
        fs::write(
            &pgpass,
            format!(
                "127.0.0.1:{}:{}:{role}:{}\n",
                cluster.port(),
                db.name(),
                password.replace('\\', "\\\\").replace(':', "\\:")
            ),
        )
        .unwrap();
        fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600)).unwrap();
        Sweep {
            db,
            marker,
            password,
            encoded,
            base,
            with_password,
            key_value,
            pgpass,
            _pgpass_dir: pgpass_dir,
            dir: gated_migrations(),
            runs: 0,
        }
    }

    fn secrets(&self) -> [&str; 3] {
        [&self.marker, &self.password, &self.encoded]
    }

    /// Fails if the password, encoded or not, is in the run's output.
    #[track_caller]
    fn check(&mut self, what: &str, out: &RunOutput) {
        self.runs += 1;
        for secret in self.secrets() {
            for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                assert!(
                    !text.contains(secret),
                    "[{what}] the password is on {stream}\n{}",
                    out.details()
                );
            }
        }
    }

    /// How the password is given: (name, DATABASE_URL, extra env).
    fn forms(&self) -> Vec<(&'static str, String, Env)> {
        let pgpass = self.pgpass.to_str().unwrap().to_string();
        vec![
            ("URL", self.with_password.clone(), vec![]),
            (
                "PGPASSWORD",
                self.base.clone(),
                vec![("PGPASSWORD", self.password.clone())],
            ),
            (
                "password file",
                self.base.clone(),
                vec![("PGPASSFILE", pgpass)],
            ),
            ("key=value", self.key_value.clone(), vec![]),
        ]
    }

    /// miglock connecting with `url` and `env`, pointed at the folder.
    fn miglock(&self, url: &str, env: &[(&str, String)]) -> Miglock {
        let mut m = Miglock::new();
        m.env("DATABASE_URL", url)
            .args(["--migrations"])
            .arg(self.dir.path());
        for (k, v) in env {
            m.env(k, v);
        }
        m
    }

    /// Nor is it in the server log; then the count, as RELIABILITY.md
    /// quotes it.
    fn finish(&self, what: &str) {
        let log = self.db.cluster().server_log();
        for secret in self.secrets() {
            assert!(!log.contains(secret), "the server log holds the password");
        }
        eprintln!(
            "FIGURE secrets sweep, {what}: {} runs checked, plus the server log",
            self.runs
        );
    }
}

/// V1 applied through each form in turn (the first applies, the others
/// find it current), then status, at `-vv`: no output holds the password.
#[test]
fn a_password_given_any_way_is_never_printed() {
    let db = Cluster::shared().create_db();
    let mut sweep = Sweep::new(&db);
    for (form, url, env) in sweep.forms() {
        let out = sweep
            .miglock(&url, &env)
            .args(["apply", "--format", "json", "--target", "1", "-vv"])
            .run();
        out.assert_success();
        sweep.check(&format!("{form}: apply"), &out);
        let out = sweep
            .miglock(&url, &env)
            .args(["status", "--format", "json"])
            .run();
        out.assert_success();
        sweep.check(&format!("{form}: status"), &out);
    }
    assert_eq!(db.history(), [1]);
    sweep.finish("success");
}

/// While a holder is inside V2 and a replica and a `wait` wait, all
/// connected with the password: no session shows it in
/// `application_name` or `query`, and every command at every verbosity in
/// text and JSON inspects them without printing it; `unlock --force` ends
/// the holder, the waiter applies the rest, the `wait` returns.
#[test]
fn a_password_is_never_shown_while_the_lock_is_held() {
    let db = Cluster::shared().create_db();
    let mut sweep = Sweep::new(&db);
    apply(&db, &sweep.dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    let mut gate = LockGate::close(&db);
    let holder = sweep
        .miglock(&sweep.with_password, &[])
        .args(["apply", "--format", "json"])
        .spawn();
    wait_until(SETTLE, || LockGate::waiting(&db) == 1);
    let waiter = sweep
        .miglock(&sweep.base, &[("PGPASSWORD", sweep.password.clone())])
        .args(["apply", "--format", "json", "--wait", "60s"])
        .spawn();
    let waiting = sweep
        .miglock(&sweep.key_value, &[])
        .args(["wait", "--format", "json", "--timeout", "60s"])
        .spawn();
    wait_until(SETTLE, || {
        sessions_like(&db, "miglock apply waiting%") == 1
            && sessions_like(&db, "miglock wait waiting%") == 1
    });
    let sessions = db.query_strings(
        "SELECT coalesce(application_name, ''), coalesce(query, '') FROM pg_stat_activity \
         WHERE datname = current_database()",
    );
    let miglock_sessions = sessions
        .iter()
        .filter(|row| row[0].as_deref().unwrap().starts_with("miglock "))
        .count();
    assert_eq!(miglock_sessions, 3, "{sessions:?}");
    let cluster_password = db.cluster().password().to_string();
    for row in &sessions {
        for value in row.iter().flatten() {
            for secret in sweep.secrets().iter().chain([&cluster_password.as_str()]) {
                assert!(
                    !value.contains(secret),
                    "pg_stat_activity shows the password: {row:?}"
                );
            }
        }
    }
    for verbosity in [&["-q"][..], &[], &["-v"], &["-vv"], &["RUST_LOG=trace"]] {
        for (command, extra) in [
            ("status", &[][..]),
            ("unlock", &["--dry-run"][..]),
            ("apply", &["--wait", "0"][..]),
            ("wait", &["--timeout", "200ms"][..]),
        ] {
            for format in ["text", "json"] {
                let mut m = sweep.miglock(&sweep.with_password, &[]);
                m.args([command, "--format", format]).args(extra);
                match verbosity {
                    ["RUST_LOG=trace"] => {
                        m.env("RUST_LOG", "trace");
                    }
                    flags => {
                        m.args(flags);
                    }
                }
                let out = m.run();
                let what = format!("{command} {extra:?} {format} {verbosity:?} while held");
                // Lock busy: apply skips (3), unlock --dry-run would end
                // the holder (3), wait times out (7), status describes (0).
                let expected = match command {
                    "status" => 0,
                    "wait" => 7,
                    _ => 3,
                };
                assert_eq!(out.code, expected, "[{what}]\n{}", out.details());
                if format == "json" {
                    let json = out.json();
                    assert!(
                        json["lock"]["holder"]["application_name"]
                            .as_str()
                            .is_some_and(|a| a.starts_with("miglock apply holding"))
                            || command == "wait",
                        "[{what}] {json:#}"
                    );
                }
                sweep.check(&what, &out);
            }
        }
    }
    // unlock --force ends the holder (its migration rolls back); the waiter
    // takes over once the gate opens; the `wait` caller returns.
    let pgpass = sweep.pgpass.to_str().unwrap().to_string();
    let out = sweep
        .miglock(&sweep.base, &[("PGPASSFILE", pgpass)])
        .args(["unlock", "--yes", "--force", "--format", "json", "-vv"])
        .run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "released");
    sweep.check("unlock --yes --force", &out);
    gate.open();
    let mut finished = finish_all(vec![holder, waiter, waiting], Duration::from_secs(60));
    let (waiting, _) = finished.pop().unwrap();
    let (waiter, _) = finished.pop().unwrap();
    let (holder, _) = finished.pop().unwrap();
    holder.assert_code(1);
    waiter.assert_success();
    waiting.assert_success();
    for (what, out) in [("holder", &holder), ("waiter", &waiter), ("wait", &waiting)] {
        sweep.check(what, out);
    }
    assert_eq!(db.history(), [1, 2, 3]);
    sweep.finish("while held");
}

/// A wrong password with the same characters, and a malformed URL or
/// `key=value` string holding the real one, for every command at `-vv`
/// and at trace: no output holds either password.
#[test]
fn a_password_is_never_printed_when_connecting_fails() {
    let db = Cluster::shared().create_db();
    let mut sweep = Sweep::new(&db);
    let port = db.cluster().port();
    let wrong_password = sweep.password.replace("Zq", "Zz");
    let wrong = utf8_percent_encode(&wrong_password, NON_ALPHANUMERIC).to_string();
    let wrong_url = sweep.with_password.replace(&sweep.encoded, &wrong);
    let bad_port = sweep.with_password.replace(&format!(":{port}/"), ":x/");
    let bad_kv = sweep.key_value.replace(&format!("port={port}"), "port=x");
    for (url, code) in [(&wrong_url, 5), (&bad_port, 2), (&bad_kv, 2)] {
        for command in ["apply", "status", "wait", "unlock"] {
            for trace in [false, true] {
                let mut m = sweep.miglock(url, &[]);
                m.args([command, "--format", "json"]);
                if command == "unlock" {
                    m.arg("--yes");
                }
                if trace {
                    m.env("RUST_LOG", "trace");
                } else {
                    m.arg("-vv");
                }
                let out = m.run();
                let what = format!("{command} code {code} trace={trace}");
                assert_eq!(out.code, code, "[{what}]\n{}", out.details());
                sweep.check(&what, &out);
                if code == 5 {
                    assert!(out.stderr.contains("28P01"), "[{what}]\n{}", out.details());
                    for secret in [&wrong_password, &wrong] {
                        assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));
                    }
                }
            }
        }
    }
    assert!(!db.table_exists("refinery_schema_history"));
    sweep.finish("failures");
}
