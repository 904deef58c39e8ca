//! The migrating session's settings: miglock's own and those given with
//! `--set NAME=VALUE` (and `MIGLOCK_SET`), for the whole session (session
//! mode) or each migration's transaction (transaction mode), and `--set`
//! checked on the server once connected, before anything else: an unknown
//! setting or a value the server refuses is a usage error (exit 2) that
//! touches nothing, instead of a failed lock attempt (exit 1) after the
//! history was read.
//!
//! The names and values were already checked for form when parsed
//! (`parse::setting`); only the server knows which settings exist (and
//! which extensions reserve a prefix) and what values each takes.

use std::time::Duration;

use anyhow::anyhow;
use postgres::error::SqlState;
use postgres::Client;

use crate::error::{ErrorDetail, Failure};
use crate::lock::LockSession;
use crate::pg_error;
use crate::sql::literal;

/// Settings for the migrating session, in one statement. miglock's own are
/// set only where the server knows the name (`idle_session_timeout` and
/// `client_connection_check_interval` came in PostgreSQL 14); those given
/// with `--set` replace them and must exist.
/// - `statement_timeout` as given, or 0 so a role default cannot cut a long
///   migration (the lock wait runs no statement, so it is never bounded by it);
/// - `lock_timeout` 0 for the same reason: a role or database default (often
///   set for the application's role, which migrates too) would make a
///   migration queued behind a long query fail rather than wait; bounding
///   that wait is `--ddl-lock-timeout`'s job, which retries (SET LOCAL);
/// - `idle_session_timeout` and `idle_in_transaction_session_timeout` 0 so a
///   server default cannot end the session and take the lock away silently;
/// - server-side TCP keepalives and `client_connection_check_interval`, so a
///   holder whose network vanishes loses the lock in about 21 s instead of
///   the kernel's default of over two hours.
pub fn session_sql(statement_timeout: Option<Duration>, settings: &[(String, String)]) -> String {
    let values: Vec<String> = session_defaults(statement_timeout, settings)
        .map(|(name, value)| format!("('{name}', '{value}')"))
        .collect();
    let mut columns = Vec::new();
    if !values.is_empty() {
        // current_setting(…, true) is NULL for a name the server does not
        // know; much cheaper than the pg_settings view, which renders
        // every setting.
        columns.push(format!(
            "(SELECT count(set_config(v.name, v.setting, false)) FROM (VALUES {}) AS v(name, setting) \
             WHERE current_setting(v.name, true) IS NOT NULL)",
            values.join(", ")
        ));
    }
    for (name, value) in settings {
        columns.push(format!(
            "set_config({}, {}, false)",
            literal(name),
            literal(value)
        ));
    }
    format!("SELECT {}", columns.join(", "))
}

/// The first server version with every one of miglock's session settings
/// (`idle_session_timeout`, `client_connection_check_interval`: 14).
const ALL_SETTINGS_SINCE: u32 = 140_000;

/// miglock's own session settings, those `--set` gives left out.
fn session_defaults<'a>(
    statement_timeout: Option<Duration>,
    settings: &'a [(String, String)],
) -> impl Iterator<Item = (&'static str, String)> + 'a {
    let statement_timeout = statement_timeout
        .map_or(0, |t| t.as_millis().max(1))
        .to_string();
    [
        ("statement_timeout", statement_timeout),
        ("lock_timeout", "0".into()),
        ("idle_session_timeout", "0".into()),
        ("idle_in_transaction_session_timeout", "0".into()),
        ("tcp_keepalives_idle", "5".into()),
        ("tcp_keepalives_interval", "5".into()),
        ("tcp_keepalives_count", "3".into()),
        ("client_connection_check_interval", "1000".into()),
    ]
    .into_iter()
    .filter(|(name, _)| !settings.iter().any(|(n, _)| n == name))
}

/// [`session_sql`] as plain `SET`s, for a server known to have every
/// setting (`server_version_num` 140000 and later; `None` below, or not
/// known): after each migration the session is put back with them, and a
/// `SET` costs the server a few microseconds where the query over a
/// `VALUES` list that skips the names it lacks cost about 50 (measured on
/// PostgreSQL 15: 8 `SET`s 20 µs, that query 70 µs, in every migration's
/// round trip). `--set`'s values follow in one `set_config` query, as
/// their names are the user's.
pub fn session_sets(
    statement_timeout: Option<Duration>,
    settings: &[(String, String)],
    server_version: Option<u32>,
) -> Option<Vec<String>> {
    if server_version? < ALL_SETTINGS_SINCE {
        return None;
    }
    let mut sets: Vec<String> = session_defaults(statement_timeout, settings)
        .map(|(name, value)| format!("SET {name} = '{value}'"))
        .collect();
    sets.extend(given_sql(settings));
    Some(sets)
}

/// Transaction-mode settings, local to the migration's transaction (a
/// session `SET` would stay on the pooled server session for the next
/// client): what session mode sets for its session, without the TCP
/// keepalives (the connection is the pooler's), then `--set`'s.
pub fn local_sql(
    statement_timeout: Option<Duration>,
    settings: &[(String, String)],
    application_name: &str,
) -> String {
    let statement_timeout = statement_timeout
        .map_or(0, |t| t.as_millis().max(1))
        .to_string();
    let defaults = [
        ("statement_timeout", statement_timeout.as_str()),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
    ];
    let mut columns = vec![format!(
        "set_config('application_name', {}, true)",
        literal(application_name)
    )];
    for (name, value) in defaults {
        if !settings.iter().any(|(n, _)| n == name) {
            columns.push(format!("set_config('{name}', '{value}', true)"));
        }
    }
    for (name, value) in settings {
        columns.push(format!(
            "set_config({}, {}, true)",
            literal(name),
            literal(value)
        ));
    }
    format!("SELECT {}", columns.join(", "))
}

/// `--set` alone, for a session that does not migrate (`status`, `wait`);
/// `None` without any.
pub fn given_sql(settings: &[(String, String)]) -> Option<String> {
    (!settings.is_empty()).then(|| {
        let columns: Vec<String> = settings
            .iter()
            .map(|(name, value)| {
                format!("set_config({}, {}, false)", literal(name), literal(value))
            })
            .collect();
        format!("SELECT {}", columns.join(", "))
    })
}

/// Checks `--set` on the session's server (see [`check_on_server`]).
pub fn check(session: &mut LockSession, settings: &[(String, String)]) -> Result<(), Failure> {
    check_on_server(session.client(), settings)
}

/// Tries every setting in one transaction that is rolled back, in one
/// round trip: `BEGIN; SELECT set_config(…, true); …; ROLLBACK`. On a
/// refusal, each is tried on its own to name the one at fault. Nothing
/// is sent when there are none.
fn check_on_server(client: &mut Client, settings: &[(String, String)]) -> Result<(), Failure> {
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
    fn local_settings_are_local_and_given_ones_win() {
        let sql = local_sql(None, &[("lock_timeout".into(), "5s".into())], "me");
        assert!(!sql.contains(", false)"), "{sql}");
        assert!(
            sql.contains("set_config(E'lock_timeout', E'5s', true)"),
            "{sql}"
        );
        assert!(!sql.contains("'lock_timeout', '0'"), "{sql}");
        assert!(
            sql.contains("set_config('statement_timeout', '0', true)"),
            "{sql}"
        );
    }

    #[test]
    fn the_restore_sets_each_setting_where_the_server_has_them_all() {
        let given = [("lock_timeout".to_string(), "5s".to_string())];
        let two_seconds = Some(Duration::from_secs(2));
        // 12 and 13 lack two of them; an unknown version may too.
        assert_eq!(session_sets(two_seconds, &given, Some(130_015)), None);
        assert_eq!(session_sets(two_seconds, &given, None), None);
        let sets = session_sets(two_seconds, &given, Some(140_000)).unwrap();
        assert_eq!(sets.len(), 8, "{sets:?}");
        assert_eq!(sets[0], "SET statement_timeout = '2000'");
        assert!(sets.contains(&"SET client_connection_check_interval = '1000'".to_string()));
        // The given value, not miglock's, and last, as session_sql sets it.
        assert!(
            !sets.iter().any(|s| s.starts_with("SET lock_timeout")),
            "{sets:?}"
        );
        assert_eq!(sets[7], "SELECT set_config(E'lock_timeout', E'5s', false)");
        // The same settings as the one-query form, value for value.
        let sql = session_sql(two_seconds, &given);
        for set in &sets[..7] {
            let (name, value) = set["SET ".len()..].split_once(" = ").unwrap();
            assert!(
                sql.contains(&format!("('{name}', {value})")),
                "{name}: {sql}"
            );
        }
    }

    #[test]
    fn session_settings_skip_miglocks_own_where_given() {
        let sql = session_sql(
            Some(Duration::from_secs(2)),
            &[("tcp_keepalives_idle".into(), "9".into())],
        );
        assert!(sql.contains("('statement_timeout', '2000')"), "{sql}");
        assert!(!sql.contains("('tcp_keepalives_idle'"), "{sql}");
        assert!(
            sql.contains("set_config(E'tcp_keepalives_idle', E'9', false)"),
            "{sql}"
        );
    }

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
