//! A command line that is no command (to be moved to its story).

use crate::cluster::{Cluster, TestDb};
use crate::harness::{Miglock, MigrationDir};

/// Three migrations, each leaving a side effect that tells how often it ran.
fn three_migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file(
        "V1__create_effects.sql",
        "CREATE TABLE effects (version int NOT NULL, at timestamptz DEFAULT clock_timestamp());\n\
         INSERT INTO effects (version) VALUES (1);\n",
    )
    .file(
        "V2__create_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\n",
    )
    .file(
        "V3__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\nINSERT INTO effects (version) VALUES (3);\n",
    );
    dir
}

fn apply(db: &TestDb, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

#[test]
fn odd_command_lines_are_usage_errors_without_echoing_secrets() {
    let db = Cluster::shared().create_db();
    let dir = three_migrations();
    // A connection string given as a positional argument by mistake.
    let out = Miglock::new()
        .args(["apply", "--format", "json"])
        .arg(db.url())
        .run();
    out.assert_code(2)
        .assert_stderr_contains("unexpected argument '<connection string>'");
    assert_eq!(out.json()["outcome"], "usage");
    // Timeouts PostgreSQL cannot hold.
    apply(&db, &dir)
        .args(["--statement-timeout", "30d"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("too long for a PostgreSQL timeout");
    // An argument that is not UTF-8.
    let out = Miglock::for_db(&db)
        .args(["apply", "--wait", "bogus", "--migrations"])
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff"))
        .run();
    out.assert_code(2);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!db.table_exists("refinery_schema_history"));
}
