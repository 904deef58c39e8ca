//! The migration that reverts an applied one, for `down`: goose's and
//! dbmate's Down section of the same file, golang-migrate's and sqlx's
//! `.down.sql` beside it. It runs as any migration runs (one transaction
//! with its history change, or statement by statement), and its history
//! change takes the row away (golang-migrate's one row goes back to the
//! version before).

use std::sync::OnceLock;

use super::file;
use super::{refinery_version, Layout, LocalMigration, MigrationSet, Version};

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
                // Read as the folder's files are (an empty one is allowed:
                // golang-migrate and sqlx run nothing and change the
                // history; sqlx's `-- no-transaction` is read off it).
                let version = refinery_version(&migration.id.version);
                let facts = file::facts(path, &migration.id.name, version, self.layout)
                    .map_err(|why| format!("{}: {why}", path.display()))?;
                let mut down = LocalMigration::read(
                    migration.id.clone(),
                    path.clone(),
                    self.layout,
                    &facts,
                    &self.placeholders,
                );
                if let Some(tool) = &mut down.tool {
                    tool.reverts = reverts;
                }
                Ok(down)
            }
            Layout::Refinery | Layout::Flyway => Err(format!(
                "the {} layout has no down migrations: write a new migration that reverts {}",
                self.layout, migration
            )),
        }
    }
}
