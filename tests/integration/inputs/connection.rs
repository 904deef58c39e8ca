//! Bad connection settings: malformed URLs and `key=value` strings, an
//! empty `DATABASE_URL`, a bad libpq environment, root certificate files
//! that are not there (exit 2, without echoing a password); a server that
//! is not there, a database that does not exist, a wrong password (exit
//! 5, authentication failures not retried).

use std::time::{Duration, Instant};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, Miglock, MigrationDir, RunOutput};

use super::{
    apply_without_db, assert_json, assert_run, assert_untouched, assert_usage,
    assert_usage_untouched, bad, bad_input_db, create_t, good_dir, run_text_and_json, usage_setup,
    with_port, GOOD_TABLE, HISTORY,
};

#[test]
fn malformed_url_is_refused_without_echoing_it() {
    let (db, dir) = usage_setup();
    let port = db.cluster().port().to_string();
    // The real password in a URL that is malformed only in its port: the
    // harness fails the run if the password is echoed.
    let real = db.url().replace(&format!(":{port}/"), ":notaport/");
    assert_ne!(real, db.url());
    // "pw-x7" stands for a password wherever it sits; the values of options
    // that are not secrets (sslmode, a port) may be echoed.
    let cases = [
        (
            "literal URL",
            "postgres://u:pw@h:notaport/db".to_string(),
            "invalid value for option `port`",
        ),
        ("real password", real, "invalid value for option `port`"),
        (
            "port out of range",
            "postgres://u:pw-x7@h:99999/db".to_string(),
            "invalid value for option `port`",
        ),
        (
            "unknown option",
            "postgres://u:pw-x7@h/db?bogus=pw-x7".to_string(),
            "unknown option `bogus`",
        ),
        (
            "bad sslmode",
            "postgres://u:pw-x7@h/db?sslmode=sometimes".to_string(),
            "sslmode",
        ),
        (
            "query parameter without =",
            "postgres://u:pw-x7@h/db?sslmode".to_string(),
            "has no '='",
        ),
        (
            "key=value with a bad port",
            "host=h password=pw-x7 port=x".to_string(),
            "invalid value for option `port`",
        ),
        (
            "key=value with an unterminated quote",
            "host=h password='pw-x7".to_string(),
            "unterminated quoted value",
        ),
    ];
    for (case, url, reason) in cases {
        let mut m = Miglock::for_db(&db);
        m.args(["apply", "--migrations"])
            .arg(dir.path())
            .args(["--database-url", &url]);
        let (text, json) = run_text_and_json(&mut m);
        let needles = ["the database URL is malformed", reason];
        assert_run(case, &text, 2, &needles);
        assert_run(case, &json, 2, &needles);
        assert_json(case, &json, 2, "usage", &needles);
        for out in [&text, &json] {
            for secret in [url.as_str(), "pw-x7", ":pw@", "postgres://", "password="] {
                assert!(
                    !out.stdout.contains(secret) && !out.stderr.contains(secret),
                    "[{case}] the output echoes {secret:?}\n{}",
                    out.details()
                );
            }
        }
        assert_usage_untouched(case, &db);
    }
}

/// Runs apply against `url` with a good folder; returns (text, json, the
/// longer of the two run times).
fn apply_to(url: &str, dir: &MigrationDir, extra: &[&str]) -> (RunOutput, RunOutput, Duration) {
    let mut m = Miglock::new();
    m.env("DATABASE_URL", url)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .args(extra);
    let started = Instant::now();
    let text = m.run();
    let text_time = started.elapsed();
    let started = Instant::now();
    let json = m.args(["--format", "json"]).run();
    (text, json, text_time.max(started.elapsed()))
}

#[test]
fn nothing_listening_is_unavailable_after_retrying() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    // Port 1 (tcpmux) is privileged and never handed out as an ephemeral
    // port, so no cluster of this suite can be listening there.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 1)).is_err(),
        "something listens on 127.0.0.1:1; this test needs a closed port"
    );
    let url = with_port(&db, "1");
    let (text, json, took) = apply_to(&url, &dir, &["--connect-timeout", "1s"]);
    let needles = [
        "cannot connect to",
        "127.0.0.1:1",
        "gave up after",
        "Connection refused",
    ];
    for out in [&text, &json] {
        assert_run("closed port", out, 5, &needles);
        assert_run("closed port", out, 5, &["CONNECT_RETRY attempt=1"]);
    }
    assert_json("closed port", &json, 5, "unavailable", &needles);
    // Report only: "gave up after" above is what shows it gave up.
    eprintln!("closed port, --connect-timeout 1s: gave up after {took:?}");
    assert_untouched("closed port", &db);
}

#[test]
fn unresolvable_host_is_unavailable() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let (text, json, took) = apply_to(
        "postgres://u@nonexistent.invalid/db",
        &dir,
        &["--connect-timeout", "1s"],
    );
    let needles = ["cannot connect to u@nonexistent.invalid:5432/db"];
    for out in [&text, &json] {
        assert_run("unresolvable", out, 5, &needles);
    }
    assert_json("unresolvable", &json, 5, "unavailable", &needles);
    eprintln!("unresolvable host, --connect-timeout 1s: gave up after {took:?}");
    assert_untouched("unresolvable", &db);
}

/// The user and password in the URL's query, and an `@` in a value after
/// them (as in Azure's `user=admin@server`): read as libpq reads it, so
/// the run connects where the URL says, and the password is shown
/// nowhere (rust-postgres alone took everything up to that `@` for a
/// user name, and the name is in every log line).
#[test]
fn an_at_sign_in_the_query_connects_as_libpq_reads_it() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let cluster = db.cluster();
    let url = format!(
        "postgres://127.0.0.1:{}/{}?user=postgres&password={}&application_name=deploy@ci",
        cluster.port(),
        db.name(),
        cluster.password()
    );
    let out = Miglock::new()
        .env("DATABASE_URL", &url)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(
        json["database"],
        format!("postgres@127.0.0.1:{}/{}", cluster.port(), db.name())
    );
    assert_eq!(json["outcome"], "applied", "{}", out.details());
    assert!(
        !out.stdout.contains(cluster.password()) && !out.stderr.contains(cluster.password()),
        "the password appears in the output\n{}",
        out.details()
    );
    assert_eq!(db.history(), [100]);
    assert!(db.table_exists(GOOD_TABLE));
}

#[test]
fn wrong_password_is_unavailable_at_once_and_not_echoed() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let wrong = "wrong-secret-5b7e1c";
    let url = db.url().replace(db.cluster().password(), wrong);
    assert_ne!(url, db.url());
    // A long connect timeout: authentication failures must not be retried.
    for (case, extra, env) in [
        (
            "wrong password -vv",
            &["--connect-timeout", "30s", "-vv"][..],
            None,
        ),
        (
            "wrong password RUST_LOG=trace",
            &["--connect-timeout", "30s"][..],
            Some("trace"),
        ),
    ] {
        let mut m = Miglock::new();
        m.env("DATABASE_URL", &url)
            .args(["apply", "--migrations"])
            .arg(dir.path())
            .args(extra);
        if let Some(level) = env {
            m.env("RUST_LOG", level);
        }
        let started = Instant::now();
        let text = m.run();
        let json = m.args(["--format", "json"]).run();
        let took = started.elapsed();
        let needles = [
            "cannot connect to postgres@127.0.0.1",
            "password authentication failed",
            "28P01",
        ];
        assert_run(case, &text, 5, &needles);
        assert_run(case, &json, 5, &needles);
        assert_json(case, &json, 5, "unavailable", &needles);
        assert!(
            !text.stderr.contains("CONNECT_RETRY"),
            "[{case}] authentication failure was retried\n{}",
            text.details()
        );
        // Not retried is what "at once" means; the time is report-only.
        assert!(
            !json.stderr.contains("CONNECT_RETRY"),
            "[{case}] authentication failure was retried\n{}",
            json.details()
        );
        eprintln!("[{case}] two runs took {took:?}");
        for out in [&text, &json] {
            for secret in [wrong, db.cluster().password()] {
                assert!(
                    !out.stdout.contains(secret) && !out.stderr.contains(secret),
                    "[{case}] a password appears in the output\n{}",
                    out.details()
                );
            }
        }
        assert_untouched(case, &db);
    }
}

#[test]
fn unknown_database_is_unavailable() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let missing = format!("{}_missing", db.name());
    let url = db
        .url()
        .replace(&format!("/{}", db.name()), &format!("/{missing}"));
    let (text, json, took) = apply_to(&url, &dir, &["--connect-timeout", "30s"]);
    let needles = [
        "cannot connect to",
        &format!("database \"{missing}\" does not exist"),
        "3D000",
    ];
    assert_run("unknown database", &text, 5, &needles);
    assert_run("unknown database", &json, 5, &needles);
    assert_json("unknown database", &json, 5, "unavailable", &needles);
    for out in [&text, &json] {
        assert!(
            !out.stderr.contains("CONNECT_RETRY"),
            "[unknown database] retried\n{}",
            out.details()
        );
    }
    eprintln!("unknown database: two runs took {took:?}");
    assert_eq!(
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{missing}'"
        )),
        0,
        "the missing database was created"
    );
    assert_untouched("unknown database", &db);
}

/// The libpq variables that reach `db` on their own.
fn pg_vars(m: &mut Miglock, db: &TestDb) {
    m.env("PGHOST", "127.0.0.1")
        .env("PGPORT", db.cluster().port().to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", db.cluster().password())
        .env("PGDATABASE", db.name());
}

#[test]
fn an_empty_database_url_is_a_usage_error_not_a_fallback_to_libpq_defaults() {
    let db = Cluster::shared().create_db();
    let dir = create_t();
    // The PG* variables reach the database: a fallback would migrate it.
    for blank in ["", "  ", "\t"] {
        let mut m = apply_without_db(&dir);
        pg_vars(&mut m, &db);
        let started = Instant::now();
        let out = m.env("DATABASE_URL", blank).run();
        assert_usage(&out, "DATABASE_URL is set but empty");
        out.assert_stderr_contains("unset it to connect with the libpq variables");
        assert!(!out.stderr.contains("CONNECT_RETRY"), "{}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let mut m = apply_without_db(&dir);
    pg_vars(&mut m, &db);
    let out = m.args(["--database-url", ""]).run();
    assert_usage(&out, "--database-url is empty");
    // The other commands too.
    for command in ["status", "wait", "unlock"] {
        let mut m = Miglock::new();
        pg_vars(&mut m, &db);
        m.env("DATABASE_URL", "")
            .arg(command)
            .run()
            .assert_code(2)
            .assert_stderr_contains("DATABASE_URL is set but empty");
    }
    assert!(!db.table_exists(HISTORY), "nothing was touched");
    assert!(!db.table_exists("t"));

    // RUN_MIGRATIONS=0 still wins for apply.
    let mut m = apply_without_db(&dir);
    let out = m.env("DATABASE_URL", "").env("RUN_MIGRATIONS", "0").run();
    out.assert_code(4)
        .assert_stderr_contains("MIGRATIONS_DISABLED");
    assert_eq!(out.json()["outcome"], "disabled");

    // Unset, it still leaves the connection to the PG* variables.
    let mut m = apply_without_db(&dir);
    pg_vars(&mut m, &db);
    m.env_remove("DATABASE_URL").run().assert_success();
    assert_eq!(db.history(), [1]);
}

#[test]
fn a_missing_or_unreadable_root_certificate_file_is_a_usage_error_naming_it() {
    let db = Cluster::shared().create_db();
    let dir = create_t();
    let folder = MigrationDir::new();
    let folder_path = folder.path().display().to_string();
    let not_pem = MigrationDir::new();
    not_pem.file("root.crt", "not a certificate\n");
    let not_pem_path = not_pem.path().join("root.crt").display().to_string();
    let cases = [
        ("/nonexistent/root.crt", "verify-full"),
        (folder_path.as_str(), "verify-ca"),
        (not_pem_path.as_str(), "require"),
    ];
    for (file, mode) in cases {
        // As URL parameters…
        let url = format!("{}?sslmode={mode}&sslrootcert={file}", db.url());
        let out = apply_without_db(&dir).args(["--database-url", &url]).run();
        assert_usage(&out, "sslrootcert: ");
        out.assert_stderr_contains(file);
        assert!(!out.stderr.contains("cannot connect"), "{}", out.stderr);
        // …and as libpq variables.
        let out = apply(&db, &dir)
            .env("PGSSLMODE", mode)
            .env("PGSSLROOTCERT", file)
            .run();
        assert_usage(&out, file);
    }
    let out = apply(&db, &dir)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", "/nonexistent/root.crt")
        .run();
    assert_usage(
        &out,
        "sslrootcert: cannot read the root certificate file /nonexistent/root.crt",
    );
    // status, wait and unlock the same.
    for command in ["status", "wait", "unlock"] {
        Miglock::for_db(&db)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", "/nonexistent/root.crt")
            .arg(command)
            .run()
            .assert_code(2)
            .assert_stderr_contains("/nonexistent/root.crt");
    }
    assert!(!db.table_exists(HISTORY), "nothing was touched");
    // A mode that never reads the file does not mind it (libpq's `prefer`).
    apply(&db, &dir)
        .env("PGSSLMODE", "prefer")
        .env("PGSSLROOTCERT", "/nonexistent/root.crt")
        .run()
        .assert_success();
    assert_eq!(db.history(), [1]);
}

// ---------------------------------------------------------------------------
// One bad value each, for every command
// ---------------------------------------------------------------------------

#[test]
fn a_pgport_that_is_no_port_is_refused() {
    bad(
        "apply",
        &[],
        2,
        "usage",
        &["PGPORT=\"abc\" is not a port number"],
    )
    .env("PGPORT", "abc")
    .assert_refused(&bad_input_db());
}

#[test]
fn a_pgconnect_timeout_that_is_no_number_is_refused() {
    bad(
        "apply",
        &[],
        2,
        "usage",
        &["PGCONNECT_TIMEOUT=\"soon\" is not a number of seconds"],
    )
    .env("PGCONNECT_TIMEOUT", "soon")
    .assert_refused(&bad_input_db());
}

#[test]
fn an_empty_sslmode_is_refused() {
    let db = bad_input_db();
    bad(
        "apply",
        &["--database-url", &format!("{}?sslmode=", db.url())],
        2,
        "usage",
        &["the database URL is malformed: unknown sslmode \"\""],
    )
    .assert_refused(&db);
}

#[test]
fn an_sslmode_that_is_not_utf8_once_decoded_is_refused() {
    let db = bad_input_db();
    bad(
        "apply",
        &["--database-url", &format!("{}?sslmode=%FF", db.url())],
        2,
        "usage",
        &["a URL query parameter is not valid UTF-8 once decoded"],
    )
    .assert_refused(&db);
}

/// TEST-NET-1 (192.0.2.0/24) is reserved for documentation: nothing
/// answers there.
#[test]
fn an_unroutable_host_is_unavailable() {
    bad(
        "apply",
        &[
            "--database-url",
            "postgres://u:pw-unroutable@192.0.2.1:5432/db",
            "--connect-timeout",
            "1s",
        ],
        5,
        "unavailable",
        &["cannot connect to u@192.0.2.1:5432/db", "gave up after"],
    )
    .assert_refused(&bad_input_db());
}

/// The real password in a URL whose port is no number (the harness
/// fails the run if the password is echoed).
#[test]
fn status_refuses_a_malformed_url_holding_the_password() {
    let db = bad_input_db();
    bad(
        "status",
        &["--database-url", &with_port(&db, "x")],
        2,
        "usage",
        &[
            "the database URL is malformed",
            "invalid value for option `port`",
        ],
    )
    .assert_refused(&db);
}

#[test]
fn status_on_an_unresolvable_host_is_unavailable() {
    bad(
        "status",
        &[
            "--database-url",
            "postgres://u@nonexistent.invalid/db",
            "--connect-timeout",
            "1s",
        ],
        5,
        "unavailable",
        &["cannot connect to u@nonexistent.invalid:5432/db"],
    )
    .assert_refused(&bad_input_db());
}

#[test]
fn wait_refuses_an_unknown_pgsslmode() {
    bad(
        "wait",
        &[],
        2,
        "usage",
        &["PGSSLMODE: unknown sslmode \"bogus\""],
    )
    .env("PGSSLMODE", "bogus")
    .assert_refused(&bad_input_db());
}

#[test]
fn wait_with_a_wrong_password_is_unavailable() {
    let db = bad_input_db();
    let wrong_password = db.url().replace(db.cluster().password(), "wrong-pw-3e9a");
    bad(
        "wait",
        &["--database-url", &wrong_password],
        5,
        "unavailable",
        &["password authentication failed", "28P01"],
    )
    .assert_refused(&db);
}

#[test]
fn unlock_refuses_a_malformed_url() {
    let db = bad_input_db();
    bad(
        "unlock",
        &["--yes", "--database-url", &with_port(&db, "x")],
        2,
        "usage",
        &["the database URL is malformed"],
    )
    .assert_refused(&db);
}
