//! Crowds of replicas, as RELIABILITY.md publishes them: a storm of 100
//! `apply` processes round after round (one round with `--wait`s shorter
//! than the slow migration), and appliers, `wait` and `status` callers all
//! at once. Lines starting with `FIGURE` on stderr are the measurements
//! RELIABILITY.md quotes; run with `-- --nocapture` to see them.

use std::io::Write;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{
    apply, command, finish_all, gated_migrations, versions, wait_until, Miglock, MigrationDir,
    EFFECTS,
};
use crate::probes::{assert_quiet, effects, once_each, sessions_like, LockGate};

/// A private cluster with room for the storms (100 processes plus the
/// tests that share it), started on first use and kept for the run.
fn big_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start_with(&[("max_connections", "400")]))
}

/// Spawns a [`herd_member`] with a stdin pipe to release it by.
fn spawn_held(m: &mut Miglock) -> Child {
    m.stdin(Stdio::piped()).spawn()
}

/// miglock for the database, run as `sh -c 'read _; exec "$0" "$@"'`: it
/// waits for a line on stdin, then becomes miglock (`exec`: same pid), so
/// that a whole herd can be let go at once with [`release`] (spawning 100
/// processes one by one takes a second or two). Add miglock's arguments
/// as usual.
fn herd_member(db: &TestDb) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.program("/bin/sh").args([
        "-c",
        "read _; exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_miglock"),
    ]);
    m
}

/// Lets a herd go: one line to each, as fast as the loop runs.
fn release(mut herd: Vec<Child>) -> Vec<Child> {
    for child in &mut herd {
        let mut stdin = child.stdin.take().expect("a held child has a stdin pipe");
        stdin.write_all(b"go\n").expect("release a held child");
    }
    herd
}

const STORM: usize = 100;

/// Three rounds of 100 `apply --wait 60s` processes, each round adding
/// migrations of which one takes a second; then a round of 50 long and 50
/// short waits while the slow migration is held open. Every side effect
/// happens once, the history has no gap, every process exits 0, and 3 only
/// where its `--wait` ended before the slow migration did.
#[test]
fn storm_of_100_replicas_round_after_round() {
    let db = big_cluster().create_db();
    let key = db.default_key();
    let dir = MigrationDir::new();
    let rounds: [&[(&str, &str)]; 3] = [
        &[
            ("V1__create_effects.sql", EFFECTS),
            (
                "V2__create_users.sql",
                "CREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\n",
            ),
            (
                "V3__slow_backfill.sql",
                "SELECT pg_sleep(1);\nINSERT INTO users SELECT generate_series(1, 1000);\n\
                 INSERT INTO effects (version) VALUES (3);\n",
            ),
        ],
        &[
            (
                "V4__create_orders.sql",
                "CREATE TABLE orders (id int, user_id int REFERENCES users);\n\
                 INSERT INTO effects (version) VALUES (4);\n",
            ),
            (
                "V5__slow_index.sql",
                "SELECT pg_sleep(1);\nCREATE INDEX ON orders (user_id);\n\
                 INSERT INTO effects (version) VALUES (5);\n",
            ),
        ],
        &[
            (
                "V6__add_email.sql",
                "ALTER TABLE users ADD COLUMN email text;\nINSERT INTO effects (version) VALUES (6);\n",
            ),
            (
                "V7__slow_default.sql",
                "SELECT pg_sleep(1);\nUPDATE users SET email = id || '@example.com';\n\
                 INSERT INTO effects (version) VALUES (7);\n",
            ),
        ],
    ];
    let mut newest = 0i64;
    for (round, files) in rounds.iter().enumerate() {
        let round = round + 1;
        for (name, sql) in *files {
            dir.file(name, sql);
        }
        let new: Vec<i64> = (newest + 1..=newest + files.len() as i64).collect();
        newest += files.len() as i64;

        let spawning = Instant::now();
        let herd: Vec<Child> = (0..STORM)
            .map(|i| {
                spawn_held(
                    herd_member(&db)
                        .args(["apply", "--format", "json", "--wait", "60s", "--migrations"])
                        .arg(dir.path())
                        .env("MIGLOCK_INSTANCE", format!("storm-{round}-{i}")),
                )
            })
            .collect();
        let spawned = spawning.elapsed();
        let started = Instant::now();
        let children = release(herd);
        let results = finish_all(children, Duration::from_secs(180));
        let took = results
            .iter()
            .map(|(_, ended)| ended.duration_since(started))
            .max()
            .unwrap();

        let mut appliers = Vec::new();
        let mut busy = 0;
        let mut max_waited = 0;
        for (i, (out, _)) in results.iter().enumerate() {
            out.assert_success();
            let json = out.json();
            match json["outcome"].as_str() {
                Some("applied") => {
                    appliers.push(i);
                    assert_eq!(versions(&json["applied"]), new, "round {round} replica {i}");
                }
                Some("current") => assert_eq!(json["applied"], json!([]), "replica {i}"),
                other => panic!(
                    "round {round} replica {i}: outcome {other:?}\n{}",
                    out.details()
                ),
            }
            busy += usize::from(out.stderr.contains("LOCK_BUSY"));
            max_waited = max_waited.max(json["lock"]["waited_ms"].as_u64().unwrap());
        }
        assert_eq!(
            appliers.len(),
            1,
            "round {round}: exactly one migrates: {appliers:?}"
        );
        assert_eq!(
            db.history(),
            (1..=newest).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(effects(&db), once_each(1..=newest), "round {round}");
        assert_quiet(&db, key);
        eprintln!(
            "FIGURE storm round {round}: {STORM} apply processes (--wait 60s), {} new migrations \
             (one sleeps 1 s): all exited 0 within {:.1}s of their simultaneous start (spawning took {:.1}s); \
             1 applied, {} current, {busy} saw LOCK_BUSY, longest lock wait {max_waited} ms",
            new.len(),
            took.as_secs_f64(),
            spawned.as_secs_f64(),
            STORM - 1,
        );
    }

    // Round 4: the slow migration is held open by the gate until every
    // short-waiting process has given up, so each of their waits is
    // shorter than it by construction, and each must exit 3.
    dir.file(
        "V8__gated_backfill.sql",
        &format!(
            "INSERT INTO effects (version) VALUES (8);\n{}\n",
            LockGate::SQL
        ),
    )
    .file(
        "V9__after_backfill.sql",
        "INSERT INTO effects (version) VALUES (9);\n",
    );
    let mut gate = LockGate::close(&db);
    let started = Instant::now();
    let long: Vec<Child> = (0..STORM / 2)
        .map(|i| {
            apply(&db, &dir)
                .args(["--wait", "60s"])
                .env("MIGLOCK_INSTANCE", format!("storm-4-long-{i}"))
                .spawn()
        })
        .collect();
    wait_until(Duration::from_secs(90), || {
        LockGate::waiting(&db) == 1
            && sessions_like(&db, "miglock apply waiting%") == (STORM / 2 - 1) as i64
    });
    let slow_since = Instant::now();
    let short_waits = ["0", "200ms", "500ms", "1s", "2s"];
    let mut short_wait_of = Vec::new();
    let short: Vec<Child> = (0..STORM / 2)
        .map(|i| {
            let wait = short_waits[i % short_waits.len()];
            short_wait_of.push(miglock::testing::parse::duration(wait).unwrap());
            apply(&db, &dir)
                .args(["--wait", wait])
                .env("MIGLOCK_INSTANCE", format!("storm-4-short-{i}"))
                .spawn()
        })
        .collect();
    let short_results = finish_all(short, Duration::from_secs(90));
    // The gate is still closed: the slow migration has run at least this long.
    let slow_so_far = slow_since.elapsed();
    let mut skipped = 0;
    for (i, ((out, _), wait)) in short_results.iter().zip(&short_wait_of).enumerate() {
        assert!(
            *wait < slow_so_far,
            "short replica {i}: --wait {wait:?} is not shorter than the slow migration ({slow_so_far:?})"
        );
        out.assert_code(3)
            .assert_stderr_contains("LOCK_BUSY")
            .assert_stderr_contains("LOCK_WAIT_TIMEOUT");
        let json = out.json();
        assert_eq!(json["outcome"], "skipped", "short replica {i}");
        assert_eq!(versions(&json["pending"]), [8, 9], "short replica {i}");
        assert_eq!(json["applied"], json!([]), "short replica {i}");
        assert!(
            json["lock"]["holder"]["application_name"]
                .as_str()
                .is_some_and(
                    |a| a.starts_with("miglock apply holding") && a.contains("storm-4-long-")
                ),
            "short replica {i} names the holder: {json:#}"
        );
        assert!(json["lock"]["waited_ms"].as_u64().unwrap() >= wait.as_millis() as u64);
        skipped += 1;
    }
    assert_eq!(
        db.history(),
        (1..=7).collect::<Vec<_>>(),
        "nothing of V8 yet"
    );
    gate.open();
    let slow_total = slow_since.elapsed();
    let long_results = finish_all(long, Duration::from_secs(90));
    let took = long_results
        .iter()
        .map(|(_, ended)| ended.duration_since(started))
        .max()
        .unwrap();
    let mut appliers = 0;
    for (i, (out, _)) in long_results.iter().enumerate() {
        // Every process with a long wait exits 0, never 3.
        out.assert_success();
        let json = out.json();
        match json["outcome"].as_str() {
            Some("applied") => {
                appliers += 1;
                assert_eq!(versions(&json["applied"]), [8, 9]);
            }
            Some("current") => assert_eq!(json["applied"], json!([])),
            other => panic!("long replica {i}: outcome {other:?}\n{}", out.details()),
        }
    }
    assert_eq!(appliers, 1);
    assert_eq!(db.history(), (1..=9).collect::<Vec<_>>());
    assert_eq!(effects(&db), once_each(1..=9));
    assert_quiet(&db, key);
    eprintln!(
        "FIGURE storm round 4: {STORM} apply processes: {} with --wait 60s all exited 0 (1 applied V8-V9), \
         {skipped} with --wait 0/200ms/500ms/1s/2s all exited 3 while the slow migration ran \
         (held {:.1}s); round took {:.1}s",
        STORM / 2,
        slow_total.as_secs_f64(),
        took.as_secs_f64()
    );
}

/// 20 `wait`, 40 `apply` and 20 `status` processes at once. `status` sees
/// one holder, 59 waiting sessions and the half-applied-nothing history;
/// every `wait` is still waiting when the last migration starts and
/// returns 0 once it commits.
#[test]
fn appliers_waiters_and_status_callers_at_once() {
    let db = big_cluster().create_db();
    let key = db.default_key();
    let dir = gated_migrations();
    let mut gate = LockGate::close(&db);

    let waits: Vec<Child> = (0..20)
        .map(|i| {
            command(&db, "wait", &dir)
                .args(["--timeout", "90s"])
                .env("MIGLOCK_INSTANCE", format!("mixed-wait-{i}"))
                .spawn()
        })
        .collect();
    wait_until(Duration::from_secs(60), || {
        sessions_like(&db, "miglock wait waiting%") == 20
    });
    let appliers: Vec<Child> = (0..40)
        .map(|i| {
            apply(&db, &dir)
                .args(["--wait", "90s"])
                .env("MIGLOCK_INSTANCE", format!("mixed-apply-{i}"))
                .spawn()
        })
        .collect();
    wait_until(Duration::from_secs(60), || {
        LockGate::waiting(&db) == 1 && sessions_like(&db, "miglock apply waiting%") == 39
    });

    let status: Vec<Child> = (0..20)
        .map(|i| {
            let mut m = command(&db, "status", &dir);
            if i % 2 == 0 {
                m.arg("--check");
            }
            m.spawn()
        })
        .collect();
    for (i, (out, _)) in finish_all(status, Duration::from_secs(60))
        .iter()
        .enumerate()
    {
        out.assert_code(if i % 2 == 0 { 7 } else { 0 });
        let json = out.json();
        assert_eq!(json["outcome"], "pending", "status {i}");
        assert_eq!(
            versions(&json["applied"]),
            [1],
            "status {i}: V2 is not visible before it commits"
        );
        assert_eq!(versions(&json["pending"]), [2, 3], "status {i}");
        assert!(
            json["lock"]["holder"]["application_name"]
                .as_str()
                .is_some_and(|a| a.starts_with("miglock apply holding")),
            "status {i}: {json:#}"
        );
        let waiting = json["lock"]["waiting"].as_array().unwrap();
        let count = |prefix: &str| {
            waiting
                .iter()
                .filter(|w| {
                    w["application_name"]
                        .as_str()
                        .is_some_and(|a| a.starts_with(prefix))
                })
                .count()
        };
        assert_eq!(
            (
                count("miglock wait waiting"),
                count("miglock apply waiting"),
                waiting.len()
            ),
            (20, 39, 59),
            "status {i}: {json:#}"
        );
    }

    // Nobody has returned early.
    let mut waits = waits;
    let mut appliers = appliers;
    for (i, child) in waits.iter_mut().enumerate() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "wait {i} returned before V2 committed"
        );
    }
    for (i, child) in appliers.iter_mut().enumerate() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "apply {i} returned before V2 committed"
        );
    }
    gate.open();
    let opened = Instant::now();
    let n_waits = waits.len();
    let mut all = waits;
    all.extend(appliers);
    let results = finish_all(all, Duration::from_secs(90));
    let (wait_results, apply_results) = results.split_at(n_waits);

    let mut applied = 0;
    for (i, (out, _)) in apply_results.iter().enumerate() {
        out.assert_success();
        let json = out.json();
        match json["outcome"].as_str() {
            Some("applied") => {
                applied += 1;
                assert_eq!(versions(&json["applied"]), [1, 2, 3]);
            }
            Some("current") => assert_eq!(json["applied"], json!([])),
            other => panic!("apply {i}: outcome {other:?}\n{}", out.details()),
        }
    }
    assert_eq!(applied, 1);
    let mut slowest = Duration::ZERO;
    for (i, (out, ended)) in wait_results.iter().enumerate() {
        out.assert_success()
            .assert_stderr_contains("WAITING_FOR_SCHEMA pending=3 next=V1__create_effects")
            .assert_stderr_contains("SCHEMA_CURRENT version=V3__after applied=3");
        let json = out.json();
        assert_eq!(json["command"], "wait");
        assert_eq!(json["outcome"], "current", "wait {i}");
        assert_eq!(json["pending"], json!([]), "wait {i}");
        slowest = slowest.max(ended.duration_since(opened));
    }
    let status = command(&db, "status", &dir).arg("--check").run();
    status.assert_success();
    assert_eq!(status.json()["outcome"], "current");
    assert_eq!(db.history(), [1, 2, 3]);
    assert_eq!(effects(&db), once_each(1..=3));
    assert_quiet(&db, key);
    eprintln!(
        "FIGURE mixed roles: 40 apply + 20 wait + 20 status at once: status saw 1 holder and 59 waiters; \
         1 applied, 39 current, 20 wait returned 0 at most {} ms after the slow migration was let go",
        slowest.as_millis()
    );
}
