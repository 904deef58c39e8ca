//! The rows of a history table as a select of [`shape`](super::shape)
//! gives them.

use anyhow::bail;
use postgres::SimpleQueryRow;

use super::HistoryRow;
use crate::migrations::{Layout, MigrationId, Version};

/// The history rows of one statement of [`shape::select`](super::shape::select)
/// for a table in `layout` (version, name, applied_on, checksum, in that
/// order, then what the layout adds).
pub fn rows_from_rows(rows: &[SimpleQueryRow], layout: Layout) -> anyhow::Result<Vec<HistoryRow>> {
    // Flyway's rows are the table's, in installed order, a seventh column
    // their type.
    let typed = layout == Layout::Flyway;
    // goose's rows are the table's, in `id` order, the fifth column
    // `is_applied`.
    let goose = layout == Layout::Goose;
    let mut applied = Vec::new();
    let mut deleted = Vec::new();
    let mut read = Vec::with_capacity(rows.len());
    // The order the rows are read in, which the server is not asked to
    // sort them in (a new backend's planning of an ORDER BY, with the
    // index's statistics, cost more than a pass over 400 rows): Flyway's
    // by installed_rank and goose's by id (each the select's last column),
    // dbmate's by the version's length then its value (its text order, as
    // dbmate's are digits), the others' by version.
    let order_column = match layout {
        Layout::Flyway => Some(7),
        Layout::Goose => Some(5),
        _ => None,
    };
    let mut keys: Vec<(i64, i64)> = Vec::with_capacity(rows.len());
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
        let raw = row.try_get(0).ok().flatten();
        let version = match raw {
            None => Version::Repeatable,
            Some(text) => match text.trim().parse::<Version>() {
                Ok(version) => version,
                Err(_) => {
                    bail!("the history table holds a version that is not a number: {text:?}")
                }
            },
        };
        let number = version.as_number().unwrap_or(i64::MAX);
        keys.push(match order_column {
            Some(i) => {
                let column = row.try_get(i).ok().flatten();
                (column.and_then(|t| t.parse().ok()).unwrap_or(i64::MAX), 0)
            }
            None if layout == Layout::Dbmate => {
                (raw.map_or(0, |t| t.chars().count() as i64), number)
            }
            None => (0, number),
        });
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
            dirty: !goose && row.len() > 4 && row.try_get(4).ok().flatten() == Some("f"),
            through: kind == "BASELINE"
                || (!goose && row.len() > 5 && row.try_get(5).ok().flatten() == Some("t")),
        });
        if typed {
            deleted.push(kind == "DELETE");
        }
        if goose {
            applied.push(row.try_get(4).ok().flatten() == Some("t"));
        }
    }
    // Nearly always in that order already: the table's rows as written.
    if !keys.is_sorted() {
        let mut order: Vec<usize> = (0..read.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        read = permuted(read, &order);
        if typed {
            deleted = order.iter().map(|&i| deleted[i]).collect();
        }
        if goose {
            applied = order.iter().map(|&i| applied[i]).collect();
        }
    }
    Ok(if typed {
        newest_of_each(read, &deleted)
    } else if goose {
        goose_applied(read, &applied)
    } else {
        read
    })
}

/// `items` in `order`, a permutation of their indexes.
fn permuted<T>(items: Vec<T>, order: &[usize]) -> Vec<T> {
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order.iter().filter_map(|&i| slots[i].take()).collect()
}

/// goose's applied versions as goose reads them: a version's newest row
/// (by `id`) says whether it is applied (old goose wrote `is_applied =
/// false` rows on the way down), in version order. `rows` are in `id`
/// order. Done here, not by the server: a new backend's `DISTINCT ON` sort
/// cost a no-op run 0.4-0.6 ms, more than the rows.
fn goose_applied(rows: Vec<HistoryRow>, applied: &[bool]) -> Vec<HistoryRow> {
    use std::collections::HashMap;
    // Nearly every table: one applied row per version, in version order.
    if !applied.contains(&false) && rows.is_sorted_by(|a, b| a.id.version < b.id.version) {
        return rows;
    }
    let mut newest: HashMap<&Version, usize> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        newest.insert(&row.id.version, i);
    }
    let keep: Vec<bool> = (0..rows.len())
        .map(|i| applied[i] && newest.get(&rows[i].id.version) == Some(&i))
        .collect();
    let mut kept: Vec<HistoryRow> = rows
        .into_iter()
        .zip(keep)
        .filter_map(|(row, keep)| keep.then_some(row))
        .collect();
    kept.sort_by(|a, b| a.id.version.cmp(&b.id.version));
    kept
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
    fn gooses_rows_keep_the_versions_whose_newest_row_is_applied() {
        let row = |version: i64, at: &str| HistoryRow {
            id: MigrationId {
                version: Version::Number(version),
                name: String::new(),
            },
            applied_on: at.into(),
            checksum: String::new(),
            dirty: false,
            through: false,
        };
        let read = |rows: Vec<HistoryRow>, applied: &[bool]| -> Vec<(String, String)> {
            goose_applied(rows, applied)
                .into_iter()
                .map(|row| (row.id.version.to_string(), row.applied_on))
                .collect()
        };
        let pairs = |expect: &[(&str, &str)]| -> Vec<(String, String)> {
            expect
                .iter()
                .map(|(v, at)| (v.to_string(), at.to_string()))
                .collect()
        };
        // In id order: 1, 3, 2 (applied out of order), 3 down, 3 up again,
        // 4 then 4 down.
        let rows = vec![
            row(1, "a"),
            row(3, "b"),
            row(2, "c"),
            row(3, "d"),
            row(3, "e"),
            row(4, "f"),
            row(4, "g"),
        ];
        let applied = [true, true, true, false, true, true, false];
        assert_eq!(
            read(rows, &applied),
            pairs(&[("1", "a"), ("2", "c"), ("3", "e")])
        );
        // The common table, as it is.
        let rows = vec![row(1, "a"), row(2, "b")];
        assert_eq!(read(rows, &[true, true]), pairs(&[("1", "a"), ("2", "b")]));
    }

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
