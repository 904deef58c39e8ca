//! PostgreSQL errors as messages a person can act on: message, SQLSTATE,
//! detail, hint and context, and the line of the file an error points at.

use std::fmt;

use anyhow::anyhow;
use postgres::error::{DbError, ErrorPosition};

use crate::error::{ErrorDetail, Failure};

/// The error with its causes, one line, as tokio-postgres words them
/// (e.g. "error connecting to server: Connection refused (os error 111)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A PostgreSQL error as a person reads it: message, SQLSTATE, then
/// detail, hint and context lines. Other errors keep their chain.
pub fn readable(e: &postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) => anyhow!(text(db)),
        None => anyhow!(error_chain(e)),
    }
}

/// A failed statement as the run's failure (exit 1), with its SQLSTATE in
/// the JSON result.
pub fn failed(e: &postgres::Error, context: impl fmt::Display + Send + Sync + 'static) -> Failure {
    Failure::failed(readable(e).context(context)).with_detail(ErrorDetail {
        sqlstate: e.code().map(|c| c.code().to_string()),
        file: None,
        line: None,
    })
}

/// Whether the server ended the session with this error (see
/// [`crate::error::ends_the_session`]); the client may not have noticed the
/// socket close yet.
pub fn session_ended(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| crate::error::ends_the_session(code.code()))
}

pub fn text(db: &DbError) -> String {
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("\n  DETAIL: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("\n  HINT: {hint}"));
    }
    if let Some(context) = db.where_() {
        text.push_str(&format!("\n  CONTEXT: {context}"));
    }
    text
}

/// The SQLSTATE and, when the error points into `sql` (sent after
/// `prefix_chars` other characters), the line of `sql` it points at.
pub fn locate(db: &DbError, prefix_chars: usize, sql: &str) -> ErrorDetail {
    let line = match db.position() {
        Some(ErrorPosition::Original(position)) => line_at(sql, prefix_chars, *position as usize),
        _ => None,
    };
    ErrorDetail {
        sqlstate: Some(db.code().code().to_string()),
        file: None,
        line,
    }
}

/// PostgreSQL counts an error position in characters, from 1, in the whole
/// query string; `prefix_chars` characters were sent before `sql`.
fn line_at(sql: &str, prefix_chars: usize, position: usize) -> Option<usize> {
    let index = position.checked_sub(1 + prefix_chars)?;
    let mut newlines = 0;
    for (i, c) in sql.chars().enumerate() {
        if i == index {
            return Some(newlines + 1);
        }
        newlines += usize::from(c == '\n');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_counted_in_characters_after_the_prefix() {
        let sql = "é;\nselect x\nfrom y;";
        // 1-based, after the 7 characters of "BEGIN;\n": the 's' of select.
        assert_eq!(line_at(sql, 7, 7 + 4), Some(2));
        assert_eq!(line_at(sql, 7, 8), Some(1));
        assert_eq!(line_at(sql, 7, 7 + 13), Some(3));
        // Pointing into the prefix or past the file (the history insert).
        assert_eq!(line_at(sql, 7, 3), None);
        assert_eq!(line_at(sql, 7, 7 + 200), None);
    }
}
