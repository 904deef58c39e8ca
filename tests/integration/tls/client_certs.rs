//! Client certificates against a server that lets users in by them alone
//! (`hostssl all all 127.0.0.1/32 cert clientcert=verify-full`): given as
//! URL parameters, in a `key=value` string, in `PGSSLCERT`/`PGSSLKEY` and
//! in libpq's `~/.postgresql`; every PEM key form rustls reads, and a
//! chain through an intermediate CA; the server's refusals (exit 5) and
//! the key files miglock refuses itself (exit 2).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::ca;
use crate::cluster::{Cluster, TestDb};
use crate::harness::{Miglock, MigrationDir, RunOutput};

/// A server whose only way in over TCP is a client certificate its CA
/// signed, naming the user (`CN=postgres`).
struct CertServer {
    cluster: Cluster,
    issuer: Issuer<'static, KeyPair>,
    /// The client's files: the CA, certificates and keys.
    dir: tempfile::TempDir,
    ca_file: PathBuf,
}

fn cert_server() -> CertServer {
    let (ca_pem, issuer) = ca("miglock test CA");
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();
    let cluster = Cluster::start_with_files(
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "'server.crt'"),
            ("ssl_key_file", "'server.key'"),
            ("ssl_ca_file", "'root.crt'"),
        ],
        &[
            ("server.crt", &server_cert.pem()),
            ("server.key", &server_key.serialize_pem()),
            ("root.crt", &ca_pem),
            // The harness's own connections use the socket.
            (
                "pg_hba.conf",
                "local all all trust\nhostssl all all 127.0.0.1/32 cert clientcert=verify-full\n",
            ),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("root.crt");
    std::fs::write(&ca_file, ca_pem).unwrap();
    CertServer {
        cluster,
        issuer,
        dir,
        ca_file,
    }
}

impl CertServer {
    /// A client certificate for `user`, signed by `issuer` (the server's CA
    /// unless given), for `key`'s public key.
    fn cert_for(&self, user: &str, key: &KeyPair, issuer: Option<&Issuer<'_, KeyPair>>) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, user);
        params
            .signed_by(key, issuer.unwrap_or(&self.issuer))
            .unwrap()
            .pem()
    }

    /// Writes a client file with `mode`; its path.
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A certificate for `postgres` and its key (PKCS#8 P-256, as rcgen
    /// makes them), written as `<name>.crt` and `<name>.key` (0600).
    fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = self.cert_for("postgres", &key, None);
        (
            self.file(&format!("{name}.crt"), &cert, 0o644),
            self.file(&format!("{name}.key"), &key.serialize_pem(), 0o600),
        )
    }

    /// The database's URL without a password, verifying the server
    /// against the test CA, with `params` added.
    fn url(&self, db: &TestDb, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode=verify-full&sslrootcert={}{params}",
            self.cluster.port(),
            db.name(),
            self.ca_file.display()
        )
    }
}

fn with_cert(cert: &Path, key: &Path) -> String {
    format!("&sslcert={}&sslkey={}", cert.display(), key.display())
}

fn migrations() -> MigrationDir {
    MigrationDir::with(&[("V1__t.sql", "CREATE TABLE t (id int);\n")])
}

fn run(command: &str, url: &str, dir: &MigrationDir) -> RunOutput {
    Miglock::new()
        .env("DATABASE_URL", url)
        .args([command, "--format", "json", "--connect-timeout", "5s"])
        .arg("--migrations")
        .arg(dir.path())
        .run()
}

#[test]
fn a_client_certificate_is_presented_from_the_url_the_environment_or_home() {
    let server = cert_server();
    let db = server.cluster.create_db();
    let dir = migrations();
    let (cert, key) = server.client("client");

    // URL parameters.
    let out = run("apply", &server.url(&db, &with_cert(&cert, &key)), &dir);
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED version=1 name=t");
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.history(), [1]);
    assert!(db.table_exists("t"));

    // A key=value string.
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{}' \
         sslcert='{}' sslkey='{}'",
        server.cluster.port(),
        db.name(),
        server.ca_file.display(),
        cert.display(),
        key.display()
    );
    let out = run("status", &conninfo, &dir);
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");

    // PGSSLCERT and PGSSLKEY fill what the URL leaves out.
    let out = Miglock::new()
        .env("DATABASE_URL", server.url(&db, ""))
        .env("PGSSLCERT", &cert)
        .env("PGSSLKEY", &key)
        .args(["wait", "--timeout", "30s", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");

    // libpq's defaults: ~/.postgresql/postgresql.crt, postgresql.key, and
    // root.crt for the server.
    let home = tempfile::tempdir().unwrap();
    let dot = home.path().join(".postgresql");
    std::fs::create_dir(&dot).unwrap();
    std::fs::copy(&cert, dot.join("postgresql.crt")).unwrap();
    std::fs::copy(&key, dot.join("postgresql.key")).unwrap();
    std::fs::copy(&server.ca_file, dot.join("root.crt")).unwrap();
    let out = Miglock::new()
        .env("HOME", home.path())
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres@127.0.0.1:{}/{}?sslmode=verify-full",
                server.cluster.port(),
                db.name()
            ),
        )
        .args(["status", "--check", "--format", "json", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_success();
    assert_eq!(out.json()["outcome"], "current");
}

#[test]
fn every_pem_key_form_and_a_chain_through_an_intermediate_are_accepted() {
    let server = cert_server();
    let dir = migrations();
    let mut cases = Vec::new();
    // PKCS#1 RSA and SEC1 EC keys, as `openssl genrsa -traditional` and
    // `openssl ecparam -genkey` write them.
    for (name, pkcs8, traditional) in [("rsa", RSA_PKCS8, RSA_PKCS1), ("ec", EC_PKCS8, EC_SEC1)] {
        let key = KeyPair::from_pem(pkcs8).unwrap();
        let cert = server.file(
            &format!("{name}.crt"),
            &server.cert_for("postgres", &key, None),
            0o644,
        );
        let key = server.file(&format!("{name}.key"), traditional, 0o600);
        cases.push((name, cert, key));
    }
    // A chain: the leaf, then the intermediate CA that signed it; the
    // server trusts only the root.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "miglock test intermediate");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let intermediate_key = KeyPair::generate().unwrap();
    let intermediate = params.signed_by(&intermediate_key, &server.issuer).unwrap();
    let intermediate_issuer = Issuer::new(params, intermediate_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = server.cert_for("postgres", &leaf_key, Some(&intermediate_issuer));
    let chain = server.file("chain.crt", &format!("{leaf}{}", intermediate.pem()), 0o644);
    let leaf_key = server.file("chain.key", &leaf_key.serialize_pem(), 0o600);
    cases.push(("chain", chain, leaf_key));

    for (name, cert, key) in cases {
        let db = server.cluster.create_db();
        let out = run("apply", &server.url(&db, &with_cert(&cert, &key)), &dir);
        out.assert_success();
        assert_eq!(db.history(), [1], "{name}");
    }
}

#[test]
fn the_server_refuses_a_missing_certificate_one_for_another_user_or_from_another_ca() {
    let server = cert_server();
    let db = server.cluster.create_db();
    let dir = migrations();

    let out = run("apply", &server.url(&db, ""), &dir);
    out.assert_code(5)
        .assert_stderr_contains("connection requires a valid client certificate (SQLSTATE 28000)");
    assert!(
        !out.stderr.contains("CONNECT_RETRY"),
        "not retried: {}",
        out.stderr
    );
    assert_eq!(out.json()["outcome"], "unavailable");

    let key = KeyPair::generate().unwrap();
    let cert = server.file("app.crt", &server.cert_for("app", &key, None), 0o644);
    let key = server.file("app.key", &key.serialize_pem(), 0o600);
    let out = run("apply", &server.url(&db, &with_cert(&cert, &key)), &dir);
    out.assert_code(5)
        .assert_stderr_contains("certificate authentication failed for user \"postgres\"");
    assert!(
        !out.stderr.contains("CONNECT_RETRY"),
        "not retried: {}",
        out.stderr
    );

    // Signed by a CA the server does not trust: TLS 1.3 delivers the
    // server's refusal after the handshake, as an alert, and no retry
    // changes it.
    let (_, stranger) = ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let cert = server.file(
        "stranger.crt",
        &server.cert_for("postgres", &key, Some(&stranger)),
        0o644,
    );
    let key = server.file("stranger.key", &key.serialize_pem(), 0o600);
    let out = run("apply", &server.url(&db, &with_cert(&cert, &key)), &dir);
    out.assert_code(5)
        .assert_stderr_contains("received fatal alert: UnknownCA")
        .assert_stderr_contains(&format!("sslcert={})", cert.display()));
    assert!(
        !out.stderr.contains("CONNECT_RETRY"),
        "not retried: {}",
        out.stderr
    );
    assert!(!db.table_exists("refinery_schema_history"));
    assert!(!db.table_exists("t"));
}

#[test]
fn key_files_rustls_or_libpq_would_not_use_are_usage_errors_naming_the_file() {
    let server = cert_server();
    let db = server.cluster.create_db();
    let dir = migrations();
    let (cert, good_key) = server.client("client");
    const SSL_PASSWORD: &str = "sslpw-Zq7Xk9Wp";

    // Encrypted keys, with the passphrase given: refused, and the
    // passphrase never shown.
    for (name, pem, form) in [
        (
            "enc8.key",
            EC_ENCRYPTED_PKCS8,
            "PKCS#8 ENCRYPTED PRIVATE KEY",
        ),
        (
            "enctrad.key",
            EC_ENCRYPTED_TRADITIONAL,
            "Proc-Type: 4,ENCRYPTED",
        ),
    ] {
        let key = server.file(name, pem, 0o600);
        let url = server.url(
            &db,
            &format!("{}&sslpassword={SSL_PASSWORD}", with_cert(&cert, &key)),
        );
        let out = run("apply", &url, &dir);
        out.assert_code(2)
            .assert_stderr_contains(&format!(
                "the private key file {} is encrypted ({form})",
                key.display()
            ))
            .assert_stderr_contains("cannot decrypt keys")
            .assert_stderr_contains(&format!(
                "openssl pkcs8 -topk8 -nocrypt -in {}",
                key.display()
            ));
        assert_eq!(out.json()["outcome"], "usage");
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(SSL_PASSWORD), "{}", out.details());
        }
    }

    // A key others may read.
    let open = server.file(
        "open.key",
        &std::fs::read_to_string(&good_key).unwrap(),
        0o644,
    );
    run("apply", &server.url(&db, &with_cert(&cert, &open)), &dir)
        .assert_code(2)
        .assert_stderr_contains(&format!(
            "the private key file {} has mode 0644, open to group or others",
            open.display()
        ));

    // Missing files, a certificate without its key, a key of another pair.
    let missing = server.dir.path().join("missing.crt");
    run(
        "status",
        &server.url(&db, &with_cert(&missing, &good_key)),
        &dir,
    )
    .assert_code(2)
    .assert_stderr_contains(&format!(
        "cannot read the client certificate file {}",
        missing.display()
    ));
    let out = Miglock::new()
        .env("HOME", server.dir.path())
        .env(
            "DATABASE_URL",
            server.url(&db, &format!("&sslcert={}", cert.display())),
        )
        .args(["wait", "--migrations"])
        .arg(dir.path())
        .run();
    out.assert_code(2).assert_stderr_contains(&format!(
        "cannot read the private key file {}/.postgresql/postgresql.key",
        server.dir.path().display()
    ));
    let (_, other_key) = server.client("other");
    run(
        "apply",
        &server.url(&db, &with_cert(&cert, &other_key)),
        &dir,
    )
    .assert_code(2)
    .assert_stderr_contains(&format!(
        "the private key {} does not belong to the client certificate {}",
        other_key.display(),
        cert.display()
    ));
    assert!(!db.table_exists("refinery_schema_history"));
    assert!(!db.table_exists("t"));
}

/// A 2048-bit RSA key as `openssl genrsa -traditional` writes it (PKCS#1).
const RSA_PKCS1: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEpAIBAAKCAQEAtnqbGDbZcPkK12NMQQTBj6X4Icj94SW/EUgd7oSSlwECTznZ\n\
lX9VwIF/uqUZw7ymWEPIJFQMFZOPTdttZ+ncqLRU6CPJ/vXPrxtJ8Vbd2UmF/snw\n\
aRAlKnrv3BgoR0b4Vr3sVPk6uaOzxhhEFqb+OE7aXiJr7jl9igzCmQoCmhqHtpDI\n\
W1DhaVjDxZb0nRWuyz1CioxbsERg3opy/FKcgGU6QBHT7QcaU+tj28Fr45qS8rTg\n\
Rq/rqkPU5Uge326W05VNppdwh7dEBaeA33E7t0R3KqnzPwtc0DmyDJ3PFCJqfSc7\n\
KydVlYtc4J6iGeSXTs9SkS5LEU8KTb8xkse2QQIDAQABAoIBABT5gMxGubWnmpxp\n\
WIF8t3b4f836WVxAx3aIEJCzAlqDDi3nG2B4s3WeLP1aLtz12TT6DY5HbuAoBufP\n\
GgNAuVFW8Q+B1Z0NyiJ5g4VPE87/CXzg31ZkObFpUhq9WBvhR3hI+lpGD375Fxfl\n\
ACaOaVg1kBoT4M4QI6LzloaaxPPLePGD6T1xaVK2C9CWPFlXMGbCUsjBy8Iyp+46\n\
bXf+DzOvktWTsVMhil9qEBp+4hMV+7Wvb+nnPT787ZYSkQ7PueQ1Frwe4XIi/nAI\n\
5oK3H53bfRB7b1dG2J6v2NXMnW9mO+5wBHTxBRKfaXz8l2SaXqWvTaZIk6OUvjtn\n\
V7Wa5vECgYEA7qkyeNz69TbbujsflFi/jP9PV+n9imQFMb2j7YBK9HTJRhbd10jp\n\
Jhh0WJMcf+N+SU+IU8eUYSfC57VrLktXXcIAf1LyTR+WqIkclVFOnIv7jcVowxzV\n\
UdyB5Va+DZk6Z9ggpQC6prKISzwPWzATihXSwHCqhJPQ6EH7JGdOf50CgYEAw7x9\n\
7HyUkBAeRcXM4ahd0jVSjt5AtIw5Zwkq6Domvrig3R1kjZaHL0w0SEQF27kmfV88\n\
Q1FcNQhk1hyoMUVS1zKUiTsFFt26+e0v/rN+8cjL0enpEvOLg/v1zWbyx1vbOJ9A\n\
DomqOjLSzuKT0WQHyoKy/AjatWQYBJxqVJJSWfUCgYEAuCzMLWdjJ38JPANKUIHY\n\
eKfCBDcnmPes5oDRk4PQ1CuX88XLtsqmWea/Smdks/DMUSjWLMk04XD8wTFIoDY2\n\
Gr2PArLxF8FL043UCArx3m9MVlDEkuWaXY0MlP5GtlnML70jHBKe9+uIsH6N3zIP\n\
sh07QZTwklU7/zCD7cjnVCUCgYEAuCj3nXJVYPoZUXJaYxJDO805oPwRiw3H0F66\n\
xQY5gAY8K+5EtkajaGfdZQTDMkkQorLhA0FgbPE51o3d3YWo/Jo1UKx8DFiQXCfC\n\
mXSOgrR2uEjJJzCH2qVMTnaHA/Uz3CFRZpw10k4RM9/QThk8j1fLSQCXrkS/qE72\n\
aB3HZ6UCgYAKS/HrQyIxg5f7OyDaBk4aFQvFgoOih1s0i6GH/4oRtTBo0xhDag9q\n\
FsfM7XK9HP8WuPw9XpyJ3MncRl6WEY8Bk6U4smyELTHA29gA3uQOU7AqzvkmZx7A\n\
J/XwzOm03fCKFJXrURq+0xSyBsPry3gNlmYEMF586caLLY8VjDp8xg==\n\
-----END RSA PRIVATE KEY-----\n\
";

/// The same key in PKCS#8, for rcgen.
const RSA_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC2epsYNtlw+QrX\n\
Y0xBBMGPpfghyP3hJb8RSB3uhJKXAQJPOdmVf1XAgX+6pRnDvKZYQ8gkVAwVk49N\n\
221n6dyotFToI8n+9c+vG0nxVt3ZSYX+yfBpECUqeu/cGChHRvhWvexU+Tq5o7PG\n\
GEQWpv44TtpeImvuOX2KDMKZCgKaGoe2kMhbUOFpWMPFlvSdFa7LPUKKjFuwRGDe\n\
inL8UpyAZTpAEdPtBxpT62PbwWvjmpLytOBGr+uqQ9TlSB7fbpbTlU2ml3CHt0QF\n\
p4DfcTu3RHcqqfM/C1zQObIMnc8UImp9JzsrJ1WVi1zgnqIZ5JdOz1KRLksRTwpN\n\
vzGSx7ZBAgMBAAECggEAFPmAzEa5taeanGlYgXy3dvh/zfpZXEDHdogQkLMCWoMO\n\
LecbYHizdZ4s/Vou3PXZNPoNjkdu4CgG588aA0C5UVbxD4HVnQ3KInmDhU8Tzv8J\n\
fODfVmQ5sWlSGr1YG+FHeEj6WkYPfvkXF+UAJo5pWDWQGhPgzhAjovOWhprE88t4\n\
8YPpPXFpUrYL0JY8WVcwZsJSyMHLwjKn7jptd/4PM6+S1ZOxUyGKX2oQGn7iExX7\n\
ta9v6ec9PvztlhKRDs+55DUWvB7hciL+cAjmgrcfndt9EHtvV0bYnq/Y1cydb2Y7\n\
7nAEdPEFEp9pfPyXZJpepa9NpkiTo5S+O2dXtZrm8QKBgQDuqTJ43Pr1Ntu6Ox+U\n\
WL+M/09X6f2KZAUxvaPtgEr0dMlGFt3XSOkmGHRYkxx/435JT4hTx5RhJ8LntWsu\n\
S1ddwgB/UvJNH5aoiRyVUU6ci/uNxWjDHNVR3IHlVr4NmTpn2CClALqmsohLPA9b\n\
MBOKFdLAcKqEk9DoQfskZ05/nQKBgQDDvH3sfJSQEB5FxczhqF3SNVKO3kC0jDln\n\
CSroOia+uKDdHWSNlocvTDRIRAXbuSZ9XzxDUVw1CGTWHKgxRVLXMpSJOwUW3br5\n\
7S/+s37xyMvR6ekS84uD+/XNZvLHW9s4n0AOiao6MtLO4pPRZAfKgrL8CNq1ZBgE\n\
nGpUklJZ9QKBgQC4LMwtZ2Mnfwk8A0pQgdh4p8IENyeY96zmgNGTg9DUK5fzxcu2\n\
yqZZ5r9KZ2Sz8MxRKNYsyTThcPzBMUigNjYavY8CsvEXwUvTjdQICvHeb0xWUMSS\n\
5ZpdjQyU/ka2WcwvvSMcEp7364iwfo3fMg+yHTtBlPCSVTv/MIPtyOdUJQKBgQC4\n\
KPedclVg+hlRclpjEkM7zTmg/BGLDcfQXrrFBjmABjwr7kS2RqNoZ91lBMMySRCi\n\
suEDQWBs8TnWjd3dhaj8mjVQrHwMWJBcJ8KZdI6CtHa4SMknMIfapUxOdocD9TPc\n\
IVFmnDXSThEz39BOGTyPV8tJAJeuRL+oTvZoHcdnpQKBgApL8etDIjGDl/s7INoG\n\
ThoVC8WCg6KHWzSLoYf/ihG1MGjTGENqD2oWx8ztcr0c/xa4/D1enIncydxGXpYR\n\
jwGTpTiybIQtMcDb2ADe5A5TsCrO+SZnHsAn9fDM6bTd8IoUletRGr7TFLIGw+vL\n\
eA2WZgQwXnzpxostjxWMOnzG\n\
-----END PRIVATE KEY-----\n\
";

/// A P-256 key as `openssl ecparam -genkey -noout` writes it (SEC1).
const EC_SEC1: &str = "\
-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEIPi6I4uXS9cwRyXnO62i6yDUYS8oyUFUfUGW/CKlOm/koAoGCCqGSM49\n\
AwEHoUQDQgAEeJAL/Y94m1+XO/KiHGncjcRziK9aolKKaC/asIsazyQLhh/LWi5M\n\
vv65XgN8lhXZyhCQpGRLK8uJFzY9CuwSnA==\n\
-----END EC PRIVATE KEY-----\n\
";

/// The same key in PKCS#8, for rcgen.
const EC_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+Loji5dL1zBHJec7\n\
raLrINRhLyjJQVR9QZb8IqU6b+ShRANCAAR4kAv9j3ibX5c78qIcadyNxHOIr1qi\n\
UopoL9qwixrPJAuGH8taLky+/rleA3yWFdnKEJCkZEsry4kXNj0K7BKc\n\
-----END PRIVATE KEY-----\n\
";

/// That key encrypted (`openssl pkcs8 -topk8 -v2 aes-256-cbc`).
const EC_ENCRYPTED_PKCS8: &str = "\
-----BEGIN ENCRYPTED PRIVATE KEY-----\n\
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAjop5sjIRcK8QICCAAw\n\
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEBMzei/xsnz3UXOR1D2WS7MEgZBc\n\
UezRW/1DQspTjMojeRpJjtpvCDaWWpaD4aSB53eMhQqhv6wLvVD6JWWnWUZoapEw\n\
qxtDVTyoEcOFbQPyQoIJRvah41lTNL+B3ukLVYpxusIr36gWC38nLUlOYYQ15f0P\n\
DOPqHvIEXfT6x4qvbC16e4cgfg0pfvRgKmJocrq56Zwu6IsVPLvMi7QQTLSnrZ4=\n\
-----END ENCRYPTED PRIVATE KEY-----\n\
";

/// That key encrypted the traditional way (`openssl ec -aes128`).
const EC_ENCRYPTED_TRADITIONAL: &str = "\
-----BEGIN EC PRIVATE KEY-----\n\
Proc-Type: 4,ENCRYPTED\n\
DEK-Info: AES-128-CBC,1FFB88421DBC29DDB2F98453A0EDD935\n\
\n\
bQJAQDyIjYNuG/rJ74bifpBhgaRC1Bd90D85oOMpe5TdIXKHGGH6ffnKF+lw56TK\n\
BOxlqjCaZIgxq7c8HqCtH1zLTo64sTu1CByUUWw/K0okGaC9u/IbnBSaIs0JmkUV\n\
CeGAgJZGQ1aNpOqbLYoq5ghsALKPJu+tl5pyacpYjOk=\n\
-----END EC PRIVATE KEY-----\n\
";
