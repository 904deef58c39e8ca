//! Many databases: `--databases-from`, `--all-databases`, `--jobs`,
//! `--fail-fast`, schema-per-tenant, the aggregate exit code, and a
//! signal in the middle of a run.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    closed_port, send_signal, two_migrations, versions, wait_for, Miglock, MigrationDir, RunOutput,
    CREATE_T_ADD_NOTE,
};
use crate::probes::{hold_default_key, LockGate};

/// A targets file: the given lines, in a temporary directory kept with
/// the returned guard.
fn targets_file(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.txt");
    std::fs::write(&path, format!("# tenants\n\n{}\n", lines.join("\n"))).unwrap();
    (dir, path)
}

/// The database's URL without its password: the password comes from
/// PGPASSWORD, as the README recommends for a targets file.
fn line(db: &TestDb) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        db.cluster().port(),
        db.name()
    )
}

/// `miglock <command> --format json --databases-from FILE --migrations DIR`.
fn many(command: &str, file: &PathBuf, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::new();
    m.env("PGPASSWORD", Cluster::shared().password())
        .args([command, "--format", "json", "--databases-from"])
        .arg(file)
        .arg("--migrations")
        .arg(dir.path());
    m
}

/// [`two_migrations`] with V1 waiting for the [`LockGate`] after creating
/// `t`: it stays running until the test opens the gate.
fn gated_create_t() -> MigrationDir {
    let (name, sql) = CREATE_T_ADD_NOTE[0];
    MigrationDir::with(&[
        (name, &format!("{sql}{}\n", LockGate::SQL)),
        CREATE_T_ADD_NOTE[1],
    ])
}

fn by_target(json: &Value) -> Vec<&Value> {
    json["targets"]
        .as_array()
        .expect("targets list")
        .iter()
        .collect()
}

fn outcomes(json: &Value) -> Vec<String> {
    by_target(json)
        .iter()
        .map(|t| t["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn thirty_databases_one_failed_one_unavailable_one_skipped_and_the_rest_applied() {
    let cluster = Cluster::shared();
    let dbs: Vec<TestDb> = (0..30).map(|_| cluster.create_db()).collect();
    let (conflict, held) = (&dbs[4], &dbs[17]);
    conflict
        .client()
        .batch_execute("CREATE TABLE t (other int)")
        .unwrap();
    let holder = hold_default_key(held);
    let closed = format!("postgres://postgres@127.0.0.1:{}/nowhere", closed_port());
    let mut lines: Vec<String> = dbs.iter().map(line).collect();
    lines.insert(10, closed.clone());
    let (_guard, file) = targets_file(&lines);
    let dir = two_migrations();
    let run = || {
        many("apply", &file, &dir)
            .args(["--jobs", "8", "--wait", "1s", "--connect-timeout", "1s"])
            .run()
    };

    let out = run();
    out.assert_code(1);
    let json = out.json();
    assert_eq!(json["command"], "apply");
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["counts"]["applied"], 28);
    assert_eq!(json["counts"]["failed"], 1);
    assert_eq!(json["counts"]["unavailable"], 1);
    assert_eq!(json["counts"]["skipped"], 1);
    let targets = by_target(&json);
    assert_eq!(targets.len(), 31);
    for (i, target) in targets.iter().enumerate() {
        // The file's line: a comment and a blank line come first.
        assert_eq!(target["line"], i + 3);
        let expected = match i {
            4 => "failed",
            10 => "unavailable",
            18 => "skipped",
            _ => "applied",
        };
        assert_eq!(target["outcome"], expected, "{target}");
        if expected == "applied" {
            assert_eq!(versions(&target["applied"]), [1, 2], "{target}");
            assert_eq!(target["exit_code"], 0);
            assert!(target["lock"]["key"].is_i64());
        }
    }
    assert_eq!(targets[4]["exit_code"], 1);
    assert!(targets[4]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("V1__create_t"));
    assert_eq!(targets[10]["exit_code"], 5);
    assert_eq!(targets[18]["exit_code"], 3);
    assert_eq!(targets[18]["target"], label(held));
    for (i, db) in dbs.iter().enumerate() {
        let expected: &[i64] = if i == 4 || i == 17 { &[] } else { &[1, 2] };
        assert_eq!(db.history(), expected, "{}", db.name());
    }
    assert_eq!(out.stderr.matches("TARGET_DONE target=").count(), 31);
    out.assert_stderr_contains(&format!(
        "TARGET_DONE target={} outcome=failed exit_code=1 applied=0",
        label(conflict)
    ))
    .assert_stderr_contains("SUMMARY 31 targets: 28 applied, 1 skipped, 1 failed, 1 unavailable")
    .assert_stderr_contains(&format!("  failed {}: ", label(conflict)))
    .assert_stderr_contains("  unavailable postgres@127.0.0.1:")
    // A worker's own lines name their target.
    .assert_stderr_contains(&format!("[{}] MIGRATION_APPLIED", label(&dbs[0])));

    // Again, with the lock free: only what was not current is redone.
    drop(holder);
    let out = run();
    out.assert_code(1);
    let json = out.json();
    assert_eq!(json["counts"]["current"], 28);
    assert_eq!(json["counts"]["applied"], 1);
    assert_eq!(outcomes(&json)[18], "applied");
    assert_eq!(held.history(), [1, 2]);
}

fn label(db: &TestDb) -> String {
    format!("postgres@127.0.0.1:{}/{}", db.cluster().port(), db.name())
}

#[test]
fn fail_fast_starts_nothing_after_the_first_failure() {
    let cluster = Cluster::shared();
    let dbs: Vec<TestDb> = (0..4).map(|_| cluster.create_db()).collect();
    dbs[1]
        .client()
        .batch_execute("CREATE TABLE t (other int)")
        .unwrap();
    let (_guard, file) = targets_file(&dbs.iter().map(line).collect::<Vec<_>>());
    let dir = two_migrations();
    let out = many("apply", &file, &dir)
        .args(["--jobs", "1", "--fail-fast"])
        .run();
    out.assert_code(1);
    let json = out.json();
    assert_eq!(
        outcomes(&json),
        ["applied", "failed", "not_started", "not_started"]
    );
    assert_eq!(by_target(&json)[2]["exit_code"], Value::Null);
    assert_eq!(json["counts"]["not_started"], 2);
    assert_eq!(dbs[0].history(), [1, 2]);
    for db in &dbs[2..] {
        assert!(!db.table_exists("t"), "{} was not touched", db.name());
    }
    assert_eq!(out.stderr.matches("TARGET_DONE").count(), 2);
}

#[test]
fn three_tenant_schemas_in_one_database_migrate_in_parallel() {
    let db = Cluster::shared().create_db();
    let mut gate = LockGate::close(&db);
    // The gate holds every tenant inside its first migration: all three at
    // once prove that the schemas do not wait for each other's lock.
    let dir = gated_create_t();
    let base = line(&db);
    let port = db.cluster().port();
    let lines = vec![
        format!("{base}?schema=tenant_a"),
        format!("{base}   schema=Tenant_B"),
        format!(
            "host=127.0.0.1 port={port} user=postgres dbname={} schema=tenant_c",
            db.name()
        ),
    ];
    let (_guard, file) = targets_file(&lines);
    let mut watched = many("apply", &file, &dir)
        .args(["--jobs", "3"])
        .spawn_watched();
    wait_for("three tenants at the gate", Duration::from_secs(60), || {
        LockGate::waiting(&db) == 3
    });
    gate.open();
    watched.wait_for_stderr("SUMMARY", Duration::from_secs(60));
    let out = watched.finish();
    out.assert_success();
    let json = out.json();
    assert_eq!(outcomes(&json), ["applied", "applied", "applied"]);
    let mut keys = HashSet::new();
    for (target, schema) in by_target(&json)
        .iter()
        .zip(["tenant_a", "tenant_b", "tenant_c"])
    {
        assert_eq!(target["schema"], schema);
        assert_eq!(versions(&target["applied"]), [1, 2]);
        keys.insert(target["lock"]["key"].as_i64().unwrap());
        assert!(db.table_exists(&format!("{schema}.t")), "{schema}.t");
        assert!(
            db.table_exists(&format!("{schema}.refinery_schema_history")),
            "{schema}'s history"
        );
        assert_eq!(
            db.query_i64(&format!(
                "SELECT count(*) FROM {schema}.refinery_schema_history"
            )),
            2
        );
    }
    assert_eq!(keys.len(), 3, "three distinct lock keys: {keys:?}");
    assert!(!db.table_exists("public.t"), "nothing lands in public");
    out.assert_stderr_contains("schema=tenant_b outcome=applied");
}

#[test]
fn status_check_and_wait_across_targets() {
    let cluster = Cluster::shared();
    let dbs: Vec<TestDb> = (0..3).map(|_| cluster.create_db()).collect();
    let dir = two_migrations();
    let (_guard, file) = targets_file(&dbs.iter().map(line).collect::<Vec<_>>());
    let (_one, first) = targets_file(&[line(&dbs[0])]);
    many("apply", &first, &dir).run().assert_success();

    let out = many("status", &file, &dir).arg("--check").run();
    out.assert_code(7);
    let json = out.json();
    assert_eq!(outcomes(&json), ["current", "pending", "pending"]);
    assert_eq!(versions(&by_target(&json)[1]["pending"]), [1, 2]);
    // Without --check, a state is not a failure.
    many("status", &file, &dir).run().assert_success();
    // Text: one line per target.
    let out = Miglock::new()
        .env("PGPASSWORD", cluster.password())
        .args(["status", "--databases-from"])
        .arg(&file)
        .arg("--migrations")
        .arg(dir.path())
        .run();
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(
        lines[0],
        format!("{}  current  applied=2 pending=0", label(&dbs[0]))
    );
    assert!(
        lines[2].ends_with("pending  applied=0 pending=2"),
        "{}",
        lines[2]
    );

    let out = Miglock::new()
        .env("PGPASSWORD", cluster.password())
        .args(["apply", "--dry-run", "--databases-from"])
        .arg(&file)
        .arg("--migrations")
        .arg(dir.path())
        .run();
    out.assert_code(7);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert!(
        out.stdout.contains("pending  applied=0 pending=2"),
        "{}",
        out.stdout
    );

    let out = many("wait", &file, &dir).args(["--timeout", "1s"]).run();
    out.assert_code(7);
    assert_eq!(outcomes(&out.json()), ["current", "pending", "pending"]);
    many("apply", &file, &dir).run().assert_success();
    let out = many("wait", &file, &dir).args(["--timeout", "30s"]).run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
    let out = many("status", &file, &dir).arg("--check").run();
    out.assert_success();
}

/// Databases of the shared cluster with names of this test's own, so a
/// LIKE pattern matches them and nothing of the other tests.
struct Named {
    names: Vec<String>,
}

impl Drop for Named {
    fn drop(&mut self) {
        let mut admin = Cluster::shared().connect("postgres");
        for name in &self.names {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

#[test]
fn all_databases_with_match_runs_on_the_matching_ones() {
    let cluster = Cluster::shared();
    let prefix = format!("tenants_{}", std::process::id());
    let named = Named {
        names: ["a", "b", "c"]
            .iter()
            .map(|s| format!("{prefix}_{s}"))
            .collect(),
    };
    let mut admin = cluster.connect("postgres");
    for name in &named.names {
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .unwrap();
    }
    // Not a tenant: it does not match.
    let other = cluster.create_db();
    let dir = two_migrations();
    let all = |maintenance: &str| {
        let mut m = Miglock::new();
        m.env("DATABASE_URL", cluster.url(maintenance))
            .args(["apply", "--format", "json", "--all-databases", "--match"])
            .arg(format!("{prefix}\\_%"))
            .arg("--migrations")
            .arg(dir.path());
        m.run()
    };
    let out = all("postgres");
    out.assert_success();
    let json = out.json();
    let names: Vec<String> = by_target(&json)
        .iter()
        .map(|t| {
            t["target"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, named.names);
    assert_eq!(outcomes(&json), ["applied", "applied", "applied"]);
    assert!(by_target(&json)[0]["line"].is_null());
    assert!(!other.table_exists("t"));
    // The maintenance database counts when it matches.
    let out = all(&named.names[1]);
    out.assert_success();
    assert_eq!(outcomes(&out.json()), ["current", "current", "current"]);
    out.assert_stderr_contains("TARGETS count=3");
}

/// The database's URL given for the targets file by mistake: no file has
/// that name, and the refusal does not echo it.
#[test]
fn a_url_given_for_the_targets_file_is_refused_without_echoing_it() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let out = many("apply", &PathBuf::from(db.url()), &dir).run();
    out.assert_code(2)
        .assert_stderr_contains("--databases-from takes a file listing connection strings");
    let password = db.cluster().password();
    assert!(
        !out.stdout.contains(password) && !out.stderr.contains(password),
        "{}",
        out.details()
    );
    assert_eq!(out.json()["outcome"], "usage");
    assert!(!db.table_exists("refinery_schema_history"));
}

#[test]
fn every_bad_line_is_named_with_its_text_and_never_its_password() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let dir = two_migrations();
    let password = cluster.password();
    let (head, tail) = password.split_at(password.len() / 2);
    let port = cluster.port();
    let name = db.name();
    let (_guard, file) = targets_file(&[
        line(&db),
        format!("postgres://postgres:{password}@127.0.0.1:notaport/{name}"),
        line(&db),
        // A password's own '@' left unencoded: all of it goes.
        format!("postgres://postgres:{head}@{tail}@127.0.0.1:{port}/{name}"),
        format!("host=127.0.0.1 port={port} dbname={name} password='{password}"),
        format!("postgres://postgres@127.0.0.1:{port}/{name}?schema=9lives"),
    ]);
    // The harness fails the test if the password shows anywhere.
    let out = many("apply", &file, &dir).run();
    out.assert_code(2)
        .assert_stderr_contains(&format!(
            "error: --databases-from {}: 4 bad lines, nothing was run:",
            file.display()
        ))
        .assert_stderr_contains(&format!(
            "\n  - line 4: the connection string is malformed: invalid connection string: invalid \
             value for option `port`; it reads: postgres://postgres:…@127.0.0.1:…/{name}\n"
        ))
        .assert_stderr_contains(
            "\n  - line 6: the connection string is malformed: more than one '@' before its host \
             (a password holding '@' must be percent-encoded",
        )
        .assert_stderr_contains(&format!(
            "; it reads: postgres://…@127.0.0.1:{port}/{name}\n"
        ))
        .assert_stderr_contains(&format!(
            "\n  - line 7: the connection string is malformed: unterminated quoted value in the \
             connection string; it reads: host=127.0.0.1 port={port} dbname={name} password=…\n"
        ))
        .assert_stderr_contains(&format!(
            "\n  - line 8: invalid schema name \"9lives\": use letters, digits, _ and $, starting \
             with a letter or _, at most 63 bytes; it reads: \
             postgres://postgres@127.0.0.1:{port}/{name}?schema=9lives\n"
        ));
    for fragment in [head, tail] {
        assert!(!out.stderr.contains(fragment), "{}", out.stderr);
    }
    let json = out.json();
    assert_eq!(json["outcome"], "usage");
    assert_eq!(json["targets"], serde_json::json!([]));
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("4 bad lines"));
    assert!(
        !db.table_exists("t"),
        "nothing ran, not even the good lines"
    );
    assert!(!db.table_exists("refinery_schema_history"));

    // From stdin, with a word after the URL that is not schema=.
    let input = format!("{}\n{} s3cret-ish\n", line(&db), line(&db));
    let mut m = many("status", &PathBuf::from("-"), &dir);
    let out = run_with_stdin(&mut m, &input);
    out.assert_code(2).assert_stderr_contains(&format!(
        "--databases-from -: 1 bad line, nothing was run:\n  - line 2: after the URL only \
         schema=NAME may follow (separated by spaces); it reads: {} …",
        line(&db)
    ));
    assert!(!out.stderr.contains("s3cret-ish"), "{}", out.stderr);
}

#[test]
fn no_targets_is_a_usage_error_naming_its_source_unless_allowed() {
    let cluster = Cluster::shared();
    // Would match if the pattern were wrong the other way: it must stay
    // untouched whatever happens.
    let bystander = cluster.create_db();
    let dir = two_migrations();
    let (_guard, file) = targets_file(&["# none yet".to_string(), "   ".to_string()]);

    let out = many("apply", &file, &dir).run();
    out.assert_code(2).assert_stderr_contains(&format!(
        "error: --databases-from {} lists no targets (only comments and blank lines, or nothing): \
         nothing was run. Give at least one target, or pass --allow-no-targets",
        file.display()
    ));
    assert!(!out.stderr.contains("SUMMARY"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["outcome"], "usage");
    assert_eq!(json["exit_code"], 2);
    assert_eq!(json["targets"], serde_json::json!([]));

    // Stdin, named as `-`; status and wait refuse it alike.
    for command in ["status", "wait"] {
        let mut m = many(command, &PathBuf::from("-"), &dir);
        run_with_stdin(&mut m, "\n# only a comment\n\n")
            .assert_code(2)
            .assert_stderr_contains("error: --databases-from - (stdin) lists no targets");
    }

    // --all-databases whose pattern matches nothing names the pattern.
    let pattern = format!("nomatch_{}%", std::process::id());
    let all = |extra: &[&str]| {
        let mut m = Miglock::new();
        m.env("DATABASE_URL", cluster.url("postgres"))
            .args(["apply", "--format", "json", "--all-databases", "--match"])
            .arg(&pattern)
            .args(extra)
            .arg("--migrations")
            .arg(dir.path());
        m
    };
    let out = all(&[]).run();
    out.assert_code(2).assert_stderr_contains(&format!(
        "error: --all-databases --match '{pattern}' matched no database of postgres@127.0.0.1:{}/postgres",
        cluster.port()
    ));
    assert_eq!(out.json()["outcome"], "usage");

    // Allowed: exit 0, saying so, with nothing run.
    let out = all(&["--allow-no-targets"]).run();
    out.assert_success().assert_stderr_contains(&format!(
        "NO_TARGETS --all-databases --match '{pattern}' matched no database"
    ));
    let json = out.json();
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["targets"], serde_json::json!([]));
    let out = many("apply", &file, &dir)
        .env("MIGLOCK_ALLOW_NO_TARGETS", "1")
        .run();
    out.assert_success()
        .assert_stderr_contains("NO_TARGETS --databases-from")
        .assert_stderr_contains("--allow-no-targets: nothing to do")
        .assert_stderr_contains("SUMMARY 0 targets");
    // A value that is not a yes or a no is refused, not taken for one.
    many("apply", &file, &dir)
        .env("MIGLOCK_ALLOW_NO_TARGETS", "perhaps")
        .run()
        .assert_code(2)
        .assert_stderr_contains("--allow-no-targets");
    assert!(!bystander.table_exists("refinery_schema_history"));
    assert!(!bystander.table_exists("t"));
}

fn run_with_stdin(m: &mut Miglock, input: &str) -> RunOutput {
    let mut stdin = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
    std::io::Seek::rewind(&mut stdin).unwrap();
    m.stdin(std::process::Stdio::from(stdin)).run()
}

#[test]
fn sigterm_mid_run_interrupts_every_target_in_flight_and_starts_no_other() {
    let cluster = Cluster::shared();
    let dbs: Vec<TestDb> = (0..3).map(|_| cluster.create_db()).collect();
    let mut gates: Vec<LockGate> = dbs[..2].iter().map(LockGate::close).collect();
    let dir = gated_create_t();
    let (_guard, file) = targets_file(&dbs.iter().map(line).collect::<Vec<_>>());
    let mut watched = many("apply", &file, &dir)
        .args(["--jobs", "2"])
        .spawn_watched();
    // Two workers take the first two targets; both stop at their gate.
    wait_for("both targets in flight", Duration::from_secs(60), || {
        dbs[..2].iter().all(|db| LockGate::waiting(db) == 1)
    });
    send_signal(watched.id(), "TERM");
    watched.wait_for_stderr("SUMMARY", Duration::from_secs(30));
    let out = watched.finish();
    out.assert_code(130);
    let json = out.json();
    assert_eq!(json["outcome"], "interrupted");
    assert_eq!(
        outcomes(&json),
        ["interrupted", "interrupted", "not_started"]
    );
    out.assert_stderr_contains("LOCK_RELEASED");
    for db in &dbs {
        assert!(!db.table_exists("t"), "{}: rolled back", db.name());
        assert_eq!(db.history(), [0i64; 0]);
        assert_eq!(
            db.query_i64(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND a.application_name LIKE 'miglock %' \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            0,
            "{}: no advisory lock left",
            db.name()
        );
    }
    for gate in &mut gates {
        gate.open();
    }
}

/// `--shard INDEX/COUNT`: bad values and a shard without a list are usage
/// errors before anything runs; a shard the hash leaves empty is exit 0,
/// saying so; the shards of one list together run each target once.
#[test]
fn shards_split_the_list_and_refuse_what_makes_no_sense() {
    let dbs: Vec<TestDb> = (0..2).map(|_| Cluster::shared().create_db()).collect();
    let lines: Vec<String> = dbs.iter().map(line).collect();
    let (_guard, file) = targets_file(&lines);
    let dir = two_migrations();

    for (args, env, needle) in [
        (
            &["--shard", "3/3"][..],
            None,
            "INDEX is a whole number from 0 to 2",
        ),
        (
            &["--shard", "1"][..],
            None,
            "no '/' between INDEX and COUNT",
        ),
        (
            &["--shards", "2"][..],
            None,
            "JOB_COMPLETION_INDEX, which is not set",
        ),
        (
            &["--shards", "2"][..],
            Some("5"),
            "INDEX is a whole number from 0 to 1",
        ),
    ] {
        let mut m = many("apply", &file, &dir);
        m.args(args);
        if let Some(index) = env {
            m.env("JOB_COMPLETION_INDEX", index);
        }
        m.run().assert_code(2).assert_stderr_contains(needle);
    }
    // A shard needs a list to split.
    let out = Miglock::for_db(&dbs[0])
        .args(["apply", "--shard", "0/2", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(2)
        .assert_stderr_contains("--shard and --shards split a list of targets");
    for db in &dbs {
        assert!(db.history().is_empty(), "nothing ran");
    }

    // With more shards than targets some are empty: exit 0, said so.
    let mut ran = 0;
    let mut empty = 0;
    for index in 0..4 {
        let out = many("apply", &file, &dir)
            .args(["--shard", &format!("{index}/4")])
            .run();
        out.assert_success();
        let targets = out.json()["targets"].as_array().unwrap().len();
        if targets == 0 {
            empty += 1;
            out.assert_stderr_contains("SHARD_EMPTY");
        }
        ran += targets;
    }
    assert_eq!(ran, 2, "each target in one shard");
    assert!(
        empty >= 2,
        "two targets leave at least two of four shards empty"
    );
    for db in &dbs {
        assert_eq!(db.history(), [1, 2]);
    }
}

/// `--canary N`: the first N targets run before the rest; one failure
/// among them and the rest never start. Without a failure, all run.
#[test]
fn a_failed_canary_starts_nothing_else_and_a_good_one_lets_the_rest_run() {
    let cluster = Cluster::shared();
    let dbs: Vec<TestDb> = (0..5).map(|_| cluster.create_db()).collect();
    dbs[1]
        .client()
        .batch_execute("CREATE TABLE t (other int)")
        .unwrap();
    let (_guard, file) = targets_file(&dbs.iter().map(line).collect::<Vec<_>>());
    let dir = two_migrations();
    let out = many("apply", &file, &dir)
        .args(["--canary", "2", "--jobs", "4"])
        .run();
    out.assert_code(1)
        .assert_stderr_contains("CANARY targets=2 of=5")
        .assert_stderr_contains(
            "CANARY_FAILED 1 of the first 2 target(s) failed: the other 3 were not started",
        )
        .assert_stderr_contains("stopped: a canary target failed");
    let json = out.json();
    assert_eq!(
        outcomes(&json),
        [
            "applied",
            "failed",
            "not_started",
            "not_started",
            "not_started"
        ]
    );
    assert_eq!(json["stopped"], "canary");
    for db in &dbs[2..] {
        assert!(db.history().is_empty(), "{} was not touched", db.name());
    }

    // The failing tenant fixed, the canary passes and the rest run.
    dbs[1].client().batch_execute("DROP TABLE t").unwrap();
    let out = many("apply", &file, &dir)
        .args(["--canary", "2", "--jobs", "4"])
        .run();
    out.assert_success();
    let json = out.json();
    assert_eq!(json["stopped"], Value::Null);
    assert_eq!(
        outcomes(&json),
        ["current", "applied", "applied", "applied", "applied"]
    );
    for db in &dbs {
        assert_eq!(db.history(), [1, 2]);
    }
}

/// `--max-failures N`: no target starts once N have failed; fewer failures
/// than N let every target run. `--fail-fast` is N = 1; given both, the
/// smaller wins.
#[test]
fn max_failures_stops_starting_targets_once_reached() {
    let cluster = Cluster::shared();
    let dbs: Vec<TestDb> = (0..6).map(|_| cluster.create_db()).collect();
    for db in &dbs[..3] {
        db.client()
            .batch_execute("CREATE TABLE t (other int)")
            .unwrap();
    }
    let (_guard, file) = targets_file(&dbs.iter().map(line).collect::<Vec<_>>());
    let dir = two_migrations();
    let out = many("apply", &file, &dir)
        .args(["--jobs", "1", "--max-failures", "2"])
        .run();
    out.assert_code(1)
        .assert_stderr_contains("MAX_FAILURES 2 target(s) failed: the others were not started")
        .assert_stderr_contains("stopped: 2 failed (--max-failures)");
    let json = out.json();
    assert_eq!(
        outcomes(&json),
        [
            "failed",
            "failed",
            "not_started",
            "not_started",
            "not_started",
            "not_started"
        ]
    );
    assert_eq!(json["stopped"], "max_failures");
    for db in &dbs[2..] {
        assert!(db.history().is_empty(), "{} was not touched", db.name());
    }

    // Up to four failures allowed: every target runs, three fail, no stop.
    let out = many("apply", &file, &dir)
        .args(["--jobs", "2", "--max-failures", "4"])
        .run();
    out.assert_code(1);
    let json = out.json();
    assert_eq!(json["stopped"], Value::Null);
    assert_eq!(json["counts"]["failed"], 3);
    assert_eq!(json["counts"]["applied"], 3);

    // --fail-fast with a budget from the environment: the smaller wins.
    let out = many("apply", &file, &dir)
        .env("MIGLOCK_MAX_FAILURES", "4")
        .args(["--jobs", "1", "--fail-fast"])
        .run();
    out.assert_code(1)
        .assert_stderr_contains("MAX_FAILURES 1 target(s) failed");
    assert_eq!(
        outcomes(&out.json()),
        [
            "failed",
            "not_started",
            "not_started",
            "not_started",
            "not_started",
            "not_started"
        ]
    );
}

/// `--all-schemas [--schema-match PATTERN]`: every schema of the database
/// is a target (public and PostgreSQL's own left out unless matched), each
/// with its history table and lock key in it.
#[test]
fn all_schemas_makes_each_schema_a_target() {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b; CREATE SCHEMA other;")
        .unwrap();
    let dir = two_migrations();
    let out = Miglock::for_db(&db)
        .args([
            "apply",
            "--format",
            "json",
            "--all-schemas",
            "--schema-match",
            "tenant\\_%",
        ])
        .arg("--migrations")
        .arg(dir.path())
        .run();
    out.assert_success();
    let json = out.json();
    let schemas: Vec<&str> = by_target(&json)
        .iter()
        .map(|t| t["schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas, ["tenant_a", "tenant_b"]);
    assert_eq!(outcomes(&json), ["applied", "applied"]);
    for schema in ["tenant_a", "tenant_b"] {
        assert_eq!(
            db.history_of(&format!("{schema}.refinery_schema_history")),
            [1, 2]
        );
        assert!(db.table_exists(&format!("{schema}.t")), "{schema}.t");
    }
    assert!(!db.table_exists("other.t"));
    assert!(!db.table_exists("public.refinery_schema_history"));

    // Without a pattern: every schema but public and PostgreSQL's own.
    let out = Miglock::for_db(&db)
        .args([
            "status",
            "--format",
            "json",
            "--all-schemas",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_success();
    let json = out.json();
    let schemas: Vec<&str> = by_target(&json)
        .iter()
        .map(|t| t["schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas, ["other", "tenant_a", "tenant_b"]);
    assert_eq!(outcomes(&json), ["pending", "current", "current"]);

    // A pattern that matches nothing is a usage error, naming it.
    Miglock::for_db(&db)
        .args([
            "apply",
            "--all-schemas",
            "--schema-match",
            "nomatch%",
            "--migrations",
        ])
        .arg(dir.path())
        .run()
        .assert_code(2)
        .assert_stderr_contains("--all-schemas --schema-match 'nomatch%' matched no schema");
    Miglock::for_db(&db)
        .args(["apply", "--schema-match", "tenant%"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("--all-schemas");
}

/// A worker keeps its connection from one schema of a database to the
/// next (reset with DISCARD ALL in between): 30 schemas with `--jobs 2`
/// run on at most two backends, and what a migration set on its session
/// (work_mem, search_path) is gone for the next schema's.
#[test]
fn the_schemas_of_one_database_share_a_worker_s_connection_and_nothing_else() {
    let db = Cluster::shared().create_db();
    let schemas: Vec<String> = (0..30).map(|i| format!("tenant_{i:02}")).collect();
    db.client()
        .batch_execute(
            &schemas
                .iter()
                .map(|s| format!("CREATE SCHEMA {s};"))
                .collect::<String>(),
        )
        .unwrap();
    let dir = MigrationDir::with(&[(
        "V1__record.sql",
        "CREATE TABLE seen AS SELECT pg_backend_pid() AS pid, \
         current_setting('work_mem') AS work_mem, current_schema() AS schema;\n\
         SET work_mem = '7MB';\nSET search_path = public;\n",
    )]);
    let out = Miglock::for_db(&db)
        .args([
            "apply",
            "--format",
            "json",
            "--all-schemas",
            "--jobs",
            "2",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_success();
    assert_eq!(outcomes(&out.json()), vec!["applied"; 30]);
    let mut pids = HashSet::new();
    for schema in &schemas {
        let row = db
            .client()
            .query_one(
                &format!("SELECT pid, work_mem, schema FROM {schema}.seen"),
                &[],
            )
            .unwrap();
        pids.insert(row.get::<_, i32>(0));
        assert_eq!(
            row.get::<_, String>(1),
            "4MB",
            "{schema}: a work_mem leaked in"
        );
        assert_eq!(
            row.get::<_, String>(2),
            *schema,
            "{schema}: another search_path"
        );
        assert_eq!(
            db.history_of(&format!("{schema}.refinery_schema_history")),
            [1]
        );
    }
    assert!(pids.len() <= 2, "30 schemas on {} backends", pids.len());

    // Two targets that connect differently (another options=) never share:
    // each runs with its own settings.
    let other = Cluster::shared().create_db();
    let lines: Vec<String> = ["5MB", "6MB"]
        .iter()
        .enumerate()
        .map(|(i, mem)| format!("{}?options=-c%20work_mem%3D{mem} schema=s{i}", line(&other)))
        .collect();
    let (_guard, file) = targets_file(&lines);
    let record = MigrationDir::with(&[(
        "V1__record.sql",
        "CREATE TABLE seen AS SELECT current_setting('work_mem') AS work_mem;",
    )]);
    many("apply", &file, &record)
        .args(["--jobs", "1"])
        .run()
        .assert_success();
    for (i, mem) in ["5MB", "6MB"].iter().enumerate() {
        let seen = other.query_i64(&format!(
            "SELECT count(*) FROM s{i}.seen WHERE work_mem = '{mem}'"
        ));
        assert_eq!(seen, 1, "s{i} ran with another target's options");
    }
    // Nothing held once the run is over.
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        ),
        0
    );
}
