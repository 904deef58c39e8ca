//! `miglock unlock`: free a stuck lock. Only `pg_terminate_backend` frees
//! another session's advisory lock, so this ends the holder's session —
//! carefully: never a session that does not hold the key, never one busy
//! running a statement unless `--force`, and only after confirmation.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use postgres::error::SqlState;

use crate::config::{Format, UnlockConfig};
use crate::context::Context;
use crate::error::Failure;
use crate::lock::{Backend, LockKey, LockMode, LockRole, LockSession};
use crate::outcome::Outcome;
use crate::pg_error;
use crate::report::Report;
use crate::sql::Batch;

/// How long `pg_terminate_backend` waits for the session to end, and how
/// long the lock then gets to show as released.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(ctx: &Context, config: &UnlockConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let common = &config.common;
    let key = &common.key;
    report.set_database(common);
    report.dry_run = config.dry_run;
    // What a person reads: on stdout as the result, or on stderr beside
    // the JSON object.
    let say = |line: String| {
        if ctx.format == Format::Text {
            ctx.out.line(&line);
        } else {
            log::info!("{line}");
        }
    };

    let interactive = std::io::stdin().is_terminal();
    if !config.yes && !config.dry_run && !interactive {
        return Err(Failure::usage(anyhow!(
            "unlock ends a database session: confirm with --yes when stdin is not a terminal \
             (or use --dry-run to see what it would do); nothing was touched"
        )));
    }

    let mut session = LockSession::connect(
        common.lock_target(),
        common.identity("unlock"),
        ctx.interrupt,
    )?;
    let holders = holders(&mut session, key)?;
    let Some(holder) = holders.first().cloned() else {
        say(format!(
            "Lock {key} is free: nobody holds it, nothing to do."
        ));
        log::info!("LOCK_FREE key={key}");
        return Ok(Outcome::Free);
    };
    report.lock.holder = Some(holder.clone());
    report.lock.holder_mode = holder.lock_mode().map(LockMode::as_str);
    say(format!("Lock {key} ({}) is held by:", key.source));
    for h in &holders {
        say(format!("  {}", h.summary()));
    }
    if holder.lock_mode() == Some(LockMode::Transaction) {
        say(
            "  (--lock-mode transaction: the lock is its migration's transaction's, and ends with it; \
             terminating the session rolls that migration back)"
                .to_string(),
        );
    }

    // Busy or not is what decides whether ending the session is safe; a
    // role that cannot see the state cannot tell, so it needs --force too.
    let busy = match holder.state.as_deref() {
        Some("active") => Some(format!(
            "pid {} is running a statement right now{}",
            holder.pid,
            holder.query.as_deref().map_or(String::new(), |q| format!(
                " ({})",
                crate::parse::shorten(q.trim(), 60)
            ))
        )),
        None => Some(format!(
            "this role cannot see whether pid {} is running a statement (its state is hidden: \
             pg_read_all_stats, or the holder's role, would show it)",
            holder.pid
        )),
        Some(_) => None,
    };
    let refusal = busy.as_ref().filter(|_| !config.force).map(|busy| {
        format!(
            "{busy}: left alone. --force would terminate it anyway, rolling back its open transaction \
             (a migration in progress rolls back entirely and runs again on the next apply)"
        )
    });

    if config.dry_run {
        // A preview of either answer; the lock is held and nothing changed.
        match &refusal {
            Some(refusal) => say(format!(
                "Would refuse: {refusal}. Nothing was done (--dry-run)."
            )),
            None => say(format!(
                "Would terminate pid {} with pg_terminate_backend; nothing was done (--dry-run).",
                holder.pid
            )),
        }
        return Ok(Outcome::Skipped);
    }
    if let Some(refusal) = refusal {
        return Err(Failure::new(Outcome::Refused, anyhow!(refusal)));
    }
    if !config.yes && !confirm(&holder)? {
        return Err(Failure::new(
            Outcome::Refused,
            anyhow!("not confirmed: pid {} was left alone", holder.pid),
        ));
    }

    terminate(&mut session, key, &holder, config, common.database.user())?;
    report.terminated.push(holder.pid);

    // The session ends asynchronously; the lock goes with it.
    let started = Instant::now();
    loop {
        let now = self::holders(&mut session, key)?;
        if now.iter().all(|h| h.pid != holder.pid) {
            log::info!("LOCK_RELEASED key={key} terminated_pid={}", holder.pid);
            match now.first() {
                None => say(format!("Terminated pid {}; lock {key} is free.", holder.pid)),
                Some(next) => say(format!(
                    "Terminated pid {}; lock {key} was taken over at once by pid {} (a waiting replica).",
                    holder.pid, next.pid
                )),
            }
            report.lock.holder = now.into_iter().next();
            return Ok(Outcome::Released);
        }
        if started.elapsed() > TERMINATE_TIMEOUT {
            return Err(Failure::failed(anyhow!(
                "pid {} was signalled but still holds lock {key} after {}s",
                holder.pid,
                TERMINATE_TIMEOUT.as_secs()
            )));
        }
        if !ctx.interrupt.sleep(Duration::from_millis(50)) {
            return Err(Failure::interrupted());
        }
    }
}

fn holders(session: &mut LockSession, key: &LockKey) -> Result<Vec<Backend>, Failure> {
    let mut batch = Batch::new();
    let holders = batch.push(&key.sessions_sql(LockRole::Holder));
    let results = session
        .query(&batch)
        .map_err(|e| pg_error::failed(&e, "cannot read who holds the lock"))?;
    Ok(results
        .rows(holders)
        .iter()
        .filter_map(|row| Backend::from_row(row, 0))
        .collect())
}

fn confirm(holder: &Backend) -> Result<bool, Failure> {
    crate::output::confirm(&format!("Terminate pid {} and free the lock?", holder.pid))
        .map_err(|e| Failure::failed(anyhow!("cannot read the answer: {e}")))
}

/// Terminates the holder in one statement that re-checks, at that moment,
/// that the pid still holds the key (and, without `--force`, is not
/// running a statement): a pid that let go, or was reused, is never hit.
fn terminate(
    session: &mut LockSession,
    key: &LockKey,
    holder: &Backend,
    config: &UnlockConfig,
    user: &str,
) -> Result<(), Failure> {
    let not_busy = if config.force {
        ""
    } else {
        " AND a.state IS DISTINCT FROM 'active'"
    };
    let statement = format!(
        // The one-argument form (the timeout came in PostgreSQL 14); the
        // loop in `run` waits for the session to end.
        "SELECT pg_terminate_backend(s.pid) FROM ({holders}{not_busy}) s WHERE s.pid = {pid}",
        holders = key.sessions_sql(LockRole::Holder),
        pid = holder.pid
    );
    let mut batch = Batch::new();
    let signalled = batch.push(&statement);
    match session.query(&batch) {
        Ok(results) => {
            if !results.rows(signalled).is_empty() {
                Ok(())
            } else {
                Err(Failure::new(
                    Outcome::Refused,
                    anyhow!(
                        "pid {} no longer holds lock {key}, or started running a statement: nothing was \
                         terminated; run unlock again to see the current holder",
                        holder.pid
                    ),
                ))
            }
        }
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            let owner = holder.usename.as_deref().unwrap_or("another role");
            let mut batch = Batch::new();
            let rolsuper = batch.push(&format!(
                "SELECT rolsuper FROM pg_roles WHERE rolname = {}",
                crate::sql::literal(owner)
            ));
            let superuser = session
                .query(&batch)
                .is_ok_and(|results| results.value(rolsuper) == Some("t"));
            let fix = if superuser {
                format!("{owner} is a superuser, whose sessions only a superuser may end: run unlock as a superuser")
            } else {
                format!(
                    "run unlock as {owner} or as a superuser, or let {user} end other roles' sessions with: \
                     GRANT pg_signal_backend TO {user};"
                )
            };
            Err(Failure::new(
                Outcome::Refused,
                anyhow!(
                    "permission denied: role {user} may not terminate pid {pid}, which belongs to role {owner} \
                     (SQLSTATE 42501). {fix}",
                    pid = holder.pid
                ),
            ))
        }
        Err(e) => Err(pg_error::failed(
            &e,
            format!("cannot terminate pid {}", holder.pid),
        )),
    }
}
