//! Where to connect: a URL or `key=value` string, or the libpq variables,
//! resolved as libpq resolves them, and never printed with its password.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::anyhow;
use postgres::config::{Host, TargetSessionAttrs};

use super::conninfo;
use super::tls::{self, TlsSettings};
use super::url_shape::{not_a_postgres_url, refuse_an_unencoded_at, url_with_default_port};
use crate::env::Env;
use crate::error::Failure;
use crate::pg_error::error_chain;

/// Where to connect, resolved from `--database-url`/`DATABASE_URL` or the
/// libpq variables. Has no `Debug`: the config holds the password.
#[derive(Clone)]
pub struct ConnectTarget {
    pub(super) config: postgres::Config,
    /// Bound on one connection attempt (`connect_timeout`, `PGCONNECT_TIMEOUT`).
    pub(super) attempt_timeout: Option<Duration>,
    pub(super) tls: TlsSettings,
    /// Whether the URL or `PGTARGETSESSIONATTRS` chose the kind of server.
    session_attrs_given: bool,
    /// Ask for a server that takes writes first, and settle for any (see
    /// [`ConnectTarget::preferring_writes`]).
    pub(super) prefer_writes: bool,
    /// `user@host:port/database`, safe to print.
    display: String,
    database: String,
    /// Nothing said where to connect (no URL, no `PGHOST`): the local
    /// socket is libpq's guess, tried once (see [`ConnectTarget::guessed`]).
    guessed: bool,
}

/// Taken out of the URL so that miglock knows whether it was given: the
/// config cannot tell an explicit `any` from the default.
const SESSION_ATTRS: &str = "target_session_attrs";

impl ConnectTarget {
    /// Resolves the connection as libpq does: the URL (or `key=value`
    /// string) first, then `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
    /// `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
    /// `PGTARGETSESSIONATTRS`, `PGAPPNAME` for whatever it leaves out.
    pub fn resolve(url: Option<&str>, env: Env) -> Result<ConnectTarget, Failure> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let malformed =
            |why: String| Failure::usage(anyhow!("the database URL is malformed: {why}"));
        if let Some(url) = url {
            not_a_postgres_url(url).map_err(malformed)?;
        }
        let url = url.map(conninfo::with_query_at_signs_encoded);
        let (url, taken) = match url.as_deref() {
            Some(url) => {
                let names: Vec<&str> = tls::PARAMS.iter().copied().chain([SESSION_ATTRS]).collect();
                let (rest, taken) = conninfo::take_params(url, &names).map_err(malformed)?;
                (Some(rest), taken)
            }
            None => (None, Vec::new()),
        };
        let param = |name: &str| {
            taken
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let tls = TlsSettings::resolve(&param, &var)?;
        let session_attrs = match (param(SESSION_ATTRS), var("PGTARGETSESSIONATTRS")) {
            (Some(attrs), _) => Some(session_attrs(&attrs).map_err(malformed)?),
            (None, Some(attrs)) => Some(
                session_attrs(&attrs)
                    .map_err(|e| Failure::usage(anyhow!("PGTARGETSESSIONATTRS: {e}")))?,
            ),
            (None, None) => None,
        };
        let url = url.as_deref();
        let pg_port = match var("PGPORT") {
            Some(port) => {
                Some(port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Failure::usage(anyhow!("PGPORT={port:?} is not a port number"))
                })?)
            }
            None => None,
        };
        let mut config = match url {
            Some(url) => {
                refuse_an_unencoded_at(url)?;
                let url = pg_port
                    .and_then(|port| url_with_default_port(url, port))
                    .map_or(std::borrow::Cow::Borrowed(url), std::borrow::Cow::Owned);
                postgres::Config::from_str(&url).map_err(|e| {
                    // The parser's messages name the option, never its value
                    // (`not_a_postgres_url` refused, unquoted, the strings whose
                    // text before an `=` it would quote), so they are safe to
                    // show; the URL itself is not.
                    Failure::usage(anyhow!(
                        "the database URL is malformed: {}",
                        error_chain(&e)
                    ))
                })?
            }
            None => postgres::Config::new(),
        };

        let mut guessed = false;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            match var("PGHOST") {
                Some(hosts) => {
                    for host in hosts.split(',') {
                        config.host(host);
                    }
                }
                None => {
                    // A socket chosen on purpose (PGPORT, PGUSER… set, as
                    // in a CI job that starts its server) is retried.
                    guessed = url.is_none()
                        && ["PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"]
                            .iter()
                            .all(|name| var(name).is_none());
                    config.host(default_socket_dir());
                }
            }
        }
        if config.get_ports().is_empty() {
            if let Some(port) = pg_port {
                config.port(port);
            }
        }
        if config.get_user().is_none() {
            let user = match var("PGUSER") {
                Some(user) => user,
                None => whoami::username().map_err(|e| {
                    Failure::usage(anyhow!(
                        "no database user given and the OS user is unknown: {e}"
                    ))
                })?,
            };
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let database = var("PGDATABASE")
                .unwrap_or_else(|| config.get_user().unwrap_or_default().to_string());
            config.dbname(&database);
        }
        if config.get_password().is_none() {
            if let Some(password) = var("PGPASSWORD") {
                config.password(password);
            } else if let Some(password) = password_from_file(&config, env) {
                config.password(password);
            }
        }
        // libpq's connect_timeout is per attempt; the overall bound is
        // miglock's --connect-timeout.
        let attempt_timeout = match (config.get_connect_timeout(), var("PGCONNECT_TIMEOUT")) {
            (Some(timeout), _) => Some(*timeout),
            (None, Some(seconds)) => Some(
                seconds
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| {
                        Failure::usage(anyhow!(
                            "PGCONNECT_TIMEOUT={seconds:?} is not a number of seconds"
                        ))
                    })?,
            ),
            (None, None) => None,
        }
        .filter(|t| !t.is_zero());
        if config.get_application_name().is_none() {
            if let Some(name) = var("PGAPPNAME") {
                config.application_name(&name);
            }
        }
        if let Some(attrs) = session_attrs {
            config.target_session_attrs(attrs);
        }

        let database = config.get_dbname().unwrap_or_default().to_string();
        let display = display_name(&config);
        // The name is shown everywhere (logs, JSON, metrics): a query read
        // as the user or host name, its password with it, stops here.
        if display.to_ascii_lowercase().contains("password=") {
            return Err(malformed(
                "part of its query was read as the user or host name (an '@' in the query must \
                 be percent-encoded, as %40); the URL is not shown, as it holds a password"
                    .into(),
            ));
        }
        Ok(ConnectTarget {
            config,
            attempt_timeout,
            tls,
            session_attrs_given: session_attrs.is_some(),
            prefer_writes: false,
            display,
            database,
            guessed,
        })
    }

    /// Whether nothing said where to connect: no `--database-url`, no
    /// `DATABASE_URL`, no `PGHOST`. The local socket is then only libpq's
    /// guess, so it is tried once (retrying a guess for --connect-timeout
    /// helps nobody), and its failure says what to set.
    pub fn guessed(&self) -> bool {
        self.guessed
    }

    /// For `apply`, which needs a server that takes writes: unless the
    /// user chose `target_session_attrs`, a connection asks for a
    /// read-write server first (the hosts of a multi-host URL in order, as
    /// libpq's `read-write`), and, when none gives one (a lone standby,
    /// every host a standby, the primary down), connects as libpq's
    /// default `any` would: `apply` then finds nothing to do there, or
    /// waits for a primary as on any read-only server.
    pub fn preferring_writes(&self) -> ConnectTarget {
        let mut target = self.clone();
        target.prefer_writes = !self.session_attrs_given;
        target
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// The `application_name` the user configured, if any (URL or `PGAPPNAME`).
    pub fn application_name(&self) -> Option<&str> {
        self.config.get_application_name()
    }
}

/// libpq's `target_session_attrs`, as far as rust-postgres has them.
fn session_attrs(text: &str) -> Result<TargetSessionAttrs, String> {
    match text {
        "any" => Ok(TargetSessionAttrs::Any),
        "read-write" => Ok(TargetSessionAttrs::ReadWrite),
        "read-only" => Ok(TargetSessionAttrs::ReadOnly),
        "primary" | "standby" | "prefer-standby" => Err(format!(
            "target_session_attrs={text} is not supported: use any, read-write or read-only"
        )),
        _ => Err(format!(
            "unknown target_session_attrs {:?}: use any, read-write or read-only",
            crate::parse::shorten(text, 20)
        )),
    }
}

/// Many databases (`--all-databases`): the same server, user and TLS
/// settings, another database.
impl ConnectTarget {
    pub fn with_database(&self, database: &str) -> ConnectTarget {
        let mut config = self.config.clone();
        config.dbname(database);
        ConnectTarget {
            display: display_name(&config),
            database: database.to_string(),
            config,
            attempt_timeout: self.attempt_timeout,
            tls: self.tls.clone(),
            session_attrs_given: self.session_attrs_given,
            prefer_writes: self.prefer_writes,
            guessed: self.guessed,
        }
    }
}

impl fmt::Display for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// The password file's entry for the first host, as libpq would pick it.
fn password_from_file(config: &postgres::Config, env: Env) -> Option<Vec<u8>> {
    let path = super::pgpass::default_path(env)?;
    let (host, default_socket) = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => (name.clone(), false),
        Some(Host::Unix(dir)) => (
            dir.display().to_string(),
            dir.as_os_str() == default_socket_dir(),
        ),
        None => (config.get_hostaddrs().first()?.to_string(), false),
    };
    let lookup = super::pgpass::Lookup {
        host: &host,
        default_socket,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config.get_dbname().unwrap_or_default(),
        user: config.get_user().unwrap_or_default(),
    };
    super::pgpass::find(&path, lookup).map(String::into_bytes)
}

pub(super) fn default_socket_dir() -> &'static str {
    // Debian's and most distributions' libpq look here; upstream's default is /tmp.
    if std::path::Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql"
    } else {
        "/tmp"
    }
}

fn display_name(config: &postgres::Config) -> String {
    let hosts: Vec<String> = if config.get_hosts().is_empty() {
        config
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect()
    } else {
        config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect()
    };
    let ports = config.get_ports();
    let port = match ports {
        [] => "5432".to_string(),
        [one] => one.to_string(),
        many => many
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or_default(),
        hosts.join(","),
        port,
        config.get_dbname().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests;
