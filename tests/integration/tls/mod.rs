//! TLS against a real TLS-enabled cluster, with a CA made for the test:
//! every libpq sslmode, root certificates from the URL and the environment,
//! and the refusals (wrong CA, wrong host name, no TLS on the server);
//! client certificates in `client_certs`.

mod client_certs;

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{send_signal, wait_until, Miglock, MigrationDir, RunOutput, SETTLE};
use crate::probes::{sessions_like, LockGate};

/// A CA, a server certificate it signed for `names`, and the CA's PEM
/// in a file the client can be pointed at.
struct Pki {
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    server_cert: String,
    server_key: String,
    _dir: tempfile::TempDir,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn pki(server_names: &[&str]) -> Pki {
    let (ca_pem, issuer) = ca("miglock test CA");
    let (other_ca_pem, _) = ca("some other CA");
    let mut params = CertificateParams::new(
        server_names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, server_names[0]);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("root.crt");
    let other_ca_file = dir.path().join("other-root.crt");
    std::fs::write(&ca_file, ca_pem).unwrap();
    std::fs::write(&other_ca_file, other_ca_pem).unwrap();
    Pki {
        ca_file,
        other_ca_file,
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
        _dir: dir,
    }
}

/// A private cluster serving TLS with the PKI's server certificate.
fn tls_cluster(server_names: &[&str]) -> (Cluster, Pki) {
    let pki = pki(server_names);
    let cluster = Cluster::start();
    cluster.write_server_file("server.crt", &pki.server_cert);
    cluster.write_server_file("server.key", &pki.server_key);
    // ALTER SYSTEM refuses to share a (multi-statement) transaction.
    let mut admin = cluster.admin();
    for statement in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(statement).unwrap();
    }
    wait_until(SETTLE, || {
        cluster
            .admin()
            .query_one("SHOW ssl", &[])
            .unwrap()
            .get::<_, String>(0)
            == "on"
    });
    (cluster, pki)
}

fn with_params(db: &TestDb, params: &str) -> String {
    format!("{}?{params}", db.url())
}

fn migrations() -> MigrationDir {
    MigrationDir::with(&[("V1__t.sql", "CREATE TABLE t (id int);\n")])
}

fn apply_with_url(url: &str, dir: &MigrationDir) -> RunOutput {
    Miglock::new()
        .env("DATABASE_URL", url)
        .args([
            "apply",
            "--format",
            "json",
            "--connect-timeout",
            "5s",
            "--migrations",
        ])
        .arg(dir.path())
        .run()
}

/// Whether the miglock session named `prefix…` uses TLS, per `pg_stat_ssl`.
fn session_is_encrypted(db: &TestDb, prefix: &str) -> bool {
    let rows = db.query_strings(&format!(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = current_database() AND a.application_name LIKE '{prefix}%'"
    ));
    assert_eq!(rows.len(), 1, "one {prefix} session");
    rows[0][0].as_deref() == Some("t")
}

#[test]
fn require_really_encrypts_and_disable_does_not() {
    let (cluster, _pki) = tls_cluster(&["localhost"]);
    for (mode, encrypted) in [("require", true), ("disable", false), ("prefer", true)] {
        let db = cluster.create_db();
        let dir = migrations();
        // A `wait` session stays connected long enough to be looked at.
        let waiter = Miglock::new()
            .env("DATABASE_URL", with_params(&db, &format!("sslmode={mode}")))
            .args(["wait", "--timeout", "30s", "--migrations"])
            .arg(dir.path())
            .spawn();
        wait_until(SETTLE, || sessions_like(&db, "miglock wait%") == 1);
        assert_eq!(
            session_is_encrypted(&db, "miglock wait"),
            encrypted,
            "sslmode={mode}"
        );
        let out = apply_with_url(&with_params(&db, &format!("sslmode={mode}")), &dir);
        out.assert_success();
        // The cancel key is read through TLS as through plain text.
        assert_eq!(
            out.json()["lock"]["mode_reason"],
            "direct",
            "sslmode={mode}"
        );
        RunOutput::from_child(waiter).assert_success();
        assert!(db.table_exists("t"), "sslmode={mode}");
    }
}

#[test]
fn verify_full_accepts_the_right_ca_and_host_and_refuses_others() {
    let (cluster, pki) = tls_cluster(&["localhost", "127.0.0.1"]);
    let db = cluster.create_db();
    let dir = migrations();
    let ca = pki.ca_file.display().to_string();
    let other = pki.other_ca_file.display().to_string();

    let wrong_ca = apply_with_url(
        &with_params(&db, &format!("sslmode=verify-full&sslrootcert={other}")),
        &dir,
    );
    wrong_ca
        .assert_code(5)
        .assert_stderr_contains("error performing TLS handshake")
        .assert_stderr_contains("UnknownIssuer")
        .assert_stderr_contains("sslmode=verify-full");
    assert!(
        !wrong_ca.stderr.contains("CONNECT_RETRY"),
        "a certificate error is not retried"
    );
    assert_eq!(wrong_ca.json()["outcome"], "unavailable");
    assert!(!db.table_exists("t"));

    let out = apply_with_url(
        &with_params(&db, &format!("sslmode=verify-full&sslrootcert={ca}")),
        &dir,
    );
    out.assert_success();
    assert!(db.table_exists("t"));
}

#[test]
fn verify_full_refuses_a_wrong_host_name_that_verify_ca_accepts() {
    let (cluster, pki) = tls_cluster(&["db.example"]);
    let db = cluster.create_db();
    let dir = migrations();
    let ca = pki.ca_file.display().to_string();
    apply_with_url(
        &with_params(&db, &format!("sslmode=verify-full&sslrootcert={ca}")),
        &dir,
    )
    .assert_code(5)
    .assert_stderr_contains("certificate not valid for name \"127.0.0.1\"");
    assert!(!db.table_exists("t"));
    apply_with_url(
        &with_params(&db, &format!("sslmode=verify-ca&sslrootcert={ca}")),
        &dir,
    )
    .assert_success();
    assert!(db.table_exists("t"));
}

#[test]
fn libpq_variables_choose_the_mode_and_root() {
    let (cluster, pki) = tls_cluster(&["127.0.0.1"]);
    let db = cluster.create_db();
    let dir = migrations();
    let run = |mode: &str, root: &std::path::Path| {
        Miglock::new()
            .env("DATABASE_URL", db.url())
            .env("PGSSLMODE", mode)
            .env("PGSSLROOTCERT", root)
            .args(["apply", "--connect-timeout", "5s", "--migrations"])
            .arg(dir.path())
            .run()
    };
    run("verify-full", &pki.other_ca_file)
        .assert_code(5)
        .assert_stderr_contains("UnknownIssuer");
    // The URL wins over the environment.
    Miglock::new()
        .env("DATABASE_URL", with_params(&db, "sslmode=disable"))
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &pki.other_ca_file)
        .args(["status", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_success();
    run("verify-full", &pki.ca_file).assert_success();
    assert!(db.table_exists("t"));
}

#[test]
fn tls_refusals_and_bad_settings() {
    let db = Cluster::shared().create_db();
    let dir = migrations();
    // The shared cluster has no TLS.
    apply_with_url(&with_params(&db, "sslmode=require"), &dir)
        .assert_code(5)
        .assert_stderr_contains("TLS");
    // `prefer` falls back to plain text.
    apply_with_url(&with_params(&db, "sslmode=prefer"), &dir).assert_success();
    assert!(db.table_exists("t"));
    apply_with_url(
        &with_params(&db, "sslmode=verify-full&sslrootcert=/nonexistent/root.crt"),
        &dir,
    )
    .assert_code(2)
    .assert_stderr_contains("cannot read the root certificate file /nonexistent/root.crt");
    // libpq's refusals: the system's roots prove nothing without the host name.
    for params in [
        "sslmode=verify-ca&sslrootcert=system",
        "sslmode=require&sslrootcert=system",
    ] {
        apply_with_url(&with_params(&db, params), &dir)
            .assert_code(2)
            .assert_stderr_contains("sslrootcert=system needs sslmode=verify-full");
    }
    apply_with_url(&with_params(&db, "sslmode=verify-ca"), &dir)
        .assert_code(2)
        .assert_stderr_contains("sslmode=verify-ca needs a root certificate file");
    let out = apply_with_url(&with_params(&db, "sslmode=sometimes"), &dir);
    out.assert_code(2)
        .assert_stderr_contains("unknown sslmode \"sometimes\"");
    assert_eq!(out.json()["outcome"], "usage");
    Miglock::for_db(&db)
        .env("PGSSLMODE", "maybe")
        .args(["apply", "--migrations"])
        .arg(dir.path())
        .run()
        .assert_code(2)
        .assert_stderr_contains("PGSSLMODE");
}

/// The connector that reads the cancel key (`connect::sniff`, which does
/// the SSLRequest itself) leaves TLS as it was: each mode encrypts or not
/// as before, SCRAM binds the channel where `channel_binding=require`
/// asks (and refuses where it cannot), the key is read through TLS
/// (`--lock-mode auto`: session, direct), and a SIGTERM's cancel request,
/// which goes through the same connector, stops a migration blocked on a
/// lock.
#[test]
fn every_tls_mode_binds_the_channel_reads_the_key_and_cancels_through_the_sniffing_connector() {
    let (cluster, pki) = tls_cluster(&["localhost", "127.0.0.1"]);
    let ca = pki.ca_file.display().to_string();
    let modes = [
        ("sslmode=disable".to_string(), false),
        // Asked as prefer, as before (see `connect::tls`).
        ("sslmode=allow".to_string(), true),
        ("sslmode=prefer&channel_binding=require".to_string(), true),
        ("sslmode=require&channel_binding=require".to_string(), true),
        (
            format!("sslmode=verify-ca&sslrootcert={ca}&channel_binding=require"),
            true,
        ),
        (
            format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"),
            true,
        ),
    ];
    for (params, encrypted) in modes {
        let db = cluster.create_db();
        let dir = MigrationDir::with(&[
            ("V1__t.sql", "CREATE TABLE t (id int);\n"),
            ("V2__gated.sql", LockGate::SQL),
        ]);
        let mut gate = LockGate::close(&db);
        let mut apply = Miglock::new();
        apply
            .env("DATABASE_URL", with_params(&db, &params))
            .args(["apply", "--format", "json", "--migrations"])
            .arg(dir.path());
        let mut child = apply.spawn_watched();
        child.wait_for_stderr("LOCK_ACQUIRED", SETTLE);
        wait_until(SETTLE, || LockGate::waiting(&db) == 1);
        assert_eq!(
            session_is_encrypted(&db, "miglock apply"),
            encrypted,
            "{params}"
        );
        send_signal(child.id(), "TERM");
        let out = child.finish();
        out.assert_code(130)
            .assert_stderr_contains("LOCK_MODE mode=session reason=direct key_pid=")
            .assert_stderr_contains("INTERRUPTED signal=SIGTERM");
        let json = out.json();
        assert_eq!(json["lock"]["mode_reason"], "direct", "{params}");
        assert_eq!(crate::harness::versions(&json["applied"]), [1], "{params}");
        // Cancelled, not left waiting: the gate is still closed.
        wait_until(SETTLE, || LockGate::waiting(&db) == 0);
        assert_eq!(db.history(), [1], "{params}");
        gate.open();
    }
    // Channel binding cannot hold without TLS: refused, as libpq does.
    let db = cluster.create_db();
    let out = apply_with_url(
        &with_params(&db, "sslmode=disable&channel_binding=require"),
        &migrations(),
    );
    out.assert_code(5);
    assert!(!db.table_exists("t"));
}
