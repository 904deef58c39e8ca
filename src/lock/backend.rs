//! The sessions around the lock as `pg_stat_activity` shows them
//! ([`Backend`]), and who this process is when it holds or waits for the
//! key ([`Identity`]).

use std::fmt::Write as _;

use postgres::SimpleQueryRow;
use serde::Serialize;

use super::mode::{LockMode, TRANSACTION_HOLDING};

/// A server process (a session that holds or waits for the key, or one
/// blocked behind the holder) as `pg_stat_activity` shows it. Fields are
/// `None` where the role may not see them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    pub pid: i32,
    pub usename: Option<String>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub backend_start: Option<String>,
    pub state: Option<String>,
    pub state_since: Option<String>,
    /// Seconds spent in `state` so far.
    pub state_seconds: Option<f64>,
    pub query: Option<String>,
}

impl Backend {
    pub fn from_row(row: &SimpleQueryRow, first: usize) -> Option<Backend> {
        let text = |i: usize| row.try_get(first + i).ok().flatten().map(str::to_string);
        let pid = text(0)?.parse().ok()?;
        Some(Backend {
            pid,
            usename: text(1),
            application_name: text(2),
            client_addr: text(3),
            backend_start: text(4),
            state: text(5),
            state_since: text(6),
            state_seconds: text(7).and_then(|s| s.parse().ok()),
            query: text(8),
        })
    }

    /// Whether `pg_stat_activity` hides this session's details from the
    /// current role (it then shows no state and `<insufficient privilege>`).
    pub fn details_hidden(&self) -> bool {
        self.state.is_none()
            && self
                .query
                .as_deref()
                .is_none_or(|q| q == "<insufficient privilege>")
    }

    /// `pid 4242 "miglock apply holding host=api-1 pid=7" user app from 10.0.0.5, active for 12.5s: ALTER TABLE …`
    pub fn summary(&self) -> String {
        let s = self;
        let mut line = format!("pid {}", s.pid);
        if let Some(app) = s.application_name.as_deref().filter(|a| !a.is_empty()) {
            let _ = write!(line, " {app:?}");
        }
        if let Some(user) = &s.usename {
            let _ = write!(line, " user {user}");
        }
        if let Some(addr) = &s.client_addr {
            let _ = write!(line, " from {addr}");
        }
        if let Some(since) = &s.backend_start {
            let _ = write!(line, " connected {since}");
        }
        if let Some(state) = &s.state {
            let _ = write!(line, ", {state}");
            if let Some(seconds) = s.state_seconds {
                let _ = write!(line, " for {seconds}s");
            }
        }
        if let Some(query) = s
            .query
            .as_deref()
            .filter(|q| !q.is_empty() && !s.details_hidden())
        {
            let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = write!(line, ": {}", crate::parse::shorten(&query, 80));
        }
        line
    }

    /// Which `--lock-mode` a holder uses, told by the name miglock gives it
    /// (`pg_locks` shows a transaction-level and a session-level advisory
    /// lock alike): `None` when it is not a miglock name, or hidden.
    pub fn lock_mode(&self) -> Option<LockMode> {
        let name = self.application_name.as_deref()?;
        if !name.starts_with("miglock ") {
            return None;
        }
        if name.contains(TRANSACTION_HOLDING) {
            Some(LockMode::Transaction)
        } else {
            Some(LockMode::Session)
        }
    }

    /// `holder_pid=… holder_application_name="…"` for log lines.
    pub fn holder_log_fields(&self) -> String {
        match &self.application_name {
            Some(app) => format!("holder_pid={} holder_application_name={app:?}", self.pid),
            None => format!(
                "holder_pid={} holder_application_name=<not visible to this role>",
                self.pid
            ),
        }
    }
}

/// Who this process is, as `application_name` shows it:
/// `miglock apply holding host=web-1 pid=42 ci-job-7`. PostgreSQL keeps
/// 63 bytes of it, so the user's own name comes last.
#[derive(Debug, Clone)]
pub struct Identity {
    command: &'static str,
    host: String,
    pid: u32,
    instance: Option<String>,
}

impl Identity {
    /// Who runs `command`; `instance` is the user's own name for this
    /// process (`MIGLOCK_INSTANCE`, or the connection's `application_name`).
    pub fn new(command: &'static str, instance: Option<&str>) -> Identity {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Identity {
            command,
            host,
            pid: std::process::id(),
            instance: instance.map(str::to_string),
        }
    }

    pub fn application_name(&self, state: Option<&str>) -> String {
        let mut name = format!("miglock {}", self.command);
        if let Some(state) = state {
            name.push(' ');
            name.push_str(state);
        }
        name.push_str(&format!(" host={} pid={}", self.host, self.pid));
        if let Some(instance) = &self.instance {
            name.push(' ');
            name.push_str(instance);
        }
        let name: String = name.chars().filter(|c| !c.is_control()).collect();
        let mut end = name.len().min(63);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_fits_in_63_bytes_and_keeps_state_first() {
        let id = Identity {
            command: "apply",
            host: "web-1".into(),
            pid: 42,
            instance: Some("ci-job-7".into()),
        };
        assert_eq!(
            id.application_name(Some("holding")),
            "miglock apply holding host=web-1 pid=42 ci-job-7"
        );
        let long = Identity {
            instance: Some("é".repeat(40)),
            ..id
        };
        let name = long.application_name(Some("waiting"));
        assert!(
            name.len() <= 63 && name.starts_with("miglock apply waiting host=web-1 pid=42 é"),
            "{name}"
        );
    }
}
