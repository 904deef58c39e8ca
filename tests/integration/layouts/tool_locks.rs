//! The layout's tool's own advisory key, taken with miglock's (issue #23):
//! a session holding Flyway's, golang-migrate's, goose's or sqlx's key (an
//! old replica running that tool) keeps `apply` out until it lets go, and
//! while miglock runs, its backend holds that key. The keys are computed
//! here apart from miglock, from each tool's source. refinery and dbmate
//! take no lock: their runs send the statements they sent before.

use std::collections::BTreeMap;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, command, wait_for, MigrationDir, RunOutput, SETTLE};
use crate::probes::LockGate;

/// One tool: its layout, its history table, and how it computes its keys.
struct Tool {
    layout: &'static str,
    table: &'static str,
    /// Its files' names for versions 1 and 2, and the header each starts with.
    names: [&'static str; 2],
    header: &'static str,
    /// What ends each file (dbmate's empty Down section).
    footer: &'static str,
}

const FLYWAY: Tool = Tool {
    layout: "flyway",
    table: "flyway_schema_history",
    names: ["V1__t1.sql", "V2__t2.sql"],
    header: "",
    footer: "",
};
const GOLANG_MIGRATE: Tool = Tool {
    layout: "golang-migrate",
    table: "schema_migrations",
    names: ["000001_t1.up.sql", "000002_t2.up.sql"],
    header: "",
    footer: "",
};
const GOOSE: Tool = Tool {
    layout: "goose",
    table: "goose_db_version",
    names: ["00001_t1.sql", "00002_t2.sql"],
    header: "-- +goose Up\n",
    footer: "",
};
const SQLX: Tool = Tool {
    layout: "sqlx",
    table: "_sqlx_migrations",
    names: ["20240101000001_t1.sql", "20240101000002_t2.sql"],
    header: "",
    footer: "",
};

fn crc32(text: &str) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(text.as_bytes())
}

impl Tool {
    /// The keys the tool takes on `db` (schema public), as its source
    /// computes them.
    fn keys(&self, db: &TestDb) -> Vec<i64> {
        let name = db.name();
        match self.layout {
            // 0x466C79776179 + "\"public\".\"flyway_schema_history\"".hashCode()
            "flyway" => vec![77_433_833_903_597],
            // The CLI names the database by the URL's path, the library by
            // current_database().
            "golang-migrate" => [format!("/{name}"), name.to_string()]
                .iter()
                .map(|database| {
                    let sum = crc32(&format!("public\0schema_migrations\0{database}"));
                    i64::from(sum.wrapping_mul(1_486_364_155))
                })
                .collect(),
            "goose" => vec![4_097_083_626],
            "sqlx" => vec![0x3d32_ad9e * i64::from(crc32(name))],
            other => panic!("no keys for {other}"),
        }
    }

    /// V1 makes `t1`; with `gated`, V2 makes `t2` and waits at the
    /// [`LockGate`] while it runs.
    fn dir(&self, gated: bool) -> MigrationDir {
        let dir = MigrationDir::new();
        dir.file(
            self.names[0],
            &format!("{}CREATE TABLE t1 (id int);\n{}", self.header, self.footer),
        );
        if gated {
            dir.file(
                self.names[1],
                &format!(
                    "{}CREATE TABLE t2 (id int);\n{}\n{}",
                    self.header,
                    LockGate::SQL,
                    self.footer
                ),
            );
        }
        dir
    }

    fn apply(&self, db: &TestDb, dir: &MigrationDir) -> crate::harness::Miglock {
        let mut m = apply(db, dir);
        m.args(["--layout", self.layout]);
        m
    }
}

/// A session of its own holding `key`, as the old tool's replica would.
struct OldReplica {
    client: postgres::Client,
    pid: i32,
}

impl OldReplica {
    fn connect(db: &TestDb) -> OldReplica {
        let mut client = db.client();
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        OldReplica { client, pid }
    }
}

/// With `key` held by another session, `apply --wait 0` says who holds
/// which key (exit 3) and applies nothing.
#[track_caller]
fn kept_out(tool: &Tool, db: &TestDb, dir: &MigrationDir, key: i64, pid: i32, extra: &[&str]) {
    let out = tool.apply(db, dir).args(["--wait", "0"]).args(extra).run();
    out.assert_code(3);
    let mode = if extra.contains(&"transaction") {
        " mode=transaction"
    } else {
        ""
    };
    let busy = format!(
        "LOCK_BUSY key={}{mode} tool={} tool_key={key} holder_pid={pid} ",
        out.json()["lock"]["key"],
        tool.layout
    );
    out.assert_stderr_contains(&busy)
        .assert_stderr_contains(&format!(
            "LOCK_WAIT_TIMEOUT key={}{mode} tool={} tool_key={key} ",
            out.json()["lock"]["key"],
            tool.layout
        ));
    let json = out.json();
    assert_eq!(json["outcome"], "skipped");
    assert_eq!(json["lock"]["holder"]["pid"], pid);
    assert_eq!(json["lock"]["holder_tool_key"]["key"], key);
    assert_eq!(json["lock"]["holder_tool_key"]["tool"], tool.layout);
    assert_eq!(json["applied"], serde_json::json!([]));
    assert!(!db.table_exists("t1"), "nothing ran");
    assert!(!db.table_exists(tool.table), "not even the history table");
}

/// Each of the tool's keys, held in turn by another session at session
/// level, keeps `apply` out; once it is let go, `apply` runs.
fn a_held_tool_key_keeps_apply_out(tool: &Tool) {
    let db = Cluster::shared().create_db();
    let dir = tool.dir(false);
    for key in tool.keys(&db) {
        let mut old = OldReplica::connect(&db);
        old.client
            .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
            .unwrap();
        kept_out(tool, &db, &dir, key, old.pid, &[]);
        old.client
            .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
            .unwrap();
    }
    let out = tool.apply(&db, &dir).args(["--wait", "0"]).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 1);
    assert!(db.table_exists("t1") && db.table_exists(tool.table));
}

#[test]
fn flyways_key_held_keeps_apply_out_until_released() {
    a_held_tool_key_keeps_apply_out(&FLYWAY);
}

#[test]
fn golang_migrates_cli_and_library_keys_held_keep_apply_out_until_released() {
    a_held_tool_key_keeps_apply_out(&GOLANG_MIGRATE);
}

#[test]
fn gooses_key_held_keeps_apply_out_until_released() {
    a_held_tool_key_keeps_apply_out(&GOOSE);
}

#[test]
fn sqlxs_key_held_keeps_apply_out_until_released() {
    a_held_tool_key_keeps_apply_out(&SQLX);
}

/// Flyway takes its key at transaction level, in each migration's
/// transaction: held so, it keeps out both lock modes; `--tool-lock off`
/// (or MIGLOCK_TOOL_LOCK=off) leaves it to Flyway.
#[test]
fn flyways_transaction_level_lock_keeps_both_modes_out_unless_tool_lock_is_off() {
    let db = Cluster::shared().create_db();
    let dir = FLYWAY.dir(false);
    let key = FLYWAY.keys(&db)[0];
    let mut old = OldReplica::connect(&db);
    let pid = old.pid;
    let mut flyway = old.client.transaction().unwrap();
    flyway
        .batch_execute(&format!("SELECT pg_try_advisory_xact_lock({key})"))
        .unwrap();
    kept_out(&FLYWAY, &db, &dir, key, pid, &[]);
    kept_out(
        &FLYWAY,
        &db,
        &dir,
        key,
        pid,
        &["--lock-mode", "transaction"],
    );

    let out = FLYWAY
        .apply(&db, &dir)
        .args(["--wait", "0"])
        .env("MIGLOCK_TOOL_LOCK", "off")
        .run();
    out.assert_success();
    assert!(db.table_exists("t1"));
    assert!(!out.stderr.contains("tool_key="), "{}", out.details());
    flyway.rollback().unwrap();
}

/// The miglock session that holds the lock, by its application_name.
fn holding_pid(db: &TestDb) -> i64 {
    db.query_i64(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name LIKE 'miglock apply holding%'",
    )
}

/// The sessions holding `key` (granted, exclusive, a bigint key).
fn key_holders(db: &TestDb, key: i64) -> Vec<i64> {
    db.query_strings(&format!(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
         AND mode = 'ExclusiveLock' AND ((classid::int8 << 32) | objid::int8) = {key} \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ))
    .into_iter()
    .map(|row| row[0].as_deref().unwrap().parse().unwrap())
    .collect()
}

/// While a run is in V2 (held at the gate), its backend holds the tool's
/// keys, `status` says so, and another session cannot take them; after
/// the run, they are free.
fn miglock_holds_the_tool_keys_while_it_runs(tool: &Tool, lock_mode: &str) {
    let db = Cluster::shared().create_db();
    let dir = tool.dir(true);
    let keys = tool.keys(&db);
    let mut gate = LockGate::close(&db);
    let run = tool
        .apply(&db, &dir)
        .args(["--lock-mode", lock_mode])
        .spawn();
    wait_for("the run to hold the lock and wait in V2", SETTLE, || {
        LockGate::waiting_like(&db, "miglock apply holding%") == 1
    });
    let pid = holding_pid(&db);
    for key in &keys {
        assert_eq!(key_holders(&db, *key), [pid], "key {key}");
        let taken = db.query_strings(&format!("SELECT pg_try_advisory_lock({key})"));
        assert_eq!(taken, [[Some("f".to_string())]], "the old tool is kept out");
    }
    let status = command(&db, "status", &dir)
        .args(["--layout", tool.layout])
        .run();
    status.assert_code(0);
    let held: BTreeMap<i64, i64> = status.json()["lock"]["tool_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_i64().unwrap(),
                k["holder"]["pid"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(held, keys.iter().map(|k| (*k, pid)).collect());

    gate.open();
    let out = RunOutput::from_child(run);
    out.assert_success();
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 2);
    assert!(db.table_exists("t2"));
    for key in &keys {
        assert_eq!(key_holders(&db, *key), Vec::<i64>::new(), "key {key}");
    }
}

#[test]
fn miglock_holds_flyways_key_while_it_runs() {
    miglock_holds_the_tool_keys_while_it_runs(&FLYWAY, "session");
}

#[test]
fn miglock_holds_flyways_key_in_each_migrations_transaction_in_transaction_mode() {
    miglock_holds_the_tool_keys_while_it_runs(&FLYWAY, "transaction");
}

#[test]
fn miglock_holds_golang_migrates_keys_while_it_runs() {
    miglock_holds_the_tool_keys_while_it_runs(&GOLANG_MIGRATE, "session");
}

#[test]
fn miglock_holds_gooses_key_while_it_runs() {
    miglock_holds_the_tool_keys_while_it_runs(&GOOSE, "session");
}

#[test]
fn miglock_holds_sqlxs_key_while_it_runs() {
    miglock_holds_the_tool_keys_while_it_runs(&SQLX, "session");
}

/// `status` in text: the tool's key, whose, and who holds it.
#[test]
fn status_names_the_tool_key_and_its_holder() {
    let db = Cluster::shared().create_db();
    let dir = GOOSE.dir(false);
    let mut old = OldReplica::connect(&db);
    old.client
        .batch_execute("SELECT pg_advisory_lock(4097083626)")
        .unwrap();
    let out = crate::harness::Miglock::for_db(&db)
        .args(["status", "--layout", "goose", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(0).assert_stdout_contains(&format!(
        "Tool lock   goose 4097083626 (goose's lock.NewPostgresSessionLocker() default \
         (DefaultLockID)): held by pid {}",
        old.pid
    ));
    assert!(!db.table_exists(GOOSE.table));
}

/// `down` and `baseline` take the tool's key too.
#[test]
fn down_and_baseline_wait_for_the_tool_key_too() {
    let db = Cluster::shared().create_db();
    let dir = GOLANG_MIGRATE.dir(false);
    dir.file("000001_t1.down.sql", "DROP TABLE t1;\n");
    GOLANG_MIGRATE.apply(&db, &dir).run().assert_success();
    let key = GOLANG_MIGRATE.keys(&db)[1];
    let mut old = OldReplica::connect(&db);
    old.client
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .unwrap();
    for (name, extra) in [
        ("down", &["--to", "0", "--yes"][..]),
        ("baseline", &["--baseline-version", "1"]),
    ] {
        let out = command(&db, name, &dir)
            .args(["--layout", "golang-migrate", "--wait", "0"])
            .args(extra)
            .run();
        out.assert_code(3).assert_stderr_contains(&format!(
            "tool=golang-migrate tool_key={key} holder_pid={}",
            old.pid
        ));
        assert!(db.table_exists("t1"), "{name} changed nothing");
        assert_eq!(db.history_of("schema_migrations"), [1]);
    }
}

/// The statements of the server log (`log_statement = all`) that miglock
/// sent to `db`, one per round trip, with every number made `N` (keys,
/// process ids and times differ from one database to the next).
fn round_trips(cluster: &Cluster, db: &TestDb) -> Vec<String> {
    let prefix = format!("{}|miglock", db.name());
    let mut trips: Vec<String> = Vec::new();
    let mut ours = false;
    for line in cluster.server_log().lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            ours = rest.contains("LOG:  statement: ");
            if ours {
                trips.push(rest.split_once("statement: ").unwrap().1.to_string());
            }
        } else if line.contains("|LOG:") || line.contains("|ERROR:") || line.contains("|STATEMENT:")
        {
            ours = false;
        } else if ours {
            if let Some(last) = trips.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        }
    }
    trips.iter().map(|t| numbers_as_n(t)).collect()
}

/// `text` with each run of digits made `N`.
fn numbers_as_n(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Three runs, as a deploy sees them: the first (V1, no history table
/// yet), the next release's (V2 pending) and a restart (nothing pending),
/// each run's round trips.
fn three_runs(cluster: &Cluster, tool: &Tool, tool_lock: &str) -> Vec<Vec<String>> {
    let db = cluster.create_db();
    let v2 = MigrationDir::new();
    v2.file(
        tool.names[1],
        &format!("{}CREATE TABLE t2 (id int);\n{}", tool.header, tool.footer),
    );
    let v1 = tool.dir(false);
    v2.file(
        tool.names[0],
        &std::fs::read_to_string(v1.path().join(tool.names[0])).unwrap(),
    );
    let mut runs = Vec::new();
    for dir in [&v1, &v2, &v2] {
        let before = round_trips(cluster, &db).len();
        tool.apply(&db, dir)
            .args(["--lock-key", "42", "--tool-lock", tool_lock])
            .run()
            .assert_success();
        runs.push(round_trips(cluster, &db)[before..].to_vec());
    }
    assert!(db.table_exists("t2"));
    runs
}

/// refinery and dbmate take no other key: a run sends what it sends with
/// `--tool-lock off`, statement for statement. Flyway's key costs a round
/// trip only on the first run (the history read that carries the names
/// fails before them while the table does not exist); the next release's
/// run and a restart send as many round trips as without it.
#[test]
fn refinery_and_dbmate_send_what_they_sent_and_flyway_no_extra_round_trip_after_the_first_run() {
    let cluster = Cluster::start_with(&[("log_statement", "all"), ("log_line_prefix", "'%d|%a|'")]);
    let refinery = Tool {
        layout: "refinery",
        table: "refinery_schema_history",
        names: ["V1__t1.sql", "V2__t2.sql"],
        header: "",
        footer: "",
    };
    let dbmate = Tool {
        layout: "dbmate",
        table: "schema_migrations",
        names: ["20240101000001_t1.sql", "20240101000002_t2.sql"],
        header: "-- migrate:up\n",
        footer: "-- migrate:down\n",
    };
    for tool in [&refinery, &dbmate] {
        let on = three_runs(&cluster, tool, "on");
        let off = three_runs(&cluster, tool, "off");
        assert!(on.iter().all(|run| !run.is_empty()), "{on:#?}");
        assert_eq!(on, off, "{}", tool.layout);
        let all = on.concat().join("\n");
        assert!(
            !all.contains("SELECT current_schema()") && !all.contains("num_nulls"),
            "{all}"
        );
    }

    let on = three_runs(&cluster, &FLYWAY, "on");
    let off = three_runs(&cluster, &FLYWAY, "off");
    let counts = |runs: &[Vec<String>]| runs.iter().map(Vec::len).collect::<Vec<_>>();
    let (on_counts, off_counts) = (counts(&on), counts(&off));
    assert_eq!(on_counts[0], off_counts[0] + 1, "{on:#?}");
    assert_eq!(on_counts[1..], off_counts[1..], "{on:#?}\n{off:#?}");
    assert!(
        on[0].contains(&"SELECT current_database(), current_schema()".to_string()),
        "{on:#?}"
    );
    // The next release's run: the names ride on its history read, and its
    // attempt takes Flyway's key after miglock's.
    let second = on[1].join("\n");
    assert!(second.contains("SELECT current_database()"), "{second}");
    assert!(
        second.contains("CASE WHEN pg_try_advisory_lock(N) THEN CASE WHEN pg_try_advisory_lock(N)"),
        "{second}"
    );
    assert!(!off.concat().join("\n").contains("current_database()"));
}

/// A run over a database's schemas: goose's and sqlx's keys, one for the
/// whole database, are not taken (each tenant would wait for the others);
/// Flyway's names the schema and still is.
#[test]
fn a_run_over_schemas_takes_only_the_keys_that_name_the_schema() {
    for tool in [&GOOSE, &SQLX, &FLYWAY] {
        let db = Cluster::shared().create_db();
        db.client()
            .batch_execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;")
            .unwrap();
        let dir = tool.dir(false);
        let key = tool.keys(&db)[0];
        let mut old = OldReplica::connect(&db);
        old.client
            .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
            .unwrap();
        let out = tool
            .apply(&db, &dir)
            .args(["--all-schemas", "--wait", "0"])
            .run();
        out.assert_success();
        let json = out.json();
        let outcomes: Vec<&str> = json["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["outcome"].as_str().unwrap())
            .collect();
        // Flyway's key for public."flyway_schema_history" is not a
        // tenant's: each tenant's names its own schema.
        assert_eq!(outcomes, ["applied", "applied"], "{}", tool.layout);
        for schema in ["tenant_a", "tenant_b"] {
            assert!(db.table_exists(&format!("{schema}.t1")), "{}", tool.layout);
        }
        assert!(
            !out.stderr.contains(&format!("tool_key={key}")),
            "{}",
            out.stderr
        );
        old.client
            .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
            .unwrap();
    }
}
