//! Concurrent index builds: PostgreSQL keeps the INVALID index of one that
//! failed (or was cut off: a signal, a restart, a SIGKILL), and `CREATE
//! INDEX CONCURRENTLY IF NOT EXISTS` then skips it with a notice. So an
//! INVALID index is dropped before a build of that name (unless a session
//! is still building it), dropped after a failed build, and a build is
//! checked to have left a valid index before its file is recorded.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::anyhow;

use super::retry::Attempts;
use crate::error::{ErrorDetail, Failure};
use crate::lock::LockSession;
use crate::migrations::split::IndexBuild;
use crate::migrations::LocalMigration;
use crate::pg_error;
use crate::sql::{literal, Batch};
use crate::time::millis;

/// How long the cleanup of a build cut off by a signal may wait for the
/// table: well inside the signal's grace (5 s), itself well inside the
/// usual 10-30 s an orchestrator gives before SIGKILL.
const CLEANUP_ON_SIGNAL: Duration = Duration::from_secs(2);

/// Before `CREATE INDEX CONCURRENTLY name`: an INVALID index of that name in
/// this session's schemas that no session is building (an earlier run's,
/// cut off) is dropped, so the build makes it again instead of finding it
/// there. One being built is another session's work: this migration stops,
/// saying whose, rather than drop it or build it twice.
pub fn clear_leftover(
    session: &mut LockSession,
    build: &IndexBuild,
    attempts: &Attempts,
) -> Result<(), Failure> {
    let IndexBuild::Create {
        name: Some(name), ..
    } = build
    else {
        return Ok(());
    };
    let mut batch = Batch::new();
    let found = batch.push(&format!(
        "SELECT format('%I.%I', n.nspname, c.relname), p.pid FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_stat_progress_create_index p ON p.index_relid = i.indexrelid \
         WHERE NOT i.indisvalid AND c.relname = {} AND n.nspname = ANY (current_schemas(false))",
        literal(name)
    ));
    let results = session
        .query(&batch)
        .map_err(|e| pg_error::failed(&e, format!("cannot look for an invalid index {name}")))?;
    for row in results.rows(found) {
        let Some(qualified) = row.get(0) else {
            continue;
        };
        if let Some(pid) = row.get(1) {
            return Err(Failure::failed(anyhow!(
                "the index {qualified} is INVALID and being built right now by pid {pid}: this run \
                 does not build it too, nor drop another session's work; apply again once it is done"
            )));
        }
        let timeout = attempts.budget_timeout().unwrap_or(Duration::ZERO);
        let drop = format!(
            "SET lock_timeout = {}; DROP INDEX CONCURRENTLY IF EXISTS {qualified}",
            millis(timeout)
        );
        // Two statements in one string would make one transaction, which
        // DROP INDEX CONCURRENTLY refuses: one round trip each.
        let (set, drop) = drop.split_once("; ").unwrap_or_default();
        session
            .client()
            .batch_execute(set)
            .and_then(|()| session.client().batch_execute(drop))
            .map_err(|e| {
                pg_error::failed(
                    &e,
                    format!("cannot drop the invalid index {qualified} an earlier run left"),
                )
            })?;
        log::warn!("INVALID_INDEX_DROPPED name={qualified} (left INVALID by an earlier build)");
    }
    Ok(())
}

/// After a concurrent build that succeeded: the index it names must be
/// valid (an `IF NOT EXISTS` that met an INVALID one succeeds too).
pub fn check_valid(
    session: &mut LockSession,
    build: &IndexBuild,
    migration: &LocalMigration,
    statement: usize,
) -> Result<(), Failure> {
    let IndexBuild::Create {
        name: Some(name), ..
    } = build
    else {
        return Ok(());
    };
    let mut batch = Batch::new();
    let invalid = batch.push(&format!(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid AND c.relname = {} AND n.nspname = ANY (current_schemas(false))",
        literal(name)
    ));
    let results = session
        .query(&batch)
        .map_err(|e| pg_error::failed(&e, format!("cannot check the index {name}")))?;
    let Some(qualified) = results.value(invalid).map(str::to_string) else {
        return Ok(());
    };
    let _ = session
        .client()
        .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"));
    Err(Failure::failed(anyhow!(
        "migration {migration} built no valid index {qualified} (statement {statement}): it is \
         INVALID (dropped now), so the file is not recorded as applied; apply again to build it"
    ))
    .with_detail(ErrorDetail {
        sqlstate: None,
        file: Some(migration.path.clone()),
        line: None,
    }))
}

/// Invalid indexes in the schemas this session's statements resolve
/// names in (its search_path), as `(schema-qualified SQL name, name,
/// table name)`. Other schemas are other tenants' (many databases with a
/// schema each), whose builds this run must never touch.
pub fn invalid(
    session: &mut LockSession,
) -> Result<BTreeSet<(String, String, String)>, postgres::Error> {
    let mut batch = Batch::new();
    let rows = batch.push(
        "SELECT format('%I.%I', n.nspname, c.relname), c.relname, t.relname FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid AND n.nspname = ANY (current_schemas(false))",
    );
    let results = session.query(&batch)?;
    Ok(results
        .rows(rows)
        .iter()
        .filter_map(|r| {
            Some((
                r.get(0)?.to_string(),
                r.get(1)?.to_string(),
                r.get(2)?.to_string(),
            ))
        })
        .collect())
}

/// Drops the invalid indexes that appeared during a failed concurrent
/// build and are its own: the index it names, or for an unnamed one an
/// index on the table it names, or REINDEX CONCURRENTLY's
/// `_ccnew`/`_ccold` copies; only in the schemas of this session's
/// search_path. (An unnamed build of another session on the same table, at
/// the same moment, cannot be told apart.)
pub fn drop_new_invalid(
    session: &mut LockSession,
    build: &IndexBuild,
    before: &BTreeSet<(String, String, String)>,
    interrupted: bool,
) {
    let Ok(after) = invalid(session) else {
        return;
    };
    if interrupted {
        // A signal's grace is short: the drop waits for every transaction
        // on the table, and what it cannot do in time the next run does
        // before its own build (see `clear_leftover`).
        let _ = session.client().batch_execute(&format!(
            "SET lock_timeout = {}",
            CLEANUP_ON_SIGNAL.as_millis()
        ));
    }
    for (qualified, name, on) in after.difference(before) {
        let ours = match build {
            IndexBuild::Create {
                name: Some(named), ..
            } => name == named,
            IndexBuild::Reindex => name.contains("_ccnew") || name.contains("_ccold"),
            // CREATE INDEX CONCURRENTLY ON t(…): a name PostgreSQL chose.
            IndexBuild::Create { name: None, table } => table.as_deref() == Some(on.as_str()),
        };
        if !ours {
            continue;
        }
        match session
            .client()
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"))
        {
            Ok(()) => log::warn!("INVALID_INDEX_DROPPED name={qualified}"),
            Err(e) => log::warn!(
                "INVALID_INDEX_LEFT name={qualified}: cannot drop the invalid index the failed \
                 statement left ({}); the next apply drops it before building it again",
                pg_error::error_chain(&e)
            ),
        }
    }
}
