//! What a connection string must look like before rust-postgres parses
//! it: checks that turn a newcomer's mistakes (another database's URL, a
//! URL without its scheme, a password's unencoded `@`) into messages that
//! say what to write, without ever quoting more than the scheme; and
//! libpq's `PGPORT` given to a URL's hosts.

use anyhow::anyhow;

use super::conninfo;
use crate::error::Failure;

/// What a newcomer gives instead of a PostgreSQL URL: another database's
/// URL (`mysql://…`), a JDBC or SQLAlchemy one (`jdbc:postgresql://…`,
/// `postgresql+psycopg2://…`), or a URL without its scheme
/// (`localhost:5432/db`, `app:pw@db/app?sslmode=require`), which the
/// key=value parser would otherwise quote back up to its first `=`,
/// password included. Only a scheme made of plain characters is ever
/// quoted; everything else may hold a password.
pub(super) fn not_a_postgres_url(url: &str) -> Result<(), String> {
    const FORMS: &str = "postgres://USER@HOST:PORT/DATABASE, or key=value pairs such as \
        host=HOST port=5432 dbname=DATABASE user=USER";
    let trimmed = url.trim_start();
    // A `://` after a space or an `=` is a value's (application_name=a://b).
    let url = trimmed
        .split_once("://")
        .filter(|(scheme, _)| !scheme.contains(|c: char| c == '=' || c.is_whitespace()));
    if let Some((scheme, _)) = url {
        let plain = !scheme.is_empty()
            && scheme.len() <= 30
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | ':'));
        if !plain {
            return Err(format!(
                "it has a '://' but no scheme miglock knows before it; expected {FORMS}"
            ));
        }
        let lower = scheme.to_ascii_lowercase();
        if scheme == "postgres" || scheme == "postgresql" {
            return Ok(());
        }
        if lower == "postgres" || lower == "postgresql" {
            // The parser knows the lower-case schemes only.
            return Err(format!(
                "write the scheme {scheme}:// in lower case, as {lower}://; expected {FORMS}"
            ));
        }
        if let Some(rest) = lower.strip_prefix("jdbc:") {
            return Err(format!(
                "{scheme}:// is a JDBC URL: drop '{}' (and give the user and password in the URL \
                 or the libpq variables, not as JDBC parameters); expected {FORMS}",
                &scheme[..scheme.len() - rest.len()]
            ));
        }
        if lower.starts_with("postgres+") || lower.starts_with("postgresql+") {
            return Err(format!(
                "{scheme}:// names a driver (SQLAlchemy's form): write postgres:// or \
                 postgresql://; expected {FORMS}"
            ));
        }
        return Err(format!(
            "{scheme}:// is not a PostgreSQL URL (miglock connects to PostgreSQL only); \
             expected {FORMS}"
        ));
    }
    if !trimmed.is_empty() && !conninfo::reads_as_key_value(trimmed) {
        return Err(format!(
            "neither a URL (no postgres:// in front) nor key=value pairs; expected {FORMS}"
        ));
    }
    Ok(())
}

/// An `@` left unencoded where it cannot end the user information:
/// - in the host part: the user information ends at the first `@` (as
///   rust-postgres and libpq read it), so a second is a password's own
///   `@`, and what follows the first would be taken for a host, and shown
///   as one, with part of the password in it;
/// - after a query with no path before it (`postgres://h:5432?user=a@srv&
///   password=…`, which libpq misreads too): the host, port and query up to
///   it would be taken for the user and password, and the run would
///   connect to what follows. (With a path, the query's `@` is read as
///   libpq reads it: see `conninfo::with_query_at_signs_encoded`.)
pub(super) fn refuse_an_unencoded_at(url: &str) -> Result<(), Failure> {
    let Some(parts) = conninfo::split_url(url) else {
        return Ok(());
    };
    if parts.hosts.contains('@') {
        return Err(Failure::usage(anyhow!(
            "the database URL is malformed: more than one '@' before its host (a password holding \
             '@' must be percent-encoded, as %40; ':', '/', '?' and '#' as %3A, %2F, %3F and %23); \
             the URL is not shown, as it holds a password"
        )));
    }
    if parts.userinfo.is_some_and(holds_a_query) {
        return Err(Failure::usage(anyhow!(
            "the database URL is malformed: its query comes before an '@' (an '@' in a query value \
             must be percent-encoded, as %40, and the query follows the database: \
             postgres://HOST:PORT/DATABASE?…); the URL is not shown, as it may hold a password"
        )));
    }
    Ok(())
}

/// `?name=` or `&name=` with a connection parameter's name: a query, which
/// no user name or password holds.
fn holds_a_query(userinfo: &str) -> bool {
    const NAMES: [&str; 8] = [
        "user",
        "password",
        "dbname",
        "host",
        "port",
        "sslmode",
        "application_name",
        "options",
    ];
    userinfo.match_indices(['?', '&']).any(|(at, _)| {
        let rest = &userinfo[at + 1..];
        NAMES.iter().any(|name| {
            rest.strip_prefix(name)
                .is_some_and(|after| after.starts_with('='))
        })
    })
}

/// A `postgres://` URL with `port` given to each host that has none, as
/// libpq reads PGPORT. (tokio-postgres would fill in 5432 instead.) `None`
/// when nothing is to change.
pub(super) fn url_with_default_port(url: &str, port: u16) -> Option<String> {
    let parts = conninfo::split_url(url)?;
    let query_names_port = parts
        .query()
        .is_some_and(|query| query.split('&').any(|p| p.starts_with("port=")));
    if parts.hosts.is_empty() || query_names_port {
        return None;
    }
    let hosts: Vec<String> = parts
        .hosts
        .split(',')
        .map(|chunk| {
            let has_port = match chunk.rsplit_once(']') {
                Some((_, after)) => after.starts_with(':'),
                None => chunk.contains(':'),
            };
            if has_port {
                chunk.to_string()
            } else {
                format!("{chunk}:{port}")
            }
        })
        .collect();
    let credentials = parts.userinfo.map_or(String::new(), |c| format!("{c}@"));
    Some(format!(
        "{}://{credentials}{}{}",
        parts.scheme,
        hosts.join(","),
        parts.tail
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_postgres_url_is_said_without_its_password() {
        for (url, needle) in [
            (
                "mysql://app:S3cret@db/app",
                "mysql:// is not a PostgreSQL URL",
            ),
            (
                "jdbc:postgresql://app:S3cret@db:5432/app?sslmode=require",
                "is a JDBC URL: drop 'jdbc:'",
            ),
            ("postgresql+psycopg2://app:S3cret@db/app", "names a driver"),
            ("app:S3cret@db/app?sslmode=require", "neither a URL"),
            ("localhost:5432/app", "neither a URL"),
            ("host=db S3cret@x=1", "neither a URL"),
            ("ht tp://S3cret@db", "neither a URL"),
            ("h%tp://S3cret@db", "no scheme miglock knows"),
            ("POSTGRESQL://app:S3cret@db/app?x=1", "in lower case"),
        ] {
            let err = not_a_postgres_url(url).unwrap_err();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(!err.contains("S3cret"), "{url}: {err}");
        }
        for good in [
            "postgres://app:S3cret@db/app",
            "host=db dbname=app user=app password='a \\' b'",
            "host = db  port=5432",
            "host=h dbname=d application_name=a://b",
            "host=db password='unterminated S3cret",
            "",
        ] {
            assert!(not_a_postgres_url(good).is_ok(), "{good}");
        }
    }
}
