//! Bad migration files and folders: misnamed, duplicated, empty,
//! unreadable or special files, a missing folder or a file in its place.
//! Each is refused (exit 6, or 2 for the option) before anything runs.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{Miglock, MigrationDir, RunOutput};

use super::{
    assert_json, assert_problem, assert_run, assert_untouched, bad, bad_input_db, good_dir,
    run_text_and_json, GOOD_FILE,
};

// ---------------------------------------------------------------------------
// One bad file, or all of them in one folder
// ---------------------------------------------------------------------------

enum Setup {
    /// A file with this name and content.
    File(&'static str, &'static [u8]),
    /// Anything else (two files, a folder, a symlink).
    Custom(fn(&Path)),
}

struct BadFiles {
    case: &'static str,
    setup: Setup,
    /// The `kind` of the JSON problem.
    kind: &'static str,
    /// Path suffix of the file the problem names.
    file: &'static str,
    /// The reason, as the message words it.
    reason: &'static str,
}

impl BadFiles {
    fn create_in(&self, dir: &Path) {
        match self.setup {
            Setup::File(name, contents) => {
                let path = dir.join(name);
                fs::write(&path, contents)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            }
            Setup::Custom(setup) => setup(dir),
        }
    }
}

/// Every case has distinct file names and only the duplicate case claims a
/// version (1), so all of them fit in one folder with one problem each.
fn bad_file_cases() -> Vec<BadFiles> {
    const SQL: &[u8] = b"CREATE TABLE bad_side_effect (id int);";
    let misnamed = |case, file, reason| BadFiles {
        case,
        setup: Setup::File(file, SQL),
        kind: "misnamed",
        file,
        reason,
    };
    vec![
        misnamed(
            "single underscore",
            "V1_init.sql",
            "no \"__\" between version and name",
        ),
        misnamed("lower-case v", "v1__x.sql", "the name must start with V"),
        misnamed("dash in name", "V1__a-b.sql", "the name contains '-'"),
        misnamed(
            "upper-case extension",
            "V1__x.SQL",
            "the extension must be .sql in lower case",
        ),
        misnamed("version 0", "V0__x.sql", "version 0 is not allowed"),
        misnamed(
            "version overflow",
            "V2147483648__x.sql",
            "the version 2147483648 is too large (at most 2147483647)",
        ),
        misnamed(
            "unversioned",
            "U1__x.sql",
            "unversioned (U) migrations are not supported",
        ),
        misnamed("empty name", "V1__.sql", "the name after \"__\" is empty"),
        BadFiles {
            case: "duplicate version",
            setup: Setup::Custom(|d| {
                fs::write(d.join("V1__a.sql"), SQL).unwrap();
                fs::write(
                    d.join("V01__b.sql"),
                    "CREATE TABLE bad_side_effect (id bigint);",
                )
                .unwrap();
            }),
            kind: "duplicate",
            file: "V01__b.sql",
            reason: "version 1 is used by 2 files",
        },
        BadFiles {
            case: "non-UTF-8 content",
            // Latin-1 "café": a real-world way to end up with invalid UTF-8.
            setup: Setup::File("V1__latin1.sql", b"SELECT 'caf\xe9';"),
            kind: "unreadable",
            file: "V1__latin1.sql",
            reason: "is not valid UTF-8 (first bad byte at offset 11)",
        },
        BadFiles {
            case: "whitespace-only content",
            setup: Setup::File("V1__blank.sql", b"  \n\t\r\n  "),
            kind: "unreadable",
            file: "V1__blank.sql",
            reason: "is empty",
        },
        BadFiles {
            case: "directory with a migration name",
            setup: Setup::Custom(|d| fs::create_dir(d.join("V2__dir.sql")).unwrap()),
            kind: "unreadable",
            file: "V2__dir.sql",
            reason: "is a folder, not a migration file",
        },
        BadFiles {
            case: "dangling symlink",
            // Unlike chmod 000, this cannot be read by root either.
            setup: Setup::Custom(|d| symlink("/nonexistent", d.join("V3__x.sql")).unwrap()),
            kind: "unreadable",
            file: "V3__x.sql",
            reason: "cannot be read (does not exist)",
        },
        BadFiles {
            case: "symlink loop",
            setup: Setup::Custom(|d| {
                fs::create_dir(d.join("loop")).unwrap();
                symlink("..", d.join("loop/back")).unwrap();
            }),
            kind: "unreadable",
            file: "loop/back",
            reason: "is a symbolic link loop",
        },
    ]
}

#[test]
fn each_bad_file_is_refused_before_anything_runs() {
    let db = Cluster::shared().create_db();
    for case in bad_file_cases() {
        let dir = good_dir();
        case.create_in(dir.path());
        let name = case.case;
        let needles = [
            "the migration set is unsafe to run (1 problem)",
            case.file,
            case.reason,
        ];
        let (text, json) = run_text_and_json(
            Miglock::for_db(&db)
                .args(["apply", "--migrations"])
                .arg(dir.path()),
        );
        assert_run(name, &text, 6, &needles);
        assert_run(name, &json, 6, &needles);
        let json = assert_json(name, &json, 6, "invalid", &needles);
        assert_problem(name, &json, case.kind, Some(case.file), None);
        assert_eq!(
            json["problems"].as_array().map(Vec::len),
            Some(1),
            "[{name}] exactly one problem expected: {json:#}"
        );
        assert_eq!(json["applied"], serde_json::json!([]), "[{name}] applied");
        assert_untouched(name, &db);
        assert!(
            !db.table_exists("bad_side_effect"),
            "[{name}] the bad file was applied"
        );
    }
}

#[test]
fn every_problem_of_a_bad_folder_is_listed_and_nothing_runs() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let cases = bad_file_cases();
    for case in &cases {
        case.create_in(dir.path());
    }
    let (text, json) = run_text_and_json(
        Miglock::for_db(&db)
            .args(["apply", "--migrations"])
            .arg(dir.path()),
    );
    let count = format!(
        "the migration set is unsafe to run ({} problems)",
        cases.len()
    );
    assert_run("bad folder", &text, 6, &[&count]);
    assert_run("bad folder", &json, 6, &[&count]);
    let json = assert_json("bad folder", &json, 6, "invalid", &[&count]);
    assert_eq!(
        json["problems"].as_array().map(Vec::len),
        Some(cases.len()),
        "{json:#}"
    );
    for case in &cases {
        assert_run(case.case, &text, 6, &[case.file, case.reason]);
        assert_problem(case.case, &json, case.kind, Some(case.file), None);
    }
    assert_untouched("bad folder", &db);
}

#[test]
fn a_zero_byte_file_is_refused() {
    let db = bad_input_db();
    bad(
        "apply",
        &[],
        6,
        "invalid",
        &[
            "the migration set is unsafe to run",
            "V2__empty.sql: is empty",
        ],
    )
    .file("V2__empty.sql", "")
    .assert_refused(&db);
}

/// A file name that is not UTF-8: refused (exit 6, `status --check` too)
/// with a clear message, in text and JSON, nothing applied.
#[test]
fn a_file_name_that_is_not_utf8_is_refused() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    fs::write(
        dir.path().join(OsStr::from_bytes(b"V3__caf\xe9.sql")),
        "SELECT 1;",
    )
    .unwrap();
    let refused = "V3__caf\u{FFFD}.sql: the file name is not valid UTF-8";
    for (args, stream) in [
        (&["apply", "--format", "json"][..], "stderr"),
        (&["apply", "--format", "text"], "stderr"),
        (&["status", "--check", "--format", "text"], "stdout"),
        (&["status", "--check", "--format", "json"], "none"),
    ] {
        let out = Miglock::for_db(&db)
            .args(args)
            .arg("--migrations")
            .arg(dir.path())
            .run();
        assert_eq!(out.code, 6, "{args:?}\n{}", out.details());
        let text = match stream {
            "stderr" => &out.stderr,
            "stdout" => &out.stdout,
            _ => &String::new(),
        };
        assert!(
            stream == "none" || text.contains(refused),
            "{args:?}\n{}",
            out.details()
        );
        if args.contains(&"json") {
            assert!(out.stdout.starts_with('{'), "{args:?}\n{}", out.details());
            // The JSON names the file too (its bad bytes as U+FFFD) and
            // agrees with the exit code.
            assert_eq!(
                out.json()["exit_code"],
                out.code,
                "{args:?}\n{}",
                out.details()
            );
            assert_eq!(
                out.json()["outcome"],
                "invalid",
                "{args:?}\n{}",
                out.details()
            );
        }
    }
    assert_untouched("non-UTF-8 file name", &db);
}

// ---------------------------------------------------------------------------
// The folder
// ---------------------------------------------------------------------------

#[test]
fn unreadable_file_is_refused() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    dir.file("V2__secret.sql", "CREATE TABLE secret ();");
    let secret = dir.path().join("V2__secret.sql");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    // The dangling symlink keeps the test meaningful where chmod 000 is not
    // (root, or CAP_DAC_OVERRIDE).
    symlink("/nonexistent", dir.path().join("V3__x.sql")).unwrap();
    let chmod_effective = fs::read(&secret).is_err();

    let (text, json) = run_text_and_json(
        Miglock::for_db(&db)
            .args(["apply", "--migrations"])
            .arg(dir.path()),
    );
    let needles = ["V3__x.sql: cannot be read (does not exist)"];
    assert_run("unreadable", &text, 6, &needles);
    let json = assert_json("unreadable", &json, 6, "invalid", &needles);
    assert_problem("unreadable", &json, "unreadable", Some("V3__x.sql"), None);
    if chmod_effective {
        let denied = ["V2__secret.sql: cannot be read (permission denied)"];
        assert_run("unreadable chmod 000", &text, 6, &denied);
        assert_problem(
            "unreadable chmod 000",
            &json,
            "unreadable",
            Some("V2__secret.sql"),
            None,
        );
    } else {
        eprintln!(
            "SKIPPED one assertion of unreadable_file_is_refused: this process can read a \
             chmod 000 file (running as root), so only the dangling symlink is checked"
        );
    }
    assert!(!db.table_exists("secret"), "V2__secret.sql was applied");
    assert_untouched("unreadable", &db);
}

#[test]
fn missing_migrations_folder_is_refused() {
    let db = Cluster::shared().create_db();
    let parent = MigrationDir::new();
    let missing = parent.path().join("no-such-folder");
    let (text, json) = run_text_and_json(
        Miglock::for_db(&db)
            .args(["apply", "--migrations"])
            .arg(&missing),
    );
    let needles = ["migrations folder", "no-such-folder", "does not exist"];
    assert_run("missing folder", &text, 6, &needles);
    let json = assert_json("missing folder", &json, 6, "invalid", &needles);
    assert_problem(
        "missing folder",
        &json,
        "folder",
        Some("no-such-folder"),
        None,
    );
    assert_untouched("missing folder", &db);
}

#[test]
fn migrations_option_naming_a_file_is_refused() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    // A plausible mistake: the path of one migration instead of its folder.
    let file = dir.path().join(GOOD_FILE);
    let (text, json) = run_text_and_json(
        Miglock::for_db(&db)
            .args(["apply", "--migrations"])
            .arg(&file),
    );
    let needles = ["migrations folder", GOOD_FILE, "is not a folder"];
    assert_run("file as folder", &text, 6, &needles);
    let json = assert_json("file as folder", &json, 6, "invalid", &needles);
    assert_problem("file as folder", &json, "folder", Some(GOOD_FILE), None);
    assert_untouched("file as folder", &db);
}

#[test]
fn an_empty_migrations_option_is_a_usage_error() {
    let db = bad_input_db();
    bad(
        "apply",
        &["--migrations", ""],
        2,
        "usage",
        &["a value is required for '--migrations <DIR>'"],
    )
    .assert_refused(&db);
}

/// How to run the binary as a user that file permissions apply to: as
/// root, through setpriv as the `postgres` user (which the clusters run
/// as); otherwise as ourselves.
struct Unprivileged {
    /// `setpriv --reuid … --` and the binary, or just the binary.
    prefix: Vec<String>,
    /// Files and folders to chown to that user, if any.
    owner: Option<(u32, u32)>,
    /// A copy of the binary the user can execute, if the original is not.
    _copy: Option<tempfile::TempDir>,
}

impl Unprivileged {
    fn new() -> Unprivileged {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_miglock"));
        let root = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) == 0;
        if !root {
            return Unprivileged {
                prefix: vec![binary.display().to_string()],
                owner: None,
                _copy: None,
            };
        }
        let passwd = fs::read_to_string("/etc/passwd").unwrap();
        let (uid, gid) = passwd
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.first() == Some(&"postgres"))
                    .then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
            })
            .expect("running as root: a `postgres` user is needed to test permission faults");
        let setpriv = |binary: &Path| -> Vec<String> {
            vec![
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
                binary.display().to_string(),
            ]
        };
        let runs = |prefix: &[String]| {
            Command::new(&prefix[0])
                .args(&prefix[1..])
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let prefix = setpriv(&binary);
        if runs(&prefix) {
            return Unprivileged {
                prefix,
                owner: Some((uid, gid)),
                _copy: None,
            };
        }
        // The build directory is private: copy the binary where it can run.
        let copy = tempfile::Builder::new()
            .prefix("miglock-bin-")
            .tempdir()
            .unwrap();
        fs::set_permissions(copy.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let target = copy.path().join("miglock");
        fs::copy(&binary, &target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let prefix = setpriv(&target);
        assert!(
            runs(&prefix),
            "cannot run miglock as the postgres user: {prefix:?}"
        );
        Unprivileged {
            prefix,
            owner: Some((uid, gid)),
            _copy: Some(copy),
        }
    }

    fn run(&self, db: &TestDb, dir: &Path, args: &[&str]) -> RunOutput {
        let mut m = Miglock::new();
        m.program(&self.prefix[0])
            .args(&self.prefix[1..])
            .args(args)
            .args(["--format", "json", "--migrations"])
            .arg(dir)
            .env("DATABASE_URL", db.url());
        m.run()
    }

    /// Makes `path` (and what is in it) belong to the user, so that its
    /// mode bits are what decide.
    fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            if path.is_dir() {
                for entry in fs::read_dir(path).unwrap() {
                    self.own(&entry.unwrap().path());
                }
            }
        }
    }
}

/// Unreadable file, unreadable folder, folder that can be listed but not
/// entered, unreadable subfolder, folder behind a parent that cannot be
/// entered: `apply`, `wait` and `status --check` exit 6 naming the path and
/// the reason, and nothing is applied.
#[test]
fn permission_faults_on_the_migrations_folder_exit_6_and_apply_nothing() {
    let db = Cluster::shared().create_db();
    let user = Unprivileged::new();
    type Setup = fn(&Path) -> PathBuf;
    let cases: [(&str, Setup, &str); 5] = [
        (
            "unreadable file",
            |d| {
                fs::write(d.join("V2__secret.sql"), "CREATE TABLE secret (id int);").unwrap();
                fs::set_permissions(d.join("V2__secret.sql"), fs::Permissions::from_mode(0o000))
                    .unwrap();
                d.to_path_buf()
            },
            "V2__secret.sql: cannot be read (permission denied)",
        ),
        (
            "unreadable folder",
            |d| {
                fs::set_permissions(d, fs::Permissions::from_mode(0o000)).unwrap();
                d.to_path_buf()
            },
            ": cannot be read (permission denied)",
        ),
        (
            "folder listed but not entered",
            |d| {
                fs::set_permissions(d, fs::Permissions::from_mode(0o644)).unwrap();
                d.to_path_buf()
            },
            "V100__good.sql: cannot be read (permission denied)",
        ),
        (
            "unreadable subfolder",
            |d| {
                fs::create_dir(d.join("sub")).unwrap();
                fs::write(d.join("sub/V2__sub.sql"), "CREATE TABLE sub (id int);").unwrap();
                fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o000)).unwrap();
                d.to_path_buf()
            },
            "/sub: cannot be read (permission denied)",
        ),
        (
            "folder behind a closed parent",
            |d| {
                let inner = d.join("inner");
                fs::create_dir(&inner).unwrap();
                fs::copy(d.join("V100__good.sql"), inner.join("V100__good.sql")).unwrap();
                fs::set_permissions(d, fs::Permissions::from_mode(0o600)).unwrap();
                inner
            },
            "/inner: permission denied",
        ),
    ];
    for (case, setup, reason) in cases {
        let dir = tempfile::Builder::new()
            .prefix("miglock-perm-")
            .tempdir()
            .unwrap();
        fs::write(
            dir.path().join("V100__good.sql"),
            "CREATE TABLE good (id int);",
        )
        .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        user.own(dir.path());
        let migrations = setup(dir.path());
        for args in [
            &["apply"][..],
            &["wait", "--timeout", "5s"],
            &["status", "--check"],
        ] {
            let out = user.run(&db, &migrations, args);
            let what = format!("[{case}] {args:?}");
            assert_eq!(out.code, 6, "{what}\n{}", out.details());
            // apply and wait fail with an error line; status describes the
            // state (its JSON lists the problem, checked below).
            if args[0] != "status" {
                assert!(
                    out.stderr.contains(reason),
                    "{what}: no {reason:?}\n{}",
                    out.details()
                );
            }
            assert!(
                !out.stderr.contains("panicked"),
                "{what}\n{}",
                out.details()
            );
            let json = out.json();
            assert_eq!(json["outcome"], "invalid", "{what}");
            assert_eq!(json["exit_code"], 6, "{what}");
            let problems = json["problems"].as_array().unwrap();
            assert_eq!(problems.len(), 1, "{what}: {json:#}");
            assert!(
                problems[0]["message"].as_str().unwrap().contains(reason),
                "{what}"
            );
        }
        assert!(!db.table_exists("refinery_schema_history"), "[{case}]");
        assert!(
            !db.table_exists("good") && !db.table_exists("secret"),
            "[{case}]"
        );
        // Let the TempDir be removed.
        let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
        for sub in ["V2__secret.sql", "sub", "inner"] {
            let _ = fs::set_permissions(dir.path().join(sub), fs::Permissions::from_mode(0o755));
        }
    }
}

/// A FIFO and a symlink to a character device named like migrations: a
/// read would block forever (the FIFO) or never end (`/dev/zero`), so they
/// must be refused without being opened. Bounded by a short timeout so a
/// regression fails instead of hanging. (`/dev/null` stands in for the
/// devices: reading it is harmless if it ever were read.)
#[test]
fn special_files_named_like_migrations_are_refused_without_reading_them() {
    let db = Cluster::shared().create_db();
    let dir = good_dir();
    let fifo = dir.path().join("V1__pipe.sql");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    std::os::unix::fs::symlink("/dev/null", dir.path().join("V2__device.sql")).unwrap();
    for args in [
        &["apply"][..],
        &["wait", "--timeout", "5s"],
        &["status", "--check"],
    ] {
        let started = Instant::now();
        let out = Miglock::for_db(&db)
            .args(args)
            .args(["--format", "json", "--migrations"])
            .arg(dir.path())
            .timeout(Duration::from_secs(60))
            .run();
        let took = started.elapsed();
        assert_eq!(out.code, 6, "{args:?}\n{}", out.details());
        let json = out.json();
        assert_eq!(json["outcome"], "invalid", "{args:?}");
        let problems = json["problems"].as_array().unwrap();
        for file in ["V1__pipe.sql", "V2__device.sql"] {
            assert!(
                problems.iter().any(|p| p["kind"] == "unreadable"
                    && p["file"].as_str().is_some_and(|f| f.ends_with(file))
                    && p["message"].as_str().is_some_and(|m| m.contains(file))),
                "{args:?}: no problem for {file}: {json:#}"
            );
            if args[0] != "status" {
                assert!(out.stderr.contains(file), "{args:?}\n{}", out.details());
            }
        }
        // A read of the FIFO would block for ever: the run's timeout above
        // is what catches that; the time is report-only.
        eprintln!("special files, {args:?}: refused after {took:?}");
    }
    assert_untouched("special files", &db);
}
