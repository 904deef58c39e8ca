//! Connecting: where to (URL or libpq variables, never printed with its
//! password), the first connection retried while the database starts, and
//! PostgreSQL errors turned into messages a person can act on.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use postgres::config::Host;
use postgres::error::{DbError, ErrorPosition, SqlState};
use postgres::Client;

use crate::conninfo;
use crate::error::{ErrorDetail, Failure};
use crate::interrupt::Interrupt;
use crate::tls::{SslMode, TlsSettings};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Where to connect, resolved from `--database-url`/`DATABASE_URL` or the
/// libpq variables. Has no `Debug`: the config holds the password.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    /// Bound on one connection attempt (`connect_timeout`, `PGCONNECT_TIMEOUT`).
    attempt_timeout: Option<Duration>,
    tls: TlsSettings,
    /// `user@host:port/database`, safe to print.
    display: String,
    database: String,
}

/// Reads a variable of the process environment; injected so tests can
/// resolve targets without touching the real environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Target {
    /// Resolves the connection as libpq does: the URL (or `key=value`
    /// string) first, then `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
    /// `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME` for whatever
    /// it leaves out.
    pub fn resolve(url: Option<&str>, env: Env) -> Result<Target, Failure> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let malformed =
            |why: String| Failure::usage(anyhow!("the database URL is malformed: {why}"));
        let (url, tls_params) = match url {
            Some(url) => {
                let (rest, taken) =
                    conninfo::take_params(url, &["sslmode", "sslrootcert"]).map_err(malformed)?;
                (Some(rest), taken)
            }
            None => (None, Vec::new()),
        };
        let param = |name: &str| {
            tls_params
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let tls = TlsSettings {
            mode: match (param("sslmode"), var("PGSSLMODE")) {
                (Some(mode), _) => SslMode::parse(&mode).map_err(malformed)?,
                (None, Some(mode)) => {
                    SslMode::parse(&mode).map_err(|e| Failure::usage(anyhow!("PGSSLMODE: {e}")))?
                }
                (None, None) => SslMode::default(),
            },
            root_cert: param("sslrootcert").or_else(|| var("PGSSLROOTCERT")),
        };
        tls.check().map_err(|e| Failure::usage(anyhow!(e)))?;
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
                let url = pg_port
                    .and_then(|port| url_with_default_port(url, port))
                    .map_or(std::borrow::Cow::Borrowed(url), std::borrow::Cow::Owned);
                postgres::Config::from_str(&url).map_err(|e| {
                    // The parser's messages name the option, never its value,
                    // so they are safe to show; the URL itself is not.
                    Failure::usage(anyhow!(
                        "the database URL is malformed: {}",
                        error_chain(&e)
                    ))
                })?
            }
            None => postgres::Config::new(),
        };

        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            match var("PGHOST") {
                Some(hosts) => {
                    for host in hosts.split(',') {
                        config.host(host);
                    }
                }
                None => {
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

        let database = config.get_dbname().unwrap_or_default().to_string();
        let display = describe_target(&config);
        Ok(Target {
            config,
            attempt_timeout,
            tls,
            display,
            database,
        })
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

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// A `postgres://` URL with `port` given to each host that has none, as
/// libpq reads PGPORT. (tokio-postgres would fill in 5432 instead.) `None`
/// when nothing is to change.
fn url_with_default_port(url: &str, port: u16) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "postgres" && scheme != "postgresql" {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let query_names_port = tail
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("port=")));
    if hosts.is_empty() || query_names_port {
        return None;
    }
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|chunk| {
            let has_port = match chunk.rsplit_once(']') {
                Some((_, after)) => after.starts_with(':'),
                None => chunk.contains(':'),
            };
            if has_port {
                chunk.to_string()
            } else {
                format!("{chunk}:{port}")
            }
        })
        .collect();
    let credentials = credentials.map_or(String::new(), |c| format!("{c}@"));
    Some(format!("{scheme}://{credentials}{}{tail}", hosts.join(",")))
}

/// The password file's entry for the first host, as libpq would pick it.
fn password_from_file(config: &postgres::Config, env: Env) -> Option<Vec<u8>> {
    let path = crate::pgpass::default_path(env)?;
    let (host, default_socket) = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => (name.clone(), false),
        Some(Host::Unix(dir)) => (
            dir.display().to_string(),
            dir.as_os_str() == default_socket_dir(),
        ),
        None => (config.get_hostaddrs().first()?.to_string(), false),
    };
    let lookup = crate::pgpass::Lookup {
        host: &host,
        default_socket,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config.get_dbname().unwrap_or_default(),
        user: config.get_user().unwrap_or_default(),
    };
    crate::pgpass::find(&path, lookup).map(String::into_bytes)
}

fn default_socket_dir() -> &'static str {
    // Debian's and most distributions' libpq look here; upstream's default is /tmp.
    if std::path::Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql"
    } else {
        "/tmp"
    }
}

fn describe_target(config: &postgres::Config) -> String {
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

/// How a failed connection attempt is handled.
enum Attempt {
    /// The server may come up: try again until the connect timeout.
    Retry(String),
    /// Retrying cannot help (authentication, unknown database, TLS).
    GiveUp(String),
}

fn classify(e: &postgres::Error) -> Attempt {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let retry = code == &SqlState::CANNOT_CONNECT_NOW
            || code == &SqlState::TOO_MANY_CONNECTIONS
            || code == &SqlState::ADMIN_SHUTDOWN
            || code == &SqlState::CRASH_SHUTDOWN
            || code.code().starts_with("08");
        let message = format!("{} (SQLSTATE {})", db.message(), code.code());
        return if retry {
            Attempt::Retry(message)
        } else {
            Attempt::GiveUp(message)
        };
    }
    let message = error_chain(e);
    // Certificates and TLS support do not change between attempts.
    if message.starts_with("error performing TLS handshake") {
        return Attempt::GiveUp(message);
    }
    let io_failure = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some();
    if io_failure || message.contains("timeout") || message.contains("timed out") {
        Attempt::Retry(message)
    } else {
        Attempt::GiveUp(message)
    }
}

/// The error with its causes, one line, as tokio-postgres words them
/// (e.g. "error connecting to server: Connection refused (os error 111)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A connection being made: the first attempt may already be under way on
/// its own thread (see [`Connecting::start`]).
pub struct Connecting<'t> {
    target: &'t Target,
    config: postgres::Config,
    /// A TLS set-up error is reported by `finish`, in its turn: after the
    /// migration files, as the contract orders the checks.
    connector: Result<MakeRustlsConnect, String>,
    started: Instant,
    timeout: Duration,
    first: Option<Pending>,
}

/// One connection attempt running on its own thread. rust-postgres bounds
/// only the TCP connect: a server that accepts and then never answers
/// (a stuck proxy, a frozen host) would hang the start-up exchange for
/// ever, so the wait for the attempt is bounded here and a stuck attempt
/// is left behind.
struct Pending {
    result: std::sync::mpsc::Receiver<Result<Client, postgres::Error>>,
    bound: Duration,
}

/// A first attempt that is no longer wanted (the files were invalid) ends
/// politely if it is done, instead of leaving the server an EOF.
impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if let Some(first) = self.first.take() {
            drop(first.result.try_recv());
        }
    }
}

impl<'t> Connecting<'t> {
    /// Prepares the connection; with `early`, starts the first attempt at
    /// once, so the server's backend start-up overlaps with what the caller
    /// does meanwhile (`apply` reads its migration files).
    pub fn start(
        target: &'t Target,
        timeout: Duration,
        application_name: &str,
        early: bool,
    ) -> Connecting<'t> {
        let mut config = target.config.clone();
        config.application_name(application_name);
        // Client-side keepalives, so a vanished server does not stall this
        // side for the kernel's two hours; unless the URL chose its own
        // (keepalives_idle=…; rust-postgres's default idle time is two hours).
        if config.get_keepalives() && config.get_keepalives_idle() == Duration::from_secs(2 * 3600)
        {
            config.keepalives_idle(Duration::from_secs(5));
            if config.get_keepalives_interval().is_none() {
                config.keepalives_interval(Duration::from_secs(5));
            }
            if config.get_keepalives_retries().is_none() {
                config.keepalives_retries(3);
            }
        }
        config.notice_callback(|notice| {
            log::info!("NOTICE {}: {}", notice.severity(), notice.message())
        });
        // PostgreSQL never speaks TLS on a Unix socket; libpq ignores sslmode there.
        let local_only = config.get_hostaddrs().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, Host::Unix(_)));
        config.ssl_mode(if local_only {
            postgres::config::SslMode::Disable
        } else {
            target.tls.mode.wire_mode()
        });
        let connector = target.tls.connector().map_err(|e| {
            format!(
                "{:#}",
                e.context(format!("cannot set up TLS (sslmode={})", target.tls.mode))
            )
        });
        let mut connecting = Connecting {
            target,
            config,
            connector,
            started: Instant::now(),
            timeout,
            first: None,
        };
        if early {
            connecting.first = connecting.attempt(timeout);
        }
        connecting
    }

    /// Starts one attempt, bounded by `connect_timeout`/`PGCONNECT_TIMEOUT`
    /// (10 s without), by what is left of the connect timeout, and by 1 s
    /// at least. `None` when TLS could not be set up.
    fn attempt(&self, remaining: Duration) -> Option<Pending> {
        let connector = self.connector.as_ref().ok()?.clone();
        let cap = self
            .target
            .attempt_timeout
            .unwrap_or(Duration::from_secs(10));
        let bound = remaining.min(cap).max(Duration::from_secs(1));
        let mut config = self.config.clone();
        config.connect_timeout(bound);
        let (sender, result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = sender.send(config.connect(connector));
            })
            .ok()?;
        Some(Pending { result, bound })
    }

    /// Connects, retrying refused/unreachable/starting-up servers with
    /// backoff until the connect timeout (`CONNECT_RETRY` on each retry);
    /// exit 5 past it.
    pub fn finish(mut self, interrupt: &Interrupt) -> Result<Client, Failure> {
        let target = self.target;
        let connector = match &self.connector {
            Ok(connector) => connector.clone(),
            Err(e) => return Err(Failure::unavailable(anyhow!("{e}"))),
        };
        let deadline = self.started + self.timeout;
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1u32;
        loop {
            let pending = match self.first.take() {
                Some(first) => Some(first),
                None => self.attempt(deadline.saturating_duration_since(Instant::now())),
            };
            let outcome = match pending {
                Some(pending) => wait_for_attempt(&pending, interrupt),
                None => Err(Attempt::GiveUp("cannot start a connection attempt".into())),
            };
            if interrupt.is_set() {
                return Err(Failure::interrupted());
            }
            let error = match outcome {
                Ok(client) => {
                    log::debug!(
                        "connected to {target} (attempt {attempt}, {} ms, sslmode={})",
                        self.started.elapsed().as_millis(),
                        target.tls.mode
                    );
                    let token = client.cancel_token();
                    let connector = connector.clone();
                    interrupt.watch(Box::new(move || token.cancel_query(connector.clone())));
                    return Ok(client);
                }
                Err(error) => error,
            };
            let reason = match error {
                Attempt::GiveUp(reason) => {
                    let tls = match target.tls.root_cert.as_deref() {
                        _ if !reason.contains("TLS") => String::new(),
                        Some(root) => format!(" (sslmode={}, sslrootcert={root})", target.tls.mode),
                        None => format!(" (sslmode={})", target.tls.mode),
                    };
                    return Err(Failure::unavailable(anyhow!(
                        "cannot connect to {target}: {reason}{tls}"
                    )));
                }
                Attempt::Retry(reason) => reason,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Failure::unavailable(anyhow!(
                    "cannot connect to {target} (gave up after {attempt} attempt{} in {:.1}s, --connect-timeout {}): {reason}",
                    if attempt == 1 { "" } else { "s" },
                    self.started.elapsed().as_secs_f64(),
                    humantime::format_duration(self.timeout),
                )));
            }
            let sleep = delay.min(remaining);
            log::warn!(
                "CONNECT_RETRY attempt={attempt} target={target} retry_in_ms={} reason={reason:?}",
                sleep.as_millis()
            );
            if !interrupt.sleep(sleep) {
                return Err(Failure::interrupted());
            }
            delay = (delay * 2).min(Duration::from_secs(2));
            attempt += 1;
        }
    }
}

/// The attempt's result, or why it failed; a signal ends the wait early
/// (the caller checks the flag).
fn wait_for_attempt(pending: &Pending, interrupt: &Interrupt) -> Result<Client, Attempt> {
    use std::sync::mpsc::RecvTimeoutError;
    let end = Instant::now() + pending.bound + Duration::from_millis(500);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Attempt::Retry(format!(
                "the server accepted the connection but did not answer within {}",
                humantime::format_duration(pending.bound)
            )));
        }
        match pending
            .result
            .recv_timeout(left.min(Duration::from_millis(100)))
        {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => return Err(classify(&e)),
            Err(RecvTimeoutError::Timeout) if interrupt.is_set() => {
                return Err(Attempt::Retry("interrupted".into()))
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Attempt::GiveUp(
                    "the connection attempt ended without a result".into(),
                ))
            }
        }
    }
}

/// Connects, retrying for `timeout` (see [`Connecting::finish`]).
pub fn connect(
    target: &Target,
    timeout: Duration,
    application_name: &str,
    interrupt: &Interrupt,
) -> Result<Client, Failure> {
    Connecting::start(target, timeout, application_name, false).finish(interrupt)
}

/// A PostgreSQL error as a person reads it: message, SQLSTATE, then
/// detail, hint and context lines. Other errors keep their chain.
pub fn describe(e: &postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) => anyhow!(db_error_text(db)),
        None => anyhow!(error_chain(e)),
    }
}

/// A failed statement as the run's failure (exit 1), with its SQLSTATE in
/// the JSON result.
pub fn failed(e: &postgres::Error, context: impl fmt::Display + Send + Sync + 'static) -> Failure {
    Failure::failed(describe(e).context(context)).with_detail(ErrorDetail {
        sqlstate: e.code().map(|c| c.code().to_string()),
        file: None,
        line: None,
    })
}

pub fn db_error_text(db: &DbError) -> String {
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("\n  DETAIL: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("\n  HINT: {hint}"));
    }
    if let Some(context) = db.where_() {
        text.push_str(&format!("\n  CONTEXT: {context}"));
    }
    text
}

/// The SQLSTATE and, when the error points into `sql` (sent after
/// `prefix`), the line of `sql` it points at.
pub fn locate(db: &DbError, prefix: &str, sql: &str) -> ErrorDetail {
    let line = match db.position() {
        Some(ErrorPosition::Original(position)) => {
            line_at(sql, prefix.chars().count(), *position as usize)
        }
        _ => None,
    };
    ErrorDetail {
        sqlstate: Some(db.code().code().to_string()),
        file: None,
        line,
    }
}

/// PostgreSQL counts an error position in characters, from 1, in the whole
/// query string; `prefix_chars` characters were sent before `sql`.
fn line_at(sql: &str, prefix_chars: usize, position: usize) -> Option<usize> {
    let index = position.checked_sub(1 + prefix_chars)?;
    let mut newlines = 0;
    for (i, c) in sql.chars().enumerate() {
        if i == index {
            return Some(newlines + 1);
        }
        newlines += usize::from(c == '\n');
    }
    None
}

#[cfg(test)]
mod tests {
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
        let t = Target::resolve(
            Some("postgres://app:s3cret@db.example:6543/prod"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(t.to_string(), "app@db.example:6543/prod");
        assert_eq!(t.database(), "prod");
        assert!(!format!("{t}").contains("s3cret"));
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
        let t = Target::resolve(None, &env(&vars)).unwrap();
        assert_eq!(t.to_string(), "u@h1:5433/d");
        assert_eq!(t.application_name(), Some("ci-42"));
        let t = Target::resolve(Some("postgres://other@h2/x"), &env(&vars)).unwrap();
        assert_eq!(t.to_string(), "other@h2:5433/x");
        let t = Target::resolve(Some("postgres://other@h2:7000/x"), &env(&vars)).unwrap();
        assert_eq!(t.to_string(), "other@h2:7000/x");
        let t = Target::resolve(Some("postgres://other@[::1]:7001/x"), &env(&vars)).unwrap();
        assert_eq!(t.to_string(), "other@::1:7001/x");
        let t = Target::resolve(Some("postgres://other@h2"), &env(&[])).unwrap();
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
            let err = Target::resolve(Some(bad), &env(&[])).err().expect(bad);
            assert_eq!(err.outcome, crate::outcome::Outcome::Usage, "{bad}");
            let text = err.message();
            assert!(text.contains("malformed"), "{bad}: {text}");
            assert!(!text.contains("secretpw"), "{bad}: {text}");
        }
        let err = Target::resolve(None, &env(&[("PGPORT", "x")]))
            .err()
            .unwrap();
        assert!(err.message().contains("PGPORT"));
        let err = Target::resolve(None, &env(&[("PGSSLMODE", "sometimes")]))
            .err()
            .unwrap();
        assert!(err.message().contains("PGSSLMODE"));
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
        let t = Target::resolve(Some("postgres://deploy@db.example/app"), &env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"from-file"[..]));
        let t =
            Target::resolve(Some("postgres://deploy:given@db.example/app"), &env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"given"[..]));
        let with_env = [("PGPASSFILE", path.as_str()), ("PGPASSWORD", "from-env")];
        let t = Target::resolve(Some("postgres://deploy@db.example/app"), &env(&with_env)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"from-env"[..]));
        let t = Target::resolve(Some("postgres://other@db.example/app"), &env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), None);
    }

    #[test]
    fn connect_timeout_is_per_attempt_from_the_url_or_pgconnect_timeout() {
        let t = Target::resolve(Some("postgres://u@h/d?connect_timeout=3"), &env(&[])).unwrap();
        assert_eq!(t.attempt_timeout, Some(Duration::from_secs(3)));
        let t = Target::resolve(
            Some("postgres://u@h/d"),
            &env(&[("PGCONNECT_TIMEOUT", "4")]),
        )
        .unwrap();
        assert_eq!(t.attempt_timeout, Some(Duration::from_secs(4)));
        let err = Target::resolve(None, &env(&[("PGCONNECT_TIMEOUT", "soon")]))
            .err()
            .unwrap();
        assert!(err.message().contains("PGCONNECT_TIMEOUT"));
    }

    #[test]
    fn error_lines_are_counted_in_characters_after_the_prefix() {
        let sql = "é;\nselect x\nfrom y;";
        // 1-based, after the 7 characters of "BEGIN;\n": the 's' of select.
        assert_eq!(line_at(sql, 7, 7 + 4), Some(2));
        assert_eq!(line_at(sql, 7, 8), Some(1));
        assert_eq!(line_at(sql, 7, 7 + 13), Some(3));
        // Pointing into the prefix or past the file (the history insert).
        assert_eq!(line_at(sql, 7, 3), None);
        assert_eq!(line_at(sql, 7, 7 + 200), None);
    }
}
