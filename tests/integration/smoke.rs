//! Tests of the harness itself.

use std::time::{Duration, Instant};

use postgres::NoTls;

use crate::cluster::Cluster;
use crate::harness::{wait_until, Miglock, MigrationDir, RunOutput};

/// Creates a database, a table in it and checks the helpers see it.
fn create_table_roundtrip(table: &str) {
    let db = Cluster::shared().create_db();
    assert!(!db.table_exists(table));
    db.client()
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, note text);
             INSERT INTO {table} VALUES (1, 'one'), (2, NULL);"
        ))
        .unwrap();
    assert!(db.table_exists(table));
    assert!(db.table_exists(&format!("public.{table}")));
    assert_eq!(db.query_i64(&format!("SELECT count(*) FROM {table}")), 2);
    assert_eq!(
        db.query_strings(&format!("SELECT id, note FROM {table} ORDER BY id")),
        vec![
            vec![Some("1".to_owned()), Some("one".to_owned())],
            vec![Some("2".to_owned()), None],
        ]
    );
}

#[test]
fn parallel_databases_a() {
    create_table_roundtrip("widgets");
}

#[test]
fn parallel_databases_b() {
    create_table_roundtrip("gadgets");
    // Many concurrent CREATE DATABASE on the same cluster must not trip over
    // each other (template in use, name clashes).
    let names: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let db = Cluster::shared().create_db();
                    db.client().batch_execute("CREATE TABLE t ()").unwrap();
                    assert!(db.table_exists("t"));
                    db.name().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

#[test]
fn databases_are_isolated() {
    let a = Cluster::shared().create_db();
    let b = Cluster::shared().create_db();
    assert_ne!(a.name(), b.name());
    a.client()
        .batch_execute("CREATE TABLE only_in_a ()")
        .unwrap();
    assert!(a.table_exists("only_in_a"));
    assert!(!b.table_exists("only_in_a"));
}

#[test]
fn private_cluster_survives_stop_and_start() {
    let cluster = Cluster::start();
    assert_ne!(cluster.port(), Cluster::shared().port());
    let db = cluster.create_db();
    db.client()
        .batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42);")
        .unwrap();
    let port = cluster.port();

    cluster.stop_fast();
    assert!(cluster.postmaster_pid().is_none());
    assert!(postgres::Client::connect(&db.url(), NoTls).is_err());
    cluster.start_again();
    assert_eq!(cluster.port(), port);
    assert_eq!(db.query_i64("SELECT sum(v) FROM kept"), 42);

    // An immediate stop skips the shutdown checkpoint; the committed row
    // must come back through crash recovery.
    db.client()
        .batch_execute("INSERT INTO kept VALUES (1)")
        .unwrap();
    cluster.stop_immediate();
    cluster.start_again();
    assert_eq!(db.query_i64("SELECT sum(v) FROM kept"), 43);

    cluster.restart();
    assert_eq!(db.query_i64("SELECT sum(v) FROM kept"), 43);
    assert!(cluster.postmaster_pid().is_some());
}

#[test]
fn private_cluster_is_removed_on_drop() {
    let cluster = Cluster::start_with(&[("lock_timeout", "'1500ms'")]);
    let dir = cluster.data_dir().to_path_buf();
    let db = cluster.create_db();
    assert_eq!(
        db.query_strings("SHOW lock_timeout"),
        vec![vec![Some("1500ms".to_owned())]]
    );
    drop(db);
    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn tcp_connections_need_the_password() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    assert!(cluster.password().starts_with("pw-"));
    assert_eq!(cluster.password().len(), 3 + 16);
    assert_eq!(db.client_tcp().simple_query("SELECT 1").unwrap().len(), 3);
    postgres::Client::connect(&db.url(), NoTls).unwrap();

    let wrong = format!(
        "postgres://postgres:wrong-password@127.0.0.1:{}/{}",
        cluster.port(),
        db.name()
    );
    let err = postgres::Client::connect(&wrong, NoTls)
        .err()
        .expect("wrong password was accepted");
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INVALID_PASSWORD),
        "{err}"
    );
    let none = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        cluster.port(),
        db.name()
    );
    assert!(postgres::Client::connect(&none, NoTls).is_err());

    // The unix socket is trusted, so harness helpers keep working in tests
    // that change passwords.
    let mut socket = postgres::Config::new();
    socket
        .host_path(cluster.socket_dir())
        .port(cluster.port())
        .user("postgres")
        .dbname(db.name());
    socket.connect(NoTls).unwrap();
    cluster.admin().simple_query("SELECT 1").unwrap();
}

#[test]
fn miglock_runs_with_a_clean_environment() {
    let db = Cluster::shared().create_db();
    Miglock::for_db(&db).arg("--help").run().assert_code(0);

    let out = Miglock::new()
        .program("/usr/bin/env")
        .env("MIGLOCK_EXTRA", "1")
        .env("DROPPED", "x")
        .env_remove("DROPPED")
        .run();
    out.assert_success();
    let mut keys: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    keys.sort();
    let mut expected = vec!["LANG", "MIGLOCK_EXTRA", "NO_COLOR", "PATH"];
    if std::env::var_os("HOME").is_some() {
        expected.push("HOME");
        expected.sort();
    }
    assert_eq!(keys, expected, "{}", out.stdout);
    out.assert_stdout_contains("NO_COLOR=1\n")
        .assert_stdout_contains("LANG=C.UTF-8\n");

    let out = Miglock::new()
        .program("/bin/sh")
        .args(["-c", "echo '{\"ok\": true}'; echo oops >&2; exit 3"])
        .run();
    out.assert_code(3).assert_stderr_contains("oops");
    assert_eq!(out.json()["ok"], true);

    let killed = Miglock::new()
        .program("/bin/sh")
        .args(["-c", "kill -9 $$"])
        .run();
    killed.assert_code(-9);
}

#[test]
#[should_panic(expected = "SECRET LEAK")]
fn run_output_catches_leaked_password() {
    // `env` prints DATABASE_URL, which holds the password.
    let db = Cluster::shared().create_db();
    Miglock::for_db(&db).program("/usr/bin/env").run();
}

#[test]
#[should_panic(expected = "SECRET LEAK")]
fn spawned_child_output_is_checked_too() {
    let password = Cluster::shared().password().to_owned();
    let child = Miglock::new()
        .program("/bin/sh")
        .args(["-c", "echo \"connecting with $0\" >&2", &password])
        .spawn();
    RunOutput::from_child(child);
}

#[test]
#[should_panic(expected = "ran longer than")]
fn runaway_process_is_killed() {
    Miglock::new()
        .program("/bin/sleep")
        .arg("30")
        .timeout(Duration::from_millis(300))
        .run();
}

#[test]
fn migration_dir_and_wait_until() {
    let dir = MigrationDir::new();
    dir.file("V1__init.sql", "CREATE TABLE a ();")
        .bytes("V2__bom.sql", b"\xEF\xBB\xBFSELECT 1;\r\n")
        .file("nested/V3__deep.sql", "SELECT 3;");
    let sub = dir.subdir("empty");
    assert!(sub.is_dir());
    assert_eq!(
        std::fs::read(dir.path().join("V2__bom.sql")).unwrap(),
        b"\xEF\xBB\xBFSELECT 1;\r\n"
    );
    dir.remove("V1__init.sql");
    assert!(!dir.path().join("V1__init.sql").exists());
    assert!(dir.path().join("nested/V3__deep.sql").is_file());

    let start = Instant::now();
    wait_until(Duration::from_secs(5), || {
        start.elapsed() > Duration::from_millis(100)
    });
    let timed_out = std::panic::catch_unwind(|| wait_until(Duration::from_millis(50), || false));
    assert!(timed_out.is_err());
}
