//! The rows of a history table as a select of [`shape`](super::shape)
//! gives them.

use anyhow::bail;
use postgres::SimpleQueryRow;

use super::HistoryRow;
use crate::migrations::{MigrationId, Version};

/// The history rows of one statement (version, name, applied_on,
/// checksum, in that order).
pub fn rows_from_rows(rows: &[SimpleQueryRow]) -> anyhow::Result<Vec<HistoryRow>> {
    // A seventh column (Flyway's) is the row's type: the rows are then the
    // table's, in installed order.
    let typed = rows.first().is_some_and(|row| row.len() > 6);
    let mut deleted = Vec::new();
    let mut read = Vec::with_capacity(rows.len());
    for row in rows {
        let kind = if typed {
            row.try_get(6).ok().flatten().unwrap_or_default()
        } else {
            ""
        };
        // Flyway's own marks: the schema it made, Teams' undo runs.
        if matches!(kind, "SCHEMA" | "UNDO_SQL" | "UNDO_SCRIPT") {
            continue;
        }
        let text = |i: usize| {
            row.try_get(i)
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_string()
        };
        // Only Flyway's repeatables have none (every other table's
        // version is NOT NULL).
        let version = match row.try_get(0).ok().flatten() {
            None => Version::Repeatable,
            Some(text) => match text.trim().parse::<Version>() {
                Ok(version) => version,
                Err(_) => {
                    bail!("the history table holds a version that is not a number: {text:?}")
                }
            },
        };
        read.push(HistoryRow {
            id: MigrationId {
                version,
                name: text(1),
            },
            applied_on: text(2),
            checksum: text(3),
            // Only other tools' tables have the fifth and sixth columns
            // (asked for only when there: a missing one is an error
            // built, a String and a Box, per row).
            dirty: row.len() > 4 && row.try_get(4).ok().flatten() == Some("f"),
            through: kind == "BASELINE"
                || (row.len() > 5 && row.try_get(5).ok().flatten() == Some("t")),
        });
        if typed {
            deleted.push(kind == "DELETE");
        }
    }
    Ok(if typed {
        newest_of_each(read, &deleted)
    } else {
        read
    })
}

/// Flyway's rows as it reads them: the newest row of each version (a
/// failed run's, then a repaired one's; deletion marks are no version's),
/// in installed order, then the newest of each repeatable, unless it is a
/// deletion mark. `rows` are in installed order.
fn newest_of_each(rows: Vec<HistoryRow>, deleted: &[bool]) -> Vec<HistoryRow> {
    use std::collections::HashMap;
    // Nearly every table: one row per version, installed in version order.
    if !deleted.contains(&true)
        && rows.is_sorted_by(|a, b| a.id.version < b.id.version && !b.id.version.is_repeatable())
    {
        return rows;
    }
    let mut newest: HashMap<&Version, usize> = HashMap::with_capacity(rows.len());
    let mut repeatable: HashMap<&str, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        if row.id.version.is_repeatable() {
            repeatable.insert(&row.id.name, i);
        } else if !deleted[i] {
            newest.insert(&row.id.version, i);
        }
    }
    let keep: Vec<bool> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            if row.id.version.is_repeatable() {
                repeatable.get(row.id.name.as_str()) == Some(&i) && !deleted[i]
            } else {
                newest.get(&row.id.version) == Some(&i)
            }
        })
        .collect();
    let (repeatables, versions): (Vec<HistoryRow>, Vec<HistoryRow>) = rows
        .into_iter()
        .zip(keep)
        .filter_map(|(row, keep)| keep.then_some(row))
        .partition(|row| row.id.version.is_repeatable());
    versions.into_iter().chain(repeatables).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flyways_rows_keep_the_newest_of_each_version_and_repeatable() {
        let row = |version: Version, name: &str, checksum: &str| HistoryRow {
            id: MigrationId {
                version,
                name: name.into(),
            },
            applied_on: String::new(),
            checksum: checksum.into(),
            dirty: false,
            through: false,
        };
        let v = |n: i64| Version::Number(n);
        let r = Version::Repeatable;
        // In installed order: 1, a view, 2 failed then repaired, the view
        // changed, 1's deletion mark, a function then its deletion mark.
        let rows = vec![
            row(v(1), "one", "1"),
            row(r.clone(), "view", "10"),
            row(v(2), "two", "2"),
            row(v(2), "two", "22"),
            row(r.clone(), "view", "11"),
            row(v(1), "one", ""),
            row(r.clone(), "fn", "30"),
            row(r.clone(), "fn", ""),
        ];
        let deleted = [false, false, false, false, false, true, false, true];
        let kept: Vec<(String, String)> = newest_of_each(rows, &deleted)
            .into_iter()
            .map(|row| (row.id.to_string(), row.checksum))
            .collect();
        let expect = [("V1__one", "1"), ("V2__two", "22"), ("R__view", "11")];
        assert_eq!(
            kept,
            expect.map(|(id, sum)| (id.to_string(), sum.to_string()))
        );
    }
}
