//! What a connection string must look like before rust-postgres parses
//! it: checks that turn a newcomer's mistakes (another database's URL, a
//! URL without its scheme, a password's unencoded `@`) into messages that
//! say what to write, without ever quoting more than the scheme; and
//! libpq's `PGPORT` given to a URL's hosts.

use anyhow::anyhow;

use super::conninfo;
use crate::error::Failure;

/// What a newcomer gives instead of a PostgreSQL URL: another database's
/// URL (`mysql://…`), or a URL without its scheme (`localhost:5432/db`),
/// which the key=value parser would otherwise call a missing '='. Only the
/// scheme is ever quoted: the rest may hold a password.
pub(super) fn not_a_postgres_url(url: &str) -> Result<(), String> {
    const FORMS: &str = "postgres://USER@HOST:PORT/DATABASE, or key=value pairs such as \
        host=HOST port=5432 dbname=DATABASE user=USER";
    let trimmed = url.trim_start();
    if let Some((scheme, _)) = trimmed.split_once("://") {
        let plain = !scheme.is_empty()
            && scheme.len() <= 20
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !plain {
            return Ok(());
        }
        if scheme == "postgres" || scheme == "postgresql" {
            return Ok(());
        }
        return Err(format!(
            "{scheme}:// is not a PostgreSQL URL (miglock connects to PostgreSQL only); \
             expected {FORMS}"
        ));
    }
    if !trimmed.is_empty() && !trimmed.contains('=') {
        return Err(format!(
            "neither a URL (no postgres:// in front) nor key=value pairs; expected {FORMS}"
        ));
    }
    Ok(())
}

/// A URL whose host part holds an `@`: the user information ends at the
/// first one (as rust-postgres and libpq read it), so a second is a
/// password's own `@` left unencoded — and what follows the first would be
/// taken for a host, and shown as one, with part of the password in it.
pub(super) fn refuse_a_second_at(url: &str) -> Result<(), Failure> {
    match conninfo::split_url(url) {
        Some(parts) if parts.hosts.contains('@') => Err(Failure::usage(anyhow!(
            "the database URL is malformed: more than one '@' before its host (a password holding \
             '@' must be percent-encoded, as %40; ':', '/', '?' and '#' as %3A, %2F, %3F and %23); \
             the URL is not shown, as it holds a password"
        ))),
        _ => Ok(()),
    }
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
