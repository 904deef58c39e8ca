//! Adopting miglock and writing the next migration, against a real
//! PostgreSQL: `baseline` on a database made by hand, `new`, and `repair`
//! after an applied file was edited.

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, command, versions, Miglock, MigrationDir};
use crate::probes::hold_default_key;

const V1: &str = "CREATE TABLE users (id int PRIMARY KEY);\n";
const V2: &str = "ALTER TABLE users ADD COLUMN email text;\n";
const V3: &str = "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users);\n";

/// `V1__create_users`, `V2__add_email`, `V3__create_orders`: the files of
/// a project whose database predates miglock.
fn users_email_orders() -> MigrationDir {
    MigrationDir::with(&[
        ("V1__create_users.sql", V1),
        ("V2__add_email.sql", V2),
        ("V3__create_orders.sql", V3),
    ])
}

/// (version, name, checksum) of every history row.
fn rows(db: &TestDb) -> Vec<(i64, String, String)> {
    if !db.table_exists("refinery_schema_history") {
        return Vec::new();
    }
    db.query_strings("SELECT version, name, checksum FROM refinery_schema_history ORDER BY version")
        .into_iter()
        .map(|r| {
            (
                r[0].as_deref().unwrap().parse().unwrap(),
                r[1].clone().unwrap(),
                r[2].clone().unwrap(),
            )
        })
        .collect()
}

/// refinery's own checksum of a file.
fn refinery_checksum(stem: &str, sql: &str) -> String {
    refinery::Migration::unapplied(stem, sql)
        .unwrap()
        .checksum()
        .to_string()
}

/// The schema V1 and V2 would make, made by hand as on a database that
/// predates miglock.
fn schema_by_hand(db: &TestDb) {
    db.client()
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY); ALTER TABLE users ADD COLUMN email text;",
        )
        .unwrap();
}

#[test]
fn baseline_records_an_existing_schema_and_apply_runs_only_what_follows() {
    let db = Cluster::shared().create_db();
    let dir = users_email_orders();
    schema_by_hand(&db);

    let out = command(&db, "baseline", &dir)
        .args(["--baseline-version", "2"])
        .run();
    out.assert_success()
        .assert_stderr_contains("LOCK_ACQUIRED")
        .assert_stderr_contains("BASELINED version=2 recorded=2")
        .assert_stderr_contains("LOCK_RELEASED");
    let json = out.json();
    assert_eq!(json["command"], "baseline");
    assert_eq!(json["outcome"], "baselined");
    assert_eq!(versions(&json["baselined"]), [1, 2]);
    assert_eq!(json["baselined"][1]["name"], "add_email");
    assert_eq!(
        rows(&db),
        [
            (
                1,
                "create_users".into(),
                refinery_checksum("V1__create_users", V1)
            ),
            (
                2,
                "add_email".into(),
                refinery_checksum("V2__add_email", V2)
            ),
        ]
    );
    // applied_on is RFC 3339, as apply writes it.
    let applied_on = db.query_strings("SELECT applied_on FROM refinery_schema_history LIMIT 1");
    let applied_on = applied_on[0][0].as_deref().unwrap();
    let (date, clock) = applied_on.split_once('T').unwrap();
    assert!(
        date.len() == 10 && clock.ends_with('Z') && clock.len() >= 9,
        "{applied_on}"
    );

    // V1 and V2 would fail if run again (the table exists): only V3 runs.
    let json = apply(&db, &dir).run().assert_success().json();
    assert_eq!(versions(&json["applied"]), [3]);
    assert_eq!(db.history(), [1, 2, 3]);
    assert!(db.table_exists("orders"));

    // Again: everything up to 2 is recorded identically, nothing to do.
    let out = command(&db, "baseline", &dir)
        .args(["--baseline-version", "2"])
        .run();
    out.assert_success()
        .assert_stderr_contains("BASELINED version=2 recorded=0");
    assert_eq!(versions(&out.json()["baselined"]), Vec::<i64>::new());
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn refinery_accepts_a_baselined_history() {
    let db = Cluster::shared().create_db();
    let dir = users_email_orders();
    schema_by_hand(&db);
    db.client().batch_execute(V3).unwrap();
    // Versions need not be contiguous: no V4 to V9.
    dir.file("V10__create_notes.sql", "CREATE TABLE notes (id int);\n");
    command(&db, "baseline", &dir)
        .args(["--baseline-version", "3"])
        .run()
        .assert_success()
        .assert_stderr_contains("BASELINED version=3 recorded=3");

    // refinery's runner aborts on divergent and missing rows by default:
    // it takes the rows as its own and applies only V10.
    let migrations = refinery::load_sql_migrations(dir.path()).unwrap();
    let report = refinery::Runner::new(&migrations)
        .run(&mut db.client())
        .unwrap();
    let applied: Vec<i32> = report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect();
    assert_eq!(applied, [10]);
    let history = refinery::Runner::new(&migrations)
        .get_applied_migrations(&mut db.client())
        .unwrap();
    for (theirs, ours) in history.iter().zip(&migrations) {
        assert_eq!(theirs.checksum(), ours.checksum(), "{theirs}");
    }
    assert_eq!(db.history(), [1, 2, 3, 10]);
}

#[test]
fn baseline_refuses_conflicting_rows_and_writes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = users_email_orders();
    dir.remove("V2__add_email.sql")
        .remove("V3__create_orders.sql");
    apply(&db, &dir).run().assert_success();
    let before = rows(&db);
    // V1 was edited after it was applied.
    dir.file(
        "V1__create_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    )
    .file("V2__add_email.sql", V2);

    let out = command(&db, "baseline", &dir)
        .args(["--baseline-version", "2"])
        .run();
    out.assert_code(6)
        .assert_stderr_contains("already recorded as V1__create_users");
    assert!(!out.stderr.contains("BASELINED"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["problems"][0]["kind"], "divergent");
    assert_eq!(json["problems"][0]["version"], 1);
    assert_eq!(rows(&db), before);

    // A recorded version up to N whose file is gone.
    dir.remove("V1__create_users.sql");
    let out = command(&db, "baseline", &dir)
        .args(["--baseline-version", "2"])
        .run();
    out.assert_code(6);
    assert_eq!(out.json()["problems"][0]["kind"], "missing");
    assert_eq!(rows(&db), before);
}

#[test]
fn baseline_refuses_a_version_without_a_file_or_beyond_the_newest() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::new();
    dir.file("V1__create_users.sql", V1)
        .file("V5__add_email.sql", V2);
    for (version, says) in [("3", "no file in"), ("6", "beyond the newest migration")] {
        let out = command(&db, "baseline", &dir)
            .args(["--baseline-version", version])
            .run();
        out.assert_code(6).assert_stderr_contains(says);
        assert_eq!(out.json()["outcome"], "invalid");
    }
    let out = command(&db, "baseline", &dir)
        .args(["--baseline-version", "0"])
        .run();
    out.assert_code(2);
    // Not even the history table was created.
    assert!(!db.table_exists("refinery_schema_history"));
}

#[test]
fn baseline_dry_run_shows_what_it_would_record_and_writes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = users_email_orders();
    let mut m = Miglock::for_db(&db);
    m.args([
        "baseline",
        "--baseline-version",
        "2",
        "--dry-run",
        "--migrations",
    ])
    .arg(dir.path());
    let out = m.run();
    out.assert_success()
        .assert_stdout_contains("would record V1__create_users")
        .assert_stdout_contains("would record V2__add_email")
        .assert_stdout_contains("nothing was changed (--dry-run)");
    assert!(!out.stdout.contains("V3__"), "{}", out.stdout);
    assert!(!out.stderr.contains("BASELINED"), "{}", out.stderr);
    assert!(!out.stderr.contains("LOCK_ACQUIRED"), "{}", out.stderr);
    let json = command(&db, "baseline", &dir)
        .args(["--baseline-version", "2", "--dry-run"])
        .run()
        .assert_success()
        .json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(versions(&json["baselined"]), [1, 2]);
    assert!(!db.table_exists("refinery_schema_history"));
}

#[test]
fn baseline_skips_when_the_lock_stays_busy() {
    let db = Cluster::shared().create_db();
    let dir = users_email_orders();
    let _holder = hold_default_key(&db);
    let out = command(&db, "baseline", &dir)
        .args(["--baseline-version", "3", "--wait", "0"])
        .run();
    out.assert_code(3)
        .assert_stderr_contains("LOCK_WAIT_TIMEOUT");
    assert_eq!(out.json()["outcome"], "skipped");
    assert!(!db.table_exists("refinery_schema_history"));
}

/// `miglock new` with no database at all.
fn new(dir: &std::path::Path, args: &[&str]) -> Miglock {
    let mut m = Miglock::new();
    m.arg("new").args(args).arg("--migrations").arg(dir);
    m
}

fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn new_numbers_after_the_highest_version_with_its_padding() {
    // No DATABASE_URL, no PG* variables: new never connects.
    let dir = MigrationDir::new();
    let out = new(dir.path(), &["create_users"]).run();
    out.assert_success();
    let path = dir.path().join("V1__create_users.sql");
    assert_eq!(out.stdout.trim(), path.display().to_string());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-- V1__create_users: "), "{text}");
    // One header line, then room for the SQL.
    assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 1, "{text}");
    out.assert_stderr_contains("MIGRATION_CREATED version=1 name=create_users");

    dir.file("V7__seven.sql", "SELECT 7;\n");
    new(dir.path(), &["add_index"]).run().assert_success();
    assert!(dir.path().join("V8__add_index.sql").exists());

    let padded = MigrationDir::new();
    padded
        .file("V001__a.sql", "SELECT 1;\n")
        .file("V002__b.sql", "SELECT 2;\n");
    new(padded.path(), &["c"]).run().assert_success();
    assert_eq!(
        file_names(padded.path()),
        ["V001__a.sql", "V002__b.sql", "V003__c.sql"]
    );

    // A folder that does not exist yet is created.
    let missing = dir.path().join("nested/migrations");
    new(&missing, &["first"]).run().assert_success();
    assert_eq!(file_names(&missing), ["V1__first.sql"]);

    // What new writes, apply loads: the set is valid and the file runs.
    let db = Cluster::shared().create_db();
    apply(&db, &padded).run().assert_success();
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn new_refuses_names_refinery_cannot_load_and_never_overwrites() {
    let dir = MigrationDir::new();
    dir.file("V1__a.sql", "SELECT 1;\n");
    for bad in ["add-index", "add index", "users.sql", "a/b", ""] {
        let out = new(dir.path(), &[bad]).run();
        out.assert_code(2)
            .assert_stderr_contains("letters, digits and _");
    }
    assert_eq!(file_names(dir.path()), ["V1__a.sql"]);

    // Something already holds the next name (here a folder, which is no
    // migration): it is left exactly as it is.
    let taken = dir.subdir("V2__b.sql");
    std::fs::write(taken.join("keep"), "x").unwrap();
    let out = new(dir.path(), &["b", "--format", "json"]).run();
    out.assert_code(2).assert_stderr_contains("already exists");
    assert_eq!(out.json()["outcome"], "usage");
    assert!(taken.join("keep").exists());
}

#[test]
fn new_marks_a_no_transaction_migration_and_prints_json() {
    let dir = MigrationDir::new();
    dir.file("V3__a.sql", "SELECT 1;\n");
    let out = new(
        dir.path(),
        &["add_index", "--no-transaction", "--format", "json"],
    )
    .run();
    out.assert_success();
    let json = out.json();
    let path = dir.path().join("V4__add_index.sql");
    assert_eq!(json["command"], "new");
    assert_eq!(json["outcome"], "created");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["path"], path.display().to_string());
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("-- miglock:no-transaction"));
    assert!(lines.next().unwrap().starts_with("-- V4__add_index: "));
}

/// Applies V1 and V2, then edits V1's comment: the set is divergent.
fn applied_then_edited(db: &TestDb) -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file("V1__create_users.sql", &format!("-- users\n{V1}"))
        .file("V2__add_email.sql", V2);
    apply(db, &dir).run().assert_success();
    dir.file("V1__create_users.sql", &format!("-- the users\n{V1}"));
    dir
}

fn checksum_of(db: &TestDb, version: i64) -> String {
    rows(db)
        .into_iter()
        .find(|(v, _, _)| *v == version)
        .unwrap()
        .2
}

#[test]
fn repair_stores_the_edited_files_checksum_and_apply_accepts_it() {
    let db = Cluster::shared().create_db();
    let dir = applied_then_edited(&db);
    let old = checksum_of(&db, 1);
    let new = refinery_checksum("V1__create_users", &format!("-- the users\n{V1}"));

    let out = apply(&db, &dir).run();
    out.assert_code(6);
    assert_eq!(out.json()["problems"][0]["kind"], "divergent");

    let out = command(&db, "repair", &dir).args(["--yes"]).run();
    out.assert_success()
        .assert_stderr_contains(&format!("CHECKSUM_REPAIRED version=1 old={old} new={new}"))
        .assert_stderr_contains("no copy of the applied SQL");
    assert!(!out.stderr.contains("version=2"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["outcome"], "repaired");
    assert_eq!(json["repaired"][0]["version"], 1);
    assert_eq!(json["repaired"][0]["old_checksum"], old);
    assert_eq!(json["repaired"][0]["new_checksum"], new);
    assert_eq!(checksum_of(&db, 1), new);

    // Nothing of V1 ran again (its CREATE TABLE would fail), and apply
    // finds the set current.
    let json = apply(&db, &dir).run().assert_success().json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(db.history(), [1, 2]);

    // Nothing left to repair.
    let json = command(&db, "repair", &dir)
        .args(["--yes"])
        .run()
        .assert_success()
        .json();
    assert_eq!(json["repaired"], Value::Array(Vec::new()));
}

#[test]
fn repair_leaves_versions_that_are_not_divergent_alone() {
    let db = Cluster::shared().create_db();
    let dir = applied_then_edited(&db);
    let before = rows(&db);

    // V2 is applied and matches its file: nothing to do for it, and V1,
    // not named, is not touched.
    let out = command(&db, "repair", &dir).args(["--yes", "2"]).run();
    out.assert_success()
        .assert_stderr_contains("V2__add_email is not divergent");
    assert!(!out.stderr.contains("CHECKSUM_REPAIRED"), "{}", out.stderr);
    assert_eq!(out.json()["repaired"], Value::Array(Vec::new()));
    assert_eq!(rows(&db), before);

    // A version that is not applied at all is a mistake in the command.
    let out = command(&db, "repair", &dir).args(["--yes", "1", "9"]).run();
    out.assert_code(2)
        .assert_stderr_contains("version 9 is not applied");
    assert_eq!(rows(&db), before);

    // Named and divergent: repaired.
    command(&db, "repair", &dir)
        .args(["--yes", "1"])
        .run()
        .assert_success()
        .assert_stderr_contains("CHECKSUM_REPAIRED version=1");
    assert_ne!(rows(&db), before);
}

#[test]
fn repair_needs_yes_without_a_terminal_and_dry_run_changes_nothing() {
    let db = Cluster::shared().create_db();
    let dir = applied_then_edited(&db);
    // A renamed file diverges too, and the name is part of the repair.
    dir.remove("V2__add_email.sql")
        .file("V2__add_email_column.sql", V2);
    let before = rows(&db);

    // The harness's stdin is /dev/null: no terminal.
    let out = command(&db, "repair", &dir).run();
    out.assert_code(2).assert_stderr_contains("--yes");
    assert_eq!(out.json()["outcome"], "usage");
    assert_eq!(rows(&db), before);

    let mut m = Miglock::for_db(&db);
    m.args(["repair", "--dry-run", "--migrations"])
        .arg(dir.path());
    let out = m.run();
    out.assert_success()
        .assert_stdout_contains("V1__create_users")
        .assert_stdout_contains("name      add_email -> add_email_column")
        .assert_stdout_contains("2 line(s)")
        .assert_stdout_contains("nothing was changed (--dry-run)");
    assert!(!out.stderr.contains("CHECKSUM_REPAIRED"), "{}", out.stderr);
    assert!(!out.stderr.contains("LOCK_ACQUIRED"), "{}", out.stderr);
    assert_eq!(rows(&db), before);

    let json = command(&db, "repair", &dir)
        .args(["--dry-run"])
        .run()
        .assert_success()
        .json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["repaired"][1]["old_name"], "add_email");
    assert_eq!(json["repaired"][1]["name"], "add_email_column");
    assert_eq!(rows(&db), before);

    // With --yes, the name moves too, and apply accepts the set.
    command(&db, "repair", &dir)
        .args(["--yes"])
        .run()
        .assert_success();
    assert_eq!(rows(&db)[1].1, "add_email_column");
    apply(&db, &dir).run().assert_success();
}
