//! `miglock apply --lock-mode transaction`: every migration in a
//! transaction of its own that takes the key with
//! `pg_try_advisory_xact_lock` and re-reads the history under it (the
//! guard, see `lock::mode`), so nothing depends on the server session
//! between transactions and a transaction pooler cannot split or strand
//! the lock: it ends with the COMMIT or ROLLBACK, on whichever server
//! session ran it.
//!
//! No LISTEN (a pooler delivers notifications to whoever holds the server
//! session at the time) and no waiting marks: a busy key is polled with
//! jittered exponential backoff, and a migration another replica applied
//! meanwhile is found by the guard's check and skipped.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::config::ApplyConfig;
use crate::error::Failure;
use crate::history::{self, AppliedMigration};
use crate::lock::mode::{self, LockMode};
use crate::lock::{Backend, LockSession};
use crate::migrate;
use crate::migrations::Plan;
use crate::nontx::{Isolation, Step};
use crate::outcome::Outcome;
use crate::pg_error;
use crate::report::{self, AppliedEntry, Report};
use crate::sql::Batch;

/// As session mode's fallback polling: waiters start quick and back off,
/// jittered, so many replicas spread out.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Refuses, before anything runs, a plan with a pending migration that
/// runs without a transaction: nothing could hold the key for its
/// statements, each of which may land on another server session.
pub fn refuse_non_transactional(plan: &Plan) -> Result<(), Failure> {
    let files: Vec<String> = plan
        .pending
        .iter()
        .filter_map(|m| m.no_transaction().map(|why| format!("{m} ({why})")))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    Err(Failure::invalid(anyhow!(
        "--lock-mode transaction cannot lock migrations that run without a transaction: {}. \
         The key lives in each migration's transaction, and these have none. Nothing was applied. \
         Apply this release's migrations over a direct connection (or a session-pooling port) \
         with --lock-mode session, then run the rest through the pooler as before.",
        files.join(", ")
    )))
}

/// Applies what is pending in transaction mode (see the module docs).
pub(super) fn run(
    session: &mut LockSession,
    run: &super::apply::Run,
    history: Option<Vec<AppliedMigration>>,
    report: &mut Report,
) -> Result<Outcome, Failure> {
    let super::apply::Run {
        config,
        set,
        progress,
        interrupt,
    } = *run;
    debug_assert_eq!(config.common.lock_mode, LockMode::Transaction);
    let common = &config.common;
    let key = &common.key;
    let started = Instant::now();
    let deadline = started + config.wait;
    let mut backoff = FIRST_BACKOFF;
    let mut busy_logged: Option<Option<i32>> = None;
    let mut acquired_logged = false;
    let mut applied = 0usize;
    let mut history = history;
    let mut isolation: Option<Isolation> = None;
    let bar = progress.bar(report.pending.len() as u64);
    // To tell a restart or failover (carried through) from a session ended
    // while the server stayed up (not).
    let mut server_started = session.server_start_time();
    loop {
        if interrupt.is_set() {
            return Err(Failure::interrupted());
        }
        // Whether this round got the key, made no progress (busy), or
        // found the work done by someone else.
        let busy = match &history {
            None => match mode::create_under_key(session.client(), &common.table, key)? {
                Some(rows) => {
                    history = Some(rows);
                    false
                }
                None => true,
            },
            Some(rows) => {
                let plan = Plan::new(set, rows, config.target_version, common.ahead)
                    .map_err(|p| report.invalid(p))?;
                report.set_plan(&plan);
                let Some(migration) = plan.pending.first() else {
                    report.lock.waited_ms = crate::millis(started.elapsed());
                    if applied == 0 {
                        return Ok(report
                            .current(&plan, "applied by another replica while this one waited"));
                    }
                    report::schema_current(
                        plan.applied.last().map(ToString::to_string),
                        plan.applied.len(),
                        &format!("this run applied {applied}"),
                    );
                    return Ok(Outcome::Applied);
                };
                let isolation = match &isolation {
                    Some(isolation) => isolation,
                    None => isolation.insert(resolve_table(session, config)?),
                };
                if let Some(bar) = &bar {
                    bar.set_message(migration.to_string());
                }
                let applied_on = history::applied_on_now()?;
                let t0 = Instant::now();
                let step = Step {
                    migration,
                    isolation,
                    config,
                    applied_on: &applied_on,
                    release_after: false,
                    interrupt,
                };
                match migrate::apply_one(session, &step) {
                    Ok(()) => {
                        if !acquired_logged {
                            acquired_logged = true;
                            report.lock.waited_ms = crate::millis(started.elapsed());
                            log::info!(
                                "LOCK_ACQUIRED key={key} mode=transaction waited_ms={}",
                                report.lock.waited_ms
                            );
                        }
                        let duration_ms = crate::millis(t0.elapsed());
                        log::info!(
                            "MIGRATION_APPLIED version={} name={} ms={duration_ms}",
                            migration.version,
                            migration.name
                        );
                        report.applied.push(AppliedEntry {
                            version: migration.version.into(),
                            name: migration.name.clone(),
                            duration_ms: Some(duration_ms),
                            applied_on: None,
                            transaction: None,
                        });
                        if let Some(bar) = &bar {
                            bar.inc(1);
                        }
                        applied += 1;
                        let row = AppliedMigration {
                            version: migration.version.into(),
                            name: migration.name.clone(),
                            applied_on,
                            checksum: migration.checksum.to_string(),
                        };
                        if let Some(rows) = &mut history {
                            rows.push(row);
                        }
                        false
                    }
                    Err(f) if f.detail.sqlstate.as_deref() == Some(mode::ALREADY_APPLIED) => {
                        log::debug!("{migration} was applied by another replica meanwhile");
                        history = history::read(session.client(), &common.table)?;
                        false
                    }
                    Err(f) if f.detail.sqlstate.as_deref() == Some(mode::KEY_ELSEWHERE) => true,
                    // The migration committed with its row or not at all,
                    // and the next try's guard re-checks the row under the
                    // key: after a restart or failover, carry on.
                    Err(f) if session.is_closed() || f.connection_lost() => {
                        let lost = f.message();
                        session
                            .reconnect(
                                &format!("the connection was lost during {migration}"),
                                Instant::now() + common.connect_timeout,
                                interrupt,
                            )
                            .map_err(|e| {
                                Failure::unavailable(anyhow!(
                                    "{lost}\nReconnecting failed: {}. {migration} committed with its \
                                     history row or not at all; `miglock status` tells which.",
                                    e.message()
                                ))
                            })?;
                        history = history::read(session.client(), &common.table)?;
                        let ours = history.as_ref().is_some_and(|rows| {
                            rows.iter().any(|a| {
                                a.version == i64::from(migration.version)
                                    && a.applied_on == applied_on
                            })
                        });
                        let now = session.server_start_time();
                        if !ours && server_started.is_some() && now == server_started {
                            return Err(migrate::lost_while_server_stayed_up(&f, migration, &lost));
                        }
                        server_started = now;
                        if ours {
                            applied += 1;
                            report.applied.push(AppliedEntry {
                                version: migration.version.into(),
                                name: migration.name.clone(),
                                duration_ms: None,
                                applied_on: None,
                                transaction: None,
                            });
                        }
                        log::warn!(
                            "CONNECT_RETRY reconnected after losing the connection during {migration}; \
                             carrying on"
                        );
                        false
                    }
                    Err(f) => return Err(f),
                }
            }
        };
        if !busy {
            backoff = FIRST_BACKOFF;
            continue;
        }
        let mut holder = holder(session, config);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return timed_out(report, config, started, applied);
            }
            if !log_busy(&holder, &mut busy_logged, report, config, started) {
                break;
            }
            let pause = backoff.mul_f64(0.5 + fastrand::f64() * 0.5).min(remaining);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if !interrupt.sleep(pause) {
                return Err(Failure::interrupted());
            }
            // Looked at before trying: a refused try is an ERROR in the
            // server log, with the whole migration as its STATEMENT, so
            // waiters only try once the key looks free (a race between two
            // of them still ends in one refusal, rolled back).
            let (now, rows) = look(session, config, history.is_some())?;
            if rows.is_some() {
                history = rows;
            }
            if history.as_ref().is_some_and(|rows| {
                Plan::new(set, rows, config.target_version, common.ahead)
                    .is_ok_and(|plan| plan.pending.is_empty())
            }) {
                break;
            }
            holder = now;
        }
    }
}

/// Logs `LOCK_BUSY` when the holder changed; `false` when there is none
/// (the key looks free).
fn log_busy(
    holder: &Option<Backend>,
    busy_logged: &mut Option<Option<i32>>,
    report: &mut Report,
    config: &ApplyConfig,
    started: Instant,
) -> bool {
    let Some(current) = holder else {
        return false;
    };
    let holder_pid = Some(current.pid);
    if *busy_logged != Some(holder_pid) {
        *busy_logged = Some(holder_pid);
        log::info!(
            "LOCK_BUSY key={} mode=transaction {} waited_ms={} wait_ms={}",
            config.common.key,
            current.holder_log_fields(),
            crate::millis(started.elapsed()),
            crate::millis(config.wait)
        );
    }
    report.lock.holder = Some(current.clone());
    true
}

fn timed_out(
    report: &mut Report,
    config: &ApplyConfig,
    started: Instant,
    applied: usize,
) -> Result<Outcome, Failure> {
    report.lock.waited_ms = crate::millis(started.elapsed());
    report.lock_wait_timeout(
        &config.common.key,
        " mode=transaction",
        &format!("this run applied {applied}"),
    );
    if applied == 0 {
        return Ok(Outcome::Skipped);
    }
    // Applied some, then lost the key to another run for the whole --wait:
    // not "nothing was changed", so not exit 3.
    Err(Failure::failed(anyhow!(
        "this run applied {applied} migration(s), then the lock {} stayed busy for the rest of --wait {}; \
         what is left is pending (miglock status)",
        config.common.key,
        humantime::format_duration(config.wait)
    )))
}

/// Who holds the key now and, with `history`, the history: one round
/// trip, nothing taken.
fn look(
    session: &mut LockSession,
    config: &ApplyConfig,
    history: bool,
) -> Result<(Option<Backend>, Option<Vec<AppliedMigration>>), Failure> {
    let common = &config.common;
    let mut batch = Batch::new();
    let holder = batch.push(&common.key.sessions_sql(crate::lock::LockRole::Holder));
    let rows = history.then(|| batch.push(&common.table.select_sql()));
    let results = batch.query(session.client()).map_err(|e| {
        pg_error::failed(&e, format!("cannot read who holds the lock {}", common.key))
    })?;
    let holder = results
        .rows(holder)
        .first()
        .and_then(|row| Backend::from_row(row, 0));
    let rows = match rows {
        Some(slot) => Some(history::rows_from_rows(results.rows(slot))?),
        None => None,
    };
    Ok((holder, rows))
}

/// Who holds the key now, for the log (best effort).
fn holder(session: &mut LockSession, config: &ApplyConfig) -> Option<Backend> {
    let mut batch = Batch::new();
    let slot = batch.push(
        &config
            .common
            .key
            .sessions_sql(crate::lock::LockRole::Holder),
    );
    let results = batch.query(session.client()).ok()?;
    results
        .rows(slot)
        .first()
        .and_then(|row| Backend::from_row(row, 0))
}

/// The history table with its schema resolved once, before any migration
/// could change `search_path`. Session settings are not recorded and put
/// back as in session mode: the next transaction may run on another
/// server session anyway.
fn resolve_table(session: &mut LockSession, config: &ApplyConfig) -> Result<Isolation, Failure> {
    let table = &config.common.table;
    let mut batch = Batch::new();
    let schema = batch.push(&table.schema_sql());
    let results = batch
        .query(session.client())
        .map_err(|e| pg_error::failed(&e, format!("cannot resolve the history table {table}")))?;
    let Some(schema) = results.value(schema) else {
        return Err(history::no_schema(table));
    };
    Ok(Isolation::without_restore(table.in_schema(schema)))
}
