//! TLS with libpq's `sslmode` semantics, on rustls (pure Rust: no OpenSSL
//! to link, so a static binary stays simple).
//!
//! rust-postgres knows only `disable`, `prefer` and `require` (and rejects
//! `verify-ca`/`verify-full` in a URL), so the mode is taken out of the
//! connection string before it reaches it and enforced here, in the
//! certificate verifier:
//!
//! | sslmode | encryption | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | when the server offers it | no |
//! | `require` | always | no; as `verify-ca` when a root certificate file is given or `~/.postgresql/root.crt` exists (as libpq does) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain, and the host name |
//!
//! Trusted roots: `sslrootcert` (a PEM file), else `~/.postgresql/root.crt`,
//! else, for `verify-full` only, the system's roots (`sslrootcert=system`
//! asks for them explicitly). As in libpq, `verify-ca` needs a root file,
//! and the system's roots need `verify-full`. A client certificate
//! (`sslcert`, `sslkey`) is presented whenever TLS is used: see
//! `client_cert`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::client_cert::{self, ClientCert};
use crate::error::Failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Result<SslMode, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(format!(
                    "unknown sslmode {:?}: use disable, allow, prefer, require, verify-ca or verify-full",
                    crate::parse::shorten(text, 20)
                ))
            }
        })
    }

    /// What rust-postgres is told: whether to ask for TLS and whether to
    /// insist. `allow` (plain first, TLS if the server insists) is asked
    /// as `prefer` (TLS first, plain if the server has none).
    pub fn wire_mode(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// `sslmode`, `sslrootcert` and the client certificate, from the URL or
/// `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<String>,
    /// Read and checked when the settings are resolved; `None` with
    /// `sslmode=disable` (libpq reads none then either).
    pub client: Option<ClientCert>,
}

/// The connection string's parameters miglock handles itself: taken out
/// before the rest reaches rust-postgres, which rejects them.
/// `sslpassword` is taken to be refused (see `client_cert`), never kept.
pub const PARAMS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword"];

/// How certificates are checked, once the settings are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Chain,
    ChainAndHost,
}

impl TlsSettings {
    /// The settings of a connection string (`param`: its values of
    /// [`PARAMS`]), else of libpq's variables (`var`, which also gives
    /// `HOME`, where libpq's default client certificate is), checked: what
    /// is wrong with them or their files is a usage error, before anything
    /// connects.
    pub fn resolve(
        param: &dyn Fn(&str) -> Option<String>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TlsSettings, Failure> {
        let usage = |why: String| Failure::usage(anyhow!(why));
        let mode = match (param("sslmode"), var("PGSSLMODE")) {
            (Some(mode), _) => SslMode::parse(&mode)
                .map_err(|e| usage(format!("the database URL is malformed: {e}")))?,
            (None, Some(mode)) => {
                SslMode::parse(&mode).map_err(|e| usage(format!("PGSSLMODE: {e}")))?
            }
            (None, None) => SslMode::default(),
        };
        let mut tls = TlsSettings {
            mode,
            root_cert: param("sslrootcert").or_else(|| var("PGSSLROOTCERT")),
            client: None,
        };
        tls.check().map_err(usage)?;
        if mode != SslMode::Disable {
            tls.client = client_cert::find(
                param("sslcert").or_else(|| var("PGSSLCERT")).as_deref(),
                param("sslkey").or_else(|| var("PGSSLKEY")).as_deref(),
                var("HOME").as_deref(),
                &rustls::crypto::ring::default_provider(),
            )
            .map_err(usage)?;
        }
        Ok(tls)
    }

    /// `sslmode=… sslrootcert=… sslcert=…`, as far as they are set: what
    /// a TLS failure is reported with.
    pub fn describe(&self) -> String {
        let mut text = format!("sslmode={}", self.mode);
        if let Some(root) = &self.root_cert {
            text.push_str(&format!(", sslrootcert={root}"));
        }
        if let Some(client) = &self.client {
            text.push_str(&format!(", sslcert={}", client.cert_file));
        }
        text
    }

    /// Combinations libpq refuses, for the same reason: the system's roots
    /// vouch for any public certificate, so they prove nothing unless the
    /// host name is checked too. And a root certificate file that was
    /// named (`sslrootcert`, `PGSSLROOTCERT`) and will be used must be a
    /// readable PEM file: a typo in its path is a usage error, not an
    /// unavailable server.
    pub fn check(&self) -> Result<(), String> {
        let system = self.root_cert.as_deref() == Some("system");
        if system && self.mode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (not {}): the system's roots trust any public \
                 certificate, whatever host it names",
                self.mode
            ));
        }
        if self.mode == SslMode::VerifyCa && self.root_cert.is_none() && home_root_cert().is_none()
        {
            return Err(
                "sslmode=verify-ca needs a root certificate file (sslrootcert=<file>, PGSSLROOTCERT or \
                 ~/.postgresql/root.crt); with the system's roots use sslmode=verify-full"
                    .into(),
            );
        }
        let verifies = matches!(
            self.mode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        );
        if let Some(file) = self.root_cert.as_deref().filter(|f| *f != "system") {
            if verifies {
                roots(Some(file)).map_err(|e| format!("sslrootcert: {e:#}"))?;
            }
        }
        Ok(())
    }

    /// The connector for these settings. Reads the root certificates, so a
    /// missing or malformed file is reported here, before connecting.
    pub fn connector(&self) -> anyhow::Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let default_root = home_root_cert();
        let root_file = self.root_cert.clone().or_else(|| default_root.clone());
        let check = match self.mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => Check::None,
            SslMode::Require if root_file.is_none() => Check::None,
            SslMode::Require | SslMode::VerifyCa => Check::Chain,
            SslMode::VerifyFull => Check::ChainAndHost,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?;
        let verifier: Arc<dyn ServerCertVerifier> = if check == Check::None {
            Arc::new(NoCertificateCheck(provider))
        } else {
            let roots = Arc::new(roots(root_file.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .context("cannot set up certificate verification")?;
            Arc::new(ChainCheck {
                webpki,
                check_host: check == Check::ChainAndHost,
            })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            Some(client) => {
                let (chain, key) = client.chain_and_key();
                builder.with_client_auth_cert(chain, key).with_context(|| {
                    format!("cannot use the client certificate {}", client.cert_file)
                })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn home_root_cert() -> Option<String> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql/root.crt");
    path.is_file().then(|| path.display().to_string())
}

fn roots(file: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match file {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(anyhow!(
                    "no system root certificates found: give sslrootcert=<file> (or PGSSLROOTCERT)"
                ));
            }
        }
        Some(file) => {
            let path = PathBuf::from(file);
            let pem = std::fs::read(&path).with_context(|| {
                format!("cannot read the root certificate file {}", path.display())
            })?;
            let mut added = 0;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> = cert
                    .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
                store.add(cert).with_context(|| {
                    format!("{} holds a certificate rustls cannot use", path.display())
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(anyhow!("{} holds no PEM certificate", path.display()));
            }
        }
    }
    Ok(store)
}

/// `prefer`/`require` without a root file, as libpq: encrypted, but any
/// certificate is accepted. Handshake signatures are still verified.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (chain only) and `verify-full` (chain and host name).
#[derive(Debug)]
struct ChainCheck {
    webpki: Arc<WebPkiServerVerifier>,
    check_host: bool,
}

impl ServerCertVerifier for ChainCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_mode_parses_and_prints_back() {
        for text in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(SslMode::parse(text).unwrap().to_string(), text);
        }
        assert!(SslMode::parse("sometimes")
            .unwrap_err()
            .contains("unknown sslmode"));
        assert!(
            SslMode::parse("VERIFY-FULL").is_err(),
            "libpq's values are lower case"
        );
    }

    #[test]
    fn missing_or_empty_root_files_are_reported() {
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/root.crt".into()),
            client: None,
        };
        let err = format!("{:#}", settings.connector().err().unwrap());
        assert!(
            err.contains("cannot read the root certificate file /nonexistent/root.crt"),
            "{err}"
        );
        let empty = tempfile::NamedTempFile::new().unwrap();
        let settings = TlsSettings {
            mode: SslMode::VerifyCa,
            root_cert: Some(empty.path().display().to_string()),
            client: None,
        };
        let err = format!("{:#}", settings.connector().err().unwrap());
        assert!(err.contains("holds no PEM certificate"), "{err}");
        // libpq's refusals.
        let system = |mode| TlsSettings {
            mode,
            root_cert: Some("system".into()),
            client: None,
        };
        assert!(system(SslMode::VerifyCa)
            .check()
            .unwrap_err()
            .contains("verify-full"));
        assert!(system(SslMode::Require).check().is_err());
        assert!(system(SslMode::VerifyFull).check().is_ok());
        // A named file that will be read is checked up front (a usage error).
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let missing = TlsSettings {
                mode,
                root_cert: Some("/nonexistent/root.crt".into()),
                client: None,
            };
            let err = missing.check().unwrap_err();
            assert!(
                err.contains("cannot read the root certificate file /nonexistent/root.crt"),
                "{mode}: {err}"
            );
            let empty = TlsSettings {
                mode,
                root_cert: Some(empty.path().display().to_string()),
                client: None,
            };
            assert!(empty
                .check()
                .unwrap_err()
                .contains("holds no PEM certificate"));
        }
        // Modes that never read it do not mind it.
        for mode in [SslMode::Disable, SslMode::Allow, SslMode::Prefer] {
            let settings = TlsSettings {
                mode,
                root_cert: Some("/nonexistent/root.crt".into()),
                client: None,
            };
            assert!(settings.check().is_ok(), "{mode}");
        }
        // Modes that check nothing need no file.
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
            assert!(
                TlsSettings {
                    mode,
                    root_cert: None,
                    client: None,
                }
                .connector()
                .is_ok(),
                "{mode}"
            );
        }
    }
}
