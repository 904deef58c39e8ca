//! The deployment integrations in `examples/`: the container entrypoint run
//! against a real PostgreSQL for every exit code it branches on, the
//! Compose, Kubernetes and GitHub Actions files parsed and then executed
//! the way their orchestrator would, the Dockerfile's structure, the
//! README's snippets of them, and the `completions` and `man` commands.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use yaml_rust2::{Yaml, YamlLoader};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{send_signal, wait_until, Miglock, MigrationDir, RunOutput, SETTLE};

const MIGLOCK: &str = env!("CARGO_BIN_EXE_miglock");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo_path(relative: &str) -> PathBuf {
    Path::new(REPO).join(relative)
}

#[track_caller]
fn read_repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn two_migrations() -> MigrationDir {
    let dir = MigrationDir::new();
    dir.file(
        "V1__create_accounts.sql",
        "CREATE TABLE accounts (id int PRIMARY KEY);\n",
    )
    .file(
        "V2__add_email.sql",
        "ALTER TABLE accounts ADD COLUMN email text;\n",
    );
    dir
}

/// A session holding the migration lock, as another replica mid-migration
/// would; dropping the client releases it.
fn hold_lock(db: &TestDb) -> postgres::Client {
    let mut holder = db.client();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({})", db.default_key()))
        .unwrap();
    holder
}

/// Sessions of this database whose `application_name` matches `pattern`.
fn sessions_like(db: &TestDb, pattern: &str) -> i64 {
    db.query_i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name LIKE '{pattern}'"
    ))
}

fn apply_now(db: &TestDb, dir: &Path) {
    Miglock::for_db(db)
        .args(["apply", "--migrations"])
        .arg(dir)
        .run()
        .assert_success();
}

/// A port nobody listens on: bound by us a moment ago, then released.
fn closed_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("probe a free port")
        .port()
}

/// Runs a command to completion and returns its output with the pid it had,
/// which is the pid of whatever it `exec`ed.
fn run_with_pid(m: &mut Miglock) -> (RunOutput, u32) {
    let child = m.spawn();
    let pid = child.id();
    (RunOutput::from_child(child), pid)
}

/// The application the entrypoint starts: it prints its pid and arguments
/// (an argument with a space must arrive intact) and leaves a marker file,
/// so a test can tell whether, and when, it ran.
struct App {
    dir: tempfile::TempDir,
}

impl App {
    const SCRIPT: &'static str = r#"printf 'APP_STARTED pid=%s' "$$"; printf ' [%s]' "$@"; echo; echo started > "$APP_MARKER""#;

    fn new() -> App {
        App {
            dir: tempfile::tempdir().expect("create app tempdir"),
        }
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("started")
    }

    fn command(&self, m: &mut Miglock) {
        m.env("APP_MARKER", self.marker()).args([
            "sh",
            "-c",
            Self::SCRIPT,
            "app",
            "--name",
            "two words",
        ]);
    }

    fn started(&self) -> bool {
        self.marker().exists()
    }

    /// Started by `exec`: the same pid as the entrypoint, so it gets the
    /// orchestrator's signals itself.
    #[track_caller]
    fn assert_started(&self, out: &RunOutput, entrypoint_pid: u32) {
        out.assert_stdout_contains(&format!(
            "APP_STARTED pid={entrypoint_pid} [--name] [two words]\n"
        ));
        assert!(self.started(), "no marker file");
    }

    #[track_caller]
    fn assert_not_started(&self, out: &RunOutput) {
        assert!(
            !out.stdout.contains("APP_STARTED") && !self.started(),
            "the app ran\n{out:?}"
        );
    }
}

/// `sh examples/entrypoint.sh` with the harness's clean environment and
/// password checks, the binary under test as MIGLOCK_BIN, and `dir` as the
/// migrations folder.
fn entrypoint(db: &TestDb, dir: &Path) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.program("sh")
        .arg(repo_path("examples/entrypoint.sh"))
        .env("MIGLOCK_BIN", MIGLOCK)
        .env("MIGLOCK_MIGRATIONS", dir);
    m
}

#[test]
fn entrypoint_is_posix_sh() {
    let script = repo_path("examples/entrypoint.sh");
    let mut shells = vec![vec!["sh", "-n"], vec!["bash", "--posix", "-n"]];
    if Path::new("/usr/bin/dash").exists() || Path::new("/bin/dash").exists() {
        shells.push(vec!["dash", "-n"]);
    }
    // Not required (often missing), but the strictest check there is.
    if Command::new("shellcheck").arg("--version").output().is_ok() {
        shells.push(vec!["shellcheck", "--shell=sh"]);
    }
    for shell in shells {
        let out = Command::new(shell[0])
            .args(&shell[1..])
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("run {shell:?}: {e}"));
        assert!(
            out.status.success(),
            "{shell:?} rejects the entrypoint:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = read_repo_file("examples/entrypoint.sh");
    assert!(text.starts_with("#!/bin/sh\n"));
    assert!(text.contains("\nset -eu\n"));
    assert!(text.contains("\nexec \"$@\"\n"));
}

#[test]
fn entrypoint_applies_then_execs_the_app() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    app.command(&mut m);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=2")
        .assert_stderr_contains("miglock-entrypoint: apply exited 0 (the schema is current)")
        .assert_stderr_contains("miglock-entrypoint: starting sh\n");
    app.assert_started(&out, pid);
    // Only the program is logged: arguments may hold secrets.
    assert!(!out.stderr.contains("two words"), "{}", out.stderr);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_starts_the_app_when_the_schema_is_current() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    apply_now(&db, dir.path());
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    app.command(&mut m);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT")
        .assert_stderr_contains("miglock-entrypoint: apply exited 0 (the schema is current)");
    assert!(!out.stderr.contains("MIGRATION_APPLIED"), "{}", out.stderr);
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_without_an_app_only_migrates() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let out = entrypoint(&db, dir.path()).run();
    out.assert_success()
        .assert_stderr_contains("miglock-entrypoint: no app command given: exit 0");
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_starts_without_waiting_when_the_lock_is_busy_by_default() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let _holder = hold_lock(&db);
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    m.env("MIGLOCK_WAIT", "0");
    app.command(&mut m);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("LOCK_BUSY")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 3 (skipped: another replica holds the lock); \
             MIGLOCK_ON_BUSY=start: starting without waiting",
        );
    app.assert_started(&out, pid);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "the holder never migrated, nor did we"
    );
}

#[test]
fn entrypoint_waits_for_the_schema_when_the_lock_is_busy_in_wait_mode() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let holder = hold_lock(&db);
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    m.env("MIGLOCK_WAIT", "0")
        .env("MIGLOCK_ON_BUSY", "wait")
        .env("MIGLOCK_WAIT_TIMEOUT", "60s");
    app.command(&mut m);
    let child = m.spawn();
    let pid = child.id();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 1);
    assert!(!app.started(), "the app started while the schema was old");
    // The holder finishes its work: it lets go, and the migrations land.
    drop(holder);
    apply_now(&db, dir.path());
    let out = RunOutput::from_child(child);
    out.assert_success()
        .assert_stderr_contains("MIGLOCK_ON_BUSY=wait: waiting for the schema")
        .assert_stderr_contains("WAITING_FOR_SCHEMA")
        .assert_stderr_contains("miglock-entrypoint: wait exited 0 (the schema is current)");
    assert!(!out.stderr.contains("MIGRATION_APPLIED"), "{}", out.stderr);
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2]);
}

#[test]
fn entrypoint_starts_at_once_when_migrations_are_disabled() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    m.env("RUN_MIGRATIONS", "0");
    app.command(&mut m);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("MIGRATIONS_DISABLED")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 4 (disabled: RUN_MIGRATIONS is off)\n",
        );
    app.assert_started(&out, pid);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "a disabled replica touches nothing"
    );
}

#[test]
fn entrypoint_waits_for_the_migrator_when_disabled_and_told_to() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    m.env("RUN_MIGRATIONS", "0")
        .env("MIGLOCK_WAIT_WHEN_DISABLED", "1")
        .env("MIGLOCK_WAIT_TIMEOUT", "60s");
    app.command(&mut m);
    let child = m.spawn();
    let pid = child.id();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 1);
    assert!(!app.started(), "the app started while the schema was old");
    apply_now(&db, dir.path());
    let out = RunOutput::from_child(child);
    out.assert_success()
        .assert_stderr_contains("MIGLOCK_WAIT_WHEN_DISABLED=1: waiting for the schema")
        .assert_stderr_contains("miglock-entrypoint: wait exited 0 (the schema is current)");
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2]);
}

/// A rolling deploy or a rollback: the newer image migrated to V5, and a
/// replica of the older one (files V1..V4) still has to start.
#[test]
fn entrypoint_starts_an_older_image_on_a_newer_schema() {
    let db = Cluster::shared().create_db();
    let new = crate::ahead::release(5);
    let out = entrypoint(&db, new.path()).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=5");
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);

    let old = crate::ahead::release(4);
    let app = App::new();
    let mut m = entrypoint(&db, old.path());
    app.command(&mut m);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("SCHEMA_AHEAD newest_local=V4 ahead=V5__add_d")
        .assert_stderr_contains("miglock-entrypoint: apply exited 0 (the schema is current)");
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);
}

/// The same for a replica that never migrates but waits for the schema.
#[test]
fn entrypoint_waiting_when_disabled_starts_an_older_image_on_a_newer_schema() {
    let db = crate::ahead::migrated_by_newer_release();
    let old = crate::ahead::release(4);
    let app = App::new();
    let mut m = entrypoint(&db, old.path());
    m.env("RUN_MIGRATIONS", "0")
        .env("MIGLOCK_WAIT_WHEN_DISABLED", "1")
        .env("MIGLOCK_WAIT_TIMEOUT", "60s");
    app.command(&mut m);
    let (out, pid) = run_with_pid(&mut m);
    out.assert_success()
        .assert_stderr_contains("MIGLOCK_WAIT_WHEN_DISABLED=1: waiting for the schema")
        .assert_stderr_contains("SCHEMA_AHEAD newest_local=V4 ahead=V5__add_d")
        .assert_stderr_contains("miglock-entrypoint: wait exited 0 (the schema is current)");
    app.assert_started(&out, pid);
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);
}

/// `--ahead reject` through the entrypoint: the older image does not start.
#[test]
fn entrypoint_refuses_a_newer_schema_with_ahead_reject() {
    let db = crate::ahead::migrated_by_newer_release();
    let old = crate::ahead::release(4);
    let app = App::new();
    let mut m = entrypoint(&db, old.path());
    m.env("MIGLOCK_AHEAD", "reject");
    app.command(&mut m);
    let out = m.run();
    out.assert_code(6)
        .assert_stderr_contains("newer than this image")
        .assert_stderr_contains("miglock-entrypoint: apply exited 6 (invalid");
    app.assert_not_started(&out);
}

#[test]
fn entrypoint_does_not_start_when_the_wait_times_out() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    m.env("RUN_MIGRATIONS", "0")
        .env("MIGLOCK_WAIT_WHEN_DISABLED", "1")
        .env("MIGLOCK_WAIT_TIMEOUT", "1s");
    app.command(&mut m);
    let out = m.run();
    out.assert_code(7).assert_stderr_contains(
        "miglock-entrypoint: wait exited 7 (pending: the schema is still not current at \
         MIGLOCK_WAIT_TIMEOUT): not starting the app; exit 7",
    );
    app.assert_not_started(&out);
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn entrypoint_exits_75_without_starting_when_the_database_is_unavailable() {
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let dir = two_migrations();
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    // The cluster's real password, so the harness checks it is never shown.
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/{}",
        cluster.password(),
        closed_port(),
        db.name()
    );
    m.env("DATABASE_URL", url)
        .env("MIGLOCK_CONNECT_TIMEOUT", "1s");
    app.command(&mut m);
    let out = m.run();
    out.assert_code(75)
        .assert_stderr_contains("CONNECT_RETRY")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 5 (unavailable: no database connection): \
             not starting the app; exit 75",
        );
    app.assert_not_started(&out);
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn entrypoint_does_not_start_after_a_failed_migration() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    dir.file(
        "V2__add_email.sql",
        "ALTER TABLE no_such_table ADD COLUMN email text;\n",
    );
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    app.command(&mut m);
    let out = m.run();
    out.assert_code(1)
        .assert_stderr_contains("MIGRATION_FAILED version=2")
        .assert_stderr_contains("miglock-entrypoint: apply exited 1 (failed: ")
        .assert_stderr_contains("not starting the app; exit 1");
    app.assert_not_started(&out);
    assert_eq!(db.history(), [1], "V1 committed, V2 rolled back");
}

#[test]
fn entrypoint_does_not_start_with_an_invalid_migration_set() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    dir.file(
        "V3-add_phone.sql",
        "ALTER TABLE accounts ADD COLUMN phone text;\n",
    );
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    app.command(&mut m);
    let out = m.run();
    out.assert_code(6)
        .assert_stderr_contains("V3-add_phone.sql")
        .assert_stderr_contains(
            "miglock-entrypoint: apply exited 6 (invalid: the migration set is unsafe to run): \
             not starting the app; exit 6",
        );
    app.assert_not_started(&out);
    assert_eq!(
        db.history(),
        Vec::<i64>::new(),
        "nothing runs from a bad set"
    );
}

#[test]
fn entrypoint_refuses_its_own_bad_settings_before_running_miglock() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    for (name, value) in [
        ("MIGLOCK_ON_BUSY", "wiat"),
        ("MIGLOCK_WAIT_WHEN_DISABLED", "maybe"),
    ] {
        let app = App::new();
        let mut m = entrypoint(&db, dir.path());
        m.env(name, value);
        app.command(&mut m);
        let out = m.run();
        out.assert_code(2)
            .assert_stderr_contains(&format!("miglock-entrypoint: {name} must be "))
            .assert_stderr_contains("not starting the app; exit 2");
        assert!(!out.stderr.contains("apply exited"), "{}", out.stderr);
        app.assert_not_started(&out);
    }
    assert_eq!(db.history(), Vec::<i64>::new());
}

#[test]
fn entrypoint_forwards_sigterm_to_miglock_and_does_not_start() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    let _holder = hold_lock(&db);
    let app = App::new();
    let mut m = entrypoint(&db, dir.path());
    m.env("MIGLOCK_WAIT", "60s");
    app.command(&mut m);
    let child = m.spawn();
    let pid = child.id();
    wait_until(SETTLE, || sessions_like(&db, "miglock apply waiting%") == 1);
    // To the shell only, as `docker stop` signals PID 1.
    // Exit 130, not 3: it was the signal, not the end of MIGLOCK_WAIT
    // (the lock stays held), that ended it.
    let sent = Instant::now();
    send_signal(pid, "TERM");
    let out = RunOutput::from_child(child);
    eprintln!("entrypoint SIGTERM: exited after {:?}", sent.elapsed());
    out.assert_code(130)
        .assert_stderr_contains("INTERRUPTED signal=SIGTERM")
        .assert_stderr_contains("miglock-entrypoint: apply exited 130 (interrupted)");
    app.assert_not_started(&out);
    assert_eq!(sessions_like(&db, "miglock apply%"), 0);
    assert_eq!(db.history(), Vec::<i64>::new());
}

// --- YAML --------------------------------------------------------------------

#[track_caller]
fn load_yaml(relative: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read_repo_file(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{relative}: one document");
    docs.remove(0)
}

#[track_caller]
fn as_str<'y>(value: &'y Yaml, what: &str) -> &'y str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {value:?}"))
}

#[track_caller]
fn as_vec<'y>(value: &'y Yaml, what: &str) -> &'y [Yaml] {
    value
        .as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {value:?}"))
}

#[track_caller]
fn strings(value: &Yaml, what: &str) -> Vec<String> {
    as_vec(value, what)
        .iter()
        .map(|item| as_str(item, what).to_string())
        .collect()
}

/// A Compose `environment:` mapping. Values must be strings or numbers:
/// Compose rejects a YAML boolean (`RUN_MIGRATIONS: no` would be one in
/// YAML 1.1 parsers), so a quoted string is the only safe spelling.
#[track_caller]
fn compose_env(service: &Yaml, what: &str) -> BTreeMap<String, String> {
    let env = service["environment"]
        .as_hash()
        .unwrap_or_else(|| panic!("{what}: environment must be a mapping"));
    env.iter()
        .map(|(key, value)| {
            let value = match value {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                other => panic!("{what}: {key:?} must be a string, got {other:?}"),
            };
            (as_str(key, what).to_string(), value)
        })
        .collect()
}

/// A Kubernetes container's `env:` list; entries with `valueFrom` map to None.
#[track_caller]
fn k8s_env(container: &Yaml, what: &str) -> BTreeMap<String, Option<String>> {
    as_vec(&container["env"], what)
        .iter()
        .map(|entry| {
            let name = as_str(&entry["name"], what).to_string();
            let value = entry["value"].as_str().map(str::to_string);
            assert!(
                value.is_some() || !entry["valueFrom"].is_badvalue(),
                "{what}: {name} has neither value nor valueFrom"
            );
            (name, value)
        })
        .collect()
}

/// The migrations folder the image holds, as found in this repository.
fn example_migrations() -> PathBuf {
    repo_path("migrations")
}

fn example_migration_versions() -> Vec<i64> {
    let mut versions: Vec<i64> = fs::read_dir(example_migrations())
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name[1..name.find("__").unwrap()].parse().unwrap()
        })
        .collect();
    versions.sort();
    versions
}

#[test]
fn compose_file_has_the_three_services_on_a_healthy_database() {
    let compose = load_yaml("examples/docker-compose.yml");
    let services = &compose["services"];
    let db = &services["db"];
    assert!(as_str(&db["image"], "db.image").starts_with("postgres:15"));
    let health = strings(&db["healthcheck"]["test"], "db.healthcheck.test");
    assert_eq!(health[0], "CMD-SHELL");
    assert!(health[1].contains("pg_isready"), "{health:?}");

    let expected = [
        ("api", "1", None),
        ("worker", "0", Some("1")),
        ("calls", "0", Some("1")),
    ];
    for (name, run_migrations, wait_when_disabled) in expected {
        let service = &services[name];
        let env = compose_env(service, name);
        assert_eq!(env["RUN_MIGRATIONS"], run_migrations, "{name}");
        assert_eq!(
            env.get("MIGLOCK_WAIT_WHEN_DISABLED").map(String::as_str),
            wait_when_disabled,
            "{name}"
        );
        assert!(env.contains_key("DATABASE_URL"), "{name}");
        assert_eq!(
            as_str(&service["depends_on"]["db"]["condition"], name),
            "service_healthy",
            "{name}: starts only once the database is up"
        );
        // The build context is relative to the compose file's folder.
        let context = repo_path("examples").join(as_str(&service["build"]["context"], name));
        let dockerfile = as_str(&service["build"]["dockerfile"], name);
        assert!(
            context.join(dockerfile).is_file(),
            "{name}: {dockerfile} not found in context {}",
            context.display()
        );
        assert!(!strings(&service["command"], name).is_empty(), "{name}");
    }
    assert_eq!(
        services.as_hash().unwrap().len(),
        4,
        "db, api, worker and calls"
    );
}

/// Runs the entrypoint the way a Compose service would: its environment
/// from the file, only the database and the migrations folder swapped for
/// the test's, and the test app as its command.
fn compose_service(compose: &Yaml, name: &str, db: &TestDb, app: &App) -> Miglock {
    let mut m = entrypoint(db, &example_migrations());
    for (key, value) in compose_env(&compose["services"][name], name) {
        if key != "DATABASE_URL" {
            m.env(key, value);
        }
    }
    app.command(&mut m);
    m
}

#[test]
fn compose_services_migrate_once_and_start_in_order_against_a_real_database() {
    let compose = load_yaml("examples/docker-compose.yml");
    let db = Cluster::shared().create_db();
    // worker and calls come up first, and must wait for api's migrations.
    let waiters: Vec<_> = ["worker", "calls"]
        .into_iter()
        .map(|name| {
            let app = App::new();
            let child = compose_service(&compose, name, &db, &app).spawn();
            (name, app, child)
        })
        .collect();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 2);
    assert!(waiters.iter().all(|(_, app, _)| !app.started()));
    // Two api replicas at once (`--scale api=2`): exactly one migrates.
    let api: Vec<_> = (0..2)
        .map(|_| {
            let app = App::new();
            let child = compose_service(&compose, "api", &db, &app).spawn();
            (app, child)
        })
        .collect();
    let mut migrated = 0;
    for (app, child) in api {
        let pid = child.id();
        let out = RunOutput::from_child(child);
        out.assert_success()
            .assert_stderr_contains("miglock-entrypoint: apply exited 0");
        app.assert_started(&out, pid);
        migrated += usize::from(out.stderr.contains("MIGRATION_APPLIED"));
    }
    assert_eq!(migrated, 1, "exactly one api replica migrates");
    for (name, app, child) in waiters {
        let pid = child.id();
        let out = RunOutput::from_child(child);
        out.assert_success()
            .assert_stderr_contains("MIGLOCK_WAIT_WHEN_DISABLED=1: waiting for the schema")
            .assert_stderr_contains("miglock-entrypoint: wait exited 0");
        assert!(!out.stderr.contains("MIGRATION_APPLIED"), "{name}");
        app.assert_started(&out, pid);
    }
    assert_eq!(db.history(), example_migration_versions());
}

/// A container's `command` + `args`, with `miglock` swapped for the binary
/// under test.
#[track_caller]
fn miglock_invocation(container: &Yaml, what: &str) -> Vec<String> {
    let mut argv = strings(&container["command"], what);
    argv.extend(strings(&container["args"], what));
    assert_eq!(argv[0], "miglock", "{what}: runs miglock itself");
    argv.remove(0);
    argv
}

#[test]
fn kubernetes_job_applies_once_and_the_deployment_waits_for_it() {
    let job = load_yaml("examples/kubernetes/migrate-job.yaml");
    let deployment = load_yaml("examples/kubernetes/deployment.yaml");
    let uid = dockerfile_uid();

    assert_eq!(as_str(&job["apiVersion"], "job"), "batch/v1");
    assert_eq!(as_str(&job["kind"], "job"), "Job");
    let spec = &job["spec"];
    for field in [
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        assert!(
            spec[field].as_i64().is_some_and(|n| n > 0),
            "job.spec.{field}"
        );
    }
    let pod = &spec["template"]["spec"];
    assert_eq!(as_str(&pod["restartPolicy"], "job"), "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    let containers = as_vec(&pod["containers"], "job containers");
    assert_eq!(containers.len(), 1);
    let migrate = &containers[0];
    let job_argv = miglock_invocation(migrate, "job");
    assert_eq!(job_argv[0], "apply");
    let secret = as_str(&migrate["envFrom"][0]["secretRef"]["name"], "job envFrom");
    assert_eq!(
        k8s_env(migrate, "job")["RUN_MIGRATIONS"].as_deref(),
        Some("1")
    );
    // Only failures that would fail again end the Job at once; 3 (busy) and
    // 5 (unavailable) must stay retryable.
    let rules = as_vec(&spec["podFailurePolicy"]["rules"], "podFailurePolicy");
    for rule in rules
        .iter()
        .filter(|r| r["action"].as_str() == Some("FailJob"))
    {
        let codes: Vec<i64> = as_vec(&rule["onExitCodes"]["values"], "onExitCodes")
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert!(!codes.contains(&3) && !codes.contains(&5), "{codes:?}");
        assert_eq!(
            as_str(&rule["onExitCodes"]["containerName"], "rule"),
            as_str(&migrate["name"], "container")
        );
    }

    assert_eq!(as_str(&deployment["apiVersion"], "deployment"), "apps/v1");
    assert_eq!(as_str(&deployment["kind"], "deployment"), "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    let inits = as_vec(&pod["initContainers"], "initContainers");
    assert_eq!(inits.len(), 1);
    let wait_argv = miglock_invocation(&inits[0], "initContainer");
    assert_eq!(wait_argv, ["wait", "--timeout", "5m"]);
    let app = &as_vec(&pod["containers"], "containers")[0];
    // No `command`: the image's ENTRYPOINT (the entrypoint script) runs and
    // starts the app without migrating, the initContainer having waited.
    assert!(
        app["command"].is_badvalue(),
        "app.command overrides the entrypoint"
    );
    assert!(!strings(&app["args"], "app.args").is_empty());
    assert_eq!(k8s_env(app, "app")["RUN_MIGRATIONS"].as_deref(), Some("0"));
    for container in inits.iter().chain([app]) {
        assert_eq!(
            as_str(&container["envFrom"][0]["secretRef"]["name"], "envFrom"),
            secret,
            "one Secret for the Job and the Deployment"
        );
        assert_eq!(container["image"], migrate["image"], "one release");
    }

    // Run them as the cluster would, against a real database: a new pod's
    // initContainer blocks, the Job migrates, the initContainer returns.
    let db = Cluster::shared().create_db();
    let run = |argv: &[String], env: BTreeMap<String, Option<String>>| {
        let mut m = Miglock::for_db(&db);
        m.args(argv).env("MIGLOCK_MIGRATIONS", example_migrations());
        for (key, value) in env {
            if let Some(value) = value {
                m.env(key, value);
            }
        }
        m
    };
    let init = run(&wait_argv, k8s_env(&inits[0], "initContainer")).spawn();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 1);
    let out = run(&job_argv, k8s_env(migrate, "job")).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED");
    RunOutput::from_child(init)
        .assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");
    assert_eq!(db.history(), example_migration_versions());
}

/// The `run:` script of the workflow's step that calls miglock.
fn workflow_apply_step(workflow: &Yaml) -> &Yaml {
    as_vec(&workflow["jobs"]["migrate"]["steps"], "steps")
        .iter()
        .find(|step| {
            step["run"]
                .as_str()
                .is_some_and(|run| run.contains("miglock apply"))
        })
        .expect("a step runs miglock apply")
}

#[test]
fn github_actions_workflow_migrates_a_postgres_service_container() {
    let workflow = load_yaml("examples/github-actions/migrate.yml");
    let job = &workflow["jobs"]["migrate"];
    let postgres = &job["services"]["postgres"];
    assert_eq!(as_str(&postgres["image"], "service"), "postgres:15");
    let options = as_str(&postgres["options"], "service options");
    for option in ["--health-cmd", "--health-interval", "--health-retries"] {
        assert!(options.contains(option), "{options}");
    }
    let port = strings(&postgres["ports"], "ports")[0].clone();
    let url = as_str(&job["env"]["DATABASE_URL"], "DATABASE_URL");
    assert!(
        url.contains(&format!("@localhost:{}/", port.split(':').next().unwrap())),
        "{url} does not reach the service's port {port}"
    );

    let step = workflow_apply_step(&workflow);
    assert_eq!(as_str(&step["shell"], "shell"), "bash");
    let script = as_str(&step["run"], "run");
    assert!(script.contains("miglock apply --format json"));
    assert!(script.contains("$GITHUB_STEP_SUMMARY"));
    // Expressions belong in `env:`: spliced into a script they are a
    // command-injection risk, and the script could not be run here.
    assert!(!script.contains("${{"), "{script}");
}

/// Runs the workflow step's script under bash as the runner would: miglock
/// on PATH, the job's environment with the test's database, and the files
/// GitHub provides for the summary and the step outputs.
fn run_workflow_step(db: &TestDb, migrations: &Path) -> (RunOutput, String, String) {
    let workflow = load_yaml("examples/github-actions/migrate.yml");
    let script = as_str(&workflow_apply_step(&workflow)["run"], "run").to_string();
    let work = tempfile::tempdir().unwrap();
    let summary = work.path().join("summary.md");
    let outputs = work.path().join("outputs");
    let bin_dir = Path::new(MIGLOCK).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut m = Miglock::for_db(db);
    m.program("bash")
        .args([
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            script.as_str(),
        ])
        .current_dir(work.path())
        .env("PATH", path)
        .env("MIGLOCK_MIGRATIONS", migrations)
        .env("MIGLOCK_INSTANCE", "ci-test")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", &outputs);
    let out = m.run();
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    (out, read(&summary), read(&outputs))
}

#[test]
fn github_actions_step_summarises_and_fails_with_miglock() {
    // The step's summary is made with jq, which GitHub's runners have. A
    // machine without it fails here rather than passing untested.
    match Command::new("jq").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "jq --version failed ({}): this test runs the workflow step, which needs a working jq\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "jq is not installed ({e}): this test runs the GitHub Actions step, which needs jq; \
             install it (Debian: apt-get install jq)"
        ),
    }
    let db = Cluster::shared().create_db();
    let (out, summary, outputs) = run_workflow_step(&db, &example_migrations());
    out.assert_success();
    assert!(
        summary.starts_with("### miglock apply: applied (exit 0)\n"),
        "{summary}"
    );
    assert!(summary.contains("| 1 | create_accounts |"), "{summary}");
    assert_eq!(outputs, "outcome=applied\n");
    assert_eq!(db.history(), example_migration_versions());

    let dir = two_migrations();
    dir.file("V3__broken.sql", "SELECT * FROM no_such_table;\n");
    let db = Cluster::shared().create_db();
    let (out, summary, outputs) = run_workflow_step(&db, dir.path());
    out.assert_code(1);
    assert!(
        summary.starts_with("### miglock apply: failed (exit 1)\n"),
        "{summary}"
    );
    assert!(summary.contains("| 2 | add_email |"), "{summary}");
    assert!(summary.contains("**Error:** "), "{summary}");
    assert!(summary.contains("(SQLSTATE 42P01)"), "{summary}");
    assert_eq!(outputs, "outcome=failed\n");
}

// --- Dockerfile ----------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined, comments and
/// parser directives dropped: `(INSTRUCTION, arguments)`.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read_repo_file("examples/Dockerfile");
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (word, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
                instructions.push((word.to_uppercase(), rest.trim().to_string()));
                pending.clear();
            }
        }
    }
    instructions
}

/// The runtime stage's user id, which the Kubernetes files must match.
fn dockerfile_uid() -> i64 {
    let (_, user) = dockerfile_instructions()
        .into_iter()
        .rfind(|(word, _)| word == "USER")
        .expect("a USER instruction");
    user.split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: numeric, so that runAsNonRoot can check it"))
}

#[test]
fn dockerfile_builds_a_small_non_root_image_with_the_entrypoint() {
    let instructions = dockerfile_instructions();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(word, _)| word == "FROM")
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(
        stages[0].starts_with("rust:1-bookworm AS builder"),
        "{stages:?}"
    );
    assert!(stages[1].starts_with("debian:bookworm-slim"), "{stages:?}");
    let runtime_start = instructions
        .iter()
        .rposition(|(word, _)| word == "FROM")
        .unwrap();
    let (builder, runtime) = instructions.split_at(runtime_start);
    assert!(builder
        .iter()
        .any(|(word, rest)| word == "RUN" && rest.contains("cargo build --release --locked")));

    let copies: Vec<Vec<&str>> = runtime
        .iter()
        .filter(|(word, _)| word == "COPY")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .collect();
    let copy_to = |source: &str| -> String {
        let copy = copies
            .iter()
            .find(|words| words.contains(&source))
            .unwrap_or_else(|| panic!("no COPY of {source}: {copies:?}"));
        copy.last().unwrap().to_string()
    };
    assert_eq!(copy_to("--from=builder"), "/usr/local/bin/miglock");
    let entrypoint = copy_to("examples/entrypoint.sh");
    let migrations = copy_to("migrations");
    // Every source copied from the build context exists in this repository.
    for (word, rest) in &instructions {
        if word == "COPY" && !rest.contains("--from=") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            for source in &words[..words.len() - 1] {
                assert!(
                    repo_path(source).exists(),
                    "COPY {source}: not in the repository"
                );
            }
        }
    }

    let last = |name: &str| {
        runtime
            .iter()
            .rfind(|(word, _)| word == name)
            .map(|(_, rest)| rest.clone())
            .unwrap_or_else(|| panic!("no {name} in the runtime stage"))
    };
    assert_eq!(
        last("ENTRYPOINT"),
        format!("[\"{entrypoint}\"]"),
        "exec form"
    );
    assert_eq!(last("ENV"), format!("MIGLOCK_MIGRATIONS={migrations}"));
    let uid = dockerfile_uid();
    assert!(uid > 0, "USER must not be root");
    assert!(last("USER").starts_with(&uid.to_string()));
    // The ignore file that keeps target/ out of the repository-wide context.
    let ignore = read_repo_file("examples/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|line| line.trim() == "target"));
}

// --- README ------------------------------------------------------------------

/// Every fenced block of the README whose first line names an example file
/// (`# examples/...`) must be a verbatim excerpt of that file.
#[test]
fn readme_snippets_match_the_example_files() {
    let readme = read_repo_file("README.md");
    let mut checked = BTreeMap::new();
    let mut blocks = readme.split("\n```").skip(1).step_by(2);
    for block in &mut blocks {
        let body = block.split_once('\n').map_or("", |(_, body)| body);
        let Some((first, excerpt)) = body.split_once('\n') else {
            continue;
        };
        let Some(file) = first
            .strip_prefix("# ")
            .filter(|f| f.starts_with("examples/"))
        else {
            continue;
        };
        let contents = read_repo_file(file);
        assert!(
            contents.contains(excerpt),
            "README's excerpt of {file} is not in the file:\n{excerpt}"
        );
        *checked.entry(file.to_string()).or_insert(0) += 1;
    }
    for file in [
        "examples/Dockerfile",
        "examples/docker-compose.yml",
        "examples/kubernetes/migrate-job.yaml",
        "examples/kubernetes/deployment.yaml",
        "examples/github-actions/migrate.yml",
    ] {
        assert!(
            checked.contains_key(file),
            "README has no excerpt of {file}: {checked:?}"
        );
    }
}

// --- completions and man -----------------------------------------------------

const SUBCOMMANDS: [&str; 6] = ["apply", "status", "wait", "unlock", "completions", "man"];

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Miglock::new().args(["completions", shell]).run();
        out.assert_success();
        for word in SUBCOMMANDS {
            out.assert_stdout_contains(word);
        }
        out.assert_stdout_contains("database-url");
        assert!(out.stderr.is_empty(), "{shell}: {}", out.stderr);
    }
    // The bash script must at least parse in bash.
    let script = Miglock::new().args(["completions", "bash"]).run().stdout;
    let check = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    Miglock::new()
        .args(["completions", "tcsh"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("invalid value 'tcsh'")
        .assert_stderr_contains("bash");
    Miglock::new().arg("completions").run().assert_code(2);
}

#[test]
fn man_page_documents_every_subcommand_and_the_exit_codes() {
    let out = Miglock::new().arg("man").run();
    out.assert_success();
    let page = &out.stdout;
    // clap_mangen opens with a string definition, then the title.
    let first_macro = page
        .lines()
        .find(|line| line.starts_with(".TH") || line.starts_with(".SH"))
        .unwrap();
    assert!(first_macro.starts_with(".TH miglock 1"), "{first_macro}");
    for sub in SUBCOMMANDS {
        let heading = format!(".SH \"MIGLOCK {}\"", sub.to_uppercase());
        assert!(page.contains(&heading), "no {heading}");
    }
    let exit_status = &page[page.find(".SH \"EXIT STATUS\"").expect("EXIT STATUS")..];
    for code in [0, 1, 2, 3, 4, 5, 6, 7, 130] {
        assert!(
            exit_status.contains(&format!("\\fB{code}\\fR\n")),
            "exit code {code} missing"
        );
    }
    // Renders without warnings where groff is installed; -k runs preconv, as
    // man(1) does, for the UTF-8 in the help texts.
    if let Ok(mut groff) = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let rendered = groff.wait_with_output().unwrap();
        assert!(
            rendered.status.success() && rendered.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
}
