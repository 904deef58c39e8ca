//! `apply --dry-run`: the size of each table the plan rewrites or scans,
//! from the catalog in one query, beside the claim. Only a dry run with
//! something pending asks; a run that applies never does.

use crate::lock::LockSession;
use crate::migrate::table_sizes::{self, TableSize};
use crate::report::Report;

/// Adds to `report.pending[].locks` the sizes of the tables rewritten or
/// scanned. Not finding them is said, and no reason to stop.
pub fn add(session: &mut LockSession, report: &mut Report) {
    let mut tables: Vec<&str> = report
        .pending
        .iter()
        .flat_map(|entry| &entry.locks)
        .filter(|lock| lock.work.is_some())
        .map(|lock| lock.table.as_str())
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
    for lock in report.pending.iter_mut().flat_map(|entry| &mut entry.locks) {
        if let (Some(_), Some(size)) = (lock.work, sizes.get(&lock.table)) {
            lock.bytes = Some(size.bytes);
            lock.rows = size.rows.map(|r| r.round() as i64);
        }
    }
}

/// `rewrites calls (1.2 GB, ~9.1 M rows)`, for each table of `entry`
/// rewritten or scanned; empty when none is.
pub fn line(locks: &[crate::report::PlannedLock]) -> String {
    let parts: Vec<String> = locks
        .iter()
        .filter_map(|lock| {
            let verb = lock.work_verb?;
            let size = lock.bytes.map_or(String::new(), |bytes| {
                let size = TableSize {
                    bytes,
                    rows: lock.rows.map(|r| r as f64),
                };
                format!(" ({})", table_sizes::describe(&size))
            });
            Some(format!("{verb} {}{size}", lock.table))
        })
        .collect();
    parts.join(", ")
}
