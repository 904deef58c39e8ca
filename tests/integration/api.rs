//! The library API: `miglock::Migrator` applies in-process under the same
//! lock and into the same history as the binary.

use std::time::Duration;

use miglock::{ErrorKind, Migrated, Migrator, Version};

use crate::cluster::Cluster;
use crate::harness::{two_migrations, wait_for, Miglock, MigrationDir};
use crate::probes::{hold_default_key, key_holders};

#[test]
fn migrator_applies_then_finds_the_schema_current_and_the_binary_agrees() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let migrator = Migrator::new(db.url()).migrations(dir.path());
    match migrator.apply() {
        Ok(Migrated::Applied(applied)) => {
            let versions: Vec<(String, &str)> = applied
                .iter()
                .map(|m| (m.version.to_string(), m.name.as_str()))
                .collect();
            assert_eq!(
                versions,
                [("1".into(), "create_t"), ("2".into(), "add_note")]
            );
            assert_eq!(applied[0].version, Version::from(1));
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
    assert!(key_holders(&db, db.default_key()).is_empty());
}

#[test]
fn migrator_skips_while_another_session_holds_the_key() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let _holder = hold_default_key(&db);
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

#[test]
fn migrator_never_panics_inside_an_async_runtime() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    // Called straight from async code (blocking the worker, which a
    // service should not do, but which must not abort the process) …
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let migrator = Migrator::new(db.url()).migrations(dir.path());
    let applied = current_thread.block_on(async { migrator.apply() });
    assert!(
        matches!(&applied, Ok(Migrated::Applied(a)) if a.len() == 2),
        "{applied:?}"
    );
    // … and the documented way, from a multi-thread runtime.
    let multi_thread = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let migrator = Migrator::new(db.url()).migrations(dir.path());
    let current = multi_thread.block_on(async {
        let direct = migrator.apply();
        let blocking = tokio::task::spawn_blocking(move || migrator.apply()).await;
        (direct, blocking)
    });
    assert_eq!(current.0.unwrap(), Migrated::Current);
    assert_eq!(current.1.unwrap().unwrap(), Migrated::Current);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn a_cancelled_run_rolls_back_releases_the_lock_and_says_interrupted() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        ("V1__create_t.sql", "CREATE TABLE t (id int);"),
        (
            "V2__slow.sql",
            "CREATE TABLE slow (id int);\nSELECT pg_sleep(60);",
        ),
    ]);
    let migrator = Migrator::new(db.url()).migrations(dir.path());
    let cancel = migrator.cancel_handle();
    let run = std::thread::spawn(move || migrator.apply());
    // Cancelled once V2 is running, as the server shows it.
    wait_for("V2 to be running", Duration::from_secs(30), || {
        db.query_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' \
             AND state = 'active' AND pid <> pg_backend_pid()",
        ) == 1
    });
    cancel.cancel();
    let err = run.join().unwrap().unwrap_err();
    assert_eq!(
        (err.kind(), err.exit_code()),
        (ErrorKind::Interrupted, 130),
        "{err}"
    );
    assert_eq!(db.history(), [1], "V2 rolled back");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM pg_class WHERE relname = 'slow'"),
        0
    );
    assert!(key_holders(&db, db.default_key()).is_empty());
}

#[test]
fn an_error_names_its_causes_through_source() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    // A history table that is not one: reading it fails in PostgreSQL.
    db.client()
        .batch_execute("CREATE TABLE refinery_schema_history (version text)")
        .unwrap();
    let err = Migrator::new(db.url())
        .migrations(dir.path())
        .apply()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("history table"), "{err}");
    let cause = std::error::Error::source(&err).expect("the PostgreSQL error behind it");
    assert!(cause.to_string().contains("SQLSTATE"), "{cause}");
    assert!(
        !err.to_string().contains("SQLSTATE"),
        "the cause is not repeated: {err}"
    );
}
