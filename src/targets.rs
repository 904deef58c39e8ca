//! Many databases: the targets file (`--databases-from`) and the server's
//! list of databases (`--all-databases`).
//!
//! A line is a connection string (URL or `key=value`), optionally with a
//! tenant schema, given either way:
//!
//! ```text
//! postgres://app@db1/shop
//! postgres://app@db1/saas?schema=tenant_a
//! postgres://app@db1/saas schema=tenant_b
//! host=db2 dbname=billing schema=acme
//! ```
//!
//! `schema` is taken out before the rest reaches [`ConnectTarget::resolve`],
//! which would reject it.

use anyhow::anyhow;

use crate::connect::ConnectTarget;
use crate::connect::{conninfo, redact};
use crate::env::Env;
use crate::error::Failure;
use crate::pg_error;

/// One database (and, for schema-per-tenant, one schema in it).
#[derive(Clone)]
pub struct Target {
    pub database: ConnectTarget,
    pub schema: Option<String>,
    /// The line of the targets file (1-based); `None` when listed from the
    /// server.
    pub line: Option<usize>,
}

impl Target {
    /// `user@host:port/db`, with ` schema=NAME` for a tenant schema: never
    /// the password.
    pub fn label(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{} schema={schema}", self.database),
            None => self.database.to_string(),
        }
    }
}

/// Reads the targets file: `-` is stdin.
pub fn read_file(path: &str) -> Result<String, Failure> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Failure::usage(anyhow!("--databases-from -: cannot read stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            // A connection string given for the file by mistake is not
            // echoed: it may hold a password.
            if conninfo::may_hold_a_password(path) {
                Failure::usage(anyhow!(
                    "--databases-from takes a file listing connection strings, one per line (or - \
                     for stdin), not a connection string: give DATABASE_URL or --database-url for \
                     one database (the value is not shown, as it may hold a password)"
                ))
            } else {
                Failure::usage(anyhow!("--databases-from {path}: cannot read it: {e}"))
            }
        })?
    };
    Ok(text)
}

/// Every line; or, when any is bad, every bad one, as one usage error
/// (nothing runs) giving each its number, why, and its text without its
/// secrets (see [`redact`]).
pub fn parse(text: &str, source: &str, env: Env) -> Result<Vec<Target>, Failure> {
    let mut targets = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line, env) {
            Ok((database, schema)) => targets.push(Target {
                database,
                schema,
                line: Some(number),
            }),
            Err(why) => bad.push(BadLine {
                number,
                why,
                shown: redact::redact(line),
            }),
        }
    }
    if bad.is_empty() {
        Ok(targets)
    } else {
        Err(Failure::usage(anyhow!(BadLines {
            source: source.to_string(),
            lines: bad,
        })))
    }
}

fn parse_line(line: &str, env: Env) -> Result<(ConnectTarget, Option<String>), String> {
    let (conninfo, schema) = split_line(line)?;
    let database = ConnectTarget::resolve(Some(&conninfo), env).map_err(|e| {
        e.message()
            .replace("the database URL", "the connection string")
    })?;
    Ok((database, schema))
}

/// A line of the targets file that cannot be run.
struct BadLine {
    number: usize,
    why: String,
    /// The line with its secrets replaced by `…`.
    shown: String,
}

/// Every bad line of a targets file, one per line.
#[derive(Debug)]
struct BadLines {
    source: String,
    lines: Vec<BadLine>,
}

impl std::fmt::Debug for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.number)
    }
}

impl std::fmt::Display for BadLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.lines.len();
        write!(
            f,
            "--databases-from {}: {n} bad line{}, nothing was run:",
            self.source,
            if n == 1 { "" } else { "s" }
        )?;
        for line in &self.lines {
            write!(f, "\n  - line {}: {}", line.number, line.why)?;
            if redact::shows_nothing(&line.shown) {
                f.write_str(" (its text is not shown: it may hold a password)")?;
            } else {
                write!(f, "; it reads: {}", line.shown)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for BadLines {}

/// The connection string without `schema`, and the schema. A URL may be
/// followed by `schema=NAME` tokens; in a `key=value` string `schema` is
/// just one more pair; in a URL it may also be a query parameter.
fn split_line(line: &str) -> Result<(String, Option<String>), String> {
    let malformed = |why: String| format!("the connection string is malformed: {why}");
    let mut schemas = Vec::new();
    // A URL is the first word: a `key=value` line may hold "://" in a value.
    let conninfo = if line
        .split_whitespace()
        .next()
        .is_some_and(|word| word.contains("://"))
    {
        let mut tokens = line.split_whitespace();
        let url = tokens.next().unwrap_or_default();
        for token in tokens {
            match token.strip_prefix("schema=") {
                Some(schema) => schemas.push(schema.to_string()),
                // Only a word miglock knows may follow the URL; anything
                // else may be a password with a space, so it is not shown.
                None => {
                    return Err(
                        "after the URL only schema=NAME may follow (separated by spaces)".into(),
                    )
                }
            }
        }
        url.to_string()
    } else {
        line.to_string()
    };
    let (rest, taken) = conninfo::take_params(&conninfo, &["schema"]).map_err(malformed)?;
    schemas.extend(taken.into_iter().map(|(_, v)| v));
    let schema = match schemas.as_slice() {
        [] => None,
        [one] => Some(check_schema(one)?),
        _ => return Err("schema is given more than once".into()),
    };
    Ok((rest, schema))
}

/// Folded to lower case, as the history table's schema is (see
/// `HistoryTable`), so the search path and the history table agree.
fn check_schema(schema: &str) -> Result<String, String> {
    let mut chars = schema.chars();
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if valid {
        Ok(schema.to_ascii_lowercase())
    } else {
        Err(format!(
            "invalid schema name {:?}: use letters, digits, _ and $, starting with a letter or _, at most 63 bytes",
            crate::parse::shorten(schema, 80)
        ))
    }
}

/// `--all-databases`: every database of the server that takes connections,
/// templates excluded, and the maintenance database (the one connected to)
/// too unless `pattern` matches it. Sorted by name.
pub fn list_databases(
    client: &mut postgres::Client,
    maintenance: &str,
    pattern: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let rows = client
        .query(
            "SELECT datname::text FROM pg_database \
             WHERE datallowconn AND NOT datistemplate \
               AND CASE WHEN $1::text IS NULL THEN datname <> $2::text \
                        ELSE datname LIKE $1::text END \
             ORDER BY datname",
            &[&pattern, &maintenance],
        )
        .map_err(|e| pg_error::failed(&e, "cannot list the databases (pg_database)"))?;
    Ok(names(&rows, "database"))
}

/// The first column of `rows`, names of `what`. A SQL_ASCII cluster passes
/// a name's bytes through unconverted: one that is not UTF-8 cannot be
/// named in a connection string here, and is left out with a warning.
fn names(rows: &[postgres::Row], what: &str) -> Vec<String> {
    rows.iter()
        .filter_map(|row| match row.try_get::<_, String>(0) {
            Ok(name) => Some(name),
            Err(_) => {
                log::warn!("a {what} whose name is not valid UTF-8 is left out");
                None
            }
        })
        .collect()
}

/// The schemas of the connected database, for `--all-schemas`: those
/// `pattern` matches (SQL `LIKE`), else every one but `public`; PostgreSQL's
/// own (`pg_*`, `information_schema`) only when `pattern` names them.
pub fn list_schemas(
    client: &mut postgres::Client,
    pattern: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace \
             WHERE CASE WHEN $1::text IS NULL \
                        THEN nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public') \
                        ELSE nspname LIKE $1::text \
                          AND (nspname NOT LIKE 'pg\\_%' OR $1::text LIKE 'pg\\_%') \
                          AND (nspname <> 'information_schema' OR $1::text LIKE 'information%') END \
             ORDER BY nspname",
            &[&pattern],
        )
        .map_err(|e| pg_error::failed(&e, "cannot list the schemas (pg_namespace)"))?;
    Ok(names(&rows, "schema"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "PGUSER" => Some("envuser".into()),
            "PGHOST" => Some("envhost".into()),
            "PGPASSWORD" => Some("from-env".into()),
            _ => None,
        }
    }

    #[test]
    fn lines_comments_schemas_and_libpq_variables() {
        let text = "\
# tenants
postgres://app@db1:5433/shop

  postgres://app@db1/saas?schema=Tenant_A&application_name=x
postgres://app@db1/saas   schema=tenant_b
postgres://db1/saas?user=admin@srv&schema=tenant_c
host=db2 dbname=billing schema=acme
dbname=onlyname
";
        let targets = parse(text, "t.txt", &vars).unwrap();
        let labels: Vec<String> = targets.iter().map(Target::label).collect();
        assert_eq!(
            labels,
            [
                "app@db1:5433/shop",
                "app@db1:5432/saas schema=tenant_a",
                "app@db1:5432/saas schema=tenant_b",
                "admin@srv@db1:5432/saas schema=tenant_c",
                "envuser@db2:5432/billing schema=acme",
                "envuser@envhost:5432/onlyname",
            ]
        );
        let lines: Vec<Option<usize>> = targets.iter().map(|t| t.line).collect();
        assert_eq!(
            lines,
            [Some(2), Some(4), Some(5), Some(6), Some(7), Some(8)]
        );
    }

    #[test]
    fn every_bad_line_is_named_with_its_text_and_never_its_password() {
        let bad = [
            (
                "postgres://u:s3cret@h/d extra-s3cret",
                "postgres://u:…@h/d …",
            ),
            ("host=h password='s3cret", "host=h password=…"),
            (
                "postgres://u:s3cret@h/d?schema=1bad",
                "postgres://u:…@h/d?schema=1bad",
            ),
            (
                "postgres://u:s3cret@h/d?schema=a schema=b",
                "postgres://u:…@h/d?schema=a schema=b",
            ),
            ("postgres://u:s3cret@h:notaport/d", "postgres://u:…@h:…/d"),
            ("postgres://u:s3cret@h/d?nokey", "postgres://u:…@h/d?…"),
            ("postgres://u:s3c@ret@h/d", "postgres://…@h/d"),
            ("host=h password=s3cret port=x", "host=h password=… port=x"),
        ];
        let mut text = "# first\npostgres://u@h/ok\n".to_string();
        for (line, _) in &bad {
            text.push_str(line);
            text.push_str("\n\n");
        }
        let err = parse(&text, "f", &vars).err().expect("bad lines");
        assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
        let message = err.message();
        assert!(!message.contains("s3"), "{message}");
        let mut lines = message.lines();
        assert_eq!(
            lines.next(),
            Some("--databases-from f: 8 bad lines, nothing was run:")
        );
        for (i, ((_, shown), reported)) in bad.iter().zip(lines).enumerate() {
            let number = 3 + 2 * i;
            assert!(
                reported.starts_with(&format!("  - line {number}: ")),
                "{reported}"
            );
            assert!(
                reported.ends_with(&format!("; it reads: {shown}")),
                "{reported}"
            );
        }
        // Nothing safe to show: said so.
        let err = parse("s3cret\n", "-", &vars).err().unwrap();
        assert!(
            err.message()
                .ends_with("(its text is not shown: it may hold a password)"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_url_is_the_first_word_only() {
        let targets = parse("host=h dbname=d application_name=a://b\n", "f", &vars).unwrap();
        assert_eq!(targets[0].label(), "envuser@h:5432/d");
    }
}
