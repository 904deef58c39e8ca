//! A connection string as it may be shown: the same text with every
//! secret replaced by `…`, for pointing at a bad line of a targets file.
//!
//! What is shown is chosen, not what is hidden: a value appears only for a
//! parameter that never holds a secret (`host`, `dbname`, `sslmode`…), and
//! only when it is plain text (letters, digits, `._-/:,[]+~%`), so a
//! misspelt `pasword=`, an escaped space or a stray quote hides the value
//! rather than shows it. A URL's password goes, and its whole user
//! information when the URL is malformed around it (a second `@`, a space
//! before the `@`, a port that is not a number). Where the text stops
//! making sense (a quote never closed, a word without `=`), nothing from
//! there on is shown.

use percent_encoding::percent_decode_str;

/// What replaces a secret, or text that may hold one.
pub const HIDDEN: &str = "…";

/// Parameters whose values are never secrets.
const SHOWN_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "schema",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "target_session_attrs",
    "load_balance_hosts",
    "channel_binding",
    "tcp_user_timeout",
];

/// A line longer than this is cut: it is shown to be recognised, not read.
const MAX_SHOWN: usize = 300;

/// `line` with every secret replaced by `…`: a URL (optionally followed by
/// `schema=NAME` words, as in a targets file) or `key=value` pairs.
pub fn redact(line: &str) -> String {
    // An `@` of the query is the query's, as the connection reads it.
    let line = super::conninfo::with_query_at_signs_encoded(line.trim());
    let line = line.as_ref();
    let first_word = line.split_whitespace().next().unwrap_or_default();
    let shown = if first_word.contains("://") {
        url(line)
    } else {
        key_values(line)
    };
    match shown.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}{HIDDEN}", &shown[..cut]),
        None => shown,
    }
}

/// Whether nothing but `…` (and spaces) is left to show.
pub fn shows_nothing(redacted: &str) -> bool {
    redacted
        .split_whitespace()
        .all(|word| word.chars().all(|c| HIDDEN.contains(c)))
}

fn plain(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || "._-/:,[]+~%".contains(c))
}

/// `text` when it is plain, else `…`.
fn plain_or_hidden(text: &str) -> &str {
    if plain(text) {
        text
    } else {
        HIDDEN
    }
}

fn shown_key(key: &str) -> bool {
    SHOWN_KEYS.contains(&key)
}

fn url(line: &str) -> String {
    let (scheme, after) = line.split_once("://").unwrap_or_default();
    if !scheme
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return HIDDEN.to_string();
    }
    let mut out = format!("{scheme}://");
    // rust-postgres and libpq end the user information at the first '@';
    // a second one, or a space before one, means a password's own '@' or
    // space left as it is, and then every byte up to the last '@' may be
    // part of it.
    let ats: Vec<usize> = after.match_indices('@').map(|(i, _)| i).collect();
    let rest = match (ats.first(), ats.last()) {
        (Some(&first), Some(&last)) => {
            let userinfo = &after[..first];
            let clean = ats.len() == 1 && !userinfo.contains(char::is_whitespace);
            match userinfo.split_once(':') {
                _ if !clean => out.push_str(HIDDEN),
                Some((user, _)) => {
                    out.push_str(plain_or_hidden(user));
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                None => out.push_str(plain_or_hidden(userinfo)),
            }
            out.push('@');
            &after[last + 1..]
        }
        _ => after,
    };
    let (address, words) = match rest.split_once(char::is_whitespace) {
        Some((address, words)) => (address, words),
        None => (rest, ""),
    };
    let end = address.find(['/', '?']).unwrap_or(address.len());
    let (hosts, tail) = address.split_at(end);
    // Without an '@', `user:password` would read as `host:port`: a port
    // that is not a number may be a password, and so may what follows it.
    if ats.is_empty() && !hosts.split(',').all(port_is_a_number) {
        out.push_str(HIDDEN);
        return out;
    }
    let hosts: Vec<String> = hosts.split(',').map(host).collect();
    out.push_str(&hosts.join(","));
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if let Some(database) = path.strip_prefix('/') {
        out.push('/');
        if !database.is_empty() {
            out.push_str(plain_or_hidden(database));
        }
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) => {
                    let name = percent_decode_str(key).decode_utf8_lossy();
                    let value = if shown_key(&name) {
                        plain_or_hidden(value)
                    } else {
                        HIDDEN
                    };
                    format!("{}={value}", plain_or_hidden(key))
                }
                None => HIDDEN.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    for word in words.split_whitespace() {
        out.push(' ');
        match word.strip_prefix("schema=") {
            Some(schema) => {
                out.push_str("schema=");
                out.push_str(plain_or_hidden(schema));
            }
            None => out.push_str(HIDDEN),
        }
    }
    out
}

/// The port of `host:port` (or `[v6]:port`), if any.
fn split_port(chunk: &str) -> (&str, Option<&str>) {
    if chunk.starts_with('[') {
        if let Some(close) = chunk.find(']') {
            let (host, after) = chunk.split_at(close + 1);
            return (host, after.strip_prefix(':'));
        }
    }
    match chunk.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (chunk, None),
    }
}

fn port_is_a_number(chunk: &str) -> bool {
    split_port(chunk)
        .1
        .is_none_or(|port| port.chars().all(|c| c.is_ascii_digit()))
}

fn host(chunk: &str) -> String {
    match split_port(chunk) {
        ("", None) => String::new(),
        (host, None) => plain_or_hidden(host).to_string(),
        (host, Some(port)) => {
            let port = if port.chars().all(|c| c.is_ascii_digit()) {
                port
            } else {
                HIDDEN
            };
            let host = if host.is_empty() {
                ""
            } else {
                plain_or_hidden(host)
            };
            format!("{host}:{port}")
        }
    }
}

/// libpq's `key = value` pairs, each shown as `key=value` or `key=…`; at
/// the first thing that does not read as a pair, `…` and nothing more.
fn key_values(text: &str) -> String {
    let mut shown: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        // A word without '=' may be the rest of a password typed with a
        // space and no quotes: from here on nothing can be told apart.
        if chars.next() != Some('=') || !plain(&key) {
            shown.push(HIDDEN.to_string());
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let mut escaped = false;
        if chars.next_if_eq(&'\'').is_some() {
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\'' => {
                        closed = true;
                        break;
                    }
                    '\\' => {
                        escaped = true;
                        value.extend(chars.next());
                    }
                    c => value.push(c),
                }
            }
            // An open quote runs to the end of the line: all of it may be
            // the value.
            if !closed {
                shown.push(format!("{key}={HIDDEN}"));
                break;
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    escaped = true;
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        let value = if shown_key(&key) && !escaped {
            plain_or_hidden(&value)
        } else {
            HIDDEN
        };
        shown.push(format!("{key}={value}"));
    }
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_and_keep_the_rest() {
        for (line, shown) in [
            (
                "postgres://app:s3cret@db1:5433/shop?sslmode=require",
                "postgres://app:…@db1:5433/shop?sslmode=require",
            ),
            ("postgresql://app@db1/shop", "postgresql://app@db1/shop"),
            (
                "postgres://app:s3cret@db1/saas schema=acme",
                "postgres://app:…@db1/saas schema=acme",
            ),
            (
                "postgres://u@h/d?password=s3cret&application_name=x",
                "postgres://u@h/d?password=…&application_name=x",
            ),
            (
                "postgres://u@h/d?pass%77ord=s3cret&pasword=s3cret",
                "postgres://u@h/d?pass%77ord=…&pasword=…",
            ),
            ("postgres://u:s3cret@h:notaport/d", "postgres://u:…@h:…/d"),
            (
                "postgres://u:s3cret@[::1]:5432,h2/d",
                "postgres://u:…@[::1]:5432,h2/d",
            ),
            ("postgres://u@h/d extra-s3cret", "postgres://u@h/d …"),
            ("postgres://u@h/d?nokey-s3cret", "postgres://u@h/d?…"),
        ] {
            assert_eq!(redact(line), shown, "{line}");
        }
    }

    #[test]
    fn a_malformed_url_loses_its_whole_user_information() {
        for (line, shown) in [
            ("postgres://u:s3c@ret@h/d", "postgres://…@h/d"),
            ("postgres://u:s3c ret@h/d", "postgres://…@h/d"),
            ("postgres://u:s3c@r t@h/d", "postgres://…@h/d"),
            ("postgres://u:s3cret", "postgres://…"),
            ("postgres://u:s3c/ret", "postgres://…"),
            ("postgres://u:pw@h/d?application_name=a@b", "postgres://…@b"),
            ("my$ql://u:s3cret@h/d", "…"),
        ] {
            assert_eq!(redact(line), shown, "{line}");
        }
    }

    #[test]
    fn key_value_pairs_show_only_values_that_are_never_secrets() {
        for (line, shown) in [
            (
                "host=db2 dbname=billing password=s3cret schema=acme",
                "host=db2 dbname=billing password=… schema=acme",
            ),
            (
                "host = db2 password = 'it\\'s s3cret' port=5432",
                "host=db2 password=… port=5432",
            ),
            ("host=h pasword=s3cret", "host=h pasword=…"),
            ("host=h\\ s3cret dbname=d", "host=… dbname=d"),
            ("host='h s3cret' dbname=d", "host=… dbname=d"),
            ("sslmode='verify-full' host=h", "sslmode=verify-full host=h"),
        ] {
            assert_eq!(redact(line), shown, "{line}");
        }
    }

    #[test]
    fn what_cannot_be_told_apart_is_not_shown() {
        for (line, shown) in [
            ("host=h password='s3cret", "host=h password=…"),
            ("host='h password=s3cret", "host=…"),
            ("host=h password=s3 cret", "host=h password=… …"),
            ("s3cret", "…"),
            ("host=h =s3cret", "host=h …"),
        ] {
            assert_eq!(redact(line), shown, "{line}");
            assert!(!redact(line).contains("s3"), "{line}");
        }
        assert!(shows_nothing("… …"));
        assert!(!shows_nothing("host=… …"));
    }

    #[test]
    fn long_lines_are_cut() {
        let line = format!("host={}", "h".repeat(1000));
        let shown = redact(&line);
        assert_eq!(shown.chars().count(), MAX_SHOWN + 1);
        assert!(shown.ends_with(HIDDEN));
    }
}
