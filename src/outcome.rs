//! Every exit code miglock returns is decided here, from one [`Outcome`].
//!
//! Entrypoint scripts branch on these codes, so they are part of the
//! contract (`CONTRACT.md`): never renumber one.

use std::fmt;

/// What a run ended with. The word (see [`Outcome::as_str`]) is the JSON
/// `outcome` field; the number is the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Pending migrations were applied; the schema is current.
    Applied,
    /// Nothing was pending; the schema is current.
    Current,
    /// A migration failed (rolled back) or another error happened.
    Failed,
    /// Bad flags, arguments, environment values or URL.
    Usage,
    /// The lock stayed busy for the whole wait; nothing changed.
    Skipped,
    /// `RUN_MIGRATIONS` is off; nothing was touched.
    Disabled,
    /// No connection within the connect timeout.
    Unavailable,
    /// The migration set cannot be read or is unsafe to run.
    Invalid,
    /// Migrations are pending (`status --check`, or `wait` timed out).
    Pending,
    /// A migration's table locks stayed out of reach for its whole
    /// `--ddl-lock-budget`; nothing of that migration was applied.
    Blocked,
    /// SIGINT, SIGTERM or SIGHUP; rolled back and lock released.
    Interrupted,
    /// `unlock`: the holder was terminated and the lock verified free.
    Released,
    /// `unlock`: nobody held the lock.
    Free,
    /// `unlock`: the holder was left alone (busy without `--force`, or termination failed).
    Refused,
    /// `new`: the migration file was created.
    Created,
    /// `baseline`: the versions up to N are recorded as applied.
    Baselined,
    /// `repair`: the divergent checksums were stored (or none needed it).
    Repaired,
    /// `repair`, `down`: the confirmation was answered no; nothing was
    /// changed.
    Declined,
    /// `down`: the migrations above `--to` were reverted (or none was
    /// applied).
    Reverted,
    /// `lint`: no finding at `deny` level.
    Linted,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Applied
            | Outcome::Current
            | Outcome::Released
            | Outcome::Free
            | Outcome::Created
            | Outcome::Baselined
            | Outcome::Repaired
            | Outcome::Reverted
            | Outcome::Linted => 0,
            Outcome::Failed | Outcome::Refused | Outcome::Declined => 1,
            Outcome::Usage => 2,
            Outcome::Skipped => 3,
            Outcome::Disabled => 4,
            Outcome::Unavailable => 5,
            Outcome::Invalid => 6,
            Outcome::Pending => 7,
            Outcome::Blocked => 8,
            Outcome::Interrupted => 130,
        }
    }

    /// `status` describes the state and exits 0 whatever it is, unless
    /// `--check` asks for the state's own code (7 pending, 6 invalid).
    pub fn status_exit_code(self, check: bool) -> u8 {
        match self {
            Outcome::Current | Outcome::Pending | Outcome::Invalid if !check => 0,
            _ => self.exit_code(),
        }
    }

    /// Many targets: the worst exit code any target had (or, for 130, the
    /// signal that stopped the run), in [`SEVERITY`] order; with none, the
    /// run applied when any target did, else the schema was current.
    pub fn of_many(exit_codes: &[u8], applied_any: bool) -> Outcome {
        SEVERITY
            .iter()
            .copied()
            .find(|worst| exit_codes.contains(&worst.exit_code()))
            .unwrap_or(if applied_any {
                Outcome::Applied
            } else {
                Outcome::Current
            })
    }

    /// One line for the man page's EXIT STATUS.
    pub fn meaning(self) -> &'static str {
        match self {
            Outcome::Applied | Outcome::Current => "applied or current: the schema is current",
            Outcome::Released | Outcome::Free => "unlock: released or free",
            Outcome::Failed => "failed: a migration failed (rolled back) or another error",
            Outcome::Refused => "unlock refused: the holder was left alone",
            Outcome::Created => "new: the migration file was created",
            Outcome::Baselined => "baseline: the versions up to N are recorded as applied",
            Outcome::Repaired => "repair: the checksums were stored, or nothing needed it",
            Outcome::Declined => "repair or down declined: not confirmed, nothing was changed",
            Outcome::Reverted => "down: the migrations above --to were reverted, or none was applied",
            Outcome::Linted => "lint: no finding at deny level",
            Outcome::Usage => "usage: bad flags, arguments, environment values or URL",
            Outcome::Skipped => "skipped: the lock stayed busy for the whole --wait; nothing changed",
            Outcome::Disabled => "disabled: RUN_MIGRATIONS is off; nothing was touched",
            Outcome::Unavailable => "unavailable: no connection within --connect-timeout",
            Outcome::Invalid => "invalid: the migration set cannot be read or is unsafe to run",
            Outcome::Pending => "pending: status --check or apply --dry-run found pending migrations, or wait timed out",
            Outcome::Blocked => "blocked: a migration's table locks (or, with --rebuild-invalid-indexes, a rebuild's wait) stayed out of reach for the whole --ddl-lock-budget; nothing of that migration was applied (try again later)",
            Outcome::Interrupted => "interrupted: SIGINT, SIGTERM or SIGHUP; rolled back (a file without a transaction: what it committed stays, and the error says what), lock released",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Current => "current",
            Outcome::Failed => "failed",
            Outcome::Usage => "usage",
            Outcome::Skipped => "skipped",
            Outcome::Disabled => "disabled",
            Outcome::Unavailable => "unavailable",
            Outcome::Invalid => "invalid",
            Outcome::Pending => "pending",
            Outcome::Blocked => "blocked",
            Outcome::Interrupted => "interrupted",
            Outcome::Released => "released",
            Outcome::Free => "free",
            Outcome::Refused => "refused",
            Outcome::Created => "created",
            Outcome::Baselined => "baselined",
            Outcome::Repaired => "repaired",
            Outcome::Declined => "declined",
            Outcome::Reverted => "reverted",
            Outcome::Linted => "linted",
        }
    }
}

/// Worst first: a failure anywhere outweighs a usage error elsewhere, and
/// both outweigh targets that were merely busy or pending.
const SEVERITY: [Outcome; 8] = [
    Outcome::Failed,
    Outcome::Usage,
    Outcome::Invalid,
    Outcome::Unavailable,
    Outcome::Blocked,
    Outcome::Interrupted,
    Outcome::Skipped,
    Outcome::Pending,
];

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome::{self, *};

    const ALL: [Outcome; 19] = [
        Applied,
        Current,
        Failed,
        Usage,
        Skipped,
        Disabled,
        Unavailable,
        Invalid,
        Pending,
        Blocked,
        Interrupted,
        Released,
        Free,
        Refused,
        Created,
        Baselined,
        Repaired,
        Declined,
        Reverted,
    ];

    #[test]
    fn exit_codes_match_the_contract() {
        let table: Vec<(&str, u8)> = ALL.iter().map(|o| (o.as_str(), o.exit_code())).collect();
        assert_eq!(
            table,
            [
                ("applied", 0),
                ("current", 0),
                ("failed", 1),
                ("usage", 2),
                ("skipped", 3),
                ("disabled", 4),
                ("unavailable", 5),
                ("invalid", 6),
                ("pending", 7),
                ("blocked", 8),
                ("interrupted", 130),
                ("released", 0),
                ("free", 0),
                ("refused", 1),
                ("created", 0),
                ("baselined", 0),
                ("repaired", 0),
                ("declined", 1),
                ("reverted", 0),
            ]
        );
    }

    #[test]
    fn status_exits_0_for_any_state_unless_checking() {
        for state in [Current, Pending, Invalid] {
            assert_eq!(state.status_exit_code(false), 0);
            assert_eq!(state.status_exit_code(true), state.exit_code());
        }
        assert_eq!(Pending.status_exit_code(true), 7);
        assert_eq!(Invalid.status_exit_code(true), 6);
        for other in [Usage, Unavailable, Failed, Interrupted] {
            assert_eq!(other.status_exit_code(false), other.exit_code());
        }
    }

    #[test]
    fn many_targets_exit_with_the_worst_code() {
        let cases: [(&[u8], bool, Outcome); 11] = [
            (&[0, 0], true, Applied),
            (&[0], false, Current),
            (&[], false, Current),
            (&[7, 3], false, Skipped),
            (&[3, 130], false, Interrupted),
            (&[5, 130], false, Unavailable),
            (&[5, 6], false, Invalid),
            (&[6, 2, 0], true, Usage),
            (&[6, 1, 2], false, Failed),
            (&[8, 130, 3], false, Blocked),
            (&[8, 5], false, Unavailable),
        ];
        for (codes, applied, outcome) in cases {
            assert_eq!(Outcome::of_many(codes, applied), outcome, "{codes:?}");
        }
    }

    #[test]
    fn json_word_is_the_display_word() {
        for o in ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
            assert_eq!(o.to_string(), o.as_str());
        }
    }
}
