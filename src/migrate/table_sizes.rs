//! The size of the tables a plan rewrites or scans, from the catalog, in
//! one query: what `apply --dry-run` shows the DBA beside each claim
//! (`rewrites calls (1.2 GB, ~9.1 M rows)`). Asked only by a dry run with
//! something pending, never on the way to applying.

use std::collections::BTreeMap;

use crate::lock::LockSession;
use crate::sql::{self, Batch};

/// What the catalog says of a table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableSize {
    /// `pg_total_relation_size`: the table, its indexes and TOAST.
    pub bytes: i64,
    /// `pg_class.reltuples`, the planner's estimate; `None` before the
    /// table was first analyzed or vacuumed (-1).
    pub rows: Option<f64>,
}

/// The sizes of `tables` (as SQL names: `app."My T"`) that exist, by name.
pub fn read(
    session: &mut LockSession,
    tables: &[&str],
) -> Result<BTreeMap<String, TableSize>, postgres::Error> {
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let names: Vec<String> = tables.iter().map(|t| sql::literal(t)).collect();
    let query = format!(
        "SELECT n, pg_total_relation_size(c.oid), c.reltuples::float8 \
         FROM unnest(ARRAY[{}]::text[]) AS n JOIN pg_class c ON c.oid = to_regclass(n)",
        names.join(", ")
    );
    let mut batch = Batch::new();
    let slot = batch.push(&query);
    let results = session.query(&batch)?;
    Ok(results
        .rows(slot)
        .iter()
        .filter_map(|row| {
            let bytes = row.get(1)?.parse().ok()?;
            let rows = row
                .get(2)
                .and_then(|r| r.parse::<f64>().ok())
                .filter(|r| *r >= 0.0);
            Some((row.get(0)?.to_string(), TableSize { bytes, rows }))
        })
        .collect())
}

/// `1.2 GB, ~9.1 M rows`: the size as `pg_size_pretty` rounds it, the
/// estimate in thousands, millions, billions.
pub fn describe(size: &TableSize) -> String {
    let mut text = pretty_bytes(size.bytes);
    if let Some(rows) = size.rows {
        text.push_str(&format!(", ~{} rows", pretty_count(rows)));
    }
    text
}

fn pretty_bytes(bytes: i64) -> String {
    let mut value = bytes as f64;
    for unit in ["bytes", "kB", "MB", "GB", "TB"] {
        if value < 1024.0 || unit == "TB" {
            return if unit == "bytes" {
                format!("{bytes} bytes")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{bytes} bytes")
}

fn pretty_count(rows: f64) -> String {
    let mut value = rows.round();
    if value < 1000.0 {
        return format!("{value}");
    }
    for unit in ["k", "M", "G"] {
        value /= 1000.0;
        if value < 1000.0 || unit == "G" {
            return format!("{value:.1} {unit}");
        }
    }
    format!("{rows}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_as_the_plan_shows_them() {
        let size = |bytes, rows| describe(&TableSize { bytes, rows });
        assert_eq!(size(8192, Some(0.0)), "8.0 kB, ~0 rows");
        assert_eq!(size(1_288_490_189, Some(9.1e6)), "1.2 GB, ~9.1 M rows");
        assert_eq!(size(512, None), "512 bytes");
        assert_eq!(size(3 << 20, Some(999.0)), "3.0 MB, ~999 rows");
    }
}
