//! One target of many: its configuration, made from the shared one, and
//! its run — exactly the single-target command, with its own connection,
//! lock, wait, report and outcome.

use std::sync::Arc;

use anyhow::anyhow;

use crate::commands;
use crate::config::{Common, FleetConfig, Job};
use crate::context::Context;
use crate::error::Failure;
use crate::lock::{tool_keys, LockKey};
use crate::migrations::history::HistoryTable;
use crate::outcome::Outcome;
use crate::output::Console;
use crate::report::Report;
use crate::targets::Target;

/// The single-target configuration of one target: a tenant schema holds
/// its own history table, so its key (derived from database and qualified
/// table) differs from its neighbours'.
pub fn common(config: &FleetConfig, target: &Target) -> Result<Common, Failure> {
    let in_schema = |table: &HistoryTable| match &target.schema {
        Some(schema) => table
            .in_schema(schema)
            .map_err(|e| Failure::usage(anyhow!(e))),
        None => Ok(table.clone()),
    };
    let table = in_schema(&config.table)?;
    let key_table = in_schema(&config.key_table)?;
    Ok(Common {
        key: LockKey::for_target(None, target.database.database(), &key_table),
        database: target.database.clone(),
        migrations: config.migrations.clone(),
        placeholders: Arc::clone(&config.placeholders),
        table,
        connect_timeout: config.connect_timeout,
        instance: config.instance.clone(),
        ahead: config.ahead,
        lock_mode: config.lock_mode,
        allow_world_writable: config.allow_world_writable,
        // A key the same for every schema would make the tenants of one
        // database wait for each other.
        tool_lock: config.tool_lock
            && !(target.schema.is_some() && tool_keys::one_per_database(config.table.layout())),
    })
}

/// `job` for one target.
pub fn for_target(job: &Job, common: Common, schema: Option<&str>) -> Job {
    match job {
        Job::Apply(config) => {
            let mut config = config.clone();
            config.common = common;
            if let Some(schema) = schema {
                with_schema_first(&mut config.migrate.settings, schema);
            }
            Job::Apply(config)
        }
        Job::Status(config) => {
            let mut config = config.clone();
            config.common = common;
            Job::Status(config)
        }
        Job::Wait(config) => {
            let mut config = config.clone();
            config.common = common;
            Job::Wait(config)
        }
    }
}

/// The exit code of one target, as the command alone would exit.
pub fn exit_code(job: &Job, outcome: Outcome) -> u8 {
    match job {
        Job::Status(config) => outcome.status_exit_code(config.check),
        _ => outcome.exit_code(),
    }
}

/// Runs `job`; its text goes nowhere (the summary speaks for it).
pub fn run(ctx: &Context, job: &Job, report: &mut Report) -> Result<Outcome, Failure> {
    let none = Console::none();
    let ctx = ctx.quiet(&none);
    match job {
        Job::Apply(config) => commands::apply::run(&ctx, config, report),
        Job::Status(config) => commands::status::run(&ctx, config, report),
        Job::Wait(config) => commands::wait::run(&ctx, config, report),
    }
}

/// The tenant's schema goes first on `search_path`, before what `--set
/// search_path=…` gave or else `public`: its unqualified names are its own,
/// and shared objects in `public` stay reachable.
fn with_schema_first(settings: &mut Vec<(String, String)>, schema: &str) {
    let quoted = crate::sql::ident(schema);
    match settings.iter_mut().find(|(name, _)| name == "search_path") {
        Some((_, value)) => *value = format!("{quoted}, {value}"),
        None => settings.push(("search_path".into(), format!("{quoted}, public"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::Source;
    use crate::connect::ConnectTarget;
    use crate::lock::LockModeFlag;
    use crate::migrations::AheadPolicy;

    #[test]
    fn the_tenant_schema_goes_first_on_the_search_path() {
        let mut settings = vec![("work_mem".to_string(), "64MB".to_string())];
        with_schema_first(&mut settings, "tenant_a");
        assert_eq!(
            settings[1],
            ("search_path".into(), "\"tenant_a\", public".into())
        );
        let mut settings = vec![("search_path".to_string(), "app, ext".to_string())];
        with_schema_first(&mut settings, "t");
        assert_eq!(settings, [("search_path".into(), "\"t\", app, ext".into())]);
    }

    #[test]
    fn a_tenant_schema_qualifies_the_table_and_so_the_key() {
        let config = FleetConfig {
            source: Source::File("f".into()),
            jobs: 1,
            fail_fast: false,
            canary: 0,
            max_failures: None,
            allow_no_targets: false,
            migrations: PathBuf::new(),
            table: HistoryTable::parse("app.history").unwrap(),
            key_table: HistoryTable::parse("app.history").unwrap(),
            placeholders: Default::default(),
            connect_timeout: Duration::ZERO,
            instance: None,
            ahead: AheadPolicy::default(),
            lock_mode: LockModeFlag::Auto,
            allow_world_writable: false,
            tool_lock: true,
            shard: None,
        };
        let mut target = Target {
            database: ConnectTarget::resolve(Some("postgres://u@h/d"), &|_| None).unwrap(),
            schema: None,
            line: None,
        };
        let plain = common(&config, &target).unwrap();
        target.schema = Some("tenant_a".into());
        let a = common(&config, &target).unwrap();
        target.schema = Some("tenant_b".into());
        let b = common(&config, &target).unwrap();
        assert_eq!(plain.table.to_string(), "app.history");
        assert_eq!(a.table.to_string(), "tenant_a.history");
        assert_eq!(a.key.key, LockKey::derived("d", &a.table).key);
        assert!(
            a.key.source.contains("miglock:d:tenant_a.history"),
            "{}",
            a.key.source
        );
        let keys: HashSet<i64> = [plain.key.key, a.key.key, b.key.key].into();
        assert_eq!(keys.len(), 3);
    }
}
