//! The plan statement by statement (issue #24): each statement of a
//! pending file that locks a table harder than its writers do, rewrites or
//! scans it, with the mode, the work and, when the catalog was read, the
//! table's size: `pending[].statements` and the lines under each file.

use serde::Serialize;

use crate::migrate::table_sizes::{self, TableSize};
use crate::migrations::split::{CostlyStatements, MAX_STATEMENTS};

/// One table one statement locks: a statement that locks two tables (a
/// foreign key: the table and the one it references) is two entries with
/// the same line.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStatement {
    /// The line of the file the statement starts on.
    pub line: usize,
    /// The statement on one line, comments dropped, cut with `…`.
    pub sql: String,
    pub table: String,
    /// As PostgreSQL's documentation names it (`ACCESS EXCLUSIVE`).
    pub mode: &'static str,
    /// `rewrite`, `may_rewrite` or `scan`; absent when it does neither to
    /// this table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work: Option<&'static str>,
    /// The same, as the plan says it (`rewrites`).
    #[serde(skip)]
    pub work_verb: Option<&'static str>,
    /// For a table rewritten or scanned, when the catalog was read: its
    /// size (`pg_total_relation_size`) and estimated rows (`reltuples`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Which statement of the file's list it belongs to: two statements on
    /// one line are two lines of the plan.
    #[serde(skip)]
    statement: usize,
}

impl PlannedStatement {
    /// The entries of a file's costly statements, in the file's order.
    pub fn of(costly: &CostlyStatements) -> Vec<PlannedStatement> {
        costly
            .first
            .iter()
            .enumerate()
            .flat_map(|(statement, s)| {
                s.tables.iter().map(move |t| PlannedStatement {
                    line: s.line,
                    sql: s.excerpt.clone(),
                    table: t.table.clone(),
                    mode: t.level.sql_name(),
                    work: t.work.map(|w| w.as_str()),
                    work_verb: t.work.map(|w| w.verb()),
                    bytes: None,
                    rows: None,
                    statement,
                })
            })
            .collect()
    }

    /// `rewrites calls (1.2 GB, ~9.1 M rows)`; `None` when the statement
    /// neither rewrites nor scans this table.
    fn work_text(&self) -> Option<String> {
        let verb = self.work_verb?;
        let size = self.bytes.map_or(String::new(), |bytes| {
            let size = TableSize {
                bytes,
                rows: self.rows.map(|r| r as f64),
            };
            format!(" ({})", table_sizes::describe(&size))
        });
        Some(format!("{verb} {}{size}", self.table))
    }
}

/// The plan's lines for one pending file's statements, each starting with
/// `indent`: `line 2  ALTER TABLE calls ADD …  ACCESS EXCLUSIVE, rewrites
/// calls (1.2 GB, ~9.1 M rows)`, the texts in one column; then how many
/// more there are (`omitted`), past the first [`MAX_STATEMENTS`].
pub fn plan_lines(statements: &[PlannedStatement], omitted: usize, indent: &str) -> String {
    let mut groups: Vec<&[PlannedStatement]> = Vec::new();
    let mut rest = statements;
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .take_while(|s| s.statement == first.statement)
            .count();
        let (group, tail) = rest.split_at(len);
        groups.push(group);
        rest = tail;
    }
    let number = groups
        .iter()
        .map(|g| g[0].line.to_string().len())
        .max()
        .unwrap_or(0);
    let text = groups
        .iter()
        .map(|g| g[0].sql.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for group in groups {
        let first = &group[0];
        out.push_str(&format!(
            "{indent}line {:<number$}  {:<text$}  {}\n",
            first.line,
            first.sql,
            cost(group)
        ));
    }
    if omitted > 0 {
        out.push_str(&format!(
            "{indent}… and {omitted} more such statement{} (the plan shows the first \
             {MAX_STATEMENTS})\n",
            if omitted == 1 { "" } else { "s" }
        ));
    }
    out
}

/// What one statement costs: `ACCESS EXCLUSIVE, rewrites calls (…)` when
/// it locks the one table it works on; otherwise each mode with the tables
/// it takes them in, then the work (`SHARE ROW EXCLUSIVE on child and
/// parent, scans child (…)`).
fn cost(group: &[PlannedStatement]) -> String {
    if let [only] = group {
        return match only.work_text() {
            Some(work) => format!("{}, {work}", only.mode),
            None => format!("{} on {}", only.mode, only.table),
        };
    }
    let mut modes: Vec<&str> = Vec::new();
    for entry in group {
        if !modes.contains(&entry.mode) {
            modes.push(entry.mode);
        }
    }
    let mut parts: Vec<String> = modes
        .iter()
        .map(|mode| {
            let tables: Vec<&str> = group
                .iter()
                .filter(|e| e.mode == *mode)
                .map(|e| e.table.as_str())
                .collect();
            format!("{mode} on {}", and_list(&tables))
        })
        .collect();
    parts.extend(group.iter().filter_map(PlannedStatement::work_text));
    parts.join(", ")
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::split::summarize;

    fn planned(sql: &str) -> (Vec<PlannedStatement>, usize) {
        let summary = summarize(sql.as_bytes()).unwrap();
        (PlannedStatement::of(&summary.costly), summary.costly.more)
    }

    #[test]
    fn each_costly_statement_is_one_line_with_its_mode_and_work() {
        let (mut statements, omitted) = planned(
            "INSERT INTO calls VALUES (1);\n\
             ALTER TABLE calls ADD COLUMN jitter int DEFAULT random();\n\
             -- why: the dashboards filter on it\n\
             CREATE INDEX CONCURRENTLY calls_jitter ON calls (jitter);\n\
             ALTER TABLE calls ADD CONSTRAINT calls_user FOREIGN KEY (user_id) REFERENCES users (id);\n\
             ALTER TABLE calls RENAME COLUMN jitter TO wobble; ALTER TABLE users RENAME a TO b;\n",
        );
        assert_eq!(omitted, 0);
        statements[0].bytes = Some(1_288_490_189);
        statements[0].rows = Some(9_100_000);
        assert_eq!(
            plan_lines(&statements, omitted, "  "),
            "  line 2  ALTER TABLE calls ADD COLUMN jitter int DEFAULT random()      ACCESS \
             EXCLUSIVE, rewrites calls (1.2 GB, ~9.1 M rows)\n\
             \x20 line 4  CREATE INDEX CONCURRENTLY calls_jitter ON calls (jitter)      SHARE \
             UPDATE EXCLUSIVE, scans calls\n\
             \x20 line 5  ALTER TABLE calls ADD CONSTRAINT calls_user FOREIGN KEY (us…  SHARE \
             ROW EXCLUSIVE on calls and users, scans calls\n\
             \x20 line 6  ALTER TABLE calls RENAME COLUMN jitter TO wobble              ACCESS \
             EXCLUSIVE on calls\n\
             \x20 line 6  ALTER TABLE users RENAME a TO b                               ACCESS \
             EXCLUSIVE on users\n"
        );
        let json = serde_json::to_value(&statements[2]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "line": 5,
                "sql": "ALTER TABLE calls ADD CONSTRAINT calls_user FOREIGN KEY (us…",
                "table": "calls",
                "mode": "SHARE ROW EXCLUSIVE",
                "work": "scan"
            })
        );
    }

    #[test]
    fn past_the_first_statements_the_rest_are_counted() {
        let (statements, omitted) = planned(&"TRUNCATE t;\n".repeat(MAX_STATEMENTS + 1));
        assert_eq!((statements.len(), omitted), (MAX_STATEMENTS, 1));
        let text = plan_lines(&statements, omitted, "");
        assert!(
            text.starts_with("line 1   TRUNCATE t  ACCESS EXCLUSIVE on t\n"),
            "{text}"
        );
        assert!(text.ends_with(
            "line 50  TRUNCATE t  ACCESS EXCLUSIVE on t\n… and 1 more such statement (the plan \
             shows the first 50)\n"
        ));
        assert_eq!(plan_lines(&[], 0, "  "), "");
    }
}
