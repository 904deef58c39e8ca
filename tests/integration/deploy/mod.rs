//! Running miglock in a deploy: what it writes on stdout when the reader
//! goes away or the disk is full, the container entrypoint, the Compose,
//! Kubernetes, GitHub Actions and Docker files in `examples/` (and the
//! README's excerpts of them), and the generated documents (`--help`,
//! `completions`, `man`).

use std::fs;
use std::path::{Path, PathBuf};

mod docs;
mod entrypoint;
mod examples;
mod help;
mod json_logs;
mod metrics;
mod output;
mod quick_start;

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

/// The migrations folder the image holds, as found in this repository.
fn example_migrations() -> PathBuf {
    repo_path("examples/migrations")
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
