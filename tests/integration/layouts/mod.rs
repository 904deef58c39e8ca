//! Other tools' folders as they are (`--layout`), against a real
//! PostgreSQL and, where a registry provides them, the tools themselves:
//! sqlx-cli and dbmate carry on from where miglock stopped and the other
//! way round; goose's and golang-migrate's tables are checked as their
//! sources write them. Each tool's folder in `tests/layouts/` has
//! its tool's exact shape (16 migrations, concurrent index builds, Down
//! sections or down files, `$$` bodies); every run's schema is compared
//! with the schema the tool itself (or psql running the Up parts) makes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::TestDb;
use crate::harness::MigrationDir;

mod down;
mod flyway;
mod formats;
mod round_trips;
mod tool_locks;

/// A tool's folder in the corpus.
fn corpus(tool: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/layouts")
        .join(tool)
}

/// The corpus files of `tool` (sorted by name), `(name, text)`; a file in
/// a subfolder (Flyway's) named by its path from the corpus, `/`-parted.
fn corpus_files(tool: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut folders = vec![(corpus(tool), String::new())];
    while let Some((folder, prefix)) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().into_string().unwrap());
            if entry.file_type().unwrap().is_dir() {
                folders.push((entry.path(), format!("{name}/")));
            } else {
                files.push((name, std::fs::read_to_string(entry.path()).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A copy of `tool`'s corpus with only the files `keep` accepts.
fn corpus_copy(tool: &str, keep: impl Fn(&str) -> bool) -> MigrationDir {
    let dir = MigrationDir::new();
    for (name, text) in corpus_files(tool) {
        if keep(&name) {
            dir.file(&name, &text);
        }
    }
    dir
}

/// Another tool's binary: `$env` when set, else on PATH, in cargo's bin
/// folder or in the build's own. When it is nowhere, scripts/setup-peers.sh
/// installs it into the build's folder (once, whatever the number of
/// tests asking); if that fails, the test fails: a missing tool is never a
/// skipped test.
fn peer(name: &str, env: &str) -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let own = Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers");
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(own.join("bin"));
    let find = || {
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    };
    if let Some(path) = find() {
        return path;
    }
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = find() {
        return path;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-peers.sh");
    let out = Command::new(&script)
        .env("MIGLOCK_PEERS_ROOT", &own)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    find().unwrap_or_else(|| {
        panic!(
            "{name} is not installed (not on PATH, not in ~/.cargo/bin, {env} unset), and \
             scripts/setup-peers.sh could not install it ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs a peer tool with `DATABASE_URL` set to `db`; its output when it
/// succeeds, a failure naming everything it said otherwise.
#[track_caller]
fn run_peer(program: &Path, db: &TestDb, args: &[&str]) -> String {
    let mut url = db.url();
    // lib/pq (dbmate) asks for TLS unless told not to.
    url.push_str("?sslmode=disable");
    let out = Command::new(program)
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{text}",
        program.display(),
        out.status
    );
    text
}

/// The database's schema as pg_dump prints it, without the history
/// tables and without the lines that differ from one dump to the next.
fn schema(db: &TestDb) -> String {
    let pg_dump = db.cluster().bindir().join("pg_dump");
    let out = Command::new(&pg_dump)
        .args(["--schema-only", "--no-owner", "--no-privileges"])
        .args([
            "--exclude-table=_sqlx_migrations",
            "--exclude-table=schema_migrations",
            "--exclude-table=goose_db_version",
            "--exclude-table=refinery_schema_history",
            "--exclude-table=flyway_schema_history",
        ])
        .arg(format!("--dbname={}", db.url()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// psql running each text in turn, as a migration tool would send them.
fn psql_each(db: &TestDb, texts: &[String]) {
    let psql = db.cluster().bindir().join("psql");
    for text in texts {
        let out = Command::new(&psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(db.url())
            .args(["-c", text])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The Up part of a goose file, as goose sends it: the lines between
/// `-- +goose Up` and `-- +goose Down`, without the annotations.
fn goose_up(text: &str) -> String {
    text.split("-- +goose Up\n")
        .nth(1)
        .unwrap()
        .split("-- +goose Down")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.contains("+goose"))
        .map(|l| format!("{l}\n"))
        .collect()
}
