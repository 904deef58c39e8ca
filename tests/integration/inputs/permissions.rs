//! A migrations folder, subfolder or file that every user may write to
//! (as on a shared volume): whoever can write there runs SQL with the
//! migrator's privileges at the next deploy. `apply`, `baseline` and
//! `repair` refuse it before anything runs (exit 6, `unsafe_permissions`,
//! naming the path and its mode); `status` and `wait` warn;
//! `--allow-world-writable` (`MIGLOCK_ALLOW_WORLD_WRITABLE`) allows it.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{apply, command, two_migrations, MigrationDir};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The `unsafe_permissions` problems: the path each names (from the
/// folder on) and its message.
fn unsafe_paths(json: &Value, dir: &Path) -> Vec<(String, String)> {
    json["problems"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["kind"] == "unsafe_permissions")
        .map(|p| {
            let file = p["file"].as_str().unwrap();
            let rel = file
                .strip_prefix(dir.to_str().unwrap())
                .unwrap_or(file)
                .trim_start_matches('/');
            (rel.to_string(), p["message"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn a_folder_or_file_every_user_may_write_to_is_refused_before_anything_runs() {
    let elsewhere = MigrationDir::with(&[("shared.sql", "ALTER TABLE t ADD COLUMN note text;\n")]);
    chmod(&elsewhere.path().join("shared.sql"), 0o666);
    type Setup = fn(&Path, &Path);
    let cases: [(&str, Setup, &str, &str); 5] = [
        ("folder 0777", |d, _| chmod(d, 0o777), "", "mode 0777"),
        (
            "sticky folder 1777",
            |d, _| chmod(d, 0o1777),
            "",
            "mode 1777: sticky, but others can still add files",
        ),
        (
            "file 0666 in a subfolder",
            |d, _| {
                fs::create_dir(d.join("sub")).unwrap();
                fs::rename(d.join("V2__add_note.sql"), d.join("sub/V2__add_note.sql")).unwrap();
                chmod(&d.join("sub/V2__add_note.sql"), 0o666);
            },
            "sub/V2__add_note.sql",
            "mode 0666",
        ),
        (
            "subfolder 0777",
            |d, _| {
                fs::create_dir(d.join("sub")).unwrap();
                chmod(&d.join("sub"), 0o777);
            },
            "sub",
            "can add or change a migration",
        ),
        (
            "link to a file every user may write to",
            |d, elsewhere| {
                fs::remove_file(d.join("V2__add_note.sql")).unwrap();
                symlink(elsewhere.join("shared.sql"), d.join("V2__add_note.sql")).unwrap();
            },
            "V2__add_note.sql",
            "mode 0666",
        ),
    ];
    for (case, setup, path, mode) in cases {
        let db = Cluster::shared().create_db();
        let dir = two_migrations();
        setup(dir.path(), elsewhere.path());
        let out = apply(&db, &dir).run();
        out.assert_code(6);
        let json = out.json();
        assert_eq!(json["outcome"], "invalid", "[{case}] {json:#}");
        let found = unsafe_paths(&json, dir.path());
        assert_eq!(found.len(), 1, "[{case}] {json:#}");
        assert_eq!(found[0].0, path, "[{case}] {json:#}");
        assert!(
            found[0].1.contains(mode) && found[0].1.contains("--allow-world-writable"),
            "[{case}] {}",
            found[0].1
        );
        out.assert_stderr_contains("writable by every user");
        assert!(
            !db.table_exists("refinery_schema_history") && !db.table_exists("t"),
            "[{case}] something ran"
        );
        chmod(dir.path(), 0o700);
    }
}

#[test]
fn only_status_and_wait_warn_and_the_flag_allows_it() {
    let db = Cluster::shared().create_db();
    let dir = two_migrations();
    // A link is judged by its target: a link (always 0777) to a file only
    // its owner may write is fine.
    let target = MigrationDir::with(&[("V3__c.sql", "ALTER TABLE t ADD COLUMN c int;\n")]);
    symlink(
        target.path().join("V3__c.sql"),
        dir.path().join("V3__c.sql"),
    )
    .unwrap();
    apply(&db, &dir).run().assert_success();
    dir.file("V4__d.sql", "ALTER TABLE t ADD COLUMN d int;\n");
    chmod(dir.path(), 0o777);

    // What records or runs migrations refuses, touching nothing.
    for (name, args) in [
        ("apply", &[][..]),
        ("apply", &["--dry-run"]),
        ("baseline", &["--baseline-version", "4"]),
        ("repair", &["--yes"]),
    ] {
        let out = command(&db, name, &dir).args(args).run();
        out.assert_code(6);
        assert_eq!(unsafe_paths(&out.json(), dir.path()).len(), 1, "{name}");
    }
    assert_eq!(db.history(), [1, 2, 3]);

    // What only looks warns, and says who refuses.
    let warning = "UNSAFE_PERMISSIONS";
    let status = command(&db, "status", &dir).arg("--check").run();
    status
        .assert_code(7)
        .assert_stderr_contains(warning)
        .assert_stderr_contains("apply, baseline and repair refuse to run with it");
    assert!(status.json().get("problems").is_none(), "{}", status.stdout);
    let wait = command(&db, "wait", &dir).args(["--timeout", "0s"]).run();
    wait.assert_code(7).assert_stderr_contains(warning);

    // The flag, or its variable, allows it, without a warning.
    let allowed = apply(&db, &dir).arg("--allow-world-writable").run();
    allowed.assert_success();
    assert!(!allowed.stderr.contains(warning), "{}", allowed.stderr);
    assert_eq!(db.history(), [1, 2, 3, 4]);
    let quiet = command(&db, "wait", &dir)
        .env("MIGLOCK_ALLOW_WORLD_WRITABLE", "yes")
        .run();
    quiet.assert_success();
    assert!(!quiet.stderr.contains(warning), "{}", quiet.stderr);
    let off = command(&db, "status", &dir)
        .env("MIGLOCK_ALLOW_WORLD_WRITABLE", "0")
        .run();
    off.assert_success().assert_stderr_contains(warning);
    let bad = command(&db, "apply", &dir)
        .env("MIGLOCK_ALLOW_WORLD_WRITABLE", "maybe")
        .run();
    bad.assert_code(2)
        .assert_stderr_contains("\"maybe\" is not understood");
    chmod(dir.path(), 0o700);
}
