//! INVALID indexes already in the database, as an earlier release left
//! them (a concurrent build cut off, then `IF NOT EXISTS` recorded its
//! file over the INVALID index): `status` and `apply` report them without
//! changing their exit code, and `apply --rebuild-invalid-indexes` rebuilds,
//! under the lock and before anything pending, those an applied file
//! builds, and only those.

use std::thread;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, command, send_signal, versions, wait_for, Miglock, MigrationDir, RunOutput, SETTLE,
};
use crate::probes::backend_pid;

/// V1 makes `t` with a duplicate row; V2 builds a unique index on it
/// concurrently; V3 adds a column. V1 is applied, then V2's build fails
/// on the duplicate and leaves `t_id` INVALID, and V2 is recorded as
/// applied all the same (`baseline`, as releases before this one
/// recorded it); the duplicate is gone again. Another INVALID index,
/// `by_hand`, is no file's. V3 is pending.
fn left_by_an_earlier_release(db: &TestDb) -> MigrationDir {
    let dir = MigrationDir::with(&[
        (
            "V1__t.sql",
            "CREATE TABLE t (id int, a int);\nINSERT INTO t VALUES (1, 1), (1, 2);\n",
        ),
        (
            "V2__index.sql",
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
        ),
        ("V3__note.sql", "ALTER TABLE t ADD COLUMN note text;\n"),
    ]);
    apply(db, &dir)
        .args(["--target", "1"])
        .run()
        .assert_success();
    let mut client = db.client();
    for build in [
        "CREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id)",
        "CREATE UNIQUE INDEX CONCURRENTLY by_hand ON t ((id + 0))",
    ] {
        assert!(client.batch_execute(build).is_err(), "{build} failed");
    }
    command(db, "baseline", &dir)
        .args(["--version", "2"])
        .run()
        .assert_success();
    client
        .batch_execute("DELETE FROM t WHERE a = 2")
        .expect("the duplicate goes");
    assert_eq!(invalid(db), ["by_hand", "t_id"]);
    dir
}

/// The INVALID indexes of the database, by name.
fn invalid(db: &TestDb) -> Vec<String> {
    db.query_strings(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE NOT i.indisvalid ORDER BY 1",
    )
    .into_iter()
    .map(|row| row[0].clone().unwrap())
    .collect()
}

fn valid(db: &TestDb, name: &str) -> bool {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = '{name}' AND i.indisvalid"
    )) == 1
}

/// `(name, migration, action)` of each entry of `invalid_indexes`.
fn listed(json: &serde_json::Value) -> Vec<(String, Option<String>, Option<String>)> {
    json["invalid_indexes"]
        .as_array()
        .unwrap_or_else(|| panic!("no invalid_indexes list: {json}"))
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["migration"].as_str().map(str::to_string),
                i["action"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn entry(
    name: &str,
    migration: Option<&str>,
    action: Option<&str>,
) -> (String, Option<String>, Option<String>) {
    (
        name.to_string(),
        migration.map(str::to_string),
        action.map(str::to_string),
    )
}

#[test]
fn status_reports_invalid_indexes_without_changing_its_exit_code() {
    let db = Cluster::shared().create_db();
    let dir = left_by_an_earlier_release(&db);
    let out = command(&db, "status", &dir).run();
    out.assert_code(0)
        .assert_stderr_contains(
            "INVALID_INDEX_FOUND name=public.t_id table=t migration=V2__index: left INVALID by a \
             concurrent build of V2__index",
        )
        .assert_stderr_contains(
            "INVALID_INDEX_FOUND name=public.by_hand table=t migration=none: no applied migration \
             of this set builds it, so miglock leaves it alone",
        );
    let json = out.json();
    assert_eq!(json["outcome"], "pending");
    assert_eq!(
        listed(&json),
        [
            entry("by_hand", None, None),
            entry("t_id", Some("V2__index"), None)
        ]
    );
    let t_id = &json["invalid_indexes"][1];
    assert_eq!(t_id["schema"], "public");
    assert_eq!(t_id["table"], "t");
    assert_eq!(
        t_id["definition"],
        "CREATE UNIQUE INDEX t_id ON public.t USING btree (id)"
    );
    // The text names each, with what to do.
    let out = Miglock::for_db(&db)
        .args(["status", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(0)
        .assert_stdout_contains("Invalid indexes (2)")
        .assert_stdout_contains(
            "public.t_id on t  (left by a concurrent build of V2__index; `miglock apply \
             --rebuild-invalid-indexes` rebuilds it)",
        )
        .assert_stdout_contains("CREATE UNIQUE INDEX t_id ON public.t USING btree (id)")
        .assert_stdout_contains("public.by_hand on t  (no applied migration builds it");
    // Nothing pending, an INVALID index is still no failure of --check.
    apply(&db, &dir).run().assert_success();
    command(&db, "status", &dir)
        .arg("--check")
        .run()
        .assert_code(0);
    assert_eq!(invalid(&db), ["by_hand", "t_id"], "status changes nothing");
}

#[test]
fn apply_reports_them_and_leaves_them_as_they_are() {
    let db = Cluster::shared().create_db();
    let dir = left_by_an_earlier_release(&db);
    let out = apply(&db, &dir).run();
    out.assert_success()
        .assert_stderr_contains("INVALID_INDEX_FOUND name=public.t_id table=t migration=V2__index")
        .assert_stderr_contains("`miglock apply --rebuild-invalid-indexes` rebuilds it")
        .assert_stderr_contains("INVALID_INDEX_FOUND name=public.by_hand table=t migration=none")
        .assert_stderr_contains("MIGRATION_APPLIED version=3 name=note");
    assert!(
        !out.stderr.contains("INVALID_INDEX_REBUILT"),
        "{}",
        out.stderr
    );
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(
        listed(&json),
        [
            entry("by_hand", None, None),
            entry("t_id", Some("V2__index"), None)
        ]
    );
    assert_eq!(db.history(), [1, 2, 3]);
    assert_eq!(invalid(&db), ["by_hand", "t_id"]);
    // A run with nothing pending keeps to its one query: it does not look.
    let out = apply(&db, &dir).run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");
    assert!(!out.stderr.contains("INVALID_INDEX"), "{}", out.stderr);
    assert!(
        out.json().get("invalid_indexes").is_none(),
        "{}",
        out.stdout
    );
    // Once none is left, a run that applies something lists none.
    db.client()
        .batch_execute("DROP INDEX by_hand; DROP INDEX t_id")
        .unwrap();
    dir.file("V4__more.sql", "ALTER TABLE t ADD COLUMN more text;\n");
    let out = apply(&db, &dir).run();
    out.assert_success();
    assert!(!out.stderr.contains("INVALID_INDEX"), "{}", out.stderr);
    assert_eq!(out.json()["invalid_indexes"], serde_json::json!([]));
    assert_eq!(db.history(), [1, 2, 3, 4]);
}

#[test]
fn rebuild_invalid_indexes_rebuilds_what_applied_builds_left_before_the_pending_migrations() {
    let db = Cluster::shared().create_db();
    let dir = left_by_an_earlier_release(&db);
    // --dry-run says what it would do, and does nothing.
    let out = Miglock::for_db(&db)
        .args([
            "apply",
            "--rebuild-invalid-indexes",
            "--dry-run",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_code(7)
        .assert_stdout_contains(
            "rebuild (built by V2__index; REINDEX INDEX CONCURRENTLY): invalid index public.t_id on t",
        )
        .assert_stdout_contains(
            "leave INVALID (no applied migration builds it): invalid index public.by_hand on t",
        );
    assert_eq!(invalid(&db), ["by_hand", "t_id"]);
    assert_eq!(db.history(), [1, 2]);

    let out = apply(&db, &dir)
        .env("MIGLOCK_REBUILD_INVALID_INDEXES", "1")
        .run();
    out.assert_success()
        .assert_stderr_contains("rebuilding it under the lock (--rebuild-invalid-indexes)")
        .assert_stderr_contains(
            "INVALID_INDEX_REBUILT name=public.t_id table=t migration=V2__index ms=",
        )
        .assert_stderr_contains("MIGRATION_APPLIED version=3 name=note");
    // Under the lock, and before V3.
    let order = |needle: &str| out.stderr.find(needle).unwrap();
    assert!(order("LOCK_ACQUIRED") < order("INVALID_INDEX_REBUILT"));
    assert!(order("INVALID_INDEX_REBUILT") < order("MIGRATION_APPLIED version=3"));
    let json = out.json();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(versions(&json["applied"]), [3]);
    assert_eq!(
        listed(&json),
        [
            entry("by_hand", None, Some("left")),
            entry("t_id", Some("V2__index"), Some("rebuilt"))
        ]
    );
    assert!(valid(&db, "t_id"));
    assert_eq!(invalid(&db), ["by_hand"], "another's index is left alone");
    assert_eq!(db.history(), [1, 2, 3]);
    // It guards uniqueness now.
    assert!(db
        .client()
        .batch_execute("INSERT INTO t VALUES (1, 9)")
        .is_err());

    // With nothing left to rebuild and nothing pending, the flag costs a
    // no-op run nothing: no lock is taken.
    let out = apply(&db, &dir).arg("--rebuild-invalid-indexes").run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");
    assert!(!out.stderr.contains("LOCK_ACQUIRED"), "{}", out.stderr);
}

#[test]
fn a_rebuild_that_fails_stops_before_the_pending_migrations_and_leaves_the_index_as_it_was() {
    let db = Cluster::shared().create_db();
    let dir = left_by_an_earlier_release(&db);
    // The duplicate is back: the unique index cannot be built.
    db.client()
        .batch_execute("INSERT INTO t VALUES (1, 3)")
        .unwrap();
    let out = apply(&db, &dir).arg("--rebuild-invalid-indexes").run();
    out.assert_code(1)
        .assert_stderr_contains("cannot rebuild the invalid index public.t_id on t (V2__index)")
        .assert_stderr_contains("Key (id)=(1) is duplicated")
        .assert_stderr_contains("INVALID_INDEX_DROPPED name=public.t_id_ccnew")
        .assert_stderr_contains("LOCK_RELEASED");
    assert!(!out.stderr.contains("MIGRATION_APPLIED"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["error"]["sqlstate"], "23505");
    assert_eq!(db.history(), [1, 2], "V3 did not run");
    assert_eq!(invalid(&db), ["by_hand", "t_id"], "no _ccnew copy left");
}

#[test]
fn a_rebuild_behind_an_old_writer_is_blocked_within_the_budget() {
    let db = Cluster::shared().create_db();
    let dir = left_by_an_earlier_release(&db);
    // REINDEX CONCURRENTLY waits, as a concurrent build does, for every
    // transaction writing the table.
    let mut writer = db.client();
    writer
        .batch_execute("SET application_name = 'writer'; BEGIN; INSERT INTO t VALUES (7, 7);")
        .unwrap();
    let pid = backend_pid(&mut writer);
    let out = apply(&db, &dir)
        .args(["--rebuild-invalid-indexes", "--ddl-lock-budget", "1s"])
        .run();
    out.assert_code(8)
        .assert_stderr_contains(&format!(
            "DDL_BLOCKED index=public.t_id table=t mode=RowExclusiveLock blocker_pid={pid} \
             application_name=\"writer\""
        ))
        .assert_stderr_contains("could not be rebuilt within --ddl-lock-budget 1s");
    let json = out.json();
    assert_eq!(json["outcome"], "blocked");
    assert_eq!(json["blockers"][0]["pid"], pid);
    assert_eq!(db.history(), [1, 2]);
    // The drop of the rebuild's copy waits for the same writer: left, and
    // said so.
    out.assert_stderr_contains("INVALID_INDEX_LEFT name=public.t_id_ccnew");
    assert_eq!(invalid(&db), ["by_hand", "t_id", "t_id_ccnew"]);
    // status tells the copy for what it is.
    let status = command(&db, "status", &dir).run();
    status.assert_success().assert_stderr_contains(
        "INVALID_INDEX_FOUND name=public.t_id_ccnew table=t migration=V2__index: a copy of t_id",
    );
    assert_eq!(
        status.json()["invalid_indexes"][2]["copy_of"],
        serde_json::json!("t_id")
    );
    // The writer gone, the next run drops the copy and rebuilds.
    writer.batch_execute("COMMIT").unwrap();
    let out = apply(&db, &dir).arg("--rebuild-invalid-indexes").run();
    out.assert_success()
        .assert_stderr_contains(
            "INVALID_INDEX_DROPPED name=public.t_id_ccnew (left INVALID by an interrupted rebuild \
             of t_id)",
        )
        .assert_stderr_contains("INVALID_INDEX_REBUILT name=public.t_id");
    assert_eq!(
        listed(&out.json()),
        [
            entry("by_hand", None, Some("left")),
            entry("t_id", Some("V2__index"), Some("rebuilt")),
            entry("t_id_ccnew", Some("V2__index"), Some("dropped")),
        ]
    );
    assert!(valid(&db, "t_id"));
    assert_eq!(invalid(&db), ["by_hand"]);
    assert_eq!(db.history(), [1, 2, 3]);
}

#[test]
fn rebuild_invalid_indexes_needs_session_mode() {
    let db = Cluster::shared().create_db();
    let dir = left_by_an_earlier_release(&db);
    let out = apply(&db, &dir)
        .args(["--rebuild-invalid-indexes", "--lock-mode", "transaction"])
        .run();
    out.assert_code(2)
        .assert_stderr_contains("--rebuild-invalid-indexes cannot go with --lock-mode transaction");
    assert_eq!(out.json()["outcome"], "usage");
    assert_eq!(db.history(), [1, 2]);
    assert_eq!(invalid(&db), ["by_hand", "t_id"]);
}

/// A concurrent build at work has an INVALID index until it finishes:
/// not a leftover, not reported.
#[test]
fn an_index_being_built_right_now_is_not_reported() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[("V1__t.sql", "CREATE TABLE t (id int);\n")]);
    apply(&db, &dir).run().assert_success();
    let mut writer = db.client();
    writer
        .batch_execute("BEGIN; INSERT INTO t VALUES (1);")
        .unwrap();
    let mut builder = db.client();
    let build = thread::spawn(move || {
        builder.batch_execute("CREATE INDEX CONCURRENTLY being_built ON t (id)")
    });
    wait_for("the build to wait for the writer", SETTLE, || {
        invalid(&db) == ["being_built"]
            && db.query_i64(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'CREATE INDEX CONCURRENTLY%'",
            ) == 1
    });
    let out = command(&db, "status", &dir).run();
    out.assert_success();
    assert!(
        !out.stderr.contains("INVALID_INDEX_FOUND"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["invalid_indexes"], serde_json::json!([]));
    writer.batch_execute("COMMIT").unwrap();
    build.join().unwrap().expect("the build ends well");
    assert!(valid(&db, "being_built"));
}

#[test]
fn sigterm_during_a_rebuild_exits_130_and_the_next_run_finishes_it() {
    let db = Cluster::shared().create_db();
    let dir = left_by_an_earlier_release(&db);
    let mut writer = db.client();
    writer
        .batch_execute("BEGIN; INSERT INTO t VALUES (7, 7);")
        .unwrap();
    let child = apply(&db, &dir).arg("--rebuild-invalid-indexes").spawn();
    wait_for("the rebuild to wait for the old writer", SETTLE, || {
        db.query_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'REINDEX INDEX CONCURRENTLY%'",
        ) == 1
    });
    send_signal(child.id(), "TERM");
    let out = RunOutput::from_child(child);
    // Its copy's drop waits for the same writer, within the signal's bound.
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGTERM")
        .assert_stderr_contains(
            "interrupted by a signal while rebuilding the invalid index public.t_id (V2__index)",
        )
        .assert_stderr_contains("INVALID_INDEX_LEFT name=public.t_id_ccnew")
        .assert_stderr_contains("LOCK_RELEASED");
    assert_eq!(out.json()["outcome"], "interrupted");
    assert_eq!(db.history(), [1, 2], "V3 did not run");
    assert_eq!(invalid(&db), ["by_hand", "t_id", "t_id_ccnew"]);
    writer.batch_execute("COMMIT").unwrap();
    let out = apply(&db, &dir).arg("--rebuild-invalid-indexes").run();
    out.assert_success()
        .assert_stderr_contains("INVALID_INDEX_DROPPED name=public.t_id_ccnew")
        .assert_stderr_contains("INVALID_INDEX_REBUILT name=public.t_id");
    assert_eq!(invalid(&db), ["by_hand"]);
    assert_eq!(db.history(), [1, 2, 3]);
}
