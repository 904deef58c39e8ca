//! The annotations other tools read in a file, read as those tools read
//! them, line by line: goose's `-- +goose Up`, `Down`, `StatementBegin`,
//! `StatementEnd` and `NO TRANSACTION`; dbmate's `-- migrate:up` and
//! `-- migrate:down` with `transaction:false`; sqlx's `-- no-transaction`
//! as the file's first bytes.
//!
//! What they give ([`Sections`]) is used twice: when the folder is read
//! (every problem up front) and when the file is summarized or run, where
//! every line outside the Up section becomes an empty line ([`up_only`],
//! [`UpOnly`]): PostgreSQL never sees a Down section, and the lines of an
//! error still are the file's.

use std::io::{self, BufRead, Read};

use std::sync::Arc;

use super::placeholders::Placeholders;
use super::Layout;
use crate::migrations::names::find_short;
use crate::migrations::split::NO_TRANSACTION_MARK;

/// The Up section of a file, and whether it runs without a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sections {
    /// The lines (1-based) the Up section spans: `first..end`. `None` for a
    /// layout without sections (the whole file).
    pub up: Option<(u64, u64)>,
    /// The file asks to run without a transaction (goose's
    /// `NO TRANSACTION`, dbmate's `transaction:false`, sqlx's
    /// `-- no-transaction`).
    pub no_transaction: bool,
    /// The lines of its Down section, when it has one (goose, dbmate), and
    /// whether that runs without a transaction.
    pub down: Option<(u64, u64)>,
    pub down_no_transaction: bool,
}

impl Sections {
    /// The file's Down section, as the part of it to run; `None` without one.
    pub fn down_part(self) -> Option<Sections> {
        self.down.map(|down| Sections {
            up: Some(down),
            no_transaction: self.down_no_transaction,
            down: None,
            down_no_transaction: false,
        })
    }
}

/// Which tool's `Up` annotation the head of a file holds, if any: a
/// layout miglock reads, or the name of a tool it does not.
pub fn tool_of(head: &str) -> Option<Result<Layout, &'static str>> {
    for line in head.lines() {
        if goose_annotation(line).is_some_and(|a| a.eq_ignore_ascii_case("up")) {
            return Some(Ok(Layout::Goose));
        }
        if dbmate_directive(line).is_some_and(|(up, _)| up) {
            return Some(Ok(Layout::Dbmate));
        }
        let comment = line.trim().strip_prefix("--").map(str::trim);
        if comment.is_some_and(|c| c.starts_with("+migrate ")) {
            return Some(Err("sql-migrate"));
        }
        if comment.is_some_and(|c| c.eq_ignore_ascii_case("up migration")) {
            return Some(Err("node-pg-migrate"));
        }
    }
    None
}

/// goose's test for an annotation line (`--` first once trimmed, `+goose`
/// somewhere), and the annotation: the line without its `--`s and its
/// first `+goose`, trimmed.
fn goose_annotation(line: &str) -> Option<std::borrow::Cow<'_, str>> {
    let rest = line.trim().strip_prefix("--")?;
    // The line of nearly every file, `-- +goose Up`: one `--`, then
    // `+goose`, read without a copy and by bytes (a no-op run reads every
    // line of every file, and a string pattern's searcher costs more than
    // the line: see `find_short`).
    if let Some(annotation) = rest.trim_start().strip_prefix("+goose") {
        if find_short(annotation, "--").is_none() {
            return Some(annotation.trim().into());
        }
    }
    find_short(line, "+goose")?;
    let text = line.replace("--", "");
    Some(text.replacen("+goose", "", 1).trim().to_string().into())
}

/// Whether a line of SQL ends its statement as goose tells it: the last
/// word before a word that starts with `--` ends with `;`.
fn ends_statement(line: &str) -> bool {
    // What goose's words give, without splitting the line into them: the
    // line up to the first `--` that starts a word, its end trimmed.
    let mut code = line;
    let mut from = 0;
    while let Some(at) = find_short(&line[from..], "--") {
        let at = from + at;
        if line[..at]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace)
        {
            code = &line[..at];
            break;
        }
        from = at + 1;
    }
    code.trim_end().ends_with(';')
}

/// `text` in ASCII lower case in `buffer`, or `""` when it is longer (no
/// word goose knows is).
fn lower_short<'a>(text: &str, buffer: &'a mut [u8; 16]) -> &'a str {
    let Some(into) = buffer.get_mut(..text.len()) else {
        return "";
    };
    into.copy_from_slice(text.as_bytes());
    into.make_ascii_lowercase();
    // ASCII case changes keep UTF-8 valid.
    std::str::from_utf8(into).unwrap_or_default()
}

/// dbmate's directive at the start of a line: `--` (no indent), spaces,
/// `migrate:up` or `migrate:down`, then the end or spaces and options.
/// `(is_up, options)`.
fn dbmate_directive(line: &str) -> Option<(bool, &str)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let rest = line.strip_prefix("--")?.trim_start();
    let rest = rest.strip_prefix("migrate:")?;
    let (up, after) = if let Some(after) = rest.strip_prefix("up") {
        (true, after)
    } else {
        (false, rest.strip_prefix("down")?)
    };
    if !after.is_empty() && !after.starts_with(char::is_whitespace) {
        return None;
    }
    Some((up, after.trim()))
}

/// Whether a dbmate directive's options (`key:value` words) say
/// `transaction:false`.
fn dbmate_no_transaction(options: &str) -> Result<bool, String> {
    let mut off = false;
    for option in options.split_whitespace() {
        match option.split_once(':') {
            Some((key, value)) if !value.contains(':') => {
                off |= key == "transaction" && value == "false";
            }
            _ => return Err(format!("invalid dbmate option {option:?} (key:value)")),
        }
    }
    Ok(off)
}

/// Reads a file's lines in its layout's way. Fed every line in order
/// ([`Scanner::line`]), then [`Scanner::finish`].
pub struct Scanner {
    layout: Layout,
    line: u64,
    up_at: Option<u64>,
    down_at: Option<u64>,
    in_statement: Option<u64>,
    /// goose: the line of a statement not ended with `;` yet.
    unended: Option<u64>,
    no_transaction: bool,
    down_no_transaction: bool,
    error: Option<String>,
}

impl Scanner {
    pub fn new(layout: Layout) -> Scanner {
        Scanner {
            layout,
            line: 0,
            up_at: None,
            down_at: None,
            in_statement: None,
            unended: None,
            no_transaction: false,
            down_no_transaction: false,
            error: None,
        }
    }

    /// sqlx: whether the file's first bytes (BOM and all) ask for no
    /// transaction.
    pub fn first_bytes(&mut self, bytes: &[u8]) {
        if self.layout == Layout::Sqlx && bytes.starts_with(b"-- no-transaction") {
            self.no_transaction = true;
        }
        // goose reads a byte-order mark as the first line's start: SQL
        // before its Up annotation, which it refuses.
        if self.layout == Layout::Goose && bytes.starts_with("\u{feff}".as_bytes()) {
            self.error = Some(
                "line 1: starts with a byte-order mark, which goose reads as SQL before \
                 -- +goose Up: save the file without it"
                    .into(),
            );
        }
    }

    /// Whether this layout's annotations are lines of the file (goose's
    /// and dbmate's), given to [`Scanner::line`]; the others' are not.
    pub fn reads_lines(&self) -> bool {
        matches!(self.layout, Layout::Goose | Layout::Dbmate)
    }

    /// One line of the file, without its line end (a `\r` may be left).
    pub fn line(&mut self, line: &str) {
        self.line += 1;
        if self.error.is_some() {
            return;
        }
        let result = match self.layout {
            Layout::Goose => self.goose(line),
            Layout::Dbmate => self.dbmate(line),
            _ => Ok(()),
        };
        if let Err(why) = result {
            self.error = Some(format!("line {}: {why}", self.line));
        }
    }

    fn goose(&mut self, line: &str) -> Result<(), String> {
        let Some(annotation) = goose_annotation(line) else {
            let start = line.trim_start();
            let code = !start.is_empty() && !start.starts_with("--");
            if code && self.up_at.is_none() {
                return Err("SQL before -- +goose Up (goose wants the Up annotation first)".into());
            }
            // goose ends a statement on a line whose last word before a
            // `--` comment ends with `;` (StatementBegin/End aside).
            if code && self.in_statement.is_none() {
                let started = self.unended.unwrap_or(self.line);
                self.unended = (!ends_statement(line)).then_some(started);
            }
            return Ok(());
        };
        if line.starts_with([' ', '\t']) {
            return Err("a goose annotation must start its line (no indent)".into());
        }
        // Lower-cased on the stack: the words goose knows are short, and
        // a copy of each annotation line cost a no-op run 800 allocations.
        let mut buffer = [0u8; 16];
        let word = lower_short(&annotation, &mut buffer);
        match word {
            "up" if self.up_at.is_some() => Err("a second -- +goose Up".into()),
            "up" => {
                self.up_at = Some(self.line);
                Ok(())
            }
            "down" if self.up_at.is_none() => Err("-- +goose Down before -- +goose Up".into()),
            "down" if self.down_at.is_some() => Err("a second -- +goose Down".into()),
            "down" if self.in_statement.is_some() => {
                Err("-- +goose Down inside StatementBegin/StatementEnd".into())
            }
            "down" if self.unended.is_some() => Err(format!(
                "the statement of line {} does not end with ; before -- +goose Down (goose: \
                 missing semicolon?)",
                self.unended.unwrap_or_default()
            )),
            "down" => {
                self.down_at = Some(self.line);
                Ok(())
            }
            "statementbegin" if self.in_statement.is_some() => {
                Err("StatementBegin inside another StatementBegin".into())
            }
            "statementbegin" if self.up_at.is_none() => {
                Err("StatementBegin before -- +goose Up".into())
            }
            "statementbegin" => {
                self.in_statement = Some(self.line);
                Ok(())
            }
            "statementend" if self.in_statement.is_none() => {
                Err("StatementEnd without StatementBegin".into())
            }
            "statementend" => {
                self.in_statement = None;
                self.unended = None;
                Ok(())
            }
            "no transaction" => {
                self.no_transaction = true;
                Ok(())
            }
            "envsub on" | "envsub off" => Err(
                "-- +goose ENVSUB is not supported: miglock does not substitute environment \
                 variables (write the values in the file)"
                    .into(),
            ),
            _ => Err(format!("unknown goose annotation {annotation:?}")),
        }
    }

    fn dbmate(&mut self, line: &str) -> Result<(), String> {
        match dbmate_directive(line) {
            Some((true, _)) if self.up_at.is_some() => Err(
                "a second -- migrate:up: miglock runs one section per file (dbmate itself cannot \
                 record a second section's version on PostgreSQL); split it into two files"
                    .into(),
            ),
            Some((true, options)) => {
                self.up_at = Some(self.line);
                self.no_transaction = dbmate_no_transaction(options)?;
                Ok(())
            }
            Some((false, _)) if self.up_at.is_none() => {
                Err("-- migrate:down before -- migrate:up".into())
            }
            Some((false, _)) if self.down_at.is_some() => Err("a second -- migrate:down".into()),
            Some((false, options)) => {
                self.down_at = Some(self.line);
                self.down_no_transaction = dbmate_no_transaction(options)?;
                Ok(())
            }
            None => {
                let code = !line.trim().is_empty() && !line.trim_start().starts_with("--");
                if code && self.up_at.is_none() {
                    return Err(
                        "SQL before -- migrate:up (dbmate wants the up directive first)".into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// The sections, or what is wrong with the file as its tool reads it.
    pub fn finish(self) -> Result<Sections, String> {
        if let Some(why) = self.error {
            return Err(why);
        }
        let end = self.line + 1;
        let mut down = None;
        let up = match self.layout {
            Layout::Goose => {
                let Some(up) = self.up_at else {
                    return Err("has no -- +goose Up annotation (goose needs one)".into());
                };
                if let Some(begin) = self.in_statement {
                    return Err(format!("line {begin}: StatementBegin without StatementEnd"));
                }
                if let Some(line) = self.unended {
                    return Err(format!(
                        "line {line}: the statement does not end with ; (goose: missing \
                         semicolon?)"
                    ));
                }
                down = self.down_at.map(|at| (at + 1, end));
                Some((up + 1, self.down_at.unwrap_or(end)))
            }
            Layout::Dbmate => {
                let Some(up) = self.up_at else {
                    return Err("has no -- migrate:up directive (dbmate needs one)".into());
                };
                let Some(down_at) = self.down_at else {
                    return Err("has no -- migrate:down directive (dbmate needs one, even \
                                empty)"
                        .into());
                };
                // Its directive is a comment: left out, as the splitter
                // would take it for a Down section miglock must not run.
                down = Some((down_at + 1, end));
                Some((up, down_at))
            }
            _ => None,
        };
        Ok(Sections {
            up,
            no_transaction: self.no_transaction,
            down,
            // goose's NO TRANSACTION is the whole file's.
            down_no_transaction: self.down_no_transaction
                || (self.layout == Layout::Goose && self.no_transaction),
        })
    }
}

/// The sections of a whole text (its BOM included, as read from disk).
#[cfg(test)]
pub fn scan(layout: Layout, text: &str) -> Result<Sections, String> {
    let mut scanner = Scanner::new(layout);
    scanner.first_bytes(text.as_bytes());
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for line in text.split_inclusive('\n') {
        scanner.line(line.strip_suffix('\n').unwrap_or(line));
    }
    scanner.finish()
}

/// What `sections` keeps of `text` (without a BOM): each line outside the
/// Up section is made empty (its line end kept), and, for a file that
/// runs without a transaction, the first line is miglock's own marker
/// (a comment in every layout: annotations and directives come first).
pub fn up_only(text: &str, sections: Sections) -> String {
    if sections == Sections::default() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        out.push_str(&kept(line, i as u64 + 1, sections));
    }
    out
}

/// One line of [`up_only`].
fn kept(line: &str, number: u64, sections: Sections) -> std::borrow::Cow<'_, str> {
    let end = if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    };
    let kept: std::borrow::Cow<'_, str> = match sections.up {
        Some((first, stop)) if number < first || number >= stop => end.into(),
        _ => line.into(),
    };
    // miglock's marker ahead of the first line, which stays: a comment in
    // the tools that annotate (their annotations come first), SQL in a
    // Flyway script its configuration runs without a transaction.
    if number == 1 && sections.no_transaction {
        return format!("{NO_TRANSACTION_MARK} {kept}").into();
    }
    kept
}

/// [`up_only`] as a stream: a file is summarized without being held.
pub struct UpOnly<R> {
    reader: io::BufReader<R>,
    sections: Sections,
    /// Flyway's placeholders' values, and the file's name.
    values: Option<(Arc<Placeholders>, String)>,
    number: u64,
    line: Vec<u8>,
    out: Vec<u8>,
    at: usize,
}

impl<R: Read> UpOnly<R> {
    pub fn new(reader: R, sections: Sections) -> UpOnly<R> {
        UpOnly {
            reader: io::BufReader::new(reader),
            sections,
            values: None,
            number: 0,
            line: Vec::new(),
            out: Vec::new(),
            at: 0,
        }
    }
}

impl<R> UpOnly<R> {
    /// Each line kept with its placeholders replaced too.
    pub fn replacing(mut self, values: Option<(Arc<Placeholders>, String)>) -> UpOnly<R> {
        self.values = values;
        self
    }
}

impl<R: Read> Read for UpOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() {
            self.line.clear();
            if self.reader.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(0);
            }
            self.number += 1;
            if self.number == 1 && self.line.starts_with("\u{feff}".as_bytes()) {
                self.line.drain(.."\u{feff}".len());
            }
            self.out.clear();
            self.at = 0;
            // A line cut inside a character is the UTF-8 check's to refuse.
            match std::str::from_utf8(&self.line) {
                Ok(text) => {
                    let kept = kept(text, self.number, self.sections);
                    match &self.values {
                        Some((values, file_name)) => {
                            let replaced = values
                                .replace(&kept, file_name)
                                .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
                            self.out.extend_from_slice(replaced.as_bytes());
                        }
                        None => self.out.extend_from_slice(kept.as_bytes()),
                    }
                }
                Err(_) => self.out.extend_from_slice(&self.line),
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
