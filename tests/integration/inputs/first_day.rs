//! The mistakes of a first day with miglock: no database configured, the
//! wrong working directory, a file with the wrong extension, another
//! database's URL, a full file name given to `new`. Each gets a message
//! that says what to do, its documented exit code, and nothing touched.

use crate::cluster::Cluster;
use crate::harness::{Miglock, MigrationDir};

use super::{assert_untouched, good_dir};

#[test]
fn nothing_configured_tries_the_local_socket_once_and_says_what_to_set() {
    let dir = good_dir();
    // The harness clears the environment: no DATABASE_URL, no PG* variable.
    let out = Miglock::new()
        .args(["apply", "--connect-timeout", "1h", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(5)
        .assert_stderr_contains("only the local socket was tried, once")
        .assert_stderr_contains("set DATABASE_URL=postgres://USER@HOST:5432/DATABASE");
    // One attempt: no retry was logged (a --connect-timeout of an hour
    // would otherwise keep it retrying until the harness kills it).
    assert!(!out.stderr.contains("CONNECT_RETRY"), "{}", out.details());

    // PGHOST says where: retried as usual, and no hint about a guess.
    let out = Miglock::new()
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", crate::harness::closed_port().to_string())
        .args(["apply", "--connect-timeout", "300ms", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(5).assert_stderr_contains("gave up after");
    assert!(!out.stderr.contains("was tried, once"), "{}", out.details());
}

#[test]
fn a_missing_folder_says_where_it_looked_and_how_to_name_another() {
    let db = Cluster::shared().create_db();
    let cwd = tempfile::tempdir().unwrap();
    let out = Miglock::for_db(&db)
        .current_dir(cwd.path())
        .args(["apply", "--format", "json"])
        .run();
    let looked = cwd.path().join("migrations");
    out.assert_code(6)
        .assert_stderr_contains(&format!(
            "migrations folder migrations: does not exist (looked for {}, from the working \
             directory {})",
            looked.display(),
            cwd.path().display()
        ))
        .assert_stderr_contains("--migrations DIR or MIGLOCK_MIGRATIONS");
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["problems"][0]["kind"], "folder");
    assert_untouched("missing folder", &db);
}

#[test]
fn a_file_named_like_a_migration_without_the_sql_extension_is_refused() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    dir.file("V1__init.txt", "CREATE TABLE t (id int);")
        .file("V2__x.sql.bak", "junk")
        .file("notes.txt", "not a migration");
    let out = Miglock::for_db(&db)
        .args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(6)
        .assert_stderr_contains(
            "V1__init.txt: is named like a migration but is not a .sql file, so it would never run",
        )
        .assert_stderr_contains("V2__x.sql.bak: is named like a migration");
    let json = out.json();
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{json}");
    assert!(problems.iter().all(|p| p["kind"] == "misnamed"), "{json}");
    assert!(!out.stderr.contains("notes.txt"), "{}", out.details());
    assert_untouched("V1__init.txt", &db);
    assert!(!db.table_exists("t"));
}

#[test]
fn another_databases_url_or_one_without_its_scheme_is_a_usage_error() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    for (url, needle) in [
        (
            "mysql://app:s3cret-pw@db:3306/app",
            "mysql:// is not a PostgreSQL URL",
        ),
        (
            "localhost:5432/app",
            "neither a URL (no postgres:// in front) nor key=value pairs",
        ),
        // Forms the key=value parser would quote up to their first '=':
        // the password with it.
        (
            "jdbc:postgresql://app:s3cret-pw@db:5432/app?sslmode=require",
            "is a JDBC URL: drop 'jdbc:'",
        ),
        (
            "app:s3cret-pw@db/app?sslmode=require",
            "neither a URL (no postgres:// in front) nor key=value pairs",
        ),
        (
            "POSTGRES://app:s3cret-pw@db/app?sslmode=require",
            "write the scheme POSTGRES:// in lower case",
        ),
        (
            "postgresql+psycopg2://app:s3cret-pw@db/app",
            "names a driver (SQLAlchemy's form)",
        ),
    ] {
        let out = Miglock::new()
            .env("DATABASE_URL", url)
            .args(["apply", "--migrations"])
            .arg(dir.path())
            .run();
        out.assert_code(2)
            .assert_stderr_contains(needle)
            .assert_stderr_contains("expected postgres://USER@HOST:PORT/DATABASE");
        assert!(!out.stderr.contains("s3cret"), "{}", out.details());
        assert!(!out.stderr.contains("missing \"=\""), "{}", out.details());
    }
    assert_untouched("bad URL", &db);
}

#[test]
fn new_takes_a_full_file_name_as_it_is() {
    let dir = MigrationDir::new();
    let out = Miglock::new()
        .args(["new", "V2__add_users", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stdout_contains("V2__add_users.sql")
        .assert_stderr_contains("MIGRATION_CREATED version=2 name=add_users");
    assert!(dir.path().join("V2__add_users.sql").is_file());
    assert!(!dir.path().join("V1__V2__add_users.sql").exists());

    // Not above the highest version: refused, naming the way to the next.
    let out = Miglock::new()
        .args(["new", "V1__add_orders.sql", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(2)
        .assert_stderr_contains("version 1 is not above the highest one")
        .assert_stderr_contains("miglock new add_orders");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["V2__add_users.sql"]);
}
