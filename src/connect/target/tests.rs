//! Resolving a connection: the URL, libpq's variables, and what is shown of it.

use super::*;

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn url_is_described_without_its_password() {
    let t = ConnectTarget::resolve(
        Some("postgres://app:s3cret@db.example:6543/prod"),
        &env(&[]),
    )
    .unwrap();
    assert_eq!(t.to_string(), "app@db.example:6543/prod");
    assert_eq!(t.database(), "prod");
    assert!(!format!("{t}").contains("s3cret"));
}

#[test]
fn an_at_sign_in_the_query_is_the_querys_as_libpq_reads_it() {
    let resolve = |url: &str| ConnectTarget::resolve(Some(url), &env(&[]));
    // Azure's documented form: the user name holds the server's.
    let t =
        resolve("postgres://srv.example:5433/pg?user=admin@srv&password=Zq7Xk9Wp&sslmode=require")
            .unwrap();
    assert_eq!(t.config.get_user(), Some("admin@srv"));
    assert_eq!(t.config.get_password(), Some(&b"Zq7Xk9Wp"[..]));
    assert_eq!(t.config.get_hosts(), [Host::Tcp("srv.example".into())]);
    assert_eq!(t.config.get_ports(), [5433]);
    assert_eq!(t.to_string(), "admin@srv@srv.example:5433/pg");
    assert!(
        t.tls.describe().contains("sslmode=require"),
        "{}",
        t.tls.describe()
    );
    // No user information: the query's password came before the '@'.
    let t = ConnectTarget::resolve(
        Some("postgres://db.example/app?password=Zq7Xk9Wp&application_name=deploy@ci"),
        &env(&[("PGUSER", "app")]),
    )
    .unwrap();
    assert_eq!(t.config.get_hosts(), [Host::Tcp("db.example".into())]);
    assert_eq!(t.config.get_dbname(), Some("app"));
    assert_eq!(t.config.get_password(), Some(&b"Zq7Xk9Wp"[..]));
    assert_eq!(t.config.get_application_name(), Some("deploy@ci"));
    assert_eq!(t.to_string(), "app@db.example:5432/app");
    // A password's raw '/', and a '?' after it, read as before.
    let t = resolve("postgres://u:ab/cd@h/db").unwrap();
    assert_eq!(t.config.get_password(), Some(&b"ab/cd"[..]));
    assert_eq!(t.to_string(), "u@h:5432/db");
    let t = resolve("postgres://u:a/b?c@h/db").unwrap();
    assert_eq!(t.config.get_password(), Some(&b"a/b?c"[..]));
    assert_eq!(t.to_string(), "u@h:5432/db");
    // Without a path libpq misreads it too: refused, and not shown, with
    // a port (read as a password) or without (read as the user).
    for url in [
        "postgres://h?password=Zq7Xk9Wp&user=a@b",
        "postgres://h:5432?password=Zq7Xk9Wp&user=a@b",
        "postgres://h:5432?user=a@b&password=Zq7Xk9Wp",
    ] {
        let err = resolve(url).err().unwrap();
        assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
        assert!(err.message().contains("%40"), "{url}: {err}");
        assert!(!err.message().contains("Zq7"), "{url}: {err}");
    }
}

#[test]
fn libpq_variables_fill_what_the_url_leaves_out() {
    let vars = [
        ("PGHOST", "h1"),
        ("PGPORT", "5433"),
        ("PGUSER", "u"),
        ("PGPASSWORD", "pw"),
        ("PGDATABASE", "d"),
        ("PGAPPNAME", "ci-42"),
    ];
    let t = ConnectTarget::resolve(None, &env(&vars)).unwrap();
    assert_eq!(t.to_string(), "u@h1:5433/d");
    assert_eq!(t.application_name(), Some("ci-42"));
    let t = ConnectTarget::resolve(Some("postgres://other@h2/x"), &env(&vars)).unwrap();
    assert_eq!(t.to_string(), "other@h2:5433/x");
    let t = ConnectTarget::resolve(Some("postgres://other@h2:7000/x"), &env(&vars)).unwrap();
    assert_eq!(t.to_string(), "other@h2:7000/x");
    let t = ConnectTarget::resolve(Some("postgres://other@[::1]:7001/x"), &env(&vars)).unwrap();
    assert_eq!(t.to_string(), "other@::1:7001/x");
    let t = ConnectTarget::resolve(Some("postgres://other@h2"), &env(&[])).unwrap();
    assert_eq!(
        t.database(),
        "other",
        "the database defaults to the user, as in libpq"
    );
}

#[test]
fn malformed_urls_and_values_are_usage_errors_that_do_not_echo_them() {
    for bad in [
        "postgres://u:secretpw@h:notaport/db",
        "postgres://u:secretpw@h/db?sslmode=sometimes",
        "postgres://u:secretpw@h/db?bogus_option=1",
        "host=h password='secretpw",
    ] {
        let err = ConnectTarget::resolve(Some(bad), &env(&[]))
            .err()
            .expect(bad);
        assert_eq!(err.outcome, crate::outcome::Outcome::Usage, "{bad}");
        let text = err.message();
        assert!(text.contains("malformed"), "{bad}: {text}");
        assert!(!text.contains("secretpw"), "{bad}: {text}");
    }
    let err = ConnectTarget::resolve(None, &env(&[("PGPORT", "x")]))
        .err()
        .unwrap();
    assert!(err.message().contains("PGPORT"));
    let err = ConnectTarget::resolve(None, &env(&[("PGSSLMODE", "sometimes")]))
        .err()
        .unwrap();
    assert!(err.message().contains("PGSSLMODE"));
}

#[test]
fn no_byte_of_a_password_is_shown_however_malformed_the_url() {
    const PASSWORD: &str = "Zq7Xk9Wp";
    let (a, b) = PASSWORD.split_at(4);
    let cases = [
        format!("postgres://u:{a}@{b}@h/db"),
        format!("postgres://u:{a}@{b}@h:5432,h2/db?sslmode=disable"),
        format!("postgres://u:{PASSWORD}@h:notaport/db"),
        format!("postgres://u:{PASSWORD}@/db"),
        format!("postgres://u:{PASSWORD}@h/db?sslmode=bogus"),
        format!("postgres://u:{PASSWORD}@[::1/db"),
        format!("postgres://u:{a}#{b}@h/db"),
        format!("postgres://u:{a}:{b}@h/db"),
        format!("postgres://u:{a}/{b}@h/db"),
        format!("postgres://u:{a}?{b}@h/db"),
        format!("postgres://u:{a} {b}@h/db"),
        format!("postgres://u:%ZZ{PASSWORD}@h/db"),
        format!("postgres://u:{PASSWORD}@h,h2:x/db"),
        format!("postgres://h/db?password={PASSWORD}&user=a@b"),
        format!("postgres://h?password={PASSWORD}&user=a@b"),
        format!("postgres://h:5432/db?user=a@b&password={PASSWORD}"),
        format!("postgres:/u:{PASSWORD}@h/db"),
        format!("postgres//u:{PASSWORD}@h/db"),
        format!("host=h password={a} {b}"),
        format!("host=h password='{PASSWORD}"),
        format!("host=h password={PASSWORD} port=x"),
    ];
    let fragments: Vec<&str> = (0..=PASSWORD.len() - 3)
        .map(|i| &PASSWORD[i..i + 3])
        .collect();
    for url in &cases {
        let shown = match ConnectTarget::resolve(Some(url), &env(&[])) {
            Ok(target) => target.to_string(),
            Err(failure) => failure.message(),
        };
        for fragment in &fragments {
            assert!(
                !shown.contains(fragment),
                "{url}: {fragment:?} of the password is shown in {shown:?}"
            );
        }
    }
    let err = ConnectTarget::resolve(Some(&cases[0]), &env(&[]))
        .err()
        .expect("a second '@' is refused");
    assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
    assert!(err.message().contains("%40"), "{err}");
}

#[test]
fn the_password_file_fills_a_missing_password_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, "db.example:5432:app:deploy:from-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.display().to_string();
    let vars = [("PGPASSFILE", path.as_str())];
    let t = ConnectTarget::resolve(Some("postgres://deploy@db.example/app"), &env(&vars)).unwrap();
    assert_eq!(t.config.get_password(), Some(&b"from-file"[..]));
    let t = ConnectTarget::resolve(Some("postgres://deploy:given@db.example/app"), &env(&vars))
        .unwrap();
    assert_eq!(t.config.get_password(), Some(&b"given"[..]));
    let with_env = [("PGPASSFILE", path.as_str()), ("PGPASSWORD", "from-env")];
    let t =
        ConnectTarget::resolve(Some("postgres://deploy@db.example/app"), &env(&with_env)).unwrap();
    assert_eq!(t.config.get_password(), Some(&b"from-env"[..]));
    let t = ConnectTarget::resolve(Some("postgres://other@db.example/app"), &env(&vars)).unwrap();
    assert_eq!(t.config.get_password(), None);
}

#[test]
fn apply_prefers_writes_unless_target_session_attrs_is_given() {
    let prefers = |url: &str, vars: &[(&str, &str)]| {
        let t = ConnectTarget::resolve(Some(url), &env(vars)).unwrap();
        (
            t.preferring_writes().prefer_writes,
            t.config.get_target_session_attrs(),
        )
    };
    let any = TargetSessionAttrs::Any;
    assert_eq!(prefers("postgres://u@h1,h2/d", &[]), (true, any));
    assert_eq!(
        prefers("postgres://u@h1,h2/d?target_session_attrs=any", &[]),
        (false, any)
    );
    assert_eq!(
        prefers("host=h1,h2 target_session_attrs=read-write", &[]),
        (false, TargetSessionAttrs::ReadWrite)
    );
    let vars = [("PGTARGETSESSIONATTRS", "read-only")];
    assert_eq!(
        prefers("postgres://u@h1,h2/d", &vars),
        (false, TargetSessionAttrs::ReadOnly)
    );
    // The URL wins over the variable.
    assert_eq!(
        prefers("postgres://u@h/d?target_session_attrs=any", &vars),
        (false, any)
    );
    // Only apply asks: a target as resolved keeps libpq's default.
    let t = ConnectTarget::resolve(Some("postgres://u@h1,h2/d"), &env(&[])).unwrap();
    assert!(!t.prefer_writes);
    for (url, vars, expected) in [
        (
            "postgres://u@h/d?target_session_attrs=primary",
            &[][..],
            "is not supported",
        ),
        (
            "postgres://u@h/d?target_session_attrs=rw",
            &[],
            "unknown target_session_attrs \"rw\"",
        ),
        (
            "postgres://u@h/d",
            &[("PGTARGETSESSIONATTRS", "standby")],
            "PGTARGETSESSIONATTRS: ",
        ),
    ] {
        let err = ConnectTarget::resolve(Some(url), &env(vars)).err().unwrap();
        assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
        assert!(err.message().contains(expected), "{url}: {err}");
    }
}

#[test]
fn connect_timeout_is_per_attempt_from_the_url_or_pgconnect_timeout() {
    let t = ConnectTarget::resolve(Some("postgres://u@h/d?connect_timeout=3"), &env(&[])).unwrap();
    assert_eq!(t.attempt_timeout, Some(Duration::from_secs(3)));
    let t = ConnectTarget::resolve(
        Some("postgres://u@h/d"),
        &env(&[("PGCONNECT_TIMEOUT", "4")]),
    )
    .unwrap();
    assert_eq!(t.attempt_timeout, Some(Duration::from_secs(4)));
    let err = ConnectTarget::resolve(None, &env(&[("PGCONNECT_TIMEOUT", "soon")]))
        .err()
        .unwrap();
    assert!(err.message().contains("PGCONNECT_TIMEOUT"));
}
