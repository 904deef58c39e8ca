//! Connection strings, in both of libpq's forms: a URL
//! (`postgres://user@host/db?sslmode=verify-full`) and `key=value` pairs
//! (`host=db sslmode='verify-full'`).
//!
//! miglock handles some parameters itself (`sslmode`, `sslrootcert`: see
//! `tls`), so it takes them out before the rest reaches rust-postgres,
//! which would reject them.

use percent_encoding::percent_decode_str;

/// The connection string without the `taken` parameters, and their values
/// (the last one wins when one is given twice, as in libpq).
pub fn take_params(
    conninfo: &str,
    taken: &[&str],
) -> Result<(String, Vec<(String, String)>), String> {
    if let Some((head, query)) = url_parts(conninfo) {
        let Some(query) = query else {
            return Ok((conninfo.to_string(), Vec::new()));
        };
        let mut kept = Vec::new();
        let mut found = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                "a URL query parameter has no '=' (expected key=value)".to_string()
            })?;
            let key = decode(key)?;
            if taken.contains(&key.as_str()) {
                found.push((key, decode(value)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        return Ok((rest, found));
    }

    let pairs = key_value_pairs(conninfo).map_err(|e| e.to_string())?;
    let mut kept = Vec::new();
    let mut found = Vec::new();
    for (key, value) in pairs {
        if taken.contains(&key.as_str()) {
            found.push((key, value));
        } else {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), found))
}

/// Whether the connection string itself holds a password (not empty): in a
/// URL's user information (`user:secret@host`) or as a `password` (or
/// `sslpassword`) parameter (URL query or `key=value`). The password is
/// not returned.
/// A string too malformed to read counts when it names a password at all.
pub fn has_password(conninfo: &str) -> bool {
    if let Some(parts) = split_url(conninfo) {
        if parts
            .userinfo
            .and_then(|userinfo| userinfo.split_once(':'))
            .is_some_and(|(_, password)| !password.is_empty())
        {
            return true;
        }
    }
    match take_params(conninfo, &["password", "sslpassword"]) {
        Ok((_, found)) => found.iter().any(|(_, value)| !value.is_empty()),
        Err(_) => conninfo.to_ascii_lowercase().contains("password"),
    }
}

/// Whether a word that is not known to be a connection string may be one,
/// or hold a password: a URL, `password=…` in any case (`PGPASSWORD=…`),
/// or `user:password@host` without its scheme (a `:` before an `@`).
pub fn may_hold_a_password(text: &str) -> bool {
    text.contains("://")
        || text.to_ascii_lowercase().contains("password")
        || text
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The URL with each `@` of its query percent-encoded when its first `@`
/// is there (see [`query_at`]): rust-postgres then reads it as libpq does
/// (it decodes the query's values), where it would end the user
/// information at that `@`, taking the host, the path and the query up to
/// it (password and all) for a user name, and connect to whatever follows.
pub fn with_query_at_signs_encoded(conninfo: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let Some((scheme, rest)) = conninfo.split_once("://") else {
        return Cow::Borrowed(conninfo);
    };
    match query_at(rest) {
        Some(question) if scheme == "postgres" || scheme == "postgresql" => {
            let (head, query) = rest.split_at(question);
            Cow::Owned(format!("{scheme}://{head}{}", query.replace('@', "%40")))
        }
        _ => Cow::Borrowed(conninfo),
    }
}

/// Where the query starts (its `?`) when the first `@` of `rest` (a URL
/// after its `scheme://`) is the query's, as libpq reads it: after the
/// path's `/`, a `?` and a `key=` (`host/db?user=admin@server&…`, the form
/// Azure's documentation gives). A password's raw `/` or `?` (`u:a/b@h`,
/// `u:a/b?c@h`) keeps its `@`: no `key=` comes before it.
fn query_at(rest: &str) -> Option<usize> {
    let at = rest.find('@')?;
    let slash = rest[..at].find('/')?;
    let question = slash + rest[slash..at].find('?')?;
    rest[question..at].contains('=').then_some(question)
}

/// A `postgres://` or `postgresql://` URL cut into its parts; `None` for a
/// `key=value` string. The only URL splitter: everything that reads a URL's
/// parts goes through it, so all agree with rust-postgres, which ends the
/// user information at the *first* `@` (a password's own `@` must be
/// percent-encoded), except where that `@` is the query's ([`query_at`]:
/// `ConnectTarget::resolve` encodes it before rust-postgres reads it).
pub struct UrlParts<'a> {
    pub scheme: &'a str,
    /// `user:password`, without the `@`.
    pub userinfo: Option<&'a str>,
    /// `host:port,host2` (may be empty).
    pub hosts: &'a str,
    /// The path and query: `/db?sslmode=require`.
    pub tail: &'a str,
}

impl<'a> UrlParts<'a> {
    /// The query, after `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.tail.split_once('?').map(|(_, query)| query)
    }
}

pub fn split_url(conninfo: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = conninfo.split_once("://")?;
    if scheme != "postgres" && scheme != "postgresql" {
        return None;
    }
    // A password may hold a raw '?' or '/': the host list starts after the
    // user information, unless its `@` is the query's.
    let (userinfo, after_user) = match rest.split_once('@') {
        Some((userinfo, after)) if query_at(rest).is_none() => (Some(userinfo), after),
        _ => (None, rest),
    };
    let end = after_user.find(['/', '?']).unwrap_or(after_user.len());
    Some(UrlParts {
        scheme,
        userinfo,
        hosts: &after_user[..end],
        tail: &after_user[end..],
    })
}

/// `(everything before '?', the query)` for a URL; `None` for a
/// `key=value` string.
fn url_parts(conninfo: &str) -> Option<(&str, Option<&str>)> {
    let parts = split_url(conninfo)?;
    Some(match parts.query() {
        Some(query) => (&conninfo[..conninfo.len() - query.len() - 1], Some(query)),
        None => (conninfo, None),
    })
}

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "a URL query parameter is not valid UTF-8 once decoded".to_string())
}

/// libpq's `key = value` syntax: whitespace between pairs and around `=`;
/// a value is either single-quoted (with `\'` and `\\`) or runs to the
/// next whitespace (with `\` escaping the next character).
fn key_value_pairs(text: &str) -> Result<Vec<(String, String)>, KeyValueError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(KeyValueError::MissingEquals(pairs.len() + 1));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(KeyValueError::Unterminated),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Why a string is not libpq's `key = value` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyValueError {
    /// No `=` after the nth word.
    MissingEquals(usize),
    /// A quoted value that never ends.
    Unterminated,
}

impl std::fmt::Display for KeyValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The word may be part of a password typed without quotes: it
            // is not repeated, only counted.
            KeyValueError::MissingEquals(n) => write!(
                f,
                "missing \"=\" after the {} word of the connection string (key=value pairs, values \
                 with spaces in single quotes)",
                ordinal(*n)
            ),
            KeyValueError::Unterminated => {
                f.write_str("unterminated quoted value in the connection string")
            }
        }
    }
}

/// Whether `text` reads as `key = value` pairs whose keys are words
/// (letters and `_`): rust-postgres's parser refuses any other by quoting
/// the text before its `=`, which may be a password. An unterminated quote
/// passes: the parser says just that, quoting nothing.
pub fn reads_as_key_value(text: &str) -> bool {
    match key_value_pairs(text) {
        Ok(pairs) => pairs.iter().all(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
        }),
        Err(KeyValueError::Unterminated) => true,
        Err(KeyValueError::MissingEquals(_)) => false,
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: &[&str] = &["sslmode", "sslrootcert"];

    #[test]
    fn url_parameters_are_taken_out_and_decoded() {
        let (rest, found) = take_params(
            "postgres://u:p@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            TLS,
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h/db?application_name=x");
        assert_eq!(
            found,
            [
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca.pem".to_string())
            ]
        );
        let (rest, found) = take_params("postgresql://h/db?sslmode=require", TLS).unwrap();
        assert_eq!((rest.as_str(), found.len()), ("postgresql://h/db", 1));
        let (rest, found) = take_params("postgres://h/db", TLS).unwrap();
        assert_eq!((rest.as_str(), found.len()), ("postgres://h/db", 0));
        let (rest, found) = take_params("postgres://u:pa?ss@h/db?sslmode=require", TLS).unwrap();
        assert_eq!((rest.as_str(), found.len()), ("postgres://u:pa?ss@h/db", 1));
    }

    #[test]
    fn key_value_strings_are_rewritten_without_the_taken_keys() {
        let (rest, found) = take_params(
            "host=db  port = 5433 password='it\\'s a secret' sslmode=verify-ca sslrootcert='/a b/ca.pem'",
            TLS,
        )
        .unwrap();
        assert_eq!(rest, "host='db' port='5433' password='it\\'s a secret'");
        assert_eq!(found[0], ("sslmode".to_string(), "verify-ca".to_string()));
        assert_eq!(
            found[1],
            ("sslrootcert".to_string(), "/a b/ca.pem".to_string())
        );
        // The rewritten string means the same to rust-postgres.
        let config: postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's a secret"[..]));
        assert_eq!(config.get_ports(), [5433]);
    }

    #[test]
    fn malformed_strings_are_refused_without_echoing_values() {
        for bad in [
            "host=db password='secretpw",
            "host db",
            "postgres://h/db?sslmode",
            "postgres://h/db?sslmode=%FF",
        ] {
            let err = take_params(bad, TLS).unwrap_err();
            assert!(!err.contains("secretpw"), "{bad}: {err}");
        }
    }

    #[test]
    fn passwords_are_found_in_every_place_a_connection_string_holds_them() {
        for with in [
            "postgres://u:s3cret@h/db",
            "postgresql://u:s3cret@h1,h2:5433/db?sslmode=require",
            "postgres://u:pa?ss@h/db",
            "postgres://u@h/db?password=s3cret",
            "postgres://h/db?application_name=x&password=s%20cret",
            "host=h user=u password=s3cret",
            "host=h password = 'it\\'s'",
            "host=h password='unterminated",
            "postgres://u@h/db?sslpassword=s3cret",
            // The query's own '@' before it: libpq's reading.
            "postgres://h/db?user=admin@srv&password=s3cret",
            "postgres://h:5432/db?user=admin@srv&password=s3cret",
        ] {
            assert!(has_password(with), "{with}");
        }
        for without in [
            "postgres://u@h/db",
            "postgres://u:@h/db",
            "postgres://h/db",
            "postgres://h:5432/db?user=u",
            "postgres://u@h/db?password=",
            "host=h user=u",
            "host=h password=''",
            "",
        ] {
            assert!(!has_password(without), "{without}");
        }
    }
}
