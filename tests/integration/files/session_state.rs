//! A migration's session settings (`SET`, `SET ROLE`, `SET SESSION
//! AUTHORIZATION`, `search_path`, a read-only default, a statement timeout)
//! never reach its own history row, the next migration, or miglock's own
//! statements; and whatever happens, the report agrees with the database.

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, versions, Miglock, MigrationDir};

/// A role that owns nothing and may not touch the history table, as the
/// application's owner role usually is.
fn owner_role(db: &TestDb) -> String {
    let role = format!("{}_owner", db.name());
    db.client()
        .batch_execute(&format!(
            "CREATE ROLE {role} NOLOGIN; GRANT CREATE, USAGE ON SCHEMA public TO {role}"
        ))
        .unwrap();
    role
}

fn owner_of(db: &TestDb, table: &str) -> String {
    db.query_strings(&format!(
        "SELECT tableowner FROM pg_tables WHERE tablename = '{table}'"
    ))[0][0]
        .clone()
        .unwrap()
}

#[test]
fn set_role_in_a_migration_leaves_its_history_row_and_the_next_migration_alone() {
    let db = Cluster::shared().create_db();
    let role = owner_role(&db);
    let dir = MigrationDir::new();
    dir.file(
        "V1__as_owner.sql",
        &format!("SET ROLE {role};\nCREATE TABLE owned (id int);\n"),
    )
    .file("V2__after.sql", "CREATE TABLE after_owner (id int);\n");
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert_eq!(versions(&out.json()["applied"]), [1, 2]);
    assert_eq!(db.history(), [1, 2]);
    // V1's objects are its role's; V2 ran as the session's own role again.
    assert_eq!(owner_of(&db, "owned"), role);
    assert_ne!(owner_of(&db, "after_owner"), role);
}

#[test]
fn set_session_authorization_is_undone_before_the_history_row() {
    let db = Cluster::shared().create_db();
    let role = owner_role(&db);
    let dir = MigrationDir::new();
    dir.file(
        "V1__as_owner.sql",
        &format!("SET SESSION AUTHORIZATION {role};\nCREATE TABLE owned (id int);\n"),
    )
    .file("V2__after.sql", "CREATE TABLE after_owner (id int);\n");
    apply(&db, &dir).run().assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(owner_of(&db, "owned"), role);
    assert_ne!(owner_of(&db, "after_owner"), role);
}

#[test]
fn a_read_only_default_or_a_short_statement_timeout_does_not_reach_the_next_migration() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__settings.sql",
        "CREATE TABLE first (id int);\nSET default_transaction_read_only = on;\n\
         SET statement_timeout = '100ms';\nSET search_path = nowhere;\n",
    )
    .file(
        "V2__slow_write.sql",
        // Unqualified, written, and slower than V1's timeout.
        "SELECT pg_sleep(0.3);\nCREATE TABLE second (id int);\n",
    );
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert_eq!(versions(&out.json()["applied"]), [1, 2]);
    assert_eq!(db.history(), [1, 2]);
    assert!(db.table_exists("second"));
}

#[test]
fn a_migration_that_sets_a_tiny_statement_timeout_is_reported_as_the_database_has_it() {
    // What runs after the file's own statements runs under its 1 ms
    // timeout: on a quiet machine it commits, on a busy one the timeout may
    // cut it. Either way the report, the exit code and the history agree,
    // and the next apply carries on.
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__made.sql",
        "CREATE TABLE st_made (id int);\nSET statement_timeout = '1ms';\n",
    )
    .file(
        "V2__next.sql",
        "SELECT pg_sleep(0.05);\nCREATE TABLE st_next (id int);\n",
    );
    let out = apply(&db, &dir).run();
    let json = out.json();
    let reported = versions(&json["applied"]);
    match out.code {
        0 => {
            assert_eq!(reported, [1, 2], "{}", out.stderr);
            assert_eq!(db.history(), [1, 2]);
            assert!(db.table_exists("st_made") && db.table_exists("st_next"));
        }
        1 => {
            assert_eq!(reported, Vec::<i64>::new(), "{}", out.stderr);
            assert_eq!(db.history(), Vec::<i64>::new());
            assert!(!db.table_exists("st_made"), "reported rolled back");
            out.assert_stderr_contains("statement timeout")
                .assert_stderr_contains("rolled back");
        }
        code => panic!("exit {code}: {}", out.stderr),
    }
}

#[test]
fn the_session_keeps_miglocks_own_settings_and_name_between_migrations() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file(
        "V1__changes.sql",
        "SET application_name = 'someone else';\nSET lock_timeout = '1ms';\n\
         SET work_mem = '1MB';\nSET statement_timeout = '1min';\n\
         SET idle_session_timeout = '1min';\n\
         CREATE TABLE seen (name text, lock_timeout text, work_mem text, statement_timeout text, \
         idle_session_timeout text);\n",
    )
    .file(
        "V2__looks.sql",
        "INSERT INTO seen SELECT current_setting('application_name'), \
         current_setting('lock_timeout'), current_setting('work_mem'), \
         current_setting('statement_timeout'), current_setting('idle_session_timeout');\n",
    );
    // Defaults a RESET ALL goes back to: only miglock's own settings,
    // set again after it, make them 0.
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {0} SET statement_timeout = '5min'; \
             ALTER DATABASE {0} SET idle_session_timeout = '5min'; \
             ALTER DATABASE {0} SET log_statement = 'all'",
            db.name()
        ))
        .unwrap();
    apply(&db, &dir)
        .args(["--set", "work_mem=8MB"])
        .run()
        .assert_success();
    let row = &db.query_strings(
        "SELECT name, lock_timeout, work_mem, statement_timeout, idle_session_timeout FROM seen",
    )[0];
    assert!(
        row[0]
            .as_deref()
            .unwrap()
            .starts_with("miglock apply holding"),
        "{row:?}"
    );
    // Not V1's 1 ms: the first step of miglock's own lock_timeout schedule.
    assert_eq!(
        row[1].as_deref(),
        Some("50ms"),
        "miglock's own lock_timeout"
    );
    assert_eq!(row[2].as_deref(), Some("8MB"), "--set's work_mem");
    // miglock's own, set again after V1 changed them.
    assert_eq!(row[3].as_deref(), Some("0"), "miglock's statement_timeout");
    assert_eq!(
        row[4].as_deref(),
        Some("0"),
        "miglock's idle_session_timeout"
    );
    // Put back with plain SETs: the server (15) has every setting.
    assert!(
        db.cluster()
            .server_log()
            .contains("SET client_connection_check_interval = '1000'"),
        "no SET in the server log"
    );
}

#[test]
fn transaction_mode_writes_the_history_row_as_the_sessions_own_role_too() {
    let db = Cluster::shared().create_db();
    let role = owner_role(&db);
    let dir = MigrationDir::new();
    dir.file(
        "V1__as_owner.sql",
        &format!("SET ROLE {role};\nCREATE TABLE owned (id int);\n"),
    )
    .file("V2__after.sql", "CREATE TABLE after_owner (id int);\n");
    apply(&db, &dir)
        .args(["--lock-mode", "transaction"])
        .run()
        .assert_success();
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(owner_of(&db, "owned"), role);
    assert_ne!(owner_of(&db, "after_owner"), role);
}

#[test]
fn status_and_wait_take_the_apply_lines_set_and_find_the_same_history() {
    let db = Cluster::shared().create_db();
    db.client().batch_execute("CREATE SCHEMA app").unwrap();
    let dir = MigrationDir::new();
    dir.file("V1__t.sql", "CREATE TABLE t (id int);\n");
    apply(&db, &dir)
        .args(["--set", "search_path=app"])
        .run()
        .assert_success();
    assert!(db.query_i64("SELECT count(*) FROM app.refinery_schema_history") == 1);
    let status = |set: &[&str]| {
        let mut m = Miglock::for_db(&db);
        m.args(["status", "--format", "json", "--migrations"])
            .arg(dir.path())
            .args(set);
        m.run()
    };
    // Without it, the history is looked for where search_path points.
    let out = status(&[]);
    out.assert_success();
    assert_eq!(out.json()["outcome"], "pending");
    let out = status(&["--set", "search_path=app"]);
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    assert_eq!(out.json()["table"]["schema"], "app");
    let mut wait = Miglock::for_db(&db);
    wait.args(["wait", "--timeout", "10s", "--migrations"])
        .arg(dir.path())
        .args(["--set", "search_path=app"]);
    wait.run().assert_success();
    // A setting the server refuses is a usage error for them too.
    status(&["--set", "no_such_setting=1"])
        .assert_code(2)
        .assert_stderr_contains("no_such_setting");
}
