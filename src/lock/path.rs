//! `--lock-mode auto` (the default): what sits between miglock and
//! PostgreSQL, told from the connection, and the lock mode that follows.
//!
//! PostgreSQL gives each session its backend's process id as the cancel
//! key's first half (BackendKeyData), the number `pg_backend_pid()`
//! returns; a pooler gives its clients keys of its own (PgBouncer in every
//! pool mode, pgcat, Odyssey, Supavisor), as does anything else that is
//! not PostgreSQL answering for itself. The key is read while the
//! connection starts (`connect::sniff`), and `pg_backend_pid()` rides on
//! the first round trip the run sends anyway (the history read): on a
//! direct connection, detection costs no round trip. The two agree: a
//! direct connection, session mode. They differ, or no key came: a pooler,
//! transaction mode, which is right behind session and transaction pooling
//! alike (nothing cheap tells the two apart, and nothing needs to). Only
//! then, for `apply`, one lone `BEGIN` tells statement pooling, which
//! cannot run migrations: PgBouncer closes a client whose transaction
//! stays open. The key is not read on a Unix socket (nor for a host given
//! by `hostaddr` alone): session mode, as before, with its guard (`mode`)
//! as the backstop that stops before anything runs twice.

use postgres::error::SqlState;

use super::mode::{LockMode, LockModeFlag};
use super::session::LockSession;
use crate::connect::CancelKey;
use crate::error::Failure;
use crate::pg_error;
use crate::sql::Batch;

/// What the connection tells of the way to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The cancel key carries `pg_backend_pid()`: PostgreSQL itself.
    Direct { pid: i32 },
    /// It does not (`key: None`: no key came at all).
    Pooler { key: Option<i32>, backend: i32 },
    /// The key was not read (why: `unix_socket`, `no_host_name`, …).
    Unknown(&'static str),
}

impl Path {
    /// `key_pid=… backend_pid=…` for the log.
    fn pids(self) -> String {
        match self {
            Path::Direct { pid } => format!(" key_pid={pid} backend_pid={pid}"),
            Path::Pooler { key, backend } => format!(
                " key_pid={} backend_pid={backend}",
                key.map_or("none".to_string(), |k| k.to_string())
            ),
            Path::Unknown(_) => String::new(),
        }
    }
}

/// The lock mode a run uses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub mode: LockMode,
    /// `requested` (`--lock-mode session|transaction`), `direct`,
    /// `pooler`, or why the connection could not tell (`unix_socket`, …).
    pub reason: &'static str,
    path: Option<Path>,
}

impl Decision {
    /// Why this mode, in words, for messages.
    pub fn why(&self) -> String {
        match self.path {
            Some(Path::Pooler { key, backend }) => format!(
                "a connection pooler sits between miglock and PostgreSQL: the connection's cancel \
                 key carries process id {}, the server's session is {backend}",
                key.map_or("none".to_string(), |k| k.to_string())
            ),
            Some(Path::Direct { pid }) => {
                format!("a direct connection: the cancel key carries the server's process id {pid}")
            }
            Some(Path::Unknown(why)) => format!("the cancel key is not read here ({why})"),
            None => "as --lock-mode asked".to_string(),
        }
    }

    /// `LOCK_MODE mode=… reason=…`, with the two process ids compared.
    pub fn log(&self, level: log::Level) {
        let pids = self.path.map(Path::pids).unwrap_or_default();
        log::log!(
            level,
            "LOCK_MODE mode={} reason={}{pids}",
            self.mode.as_str(),
            self.reason
        );
    }
}

impl LockSession {
    /// Whether the next round trip should ask for `pg_backend_pid()`:
    /// under `--lock-mode auto`, once per connection whose key was read.
    pub(super) fn wants_backend_pid(&self) -> bool {
        self.target.lock_mode == LockModeFlag::Auto
            && self.backend_pid.is_none()
            && !matches!(self.key, CancelKey::NotRead(_))
    }

    /// What the connection tells of the way to PostgreSQL: free when the
    /// history read carried `pg_backend_pid()`, one round trip otherwise
    /// (a history table that does not exist yet fails that read).
    pub fn path(&mut self) -> Result<Path, Failure> {
        let key = match self.key {
            CancelKey::NotRead(why) => return Ok(Path::Unknown(why)),
            CancelKey::Pid(pid) => Some(pid),
            CancelKey::Missing => None,
        };
        let backend = match self.backend_pid {
            Some(pid) => pid,
            None => {
                let mut batch = Batch::new();
                let slot = batch.push("SELECT pg_backend_pid()");
                let results = self.query(&batch).map_err(|e| {
                    pg_error::failed(&e, "cannot ask the server for its process id")
                })?;
                let pid = results
                    .value(slot)
                    .and_then(|pid| pid.parse().ok())
                    .ok_or_else(|| {
                        Failure::failed(anyhow::anyhow!("pg_backend_pid() returned no number"))
                    })?;
                self.backend_pid = Some(pid);
                pid
            }
        };
        Ok(match key {
            Some(pid) if pid == backend => Path::Direct { pid },
            key => Path::Pooler { key, backend },
        })
    }

    /// The lock mode for this run: the one asked for, or under `auto`, the
    /// one the connection calls for. With `refuse_statement_pooling` (for
    /// `apply`), a pooler is also asked whether it takes a transaction
    /// block at all: statement pooling is a usage error (exit 2).
    pub fn decide_lock_mode(
        &mut self,
        flag: LockModeFlag,
        refuse_statement_pooling: bool,
    ) -> Result<Decision, Failure> {
        let requested = |mode| Decision {
            mode,
            reason: "requested",
            path: None,
        };
        let path = match flag {
            LockModeFlag::Session => return Ok(requested(LockMode::Session)),
            LockModeFlag::Transaction => return Ok(requested(LockMode::Transaction)),
            LockModeFlag::Auto => self.path()?,
        };
        let (mode, reason) = match path {
            Path::Direct { .. } => (LockMode::Session, "direct"),
            Path::Unknown(why) => (LockMode::Session, why),
            Path::Pooler { .. } => {
                if refuse_statement_pooling {
                    self.refuse_statement_pooling(path)?;
                }
                (LockMode::Transaction, "pooler")
            }
        };
        Ok(Decision {
            mode,
            reason,
            path: Some(path),
        })
    }

    /// One lone `BEGIN`, then `ROLLBACK`: a statement pooler refuses a
    /// round trip that ends inside a transaction block (PgBouncer closes
    /// the client, `transaction blocks not allowed in statement pooling
    /// mode`; the sync client often sees only the closed connection).
    fn refuse_statement_pooling(&mut self, path: Path) -> Result<(), Failure> {
        let error = match self.client.batch_execute("BEGIN") {
            Ok(()) => {
                return self
                    .client
                    .batch_execute("ROLLBACK")
                    .map_err(|e| pg_error::failed(&e, "cannot end the pooler's trial transaction"))
            }
            Err(error) => error,
        };
        let said = match error.as_db_error() {
            Some(db) if db.code() == &SqlState::PROTOCOL_VIOLATION => {
                format!(": \"{}\"", db.message())
            }
            Some(_) => return Err(pg_error::failed(&error, "cannot begin a transaction")),
            // Closed, or reset: what the sync client sees of that FATAL,
            // mostly (it arrives with the end of the connection).
            None => String::new(),
        };
        log::error!("LOCK_MODE mode=none reason=statement_pooler{}", path.pids());
        Err(Failure::usage(anyhow::anyhow!(
            "a connection pooler in statement pooling mode (PgBouncer pool_mode = statement) sits \
             between miglock and PostgreSQL: the cancel key does not carry the server's process \
             id, and the pooler closed the connection when a transaction block stayed open{said}. \
             Migrations need transaction blocks: point DATABASE_URL at PostgreSQL directly, or at \
             a transaction- or session-pooling port, for migrations. Nothing was changed."
        )))
    }
}

/// `baseline` and `repair` write history rows under the session lock
/// whatever `--lock-mode` says (they run rarely, by hand). Asked for
/// transaction mode, they say that through a transaction pooler that lock
/// does not protect them; under `auto`, a pooler found in the way refuses
/// them (exit 2) before the lock is taken, since it could strand it.
pub fn session_lock_only(
    command: &str,
    flag: LockModeFlag,
    session: &mut LockSession,
) -> Result<(), Failure> {
    let key = session.key().clone();
    match flag {
        LockModeFlag::Session => Ok(()),
        LockModeFlag::Transaction => {
            log::warn!(
                "{command} takes the session-level lock {key} whatever --lock-mode says: run it over a \
                 direct connection (or a session-pooling port), not through a transaction pooler"
            );
            Ok(())
        }
        LockModeFlag::Auto => {
            let decision = session.decide_lock_mode(flag, false)?;
            decision.log(log::Level::Debug);
            if decision.mode == LockMode::Session {
                return Ok(());
            }
            Err(Failure::usage(anyhow::anyhow!(
                "{command} takes the session-level lock {key}, and a connection pooler sits between \
                 miglock and PostgreSQL (the cancel key does not carry the server's process id): \
                 through a transaction pooler, that lock would stay on a pooled server session. Run \
                 {command} over a direct connection, or give --lock-mode session if this port pools \
                 sessions; nothing was changed."
            )))
        }
    }
}
