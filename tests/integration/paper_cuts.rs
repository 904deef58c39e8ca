//! Paper cuts, each against the real binary: an empty `DATABASE_URL`, a
//! missing root certificate file, `--set` checked before anything is
//! touched, SIGHUP, hidden files in the migrations folder, and a password
//! given on the command line.

use std::time::{Duration, Instant};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{Miglock, MigrationDir, RunOutput};

const HISTORY: &str = "refinery_schema_history";

fn migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file("V1__create_t.sql", "CREATE TABLE t (id int);\n");
    dir
}

/// `apply --format json --migrations DIR` with no connection configured.
fn apply_without_db(dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::new();
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

fn apply(db: &TestDb, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

/// The libpq variables that reach `db` on their own.
fn pg_vars(m: &mut Miglock, db: &TestDb) {
    m.env("PGHOST", "127.0.0.1")
        .env("PGPORT", db.cluster().port().to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", db.cluster().password())
        .env("PGDATABASE", db.name());
}

fn advisory_locks_held(db: &TestDb, key: i64) -> i64 {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND ((classid::int8 << 32) | objid::int8) = {key}"
    ))
}

#[track_caller]
fn assert_usage(out: &RunOutput, message: &str) {
    out.assert_code(2).assert_stderr_contains(message);
    let json = out.json();
    assert_eq!(json["outcome"], "usage", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(message)),
        "{json}"
    );
}

// 1. An empty DATABASE_URL or --database-url

#[test]
fn an_empty_database_url_is_a_usage_error_not_a_fallback_to_libpq_defaults() {
    let db = Cluster::shared().create_db();
    let dir = migrations();
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

// 2. A root certificate file that is missing or unreadable

#[test]
fn a_missing_or_unreadable_root_certificate_file_is_a_usage_error_naming_it() {
    let db = Cluster::shared().create_db();
    let dir = migrations();
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

// 3. --set checked before connecting (form) and once connected (server)

#[test]
fn malformed_settings_are_usage_errors_before_any_connection() {
    let dir = migrations();
    // Nothing listens there: a connection attempt would retry for 30 s.
    let nowhere = "postgres://u@127.0.0.1:1/db";
    let long = format!("search_path={}", "s".repeat(9000));
    for (set, message) in [
        ("a..b=1", "\"a..b\" is not a setting name"),
        ("app.=1", "\"app.\" is not a setting name"),
        ("1x=1", "\"1x\" is not a setting name"),
        ("work-mem=1MB", "\"work-mem\" is not a setting name"),
        (
            long.as_str(),
            "the value of search_path is too long (9000 bytes",
        ),
    ] {
        let started = Instant::now();
        let out = apply_without_db(&dir)
            .env("DATABASE_URL", nowhere)
            .args(["--set", set])
            .run();
        assert_usage(&out, message);
        assert!(!out.stderr.contains("CONNECT_RETRY"), "{}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(10), "{set}");
    }
    let out = apply_without_db(&dir)
        .env("DATABASE_URL", nowhere)
        .env("MIGLOCK_SET", format!("work_mem=1MB;{long}"))
        .run();
    assert_usage(&out, "MIGLOCK_SET: the value of search_path is too long");
}

#[test]
fn settings_the_server_refuses_are_usage_errors_that_touch_nothing() {
    let db = Cluster::shared().create_db();
    let dir = migrations();
    for (args, dry_run, message, sqlstate) in [
        (
            vec!["--set", "no_such_setting=1"],
            false,
            "unrecognized configuration parameter \"no_such_setting\"",
            "42704",
        ),
        (
            vec!["--set", "work_mem=1MB", "--set", "statement_timeout=soon"],
            false,
            "invalid value for parameter \"statement_timeout\"",
            "22023",
        ),
        (
            vec!["--set", "no_such_setting=1", "--dry-run"],
            true,
            "unrecognized configuration parameter \"no_such_setting\"",
            "42704",
        ),
    ] {
        let out = apply(&db, &dir).args(&args).run();
        assert_usage(&out, message);
        let setting = args[args.len() - if dry_run { 2 } else { 1 }];
        let (name, value) = setting.split_once('=').unwrap();
        out.assert_stderr_contains(&format!(
            "the setting {name}=\"{value}\" (--set or MIGLOCK_SET) is refused by the server"
        ))
        .assert_stderr_contains("nothing was changed");
        assert!(!out.stderr.contains("LOCK_ACQUIRED"), "{}", out.stderr);
        assert_eq!(out.json()["error"]["sqlstate"], sqlstate);
        assert!(!db.table_exists(HISTORY), "{args:?}: nothing was touched");
        assert!(!db.table_exists("t"));
        assert_eq!(advisory_locks_held(&db, db.default_key()), 0);
    }
    // The same from MIGLOCK_SET.
    let out = apply(&db, &dir)
        .env(
            "MIGLOCK_SET",
            "work_mem=1MB;search_path=public;lock_timeout=never",
        )
        .run();
    assert_usage(&out, "invalid value for parameter \"lock_timeout\"");
    out.assert_stderr_contains("the setting lock_timeout=\"never\"");
    assert!(!db.table_exists(HISTORY));

    // Accepted settings go through, also when nothing is pending.
    apply(&db, &dir)
        .args(["--set", "work_mem=2MB", "--set", "app.note=it's fine"])
        .run()
        .assert_success();
    assert_eq!(db.history(), [1]);
    apply(&db, &dir)
        .args(["--set", "app.note=again"])
        .run()
        .assert_success();
    // And a refused one is reported on a current schema too.
    let out = apply(&db, &dir).args(["--set", "no_such_setting=1"]).run();
    assert_usage(&out, "unrecognized configuration parameter");
}

// 4. SIGHUP

// 5. Hidden files

// 6. A password on the command line

const PASSWORD_WARNING: &str = "the --database-url value holds a password, which every local user \
                                can read in the process list: give it in DATABASE_URL, PGPASSWORD \
                                or ~/.pgpass instead";

#[test]
fn a_password_on_the_command_line_is_warned_about_once() {
    let db = Cluster::shared().create_db();
    let dir = migrations();
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
