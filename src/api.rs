//! [`Migrator`]: `miglock apply` for applications that migrate at start-up,
//! in-process.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ApplyConfig, Common, Format, LintGate, LintMode};
use crate::connect::ConnectTarget;
use crate::context::Context;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::lock::{LockKey, LockModeFlag};
use crate::migrate;
use crate::migrations::history::HistoryTable;
use crate::migrations::lint::Rules;
use crate::migrations::{AheadPolicy, Version};
use crate::outcome::Outcome;
use crate::output::{Console, Progress};
use crate::report::Report;

/// Applies the pending migrations of a folder under the advisory lock, as
/// `miglock apply` does, with the same defaults (`migrations`, refinery's
/// history table, the derived lock key, 30 s of lock wait).
///
/// It opens a connection of its own for the run: the lock is held by a
/// session and the migrating session's settings are changed, so a pooled
/// connection of the application must not be lent to it. Log lines go to
/// the [`log`] facade, to whatever logger the application set up.
///
/// [`Migrator::apply`] **blocks** the calling thread until the run ends
/// (the lock wait included). It runs on a thread of its own, so calling it
/// from inside an async runtime does not panic; but it would hold up that
/// runtime's worker meanwhile, so an async service runs it with
/// `spawn_blocking`:
///
/// ```no_run
/// # async fn start() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let migrator = miglock::Migrator::new("postgres://app@db/app").migrations("migrations");
/// let outcome = tokio::task::spawn_blocking(move || migrator.apply()).await??;
/// println!("{outcome:?}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Migrator {
    database_url: String,
    migrations: PathBuf,
    table: String,
    lock_key: Option<i64>,
    wait: Duration,
    connect_timeout: Duration,
    statement_timeout: Option<Duration>,
    target: Option<Version>,
    instance: Option<String>,
    allow_world_writable: bool,
    lock_mode: LockMode,
    interrupt: Arc<Interrupt>,
}

/// What the advisory lock is tied to, as the binary's `--lock-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LockMode {
    /// Told from the connection: session mode on a direct connection,
    /// transaction mode behind a connection pooler (and a pooler in
    /// statement pooling mode refused, as a usage error).
    #[default]
    Auto,
    /// One connection holds a session lock for the whole run: a direct
    /// connection or a session-pooling port only.
    Session,
    /// Each migration's transaction takes the lock; files without a
    /// transaction are refused.
    Transaction,
}

/// What a run did, when it did not fail. More outcomes may come, so a
/// `match` needs a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Migrated {
    /// These migrations were applied, in order; the schema is current.
    Applied(Vec<AppliedMigration>),
    /// Nothing was pending (or another replica applied it meanwhile).
    Current,
    /// Another session held the lock for the whole wait; nothing changed.
    /// The schema may be behind: wait and look again, or start anyway.
    Skipped,
}

/// A migration a run applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppliedMigration {
    pub version: Version,
    pub name: String,
    pub duration: Duration,
}

/// Why a run failed: what `miglock apply` would exit with, and PostgreSQL's
/// own words. Its `Display` is the outermost message; the causes behind it
/// (the PostgreSQL error, say) come from [`std::error::Error::source`], so
/// `{:#}` of an `anyhow::Error` made from it prints the whole chain.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    error: anyhow::Error,
    sqlstate: Option<String>,
    file: Option<PathBuf>,
    line: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A migration failed (its transaction rolled back), or another error.
    Failed,
    /// A setting is malformed (the URL, the table name, the target).
    Usage,
    /// No connection within the connect timeout.
    Unavailable,
    /// The migration set is unsafe to run: misnamed, duplicate, divergent
    /// or missing migrations.
    Invalid,
    /// The run was cancelled ([`CancelHandle::cancel`]): rolled back, lock
    /// released.
    Interrupted,
    /// A migration's table locks stayed out of reach for its whole DDL lock
    /// budget (another session's long or idle transaction held them);
    /// nothing of that migration was applied. Temporary: try again later.
    Blocked,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The code `miglock apply` exits with for the same failure.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Failed => Outcome::Failed,
            ErrorKind::Usage => Outcome::Usage,
            ErrorKind::Unavailable => Outcome::Unavailable,
            ErrorKind::Invalid => Outcome::Invalid,
            ErrorKind::Interrupted => Outcome::Interrupted,
            ErrorKind::Blocked => Outcome::Blocked,
        }
        .exit_code()
    }

    /// The SQLSTATE of the PostgreSQL error behind it, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// The migration file it points at, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The line of [`Error::file`] PostgreSQL pointed at, if it did.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Cancels a [`Migrator`]'s runs from another thread (a shutdown signal of
/// the application, say): the statement in flight is cancelled, its
/// transaction rolls back, the lock is released, and the run returns an
/// [`ErrorKind::Interrupted`] error. For good: the migrator's later runs
/// (and its clones') end the same way at once.
#[derive(Clone)]
pub struct CancelHandle(Arc<Interrupt>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.raise();
    }
}

impl Migrator {
    /// `database_url` is a `postgres://` URL or a libpq `key=value`
    /// string; what it leaves out comes from the libpq variables (`PGHOST`,
    /// `PGPASSWORD`, …) and the password file, as for the binary.
    pub fn new(database_url: impl Into<String>) -> Migrator {
        Migrator {
            database_url: database_url.into(),
            migrations: PathBuf::from("migrations"),
            table: crate::migrations::history::DEFAULT_TABLE.into(),
            lock_key: None,
            wait: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            statement_timeout: None,
            target: None,
            instance: None,
            allow_world_writable: false,
            lock_mode: LockMode::Auto,
            interrupt: Interrupt::new(),
        }
    }

    /// The folder of `V<version>__<name>.sql` files (default `migrations`).
    pub fn migrations(mut self, dir: impl Into<PathBuf>) -> Migrator {
        self.migrations = dir.into();
        self
    }

    /// The history table, optionally `schema.table`.
    pub fn table(mut self, name: impl Into<String>) -> Migrator {
        self.table = name.into();
        self
    }

    /// The advisory-lock key; by default derived from the database and the
    /// table, as the binary derives it.
    pub fn lock_key(mut self, key: i64) -> Migrator {
        self.lock_key = Some(key);
        self
    }

    /// How long to keep trying the lock; zero means one try.
    pub fn wait(mut self, wait: Duration) -> Migrator {
        self.wait = wait;
        self
    }

    /// How long to keep retrying the first connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Migrator {
        self.connect_timeout = timeout;
        self
    }

    /// A bound on each migration statement (none by default).
    pub fn statement_timeout(mut self, timeout: Duration) -> Migrator {
        self.statement_timeout = Some(timeout).filter(|t| !t.is_zero());
        self
    }

    /// Apply up to and including this version.
    pub fn target(mut self, version: impl Into<Version>) -> Migrator {
        self.target = Some(version.into());
        self
    }

    /// A name for this process in `application_name` (`MIGLOCK_INSTANCE`).
    pub fn instance(mut self, name: impl Into<String>) -> Migrator {
        self.instance = Some(name.into());
        self
    }

    /// Run migrations from a folder or file every user may write to, which
    /// is refused by default (`--allow-world-writable`).
    pub fn allow_world_writable(mut self, allow: bool) -> Migrator {
        self.allow_world_writable = allow;
        self
    }

    /// What the lock is tied to (default [`LockMode::Auto`]).
    pub fn lock_mode(mut self, mode: LockMode) -> Migrator {
        self.lock_mode = mode;
        self
    }

    /// A handle that cancels this migrator's runs from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(Arc::clone(&self.interrupt))
    }

    /// Waits for the lock, applies what is pending, releases the lock.
    /// Blocks until then (see the type's documentation).
    pub fn apply(&self) -> Result<Migrated, Error> {
        // The synchronous client runs a runtime of its own, which tokio
        // refuses to start inside another one ("Cannot start a runtime from
        // within a runtime", then an abort in its destructor). A thread of
        // its own carries no runtime context, whoever calls.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("miglock".into())
                .spawn_scoped(scope, || self.apply_here())
                .map_err(|e| plain(ErrorKind::Failed, format!("cannot start a thread: {e}")))?
                .join()
                .unwrap_or_else(|_| {
                    Err(plain(
                        ErrorKind::Failed,
                        "the migration thread panicked".into(),
                    ))
                })
        })
    }

    fn apply_here(&self) -> Result<Migrated, Error> {
        let config = self.config()?;
        let mut report = Report::new("apply");
        let none = Console::none();
        let progress = Progress::hidden();
        let ctx = Context {
            progress: &progress,
            interrupt: &self.interrupt,
            format: Format::Text,
            out: &none,
        };
        let outcome = crate::commands::apply::run(&ctx, &config, &mut report);
        // This thread's connection is gone: nothing is left to cancel.
        self.interrupt.forget();
        let outcome = outcome.map_err(|failure| {
            let failure = if self.interrupt.is_set() {
                failure.after_signal()
            } else {
                failure
            };
            error(failure)
        })?;
        Ok(match outcome {
            Outcome::Applied => Migrated::Applied(
                report
                    .applied
                    .into_iter()
                    .map(|entry| AppliedMigration {
                        version: entry.id.version,
                        name: entry.id.name,
                        duration: Duration::from_millis(entry.duration_ms.unwrap_or(0)),
                    })
                    .collect(),
            ),
            Outcome::Skipped => Migrated::Skipped,
            Outcome::Current => Migrated::Current,
            other => {
                return Err(plain(
                    ErrorKind::Failed,
                    format!("unexpected outcome {other}"),
                ))
            }
        })
    }

    fn config(&self) -> Result<ApplyConfig, Error> {
        let usage = |message: String| plain(ErrorKind::Usage, message);
        let table = HistoryTable::parse(&self.table).map_err(usage)?;
        if self.database_url.trim().is_empty() {
            return Err(usage("the database URL is empty".into()));
        }
        if self.lock_key.is_some_and(|key| key < 0) {
            return Err(usage("the lock key must be 0 or more".into()));
        }
        if self.target.as_ref().is_some_and(|t| *t < Version::from(1)) {
            return Err(usage("the target version must be 1 or more".into()));
        }
        let env = |name: &str| std::env::var(name).ok();
        let database = ConnectTarget::resolve(Some(&self.database_url), &env).map_err(error)?;
        let key = LockKey::for_target(self.lock_key, database.database(), &table);
        Ok(ApplyConfig {
            common: Common {
                database,
                migrations: self.migrations.clone(),
                table,
                placeholders: Default::default(),
                key,
                connect_timeout: self.connect_timeout,
                instance: self.instance.clone(),
                // As the binary's default: an older release embedding
                // miglock must still start against a newer schema.
                ahead: AheadPolicy::Allow,
                lock_mode: match self.lock_mode {
                    LockMode::Auto => LockModeFlag::Auto,
                    LockMode::Session => LockModeFlag::Session,
                    LockMode::Transaction => LockModeFlag::Transaction,
                },
                allow_world_writable: self.allow_world_writable,
                // The table is refinery's: no other tool's key to take.
                tool_lock: true,
            },
            wait: self.wait,
            target_version: self.target.clone(),
            dry_run: false,
            rebuild_invalid_indexes: false,
            migrate: migrate::Options {
                statement_timeout: self.statement_timeout,
                ..migrate::Options::default()
            },
            // An application's start-up pays no lint: `miglock lint` in CI
            // is where files are linted.
            lint: LintGate {
                mode: LintMode::Off,
                rules: Rules::defaults(true),
            },
        })
    }
}

fn plain(kind: ErrorKind, message: String) -> Error {
    Error {
        kind,
        error: anyhow::anyhow!(message),
        sqlstate: None,
        file: None,
        line: None,
    }
}

fn error(failure: Failure) -> Error {
    Error {
        kind: match failure.outcome {
            Outcome::Usage => ErrorKind::Usage,
            Outcome::Unavailable => ErrorKind::Unavailable,
            Outcome::Invalid => ErrorKind::Invalid,
            Outcome::Interrupted => ErrorKind::Interrupted,
            Outcome::Blocked => ErrorKind::Blocked,
            _ => ErrorKind::Failed,
        },
        sqlstate: failure.detail.sqlstate,
        file: failure.detail.file,
        line: failure.detail.line,
        error: failure.error,
    }
}
