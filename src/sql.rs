//! Quoting for the few values miglock splices into SQL text.
//!
//! miglock talks to PostgreSQL with the simple query protocol only: it
//! saves the parse/bind round trips on every hot path and lets several
//! statements share one round trip. So values are quoted here instead of
//! being bound as parameters.

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
}
