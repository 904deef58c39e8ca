//! The scanner: a migration file cut into its top-level statements, as
//! PostgreSQL's own tools cut it.
//!
//! The split follows the server's lexer (`scan.l`) for what is a string, a
//! quoted identifier, a dollar quote or a comment, and psql's (`psqlscan.l`)
//! for which top-level `;` ends a statement: psql is what people test their
//! files with, and a file that psql runs statement by statement must run the
//! same way here. Hand-written rather than `pg_query` (libpg_query): that
//! needs libclang and a C build, and adds megabytes to the binary, for a
//! question a lexer answers.

use super::psql;

/// One top-level statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From its first token to the end of its last (without the `;`).
    pub sql: &'a str,
    /// Where `sql` starts in the file's text, in bytes.
    pub start: usize,
    /// The line of the file its first token is on, from 1.
    pub line: usize,
    /// Ended by a top-level `;` or by a psql meta-command after it (else
    /// by the end of the text: a reader that has more text to come must
    /// scan it again with that). A meta-command: ended by its end of line.
    pub terminated: bool,
    /// A psql meta-command (`\set x 1`, `\i file`, `\;`), which psql runs
    /// itself and PostgreSQL could not: from its backslash to the end of
    /// its line (see [`super::psql`]); no words.
    pub meta: bool,
    /// Its leading words (up to [`WORDS`], or [`Scanner::keep_words`]),
    /// upper-cased; other tokens as
    /// one-character marks (`(`, `)`, `,`, `=`), strings and quoted
    /// as `'`, quoted identifiers as written (with their quotes). What the
    /// classifier reads.
    pub(super) words: Vec<String>,
}

/// How many leading tokens of a statement are kept to classify it.
const WORDS: usize = 48;

/// Splits `sql` into its statements, as psql sends them. Empty statements
/// (`;;`, a file of comments) are dropped: the server ignores them too.
#[cfg(any(test, feature = "testing"))]
pub fn split(sql: &str) -> Vec<Statement<'_>> {
    statements(sql).collect()
}

/// The statements of `sql` one at a time, so a reader that keeps only what
/// it needs of each never holds them all.
pub fn statements(sql: &str) -> Scanner<'_> {
    Scanner::new(sql)
}

pub struct Scanner<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    /// `standard_conforming_strings`: on by default since PostgreSQL 9.1;
    /// with it off, `\` escapes in plain `'…'` strings too. psql follows the
    /// server's value after each statement, so a file that turns it off
    /// is lexed that way from the next statement on.
    standard_strings: bool,
    /// Just past the last top-level `;`: where scanning can start afresh.
    clean: Clean,
    /// How many words of each statement are kept.
    keep: usize,
    /// The first line whose comment opens another tool's Down section.
    down: Option<(usize, &'static str)>,
    /// Whether the text starts a line, and is the whole of the rest of the
    /// file (a reader in chunks says otherwise: see [`Scanner::resumed`]).
    starts_line: bool,
    whole: bool,
}

/// A place in the text where no statement, string or comment is open: just
/// past a top-level `;` (or the start). A reader of a file in chunks
/// resumes there with the next chunk appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clean {
    /// In bytes, in the text scanned.
    pub pos: usize,
    /// The line `pos` is on, from 1.
    pub line: usize,
    /// `standard_conforming_strings` from there on.
    pub standard_strings: bool,
}

impl Default for Clean {
    fn default() -> Clean {
        Clean {
            pos: 0,
            line: 1,
            standard_strings: true,
        }
    }
}

/// The statement being read.
#[derive(Default)]
struct Current {
    keep: usize,
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
        if self.words.len() < self.keep {
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
        Scanner::continuing(sql, 1, true)
    }

    /// Scans `sql`, the text that follows a clean place (see [`Clean`])
    /// on `line`, with `standard_strings` as the text before left it.
    pub fn continuing(sql: &'a str, line: usize, standard_strings: bool) -> Scanner<'a> {
        Scanner {
            sql,
            bytes: sql.as_bytes(),
            pos: 0,
            line,
            standard_strings,
            clean: Clean {
                pos: 0,
                line,
                standard_strings,
            },
            keep: WORDS,
            down: None,
            starts_line: true,
            whole: true,
        }
    }

    /// For a reader in chunks: whether this text starts a line of the file
    /// (it resumes just past a `;`, often mid-line), and whether it runs to
    /// the file's end (a comment at its end may be cut off).
    pub fn resumed(self, starts_line: bool, whole: bool) -> Scanner<'a> {
        Scanner {
            starts_line,
            whole,
            ..self
        }
    }

    /// Where the first Down section of goose or dbmate starts, if a
    /// comment scanned so far opens one (see [`super::markers`]).
    pub fn down_section(&self) -> Option<(usize, &'static str)> {
        self.down
    }

    /// Keeps `n` words of each statement instead of [`WORDS`] (what
    /// statement an error names is found among more than its first words).
    pub fn keep_words(self, n: usize) -> Scanner<'a> {
        Scanner { keep: n, ..self }
    }

    /// Records another tool's Down section if the `--` comment at `pos`,
    /// ending at `end`, opens one and is alone on its line.
    fn down_marker(&mut self, end: usize) {
        let before = &self.bytes[..self.pos];
        let alone = match before.iter().rposition(|b| matches!(b, b'\n' | b'\r')) {
            Some(at) => before[at + 1..].iter().all(u8::is_ascii_whitespace),
            None => self.starts_line && before.iter().all(u8::is_ascii_whitespace),
        };
        if alone {
            let comment = &self.sql[self.pos..end];
            self.down = super::markers::down_marker(comment).map(|t| (self.line, t));
        }
    }

    /// The last clean place scanned so far.
    pub fn clean(&self) -> Clean {
        self.clean
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

    /// Reads on to the end of the next statement.
    fn next_statement(&mut self) -> Option<Statement<'a>> {
        let keep = self.keep;
        let fresh = || Current {
            keep,
            ..Current::default()
        };
        let mut current = fresh();
        while let Some(b) = self.peek(0) {
            let (start, line) = (self.pos, self.line);
            match b {
                b';' if current.paren_depth == 0 && current.begin_depth == 0 => {
                    self.pos += 1;
                    let statement = self.finish(current, true);
                    self.mark_clean();
                    if statement.is_some() {
                        return statement;
                    }
                    current = fresh();
                }
                b'-' if self.peek(1) == Some(b'-') => {
                    let end = self.bytes[self.pos..]
                        .iter()
                        .position(|b| *b == b'\n' || *b == b'\r')
                        .map_or(self.bytes.len(), |n| self.pos + n);
                    if self.down.is_none() && (end < self.bytes.len() || self.whole) {
                        self.down_marker(end);
                    }
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
                // PostgreSQL's lexer has no use for a backslash outside
                // quotes: it is psql's, a meta-command. That ends the
                // statement before it (psql sends it there for `\g` and
                // its kin; for any other the file is refused anyway, so the
                // split need not follow psql's query buffer across it), and
                // ends itself at the end of its line, not at a `;`.
                b'\\' if current.start.is_some() => {
                    let statement = self.finish(current, true);
                    self.mark_clean();
                    return statement;
                }
                b'\\' => return Some(self.meta_command()),
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
        self.finish(current, false)
    }

    /// Here no statement, string or comment is open.
    fn mark_clean(&mut self) {
        self.clean = Clean {
            pos: self.pos,
            line: self.line,
            standard_strings: self.standard_strings,
        };
    }

    /// The meta-command at `pos`, scanned past.
    fn meta_command(&mut self) -> Statement<'a> {
        let (start, line) = (self.pos, self.line);
        let extent = psql::extent(self.bytes, start);
        // Its arguments stay on its line: no newline to count.
        self.pos = extent.next;
        if extent.complete {
            self.mark_clean();
        }
        Statement {
            sql: &self.sql[start..extent.end],
            start,
            line,
            terminated: extent.complete,
            meta: true,
            words: Vec::new(),
        }
    }

    /// The statement read, unless it was empty (`;;`, only comments).
    fn finish(&mut self, done: Current, terminated: bool) -> Option<Statement<'a>> {
        let (start, line) = done.start?;
        let statement = Statement {
            sql: &self.sql[start..done.end],
            start,
            line,
            terminated,
            meta: false,
            words: done.words,
        };
        if let Some(on) = statement.sets_standard_strings() {
            self.standard_strings = on;
        }
        Some(statement)
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
impl<'a> Iterator for Scanner<'a> {
    type Item = Statement<'a>;

    fn next(&mut self) -> Option<Statement<'a>> {
        self.next_statement()
    }
}

impl Statement<'_> {
    pub(super) fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
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
}
