//! Client certificates, found and checked as libpq finds and checks them:
//! `sslcert` and `sslkey` (URL or `key=value`), else `PGSSLCERT` and
//! `PGSSLKEY`, else `~/.postgresql/postgresql.crt` and
//! `~/.postgresql/postgresql.key`. A PEM certificate chain and a PEM
//! private key (PKCS#8, PKCS#1 RSA or SEC1 EC), for rustls' client
//! authentication.
//!
//! Everything that can be wrong with the files is found here, before
//! connecting, and is a usage error naming the file: a missing file, one
//! that is not PEM, a key that does not belong to the certificate, a key
//! others may read (libpq refuses one), and an encrypted key, which rustls
//! cannot decrypt (libpq would, with `sslpassword`).

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The certificate chain and its key, read and checked; cheap to clone.
/// Its `Debug` names the files only.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_file: String,
    pub key_file: String,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientCert({}, {})", self.cert_file, self.key_file)
    }
}

impl ClientCert {
    /// What rustls' `with_client_auth_cert` takes.
    pub fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }
}

/// The client certificate to present, if any: `cert` and `key` as given
/// (the parameters, else the variables), else libpq's defaults under
/// `home`. `None` when no certificate is given and the default does not
/// exist, as in libpq.
pub fn find(
    cert: Option<&str>,
    key: Option<&str>,
    home: Option<&str>,
    provider: &CryptoProvider,
) -> Result<Option<ClientCert>, String> {
    let default = |name: &str| home.map(|home| format!("{home}/.postgresql/{name}"));
    let cert_file = match cert {
        Some(cert) => cert.to_string(),
        None => match default("postgresql.crt").filter(|path| Path::new(path).exists()) {
            Some(path) => path,
            None => {
                return match key {
                    Some(key) => Err(format!(
                        "sslkey {key} is given without a client certificate: give sslcert=<file> \
                         (or PGSSLCERT), or put it in ~/.postgresql/postgresql.crt"
                    )),
                    None => Ok(None),
                }
            }
        },
    };
    let key_file = match key
        .map(str::to_string)
        .or_else(|| default("postgresql.key"))
    {
        Some(path) => path,
        None => {
            return Err(format!(
                "the client certificate {cert_file} has no private key: give sslkey=<file> (or \
                 PGSSLKEY)"
            ))
        }
    };
    let chain = read_chain(&cert_file)?;
    let key = read_key(&key_file, &cert_file)?;
    // The provider checks that it can sign with the key, and that the key
    // is the certificate's: a wrong pair would fail in the handshake, with
    // less to go on.
    CertifiedKey::from_der(chain.clone(), key.clone_key(), provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "the private key {key_file} does not belong to the client certificate {cert_file}"
        ),
        e => format!("the private key {key_file} cannot be used with {cert_file}: {e}"),
    })?;
    Ok(Some(ClientCert {
        cert_file,
        key_file,
        chain,
        key: Arc::new(key),
    }))
}

/// Far more than any certificate chain or key: a file past it (a device
/// such as /dev/zero, a log given by mistake) is not read to the end.
const MAX_FILE: u64 = 1 << 20;

fn read_bounded(file: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other("larger than 1 MiB"));
    }
    Ok(bytes)
}

fn read_chain(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_bounded(file)
        .map_err(|e| format!("cannot read the client certificate file {file}: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("the client certificate file {file} is not a PEM file"))?;
    if chain.is_empty() {
        return Err(format!(
            "the client certificate file {file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(chain)
}

/// The key, refused as libpq refuses it: not a regular file, or open to
/// others (a key owned by its user must be 0600 or less; one owned by
/// root, 0640 or less).
fn read_key(file: &str, cert_file: &str) -> Result<PrivateKeyDer<'static>, String> {
    let meta = std::fs::metadata(file).map_err(|e| {
        format!(
            "cannot read the private key file {file} (for the client certificate {cert_file}): {e}"
        )
    })?;
    if !meta.is_file() {
        return Err(format!("the private key file {file} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let open_to_others =
        (meta.uid() == euid && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o037 != 0);
    if open_to_others {
        return Err(format!(
            "the private key file {file} has mode {mode:04o}, open to group or others: it must be \
             u=rw (0600) or less when owned by the current user, u=rw,g=r (0640) or less when owned \
             by root (chmod 0600 {file})"
        ));
    }
    let pem =
        read_bounded(file).map_err(|e| format!("cannot read the private key file {file}: {e}"))?;
    if let Some(how) = encrypted(&pem) {
        return Err(format!(
            "the private key file {file} is encrypted ({how}): miglock's TLS library (rustls) \
             cannot decrypt keys, so sslpassword cannot be used. Decrypt it once into a file only \
             you can read, e.g. `openssl pkcs8 -topk8 -nocrypt -in {file} -out client.key` (it \
             asks for the passphrase), and give that file as sslkey"
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "the private key file {file} holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or \
             EC PRIVATE KEY)"
        ),
        // The parser's own message may quote a line of the file.
        _ => format!("the private key file {file} is not a PEM file"),
    })
}

/// How a PEM key says it is encrypted, if it does: PKCS#8's own label, or
/// the `Proc-Type` header of OpenSSL's traditional format.
fn encrypted(pem: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        Some("PKCS#8 ENCRYPTED PRIVATE KEY")
    } else if text
        .lines()
        .any(|line| line.trim().starts_with("Proc-Type:") && line.contains("ENCRYPTED"))
    {
        Some("Proc-Type: 4,ENCRYPTED")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str, mode: u32) -> String {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path.display().to_string()
        }
    }

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_are_read_and_named() {
        let files = Files::new();
        let (cert, key) = pair();
        let cert = files.write("c.crt", &cert, 0o644);
        let key = files.write("c.key", &key, 0o600);
        let found = find(Some(&cert), Some(&key), None, &provider())
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.cert_file.as_str(), found.key_file.as_str()),
            (cert.as_str(), key.as_str())
        );
        assert_eq!(format!("{found:?}"), format!("ClientCert({cert}, {key})"));
        // Nothing given, no default: no certificate, as in libpq.
        assert!(find(None, None, None, &provider()).unwrap().is_none());
        let home = files.dir.path().display().to_string();
        assert!(find(None, None, Some(&home), &provider())
            .unwrap()
            .is_none());
    }

    #[test]
    fn libpqs_defaults_under_home_are_used_when_present() {
        let files = Files::new();
        std::fs::create_dir(files.dir.path().join(".postgresql")).unwrap();
        let (cert, key) = pair();
        files.write(".postgresql/postgresql.crt", &cert, 0o644);
        let home = files.dir.path().display().to_string();
        let err = find(None, None, Some(&home), &provider()).unwrap_err();
        assert!(err.contains("postgresql.key"), "{err}");
        files.write(".postgresql/postgresql.key", &key, 0o600);
        let found = find(None, None, Some(&home), &provider()).unwrap().unwrap();
        assert!(found.key_file.ends_with("/.postgresql/postgresql.key"));
    }

    #[test]
    fn every_unusable_file_is_refused_by_name() {
        let files = Files::new();
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let cert = files.write("c.crt", &cert, 0o644);
        let good_key = files.write("c.key", &key, 0o600);
        let empty_cert = files.write("empty.crt", "", 0o644);
        let enc8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let enc1 = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                    DEK-Info: AES-128-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        let cases = [
            (
                "/nonexistent/c.crt",
                good_key.clone(),
                "cannot read the client certificate file /nonexistent/c.crt",
            ),
            (
                &cert,
                "/nonexistent/c.key".into(),
                "cannot read the private key file /nonexistent/c.key",
            ),
            (
                &cert,
                files.write("open.key", &key, 0o644),
                "has mode 0644, open to group or others",
            ),
            (
                &cert,
                files.write("group.key", &key, 0o640),
                "has mode 0640",
            ),
            (
                &cert,
                files.write("other.key", &other_key, 0o600),
                "does not belong to the client certificate",
            ),
            (
                &cert,
                files.write("empty.key", "", 0o600),
                "holds no PEM private key",
            ),
            (
                &cert,
                files.write("junk.key", "-----BEGIN PRIVATE KEY-----\n!!\n", 0o600),
                "is not a PEM file",
            ),
            (&empty_cert, good_key.clone(), "holds no PEM certificate"),
            (
                "/dev/zero",
                good_key.clone(),
                "cannot read the client certificate file /dev/zero: larger than 1 MiB",
            ),
            (
                &cert,
                files.dir.path().display().to_string(),
                "is not a regular file",
            ),
            (
                &cert,
                files.write("enc8.key", enc8, 0o600),
                "is encrypted (PKCS#8 ENCRYPTED PRIVATE KEY)",
            ),
            (
                &cert,
                files.write("enc1.key", enc1, 0o600),
                "is encrypted (Proc-Type: 4,ENCRYPTED)",
            ),
        ];
        for (cert, key, expected) in cases {
            let err = find(Some(cert), Some(&key), None, &provider()).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(
                err.contains(&key) || err.contains(cert),
                "names the file: {err}"
            );
        }
        let err = find(None, Some(&good_key), None, &provider()).unwrap_err();
        assert!(err.contains("without a client certificate"), "{err}");
        let err = find(Some(&cert), None, None, &provider()).unwrap_err();
        assert!(err.contains("has no private key"), "{err}");
    }
}
