//! The statements of a file that cost the application something: each
//! one that takes a table lock stronger than `ROW EXCLUSIVE` (writers or
//! readers wait behind it), or rewrites or scans a table (it holds that
//! lock for as long as the table is big). What the plan shows the DBA
//! statement by statement (issue #24).
//!
//! Kept while a file is read as a stream, so only what the plan prints is
//! held: plain DML (a data file of half a million INSERTs) keeps nothing,
//! and a file of many DDL statements keeps its first [`MAX_STATEMENTS`]
//! and a count of the rest (issue #20: memory bounded by the file's
//! shape, not its size).

use super::locks::{LockLevel, TableLock};
use super::scan::Statement;
use super::work::Work;

/// How many costly statements of a file the plan keeps: more is a
/// screenful no one reads, and memory the file's size would decide.
pub const MAX_STATEMENTS: usize = 50;

/// How long a statement's excerpt is, in characters, `…` included.
const EXCERPT: usize = 60;

/// One table a costly statement locks, and what it does to its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCost {
    pub table: String,
    pub level: LockLevel,
    pub work: Option<Work>,
}

/// A statement that takes a strong table lock, rewrites or scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostlyStatement {
    /// The line its first token is on, from 1.
    pub line: usize,
    /// Its text on one line, comments dropped, cut with `…`.
    pub excerpt: String,
    /// The tables it locks, in their order of names, with the work it
    /// does on each.
    pub tables: Vec<TableCost>,
}

/// A file's costly statements: the first [`MAX_STATEMENTS`], and how many
/// more there are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostlyStatements {
    pub first: Vec<CostlyStatement>,
    pub more: usize,
}

impl CostlyStatements {
    /// Takes `statement` into account, with what its words say it locks
    /// and does (see [`Statement::table_locks`], [`Statement::table_work`]).
    pub fn note(
        &mut self,
        statement: &Statement,
        locks: &[TableLock],
        work: Option<&(String, Work)>,
    ) {
        let strong = locks.iter().any(|l| l.level > LockLevel::RowExclusive);
        if !strong && work.is_none() {
            return;
        }
        if self.first.len() >= MAX_STATEMENTS {
            self.more += 1;
            return;
        }
        // Both read the same name at the same word, so a table worked on
        // is one the statement locks.
        let tables = locks
            .iter()
            .map(|lock| TableCost {
                table: lock.table.clone(),
                level: lock.level,
                work: work
                    .filter(|(table, _)| *table == lock.table)
                    .map(|(_, work)| *work),
            })
            .collect();
        self.first.push(CostlyStatement {
            line: statement.line,
            excerpt: excerpt(statement.sql, EXCERPT),
            tables,
        });
    }
}

/// `sql` on one line of at most `max` characters: comments dropped, runs
/// of white space made one space, cut with `…` when longer. Quoted text
/// (strings, quoted names, dollar-quoted bodies) is kept as written, but
/// for its white space.
pub fn excerpt(sql: &str, max: usize) -> String {
    let mut out = Text::new(max);
    let mut at = 0;
    while let Some(c) = sql[at..].chars().next() {
        if out.full() {
            break;
        }
        let rest = &sql[at..];
        let before = &sql[..at];
        if rest.starts_with("--") || rest.starts_with("/*") {
            // A comment reads as the white space it stands for.
            out.space();
            at += if c == '-' {
                rest.find('\n').unwrap_or(rest.len())
            } else {
                block_comment(rest)
            };
            continue;
        }
        let len = if c == '\'' || c == '"' {
            // E'…' lets a backslash escape the quote.
            quoted(rest, c, c == '\'' && escape_prefix(before))
        } else if let Some(tag) = dollar_tag(rest, before.chars().next_back()) {
            rest[tag.len()..]
                .find(tag)
                .map_or(rest.len(), |end| tag.len() + end + tag.len())
        } else {
            c.len_utf8()
        };
        // A literal's or a body's text is left out: a value substituted
        // for a placeholder (a password, a key) never reaches the plan.
        let shown = &rest[..len];
        if c == '\'' && len > 2 {
            out.push_str("'…'");
        } else if c == '$' && len > 2 {
            let tag = dollar_tag(rest, before.chars().next_back()).unwrap_or("$$");
            out.push_str(tag);
            out.push_str("…");
            out.push_str(tag);
        } else {
            out.push_str(shown);
        }
        at += len;
    }
    out.finish()
}

/// Whether the text before a quote ends with the `E` of an escape string.
fn escape_prefix(before: &str) -> bool {
    let mut back = before.chars().rev();
    matches!(back.next(), Some('E' | 'e'))
        && !back
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// The one-line text being built: white space squeezed, counted in
/// characters, one more than fits kept to know it must be cut.
struct Text {
    text: String,
    chars: usize,
    max: usize,
    space: bool,
}

impl Text {
    fn new(max: usize) -> Text {
        Text {
            text: String::new(),
            chars: 0,
            max: max.max(1),
            space: false,
        }
    }

    fn full(&self) -> bool {
        self.chars > self.max
    }

    fn space(&mut self) {
        self.space = true;
    }

    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.space = true;
            return;
        }
        if self.full() {
            return;
        }
        if std::mem::take(&mut self.space) && !self.text.is_empty() {
            self.text.push(' ');
            self.chars += 1;
        }
        self.text.push(c);
        self.chars += 1;
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push(c);
            if self.full() {
                return;
            }
        }
    }

    fn finish(mut self) -> String {
        if self.chars > self.max {
            let keep = self
                .text
                .char_indices()
                .nth(self.max - 1)
                .map_or(self.text.len(), |(at, _)| at);
            self.text.truncate(keep);
            self.text.truncate(self.text.trim_end().len());
            self.text.push('…');
        }
        self.text
    }
}

/// The length of the comment `/* … */` at the start of `rest` (nested, as
/// PostgreSQL nests them); all of `rest` when it is not closed.
fn block_comment(rest: &str) -> usize {
    let mut depth = 0usize;
    let mut at = 0;
    while at < rest.len() {
        let tail = &rest[at..];
        if tail.starts_with("/*") {
            depth += 1;
            at += 2;
        } else if tail.starts_with("*/") {
            depth -= 1;
            at += 2;
            if depth == 0 {
                return at;
            }
        } else {
            at += tail.chars().next().map_or(1, char::len_utf8);
        }
    }
    rest.len()
}

/// The length of the quoted text at the start of `rest`, quotes included
/// (a doubled quote stays inside); all of `rest` when it is not closed.
fn quoted(rest: &str, quote: char, escapes: bool) -> usize {
    let mut chars = rest.char_indices().skip(1);
    while let Some((at, c)) = chars.next() {
        if escapes && c == '\\' {
            chars.next();
        } else if c == quote {
            return at + c.len_utf8();
        }
    }
    rest.len()
}

/// `$tag$` or `$$` at the start of `rest`, opening a dollar-quoted body
/// (not `$1`, nor a `$` inside a name: `after` is the character before).
fn dollar_tag(rest: &str, after: Option<char>) -> Option<&str> {
    if !rest.starts_with('$') || after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let end = rest[1..].find('$')? + 1;
    let tag = &rest[1..end];
    let mut chars = tag.chars();
    let valid = chars.next().is_none_or(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_');
    valid.then(|| &rest[..=end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::split::split;

    #[test]
    fn an_excerpt_is_one_line_without_comments_cut_with_an_ellipsis() {
        let e = |sql: &str| excerpt(sql, 40);
        assert_eq!(
            e("ALTER TABLE t\n    ADD COLUMN c int"),
            "ALTER TABLE t ADD COLUMN c int"
        );
        assert_eq!(
            e("ALTER TABLE t -- why; it matters\n  ADD /* a /* nested */ note */ c int"),
            "ALTER TABLE t ADD c int"
        );
        assert_eq!(
            e("ALTER TABLE calls ADD COLUMN jitter int DEFAULT random()"),
            "ALTER TABLE calls ADD COLUMN jitter int…"
        );
        assert_eq!(
            e("ALTER TABLE calls ADD COLUMN jitter int DEFAULT random()")
                .chars()
                .count(),
            40
        );
        // A literal's text is left out (a placeholder's value may be a
        // secret), what looks like a comment in it with it.
        assert_eq!(
            e("COMMENT ON TABLE t IS '-- not /* one'"),
            "COMMENT ON TABLE t IS '…'"
        );
        assert_eq!(
            e("COMMENT ON TABLE t IS E'it\\'s -- x'"),
            "COMMENT ON TABLE t IS E'…'"
        );
        assert_eq!(
            e("ALTER TABLE t ADD c text DEFAULT ''"),
            "ALTER TABLE t ADD c text DEFAULT ''"
        );
        assert_eq!(e("SELECT $f$ -- in $f$ -- out"), "SELECT $f$…$f$");
        assert_eq!(e("SELECT a$b -- out"), "SELECT a$b");
        assert_eq!(
            e("ALTER TABLE \"a  -- b\" ADD c int"),
            "ALTER TABLE \"a -- b\" ADD c int"
        );
        // Cut between multi-byte characters, never inside one.
        assert_eq!(
            excerpt("ALTER TABLE été_ççç ADD c int", 16),
            "ALTER TABLE été…"
        );
        // Unclosed quotes and comments end the text, nothing worse.
        assert_eq!(e("SELECT 'open"), "SELECT '…'");
        assert_eq!(e("SELECT /* open"), "SELECT");
        assert_eq!(e("SELECT \"open"), "SELECT \"open");
        assert_eq!(e("SELECT $$open"), "SELECT $$…$$");
        assert_eq!(excerpt("SELECT 1", 0), "…");
    }

    fn noted(script: &str) -> CostlyStatements {
        let mut costly = CostlyStatements::default();
        for s in split(script) {
            let locks = s.table_locks();
            let work = s.table_work();
            costly.note(&s, &locks, work.as_ref());
        }
        costly
    }

    #[test]
    fn only_strong_locks_rewrites_and_scans_are_kept() {
        let costly = noted(
            "INSERT INTO t VALUES (1);\nUPDATE t SET a = 1;\nSELECT 1;\n\
             LOCK TABLE t IN ROW EXCLUSIVE MODE;\n\
             ALTER TABLE child ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES parent (id);\n\
             CREATE INDEX CONCURRENTLY i ON t (a);\nALTER TABLE t RENAME a TO b;\n",
        );
        assert_eq!(costly.more, 0);
        let lines: Vec<usize> = costly.first.iter().map(|s| s.line).collect();
        assert_eq!(lines, [5, 6, 7]);
        assert_eq!(
            costly.first[0].tables,
            [
                TableCost {
                    table: "child".into(),
                    level: LockLevel::ShareRowExclusive,
                    work: Some(Work::Scan)
                },
                TableCost {
                    table: "parent".into(),
                    level: LockLevel::ShareRowExclusive,
                    work: None
                }
            ]
        );
        assert_eq!(
            costly.first[1].tables[0].level,
            LockLevel::ShareUpdateExclusive
        );
        assert_eq!(costly.first[1].tables[0].work, Some(Work::Scan));
        assert_eq!(costly.first[2].excerpt, "ALTER TABLE t RENAME a TO b");
        assert_eq!(costly.first[2].tables[0].work, None);
    }

    #[test]
    fn a_file_of_many_keeps_the_first_and_counts_the_rest() {
        let script =
            "CREATE INDEX i ON t (a);\nINSERT INTO t VALUES (1);\n".repeat(MAX_STATEMENTS + 7);
        let costly = noted(&script);
        assert_eq!(costly.first.len(), MAX_STATEMENTS);
        assert_eq!(costly.more, 7);
        assert_eq!(costly.first[1].line, 3);
    }

    /// Every statement that rewrites or scans names the table it works on
    /// among those it locks: the work is never dropped.
    #[test]
    fn the_table_worked_on_is_one_the_statement_locks() {
        for sql in [
            "ALTER TABLE IF EXISTS ONLY s.\"T\" ALTER COLUMN a TYPE bigint",
            "ALTER TABLE t ADD COLUMN x float8 DEFAULT random()",
            "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)",
            "ALTER TABLE t VALIDATE CONSTRAINT c",
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON ONLY s.t (a)",
            "CREATE INDEX ON t USING gin (a)",
            "CLUSTER VERBOSE t USING i",
            "VACUUM (FULL, VERBOSE) t",
            "VACUUM FULL t",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY m",
            "REFRESH MATERIALIZED VIEW m",
        ] {
            let costly = noted(sql);
            assert_eq!(costly.first.len(), 1, "{sql}");
            assert!(
                costly.first[0].tables.iter().any(|t| t.work.is_some()),
                "{sql}: {:?}",
                costly.first[0]
            );
        }
    }
}
