//! The result of a run: the JSON object `--format json` prints, filled in
//! as the command goes, so even a failed run reports what it did.

use std::collections::VecDeque;

use serde::Serialize;

use crate::config::Common;
use crate::error::{ErrorDetail, Failure};
use crate::lock::{Backend, LockKey, LockMode, LockSession, ToolKey};
use crate::migrate::invalid_indexes::InvalidIndex;
use crate::migrate::table_sizes;
use crate::migrate::Blocked;
use crate::migrations::lint::LintReport;
use crate::migrations::{LocalMigration, MigrationId, Plan, Problem, Problems, Version};
use crate::outcome::Outcome;

mod statements;
pub use statements::{plan_lines, PlannedStatement};

/// The one `SCHEMA_CURRENT` line: the newest applied migration, how many
/// are applied, and why the schema is current now.
pub fn schema_current(newest: Option<String>, applied: usize, why: &str) {
    log::info!(
        "SCHEMA_CURRENT version={} applied={applied} ({why})",
        newest.as_deref().unwrap_or("none")
    );
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: &'static str,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// `apply`: what this run applied. `status`: what the history holds.
    pub applied: Vec<AppliedEntry>,
    /// In order; `apply` takes each from the front as it is applied.
    pub pending: VecDeque<PendingEntry>,
    /// Applied by a newer release: above the newest local file.
    pub ahead: Vec<AheadEntry>,
    pub lock: LockReport,
    pub error: Option<ErrorReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The database, as `user@host:port/database` (never the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Whose folder and history table the run read (`--layout`, or what
    /// `auto` told from the folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::migrations::Layout>,
    /// `status`: the history table, and whether it exists yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableReport>,
    /// `apply` that exited 8: the sessions holding the table locks its
    /// migration needed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Backend>,
    /// `status` and `apply`: the INVALID indexes of the session's schemas
    /// (absent when they were not looked at: `apply` failed before, or
    /// another command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_indexes: Option<Vec<InvalidIndex>>,
    /// `unlock`: the sessions terminated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminated: Vec<i32>,
    /// `SCHEMA_AHEAD` is said once per run, however often the history is
    /// read (`wait` reads it on every look).
    #[serde(skip)]
    ahead_logged: bool,
    /// `new`: the file created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `baseline`: the versions recorded as applied without running them
    /// (with `--dry-run`, those it would record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baselined: Option<Vec<PendingEntry>>,
    /// `repair`: the rows given the file's checksum (with `--dry-run`,
    /// those it would change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Vec<RepairedEntry>>,
    /// `down`: the migrations reverted, newest first (with `--dry-run`,
    /// those it would revert).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Vec<AppliedEntry>>,
    /// `lint`, and `apply` that linted its pending files: the findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lint: Option<LintReport>,
}

#[derive(Debug, Serialize)]
pub struct AheadEntry {
    #[serde(flatten)]
    pub id: MigrationId,
    pub applied_on: String,
}

#[derive(Debug, Serialize)]
pub struct RepairedEntry {
    pub version: Version,
    /// The file's name (the history's, when it changed, is `old_name`).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_name: Option<String>,
    pub old_checksum: String,
    pub new_checksum: String,
}

#[derive(Debug, Serialize)]
pub struct TableReport {
    /// The table's name, without its schema.
    pub name: String,
    /// The schema the table is in, or would be created in, as the
    /// session's `search_path` resolves it (`null`: it names no schema).
    pub schema: Option<String>,
    pub exists: bool,
}

#[derive(Debug, Serialize)]
pub struct AppliedEntry {
    #[serde(flatten)]
    pub id: MigrationId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_on: Option<String>,
    /// `false` for a file that runs without a transaction; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct PendingEntry {
    #[serde(flatten)]
    pub id: MigrationId,
    /// `false` for a file that runs without a transaction; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<bool>,
    /// Why it runs without one (`marker`, or the statement's kind), for
    /// the text output.
    #[serde(skip)]
    pub no_transaction: Option<String>,
    /// The tables its statements lock, each at the strongest mode the file
    /// takes it in, as far as the statements' words tell.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<PlannedLock>,
    /// Each statement that locks a table harder than `ROW EXCLUSIVE`,
    /// rewrites or scans it: one entry per table it locks, the file's
    /// first [`crate::migrations::split::MAX_STATEMENTS`] such statements.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<PlannedStatement>,
    /// How many more such statements the file holds.
    #[serde(skip_serializing_if = "is_zero")]
    pub statements_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A table a pending file locks, and in what mode (`ACCESS EXCLUSIVE`…).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedLock {
    pub table: String,
    pub mode: &'static str,
    /// What the file does to the table's rows besides locking it:
    /// `rewrite`, `may_rewrite` or `scan` (see `split::Work`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work: Option<&'static str>,
    /// `apply --dry-run`, for a table rewritten or scanned: its size
    /// (`pg_total_relation_size`) and estimated rows (`reltuples`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
}

impl std::fmt::Display for AppliedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.id.fmt(f)
    }
}

impl std::fmt::Display for PendingEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.id.fmt(f)
    }
}

impl AppliedEntry {
    /// `migration`, applied by this run (`duration_ms`: `None` when its
    /// commit was learned after a lost connection).
    pub fn by_this_run(migration: &LocalMigration, duration_ms: Option<u64>) -> AppliedEntry {
        AppliedEntry {
            id: migration.id.clone(),
            duration_ms,
            applied_on: None,
            transaction: migration.no_transaction().map(|_| false),
        }
    }
}

impl PendingEntry {
    pub fn of(migration: &LocalMigration) -> PendingEntry {
        let no_transaction = migration.no_transaction();
        let locks = migration.summary().map_or_else(
            |_| Vec::new(),
            |summary| {
                summary
                    .locks
                    .iter()
                    .map(|lock| {
                        let work = summary
                            .work
                            .iter()
                            .find(|(table, _)| *table == lock.table)
                            .map(|(_, work)| *work);
                        PlannedLock {
                            table: lock.table.clone(),
                            mode: lock.level.sql_name(),
                            work: work.map(|w| w.as_str()),
                            bytes: None,
                            rows: None,
                        }
                    })
                    .collect()
            },
        );
        let (statements, statements_omitted) =
            migration.summary().map_or((Vec::new(), 0), |summary| {
                (PlannedStatement::of(&summary.costly), summary.costly.more)
            });
        PendingEntry {
            id: migration.id.clone(),
            transaction: no_transaction.is_some().then_some(false),
            no_transaction,
            locks,
            statements,
            statements_omitted,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct LockReport {
    pub key: Option<i64>,
    pub key_source: Option<String>,
    /// `apply`: the lock mode of this run, `session` or `transaction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// Why: `requested` (`--lock-mode`), `direct` or `pooler` (told by
    /// `auto` from the connection), `unix_socket` or `no_host_name` (auto
    /// could not tell: session), `statement_pooler` (refused, exit 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<&'static str>,
    pub waited_ms: u64,
    pub holder: Option<Backend>,
    /// The other tool's key (see `--tool-lock`) the holder held, when it
    /// was that key, not miglock's own, that kept this run waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_tool_key: Option<ToolKey>,
    /// `session` or `transaction`: the holder's `--lock-mode`, from its
    /// application_name (`status`, `unlock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_mode: Option<&'static str>,
    pub waiting: Vec<Backend>,
    /// `status`: sessions blocked behind the holder (`pg_blocking_pids`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<Backend>,
    /// `status`: the other tool's keys miglock takes with its own (see
    /// `--tool-lock`), and who holds each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_keys: Vec<ToolKeyState>,
}

/// Another tool's key, and who holds it.
#[derive(Debug, Serialize)]
pub struct ToolKeyState {
    #[serde(flatten)]
    pub key: ToolKey,
    pub holder: Option<Backend>,
}

#[derive(Debug, Serialize)]
pub struct ErrorReport {
    pub message: String,
    pub sqlstate: Option<String>,
    pub file: Option<String>,
    pub line: Option<usize>,
}

impl Report {
    pub fn new(command: &'static str) -> Report {
        Report {
            command,
            outcome: Outcome::Failed,
            exit_code: Outcome::Failed.exit_code(),
            applied: Vec::new(),
            pending: VecDeque::new(),
            ahead: Vec::new(),
            lock: LockReport::default(),
            error: None,
            problems: Vec::new(),
            dry_run: false,
            database: None,
            table: None,
            blockers: Vec::new(),
            invalid_indexes: None,
            terminated: Vec::new(),
            ahead_logged: false,
            path: None,
            baselined: None,
            repaired: None,
            reverted: None,
            layout: None,
            lint: None,
        }
    }

    /// The database and the lock key a command works on.
    pub fn set_database(&mut self, common: &Common) {
        self.lock.key = Some(common.key.key);
        self.lock.key_source = Some(common.key.source.clone());
        self.database = Some(common.database.to_string());
        self.layout = Some(common.table.layout());
    }

    /// What a wait for the key came to, in the result; whether the key is
    /// held (`baseline`, `repair`, `down`: skipped otherwise).
    pub fn acquired(&mut self, acquired: crate::lock::wait::Acquired) -> bool {
        self.lock.waited_ms = acquired.waited_ms;
        self.lock.holder = acquired.holder;
        self.lock.holder_tool_key = acquired.holder_tool;
        acquired.held
    }

    /// The set is unsafe to run: every problem goes in the result, and the
    /// run ends `invalid` with them.
    pub fn invalid(&mut self, problems: Problems) -> Failure {
        self.problems = problems.0.clone();
        Failure::invalid(problems)
    }

    /// The key stayed busy for the whole wait: `LOCK_WAIT_TIMEOUT` with
    /// who held it and what that left undone (`nothing was changed by this
    /// run`), and exit 3.
    pub fn lock_wait_timeout(&self, key: &LockKey, mode: LockMode, left: &str) -> Outcome {
        crate::lock::log_wait_timeout(
            key,
            mode,
            self.lock.waited_ms,
            self.lock.holder.as_ref(),
            self.lock.holder_tool_key.as_ref(),
            left,
        );
        Outcome::Skipped
    }

    /// `LOCK_ACQUIRED`, with how long the wait took.
    pub fn lock_acquired(&self, key: &LockKey, mode: LockMode) {
        crate::lock::log_acquired(key, mode, self.lock.waited_ms);
    }

    /// Nothing is pending: says so (`SCHEMA_CURRENT`), with why.
    pub fn current(&mut self, plan: &Plan, why: &str) -> Outcome {
        self.pending.clear();
        schema_current(plan.newest_applied(), plan.applied.len(), why);
        if plan.beyond_target > 0 {
            log::info!(
                "{} migration(s) beyond --target left for a later run",
                plan.beyond_target
            );
        }
        Outcome::Current
    }

    /// Adds to `pending[].locks` and `pending[].statements` the size of
    /// each table rewritten or scanned, from the catalog in one query
    /// (`apply --dry-run`, `status`; never on the way to applying). Not
    /// finding them is said, and no reason to stop.
    pub fn add_table_sizes(&mut self, session: &mut LockSession) {
        let locks = self.pending.iter().flat_map(|entry| {
            let locks = entry.locks.iter().map(|l| (l.work, &l.table));
            locks.chain(entry.statements.iter().map(|s| (s.work, &s.table)))
        });
        let mut tables: Vec<&str> = locks
            .filter(|(work, _)| work.is_some())
            .map(|(_, table)| table.as_str())
            .collect();
        tables.sort_unstable();
        tables.dedup();
        if tables.is_empty() {
            return;
        }
        let sizes = match table_sizes::read(session, &tables) {
            Ok(sizes) => sizes,
            Err(e) => {
                log::warn!(
                    "cannot read the tables' sizes: {}",
                    crate::pg_error::error_chain(&e)
                );
                return;
            }
        };
        for entry in &mut self.pending {
            for lock in &mut entry.locks {
                if let (Some(_), Some(size)) = (lock.work, sizes.get(&lock.table)) {
                    lock.bytes = Some(size.bytes);
                    lock.rows = size.rows.map(|r| r.round() as i64);
                }
            }
            for statement in &mut entry.statements {
                if let (Some(_), Some(size)) = (statement.work, sizes.get(&statement.table)) {
                    statement.bytes = Some(size.bytes);
                    statement.rows = size.rows.map(|r| r.round() as i64);
                }
            }
        }
    }

    /// What the plan leaves to do (`pending`) and what a newer release did
    /// (`ahead`, logged as `SCHEMA_AHEAD` the first time).
    pub fn set_plan(&mut self, plan: &Plan) {
        self.ahead = plan
            .ahead
            .iter()
            .map(|a| AheadEntry {
                id: a.id.clone(),
                applied_on: a.applied_on.clone(),
            })
            .collect();
        if !self.ahead.is_empty() && !self.ahead_logged {
            self.ahead_logged = true;
            let ahead: Vec<String> = plan.ahead.iter().map(|a| a.id.to_string()).collect();
            log::warn!(
                "SCHEMA_AHEAD newest_local={} ahead={} (applied by a newer release; treated as \
                 current for this one, --ahead allow)",
                plan.newest_local
                    .as_ref()
                    .map_or("none".to_string(), |v| format!("V{v}")),
                ahead.join(",")
            );
        }
        self.pending = plan.pending.iter().map(|m| PendingEntry::of(m)).collect();
    }

    pub fn finish(&mut self, outcome: Outcome, exit_code: u8) {
        self.outcome = outcome;
        self.exit_code = exit_code;
    }

    pub fn fail(&mut self, failure: &Failure, exit_code: u8) {
        self.finish(failure.outcome, exit_code);
        if let Some(blocked) = failure.error.downcast_ref::<Blocked>() {
            self.blockers = blocked.blockers.clone();
        }
        let ErrorDetail {
            sqlstate,
            file,
            line,
        } = failure.detail.clone();
        self.error = Some(ErrorReport {
            message: failure.message(),
            sqlstate,
            file: file.map(|f| f.display().to_string()),
            line,
        });
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            serde_json::json!({
                "command": self.command,
                "outcome": "failed",
                "exit_code": 1,
                "error": { "message": format!("cannot encode the result: {e}") },
            })
            .to_string()
        })
    }
}
