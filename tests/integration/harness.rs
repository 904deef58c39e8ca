//! Running the miglock binary from tests: migration directories and the
//! sets most tests apply, a command builder with a clean environment,
//! checks on what the binary printed, and the one polling loop.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::{self, known_passwords, Cluster, TestDb};
use crate::probes::LockGate;

/// How long one run of the binary may take before the harness kills it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A temporary directory of migration files, removed on drop.
pub struct MigrationDir {
    dir: tempfile::TempDir,
}

impl MigrationDir {
    pub fn new() -> MigrationDir {
        let dir = tempfile::Builder::new()
            .prefix("miglock-migrations-")
            .tempdir()
            .expect("create migration tempdir");
        MigrationDir { dir }
    }

    /// A folder holding `files`, each `(name, SQL)` as [`MigrationDir::file`]
    /// writes it.
    pub fn with(files: &[(&str, &str)]) -> MigrationDir {
        let dir = MigrationDir::new();
        for (name, sql) in files {
            dir.file(name, sql);
        }
        dir
    }

    /// Writes (or overwrites) `name`, which may contain `/` to put the file
    /// in a subdirectory; missing directories are created.
    pub fn file(&self, name: &str, contents: &str) -> &Self {
        self.bytes(name, contents.as_bytes())
    }

    /// Like [`MigrationDir::file`] with arbitrary bytes (invalid UTF-8, BOMs,
    /// CRLF line ends).
    pub fn bytes(&self, name: &str, contents: &[u8]) -> &Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self
    }

    pub fn remove(&self, name: &str) -> &Self {
        let path = self.dir.path().join(name);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        self
    }

    /// Creates an (empty) subdirectory and returns its path.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        path
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for MigrationDir {
    fn default() -> Self {
        MigrationDir::new()
    }
}

// ---------------------------------------------------------------------------
// The migration sets tests share
// ---------------------------------------------------------------------------

/// `V1__create_t` makes table `t`, `V2__add_note` adds its column `note`.
pub const CREATE_T_ADD_NOTE: [(&str, &str); 2] = [
    ("V1__create_t.sql", "CREATE TABLE t (id int);\n"),
    ("V2__add_note.sql", "ALTER TABLE t ADD COLUMN note text;\n"),
];

/// The plain set most tests apply: [`CREATE_T_ADD_NOTE`].
pub fn two_migrations() -> MigrationDir {
    MigrationDir::with(&CREATE_T_ADD_NOTE)
}

/// V1 of the sets whose migrations count their runs: the table each
/// migration records its version in (with the backend that ran it, and
/// when), and V1's own row. [`crate::probes::effects`] reads it back.
pub const EFFECTS: &str = concat!(
    "CREATE TABLE effects (version int NOT NULL, pid int NOT NULL DEFAULT pg_backend_pid(), \
     at timestamptz NOT NULL DEFAULT clock_timestamp());\n",
    "INSERT INTO effects (version) VALUES (1);\n",
);

/// `V1__create_effects` ([`EFFECTS`]), `V2__create_users` (table
/// `users`), `V3__add_email` (`users.email`): each leaves a row in
/// `effects` that tells how often it ran.
pub fn three_migrations() -> MigrationDir {
    MigrationDir::with(&[
        ("V1__create_effects.sql", EFFECTS),
        (
            "V2__create_users.sql",
            "CREATE TABLE users (id int PRIMARY KEY);\nINSERT INTO effects (version) VALUES (2);\n",
        ),
        (
            "V3__add_email.sql",
            "ALTER TABLE users ADD COLUMN email text;\nINSERT INTO effects (version) VALUES (3);\n",
        ),
    ])
}

/// `V1__create_effects` ([`EFFECTS`]), `V2__gated` (creates table `v2`,
/// records its effect, then waits for the [`LockGate`]: it stays running
/// until the test opens the gate), `V3__after`. Each records its run in
/// `effects`.
pub fn gated_migrations() -> MigrationDir {
    MigrationDir::with(&[
        ("V1__create_effects.sql", EFFECTS),
        (
            "V2__gated.sql",
            &format!(
                "CREATE TABLE v2 (id int);\nINSERT INTO effects (version) VALUES (2);\n{}\n",
                LockGate::SQL
            ),
        ),
        (
            "V3__after.sql",
            "INSERT INTO effects (version) VALUES (3);\n",
        ),
    ])
}

/// Five releases' migrations: V1 makes table `t`, each later one adds a
/// column.
const RELEASES: [(&str, &str); 5] = [
    ("V1__create_t.sql", "CREATE TABLE t (id int);\n"),
    ("V2__add_a.sql", "ALTER TABLE t ADD COLUMN a text;\n"),
    ("V3__add_b.sql", "ALTER TABLE t ADD COLUMN b text;\n"),
    ("V4__add_c.sql", "ALTER TABLE t ADD COLUMN c text;\n"),
    ("V5__add_d.sql", "ALTER TABLE t ADD COLUMN d text;\n"),
];

/// The first `n` migrations of five, as the image of one release holds
/// them: a rolling deploy or a rollback runs an older release (fewer
/// files) against a database a newer one migrated.
pub fn release(n: usize) -> MigrationDir {
    MigrationDir::with(&RELEASES[..n])
}

/// A database of the shared cluster that the newest release (V1..V5) has
/// migrated.
#[track_caller]
pub fn migrated_by_newer_release() -> TestDb<'static> {
    let db = Cluster::shared().create_db();
    apply(&db, &release(5)).run().assert_success();
    assert_eq!(db.history(), [1, 2, 3, 4, 5]);
    db
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// `miglock COMMAND --format json --migrations DIR` against the database:
/// add more arguments after (every option may follow the folder).
pub fn command(db: &TestDb, name: &str, dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::for_db(db);
    m.args([name, "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

/// `miglock apply --format json --migrations DIR` against the database.
pub fn apply(db: &TestDb, dir: &MigrationDir) -> Miglock {
    command(db, "apply", dir)
}

/// Builder for one run of the miglock binary. The environment is cleared:
/// the child sees only PATH, HOME, `NO_COLOR=1`, `LANG=C.UTF-8` and whatever
/// the test sets.
pub struct Miglock {
    program: PathBuf,
    args: Vec<OsString>,
    /// In order; a later entry for the same key wins, `None` removes.
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    current_dir: Option<PathBuf>,
    timeout: Duration,
}

impl Miglock {
    /// The binary with no database configured.
    pub fn new() -> Miglock {
        Miglock {
            program: PathBuf::from(env!("CARGO_BIN_EXE_miglock")),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            stdout: None,
            current_dir: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The binary with `DATABASE_URL` set to the database's TCP URL (an env
    /// variable rather than an option, so argument order does not matter).
    pub fn for_db(db: &TestDb) -> Miglock {
        let mut m = Miglock::new();
        m.env("DATABASE_URL", db.url());
        m
    }

    /// Runs another program with the same environment and checks; for
    /// testing the harness itself.
    pub fn program(&mut self, program: impl AsRef<Path>) -> &mut Self {
        self.program = program.as_ref().to_path_buf();
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Stdin for the next run or spawn only (`Stdio` cannot be reused);
    /// null by default.
    pub fn stdin(&mut self, stdin: Stdio) -> &mut Self {
        self.stdin = Some(stdin);
        self
    }

    /// Stdout for the next run or spawn only; piped (and collected) by
    /// default.
    pub fn stdout(&mut self, stdout: Stdio) -> &mut Self {
        self.stdout = Some(stdout);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Overrides [`DEFAULT_TIMEOUT`] for `run`.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    fn command(&mut self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).env_clear();
        cmd.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        );
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd.env("NO_COLOR", "1").env("LANG", "C.UTF-8");
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(self.stdin.take().unwrap_or_else(Stdio::null))
            .stdout(self.stdout.take().unwrap_or_else(Stdio::piped))
            .stderr(Stdio::piped());
        cmd
    }

    fn describe(&self) -> String {
        let mut text = self.program.display().to_string();
        for arg in &self.args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }

    /// Starts the binary with stdout and stderr piped; collect the result
    /// with [`RunOutput::from_child`] so the secret check applies.
    pub fn spawn(&mut self) -> Child {
        let description = self.describe();
        self.command()
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {description}: {e}"))
    }

    /// Runs the binary to completion (killing it and panicking after the
    /// timeout) and checks that its output leaks no cluster password.
    #[track_caller]
    pub fn run(&mut self) -> RunOutput {
        let description = self.describe();
        let child = self.spawn();
        collect(child, self.timeout, &description)
    }
}

impl Default for Miglock {
    fn default() -> Self {
        Miglock::new()
    }
}

/// What a finished run printed and how it ended.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The exit code, or minus the signal number if a signal killed it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Panics if the output contains the password of any cluster started by
    /// this process, so every test doubles as a secret-leak test.
    #[track_caller]
    pub fn new(code: i32, stdout: String, stderr: String) -> RunOutput {
        let output = RunOutput {
            code,
            stdout,
            stderr,
        };
        for password in known_passwords() {
            for (stream, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
                assert!(
                    !text.contains(&password),
                    "SECRET LEAK: a database password appeared on {stream}\n{}",
                    output.details()
                );
            }
        }
        output
    }

    /// Waits (at most [`DEFAULT_TIMEOUT`]) for a spawned child and collects
    /// its output, with the same secret check as [`Miglock::run`].
    #[track_caller]
    pub fn from_child(child: Child) -> RunOutput {
        collect(child, DEFAULT_TIMEOUT, "spawned child")
    }

    /// Stdout parsed as one JSON object.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str::<serde_json::Value>(&self.stdout) {
            Ok(value) if value.is_object() => value,
            Ok(_) => panic!("stdout is JSON but not an object\n{}", self.details()),
            Err(e) => panic!("stdout is not one JSON object: {e}\n{}", self.details()),
        }
    }

    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert!(
            self.code == expected,
            "expected exit code {expected}, got {}\n{}",
            self.code,
            self.details()
        );
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout does not contain {needle:?}\n{}",
            self.details()
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}\n{}",
            self.details()
        );
        self
    }

    /// Exit code, stdout and stderr, for assertion messages.
    pub fn details(&self) -> String {
        format!(
            "exit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.code, self.stdout, self.stderr
        )
    }
}

#[track_caller]
fn collect(mut child: Child, timeout: Duration, description: &str) -> RunOutput {
    // Both pipes are drained concurrently: a child blocked writing a full
    // stderr pipe would otherwise never exit while we wait on stdout.
    let stdout = child.stdout.take().map(read_in_thread);
    let stderr = child.stderr.take().map(read_in_thread);
    collect_from(child, stdout, stderr, timeout, description)
}

#[track_caller]
fn collect_from(
    mut child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    timeout: Duration,
    description: &str,
) -> RunOutput {
    let join = |reader: Option<thread::JoinHandle<String>>| {
        reader.map_or_else(String::new, |r| r.join().expect("output reader panicked"))
    };

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait for killed child");
            let output = RunOutput::new(exit_code(status), join(stdout), join(stderr));
            panic!(
                "{description} ran longer than {timeout:?} and was killed\n{}",
                output.details()
            );
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    RunOutput::new(exit_code(status), join(stdout), join(stderr))
}

fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => -signal,
        (None, None) => unreachable!("a finished process has a code or a signal"),
    }
}

fn read_in_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A generous bound for waiting on a state the test has set up (a session
/// showing in `pg_stat_activity`, a token on stderr): long enough for a
/// loaded 2-core machine, and only reached when something is wrong.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Polls `condition` every 20 ms until it holds; panics (at the caller's
/// line) if it does not within `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) {
    wait_for("condition", timeout, condition)
}

/// Like [`wait_until`], naming what was awaited in the panic message:
/// `wait_for("the waiter to show as waiting", SETTLE, || …)`. Use it, and
/// not a sleep, whenever a test must know that something has happened.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    if poll(timeout, || condition().then_some(())).is_none() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Calls `look` every 20 ms until it gives `Some` or `timeout` passes
/// (`None`). Every wait for a condition goes through it (or through
/// [`poll_every`], where a measurement needs a finer step).
pub fn poll<T>(timeout: Duration, look: impl FnMut() -> Option<T>) -> Option<T> {
    poll_every(Duration::from_millis(20), timeout, look)
}

/// The one polling loop of the suite: calls `look` every `step` until it
/// gives `Some` or `timeout` passes (`None`).
pub fn poll_every<T>(
    step: Duration,
    timeout: Duration,
    mut look: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = look() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(step);
    }
}

/// A spawned binary whose stderr can be read while it runs, so a test can
/// wait for a log token instead of sleeping. Stdout is collected at the end.
pub struct Watched {
    child: Child,
    description: String,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    stderr_so_far: Arc<Mutex<Vec<u8>>>,
}

impl Miglock {
    /// Like [`Miglock::spawn`], with stderr readable while the child runs.
    pub fn spawn_watched(&mut self) -> Watched {
        let description = self.describe();
        let mut child = self.spawn();
        let stdout = child.stdout.take().map(read_in_thread);
        let stderr_so_far = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().map(|mut pipe| {
            let sink = Arc::clone(&stderr_so_far);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sink
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&buf[..n]),
                    }
                }
                let bytes = sink.lock().unwrap_or_else(|e| e.into_inner());
                String::from_utf8_lossy(&bytes).into_owned()
            })
        });
        Watched {
            child,
            description,
            stdout,
            stderr,
            stderr_so_far,
        }
    }
}

impl Watched {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the child has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        let bytes = self.stderr_so_far.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until stderr contains `needle`; panics with what it does
    /// contain if it does not within `timeout` or the child exits first.
    #[track_caller]
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let found = poll(timeout, || {
            if self.stderr_so_far().contains(needle) {
                return Some(());
            }
            let status = self.child.try_wait().expect("poll child")?;
            // Its last words may still be in the pipe: the reader ends at
            // EOF, which comes now that the child has exited.
            if let Some(reader) = self.stderr.take() {
                let all = reader.join().expect("stderr reader panicked");
                self.stderr = Some(thread::spawn(move || all));
            }
            if self.stderr_so_far().contains(needle) {
                return Some(());
            }
            panic!(
                "{} exited ({status}) without printing {needle:?} on stderr\n--- stderr ---\n{}",
                self.description,
                self.stderr_so_far()
            );
        });
        if found.is_none() {
            panic!(
                "{} printed no {needle:?} on stderr within {timeout:?}\n--- stderr so far ---\n{}",
                self.description,
                self.stderr_so_far()
            );
        }
    }

    /// Waits (at most [`DEFAULT_TIMEOUT`]) for the child and collects its
    /// output, with the same secret check as [`Miglock::run`].
    #[track_caller]
    pub fn finish(self) -> RunOutput {
        collect_from(
            self.child,
            self.stdout,
            self.stderr,
            DEFAULT_TIMEOUT,
            &self.description,
        )
    }
}

/// The `version` of each entry of a JSON list (`applied`, `pending`).
pub fn versions(list: &serde_json::Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|m| m["version"].as_i64().unwrap())
        .collect()
}

/// Sends `signal` (`TERM`, `INT`, `KILL`…) to a process.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Waits for every child, noting when each ended (polled every 5 ms, so
/// the times are fit to report), then collects the output of each with the
/// harness's secret check. Children must not print more than a pipe holds
/// (64 KiB) before they end.
#[track_caller]
pub fn finish_all(children: Vec<Child>, timeout: Duration) -> Vec<(RunOutput, Instant)> {
    let mut children: Vec<(Child, Option<Instant>)> =
        children.into_iter().map(|c| (c, None)).collect();
    let all_ended = poll_every(Duration::from_millis(5), timeout, || {
        for (child, ended) in children.iter_mut().filter(|(_, e)| e.is_none()) {
            if child.try_wait().expect("wait for a child").is_some() {
                *ended = Some(Instant::now());
            }
        }
        children.iter().all(|(_, e)| e.is_some()).then_some(())
    });
    if all_ended.is_none() {
        let running = children.iter().filter(|(_, e)| e.is_none()).count();
        for (child, _) in children.iter_mut() {
            let _ = child.kill();
        }
        panic!("{running} processes still running after {timeout:?}");
    }
    children
        .into_iter()
        .map(|(child, ended)| (RunOutput::from_child(child), ended.unwrap()))
        .collect()
}

/// A port of 127.0.0.1 nothing listens on: free a moment ago, and never
/// handed to a cluster of this process.
pub fn closed_port() -> u16 {
    cluster::reserve_port()
}
