//! [`Migrator`]: `miglock apply` for applications that migrate at start-up,
//! in-process.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{AheadPolicy, ApplyConfig, Common};
use crate::connect::ConnectTarget;
use crate::history::HistoryTable;
use crate::interrupt::Interrupt;
use crate::lock::LockKey;
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
#[derive(Clone)]
pub struct Migrator {
    database_url: String,
    migrations: PathBuf,
    table: String,
    lock_key: Option<i64>,
    wait: Duration,
    connect_timeout: Duration,
    statement_timeout: Option<Duration>,
    target: Option<i32>,
    instance: Option<String>,
}

/// What a run did, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
    pub duration: Duration,
}

/// Why a run failed: what `miglock apply` would exit with, and PostgreSQL's
/// own words.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
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
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl Migrator {
    /// `database_url` is a `postgres://` URL or a libpq `key=value`
    /// string; what it leaves out comes from the libpq variables (`PGHOST`,
    /// `PGPASSWORD`, …) and the password file, as for the binary.
    pub fn new(database_url: impl Into<String>) -> Migrator {
        Migrator {
            database_url: database_url.into(),
            migrations: PathBuf::from("migrations"),
            table: crate::history::DEFAULT_TABLE.into(),
            lock_key: None,
            wait: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            statement_timeout: None,
            target: None,
            instance: None,
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
    pub fn target(mut self, version: i32) -> Migrator {
        self.target = Some(version);
        self
    }

    /// A name for this process in `application_name` (`MIGLOCK_INSTANCE`).
    pub fn instance(mut self, name: impl Into<String>) -> Migrator {
        self.instance = Some(name.into());
        self
    }

    /// Waits for the lock, applies what is pending, releases the lock.
    pub fn apply(&self) -> Result<Migrated, Error> {
        let config = self.config()?;
        let mut report = Report::new("apply");
        let outcome = crate::commands::apply::run(
            &config,
            &mut report,
            &Progress::hidden(),
            &Interrupt::default(),
            &Console::none(),
        )
        .map_err(|failure| error(&failure))?;
        Ok(match outcome {
            Outcome::Applied => Migrated::Applied(
                report
                    .applied
                    .into_iter()
                    .map(|entry| AppliedMigration {
                        version: entry.version,
                        name: entry.name,
                        duration: Duration::from_millis(entry.duration_ms.unwrap_or(0)),
                    })
                    .collect(),
            ),
            Outcome::Skipped => Migrated::Skipped,
            _ => Migrated::Current,
        })
    }

    fn config(&self) -> Result<ApplyConfig, Error> {
        let usage = |message: String| Error {
            kind: ErrorKind::Usage,
            message,
            sqlstate: None,
            file: None,
            line: None,
        };
        let table = HistoryTable::parse(&self.table).map_err(usage)?;
        if self.database_url.trim().is_empty() {
            return Err(usage("the database URL is empty".into()));
        }
        if self.lock_key.is_some_and(|key| key < 0) {
            return Err(usage("the lock key must be 0 or more".into()));
        }
        let env = |name: &str| std::env::var(name).ok();
        let database = ConnectTarget::resolve(Some(&self.database_url), &env)
            .map_err(|failure| error(&failure))?;
        let key = match self.lock_key {
            Some(key) => LockKey::explicit(key),
            None => LockKey::derived(database.database(), &table),
        };
        Ok(ApplyConfig {
            common: Common {
                database,
                migrations: self.migrations.clone(),
                table,
                key,
                connect_timeout: self.connect_timeout,
                instance: self.instance.clone(),
                // As the binary's default: an older release embedding
                // miglock must still start against a newer schema.
                ahead: AheadPolicy::Allow,
                lock_mode: crate::lock::LockMode::Session,
            },
            wait: self.wait,
            statement_timeout: self.statement_timeout,
            target_version: self.target,
            dry_run: false,
            settings: Vec::new(),
            ddl_lock_timeout: None,
            ddl_retries: 0,
        })
    }
}

fn error(failure: &crate::error::Failure) -> Error {
    Error {
        kind: match failure.outcome {
            Outcome::Usage => ErrorKind::Usage,
            Outcome::Unavailable => ErrorKind::Unavailable,
            Outcome::Invalid => ErrorKind::Invalid,
            _ => ErrorKind::Failed,
        },
        message: failure.message(),
        sqlstate: failure.detail.sqlstate.clone(),
        file: failure.detail.file.clone(),
        line: failure.detail.line,
    }
}
