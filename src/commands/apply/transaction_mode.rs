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

use super::run::Run;
use crate::backoff::Backoff;
use crate::error::Failure;
use crate::lock::mode::{self, LockMode};
use crate::lock::{self, Backend, LockSession, ToolKey};
use crate::migrate::{self, Lost, SessionBaseline, Step};
use crate::migrations::history::{self, HistoryRow};
use crate::migrations::{Plan, Problem, ProblemKind};
use crate::outcome::Outcome;
use crate::pg_error;
use crate::report::{self, AppliedEntry, Report};
use crate::sql::Batch;
use crate::time::{human, millis};

/// Refuses, before anything runs, a plan with a pending migration that
/// runs without a transaction: nothing could hold the key for its
/// statements, each of which may land on another server session.
/// `reason`: why transaction mode (see `lock::Decision`).
pub fn refuse_non_transactional(plan: &Plan, reason: &str) -> Vec<Problem> {
    plan.pending
        .iter()
        .filter_map(|m| {
            let why = m.no_transaction()?;
            let message = if reason == "pooler" {
                format!(
                    "{}: runs without a transaction ({why}), which transaction lock mode cannot \
                     lock: the key lives in each migration's transaction. --lock-mode auto chose \
                     that mode because a connection pooler sits between miglock and PostgreSQL \
                     (the cancel key does not carry the server's process id). Through a \
                     session-pooling port, give --lock-mode session; through a transaction \
                     pooler, apply this release's migrations over a direct connection, then run \
                     the rest through the pooler as before",
                    m.path.display()
                )
            } else {
                format!(
                    "{}: runs without a transaction ({why}), which --lock-mode transaction cannot \
                     lock: the key lives in each migration's transaction. Apply this release's \
                     migrations over a direct connection (or a session-pooling port) with \
                     --lock-mode session, then run the rest through the pooler as before",
                    m.path.display()
                )
            };
            Some(Problem {
                kind: ProblemKind::Unsupported,
                message,
                file: Some(m.path.clone()),
                version: Some(m.id.version.clone()),
                line: None,
            })
        })
        .collect()
}

/// What one round of the loop came to.
enum Round {
    /// Progress (a migration applied, or found applied): go on at once.
    Progress,
    /// The key is held by another server session: wait, then look again.
    Busy,
}

/// Applies what is pending in transaction mode (see the module docs).
pub(super) fn apply(
    session: &mut LockSession,
    run: Run,
    history: Option<Vec<HistoryRow>>,
    report: &mut Report,
) -> Result<Outcome, Failure> {
    let Run { config, ctx, .. } = run;
    let key = session.key().clone();
    let started = Instant::now();
    let deadline = started + config.wait;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
    let mut busy_logged: Option<i32> = None;
    let mut acquired_logged = false;
    let mut applied = 0usize;
    let mut history = history;
    let mut baseline: Option<SessionBaseline> = None;
    // Each guard takes the other tool's keys too: known before the first.
    session.resolve_tool_keys()?;
    let bar = ctx.progress.bar(report.pending.len() as u64);
    // To tell a restart or failover (carried through) from a session ended
    // while the server stayed up (not).
    let mut server_started = session.server_start_time();
    loop {
        if ctx.interrupt.is_set() {
            return Err(Failure::interrupted());
        }
        let round = match &history {
            None => match session.create_history_under_key()? {
                Some(rows) => {
                    history = Some(rows);
                    Round::Progress
                }
                None => Round::Busy,
            },
            Some(rows) => {
                let plan = run.plan(rows, report)?;
                report.set_plan(&plan);
                let Some(migration) = plan.pending.first().copied() else {
                    report.lock.waited_ms = millis(started.elapsed());
                    if applied == 0 {
                        return Ok(report
                            .current(&plan, "applied by another replica while this one waited"));
                    }
                    report::schema_current(
                        plan.newest_applied(),
                        plan.applied.len(),
                        &format!("this run applied {applied}"),
                    );
                    return Ok(Outcome::Applied);
                };
                let baseline = baseline.get_or_insert_with(|| {
                    SessionBaseline::new(
                        session.table(),
                        LockMode::Transaction,
                        &config.migrate,
                        session.identity(),
                        session.server_version(),
                    )
                });
                if let Some(bar) = &bar {
                    bar.set_message(migration.to_string());
                }
                let applied_on = history::applied_on_now()?;
                let t0 = Instant::now();
                let step = Step {
                    migration,
                    baseline,
                    options: &config.migrate,
                    lock_mode: LockMode::Transaction,
                    applied_on: &applied_on,
                    release_after: false,
                    interrupt: ctx.interrupt,
                };
                // The key comes with the migration's transaction: what was
                // waited is what came before this attempt.
                let mut acquired = |report: &mut Report| {
                    if !acquired_logged {
                        acquired_logged = true;
                        report.lock.waited_ms = millis(t0.duration_since(started));
                        report.lock_acquired(&key, LockMode::Transaction);
                    }
                };
                match migrate::apply_one(session, &step) {
                    Ok(()) => {
                        acquired(report);
                        run.applied(report, migration, t0);
                        if let Some(bar) = &bar {
                            bar.inc(1);
                        }
                        applied += 1;
                        if let Some(rows) = &mut history {
                            rows.push(HistoryRow::written_for(migration, applied_on));
                        }
                        Round::Progress
                    }
                    Err(f) if f.detail.sqlstate.as_deref() == Some(mode::ALREADY_APPLIED) => {
                        log::debug!("{migration} was applied by another replica meanwhile");
                        history = session.read_history()?;
                        Round::Progress
                    }
                    Err(f)
                        if matches!(
                            f.detail.sqlstate.as_deref(),
                            Some(mode::KEY_ELSEWHERE | mode::TOOL_KEY_HELD)
                        ) =>
                    {
                        Round::Busy
                    }
                    // The migration committed with its row or not at all,
                    // and the next try's guard re-checks the row under the
                    // key: after a restart or failover, carry on.
                    Err(failure) if session.is_closed() || failure.connection_lost() => {
                        let lost = Lost {
                            migration,
                            applied_on,
                            failure,
                        };
                        let ours = migrate::after_connection_loss(
                            session,
                            &lost,
                            server_started.as_deref(),
                            LockMode::Transaction,
                            ctx.interrupt,
                        )?;
                        server_started = session.server_start_time();
                        history = session.read_history()?;
                        if ours {
                            applied += 1;
                            report
                                .applied
                                .push(AppliedEntry::by_this_run(migration, None));
                        }
                        Round::Progress
                    }
                    // The guard let it through: the key was this run's.
                    Err(f) => {
                        acquired(report);
                        return Err(f);
                    }
                }
            }
        };
        if let Round::Progress = round {
            backoff.reset();
            continue;
        }
        let (mut holder, mut tool) = holder(session);
        loop {
            // Said before the deadline is looked at: a run out of --wait
            // still names who kept it out.
            if let Some(current) = &holder {
                if busy_logged != Some(current.pid) {
                    busy_logged = Some(current.pid);
                    lock::log_busy(
                        &key,
                        LockMode::Transaction,
                        Some(current),
                        tool.as_ref(),
                        millis(started.elapsed()),
                        millis(config.wait),
                    );
                }
                report.lock.holder = Some(current.clone());
                report.lock.holder_tool_key = tool.clone();
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return timed_out(report, run, &key, started, applied);
            }
            if holder.is_none() {
                // The key looks free: try again.
                break;
            }
            let pause = backoff.next_pause().min(remaining);
            if !ctx.interrupt.sleep(pause) {
                return Err(Failure::interrupted());
            }
            // Looked at before trying: a refused try is an ERROR in the
            // server log, with the whole migration as its STATEMENT, so
            // waiters only try once the key looks free (a race between two
            // of them still ends in one refusal, rolled back).
            let (now, now_tool, rows) = look(session, history.is_some())?;
            if rows.is_some() {
                history = rows;
            }
            if history.as_ref().is_some_and(|rows| {
                Plan::new(
                    run.set,
                    rows,
                    config.target_version.as_ref(),
                    config.common.ahead,
                )
                .is_ok_and(|plan| plan.pending.is_empty())
            }) {
                break;
            }
            holder = now;
            tool = now_tool;
        }
    }
}

fn timed_out(
    report: &mut Report,
    run: Run,
    key: &lock::LockKey,
    started: Instant,
    applied: usize,
) -> Result<Outcome, Failure> {
    report.lock.waited_ms = millis(started.elapsed());
    report.lock_wait_timeout(
        key,
        LockMode::Transaction,
        &format!("this run applied {applied}"),
    );
    if applied == 0 {
        return Ok(Outcome::Skipped);
    }
    // Applied some, then lost the key to another run for the whole --wait:
    // not "nothing was changed", so not exit 3.
    Err(Failure::failed(anyhow!(
        "this run applied {applied} migration(s), then the lock {key} stayed busy for the rest of --wait {}; \
         what is left is pending (miglock status)",
        human(run.config.wait)
    )))
}

/// Who holds the key now (or the other tool's, and which), and with
/// `history`, the history: one round trip, nothing taken.
fn look(session: &mut LockSession, history: bool) -> Result<Looked, Failure> {
    let key = session.key().clone();
    let mut batch = Batch::new();
    let holder = batch.push(&session.holder_sql());
    let rows = history.then(|| batch.push(&session.table().select_sql()));
    let results = session
        .query(&batch)
        .map_err(|e| pg_error::failed(&e, format!("cannot read who holds the lock {key}")))?;
    let (holder, tool) = session.holder_from_rows(results.rows(holder));
    let rows = match rows {
        Some(slot) => Some(history::rows_from_rows(
            results.rows(slot),
            session.table().layout(),
        )?),
        None => None,
    };
    Ok((holder, tool, rows))
}

/// What [`look`] found.
type Looked = (Option<Backend>, Option<ToolKey>, Option<Vec<HistoryRow>>);

/// Who holds the key now, for the log (best effort).
fn holder(session: &mut LockSession) -> (Option<Backend>, Option<ToolKey>) {
    look(session, false).map_or((None, None), |(holder, tool, _)| (holder, tool))
}
