//! Who was in a refused attempt's way. PostgreSQL's lock-timeout error names
//! nobody, and once the attempt is rolled back `pg_blocking_pids()` has
//! nothing to say: so the sessions holding a lock that conflicts with what
//! the migration needs, on the tables it names, are looked up on this same
//! connection, right after. One holding it since before the attempt began
//! is what the attempt met (readers that queued behind the attempt are
//! younger); its transaction is then watched by its virtual id, which needs
//! no privilege, until it ends.

use std::time::Duration;

use crate::lock::{Backend, LockSession, ACTIVITY_COLUMNS};
use crate::migrations::split::TableLock;
use crate::sql::{literal, Batch};

/// A session holding a lock the migration needs.
#[derive(Debug, Clone)]
pub struct Blocker {
    pub backend: Backend,
    /// Its transaction's virtual id (`pg_locks.virtualtransaction`).
    pub vxid: String,
    /// Its transaction began before the attempt.
    pub old: bool,
    pub relation: String,
    pub mode: String,
    /// Seconds since its transaction began (`None`: hidden from this role).
    pub xact_seconds: Option<f64>,
}

impl Blocker {
    /// `blocker_pid=… application_name="…" state="…" xact_age=…s query="…"`
    /// for `DDL_BLOCKED`, its query cut and without its literals (another
    /// session's statement may hold a password).
    pub fn log_fields(&self) -> String {
        let b = &self.backend;
        let shown = |v: &Option<String>| v.as_deref().unwrap_or("<hidden>").to_string();
        format!(
            "blocker_pid={} application_name={:?} state={:?} xact_age={} old={} query={:?}",
            b.pid,
            shown(&b.application_name),
            shown(&b.state),
            self.xact_seconds
                .map_or("<hidden>".to_string(), |s| format!("{s:.1}s")),
            self.old,
            b.query
                .as_deref()
                .map_or("<hidden>".to_string(), |q| sanitize(q, 120)),
        )
    }
}

/// The sessions holding, on `locks`' tables (and their partitions, and an
/// index's table), a lock that conflicts with the mode the migration asks
/// for; `old` when their transaction began before the attempt, sent
/// `since_attempt` ago. Without `locks` (a statement the words do not
/// decide), none.
pub fn look_up(
    session: &mut LockSession,
    locks: &[TableLock],
    since_attempt: Duration,
) -> Result<Vec<Blocker>, postgres::Error> {
    if locks.is_empty() {
        return Ok(Vec::new());
    }
    let targets: Vec<String> = locks
        .iter()
        .map(|l| {
            let conflicts: Vec<String> = l
                .level
                .conflicts()
                .iter()
                .map(|c| c.pg_locks_name().to_string())
                .collect();
            format!(
                "({}, {})",
                literal(&l.table),
                literal(&format!("{{{}}}", conflicts.join(",")))
            )
        })
        .collect();
    // A transaction counts as old when it began before the attempt was
    // sent: measured on this side, so no clock is compared.
    let old_before = format!(
        "clock_timestamp() - interval '{} milliseconds'",
        since_attempt.as_millis()
    );
    let mut batch = Batch::new();
    let rows = batch.push(&format!(
        "WITH RECURSIVE target(rel, conflicts) AS ( \
           SELECT to_regclass(v.name)::oid, v.conflicts::text[] FROM (VALUES {targets}) AS v(name, conflicts) \
           UNION SELECT c.rel, t.conflicts FROM target t CROSS JOIN LATERAL ( \
             SELECT inhrelid FROM pg_inherits WHERE inhparent = t.rel \
             UNION ALL SELECT indrelid FROM pg_index WHERE indexrelid = t.rel) AS c(rel)) \
         SELECT l.pid, {ACTIVITY_COLUMNS}, l.virtualtransaction, \
           coalesce(a.xact_start <= {old_before}, l.pid IS NULL), \
           l.relation::regclass::text, l.mode, \
           round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1) \
         FROM target t JOIN pg_locks l ON l.locktype = 'relation' AND l.granted \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.relation = t.rel AND l.mode = ANY (t.conflicts) \
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.pid IS DISTINCT FROM pg_backend_pid() \
         ORDER BY a.xact_start NULLS FIRST, l.pid",
        targets = targets.join(", ")
    ));
    let results = session.query(&batch)?;
    let mut found: Vec<Blocker> = Vec::new();
    for row in results.rows(rows) {
        let text = |i: usize| row.try_get(i).ok().flatten().map(str::to_string);
        let Some(backend) = Backend::from_row(row, 0) else {
            continue;
        };
        let Some(vxid) = text(9) else { continue };
        // One line per session and relation, whatever the modes it holds.
        let relation = text(11).unwrap_or_default();
        if found
            .iter()
            .any(|b| b.vxid == vxid && b.relation == relation)
        {
            continue;
        }
        found.push(Blocker {
            backend,
            vxid,
            old: text(10).as_deref() == Some("t"),
            relation,
            mode: text(12).unwrap_or_default(),
            xact_seconds: text(13).and_then(|s| s.parse().ok()),
        });
    }
    Ok(found)
}

/// Which of `blockers`' transactions are still open.
pub fn still_open(
    session: &mut LockSession,
    blockers: &[Blocker],
) -> Result<Vec<String>, postgres::Error> {
    let ids: Vec<String> = blockers.iter().map(|b| b.vxid.clone()).collect();
    let mut batch = Batch::new();
    let rows = batch.push(&format!(
        "SELECT virtualxid FROM pg_locks WHERE locktype = 'virtualxid' AND granted \
         AND virtualxid = ANY ({}::text[])",
        literal(&format!("{{{}}}", ids.join(",")))
    ));
    let results = session.query(&batch)?;
    Ok(results
        .rows(rows)
        .iter()
        .filter_map(|row| row.get(0).map(str::to_string))
        .collect())
}

/// `--cancel-blockers-after`: ends `blocker`'s session if it is idle in
/// the same transaction still (a cancel does nothing to an idle
/// transaction: it is asked first, then the session is terminated). Logs
/// what it did, or why it could not.
pub fn end_idle(session: &mut LockSession, blocker: &Blocker, blocking_for: Duration) {
    let same = format!(
        "FROM pg_stat_activity a JOIN pg_locks v ON v.pid = a.pid AND v.locktype = 'virtualxid' \
         AND v.virtualxid = {} WHERE a.state = 'idle in transaction'",
        literal(&blocker.vxid)
    );
    let mut batch = Batch::new();
    batch.push(&format!("SELECT pg_cancel_backend(a.pid) {same}"));
    let ended = batch.push(&format!("SELECT pg_terminate_backend(a.pid) {same}"));
    match session.query(&batch) {
        Ok(results) if !results.rows(ended).is_empty() => log::warn!(
            "BLOCKER_TERMINATED pid={} application_name={:?} idle in transaction, in the way for {} \
             (--cancel-blockers-after)",
            blocker.backend.pid,
            blocker.backend.application_name.as_deref().unwrap_or("<hidden>"),
            crate::time::human(blocking_for)
        ),
        Ok(_) => {}
        Err(e) => log::warn!(
            "cannot end the blocking session pid {} ({}): it needs pg_signal_backend, or \
             membership in its role",
            blocker.backend.pid,
            crate::pg_error::error_chain(&e)
        ),
    }
}

/// `query` on one line, at most `max` characters, its string literals
/// (quoted or dollar-quoted) shown as `'…'`.
pub fn sanitize(query: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // To the closing quote; a doubled quote stays inside.
                while let Some(d) = chars.next() {
                    if d == '\'' && chars.next_if_eq(&'\'').is_none() {
                        break;
                    }
                }
                out.push_str("'…'");
            }
            '$' => {
                let mut tag = String::from("$");
                while let Some(d) = chars.next_if(|d| d.is_alphanumeric() || *d == '_') {
                    tag.push(d);
                }
                if chars.next_if_eq(&'$').is_none() {
                    out.push_str(&tag);
                    continue;
                }
                tag.push('$');
                let mut body = String::new();
                for d in chars.by_ref() {
                    body.push(d);
                    if body.ends_with(&tag) {
                        break;
                    }
                }
                out.push_str("'…'");
            }
            c if c.is_whitespace() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    crate::parse::shorten(out.trim(), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_never_reach_the_log() {
        assert_eq!(
            sanitize("ALTER ROLE app PASSWORD 'it''s s3cret'", 80),
            "ALTER ROLE app PASSWORD '…'"
        );
        assert_eq!(
            sanitize(
                "SELECT $tag$ s3cret $tag$,\n\t 1 FROM t WHERE a = 's3cret'",
                80
            ),
            "SELECT '…', 1 FROM t WHERE a = '…'"
        );
        assert_eq!(sanitize("SELECT $1, $$x$$", 80), "SELECT $1, '…'");
        assert_eq!(sanitize("SELECT 'unterminated s3cret", 80), "SELECT '…'");
        assert!(sanitize(&"x".repeat(500), 50).chars().count() <= 51);
    }
}
