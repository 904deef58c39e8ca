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

use crate::connect::conninfo;
use crate::connect::ConnectTarget;
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
        std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(anyhow!("--databases-from {path}: cannot read it: {e}")))?
    };
    Ok(text)
}

/// Every line, or the first bad one as a usage error naming its number and
/// never its text (it may hold a password).
pub fn parse(text: &str, source: &str, env: Env) -> Result<Vec<Target>, Failure> {
    let mut targets = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            |why: String| Failure::usage(anyhow!("--databases-from {source} line {number}: {why}"));
        let (conninfo, schema) = split_line(line).map_err(&bad)?;
        let database = ConnectTarget::resolve(Some(&conninfo), env).map_err(|e| {
            bad(e
                .message()
                .replace("the database URL", "the connection string"))
        })?;
        targets.push(Target {
            database,
            schema,
            line: Some(number),
        });
    }
    Ok(targets)
}

/// The connection string without `schema`, and the schema. A URL may be
/// followed by `schema=NAME` tokens; in a `key=value` string `schema` is
/// just one more pair; in a URL it may also be a query parameter.
fn split_line(line: &str) -> Result<(String, Option<String>), String> {
    let malformed = |why: String| format!("the connection string is malformed: {why}");
    let mut schemas = Vec::new();
    let conninfo = if line.contains("://") {
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
    // A SQL_ASCII cluster passes a name's bytes through unconverted: one
    // that is not UTF-8 cannot be named in a connection string here.
    Ok(rows
        .iter()
        .filter_map(|row| match row.try_get::<_, String>(0) {
            Ok(name) => Some(name),
            Err(_) => {
                log::warn!("a database whose name is not valid UTF-8 is left out");
                None
            }
        })
        .collect())
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
                "envuser@db2:5432/billing schema=acme",
                "envuser@envhost:5432/onlyname",
            ]
        );
        let lines: Vec<Option<usize>> = targets.iter().map(|t| t.line).collect();
        assert_eq!(lines, [Some(2), Some(4), Some(5), Some(6), Some(7)]);
    }

    #[test]
    fn a_bad_line_names_its_number_and_never_its_text() {
        for bad in [
            "postgres://u:s3cret@h/d extra-s3cret",
            "host=h password='s3cret",
            "postgres://u:s3cret@h/d?schema=1bad",
            "postgres://u:s3cret@h/d?schema=a schema=b",
            "postgres://u:s3cret@h:notaport/d",
            "postgres://u:s3cret@h/d?nokey",
        ] {
            let text = format!("# first\npostgres://u@h/ok\n{bad}\n");
            let err = parse(&text, "f", &vars).err().expect(bad);
            let message = err.message();
            assert!(
                message.starts_with("--databases-from f line 3: "),
                "{message}"
            );
            assert!(!message.contains("s3cret"), "{message}");
            assert_eq!(err.outcome, crate::outcome::Outcome::Usage);
        }
    }
}
