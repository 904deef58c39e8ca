//! `--set NAME=VALUE` (and `MIGLOCK_SET`) checked on the server, once
//! connected and before anything else: an unknown setting or a value the
//! server refuses is a usage error (exit 2) that touches nothing, instead
//! of a failed lock attempt (exit 1) after the history was read.
//!
//! The names and values were already checked for form when parsed
//! (`parse::setting`); only the server knows which settings exist (and
//! which extensions reserve a prefix) and what values each takes.

use anyhow::anyhow;
use postgres::error::SqlState;
use postgres::Client;

use crate::error::{ErrorDetail, Failure};
use crate::pg_error;
use crate::sql::literal;

/// Tries every setting in one transaction that is rolled back, in one
/// round trip: `BEGIN; SELECT set_config(…, true); …; ROLLBACK`. On a
/// refusal, each is tried on its own to name the one at fault. Nothing
/// is sent when there are none.
pub fn check_on_server(client: &mut Client, settings: &[(String, String)]) -> Result<(), Failure> {
    if settings.is_empty() {
        return Ok(());
    }
    let Err(error) = client.batch_execute(&trial_sql(settings)) else {
        return Ok(());
    };
    // The failed statement left the transaction aborted; end it, or the
    // session could run nothing else.
    rollback(client);
    if !refused(&error) {
        return Err(pg_error::failed(&error, "cannot check the --set settings"));
    }
    for setting in settings {
        if let Err(error) = client.batch_execute(&trial_sql(std::slice::from_ref(setting))) {
            rollback(client);
            if !refused(&error) {
                return Err(pg_error::failed(&error, "cannot check the --set settings"));
            }
            return Err(refusal(&error, Some(setting)));
        }
    }
    // Refused together, accepted one by one.
    Err(refusal(&error, None))
}

fn trial_sql(settings: &[(String, String)]) -> String {
    let mut sql = String::from("BEGIN;");
    for (name, value) in settings {
        sql.push_str(&format!(
            " SELECT set_config({}, {}, true);",
            literal(name),
            literal(value)
        ));
    }
    sql.push_str(" ROLLBACK");
    sql
}

fn rollback(client: &mut Client) {
    if let Err(e) = client.batch_execute("ROLLBACK") {
        log::debug!(
            "ROLLBACK after a refused setting failed: {}",
            pg_error::error_chain(&e)
        );
    }
}

/// Whether the server refused the setting itself (unknown name, reserved
/// prefix, bad value, not settable now or by this role), rather than the
/// statement failing for another reason: a cancel (a signal), a shutdown,
/// a lost connection.
fn refused(error: &postgres::Error) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    if code == &SqlState::QUERY_CANCELED {
        return false;
    }
    // 22 data exception (22023 invalid value), 42 syntax or access rule
    // (42704 unknown name, 42602 invalid name, 42501 permission denied),
    // 55 not in prerequisite state (55P02 cannot be changed now),
    // 25 invalid transaction state (transaction_isolation and friends),
    // 0A feature not supported.
    matches!(&code.code()[..2], "22" | "42" | "55" | "25" | "0A")
}

fn refusal(error: &postgres::Error, setting: Option<&(String, String)>) -> Failure {
    let what = match setting {
        Some((name, value)) => format!(
            "the setting {name}={:?} (--set or MIGLOCK_SET)",
            crate::parse::shorten(value, 60)
        ),
        None => "the settings given with --set or MIGLOCK_SET".to_string(),
    };
    Failure::usage(anyhow!(
        "{what} is refused by the server: {}; nothing was changed",
        pg_error::readable(error)
    ))
    .with_detail(ErrorDetail {
        sqlstate: error.code().map(|c| c.code().to_string()),
        file: None,
        line: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trial_is_one_rolled_back_transaction_with_quoted_values() {
        let settings = [
            ("work_mem".to_string(), "64MB".to_string()),
            ("app.note".to_string(), "it's".to_string()),
        ];
        assert_eq!(
            trial_sql(&settings),
            "BEGIN; SELECT set_config(E'work_mem', E'64MB', true); \
             SELECT set_config(E'app.note', E'it''s', true); ROLLBACK"
        );
    }
}
