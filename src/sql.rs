//! Quoting for the few values miglock splices into SQL text.
//!
//! miglock talks to PostgreSQL with the simple query protocol only: it
//! saves the parse/bind round trips on every hot path and lets several
//! statements share one round trip. So values are quoted here instead of
//! being bound as parameters.

use postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

/// A double-quoted identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An escape-string literal (`E'…'`): correct whatever the server's
/// `standard_conforming_strings` is, since both `\` and `'` are escaped.
/// NUL cannot travel in the protocol, and control characters have no
/// business in the names and timestamps quoted here, so both are dropped.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Several statements sent in one round trip (one simple query), read
/// back through the handles [`Batch::push`] returns rather than by
/// position, so adding or reordering statements cannot shift a reader onto
/// another statement's rows.
///
/// A batch may carry one script of unknown length (a migration's SQL, see
/// [`Batch::push_script`]): the statements pushed after it are found by
/// counting from the end of the results.
#[derive(Debug, Default)]
pub struct Batch {
    sql: String,
    head: usize,
    /// Statements pushed after the script; `None` while there is none.
    tail: Option<usize>,
    /// Where the script is in `sql`.
    script: std::ops::Range<usize>,
}

/// Where a patchable statement is in a [`Batch`].
#[derive(Debug, Clone)]
pub struct Patch(std::ops::Range<usize>);

/// Where one statement's rows are in a [`Batch`]'s results.
#[derive(Debug, Clone, Copy)]
pub struct Slot(Position);

#[derive(Debug, Clone, Copy)]
enum Position {
    Head(usize),
    /// The n-th statement after the script, from 0.
    Tail(usize),
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds exactly one statement.
    pub fn push(&mut self, statement: &str) -> Slot {
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        self.sql.push_str(statement);
        match &mut self.tail {
            None => {
                self.head += 1;
                Slot(Position::Head(self.head - 1))
            }
            Some(tail) => {
                *tail += 1;
                Slot(Position::Tail(*tail - 1))
            }
        }
    }

    /// Adds one statement that [`Batch::patch`] may later replace with
    /// another of the same length (an attempt's `lock_timeout`), in place,
    /// however big the rest of the batch.
    pub fn push_patchable(&mut self, statement: &str) -> Patch {
        self.push(statement);
        let end = self.sql.len();
        Patch(end - statement.len()..end)
    }

    /// Replaces a statement pushed with [`Batch::push_patchable`].
    pub fn patch(&mut self, at: &Patch, statement: &str) {
        debug_assert_eq!(at.0.len(), statement.len(), "a patch keeps its length");
        self.sql.replace_range(at.0.clone(), statement);
    }

    /// Adds a script of any number of statements (at most one per batch),
    /// and returns how many characters precede it: PostgreSQL counts an
    /// error's position in characters of the whole query. A newline follows
    /// the script so that a trailing `--` comment ends there.
    pub fn push_script(&mut self, script: &str) -> usize {
        debug_assert!(self.tail.is_none(), "one script per batch");
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        let before = self.sql.chars().count();
        // A migration can be tens of megabytes: no room to spare twice over.
        self.sql.reserve_exact(script.len() + 1024);
        let start = self.sql.len();
        self.sql.push_str(script);
        self.script = start..self.sql.len();
        self.sql.push('\n');
        self.tail = Some(0);
        before
    }

    /// The script pushed (empty without one).
    pub fn script(&self) -> &str {
        self.sql.get(self.script.clone()).unwrap_or_default()
    }

    /// Sends the batch and keeps every statement's rows.
    pub fn query(&self, client: &mut Client) -> Result<Results, postgres::Error> {
        let messages = client.simple_query(&self.sql)?;
        let mut statements = vec![Vec::new()];
        for message in messages {
            match message {
                SimpleQueryMessage::Row(row) => {
                    if let Some(rows) = statements.last_mut() {
                        rows.push(row);
                    }
                }
                SimpleQueryMessage::CommandComplete(_) => statements.push(Vec::new()),
                _ => {}
            }
        }
        statements.pop();
        Ok(Results {
            statements,
            tail: self.tail.unwrap_or(0),
        })
    }

    /// Sends the batch, dropping any rows (a migration's own queries).
    pub fn execute(&self, client: &mut Client) -> Result<(), postgres::Error> {
        client.batch_execute(&self.sql)
    }
}

/// The rows of each statement of a [`Batch`].
#[derive(Debug)]
pub struct Results {
    statements: Vec<Vec<SimpleQueryRow>>,
    tail: usize,
}

impl Results {
    /// The rows of `slot`'s statement (none if it returned none).
    pub fn rows(&self, slot: Slot) -> &[SimpleQueryRow] {
        let index = match slot.0 {
            Position::Head(i) => Some(i),
            Position::Tail(i) => (self.statements.len() + i).checked_sub(self.tail),
        };
        index
            .and_then(|i| self.statements.get(i))
            .map_or(&[], Vec::as_slice)
    }

    /// The first column of the first row of `slot`'s statement.
    pub fn value(&self, slot: Slot) -> Option<&str> {
        self.rows(slot).first()?.get(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_their_quotes() {
        assert_eq!(ident("plain"), "\"plain\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes_and_drop_controls() {
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal("a\\b"), "E'a\\\\b'");
        assert_eq!(literal("a\0b\nc"), "E'abc'");
        assert_eq!(
            literal("\\'; drop table x; --"),
            "E'\\\\''; drop table x; --'"
        );
    }

    #[test]
    fn batch_slots_count_from_the_end_after_a_script() {
        let mut batch = Batch::new();
        let _begin = batch.push("BEGIN");
        let before = batch.push_script("SELECT 1; SELECT 2");
        assert_eq!(before, "BEGIN;\n".len());
        let last = batch.push("COMMIT");
        assert_eq!(batch.sql, "BEGIN;\nSELECT 1; SELECT 2\n;\nCOMMIT");
        let results = Results {
            statements: vec![vec![], vec![], vec![], vec![]],
            tail: batch.tail.unwrap_or(0),
        };
        assert!(matches!(last.0, Position::Tail(0)));
        assert!(results.rows(last).is_empty());
        assert_eq!(results.value(last), None);
    }
}
