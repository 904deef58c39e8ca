//! The library API: `miglock::Migrator` applies in-process under the same
//! lock and into the same history as the binary.

use std::time::Duration;

use miglock::{ErrorKind, Migrated, Migrator};

use crate::cluster::Cluster;
use crate::harness::{Miglock, MigrationDir};

fn two_migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file("V1__create_t.sql", "CREATE TABLE t (id int);")
        .file("V2__add_note.sql", "ALTER TABLE t ADD COLUMN note text;");
    dir
}

#[test]
fn migrator_applies_then_finds_the_schema_current_and_the_binary_agrees() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let migrator = Migrator::new(db.url()).migrations(dir.path());
    match migrator.apply() {
        Ok(Migrated::Applied(applied)) => {
            let versions: Vec<(i64, &str)> = applied
                .iter()
                .map(|m| (m.version, m.name.as_str()))
                .collect();
            assert_eq!(versions, [(1, "create_t"), (2, "add_note")]);
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(migrator.apply().unwrap(), Migrated::Current);
    // The binary reads the same history under the same derived key.
    Miglock::for_db(&db)
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT version=V2__add_note applied=2");
    // The lock is released: nothing of the session is left holding it.
    assert_eq!(
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND ((classid::int8 << 32) | objid::int8) = {}",
            db.default_key()
        )),
        0
    );
}

#[test]
fn migrator_skips_while_another_session_holds_the_key() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({})", db.default_key()))
        .unwrap();
    let result = Migrator::new(db.url())
        .migrations(dir.path())
        .wait(Duration::ZERO)
        .apply()
        .unwrap();
    assert_eq!(result, Migrated::Skipped);
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn migrator_errors_are_typed_with_the_binarys_exit_codes() {
    let db = Cluster::shared().create_db();

    let dir = two_migrations();
    dir.file("V3__broken.sql", "SELECT 1;\nSELECT nosuchcolumn FROM t;\n");
    let err = Migrator::new(db.url())
        .migrations(dir.path())
        .apply()
        .unwrap_err();
    assert_eq!((err.kind(), err.exit_code()), (ErrorKind::Failed, 1));
    assert_eq!(err.sqlstate(), Some("42703"));
    assert_eq!(err.line(), Some(2));
    assert!(err.file().unwrap().ends_with("V3__broken.sql"));
    assert!(err.to_string().contains("nosuchcolumn"), "{err}");
    assert_eq!(db.history(), [1, 2], "V3 rolled back, V1 and V2 stay");

    let bad = MigrationDir::new();
    bad.file("V1-oops.sql", "SELECT 1;");
    let err = Migrator::new(db.url())
        .migrations(bad.path())
        .apply()
        .unwrap_err();
    assert_eq!((err.kind(), err.exit_code()), (ErrorKind::Invalid, 6));

    let err = Migrator::new("")
        .migrations(dir.path())
        .apply()
        .unwrap_err();
    assert_eq!((err.kind(), err.exit_code()), (ErrorKind::Usage, 2));

    let password = "api-test-secret";
    let err = Migrator::new(format!("postgres://nobody:{password}@127.0.0.1:1/x"))
        .migrations(dir.path())
        .connect_timeout(Duration::from_millis(200))
        .apply()
        .unwrap_err();
    assert_eq!((err.kind(), err.exit_code()), (ErrorKind::Unavailable, 5));
    assert!(!err.to_string().contains(password), "{err}");
    assert_eq!(db.history(), [1, 2]);
}
