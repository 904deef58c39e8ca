//! Safe DDL: a migration never stalls the application behind a lock queue.
//!
//! An `ALTER TABLE` that waits for its lock behind one long or idle
//! transaction blocks every later query on that table for as long as it
//! waits: PostgreSQL queues them behind it. So each attempt waits at most a
//! short `lock_timeout` (`SET LOCAL`, nothing leaks through a pooler), on an
//! escalating schedule — 50 ms, 100, 200, 400, 800, 1.6 s, then 3 s — and a
//! refused attempt (55P03) is rolled back, after which:
//! - the sessions in its way are looked up ([`super::blockers`]): a
//!   transaction older than the attempt that holds a conflicting lock is
//!   waited out, polled every 200 ms without attempting (a wait that stalls
//!   no one), and the next attempt goes the moment it ends, on the same
//!   step;
//! - with none such visible (the blocker ended, or is one this lookup
//!   cannot see), the next attempt waits a full-jitter pause, up to 8× the
//!   timeout (0.4 s to 24 s), on the next step.
//!
//! Until the budget (`--ddl-lock-budget`, per migration) runs out: then
//! nothing of the migration is applied and the run exits 8 (`blocked`),
//! naming the blocker. Never a last attempt without a timeout (as GitLab's
//! `with_lock_retries` makes by default): that is the stall this prevents.
//!
//! A busy table always has young readers: they took their lock after the
//! attempt began, queued behind it, and are what the short timeout protects;
//! they are never waited for.

use std::time::{Duration, Instant};

use postgres::error::SqlState;

use super::blockers::{self, Blocker};
use super::Options;
use crate::error::Failure;
use crate::interrupt::Interrupt;
use crate::lock::{Backend, LockSession};
use crate::migrations::split::TableLock;
use crate::migrations::LocalMigration;
use crate::outcome::Outcome;
use crate::time::{human, millis};

/// The escalating `lock_timeout`s, in milliseconds; the last repeats.
pub const SCHEDULE_MS: [u64; 7] = [50, 100, 200, 400, 800, 1600, 3000];

/// How often a visible blocker is looked at until it is gone.
const POLL: Duration = Duration::from_millis(200);

/// Pauses after a refusal with no blocker in sight: full jitter up to
/// `PAUSE_FACTOR` times the timeout, within these bounds.
const PAUSE_FACTOR: u32 = 8;
const MIN_PAUSE_CAP: Duration = Duration::from_millis(400);
const MAX_PAUSE_CAP: Duration = Duration::from_secs(24);

/// `lock_timeout` is written with this many digits (milliseconds), so an
/// attempt's value can replace the last one's in place in a batch that
/// holds a migration of any size.
const DIGITS: usize = 8;

/// How `lock_timeout` bounds each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DdlTimeout {
    /// The escalating schedule (the default).
    #[default]
    Auto,
    /// The same timeout for every attempt.
    Fixed(Duration),
    /// No timeout: wait as long as PostgreSQL makes it (the behaviour of
    /// releases before safe DDL; or `--set lock_timeout=…`'s value).
    Off,
}

/// The user's safe-DDL settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdlPolicy {
    pub timeout: DdlTimeout,
    /// How long one migration may spend getting its table locks.
    pub budget: Duration,
    /// At most this many attempts after the first (`--ddl-retries`).
    pub retries: Option<u32>,
    /// End an idle-in-transaction blocker that has been in the way this
    /// long (`--cancel-blockers-after`).
    pub cancel_blockers_after: Option<Duration>,
}

impl Default for DdlPolicy {
    fn default() -> DdlPolicy {
        DdlPolicy {
            timeout: DdlTimeout::Auto,
            budget: DEFAULT_BUDGET,
            retries: None,
            cancel_blockers_after: None,
        }
    }
}

/// Three minutes: longer than ordinary transactions and batch jobs, and
/// than a common `idle_in_transaction_session_timeout` (the server's own
/// cure for a forgotten session), while the escalation alone reaches its 3 s
/// step in 16-28 s. Waiting on a visible blocker stalls no one: it costs
/// deploy time only.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(180);

/// The attempts at one migration (or, without a transaction, one statement).
pub struct Attempts<'a> {
    policy: DdlPolicy,
    migration: &'a LocalMigration,
    /// The statement's number, in a file without a transaction.
    statement: Option<usize>,
    /// When the migration's budget started.
    started: Instant,
    step: usize,
    tries: u32,
    /// The blockers of the last refusal, for the failure.
    last_blockers: Vec<Blocker>,
    /// When each blocker (by its transaction) was first in the way.
    first_seen: Vec<(String, Instant)>,
}

impl<'a> Attempts<'a> {
    /// `settings`: `--set lock_timeout=…` turns the schedule off (the
    /// user's value applies).
    pub fn new(
        options: &Options,
        migration: &'a LocalMigration,
        statement: Option<usize>,
        started: Instant,
    ) -> Attempts<'a> {
        let mut policy = options.ddl;
        if options
            .settings
            .iter()
            .any(|(name, _)| name == "lock_timeout")
        {
            policy.timeout = DdlTimeout::Off;
        }
        Attempts {
            policy,
            migration,
            statement,
            started,
            step: 0,
            tries: 0,
            last_blockers: Vec::new(),
            first_seen: Vec::new(),
        }
    }

    fn remaining(&self) -> Duration {
        self.policy.budget.saturating_sub(self.started.elapsed())
    }

    /// This attempt's `lock_timeout`; `None` without one.
    pub fn timeout(&self) -> Option<Duration> {
        let wanted = match self.policy.timeout {
            DdlTimeout::Off => return None,
            DdlTimeout::Fixed(timeout) => timeout,
            DdlTimeout::Auto => {
                Duration::from_millis(SCHEDULE_MS[self.step.min(SCHEDULE_MS.len() - 1)])
            }
        };
        Some(wanted.min(self.remaining()).max(Duration::from_millis(1)))
    }

    /// The whole remaining budget as one timeout: for a concurrent index
    /// build, whose waits stall no traffic and whose refusal throws the
    /// build away (so a short timeout would only cost rebuilds).
    pub fn budget_timeout(&self) -> Option<Duration> {
        (self.policy.timeout != DdlTimeout::Off)
            .then(|| self.remaining().max(Duration::from_millis(1)))
    }

    /// `SET LOCAL lock_timeout = …` for this attempt, in a form of fixed
    /// length (see [`DIGITS`]).
    pub fn local_sql(&self) -> Option<String> {
        self.timeout().map(local_sql)
    }

    /// A refused attempt's error, if it is a lock timeout this schedule
    /// set (`LOCK … NOWAIT` also raises 55P03, but says so).
    pub fn is_lock_timeout(&self, error: &postgres::Error) -> bool {
        self.policy.timeout != DdlTimeout::Off
            && error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
            && error
                .as_db_error()
                .is_some_and(|db| db.message().contains("lock timeout"))
    }

    /// After a refused attempt (rolled back): looks up what was in the way
    /// of `locks`, logs it, and waits until the next attempt should go
    /// (`Ok`) — or says the migration is blocked (exit 8).
    pub fn refused(
        &mut self,
        session: &mut LockSession,
        locks: &[TableLock],
        attempt: Instant,
        interrupt: &Interrupt,
    ) -> Result<(), Failure> {
        self.tries += 1;
        let timeout = self.timeout().unwrap_or_default();
        let found = look_up(session, locks, attempt);
        self.log(&found, timeout);
        if !found.is_empty() {
            self.last_blockers = found.clone();
        }
        if self.policy.retries.is_some_and(|most| self.tries > most) {
            return Err(self.blocked());
        }
        let old: Vec<Blocker> = found.into_iter().filter(|b| b.old).collect();
        // Known tables: an old holder is what the attempt met; wait it out.
        if !old.is_empty() && !locks.is_empty() {
            return self.wait_out(session, &old, interrupt);
        }
        self.step = (self.step + 1).min(SCHEDULE_MS.len() - 1);
        let cap = (timeout * PAUSE_FACTOR).clamp(MIN_PAUSE_CAP, MAX_PAUSE_CAP);
        let pause = cap.mul_f64(fastrand::f64());
        let next = self.timeout().unwrap_or_default();
        if self.remaining() <= pause + next.min(Duration::from_millis(50)) {
            return Err(self.blocked());
        }
        let statement = self
            .statement
            .map_or(String::new(), |n| format!(" statement={n}"));
        log::warn!(
            "MIGRATION_RETRY version={} name={}{statement} attempt={} reason=lock_timeout \
             lock_timeout_ms={} retry_in_ms={}",
            self.migration.id.version,
            self.migration.id.name,
            self.tries + 1,
            millis(next),
            millis(pause)
        );
        if !interrupt.sleep(pause) {
            return Err(Failure::interrupted());
        }
        Ok(())
    }

    /// A concurrent statement refused after its whole budget: looks up and
    /// logs what was in the way, and says the migration is blocked.
    pub fn exhausted(
        &mut self,
        session: &mut LockSession,
        locks: &[TableLock],
        attempt: Instant,
    ) -> Failure {
        self.tries += 1;
        let timeout = self.budget_timeout().unwrap_or_default();
        let found = look_up(session, locks, attempt);
        self.log(&found, timeout);
        self.last_blockers = found;
        self.blocked()
    }

    /// Polls until every old blocker's transaction has ended, ending those
    /// idle in it for longer than `--cancel-blockers-after` when asked to.
    fn wait_out(
        &mut self,
        session: &mut LockSession,
        old: &[Blocker],
        interrupt: &Interrupt,
    ) -> Result<(), Failure> {
        let mut open: Vec<Blocker> = old.to_vec();
        for blocker in &open {
            if !self
                .first_seen
                .iter()
                .any(|(vxid, _)| *vxid == blocker.vxid)
            {
                self.first_seen.push((blocker.vxid.clone(), Instant::now()));
            }
        }
        log::info!(
            "DDL_WAITING version={} name={} for={} (polling every {} ms, {} of --ddl-lock-budget left)",
            self.migration.id.version,
            self.migration.id.name,
            open.iter()
                .map(|b| format!("pid {}", b.backend.pid))
                .collect::<Vec<_>>()
                .join(", "),
            POLL.as_millis(),
            human(self.remaining())
        );
        loop {
            if let Some(after) = self.policy.cancel_blockers_after {
                for blocker in &open {
                    let since = self
                        .first_seen
                        .iter()
                        .find(|(vxid, _)| *vxid == blocker.vxid)
                        .map_or(Duration::ZERO, |(_, at)| at.elapsed());
                    if since >= after {
                        blockers::end_idle(session, blocker, since);
                    }
                }
            }
            let still = blockers::still_open(session, &open).unwrap_or_default();
            open.retain(|b| still.contains(&b.vxid));
            if open.is_empty() {
                return Ok(());
            }
            if self.remaining() < POLL {
                self.last_blockers = open;
                return Err(self.blocked());
            }
            if !interrupt.sleep(POLL) {
                return Err(Failure::interrupted());
            }
        }
    }

    fn log(&self, found: &[Blocker], timeout: Duration) {
        let (version, name) = (&self.migration.id.version, &self.migration.id.name);
        let statement = self
            .statement
            .map_or(String::new(), |n| format!(" statement={n}"));
        if found.is_empty() {
            log::warn!(
                "DDL_BLOCKED version={version} name={name}{statement} attempt={} lock_timeout_ms={} \
                 blocker=<none visible: it ended, or this role cannot see it>",
                self.tries,
                millis(timeout)
            );
        }
        for b in found {
            log::warn!(
                "DDL_BLOCKED version={version} name={name}{statement} attempt={} lock_timeout_ms={} \
                 table={} mode={} {}",
                self.tries,
                millis(timeout),
                b.relation,
                b.mode,
                b.log_fields()
            );
        }
    }

    /// The migration's budget ran out: nothing of it was applied (exit 8).
    fn blocked(&self) -> Failure {
        let migration = self.migration;
        let who = match self.last_blockers.first() {
            Some(b) => format!(
                "the last attempt was blocked by {} ({} on {})",
                b.backend.summary(),
                b.mode,
                b.relation
            ),
            None => "no blocking session was visible to this role".to_string(),
        };
        let more = match self.last_blockers.len() {
            0 | 1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        Failure::new(
            Outcome::Blocked,
            Blocked {
                message: format!(
                    "migration {migration} could not get its table locks within --ddl-lock-budget {} \
                     ({} attempt(s)): {who}{more}. Nothing of {migration} was applied (migrations \
                     before it stay applied); each attempt waited at most its short lock_timeout, so \
                     the application was not stalled. Try again later, end the blocking session, or \
                     let miglock end idle ones with --cancel-blockers-after.",
                    human(self.policy.budget),
                    self.tries.max(1)
                ),
                blockers: self.last_blockers.iter().map(|b| b.backend.clone()).collect(),
            },
        )
    }
}

/// The sessions in the way of `locks`; none when the lookup fails (said,
/// not fatal: the schedule then escalates, the safe side).
fn look_up(session: &mut LockSession, locks: &[TableLock], attempt: Instant) -> Vec<Blocker> {
    blockers::look_up(session, locks, attempt.elapsed()).unwrap_or_else(|e| {
        log::warn!(
            "cannot look up the sessions in the way: {}",
            crate::pg_error::error_chain(&e)
        );
        Vec::new()
    })
}

/// `SET LOCAL lock_timeout = 00000050`: PostgreSQL reads the leading
/// zeros as the number they pad.
pub fn local_sql(timeout: Duration) -> String {
    let ms = millis(timeout).clamp(1, 10u64.pow(DIGITS as u32) - 1);
    format!("SET LOCAL lock_timeout = {ms:0DIGITS$}")
}

/// The failure of a migration whose table locks stayed out of reach: its
/// words, and the sessions in the way (the JSON result's `blockers`).
#[derive(Debug)]
pub struct Blocked {
    pub message: String,
    pub blockers: Vec<Backend>,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Blocked {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_replaces_itself_in_place() {
        assert_eq!(
            local_sql(Duration::from_millis(50)),
            "SET LOCAL lock_timeout = 00000050"
        );
        assert_eq!(
            local_sql(Duration::from_secs(180)).len(),
            local_sql(Duration::from_millis(1)).len()
        );
        assert_eq!(
            local_sql(Duration::from_secs(1_000_000)),
            "SET LOCAL lock_timeout = 99999999"
        );
    }
}
