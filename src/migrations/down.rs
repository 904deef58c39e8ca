//! The migration that reverts an applied one, for `down`: goose's and
//! dbmate's Down section of the same file, golang-migrate's and sqlx's
//! `.down.sql` beside it. It runs as any migration runs (one transaction
//! with its history change, or statement by statement), and its history
//! change takes the row away (golang-migrate's one row goes back to the
//! version before).

use std::sync::OnceLock;

use super::file::{self, Checksum};
use super::layout::annotations::Sections;
use super::{Layout, LocalMigration, MigrationSet, Size, Version};

/// What a reverting migration undoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reverts {
    /// The newest local version below it: golang-migrate's row after it.
    pub previous: Option<Version>,
}

impl MigrationSet {
    /// The migration that reverts `migration`, or why there is none.
    pub fn down_of(&self, migration: &LocalMigration) -> Result<LocalMigration, String> {
        let previous = self
            .migrations
            .iter()
            .filter(|m| m.id.version < migration.id.version)
            .map(|m| m.id.version.clone())
            .next_back();
        let reverts = Some(Reverts { previous });
        match self.layout {
            Layout::Goose | Layout::Dbmate => {
                let marker = if self.layout == Layout::Goose {
                    "-- +goose Down"
                } else {
                    "-- migrate:down"
                };
                let part = migration.sections().down_part().ok_or_else(|| {
                    format!(
                        "{}: has no {marker} section, so nothing can revert it",
                        migration.path.display()
                    )
                })?;
                let mut tool = migration.tool().cloned().unwrap_or_default();
                tool.sections = part;
                tool.reverts = reverts;
                Ok(LocalMigration {
                    tool: Some(Box::new(tool)),
                    summary: OnceLock::new(),
                    ..migration.clone()
                })
            }
            Layout::Sqlx | Layout::GolangMigrate => {
                let path = self
                    .downs
                    .iter()
                    .find(|(version, _)| *version == migration.id.version)
                    .map(|(_, path)| path)
                    .ok_or_else(|| {
                        format!(
                            "{}: has no .down.sql file beside it, so nothing can revert it",
                            migration.path.display()
                        )
                    })?;
                // An empty down file is allowed: golang-migrate and sqlx
                // run nothing and change the history.
                let bytes = std::fs::read(path).map_err(|e| {
                    format!(
                        "{}: cannot be read ({})",
                        path.display(),
                        file::io_reason(&e)
                    )
                })?;
                if std::str::from_utf8(&bytes).is_err() || bytes.contains(&0) {
                    return Err(format!("{}: is not UTF-8 text", path.display()));
                }
                let version = migration
                    .id
                    .version
                    .as_number()
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or_default();
                let mut sum = Checksum::new(&migration.id.name, version);
                sum.update(&bytes);
                let no_transaction =
                    self.layout == Layout::Sqlx && bytes.starts_with(b"-- no-transaction");
                let mut down = LocalMigration::new(
                    migration.id.clone(),
                    path.clone(),
                    sum.finish(),
                    Size {
                        bytes: bytes.len() as u64,
                        lines: bytes.split(|b| *b == b'\n').count() as u64,
                    },
                );
                down.layout = self.layout;
                down.tool = Some(Box::new(super::ToolFile {
                    sections: Sections {
                        no_transaction,
                        ..Sections::default()
                    },
                    reverts,
                    ..Default::default()
                }));
                Ok(down)
            }
            Layout::Refinery | Layout::Flyway => Err(format!(
                "the {} layout has no down migrations: write a new migration that reverts {}",
                self.layout, migration
            )),
        }
    }
}
