use super::*;

#[test]
fn flyway_names_get_one_hint_for_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "V1.0.10__a.sql",
        "V2_1__b.sql",
        "R__c.sql",
        "U3__d.sql",
        "V4__ok.sql",
    ] {
        std::fs::write(dir.path().join(name), "SELECT 1;").unwrap();
    }
    let problems = MigrationSet::load(dir.path()).unwrap_err();
    assert_eq!(problems.0.len(), 4, "{problems}");
    let text = problems.to_string();
    assert_eq!(text.matches("look like Flyway").count(), 1, "{text}");
    assert!(text.contains("V1.0.10 → V10010"), "{text}");
}

#[test]
fn a_byte_order_mark_is_kept_for_the_checksum_and_left_out_of_the_sql() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\u{feff}CREATE TABLE t (id int);\n";
    std::fs::write(dir.path().join("V1__bom.sql"), text).unwrap();
    let set = MigrationSet::load(dir.path()).unwrap();
    let m = &set.migrations[0];
    assert_eq!(m.read_script().unwrap(), "CREATE TABLE t (id int);\n");
    let theirs = refinery::Migration::unapplied("V1__bom", text).unwrap();
    assert_eq!(m.checksum, theirs.checksum());
    // A mark and nothing else is an empty file.
    std::fs::write(dir.path().join("V1__bom.sql"), "\u{feff}\n").unwrap();
    let problems = MigrationSet::load(dir.path()).unwrap_err();
    assert!(problems.to_string().contains("is empty"), "{problems}");
}

#[test]
fn a_nul_byte_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("V1__nul.sql"), "SELECT 1;\nSELECT '\0';").unwrap();
    let problems = MigrationSet::load(dir.path()).unwrap_err();
    assert_eq!(problems.0[0].kind, ProblemKind::Unreadable);
    assert!(
        problems.0[0]
            .message
            .contains("NUL byte (line 2, offset 18)"),
        "{problems}"
    );
}

#[test]
fn what_every_user_may_write_to_is_found_without_a_lookup_of_its_own() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let chmod = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    std::fs::write(dir.path().join("V1__a.sql"), "SELECT 1;").unwrap();
    std::fs::write(dir.path().join("V2__b.sql"), "SELECT 2;").unwrap();
    chmod(&dir.path().join("V2__b.sql"), 0o646);
    chmod(dir.path(), 0o1777);
    let mut reading = MigrationSet::read(dir.path());
    let modes: Vec<(Option<Version>, bool)> = reading
        .writable
        .iter()
        .map(|p| (p.version.clone(), p.message.contains("mode 1777: sticky")))
        .collect();
    assert_eq!(modes, [(None, true), (Some(Version::from(2)), false)]);
    assert!(reading.writable[1].message.contains("mode 0646"));
    // Where migrations run they are problems; elsewhere, warnings.
    reading.judge_writable(false, true);
    assert_eq!(reading.problems.len(), 2);
    assert!(reading.writable.is_empty());
    let mut warned = MigrationSet::read(dir.path());
    warned.judge_writable(false, false);
    assert!(warned.problems.is_empty() && warned.writable.is_empty());
    chmod(dir.path(), 0o700);
}

#[test]
fn hidden_files_are_ignored_even_when_named_like_migrations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("V1__a.sql"), "SELECT 1;").unwrap();
    // Vim's swap file, a hidden copy, and Emacs' lock file (a dangling link).
    std::fs::write(dir.path().join(".V1__a.sql.swp"), "junk").unwrap();
    std::fs::write(dir.path().join(".V2__copy.sql"), "SELECT 2;").unwrap();
    std::os::unix::fs::symlink("user@host.1234:1", dir.path().join(".#V8__x.sql")).unwrap();
    std::fs::write(dir.path().join(".sql"), "").unwrap();
    let set = MigrationSet::load(dir.path()).unwrap();
    let names: Vec<String> = set.migrations.iter().map(|m| m.to_string()).collect();
    assert_eq!(names, ["V1__a"]);
    // A visible misnamed file is still a problem.
    std::fs::write(dir.path().join("V8__x.sql.sql"), "SELECT 8;").unwrap();
    std::fs::write(dir.path().join("v9__x.sql"), "SELECT 9;").unwrap();
    let problems = MigrationSet::load(dir.path()).unwrap_err();
    assert_eq!(problems.0.len(), 2, "{problems}");
}
