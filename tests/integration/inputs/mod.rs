//! Every bad input, command by command: migration files and folders,
//! command-line flags and environment variables, `--set`, connection
//! strings and the libpq environment, and secrets in all of them. Each
//! gets a clear message and its documented exit code, nothing is
//! half-applied, and nothing panics.
//!
//! Most cases run against a real database holding a migration that *would*
//! apply if the input were wrongly accepted, so "nothing was applied" is a
//! check that can fail, not a formality.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{Miglock, MigrationDir, RunOutput, CREATE_T_ADD_NOTE};

mod all_at_once;
mod connection;
mod files;
mod first_day;
mod history;
mod permissions;
mod secrets;
mod settings;
mod usage;

const HISTORY: &str = "refinery_schema_history";

/// A well-formed migration placed beside the bad ones: if it ever runs, the
/// bad input was not refused before the database was touched.
const GOOD_FILE: &str = "V100__good.sql";
const GOOD_SQL: &str = "CREATE TABLE good_side_effect (id int);";
const GOOD_TABLE: &str = "good_side_effect";

/// The history rows, or `None` when the table does not exist. Compared as a
/// whole (applied_on and checksum included) so that a rewritten row counts
/// as a change.
type History = Option<Vec<Vec<Option<String>>>>;

fn history_rows(db: &TestDb) -> History {
    db.table_exists(HISTORY).then(|| {
        db.query_strings(&format!(
            "SELECT version, name, applied_on, checksum FROM {HISTORY} ORDER BY version"
        ))
    })
}

/// Exit code, no panic, and every needle on stderr.
#[track_caller]
fn assert_run(case: &str, out: &RunOutput, code: i32, needles: &[&str]) {
    assert_eq!(
        out.code,
        code,
        "[{case}] expected exit code {code}\n{}",
        out.details()
    );
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains("panicked"),
            "[{case}] panic on {stream}\n{}",
            out.details()
        );
    }
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "[{case}] stderr does not contain {needle:?}\n{}",
            out.details()
        );
    }
}

/// The JSON result: outcome word, exit code, and every needle in
/// `error.message`. Returns the object for further checks.
#[track_caller]
fn assert_json(case: &str, out: &RunOutput, code: i32, outcome: &str, needles: &[&str]) -> Value {
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "[{case}] stdout is not one JSON object: {e}\n{}",
            out.details()
        )
    });
    assert_eq!(
        json["command"],
        "apply",
        "[{case}] command\n{}",
        out.details()
    );
    assert_eq!(
        json["outcome"],
        outcome,
        "[{case}] outcome\n{}",
        out.details()
    );
    assert_eq!(
        json["exit_code"],
        code,
        "[{case}] exit_code\n{}",
        out.details()
    );
    let message = json["error"]["message"].as_str().unwrap_or_else(|| {
        panic!(
            "[{case}] error.message missing from the JSON result\n{}",
            out.details()
        )
    });
    for needle in needles {
        assert!(
            message.contains(needle),
            "[{case}] error.message does not contain {needle:?}\n{}",
            out.details()
        );
    }
    json
}

/// A problem of `kind` about the file ending in `file` (or, for a missing
/// file, about `version`) is listed in the JSON `problems`.
#[track_caller]
fn assert_problem(case: &str, json: &Value, kind: &str, file: Option<&str>, version: Option<i64>) {
    let problems = json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("[{case}] no `problems` list in {json:#}"));
    let found = problems.iter().any(|p| {
        p["kind"] == kind
            && file.is_none_or(|f| p["file"].as_str().is_some_and(|pf| pf.ends_with(f)))
            && version.is_none_or(|v| p["version"] == v)
    });
    assert!(
        found,
        "[{case}] no problem of kind {kind:?} for file {file:?} version {version:?} in {problems:#?}"
    );
}

/// Runs the command as configured, then once more with `--format json`
/// appended (every option may follow the subcommand).
fn run_text_and_json(m: &mut Miglock) -> (RunOutput, RunOutput) {
    let text = m.run();
    let json = m.args(["--format", "json"]).run();
    (text, json)
}

/// Nothing was applied: no history table and no side effect of the good file.
#[track_caller]
fn assert_untouched(case: &str, db: &TestDb) {
    assert_eq!(
        history_rows(db),
        None,
        "[{case}] the history table was created"
    );
    assert!(
        !db.table_exists(GOOD_TABLE),
        "[{case}] the good migration was applied"
    );
}

/// A folder holding only the good migration.
fn good_dir() -> MigrationDir {
    MigrationDir::with(&[(GOOD_FILE, GOOD_SQL)])
}

/// A database with a table `y` (the target of the injection attempts,
/// one row) and a table `users` (one row, id 7), which bad inputs must
/// leave as they are.
fn bad_input_db() -> TestDb<'static> {
    let db = Cluster::shared().create_db();
    db.client()
        .batch_execute(
            "CREATE TABLE y (id int); INSERT INTO y VALUES (1); \
             CREATE TABLE users (id int); INSERT INTO users VALUES (7);",
        )
        .unwrap();
    db
}

/// [`bad_input_db`], and a folder whose migration would apply if the bad
/// input were accepted ([`good_dir`]).
fn usage_setup() -> (TestDb<'static>, MigrationDir) {
    (bad_input_db(), good_dir())
}

/// [`assert_untouched`], and the tables of [`bad_input_db`] as they were.
#[track_caller]
fn assert_usage_untouched(case: &str, db: &TestDb) {
    assert_untouched(case, db);
    assert!(db.table_exists("y"), "[{case}] table y was dropped");
    assert_eq!(db.query_i64("SELECT count(*) FROM y"), 1, "[{case}] y rows");
    assert_eq!(
        db.query_i64("SELECT sum(id) FROM users"),
        7,
        "[{case}] users"
    );
}

/// A bad input to one command, and how it must be refused.
struct Bad {
    command: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Extra files for the folder: (name, content).
    files: Vec<(&'static str, &'static str)>,
    code: i32,
    outcome: &'static str,
    needles: Vec<&'static str>,
}

/// `miglock COMMAND ARGS…` must exit `code` with the JSON `outcome` and
/// every needle in its message.
fn bad(
    command: &'static str,
    args: &[&str],
    code: i32,
    outcome: &'static str,
    needles: &[&'static str],
) -> Bad {
    Bad {
        command,
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        files: Vec::new(),
        code,
        outcome,
        needles: needles.to_vec(),
    }
}

impl Bad {
    fn env(mut self, key: &'static str, value: impl Into<String>) -> Bad {
        self.env.push((key, value.into()));
        self
    }

    fn file(mut self, name: &'static str, content: &'static str) -> Bad {
        self.files.push((name, content));
        self
    }

    /// Runs the command with `--format json` on `db` (from
    /// [`bad_input_db`]) and a folder holding the good migration and the
    /// case's files, then checks its exit code, the JSON outcome, a
    /// message naming the problem (on stderr and in `error.message`), no
    /// panic, and nothing touched: no history row, no side effect, tables
    /// `y` and `users` unchanged.
    #[track_caller]
    fn assert_refused(&self, db: &TestDb) {
        let dir = good_dir();
        for (name, content) in &self.files {
            dir.file(name, content);
        }
        let mut m = Miglock::for_db(db);
        m.args([self.command, "--format", "json"]);
        if !self.args.iter().any(|a| a == "--migrations") {
            m.arg("--migrations").arg(dir.path());
        }
        m.args(&self.args);
        for (k, v) in &self.env {
            m.env(k, v);
        }
        let case = format!("{} {:?} {:?}", self.command, self.args, self.env);
        let started = Instant::now();
        let out = m.run();
        let took = started.elapsed();
        assert_run(&case, &out, self.code, &["error: "]);
        let json = out.json();
        assert_eq!(json["command"], self.command, "[{case}]");
        assert_eq!(json["outcome"], self.outcome, "[{case}] {json:#}");
        assert_eq!(json["exit_code"], self.code, "[{case}]");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        for needle in &self.needles {
            assert!(
                out.stderr.contains(needle),
                "[{case}] stderr lacks {needle:?}\n{}",
                out.details()
            );
            assert!(
                message.contains(needle),
                "[{case}] error.message lacks {needle:?}: {message}"
            );
        }
        if took > Duration::from_secs(15) {
            eprintln!("[{case}] took {took:?} (report only)");
        }
        assert_usage_untouched(&case, db);
    }
}

/// `db`'s URL with its port replaced by `port` (a closed one, or one that
/// is no number).
fn with_port(db: &TestDb, port: &str) -> String {
    db.url()
        .replace(&format!(":{}/", db.cluster().port()), &format!(":{port}/"))
}

/// `V1__create_t` alone: a folder that applies if the input is accepted.
fn create_t() -> MigrationDir {
    MigrationDir::with(&CREATE_T_ADD_NOTE[..1])
}

/// `apply --format json --migrations DIR` with no connection configured.
fn apply_without_db(dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::new();
    m.args(["apply", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

/// Exit 2 with `message` on stderr and in the JSON result's error.
#[track_caller]
fn assert_usage(out: &RunOutput, message: &str) {
    out.assert_code(2).assert_stderr_contains(message);
    let json = out.json();
    assert_eq!(json["outcome"], "usage", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(message)),
        "{json}"
    );
}
