//! `new` in another tool's folder: the next file named and laid out as
//! that tool's own command writes it (`sqlx migrate add`, `dbmate new`,
//! `goose create`, `migrate create`), so the folder stays that tool's.
//!
//! The version follows the folder: a UTC timestamp (`20240102150405`,
//! each tool's default) when the folder is empty or its versions are
//! timestamps, else the next number, as wide as the widest version there.

use anyhow::anyhow;

use super::write;
use crate::config::NewConfig;
use crate::context::Context;
use crate::error::Failure;
use crate::migrations::layout::{FileName, Layout};
use crate::migrations::Version;
use crate::outcome::Outcome;
use crate::report::Report;

/// A version at or above this is a timestamp (`yyyymmddHHMMSS`).
const TIMESTAMP: i64 = 10_000_000_000_000;

pub fn run(ctx: &Context, config: &NewConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let layout = config.layout;
    let name = &config.name;
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(Failure::usage(anyhow!(
            "invalid migration name {:?}: a name is letters, digits and _ only, e.g. \
             add_users_email",
            crate::parse::shorten(name, 80)
        )));
    }
    if config.no_transaction && matches!(layout, Layout::GolangMigrate | Layout::Flyway) {
        return Err(Failure::usage(anyhow!(
            "{layout} files have no annotation for running without a transaction: write \
             the statements that need it (CREATE INDEX CONCURRENTLY…) alone in their file, \
             which miglock runs outside a transaction"
        )));
    }
    let (highest, width) = highest(config)?;
    let next = highest.map(|h| h.checked_add(1));
    if next == Some(None) {
        return Err(Failure::invalid(anyhow!(
            "the highest version in {} is already {}: there is no next one",
            config.migrations.display(),
            i64::MAX
        )));
    }
    let next = next.flatten();
    let version = match (highest, next) {
        (Some(h), Some(n)) if h < TIMESTAMP => n,
        // The same second as the newest file, or a clock behind it.
        _ => now().max(next.unwrap_or(0)),
    };
    let digits = format!("{version:0width$}");
    let files: Vec<(String, String)> = match layout {
        Layout::Sqlx | Layout::Dbmate | Layout::Goose => {
            // The tool's own template, and with its no-transaction annotation.
            let (plain, no_transaction) = match layout {
                Layout::Sqlx => (
                    "-- Add migration script here\n",
                    "-- no-transaction\n-- Add migration script here\n",
                ),
                Layout::Dbmate => (
                    "-- migrate:up\n\n\n-- migrate:down\n\n",
                    "-- migrate:up transaction:false\n\n\n-- migrate:down\n\n",
                ),
                _ => (
                    "-- +goose Up\n\n\n-- +goose Down\n\n",
                    "-- +goose NO TRANSACTION\n-- +goose Up\n\n\n-- +goose Down\n\n",
                ),
            };
            let text = if config.no_transaction {
                no_transaction
            } else {
                plain
            };
            vec![(format!("{digits}_{name}.sql"), text.to_string())]
        }
        Layout::GolangMigrate => vec![
            (format!("{digits}_{name}.up.sql"), String::new()),
            (format!("{digits}_{name}.down.sql"), String::new()),
        ],
        Layout::Flyway => {
            let version = match dotted(config)? {
                Some(parts) => parts,
                None => digits.clone(),
            };
            vec![(format!("V{version}__{name}.sql"), String::new())]
        }
        // Not reached: `new` writes refinery's files itself.
        Layout::Refinery => vec![(format!("V{digits}__{name}.sql"), String::new())],
    };
    let mut paths = Vec::new();
    for (file_name, text) in &files {
        paths.push(write(&config.migrations, file_name, text)?);
    }
    log::info!("MIGRATION_CREATED version={version} name={name} layout={layout}");
    report.path = paths.first().map(|p| p.display().to_string());
    for path in &paths {
        ctx.out.line(&path.display().to_string());
    }
    Ok(Outcome::Created)
}

/// The folder's highest version, and how many digits to write a next
/// number with (the widest zero-padded version there).
fn highest(config: &NewConfig) -> Result<(Option<i64>, usize), Failure> {
    let mut highest = None;
    let mut width = 0;
    let entries = match std::fs::read_dir(&config.migrations) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, 0)),
        Err(e) => {
            return Err(Failure::failed(anyhow!(
                "cannot read the migrations folder {}: {e}",
                config.migrations.display()
            )))
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let FileName::Up {
            version: Version::Number(v),
            ..
        } = config.layout.read_name(&file_name)
        {
            highest = highest.max(Some(v));
            let digits = file_name.bytes().take_while(u8::is_ascii_digit).count();
            if file_name.starts_with('0') {
                width = width.max(digits);
            }
        }
    }
    if highest.is_some_and(|h| h >= TIMESTAMP) {
        width = 0;
    }
    Ok((highest, width))
}

/// A Flyway folder's next dotted version (its highest, the last part one
/// more: `1.0.25` → `1.0.26`), when its highest version is dotted.
fn dotted(config: &NewConfig) -> Result<Option<String>, Failure> {
    let mut highest: Option<(Version, String)> = None;
    let mut folders = vec![config.migrations.clone()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push(entry.path());
                continue;
            }
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let FileName::Up { version, .. } = config.layout.read_name(&file_name) {
                if highest.as_ref().is_none_or(|(h, _)| version > *h) {
                    let text = config.layout.version_text(&entry.path(), &version);
                    highest = Some((version, text));
                }
            }
        }
    }
    Ok(highest.and_then(|(version, text)| {
        let Version::Dotted(_) = version else {
            return None;
        };
        let (head, last) = text.rsplit_once('.')?;
        let next = last.parse::<u64>().ok()? + 1;
        Some(format!("{head}.{next:0width$}", width = last.len()))
    }))
}

/// Now in UTC as `yyyymmddHHMMSS`, the tools' timestamp version.
fn now() -> i64 {
    let t = time::OffsetDateTime::now_utc();
    let date = i64::from(t.year()) * 10_000 + i64::from(u8::from(t.month())) * 100;
    let time = i64::from(t.hour()) * 10_000 + i64::from(t.minute()) * 100;
    (date + i64::from(t.day())) * 1_000_000 + time + i64::from(t.second())
}
