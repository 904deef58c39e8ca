//! The result of a run: the JSON object `--format json` prints, filled in
//! as the command goes, so even a failed run reports what it did.

use serde::Serialize;

use crate::config::Common;
use crate::error::{ErrorDetail, Failure};
use crate::lock::LockHolder;
use crate::migrations::{Plan, Problem};
use crate::outcome::Outcome;

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: &'static str,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// `apply`: what this run applied. `status`: what the history holds.
    pub applied: Vec<AppliedEntry>,
    pub pending: Vec<PendingEntry>,
    pub lock: LockReport,
    pub error: Option<ErrorReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The database, as `user@host:port/database` (never the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `status`: the history table, and whether it exists yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableReport>,
    /// `unlock`: the sessions terminated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminated: Vec<i32>,
}

#[derive(Debug, Serialize)]
pub struct TableReport {
    pub name: String,
    pub exists: bool,
}

#[derive(Debug, Serialize)]
pub struct AppliedEntry {
    pub version: i64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_on: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PendingEntry {
    pub version: i64,
    pub name: String,
}

#[derive(Debug, Default, Serialize)]
pub struct LockReport {
    pub key: Option<i64>,
    pub key_source: Option<String>,
    pub waited_ms: u64,
    pub holder: Option<LockHolder>,
    pub waiting: Vec<LockHolder>,
    /// `status`: sessions blocked behind the holder (`pg_blocking_pids`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<LockHolder>,
}

#[derive(Debug, Serialize)]
pub struct ErrorReport {
    pub message: String,
    pub sqlstate: Option<String>,
    pub file: Option<String>,
    pub line: Option<usize>,
}

impl Report {
    pub fn new(command: &'static str) -> Report {
        Report {
            command,
            outcome: Outcome::Failed,
            exit_code: Outcome::Failed.exit_code(),
            applied: Vec::new(),
            pending: Vec::new(),
            lock: LockReport::default(),
            error: None,
            problems: Vec::new(),
            dry_run: false,
            database: None,
            table: None,
            terminated: Vec::new(),
        }
    }

    /// The database and the lock key a command works on.
    pub fn describe(&mut self, common: &Common) {
        self.lock.key = Some(common.key.key);
        self.lock.key_source = Some(common.key.source.clone());
        self.database = Some(common.target.to_string());
    }

    pub fn set_pending(&mut self, plan: &Plan) {
        self.pending = plan
            .pending
            .iter()
            .map(|m| PendingEntry {
                version: m.version.into(),
                name: m.name.clone(),
            })
            .collect();
    }

    pub fn finish(&mut self, outcome: Outcome, exit_code: u8) {
        self.outcome = outcome;
        self.exit_code = exit_code;
    }

    pub fn fail(&mut self, failure: &Failure, exit_code: u8) {
        self.finish(failure.outcome, exit_code);
        let ErrorDetail {
            sqlstate,
            file,
            line,
        } = failure.detail.clone();
        self.error = Some(ErrorReport {
            message: failure.message(),
            sqlstate,
            file: file.map(|f| f.display().to_string()),
            line,
        });
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            serde_json::json!({
                "command": self.command,
                "outcome": "failed",
                "exit_code": 1,
                "error": { "message": format!("cannot encode the result: {e}") },
            })
            .to_string()
        })
    }
}
