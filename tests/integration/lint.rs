//! Know before you run: `miglock lint` gives squawk-cli's findings (the
//! differential test runs both on the corpus), at miglock's levels, with
//! squawk's ignore comments; `apply --lint` lints the pending files before
//! the lock is taken and, with `deny`, refuses with nothing applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::cluster::{Cluster, TestDb};
use crate::harness::{apply, Miglock, MigrationDir};

/// The squawk-cli the set-up script installs, at the crates' version.
const SQUAWK_VERSION: &str = "squawk 2.66.0";

/// The rules miglock turns off by default (the docs say why).
const MOOT: &str =
    "require-statement-timeout,require-lock-timeout,ban-concurrent-index-creation-in-transaction";

/// squawk-cli, as `MIGLOCK_SQUAWK` or scripts/setup-postgres.sh gives it.
/// Missing, the test fails: the differential test is part of the suite.
fn squawk() -> PathBuf {
    let path = std::env::var_os("MIGLOCK_SQUAWK")
        .map_or_else(|| PathBuf::from("/usr/local/bin/squawk"), PathBuf::from);
    let version = Command::new(&path).arg("--version").output();
    match version {
        Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == SQUAWK_VERSION => path,
        other => panic!(
            "{} is not {SQUAWK_VERSION} ({other:?}): run scripts/setup-postgres.sh, or set \
             MIGLOCK_SQUAWK to squawk-cli {SQUAWK_VERSION}",
            path.display()
        ),
    }
}

/// The real-world corpus and one file per rule.
fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    for dir in ["corpus", "lint"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sql") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 45, "{files:?}");
    files
}

type Findings = BTreeMap<(String, u64, String), usize>;

fn count(findings: &mut Findings, file: &str, line: u64, rule: &str) {
    *findings
        .entry((file.to_string(), line, rule.to_string()))
        .or_default() += 1;
}

/// `miglock lint --format json FILES…`: its findings, and which files it
/// lints as run in a transaction.
fn miglock_lint(files: &[PathBuf], extra: &[&str]) -> (Findings, Vec<(PathBuf, bool)>) {
    let out = Miglock::new()
        .args(["lint", "--format", "json"])
        .args(extra)
        .args(files)
        .run();
    let json = out.json();
    assert!(matches!(out.code, 0 | 6), "{}", out.details());
    let mut findings = Findings::new();
    for f in json["lint"]["findings"].as_array().unwrap() {
        count(
            &mut findings,
            f["file"].as_str().unwrap(),
            f["line"].as_u64().unwrap(),
            f["rule"].as_str().unwrap(),
        );
    }
    let linted = json["lint"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                PathBuf::from(f["file"].as_str().unwrap()),
                f["transaction"].as_bool().unwrap(),
            )
        })
        .collect();
    (findings, linted)
}

/// squawk-cli's findings: `--assume-in-transaction` for the files miglock
/// runs in a transaction, its lines made 1-based.
fn squawk_lint(linted: &[(PathBuf, bool)], exclude: Option<&str>) -> Findings {
    let squawk = squawk();
    let cwd = tempfile::tempdir().unwrap();
    let mut findings = Findings::new();
    for transaction in [true, false] {
        let files: Vec<&PathBuf> = linted
            .iter()
            .filter(|(_, t)| *t == transaction)
            .map(|(f, _)| f)
            .collect();
        if files.is_empty() {
            continue;
        }
        let mut cmd = Command::new(&squawk);
        // No .squawk.toml of the repository's or the machine's.
        cmd.current_dir(cwd.path()).args(["--reporter", "json"]);
        if transaction {
            cmd.arg("--assume-in-transaction");
        }
        if let Some(rules) = exclude {
            cmd.arg(format!("--exclude={rules}"));
        }
        let out = cmd.args(&files).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "squawk: {e}: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        for f in json.as_array().unwrap() {
            count(
                &mut findings,
                f["file"].as_str().unwrap(),
                f["line"].as_u64().unwrap() + 1,
                f["rule_name"].as_str().unwrap(),
            );
        }
    }
    findings
}

#[test]
fn lint_finds_what_squawk_cli_finds_but_the_rules_miglock_makes_moot() {
    let files = corpus();
    let (ours, linted) = miglock_lint(&files, &[]);
    assert_eq!(linted.len(), files.len());
    // Both ways of running are in the corpus.
    assert!(linted.iter().any(|(_, t)| *t) && linted.iter().any(|(_, t)| !*t));
    let theirs = squawk_lint(&linted, Some(MOOT));
    assert_eq!(ours, theirs);
    // Every rule with a file of its own fires in it (but the ones off by
    // default, squawk's opt-in, and prefer-repack, which squawk checks for
    // PostgreSQL 19 only).
    for (file, _) in &linted {
        let name = file.file_stem().unwrap().to_str().unwrap();
        let quiet = MOOT.contains(name)
            || ["require-table-schema", "prefer-repack", "ignore-file"].contains(&name)
            || file.parent().unwrap().ends_with("corpus")
            || name == "ignore-comments";
        if !quiet {
            let file = file.to_str().unwrap();
            assert!(
                ours.keys().any(|(f, _, rule)| f == file && rule == name),
                "{name}: {ours:?}"
            );
        }
    }
    // With the moot rules turned on, all of squawk-cli's.
    let (all, _) = miglock_lint(&files, &["--lint-rules", MOOT]);
    assert_eq!(all, squawk_lint(&linted, None));
    assert!(all.len() > ours.len());
}

fn lint_dir(dir: &MigrationDir) -> Miglock {
    let mut m = Miglock::new();
    m.args(["lint", "--format", "json", "--migrations"])
        .arg(dir.path());
    m
}

fn rules(json: &Value) -> Vec<(String, u64, String)> {
    json["lint"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["level"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn levels_decide_the_exit_code_and_flags_or_variables_change_them() {
    let dir = MigrationDir::with(&[
        (
            "V1__t.sql",
            "CREATE TABLE t (id bigint PRIMARY KEY, placed timestamp);\n",
        ),
        (
            "V2__i.sql",
            "SELECT 1;\nCREATE INDEX t_placed ON t (placed);\n",
        ),
    ]);
    // A warning and a deny: exit 6, the deny finding a problem.
    let out = lint_dir(&dir).run();
    out.assert_code(6);
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(
        rules(&json),
        [
            ("prefer-timestamp-tz".into(), 1, "warn".into()),
            ("require-concurrent-index-creation".into(), 2, "deny".into()),
        ]
    );
    let finding = &json["lint"]["findings"][1];
    assert_eq!(finding["version"], 2);
    assert!(finding["file"].as_str().unwrap().ends_with("V2__i.sql"));
    assert_eq!(
        finding["fix"],
        "Use `concurrently` to avoid blocking writes."
    );
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{json}");
    assert_eq!(problems[0]["kind"], "lint");
    assert_eq!(problems[0]["line"], 2);
    // The text: file:line:column, level, rule, message and the fix.
    let text = Miglock::new()
        .args(["lint", "--migrations"])
        .arg(dir.path())
        .run();
    text.assert_code(6);
    assert!(
        text.stdout.contains(&format!(
            "{}:2:1: deny require-concurrent-index-creation: During normal index creation",
            dir.path().join("V2__i.sql").display()
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("  fix: Use `concurrently`"),
        "{}",
        text.stdout
    );
    assert!(text
        .stdout
        .contains("2 findings (1 deny, 1 warn) in 2 files"));

    // Lowered by a flag: exit 0, the finding still shown.
    let out = lint_dir(&dir)
        .args(["--lint-rules", "require-concurrent-index-creation=warn"])
        .run();
    out.assert_code(0);
    assert_eq!(out.json()["outcome"], "linted");
    assert_eq!(out.json()["lint"]["findings"][1]["level"], "warn");
    // Turned off by the variable; a warning raised to deny by the other.
    let out = lint_dir(&dir)
        .env("MIGLOCK_LINT_EXCLUDE", "require-concurrent-index-creation")
        .env("MIGLOCK_LINT_RULES", "prefer-timestamptz=deny")
        .run();
    out.assert_code(6);
    assert_eq!(
        rules(&out.json()),
        [("prefer-timestamp-tz".into(), 1, "deny".into())]
    );
    // all=warn: nothing denies.
    lint_dir(&dir)
        .args(["--lint-rules", "all=warn"])
        .run()
        .assert_code(0);
    // An unknown rule is a usage error.
    let out = lint_dir(&dir)
        .args(["--lint-exclude", "no-such-rule"])
        .run();
    out.assert_code(2);
    assert!(
        out.stderr.contains("unknown lint rule 'no-such-rule'"),
        "{}",
        out.stderr
    );
    // Named files: only those.
    let out = Miglock::new()
        .args(["lint", "--format", "json"])
        .arg(dir.path().join("V1__t.sql"))
        .run();
    out.assert_code(0);
    assert_eq!(rules(&out.json()).len(), 1);
}

#[test]
fn squawk_ignore_comments_silence_a_statement_or_a_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lint");
    let out = Miglock::new()
        .args(["lint", "--format", "json"])
        .arg(dir.join("ignore-comments.sql"))
        .arg(dir.join("ignore-file.sql"))
        .run();
    out.assert_code(6);
    // Each statement but the last is ignored (the file's other rule in
    // the second file is off by default); the last one denies.
    assert_eq!(
        rules(&out.json()),
        [("adding-not-nullable-field".into(), 7, "deny".into())]
    );
}

fn history_rows(db: &TestDb) -> i64 {
    db.client()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'refinery_schema_history'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
}

#[test]
fn apply_lint_deny_refuses_before_the_lock_with_nothing_applied() {
    let db = Cluster::shared().create_db();
    let dir = MigrationDir::with(&[
        (
            "V1__t.sql",
            "CREATE TABLE t (id bigint PRIMARY KEY, v text);\n",
        ),
        ("V2__i.sql", "CREATE INDEX t_v ON t (v);\n"),
    ]);
    let out = apply(&db, &dir).args(["--lint", "deny"]).run();
    out.assert_code(6);
    let json = out.json();
    assert_eq!(json["outcome"], "invalid");
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{json}");
    assert_eq!(problems[0]["kind"], "lint");
    assert_eq!(problems[0]["version"], 2);
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("require-concurrent-index-creation (deny)"),
        "{json}"
    );
    assert_eq!(json["lint"]["findings"].as_array().unwrap().len(), 1);
    assert!(!out.stderr.contains("LOCK_ACQUIRED"), "{}", out.stderr);
    // Nothing applied, not even the history table.
    assert_eq!(history_rows(&db), 0);
    let tables: i64 = db
        .client()
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 't'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);

    // The variable says the same.
    apply(&db, &dir)
        .env("MIGLOCK_LINT", "deny")
        .run()
        .assert_code(6);
    assert_eq!(history_rows(&db), 0);

    // The default, warn: one LINT_WARNING line per finding, and it applies.
    let out = apply(&db, &dir).run();
    out.assert_code(0);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("LINT_WARNING"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("LINT_WARNING file=")
            && warnings[0].contains(
                "V2__i.sql line=1 rule=require-concurrent-index-creation level=deny message=\""
            ),
        "{}",
        warnings[0]
    );
    assert_eq!(out.json()["applied"].as_array().unwrap().len(), 2);

    // Nothing pending: nothing linted, even under deny.
    let out = apply(&db, &dir).args(["--lint", "deny"]).run();
    out.assert_code(0);
    assert!(!out.stderr.contains("LINT"), "{}", out.stderr);
    assert!(out.json().get("lint").is_none());
}

#[test]
fn apply_lint_off_or_a_file_above_the_limit_lints_nothing() {
    let db = Cluster::shared().create_db();
    let mut big = String::from("CREATE TABLE big (id bigint, note text);\n");
    let row = "INSERT INTO big VALUES (1, 'a row long enough to make the file big quickly');\n";
    big.push_str(&row.repeat(1024 * 1024 / row.len() + 1));
    big.push_str("CREATE INDEX big_note ON big (note);\n");
    let dir = MigrationDir::with(&[("V1__big.sql", &big)]);
    // Off: nothing linted, the deny-level index build applies.
    let out = apply(&db, &dir).args(["--lint", "off", "--dry-run"]).run();
    out.assert_code(7);
    assert!(!out.stderr.contains("LINT"), "{}", out.stderr);
    // A run refused before anything runs says nothing of the lint, though
    // it lints first (to read each pending file once).
    let refused = MigrationDir::with(&[
        ("V1__big.sql", &big),
        ("V2__copy.sql", "COPY big FROM stdin;\n"),
    ]);
    let out = apply(&db, &refused).args(["--lint", "deny", "-v"]).run();
    out.assert_code(6);
    assert!(!out.stderr.contains("LINT"), "{}", out.stderr);
    assert!(!db.table_exists("big"));
    // Deny, but the file is above 1 MiB: skipped with a line, applied.
    let out = apply(&db, &dir).args(["--lint", "deny", "-v"]).run();
    out.assert_code(0);
    assert!(
        out.stderr.contains("LINT_SKIPPED file=") && out.stderr.contains("limit=1048576"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.json()["lint"]["skipped"].as_array().unwrap().len(),
        1,
        "{}",
        out.json()
    );
}

/// squawk's parser recurses once a nesting level, with nothing to stop
/// it: a file nested deeper than the thread's stack took was an abort
/// (exit 134, no result). It is linted on a thread with the stack it
/// needs or, past what any thread is given, skipped and said; `apply`
/// lints the same way before the lock, and runs the file.
#[test]
fn a_deeply_nested_file_is_linted_or_skipped_never_a_crash() {
    let nested = |levels: usize| {
        format!(
            "SELECT {}1{} AS x;\n",
            "(".repeat(levels),
            ")".repeat(levels)
        )
    };
    let dir = MigrationDir::with(&[
        ("V1__deep.sql", &nested(6_000)),
        ("V2__deeper.sql", &nested(300_000)),
    ]);
    let out = lint_dir(&dir).run();
    out.assert_success();
    assert!(
        out.stderr.contains("LINT_SKIPPED file=") && out.stderr.contains("levels=300000"),
        "{}",
        out.stderr
    );
    let json = out.json();
    let skipped = json["lint"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{json}");
    assert!(
        skipped[0].as_str().unwrap().ends_with("V2__deeper.sql"),
        "{json}"
    );
    let linted = json["lint"]["files"].as_array().unwrap();
    assert_eq!(linted.len(), 1, "{json}");
    assert!(
        linted[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("V1__deep.sql"),
        "{json}"
    );

    let db = Cluster::shared().create_db();
    let deep = MigrationDir::with(&[("V1__deep.sql", &nested(6_000))]);
    let out = apply(&db, &deep).args(["--lint", "deny"]).run();
    out.assert_success();
    assert!(!out.stderr.contains("LINT_SKIPPED"), "{}", out.stderr);
    assert_eq!(db.history(), [1]);
}
