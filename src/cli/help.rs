//! What `--help` says beyond the flags: the long description, each
//! command's exit codes (`-h`), and its environment and examples
//! (`--help`); and [`command`], the one clap command line every use
//! builds on (parsing, completions, the man page).

use clap::{Arg, ArgAction, CommandFactory};

use super::Cli;

pub const LONG_ABOUT: &str = "\
Apply refinery-format SQL migrations (V<version>__<name>.sql) to PostgreSQL under an advisory \
lock, so that when many replicas start at once exactly one migrates and the others find the \
schema current or skip. Each migration and its history row (refinery's table) commit in one \
transaction.

The lock is tried in a bounded retry loop (--wait), never blocking inside the server, in one of \
two modes (--lock-mode): session holds it with pg_try_advisory_lock on the one connection that \
runs the migrations, for the whole run, which needs a direct connection or session pooling; \
transaction takes it inside each migration's transaction with pg_try_advisory_xact_lock and \
re-reads the history under it, which is safe behind PgBouncer's transaction pooling and refuses \
migrations that cannot run in a transaction. The default, auto, tells from the connection: \
session when PostgreSQL answers directly, transaction behind a connection pooler (whose cancel \
key does not carry pg_backend_pid()), and a pooler in statement pooling mode is refused.";

pub const AFTER_HELP: &str = "\
Each command's options: miglock <COMMAND> --help. The options of the folder, the connection, \
the lock and the output may also come before the command (miglock --format json status).

Exit codes: 0 applied/current, 1 failed, 2 usage, 3 skipped (lock busy), 4 disabled \
(RUN_MIGRATIONS off), 5 unavailable, 6 invalid migration set, 7 pending, 8 blocked (table \
locks), 130 interrupted.";

pub const AFTER_LONG_HELP: &str = "\
Each command's options: miglock <COMMAND> --help. The options of the folder, the connection, \
the lock and the output may also come before the command (miglock --format json status).

Examples:
  # In every replica's entrypoint: one migrates, the others find the schema current
  miglock apply --migrations /app/migrations
  # The first migration of a new project, then its state
  miglock new create_users --migrations db && miglock status --migrations db

Exit codes: 0 applied/current, 1 failed, 2 usage, 3 skipped (lock busy), 4 disabled \
(RUN_MIGRATIONS off), 5 unavailable, 6 invalid migration set, 7 pending, 8 blocked (table \
locks), 130 interrupted.";

/// The variables every command that connects reads besides its flags'.
macro_rules! environment {
    () => {
        "Environment:
  DATABASE_URL, else the libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
  PGSSLMODE…, say where to connect; ~/.pgpass holds passwords. MIGLOCK_INSTANCE names this
  replica (a pod name, a CI job id) in application_name, so that a DBA can tell sessions apart.
"
    };
}

pub const APPLY_EXIT: &str = "\
Exit codes: 0 applied or current, 1 failed, 2 usage, 3 skipped (the lock stayed busy), 4 \
disabled (RUN_MIGRATIONS off), 5 unavailable, 6 invalid migration set, 7 pending (--dry-run), 8 \
blocked (table locks), 130 interrupted.";

pub const APPLY_LONG: &str = concat!(
    environment!(),
    "  RUN_MIGRATIONS=0 (false, no, off) disables apply: exit 4, nothing read or touched.

Examples:
  # In every replica's entrypoint: one migrates, the others find the schema current
  miglock apply --migrations /app/migrations --wait 60s
  # What would run, changing nothing (exit 7 when something is pending)
  miglock apply --dry-run --format json

Exit codes: 0 applied or current, 1 failed, 2 usage, 3 skipped (the lock stayed busy), 4 \
disabled (RUN_MIGRATIONS off), 5 unavailable, 6 invalid migration set, 7 pending (--dry-run), 8 \
blocked (table locks), 130 interrupted."
);

pub const STATUS_EXIT: &str = "\
Exit codes: 0 whatever the state (current, pending, invalid); with --check 7 pending and 6 \
invalid; 1 failed, 2 usage, 5 unavailable, 130 interrupted.";

pub const STATUS_LONG: &str = concat!(
    environment!(),
    "
Examples:
  # Applied, pending and problems, and who holds or waits for the lock
  miglock status --migrations db
  # In CI: fail while migrations are pending or the set is invalid
  miglock status --check --format json

Exit codes: 0 whatever the state (current, pending, invalid); with --check 7 pending and 6 \
invalid; 1 failed, 2 usage, 5 unavailable, 130 interrupted."
);

pub const WAIT_EXIT: &str = "\
Exit codes: 0 current, 7 pending (--timeout passed), 6 invalid, 1 failed, 2 usage, 5 \
unavailable, 130 interrupted.";

pub const WAIT_LONG: &str = concat!(
    environment!(),
    "
Examples:
  # A worker that never migrates starts once the schema is current
  miglock wait --timeout 5m && exec worker
  # Every tenant database listed, eight at a time
  miglock wait --databases-from tenants.txt --jobs 8

Exit codes: 0 current, 7 pending (--timeout passed), 6 invalid, 1 failed, 2 usage, 5 \
unavailable, 130 interrupted."
);

pub const UNLOCK_EXIT: &str = "\
Exit codes: 0 released or free, 1 refused (a holder running a statement without --force, a \
declined prompt, a failed termination), 2 usage (no --yes without a terminal), 3 held \
(--dry-run), 5 unavailable, 130 interrupted.";

pub const UNLOCK_LONG: &str = concat!(
    environment!(),
    "
Examples:
  # Who holds the lock, and what unlock would do
  miglock unlock --dry-run
  # From a script: end the holder even if it is running a statement (its migration rolls back)
  miglock unlock --yes --force

Exit codes: 0 released or free, 1 refused (a holder running a statement without --force, a \
declined prompt, a failed termination), 2 usage (no --yes without a terminal), 3 held \
(--dry-run), 5 unavailable, 130 interrupted."
);

pub const BASELINE_EXIT: &str = "\
Exit codes: 0 baselined, 2 usage, 3 skipped (the lock stayed busy), 5 unavailable, 6 invalid \
(refused, nothing written), 130 interrupted.";

pub const BASELINE_LONG: &str = concat!(
    environment!(),
    "
Examples:
  # What would be recorded for a database whose schema already is V1..V12's
  miglock baseline --baseline-version 12 --dry-run
  # Record it, then run V13 onwards
  miglock baseline --baseline-version 12 && miglock apply

Exit codes: 0 baselined, 2 usage, 3 skipped (the lock stayed busy), 5 unavailable, 6 invalid \
(refused, nothing written), 130 interrupted."
);

pub const NEW_EXIT: &str = "\
Exit codes: 0 created, 1 the folder or file cannot be written, 2 usage (a name refinery cannot \
load, a file that exists).";

pub const NEW_LONG: &str = "\
Examples:
  # migrations/V1__create_users.sql in an empty folder, V<next>__create_users.sql otherwise
  miglock new create_users
  # A file that runs outside a transaction, in the folder db
  miglock new add_orders_index --no-transaction --migrations db

Exit codes: 0 created, 1 the folder or file cannot be written, 2 usage (a name refinery cannot \
load, a file that exists).";

pub const REPAIR_EXIT: &str = "\
Exit codes: 0 repaired (or nothing to repair), 1 declined or failed, 2 usage, 3 skipped (the \
lock stayed busy), 5 unavailable, 6 invalid, 130 interrupted.";

pub const REPAIR_LONG: &str = concat!(
    environment!(),
    "
Examples:
  # Which applied migrations changed, and the checksums repair would store
  miglock repair --dry-run
  # Store them for versions 3 and 4 only, without a prompt
  miglock repair --yes 3 4

Exit codes: 0 repaired (or nothing to repair), 1 declined or failed, 2 usage, 3 skipped (the \
lock stayed busy), 5 unavailable, 6 invalid, 130 interrupted."
);

pub const DOWN_EXIT: &str = "\
Exit codes: 0 reverted (or nothing to revert), 1 declined or failed, 2 usage (a layout without \
down scripts), 3 skipped (the lock stayed busy), 5 unavailable, 6 invalid (a migration without \
its file or down script), 8 blocked, 130 interrupted.";

pub const DOWN_LONG: &str = concat!(
    environment!(),
    "
Examples:
  # What going down to version 20240101000000 would revert
  miglock down --to 20240101000000 --dry-run
  # Revert the migrations above 3 without a prompt
  miglock down --to 3 --yes

Exit codes: 0 reverted (or nothing to revert), 1 declined or failed, 2 usage (a layout without \
down scripts), 3 skipped (the lock stayed busy), 5 unavailable, 6 invalid (a migration without \
its file or down script), 8 blocked, 130 interrupted."
);

pub const OTHER_EXIT: &str = "Exit codes: 0 printed, 1 stdout cannot be written, 2 usage.";

pub const COMPLETIONS_LONG: &str = "\
Examples:
  miglock completions bash > /etc/bash_completion.d/miglock
  miglock completions zsh > \"${fpath[1]}/_miglock\"

Exit codes: 0 printed, 1 stdout cannot be written, 2 usage.";

pub const MAN_LONG: &str = "\
Examples:
  miglock man > /usr/local/share/man/man1/miglock.1
  miglock man | man -l -

Exit codes: 0 printed, 1 stdout cannot be written, 2 usage.";

/// The options that were global before each command took only its own:
/// they may still come before the command (`miglock --format json
/// status`), and are still accepted, ignored with a warning, by a command
/// that does not use them.
pub const BEFORE_THE_COMMAND: [&str; 11] = [
    "database_url",
    "migrations",
    "table",
    "lock_key",
    "connect_timeout",
    "format",
    "ahead",
    "lock_mode",
    "allow_world_writable",
    "quiet",
    "verbose",
];

/// The command line: clap's, from the derive, and what the derive cannot
/// say.
///
/// - Environment values are never shown (`[env: NAME]`): help must read
///   the same whatever is set, and a man page made in a build with
///   `MIGLOCK_MIGRATIONS` set must not carry its value.
/// - [`BEFORE_THE_COMMAND`]: hidden global copies on the top level, so
///   they parse before the command. clap hands a global option's value to
///   the command below, which reads it as its own, and gives the copy to a
///   command that has no such option (hidden there: accepted, not shown).
///   The copies read no variable and have no default: the command's own
///   option does both.
/// - `baseline -V`: its `--version` is the old spelling of
///   `--baseline-version` for a release.
pub fn command() -> clap::Command {
    let mut cli = Cli::command();
    let mut copies: Vec<Arg> = Vec::new();
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if BEFORE_THE_COMMAND.contains(&id) && !copies.iter().any(|c| c.get_id() == id) {
                copies.push(
                    arg.clone()
                        .global(true)
                        .hide(true)
                        .env(None)
                        .default_value(None),
                );
            }
        }
    }
    for copy in copies {
        cli = cli.arg(copy);
    }
    cli = cli.mut_subcommand("baseline", |baseline| {
        // clap wants the version on the command itself once its own flag
        // is disabled (the man page and completions check it).
        baseline.version(env!("CARGO_PKG_VERSION")).arg(
            Arg::new("print_version")
                .short('V')
                .action(ArgAction::Version)
                .help("Print version"),
        )
    });
    hide_env_values(cli)
}

fn hide_env_values(command: clap::Command) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut command = command.mut_args(|arg| arg.hide_env_values(true));
    for name in names {
        command = command.mut_subcommand(name, hide_env_values);
    }
    command
}
