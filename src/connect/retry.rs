//! The connection, retried while the server starts, fails over or
//! restarts: refused, unreachable and starting-up servers are tried again
//! until the connect timeout; what retrying cannot fix fails at once.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use postgres::config::{Host, TargetSessionAttrs};
use postgres::error::SqlState;
use postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sniff::{self, CancelKey, SniffingConnect, Wire};
use super::spare;
use super::target::ConnectTarget;
use crate::backoff::Backoff;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::pg_error::error_chain;

/// How a failed connection attempt is handled.
enum AttemptError {
    /// The server may come up: try again until the connect timeout.
    Retry(String),
    /// Retrying cannot help (authentication, unknown database, TLS).
    GiveUp(String),
}

fn classify(e: &postgres::Error) -> AttemptError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let retry = code == &SqlState::CANNOT_CONNECT_NOW
            || code == &SqlState::TOO_MANY_CONNECTIONS
            || code == &SqlState::ADMIN_SHUTDOWN
            || code == &SqlState::CRASH_SHUTDOWN
            || code.code().starts_with("08");
        let message = format!("{} (SQLSTATE {})", db.message(), code.code());
        return if retry {
            AttemptError::Retry(message)
        } else {
            AttemptError::GiveUp(message)
        };
    }
    // The connector's own SSLRequest exchange (see `sniff`), which
    // rust-postgres reports as a TLS failure: as rust-postgres's would be.
    if let Some(io) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<sniff::NegotiationIo>())
    {
        return AttemptError::Retry(format!("error communicating with the server: {io}"));
    }
    let message = error_chain(e);
    // Certificates and TLS support do not change between attempts; nor
    // does the server's verdict on this side's client certificate, which
    // TLS 1.3 delivers after the handshake, as an alert on the first read.
    if message.starts_with("error performing TLS handshake")
        || message.contains("received fatal alert")
    {
        return AttemptError::GiveUp(message);
    }
    let io_failure = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some();
    if io_failure || message.contains("timeout") || message.contains("timed out") {
        AttemptError::Retry(message)
    } else {
        AttemptError::GiveUp(message)
    }
}

/// A connection being made: the first attempt may already be under way on
/// its own thread (see [`Connecting::start`]).
pub struct Connecting {
    target: ConnectTarget,
    config: postgres::Config,
    /// A TLS set-up error is reported by `finish`, in its turn: after the
    /// migration files, as the contract orders the checks.
    connector: Result<MakeRustlsConnect, String>,
    /// What the connector does before the start-up (see `sniff`), or why
    /// the cancel key is not read on this target.
    wire: Result<Wire, &'static str>,
    started: Instant,
    timeout: Duration,
    first: Option<ConnectAttempt>,
    /// Run on each new connection in the connecting thread (see
    /// [`Connecting::then`]).
    then: Option<Then>,
}

/// Work for a new connection, done in the connecting thread: the run's
/// first query overlaps the caller's work too. Its result, type-erased for
/// the layer above, comes back with the connection.
/// It is given the connection's cancel key.
pub type Then =
    std::sync::Arc<dyn Fn(&mut Client, CancelKey) -> Box<dyn std::any::Any + Send> + Send + Sync>;

/// A connection, the cancel key it was given, and what [`Then`] made of it.
pub struct Connected {
    pub client: Client,
    pub key: CancelKey,
    pub then: Option<Box<dyn std::any::Any + Send>>,
}

/// One connection attempt running on its own thread. rust-postgres bounds
/// only the TCP connect: a server that accepts and then never answers
/// (a stuck proxy, a frozen host) would hang the start-up exchange for
/// ever, so the wait for the attempt is bounded here and a stuck attempt
/// is left behind.
struct ConnectAttempt {
    result: std::sync::mpsc::Receiver<Result<Connected, postgres::Error>>,
    bound: Duration,
    /// How long to wait for it: `bound`, twice when a read-write server
    /// is only preferred (a second connection may follow the first).
    patience: Duration,
}

/// A first attempt that is no longer wanted (the files were invalid) ends
/// politely if it is done, instead of leaving the server an EOF.
impl Drop for Connecting {
    fn drop(&mut self) {
        if let Some(first) = self.first.take() {
            drop(first.result.try_recv());
        }
    }
}

impl Connecting {
    /// Prepares the connection; with `early`, starts the first attempt at
    /// once, so the server's backend start-up overlaps with what the caller
    /// does meanwhile (`apply` reads its migration files).
    pub fn start(
        target: &ConnectTarget,
        timeout: Duration,
        application_name: &str,
        early: bool,
        then: Option<Then>,
    ) -> Connecting {
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
        // The server's own severity word leads, once: `NOTICE: relation
        // "t" already exists, skipping`, a WARNING at warning level.
        config.notice_callback(|notice| match notice.severity() {
            "WARNING" => log::warn!("WARNING: {}", notice.message()),
            severity => log::info!("{severity}: {}", notice.message()),
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
        // TCP connections go through the connector, which reads the key.
        let wire = sniff::prepare(&mut config);
        // With one host the preference cannot choose: asking would only add
        // a round trip (`SHOW transaction_read_only`) to every connect, and
        // a second connection to the same host when it is a standby. The
        // first lock attempt asks the same question anyway.
        let many_hosts = config.get_hosts().len().max(config.get_hostaddrs().len()) > 1;
        let mut target = target.clone();
        target.prefer_writes &= many_hosts;
        if target.prefer_writes {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        let connector = target.tls.connector().map_err(|e| {
            format!(
                "{:#}",
                e.context(format!("cannot set up TLS (sslmode={})", target.tls.mode))
            )
        });
        let reuse = spare::key(&target, application_name);
        let mut connecting = Connecting {
            target,
            config,
            connector,
            wire,
            started: Instant::now(),
            timeout,
            first: None,
            then,
        };
        // The worker's kept connection to the same place (many targets).
        if let Some((mut client, key)) = spare::take(&reuse) {
            log::debug!("reusing the connection to {}", connecting.target);
            let then = connecting.then.as_ref().map(|then| then(&mut client, key));
            let (sender, result) = std::sync::mpsc::channel();
            let _ = sender.send(Ok(Connected { client, key, then }));
            let bound = Duration::from_secs(1);
            connecting.first = Some(ConnectAttempt {
                result,
                bound,
                patience: bound,
            });
        } else if early {
            connecting.first = connecting.attempt(timeout);
        }
        connecting
    }

    /// Starts one attempt, bounded by `connect_timeout`/`PGCONNECT_TIMEOUT`
    /// (10 s without), by what is left of the connect timeout, and by 1 s
    /// at least. `None` when TLS could not be set up.
    fn attempt(&self, remaining: Duration) -> Option<ConnectAttempt> {
        let connector = self.connector.as_ref().ok()?.clone();
        let cap = self
            .target
            .attempt_timeout
            .unwrap_or(Duration::from_secs(10));
        let bound = remaining.min(cap).max(Duration::from_secs(1));
        let mut config = self.config.clone();
        config.connect_timeout(bound);
        let prefer_writes = self.target.prefer_writes;
        let many_hosts = config.get_hosts().len().max(config.get_hostaddrs().len()) > 1;
        // As libpq's `prefer-standby` the other way round: when no host
        // gives what is preferred, any host will do. For one host, only
        // when it answered read-only: one that is down stays down.
        let settle_for_any = move |e: &postgres::Error| {
            takes_no_writes(e) || (many_hosts && matches!(classify(e), AttemptError::Retry(_)))
        };
        let (sender, result) = std::sync::mpsc::channel();
        let then = self.then.clone();
        let wire = self.wire;
        // A connector of its own for each connection, so that the key it
        // reads is that connection's (an attempt left behind cannot write
        // over a later one's).
        let connect = move |config: &postgres::Config| {
            let sniffing =
                SniffingConnect::new(connector.clone(), *wire.as_ref().unwrap_or(&Wire::Delegate));
            let key = sniffing.seen();
            config.connect(sniffing).map(|client| {
                let key = match wire {
                    Err(why) => CancelKey::NotRead(why),
                    Ok(_) => key.pid().map_or(CancelKey::Missing, CancelKey::Pid),
                };
                (client, key)
            })
        };
        // With many targets, this thread's lines name the target too.
        let context = crate::output::log_context();
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                crate::output::set_log_context(context);
                let mut result = connect(&config);
                if prefer_writes && result.as_ref().err().is_some_and(settle_for_any) {
                    log::debug!("no host takes writes: connecting to any");
                    config.target_session_attrs(TargetSessionAttrs::Any);
                    result = connect(&config);
                }
                let connected = result.map(|(mut client, key)| {
                    let then = then.map(|then| then(&mut client, key));
                    Connected { client, key, then }
                });
                let _ = sender.send(connected);
            })
            .ok()?;
        let patience = if prefer_writes { bound * 2 } else { bound };
        Some(ConnectAttempt {
            result,
            bound,
            patience,
        })
    }

    /// Connects, retrying refused/unreachable/starting-up servers with
    /// backoff until the connect timeout (`CONNECT_RETRY` on each retry);
    /// exit 5 past it.
    pub fn finish(self, interrupt: &Interrupt) -> Result<Connected, Failure> {
        self.finish_with(interrupt, true)
    }

    /// The attempt under way (or one), and no retry: for a run that wants
    /// the server only if it is there now (exit 5 otherwise).
    pub fn finish_once(self, interrupt: &Interrupt) -> Result<Connected, Failure> {
        self.finish_with(interrupt, false)
    }

    fn finish_with(mut self, interrupt: &Interrupt, retry: bool) -> Result<Connected, Failure> {
        let target = self.target.clone();
        let connector = match &self.connector {
            Ok(connector) => connector.clone(),
            Err(e) => return Err(Failure::unavailable(anyhow!("{e}"))),
        };
        let deadline = self.started + self.timeout;
        let mut backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).jitter(1.0);
        let mut attempt = 1u32;
        loop {
            let pending = match self.first.take() {
                Some(first) => Some(first),
                None => self.attempt(deadline.saturating_duration_since(Instant::now())),
            };
            let outcome = match pending {
                Some(pending) => wait_for_attempt(&pending, interrupt),
                None => Err(AttemptError::GiveUp(
                    "cannot start a connection attempt".into(),
                )),
            };
            if interrupt.is_set() {
                return Err(Failure::interrupted());
            }
            let error = match outcome {
                Ok(connected) => {
                    log::debug!(
                        "connected to {target} (attempt {attempt}, {} ms, sslmode={})",
                        self.started.elapsed().as_millis(),
                        target.tls.mode
                    );
                    let token = connected.client.cancel_token();
                    // The token negotiates as its connection was told to:
                    // through the same kind of connector.
                    let wire = *self.wire.as_ref().unwrap_or(&Wire::Delegate);
                    let connector = SniffingConnect::new(connector.clone(), wire);
                    interrupt.watch(Box::new(move || token.cancel_query(connector.clone())));
                    return Ok(connected);
                }
                Err(error) => error,
            };
            // Nothing said where the database is: the local socket was a
            // guess, so one attempt, and the failure says what to set.
            let guessed = if target.guessed() {
                ". Nothing said where the database is (no --database-url, DATABASE_URL, \
                 PGHOST, PGPORT, PGUSER or PGDATABASE), so only the local socket was tried, \
                 once: set \
                 DATABASE_URL=postgres://USER@HOST:5432/DATABASE (the password in PGPASSWORD \
                 or ~/.pgpass), or PGHOST and the other libpq variables"
            } else {
                ""
            };
            let reason = match error {
                AttemptError::GiveUp(reason) => {
                    let tls = if reason.contains("TLS") || reason.contains("fatal alert") {
                        format!(" ({})", target.tls.describe())
                    } else {
                        String::new()
                    };
                    return Err(Failure::unavailable(anyhow!(
                        "cannot connect to {target}: {reason}{tls}{guessed}"
                    )));
                }
                AttemptError::Retry(reason) => reason,
            };
            if !guessed.is_empty() {
                return Err(Failure::unavailable(anyhow!(
                    "cannot connect to {target}: {reason}{guessed}"
                )));
            }
            if !retry {
                return Err(Failure::unavailable(anyhow!(
                    "cannot connect to {target}: {reason}"
                )));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Failure::unavailable(anyhow!(
                    "cannot connect to {target} (gave up after {attempt} attempt{} in {:.1}s, --connect-timeout {}): {reason}",
                    if attempt == 1 { "" } else { "s" },
                    self.started.elapsed().as_secs_f64(),
                    crate::time::human(self.timeout),
                )));
            }
            let sleep = backoff.next_pause().min(remaining);
            log::warn!(
                "CONNECT_RETRY attempt={attempt} target={target} retry_in_ms={} reason={reason:?}",
                sleep.as_millis()
            );
            if !interrupt.sleep(sleep) {
                return Err(Failure::interrupted());
            }
            attempt += 1;
        }
    }
}

/// The attempt's result, or why it failed; a signal ends the wait early
/// (the caller checks the flag).
fn wait_for_attempt(
    pending: &ConnectAttempt,
    interrupt: &Interrupt,
) -> Result<Connected, AttemptError> {
    use std::sync::mpsc::RecvTimeoutError;
    let end = Instant::now() + pending.patience + Duration::from_millis(500);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AttemptError::Retry(format!(
                "the server accepted the connection but did not answer within {}",
                crate::time::human(pending.bound)
            )));
        }
        match pending
            .result
            .recv_timeout(left.min(Duration::from_millis(100)))
        {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => return Err(classify(&e)),
            Err(RecvTimeoutError::Timeout) if interrupt.is_set() => {
                return Err(AttemptError::Retry("interrupted".into()))
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(AttemptError::GiveUp(
                    "the connection attempt ended without a result".into(),
                ))
            }
        }
    }
}

/// rust-postgres's refusal of a server whose `transaction_read_only` is on,
/// under `target_session_attrs=read-write`: the last host it tried
/// answered, and takes no writes.
fn takes_no_writes(e: &postgres::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            io.kind() == std::io::ErrorKind::PermissionDenied
                && io.to_string().contains("does not allow writes")
        })
}

/// Connects, retrying for `timeout` (see [`Connecting::finish`]).
pub fn connect(
    target: &ConnectTarget,
    timeout: Duration,
    application_name: &str,
    interrupt: &Interrupt,
) -> Result<Connected, Failure> {
    Connecting::start(target, timeout, application_name, false, None).finish(interrupt)
}
