//! Each layout's names, and what `auto` tells from a folder.

use super::*;

fn up(version: i64, name: &str) -> FileName {
    FileName::Up {
        version: Version::Number(version),
        name: name.into(),
    }
}

#[test]
fn each_tool_reads_its_names() {
    let s = Layout::Sqlx;
    assert_eq!(
        s.read_name("20240101000000_add_users.sql"),
        up(20240101000000, "add_users")
    );
    assert_eq!(s.read_name("1_init.up.sql"), up(1, "init"));
    assert_eq!(
        s.read_name("1_init.down.sql"),
        FileName::Down { version: 1.into() }
    );
    assert_eq!(s.read_name("README.md"), FileName::Ignored);
    assert_eq!(s.read_name("init.sql"), FileName::Ignored);
    assert!(matches!(
        s.read_name("schema_dump.sql"),
        FileName::Refused { .. }
    ));
    let g = Layout::Goose;
    assert_eq!(g.read_name("00001_init.sql"), up(1, "init"));
    assert!(matches!(g.read_name("00002.sql"), FileName::Refused { .. }));
    assert!(matches!(g.read_name("init.sql"), FileName::Refused { .. }));
    assert!(matches!(g.read_name("0_x.sql"), FileName::Refused { .. }));
    let m = Layout::GolangMigrate;
    assert_eq!(m.read_name("0001_init.up.sql"), up(1, "init"));
    assert_eq!(
        m.read_name("0001_init.down.sql"),
        FileName::Down { version: 1.into() }
    );
    assert_eq!(m.read_name("0001_init.sql"), FileName::Ignored);
    assert_eq!(m.read_name("x_init.up.sql"), FileName::Ignored);
    let d = Layout::Dbmate;
    assert_eq!(
        d.read_name("20240101000000_add_users.sql"),
        up(20240101000000, "add_users")
    );
    assert_eq!(d.read_name("001-init.sql"), up(1, "-init"));
    assert_eq!(d.read_name("init.sql"), FileName::Ignored);
    assert_eq!(
        d.version_text(Path::new("db/001_init.sql"), &Version::Number(1)),
        "001"
    );
    assert_eq!(Layout::Refinery.read_name("V3__x.sql"), up(3, "x"));
}

#[test]
fn a_recorded_name_is_told_without_making_it() {
    let f = Layout::Flyway;
    assert!(f.records_name_as("add_users_table", "add users table"));
    assert!(!f.records_name_as("add_users_table", "add_users_table"));
    assert!(!f.records_name_as("add users", "add_users"));
    let long = "x_".repeat(150);
    assert!(f.records_name_as(&long, &flyway::description(&long)));
    assert!(Layout::Refinery.records_name_as("a_b", "a_b"));
    assert!(!Layout::Refinery.records_name_as("a_b", "a b"));
}

#[test]
fn flyway_versions_are_told_as_flyway_reads_them() {
    for (name, shape) in [
        ("V1__a.sql", Some(false)),
        ("V1.sql", Some(false)),
        ("V001__x.SQL", Some(false)),
        ("V12__a-b.sql", Some(false)),
        ("V1.1__a.sql", Some(true)),
        ("V1_1__a.sql", Some(true)),
        ("V20210608_1249__x.sql", Some(true)),
        ("V1.1.sql", Some(true)),
        ("V1x__a.sql", None),
        ("V1..1__a.sql", None),
        ("V99999999999999999999__a.sql", None),
        ("V1__a.txt", None),
        ("V1_a.sql", None),
        ("R__a.sql", None),
    ] {
        assert_eq!(flyway::version_shape(name), shape, "{name}");
        // What it tells, flyway::name reads the same way.
        if let Some(dotted) = shape {
            match flyway::name(name) {
                FileName::Up { version, .. } => {
                    assert_eq!(matches!(version, Version::Dotted(_)), dotted, "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

#[test]
fn auto_keeps_refinery_and_tells_the_others_apart() {
    let folder = |files: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    };
    let refinery = folder(&[("V1__a.sql", "select 1;"), ("1_stray.sql", "select 1;")]);
    assert_eq!(detect(refinery.path()), Ok(Layout::Refinery));
    let flyway = folder(&[("V1.0__a.sql", "select 1;"), ("V1_1__b.sql", "select 1;")]);
    assert_eq!(detect(flyway.path()), Ok(Layout::Flyway));
    // Flyway's when one name only Flyway reads, refinery's names
    // beside it; refinery's when a name is neither's.
    let mixed = folder(&[("V1__a.sql", "select 1;"), ("V1.1__b.sql", "select 1;")]);
    assert_eq!(detect(mixed.path()), Ok(Layout::Flyway));
    let repeatable = folder(&[("V1__a.sql", "select 1;"), ("R__view.sql", "select 1;")]);
    assert_eq!(detect(repeatable.path()), Ok(Layout::Flyway));
    let neither = folder(&[("V1.1__b.sql", "select 1;"), ("V2x__a.sql", "select 1;")]);
    assert_eq!(detect(neither.path()), Ok(Layout::Refinery));
    let misnamed = folder(&[("V1__add-users.sql", "select 1;")]);
    assert_eq!(detect(misnamed.path()), Ok(Layout::Refinery));
    let nested = folder(&[("V2.1__x.sql", "select 1;"), ("sub/V1__a.sql", "select 1;")]);
    assert_eq!(detect(nested.path()), Ok(Layout::Flyway));
    let empty = folder(&[]);
    assert_eq!(detect(empty.path()), Ok(Layout::Refinery));
    let goose = folder(&[("00001_a.sql", "-- note\n-- +goose Up\nselect 1;\n")]);
    assert_eq!(detect(goose.path()), Ok(Layout::Goose));
    let dbmate = folder(&[("20240101000000_a.sql", "-- migrate:up\nselect 1;\n")]);
    assert_eq!(detect(dbmate.path()), Ok(Layout::Dbmate));
    let sqlx = folder(&[("20240101000000_a.sql", "select 1;\n")]);
    assert_eq!(detect(sqlx.path()), Ok(Layout::Sqlx));
    let pairs = folder(&[("1_a.up.sql", "select 1;"), ("1_a.down.sql", "select 1;")]);
    assert_eq!(detect(pairs.path()), Ok(Layout::GolangMigrate));
}

#[test]
fn the_flag_names_every_layout() {
    for layout in Layout::ALL {
        assert_eq!(
            layout.name().parse::<LayoutFlag>(),
            Ok(LayoutFlag::Fixed(layout))
        );
    }
    assert_eq!("auto".parse::<LayoutFlag>(), Ok(LayoutFlag::Auto));
    assert!("Goose".parse::<LayoutFlag>().is_err());
}
