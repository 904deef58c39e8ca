//! INVALID indexes already in the database: reported by `status` and
//! `apply`, and rebuilt under the lock by `apply --rebuild-invalid-indexes`.
//!
//! PostgreSQL keeps the INVALID index of a concurrent build that failed or
//! was cut off, and `CREATE INDEX CONCURRENTLY IF NOT EXISTS` then succeeds
//! over it: releases before `indexes` checked every build recorded such
//! files as applied. Such an index is used by no query (though writes may
//! still maintain it), and, if unique, does not guarantee the uniqueness it
//! was built for. What is listed: the indexes of the session's schemas (its
//! search_path, as `indexes` does: other schemas are other tenants') that
//! are INVALID and live, not a partitioned table's (an index made `ON
//! ONLY` the parent is invalid until its partitions' are attached: a step,
//! not a failure), on a table no concurrent build is working on right now
//! (its own index is INVALID until it finishes).
//!
//! Only an index that an applied file's concurrent build names is rebuilt:
//! that is this set's work, left unfinished. Any other is reported and left
//! alone: a DBA's failed build or a `REINDEX`'s `_ccnew` copy is not
//! miglock's to redo. The rebuild is `REINDEX INDEX CONCURRENTLY`
//! (PostgreSQL 12 and later), which builds a valid copy beside it and swaps
//! them, taking SHARE UPDATE EXCLUSIVE: it stalls no traffic, and waits (as
//! a concurrent build does) within the whole `--ddl-lock-budget`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::anyhow;
use postgres::error::SqlState;
use postgres::SimpleQueryRow;
use serde::Serialize;

use super::blockers;
use super::indexes;
use super::retry::{Blocked, DdlTimeout};
use super::Options;
use crate::error::{ErrorDetail, Failure};
use crate::interrupt::Interrupt;
use crate::lock::LockSession;
use crate::migrations::history::HistoryRow;
use crate::migrations::split::{IndexBuild, LockLevel, TableLock};
use crate::migrations::MigrationSet;
use crate::outcome::Outcome;
use crate::pg_error;
use crate::sql::Batch;
use crate::time::millis;

/// Whether the database has any INVALID index at all (`t`), for `apply
/// --rebuild-invalid-indexes` to ask in the round trip that reads the
/// history: one catalog scan without a join (EXISTS plans cheaper than a
/// count). Only when it finds one is [`LIST_SQL`] sent.
pub const PROBE_SQL: &str = "SELECT EXISTS (SELECT FROM pg_index WHERE NOT indisvalid)";

/// The INVALID indexes to report (see the module docs), in name order.
pub const LIST_SQL: &str = "SELECT n.nspname, c.relname, t.relname, \
     pg_get_indexdef(i.indexrelid), format('%I.%I', n.nspname, c.relname), \
     format('%I.%I', n.nspname, t.relname) \
     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
     JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE NOT i.indisvalid AND i.indislive AND c.relkind = 'i' \
     AND n.nspname = ANY (current_schemas(false)) \
     AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = i.indrelid) \
     ORDER BY 1, 2";

/// One INVALID index, as the JSON result's `invalid_indexes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidIndex {
    pub schema: String,
    pub name: String,
    pub table: String,
    /// `pg_get_indexdef`: what a rebuild makes again.
    pub definition: String,
    /// The applied migration whose concurrent build names it (the newest,
    /// if several do), or names the index it is a copy of: only such an
    /// index is rebuilt (or, a copy, dropped).
    pub migration: Option<String>,
    /// For a copy an interrupted `REINDEX INDEX CONCURRENTLY` left
    /// (`name_ccnew`, `name_ccold`, with a number when the name was taken)
    /// of an index an applied file builds: that index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// `apply --rebuild-invalid-indexes`: what this run did with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// `schema.name`, quoted for SQL.
    #[serde(skip)]
    pub qualified: String,
    /// `schema.table`, quoted for SQL.
    #[serde(skip)]
    qualified_table: String,
}

/// What `apply --rebuild-invalid-indexes` did with an INVALID index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Built again, valid (`REINDEX INDEX CONCURRENTLY`).
    Rebuilt,
    /// A copy an earlier rebuild left, dropped (`DROP INDEX CONCURRENTLY`).
    Dropped,
    /// No applied file builds it: left as it is.
    Left,
}

/// The rows of [`LIST_SQL`].
pub fn from_rows(rows: &[SimpleQueryRow]) -> Vec<InvalidIndex> {
    rows.iter()
        .filter_map(|row| {
            let text = |i: usize| row.get(i).map(str::to_string);
            Some(InvalidIndex {
                schema: text(0)?,
                name: text(1)?,
                table: text(2)?,
                definition: text(3).unwrap_or_default(),
                migration: None,
                copy_of: None,
                action: None,
                qualified: text(4)?,
                qualified_table: text(5)?,
            })
        })
        .collect()
}

/// The INVALID indexes to report, asked on their own.
pub fn list(session: &mut LockSession) -> Result<Vec<InvalidIndex>, postgres::Error> {
    let mut batch = Batch::new();
    let rows = batch.push(LIST_SQL);
    let results = session.query(&batch)?;
    Ok(from_rows(results.rows(rows)))
}

/// Names, for each index, the newest applied file of `set` whose
/// concurrent build names it. Reads the applied files' statements (the
/// first time each is asked), so callers ask only when something was found.
pub fn attribute(found: &mut [InvalidIndex], set: &MigrationSet, history: &[HistoryRow]) {
    if found.is_empty() {
        return;
    }
    let applied: BTreeSet<_> = history.iter().map(|row| &row.id.version).collect();
    let mut builders: BTreeMap<&str, String> = BTreeMap::new();
    for migration in set
        .migrations
        .iter()
        .filter(|m| applied.contains(&m.id.version))
    {
        let Ok(summary) = migration.summary() else {
            continue;
        };
        for name in &summary.index_names {
            builders.insert(name, migration.id.to_string());
        }
    }
    for index in found.iter_mut() {
        if let Some(by) = builders.get(index.name.as_str()) {
            index.migration = Some(by.clone());
        } else if let Some((base, by)) =
            copy_base(&index.name).and_then(|base| Some((base, builders.get(base)?)))
        {
            index.migration = Some(by.clone());
            index.copy_of = Some(base.to_string());
        }
    }
}

/// The index `name` is a `REINDEX … CONCURRENTLY` copy of, by its name:
/// PostgreSQL names them `<index>_ccnew` and `<index>_ccold`, with a number
/// after when that name is taken.
fn copy_base(name: &str) -> Option<&str> {
    let unnumbered = name.trim_end_matches(|c: char| c.is_ascii_digit());
    unnumbered
        .strip_suffix("_ccnew")
        .or_else(|| unnumbered.strip_suffix("_ccold"))
        .filter(|base| !base.is_empty())
}

/// `INVALID_INDEX_FOUND`, one line each, saying what will become of it.
pub fn log_found(found: &[InvalidIndex], rebuilding: bool) {
    for index in found {
        let what = match (&index.migration, rebuilding) {
            (Some(by), rebuilding) if index.copy_of.is_some() => format!(
                "a copy of {} (built by {by}) that an interrupted REINDEX INDEX CONCURRENTLY left: \
                 used by no query; {}",
                index.copy_of.as_deref().unwrap_or_default(),
                if rebuilding {
                    "dropping it under the lock (--rebuild-invalid-indexes)"
                } else {
                    "`miglock apply --rebuild-invalid-indexes` drops it under the lock"
                }
            ),
            (Some(by), true) => format!(
                "left INVALID by a concurrent build of {by} that was cut off or failed; rebuilding \
                 it under the lock (--rebuild-invalid-indexes)"
            ),
            (Some(by), false) => format!(
                "left INVALID by a concurrent build of {by} that was cut off or failed: used by no \
                 query (writes may still maintain it), its uniqueness (if unique) not guaranteed; \
                 `miglock apply --rebuild-invalid-indexes` rebuilds it under the lock"
            ),
            (None, _) => format!(
                "no applied migration of this set builds it, so miglock leaves it alone: rebuild \
                 it (REINDEX INDEX CONCURRENTLY {q}) or drop it (DROP INDEX CONCURRENTLY {q})",
                q = index.qualified
            ),
        };
        log::warn!(
            "INVALID_INDEX_FOUND name={} table={} migration={}: {what}",
            index.qualified,
            index.table,
            index.migration.as_deref().unwrap_or("none")
        );
    }
}

/// Holding the key: lists the INVALID indexes again (another replica may
/// have rebuilt some), rebuilds those an applied file of `set` names, one
/// at a time, and returns the list with what became of each. Stops at the
/// first that cannot be rebuilt: that index stays as it was.
pub fn rebuild(
    session: &mut LockSession,
    set: &MigrationSet,
    history: &[HistoryRow],
    options: &Options,
    interrupt: &Interrupt,
) -> Result<Vec<InvalidIndex>, Failure> {
    let mut found =
        list(session).map_err(|e| pg_error::failed(&e, "cannot look for invalid indexes"))?;
    attribute(&mut found, set, history);
    if found.iter().any(|index| index.migration.is_some()) {
        check_version(session)?;
    }
    for index in &mut found {
        if index.migration.is_none() {
            index.action = Some(Action::Left);
        }
    }
    // The copies an interrupted rebuild left go first: the rebuild would
    // otherwise make one more beside them.
    for index in found.iter_mut().filter(|i| i.action.is_none()) {
        if index.copy_of.is_some() {
            if interrupt.is_set() {
                return Err(Failure::interrupted());
            }
            drop_copy(session, index, options)?;
            index.action = Some(Action::Dropped);
        }
    }
    for index in found.iter_mut().filter(|i| i.action.is_none()) {
        if interrupt.is_set() {
            return Err(Failure::interrupted());
        }
        rebuild_one(session, index, options, interrupt)?;
        index.action = Some(Action::Rebuilt);
    }
    Ok(found)
}

/// The whole budget as one `lock_timeout` (see [`rebuild_one`]); none
/// when the schedule is off, or `--set` gave lock_timeout its own value.
fn budget_timeout(options: &Options) -> Option<std::time::Duration> {
    let user_lock_timeout = options.settings.iter().any(|(n, _)| n == "lock_timeout");
    (options.ddl.timeout != DdlTimeout::Off && !user_lock_timeout).then_some(options.ddl.budget)
}

/// Sets the session's `lock_timeout` for a concurrent statement, or puts
/// miglock's own (0) back after one.
fn set_lock_timeout(
    session: &mut LockSession,
    timeout: Option<std::time::Duration>,
) -> Result<(), Failure> {
    let ms = timeout.map_or(0, |t| millis(t).max(1));
    session
        .client()
        .batch_execute(&format!("SET lock_timeout = {ms}"))
        .map_err(|e| pg_error::failed(&e, "cannot set lock_timeout"))
}

fn drop_copy(
    session: &mut LockSession,
    index: &InvalidIndex,
    options: &Options,
) -> Result<(), Failure> {
    let timeout = budget_timeout(options);
    if timeout.is_some() {
        set_lock_timeout(session, timeout)?;
    }
    let result = session.client().batch_execute(&format!(
        "DROP INDEX CONCURRENTLY IF EXISTS {}",
        index.qualified
    ));
    if timeout.is_some() && !session.is_closed() {
        let _ = set_lock_timeout(session, None);
    }
    result.map_err(|e| {
        pg_error::failed(
            &e,
            format!(
                "cannot drop {}, the INVALID copy an interrupted rebuild of {} left; no pending \
                 migration was run",
                index.qualified,
                index.copy_of.as_deref().unwrap_or_default()
            ),
        )
    })?;
    log::warn!(
        "INVALID_INDEX_DROPPED name={} (left INVALID by an interrupted rebuild of {})",
        index.qualified,
        index.copy_of.as_deref().unwrap_or_default()
    );
    Ok(())
}

/// `REINDEX … CONCURRENTLY` came in PostgreSQL 12.
fn check_version(session: &mut LockSession) -> Result<(), Failure> {
    let mut batch = Batch::new();
    let version = batch.push("SHOW server_version_num");
    let results = session
        .query(&batch)
        .map_err(|e| pg_error::failed(&e, "cannot read the server's version"))?;
    match results.value(version).and_then(|v| v.parse::<u32>().ok()) {
        Some(number) if number < 120_000 => Err(Failure::failed(anyhow!(
            "--rebuild-invalid-indexes needs PostgreSQL 12 or later (REINDEX INDEX CONCURRENTLY); \
             this server is {number}: drop each invalid index (DROP INDEX CONCURRENTLY) and build \
             it again by hand"
        ))),
        _ => Ok(()),
    }
}

fn rebuild_one(
    session: &mut LockSession,
    index: &InvalidIndex,
    options: &Options,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let by = index.migration.as_deref().unwrap_or("none");
    // Its waits stall no traffic and a refusal throws the build away: the
    // whole budget as one timeout, as for a concurrent build.
    let timeout = budget_timeout(options);
    if timeout.is_some() {
        set_lock_timeout(session, timeout)?;
    }
    let before = indexes::invalid(session).unwrap_or_default();
    let started = Instant::now();
    let result = session
        .client()
        .batch_execute(&format!("REINDEX INDEX CONCURRENTLY {}", index.qualified));
    if let Err(error) = &result {
        // A failed REINDEX CONCURRENTLY leaves its INVALID `_ccnew` copy.
        if !session.is_closed() {
            indexes::drop_new_invalid(session, &IndexBuild::Reindex, &before, interrupt.is_set());
        }
        if interrupt.is_set() && error.code() == Some(&SqlState::QUERY_CANCELED) {
            return Err(Failure::new(
                Outcome::Interrupted,
                anyhow!(
                    "interrupted by a signal while rebuilding the invalid index {} ({by}): it stays \
                     INVALID, as it was, and no pending migration was run",
                    index.qualified
                ),
            ));
        }
    }
    // Back to the session's own value (miglock's 0) for what follows.
    if timeout.is_some() && !session.is_closed() {
        let _ = set_lock_timeout(session, None);
    }
    let Err(error) = result else {
        log::info!(
            "INVALID_INDEX_REBUILT name={} table={} migration={by} ms={}",
            index.qualified,
            index.table,
            millis(started.elapsed())
        );
        return Ok(());
    };
    let lock_timeout = error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
        && error
            .as_db_error()
            .is_some_and(|db| db.message().contains("lock timeout"));
    if lock_timeout {
        return Err(blocked(session, index, options, started));
    }
    Err(pg_error::failed(
        &error,
        format!(
            "cannot rebuild the invalid index {} on {} ({by}); it stays INVALID, as it was, and no \
             pending migration was run. Fix the cause (for a unique index: the duplicate rows), or \
             apply without --rebuild-invalid-indexes, which only reports it",
            index.qualified, index.table
        ),
    ))
}

/// The rebuild waited its whole budget (exit 8), for the transactions
/// that write the table, as a concurrent build does.
fn blocked(
    session: &mut LockSession,
    index: &InvalidIndex,
    options: &Options,
    started: Instant,
) -> Failure {
    let writes = [TableLock {
        table: index.qualified_table.clone(),
        level: LockLevel::Share,
    }];
    let found = blockers::look_up(session, &writes, started.elapsed()).unwrap_or_default();
    for b in &found {
        log::warn!(
            "DDL_BLOCKED index={} table={} mode={} {}",
            index.qualified,
            b.relation,
            b.mode,
            b.log_fields()
        );
    }
    let who = found.first().map_or(
        "no blocking session was visible to this role".to_string(),
        |b| format!("the rebuild waited for {}", b.backend.summary()),
    );
    Failure::new(
        Outcome::Blocked,
        Blocked {
            message: format!(
                "the invalid index {} could not be rebuilt within --ddl-lock-budget {}: {who}. It \
                 stays INVALID, as it was, and no pending migration was run; the wait stalled no \
                 traffic. Try again later, or end the blocking session.",
                index.qualified,
                crate::time::human(options.ddl.budget)
            ),
            blockers: found.into_iter().map(|b| b.backend).collect(),
        },
    )
    .with_detail(ErrorDetail {
        sqlstate: Some(SqlState::LOCK_NOT_AVAILABLE.code().to_string()),
        ..ErrorDetail::default()
    })
}

/// For `--dry-run`: what a run with `--rebuild-invalid-indexes` would do.
pub fn plan_lines(found: &[InvalidIndex], rebuilding: bool) -> String {
    let mut text = String::new();
    for index in found {
        let what = match (&index.migration, rebuilding) {
            (Some(_), true) if index.copy_of.is_some() => format!(
                "drop (a copy an interrupted rebuild of {} left)",
                index.copy_of.as_deref().unwrap_or_default()
            ),
            (Some(by), true) => format!("rebuild (built by {by}; REINDEX INDEX CONCURRENTLY)"),
            (Some(by), false) => {
                format!("leave INVALID (built by {by}; --rebuild-invalid-indexes rebuilds it)")
            }
            (None, _) => "leave INVALID (no applied migration builds it)".to_string(),
        };
        text.push_str(&format!(
            "  {what}: invalid index {} on {}\n",
            index.qualified, index.table
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_told_by_their_names() {
        assert_eq!(copy_base("t_id_ccnew"), Some("t_id"));
        assert_eq!(copy_base("t_id_ccold12"), Some("t_id"));
        assert_eq!(copy_base("t_id"), None);
        assert_eq!(copy_base("_ccnew"), None);
        assert_eq!(copy_base("t_ccnewer"), None);
    }

    #[test]
    fn the_probe_is_one_catalog_scan_without_a_join() {
        assert!(!PROBE_SQL.contains("JOIN"));
        assert!(LIST_SQL.contains("current_schemas(false)"));
        assert!(LIST_SQL.contains("i.indislive"));
    }
}
