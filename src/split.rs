//! A migration file as PostgreSQL's own tools split it into statements, and
//! what those statements ask of the runner: whether the file can run in one
//! transaction, and what it must not contain.
//!
//! The split follows the server's lexer (`scan.l`) for what is a string, a
//! quoted identifier, a dollar quote or a comment, and psql's (`psqlscan.l`)
//! for which top-level `;` ends a statement: psql is what people test their
//! files with, and a file that psql runs statement by statement must run the
//! same way here. Hand-written rather than `pg_query` (libpg_query): that
//! needs libclang and a C build, and adds megabytes to the binary, for a
//! question a lexer answers.

use std::fmt;

/// One top-level statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From its first token to the end of its last (without the `;`).
    pub sql: &'a str,
    /// The line of the file its first token is on, from 1.
    pub line: usize,
    /// Its leading words (up to [`WORDS`]), upper-cased; other tokens as
    /// one-character marks (`(`, `)`, `,`, `=`), strings and quoted
    /// as `'`, quoted identifiers as written (with their quotes).
    words: Vec<String>,
}

/// How many leading tokens of a statement are kept to classify it.
const WORDS: usize = 48;

/// Splits `sql` into its statements, as psql sends them. Empty statements
/// (`;;`, a file of comments) are dropped: the server ignores them too.
pub fn split(sql: &str) -> Vec<Statement<'_>> {
    Scanner::new(sql).run()
}

struct Scanner<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    /// `standard_conforming_strings`: on by default since PostgreSQL 9.1;
    /// with it off, `\` escapes in plain `'…'` strings too. psql follows the
    /// server's value after each statement, so a file that turns it off
    /// is lexed that way from the next statement on.
    standard_strings: bool,
}

/// The statement being read.
#[derive(Default)]
struct Current {
    start: Option<(usize, usize)>,
    end: usize,
    words: Vec<String>,
    paren_depth: usize,
    /// psql's heuristic for SQL-standard function bodies: in a statement
    /// that starts `CREATE [OR REPLACE] {FUNCTION|PROCEDURE}`, count BEGIN
    /// (and CASE inside it) against END outside parentheses; a `;` ends the
    /// statement only at depth 0.
    begin_depth: usize,
    identifiers: [u8; 4],
    identifier_count: usize,
}

impl Current {
    fn token(&mut self, start: usize, line: usize, end: usize, word: &str) {
        if self.start.is_none() {
            self.start = Some((start, line));
        }
        self.end = end;
        if self.words.len() < WORDS {
            self.words.push(word.to_string());
        }
    }

    fn identifier(&mut self, word: &str) {
        let lower = word.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "create" | "function" | "procedure" | "or" | "replace"
        ) && self.identifier_count < self.identifiers.len()
        {
            self.identifiers[self.identifier_count] = lower.as_bytes()[0];
        }
        self.identifier_count += 1;
        let id = self.identifiers;
        let function = id[0] == b'c'
            && (id[1] == b'f'
                || id[1] == b'p'
                || (id[1] == b'o' && id[2] == b'r' && (id[3] == b'f' || id[3] == b'p')));
        if function && self.paren_depth == 0 {
            match lower.as_str() {
                "begin" => self.begin_depth += 1,
                "case" if self.begin_depth >= 1 => self.begin_depth += 1,
                "end" => self.begin_depth = self.begin_depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

impl<'a> Scanner<'a> {
    fn new(sql: &'a str) -> Scanner<'a> {
        Scanner {
            sql,
            bytes: sql.as_bytes(),
            pos: 0,
            line: 1,
            standard_strings: true,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// Moves to `to`, counting lines.
    fn advance_to(&mut self, to: usize) {
        let to = to.min(self.bytes.len());
        self.line += self.bytes[self.pos..to]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        self.pos = to;
    }

    fn run(mut self) -> Vec<Statement<'a>> {
        let mut statements = Vec::new();
        let mut current = Current::default();
        while let Some(b) = self.peek(0) {
            let (start, line) = (self.pos, self.line);
            match b {
                b';' if current.paren_depth == 0 && current.begin_depth == 0 => {
                    self.pos += 1;
                    self.finish(&mut current, &mut statements);
                }
                b'-' if self.peek(1) == Some(b'-') => {
                    let end = self.bytes[self.pos..]
                        .iter()
                        .position(|b| *b == b'\n' || *b == b'\r')
                        .map_or(self.bytes.len(), |n| self.pos + n);
                    self.advance_to(end);
                }
                b'/' if self.peek(1) == Some(b'*') => self.block_comment(),
                b'\'' => {
                    let escapes = !self.standard_strings;
                    self.quoted(1, b'\'', escapes);
                    current.token(start, line, self.pos, "'");
                }
                b'"' => {
                    self.quoted(1, b'"', false);
                    let quoted = &self.sql[start..self.pos];
                    current.token(start, line, self.pos, quoted);
                }
                b'e' | b'E' if self.peek(1) == Some(b'\'') => {
                    self.quoted(2, b'\'', true);
                    current.token(start, line, self.pos, "'");
                }
                // B'…', X'…', N'…': plain quoting rules for the split.
                b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if self.peek(1) == Some(b'\'') => {
                    let escapes = !self.standard_strings;
                    self.quoted(2, b'\'', escapes);
                    current.token(start, line, self.pos, "'");
                }
                b'u' | b'U'
                    if self.peek(1) == Some(b'&')
                        && matches!(self.peek(2), Some(b'\'') | Some(b'"')) =>
                {
                    let quote = self.bytes[self.pos + 2];
                    self.quoted(3, quote, false);
                    let mark = if quote == b'"' { "\"" } else { "'" };
                    current.token(start, line, self.pos, mark);
                }
                b'$' => {
                    if let Some(tag_len) = self.dollar_tag() {
                        self.dollar_quoted(tag_len);
                        current.token(start, line, self.pos, "'");
                    } else {
                        // `$1`, or a `$` that starts no quote.
                        self.pos += 1;
                        while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                            self.pos += 1;
                        }
                        current.token(start, line, self.pos, "$");
                    }
                }
                b if b.is_ascii_digit()
                    || (b == b'.' && self.peek(1).is_some_and(|b| b.is_ascii_digit())) =>
                {
                    self.number();
                    current.token(start, line, self.pos, "0");
                }
                b if ident_start(b) => {
                    while self.peek(0).is_some_and(ident_cont) {
                        self.pos += 1;
                    }
                    let word = &self.sql[start..self.pos];
                    current.identifier(word);
                    current.token(start, line, self.pos, &word.to_ascii_uppercase());
                }
                b if b.is_ascii_whitespace() => self.advance_to(self.pos + 1),
                _ => {
                    // One character of an operator or punctuation; a
                    // multi-byte character only starts identifiers (above).
                    let len = self.sql[self.pos..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                    self.pos += len;
                    match b {
                        b'(' => current.paren_depth += 1,
                        b')' => current.paren_depth = current.paren_depth.saturating_sub(1),
                        _ => {}
                    }
                    let mark = &self.sql[start..self.pos];
                    current.token(start, line, self.pos, mark);
                }
            }
        }
        self.finish(&mut current, &mut statements);
        statements
    }

    fn finish(&mut self, current: &mut Current, statements: &mut Vec<Statement<'a>>) {
        let done = std::mem::take(current);
        let Some((start, line)) = done.start else {
            return;
        };
        let statement = Statement {
            sql: &self.sql[start..done.end],
            line,
            words: done.words,
        };
        if let Some(on) = statement.sets_standard_strings() {
            self.standard_strings = on;
        }
        statements.push(statement);
    }

    /// `/* … */`, nested as PostgreSQL nests them; unterminated runs to
    /// the end (the server reports it).
    fn block_comment(&mut self) {
        let mut depth = 0usize;
        let mut i = self.pos;
        while i < self.bytes.len() {
            if self.bytes[i] == b'/' && self.bytes.get(i + 1) == Some(&b'*') {
                depth += 1;
                i += 2;
            } else if self.bytes[i] == b'*' && self.bytes.get(i + 1) == Some(&b'/') {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    break;
                }
            } else {
                i += 1;
            }
        }
        self.advance_to(i);
    }

    /// A quoted string or identifier whose opening quote is at
    /// `pos + prefix - 1`: a doubled quote stays inside, and with
    /// `escapes` a backslash takes the next character with it.
    fn quoted(&mut self, prefix: usize, quote: u8, escapes: bool) {
        let mut i = self.pos + prefix;
        while i < self.bytes.len() {
            let b = self.bytes[i];
            if escapes && b == b'\\' {
                i += 2;
            } else if b == quote {
                if self.bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    i += 1;
                    break;
                }
            } else {
                i += 1;
            }
        }
        self.advance_to(i);
    }

    /// The length of the `$tag$` at `pos` (`$$` included), if one starts
    /// there: a tag follows identifier rules but has no `$`, so `$1` is a
    /// parameter and `$1$` no quote.
    fn dollar_tag(&self) -> Option<usize> {
        let rest = &self.bytes[self.pos + 1..];
        if rest.first() == Some(&b'$') {
            return Some(2);
        }
        if !rest.first().copied().is_some_and(ident_start) {
            return None;
        }
        let n = rest
            .iter()
            .position(|b| !(ident_start(*b) || b.is_ascii_digit()))?;
        (rest[n] == b'$').then_some(n + 2)
    }

    /// Past the closing copy of the tag at `pos`: the first one after it,
    /// as the server's lexer finds it.
    fn dollar_quoted(&mut self, tag_len: usize) {
        let tag = &self.sql[self.pos..self.pos + tag_len];
        let body = self.pos + tag_len;
        let end = self.sql[body..]
            .find(tag)
            .map_or(self.bytes.len(), |n| body + n + tag_len);
        self.advance_to(end);
    }

    /// A numeric literal: digits, one `.`, an exponent only when digits
    /// follow it (PostgreSQL 15 reads `1e'x'` as `1` and the string `e'x'`).
    fn number(&mut self) {
        let digits = |s: &mut Self| {
            while s.peek(0).is_some_and(|b| b.is_ascii_digit() || b == b'_') {
                s.pos += 1;
            }
        };
        digits(self);
        if self.peek(0) == Some(b'.') && self.peek(1) != Some(b'.') {
            self.pos += 1;
            digits(self);
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if self.peek(1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1 + sign;
                digits(self);
            }
        }
    }
}

/// Why a file runs outside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `-- miglock:no-transaction` (or refinery's `-- refinery:noTransaction`)
    /// on the first line.
    Marker,
    /// The first statement PostgreSQL refuses in a transaction block.
    Statement(&'static str),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Marker => f.write_str("marker"),
            Reason::Statement(kind) => f.write_str(&kind.replace(' ', "_").to_ascii_lowercase()),
        }
    }
}

/// How a file is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// In one transaction with its history row.
    Transaction,
    /// Statement by statement in autocommit; `mixed` when it also holds
    /// statements that could have run in a transaction (so it is not
    /// atomic).
    NoTransaction { reason: Reason, mixed: bool },
}

impl Mode {
    pub fn transactional(&self) -> bool {
        matches!(self, Mode::Transaction)
    }
}

/// Whether the file's first line asks for no transaction.
pub fn has_marker(sql: &str) -> bool {
    let first = sql
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("");
    let Some(comment) = first.trim().strip_prefix("--") else {
        return false;
    };
    let comment = comment.trim();
    comment.eq_ignore_ascii_case("miglock:no-transaction")
        || comment.eq_ignore_ascii_case("refinery:noTransaction")
}

/// How `sql` must run, from its marker or its statements.
pub fn mode(sql: &str, statements: &[Statement]) -> Mode {
    let refused: Vec<Option<&'static str>> = statements
        .iter()
        .map(Statement::refused_in_transaction)
        .collect();
    let first = refused.iter().flatten().next().copied();
    let mixed = refused.iter().any(Option::is_none);
    if has_marker(sql) {
        return Mode::NoTransaction {
            reason: Reason::Marker,
            mixed: false,
        };
    }
    match first {
        Some(kind) => Mode::NoTransaction {
            reason: Reason::Statement(kind),
            mixed,
        },
        None => Mode::Transaction,
    }
}

/// A statement a file must not hold, found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `transaction_control` or `unsupported`.
    pub kind: &'static str,
    pub line: usize,
    pub message: String,
}

/// What in a pending file would make miglock's run differ from psql's, or
/// break miglock's own bookkeeping: transaction control in a file that runs
/// in miglock's transaction, `COPY … FROM stdin`, `DISCARD ALL`.
pub fn refusals(mode: &Mode, statements: &[Statement]) -> Vec<Refusal> {
    let mut found = Vec::new();
    // Where the file's own transaction was opened and not yet ended.
    let mut open: Option<usize> = None;
    for s in statements {
        match s.transaction_control() {
            Some("BEGIN" | "START TRANSACTION") => open = Some(s.line),
            // AND CHAIN ends a transaction and opens the next at once.
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") if s.chains() => open = Some(s.line),
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT" | "PREPARE TRANSACTION") => open = None,
            _ => {}
        }
        if let Some(what) = s.transaction_control() {
            if *mode
                != (Mode::NoTransaction {
                    reason: Reason::Marker,
                    mixed: false,
                })
            {
                found.push(Refusal {
                    kind: "transaction_control",
                    line: s.line,
                    message: format!(
                        "line {}: {what} controls the transaction, but miglock runs this file in its own \
                         transaction with its history row; remove it, or put `-- miglock:no-transaction` on \
                         the first line to run the file statement by statement as psql would, its own \
                         BEGIN/COMMIT honoured",
                        s.line
                    ),
                });
            }
        }
        if s.is_copy_from_stdin() {
            found.push(Refusal {
                kind: "unsupported",
                line: s.line,
                message: format!(
                    "line {}: COPY … FROM stdin reads its rows from psql's input, which miglock does not \
                     have; use INSERT, or COPY from a server-side file",
                    s.line
                ),
            });
        }
        if s.starts(&["DISCARD", "ALL"]) {
            found.push(Refusal {
                kind: "unsupported",
                line: s.line,
                message: format!(
                    "line {}: DISCARD ALL would release the advisory lock this run holds (and its \
                     session settings); remove it",
                    s.line
                ),
            });
        }
    }
    if let (
        Some(line),
        Mode::NoTransaction {
            reason: Reason::Marker,
            ..
        },
    ) = (open, mode)
    {
        // psql would roll it back at the end of the file, with its session;
        // miglock's session goes on to record the file as applied.
        found.push(Refusal {
            kind: "transaction_control",
            line,
            message: format!(
                "line {line}: the transaction this BEGIN opens is never ended; add COMMIT at the end \
                 of the file"
            ),
        });
    }
    found
}

impl Statement<'_> {
    fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    fn starts(&self, words: &[&str]) -> bool {
        words.iter().enumerate().all(|(i, w)| self.word(i) == *w)
    }

    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    /// `SET [SESSION] standard_conforming_strings {=|TO} value`: the value,
    /// when the statement sets it.
    fn sets_standard_strings(&self) -> Option<bool> {
        let at = match (self.word(0), self.word(1)) {
            ("SET", "SESSION") => 2,
            ("SET", _) => 1,
            _ => return None,
        };
        if self.word(at) != "STANDARD_CONFORMING_STRINGS" {
            return None;
        }
        // The value follows the name and `=` or `TO`, with or without
        // spaces (`standard_conforming_strings=off`), maybe quoted.
        let text = self.sql.to_ascii_lowercase();
        let rest = text
            .split_once("standard_conforming_strings")?
            .1
            .trim_start();
        let rest = match rest.strip_prefix('=') {
            Some(rest) => rest,
            None => rest.strip_prefix("to")?,
        };
        let value = rest
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == ';')
            .next()?
            .trim_matches('\'');
        match value {
            "on" | "true" | "yes" | "1" | "default" => Some(true),
            "off" | "false" | "no" | "0" => Some(false),
            _ => None,
        }
    }

    /// What PostgreSQL 15 refuses in a transaction block (its
    /// `PreventInTransactionBlock` call sites that the statement's own
    /// words decide).
    pub fn refused_in_transaction(&self) -> Option<&'static str> {
        let w = |i| self.word(i);
        match w(0) {
            "VACUUM" => Some("VACUUM"),
            "CREATE" => {
                let mut i = 1;
                if w(i) == "UNIQUE" {
                    i += 1;
                }
                if w(i) == "INDEX" && w(i + 1) == "CONCURRENTLY" {
                    return Some("CREATE INDEX CONCURRENTLY");
                }
                match w(1) {
                    "DATABASE" => Some("CREATE DATABASE"),
                    "TABLESPACE" => Some("CREATE TABLESPACE"),
                    // create_slot is true unless turned off (or connect is).
                    "SUBSCRIPTION" if !self.option_off(&["CREATE_SLOT", "CONNECT"]) => {
                        Some("CREATE SUBSCRIPTION")
                    }
                    _ => None,
                }
            }
            "DROP" => match w(1) {
                "INDEX" if w(2) == "CONCURRENTLY" => Some("DROP INDEX CONCURRENTLY"),
                "DATABASE" => Some("DROP DATABASE"),
                "TABLESPACE" => Some("DROP TABLESPACE"),
                // Refused when the subscription has a slot, which cannot be
                // told from the text; outside a transaction it runs either way.
                "SUBSCRIPTION" => Some("DROP SUBSCRIPTION"),
                _ => None,
            },
            "REINDEX" => {
                // REINDEX [(options)] {INDEX|TABLE|SCHEMA|DATABASE|SYSTEM} [CONCURRENTLY] name
                if self.has("CONCURRENTLY") {
                    Some("REINDEX CONCURRENTLY")
                } else if ["SCHEMA", "DATABASE", "SYSTEM"]
                    .iter()
                    .any(|k| self.words.iter().take(8).any(|w| w == k))
                {
                    Some("REINDEX SCHEMA/DATABASE/SYSTEM")
                } else {
                    None
                }
            }
            // Without a table it clusters every table, each in its own
            // transaction.
            "CLUSTER" => {
                let rest: Vec<&str> = self.words[1..]
                    .iter()
                    .map(String::as_str)
                    .filter(|w| *w != "VERBOSE")
                    .collect();
                rest.is_empty().then_some("CLUSTER")
            }
            "ALTER" => match w(1) {
                "SYSTEM" => Some("ALTER SYSTEM"),
                "DATABASE" if self.has("TABLESPACE") && w(3) == "SET" => {
                    Some("ALTER DATABASE SET TABLESPACE")
                }
                "SUBSCRIPTION" if self.has("REFRESH") || self.has("PUBLICATION") => {
                    if self.has("PUBLICATION") && self.option_off(&["REFRESH"]) {
                        None
                    } else {
                        Some("ALTER SUBSCRIPTION REFRESH")
                    }
                }
                "TABLE" if self.has("DETACH") && self.has("CONCURRENTLY") => {
                    Some("ALTER TABLE DETACH PARTITION CONCURRENTLY")
                }
                _ => None,
            },
            "DISCARD" if w(1) == "ALL" => Some("DISCARD ALL"),
            _ => None,
        }
    }

    /// Whether a `WITH (…)` option among `names` is set to false/off.
    fn option_off(&self, names: &[&str]) -> bool {
        self.words.windows(3).any(|w| {
            names.contains(&w[0].as_str())
                && w[1] == "="
                && matches!(w[2].as_str(), "FALSE" | "OFF")
        }) || self
            .words
            .windows(2)
            .any(|w| names.contains(&w[0].as_str()) && matches!(w[1].as_str(), "FALSE" | "OFF"))
    }

    /// Top-level transaction control, as its command name.
    pub fn transaction_control(&self) -> Option<&'static str> {
        let w = |i| self.word(i);
        match w(0) {
            "BEGIN" => Some("BEGIN"),
            "START" if w(1) == "TRANSACTION" => Some("START TRANSACTION"),
            "COMMIT" if w(1) == "PREPARED" => Some("COMMIT PREPARED"),
            "COMMIT" => Some("COMMIT"),
            "END" => Some("END"),
            "ROLLBACK" if w(1) == "PREPARED" => Some("ROLLBACK PREPARED"),
            "ROLLBACK" if w(1) == "TO" || w(2) == "TO" => Some("ROLLBACK TO SAVEPOINT"),
            "ROLLBACK" => Some("ROLLBACK"),
            "ABORT" => Some("ABORT"),
            "SAVEPOINT" => Some("SAVEPOINT"),
            "RELEASE" => Some("RELEASE SAVEPOINT"),
            "PREPARE" if w(1) == "TRANSACTION" => Some("PREPARE TRANSACTION"),
            _ => None,
        }
    }

    /// `COMMIT AND CHAIN` (not `AND NO CHAIN`): a new transaction starts
    /// where this one ends.
    pub fn chains(&self) -> bool {
        self.words
            .windows(2)
            .any(|w| w[0] == "AND" && w[1] == "CHAIN")
    }

    fn is_copy_from_stdin(&self) -> bool {
        self.word(0) == "COPY"
            && self
                .words
                .windows(2)
                .any(|w| w[0] == "FROM" && w[1] == "STDIN")
    }

    /// The name a `CREATE INDEX CONCURRENTLY` statement gives its index,
    /// as stored in the catalog (folded to lower case unless quoted).
    pub fn created_index_name(&self) -> Option<String> {
        if self.refused_in_transaction()? != "CREATE INDEX CONCURRENTLY" {
            return None;
        }
        let at = self.words.iter().position(|w| w == "CONCURRENTLY")? + 1;
        let mut name = self.words.get(at)?;
        if name == "IF" {
            name = self.words.get(at + 3)?;
        }
        if name == "ON" {
            return None;
        }
        Some(match name.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"')?.replace("\"\"", "\""),
            None => name.to_lowercase(),
        })
    }

    /// The table a `CREATE INDEX CONCURRENTLY` builds on, unqualified, as
    /// PostgreSQL folds it.
    pub fn indexed_table(&self) -> Option<String> {
        if self.refused_in_transaction()? != "CREATE INDEX CONCURRENTLY" {
            return None;
        }
        let mut at = self.words.iter().position(|w| w == "ON")? + 1;
        if self.words.get(at).map(String::as_str) == Some("ONLY") {
            at += 1;
        }
        // schema.table: the table is the part after the last dot.
        while self.words.get(at + 1).map(String::as_str) == Some(".") {
            at += 2;
        }
        let name = self.words.get(at)?;
        Some(match name.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"')?.replace("\"\"", "\""),
            None => name.to_lowercase(),
        })
    }

    /// Whether a failure of this statement can leave an `INVALID` index
    /// behind (PostgreSQL keeps the half-built index of a failed concurrent
    /// build, to be dropped by hand).
    pub fn builds_index_concurrently(&self) -> bool {
        matches!(
            self.refused_in_transaction(),
            Some("CREATE INDEX CONCURRENTLY" | "REINDEX CONCURRENTLY")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(texts("select 1; select 2;"), ["select 1", "select 2"]);
        assert_eq!(
            texts("select ';'; select \";\""),
            ["select ';'", "select \";\""]
        );
        assert_eq!(texts("select 'it''s;'"), ["select 'it''s;'"]);
        assert_eq!(
            texts("select E'\\';'; select 2"),
            ["select E'\\';'", "select 2"]
        );
        // standard_conforming_strings: a plain backslash is no escape.
        assert_eq!(texts("select '\\'; select 2"), ["select '\\'", "select 2"]);
        assert_eq!(texts("select U&'a;'"), ["select U&'a;'"]);
        assert_eq!(
            texts("select $$a;b$$; select $x$ $$; $x$"),
            ["select $$a;b$$", "select $x$ $$; $x$"]
        );
        assert_eq!(
            texts("select $1; select a$b$; c"),
            ["select $1", "select a$b$", "c"]
        );
        assert_eq!(
            texts("-- a; b\nselect 1 /* x; /* y; */ z; */ ;"),
            ["select 1"]
        );
        assert_eq!(texts(";;  ;\n-- only\n"), Vec::<&str>::new());
        assert_eq!(texts("select (1;2); x"), ["select (1;2)", "x"]);
        assert_eq!(texts("select 1e'x;'; y"), ["select 1e'x;'", "y"]);
    }

    #[test]
    fn standard_strings_off_makes_backslash_escape_from_the_next_statement() {
        let sql = "SET standard_conforming_strings = off;\nselect '\\';';\nselect 2";
        assert_eq!(
            texts(sql),
            [
                "SET standard_conforming_strings = off",
                "select '\\';'",
                "select 2"
            ]
        );
    }

    #[test]
    fn begin_atomic_bodies_stay_whole() {
        let sql = "CREATE OR REPLACE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END;\n  SELECT 2;\nEND;\nSELECT f(1);";
        let s = split(sql);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].sql, "SELECT f(1)");
        assert_eq!(s[1].line, 6);
        assert_eq!(texts("BEGIN; SELECT 1; END;"), ["BEGIN", "SELECT 1", "END"]);
    }

    #[test]
    fn lines_are_those_of_the_first_token() {
        let s = split("\n\n-- c\n  select 1;\n\n select\n 2");
        assert_eq!((s[0].line, s[1].line), (4, 6));
    }

    #[test]
    fn classifies_what_cannot_run_in_a_transaction() {
        let kind = |sql: &str| split(sql)[0].refused_in_transaction();
        assert_eq!(
            kind("create unique index concurrently i on t(a)"),
            Some("CREATE INDEX CONCURRENTLY")
        );
        assert_eq!(kind("CREATE INDEX i ON t(a)"), None);
        assert_eq!(
            kind("drop index concurrently if exists i"),
            Some("DROP INDEX CONCURRENTLY")
        );
        assert_eq!(
            kind("reindex (verbose) table concurrently t"),
            Some("REINDEX CONCURRENTLY")
        );
        assert_eq!(kind("reindex table t"), None);
        assert_eq!(
            kind("reindex schema s"),
            Some("REINDEX SCHEMA/DATABASE/SYSTEM")
        );
        assert_eq!(kind("vacuum analyze t"), Some("VACUUM"));
        assert_eq!(kind("analyze t"), None);
        assert_eq!(kind("cluster verbose"), Some("CLUSTER"));
        assert_eq!(kind("cluster t using i"), None);
        assert_eq!(kind("alter type e add value 'x'"), None);
        assert_eq!(
            kind("alter system set work_mem = '1MB'"),
            Some("ALTER SYSTEM")
        );
        assert_eq!(
            kind("create subscription s connection 'c' publication p with (create_slot = false)"),
            None
        );
        assert_eq!(
            kind("create subscription s connection 'c' publication p"),
            Some("CREATE SUBSCRIPTION")
        );
        assert_eq!(
            kind("alter table t detach partition p concurrently"),
            Some("ALTER TABLE DETACH PARTITION CONCURRENTLY")
        );
        assert_eq!(
            kind("create function f() returns int as $$ vacuum $$ language sql"),
            None
        );
    }

    #[test]
    fn mode_from_marker_or_statements() {
        let m = |sql: &str| mode(sql, &split(sql));
        assert_eq!(m("create table t(a int);"), Mode::Transaction);
        assert_eq!(
            m("-- miglock:no-transaction\ncreate table t(a int);"),
            Mode::NoTransaction {
                reason: Reason::Marker,
                mixed: false
            }
        );
        assert!(!m("-- refinery:noTransaction\nselect 1").transactional());
        assert_eq!(
            m("create index concurrently i on t(a);"),
            Mode::NoTransaction {
                reason: Reason::Statement("CREATE INDEX CONCURRENTLY"),
                mixed: false
            }
        );
        assert_eq!(
            m("create table t(a int);\ncreate index concurrently i on t(a);"),
            Mode::NoTransaction {
                reason: Reason::Statement("CREATE INDEX CONCURRENTLY"),
                mixed: true
            }
        );
        assert_eq!(
            Reason::Statement("CREATE INDEX CONCURRENTLY").to_string(),
            "create_index_concurrently"
        );
    }

    #[test]
    fn transaction_control_is_refused_without_the_marker() {
        let r = |sql: &str| {
            let s = split(sql);
            refusals(&mode(sql, &s), &s)
        };
        let found = r("create table t(a int);\nCOMMIT;\n");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].kind, found[0].line), ("transaction_control", 2));
        assert!(r("-- miglock:no-transaction\nBEGIN; select 1; COMMIT;").is_empty());
        let open = r("-- miglock:no-transaction\nselect 1;\nBEGIN;\nselect 2;");
        assert_eq!((open[0].kind, open[0].line), ("transaction_control", 3));
        assert!(r("do $$ begin commit; end $$;").is_empty());
        let sets = |sql: &str| split(sql)[0].sets_standard_strings();
        assert_eq!(sets("SET standard_conforming_strings=off"), Some(false));
        assert_eq!(
            sets("set session standard_conforming_strings to 'on'"),
            Some(true)
        );
        assert_eq!(
            sets("SET standard_conforming_strings = off -- legacy"),
            Some(false)
        );
        assert_eq!(sets("SET search_path = x"), None);
        let table = |sql: &str| split(sql)[0].indexed_table();
        assert_eq!(
            table("create index concurrently on t (a)").as_deref(),
            Some("t")
        );
        assert_eq!(
            table("CREATE INDEX CONCURRENTLY i ON ONLY app.\"My T\" (a)").as_deref(),
            Some("My T")
        );
        assert_eq!(table("create index i on t (a)"), None);
        let chained = r("-- miglock:no-transaction\nBEGIN;\nselect 1;\nCOMMIT AND CHAIN;");
        assert_eq!(
            (chained[0].kind, chained[0].line),
            ("transaction_control", 4)
        );
        assert!(r("-- miglock:no-transaction\nBEGIN;\nCOMMIT AND NO CHAIN;").is_empty());
        assert!(r("create procedure p() begin atomic select 1; end;").is_empty());
        assert_eq!(r("copy t from stdin;\n1\n\\.\n")[0].kind, "unsupported");
        assert!(r("copy t from '/tmp/x';").is_empty());
    }
}
