//! The options several commands share, in groups: each command flattens
//! the groups it uses (and only those), so its help shows its own options,
//! each under its heading. The value-name convention is `args`'.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum, ValueHint};

use super::args::{CONNECTION, LOCK, MANY, MIGRATIONS, OUTPUT};
use crate::env::Env;
use crate::error::Failure;
use crate::migrations::LayoutFlag;
use crate::parse;

/// `--migrations`: every command that reads (or, for `new`, writes) the
/// migration files.
#[derive(Debug, Args)]
pub struct FolderArgs {
    /// Folder of V<version>__<name>.sql files (read recursively)
    ///
    /// A relative path is taken from the working directory.
    #[arg(
        long,
        env = "MIGLOCK_MIGRATIONS",
        value_name = "DIR",
        default_value = "migrations",
        value_hint = ValueHint::DirPath,
        help_heading = MIGRATIONS,
        display_order = 10
    )]
    pub migrations: PathBuf,

    /// Whose folder it is: auto, refinery, flyway, goose, golang-migrate, dbmate or sqlx
    ///
    /// Each layout reads its tool's file names, annotations (goose's -- +goose Up/Down,
    /// StatementBegin/End and NO TRANSACTION; dbmate's -- migrate:up/down and
    /// transaction:false; sqlx's -- no-transaction; golang-migrate's .up.sql files; Flyway's
    /// ${placeholders}, R__ repeatables and .sql.conf files) and history table, exactly as that
    /// tool does, so a database it migrated carries on, and the other way round. auto: flyway
    /// when every V…/R__ file is Flyway's and one has a dotted or _-parted version (V1.0.25__)
    /// or is an R__; refinery for any other folder with a V… file, or none of another tool's;
    /// golang-migrate for .up.sql pairs (give sqlx for sqlx's reversible ones); else goose,
    /// dbmate or sqlx from the names and the first file's annotations; other tools' annotations
    /// must be named. A layout told so, on a database with another tool's history table and none
    /// of its own, stops before anything runs (exit 6).
    #[arg(long, env = "MIGLOCK_LAYOUT", value_name = "LAYOUT", default_value = "auto",
          value_parser = layout, help_heading = MIGRATIONS, display_order = 10)]
    pub layout: LayoutFlag,

    /// How `migrations` was given (flag, variable or default), for the
    /// message about a folder that is not there. Set by
    /// [`Cli::parse_args`].
    #[arg(skip)]
    pub migrations_from: Option<clap::parser::ValueSource>,
}

/// `--layout`: a tool's name, or `auto`.
fn layout(text: &str) -> Result<LayoutFlag, String> {
    text.parse()
}

/// `--placeholder NAME=VALUE`: a name (letters, digits, `_`, `.`, `-`,
/// `:`), the value as it is.
pub fn placeholder(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{:?} is not NAME=VALUE", parse::shorten(text, 40)))?;
    let name = name.trim();
    let good = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':');
    if name.is_empty() || name.len() > 100 || !name.chars().all(good) {
        return Err(format!(
            "{:?} is not a placeholder name (letters, digits, _, ., - and :)",
            parse::shorten(name, 40)
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of {name} holds a NUL character"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `--placeholder`: the commands that read the files' text (all that read
/// the folder but `new`).
#[derive(Debug, Args)]
pub struct PlaceholderArgs {
    /// A value for Flyway's ${NAME} in the files (repeatable; MIGLOCK_PLACEHOLDERS: ';'-separated) [env: MIGLOCK_PLACEHOLDERS]
    ///
    /// --layout flyway: replaced as Flyway replaces it, anywhere in a file, the name in any case.
    /// Flyway's own flyway:table, flyway:database, flyway:user, flyway:filename,
    /// flyway:timestamp (UTC), flyway:workingDirectory and flyway:environment are known, and
    /// flyway:defaultSchema when --table names a schema. A pending file with a placeholder that
    /// has no value is a problem before anything runs (exit 6).
    #[arg(long = "placeholder", value_name = "NAME=VALUE", value_parser = placeholder,
          help_heading = MIGRATIONS, display_order = 12)]
    pub placeholders: Vec<(String, String)>,
}

impl PlaceholderArgs {
    /// `--placeholder`, else `MIGLOCK_PLACEHOLDERS` (`;`-separated).
    pub fn given(&self, env: Env) -> Result<Vec<(String, String)>, Failure> {
        if !self.placeholders.is_empty() {
            return Ok(self.placeholders.clone());
        }
        let Some(list) = env("MIGLOCK_PLACEHOLDERS") else {
            return Ok(Vec::new());
        };
        list.split(';')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                placeholder(s)
                    .map_err(|e| Failure::usage(anyhow::anyhow!("MIGLOCK_PLACEHOLDERS: {e}")))
            })
            .collect()
    }
}

/// `--allow-world-writable`: the commands that run or record migrations
/// (refused without it) and those that read them (warned about).
#[derive(Debug, Args)]
pub struct WritableArgs {
    /// Run migrations from a folder or file every user may write to (refused otherwise)
    ///
    /// A migrations folder (or subfolder) or a migration file that every user may write to
    /// (o+w, as on a shared volume; a sticky folder like /tmp included) lets whoever can write
    /// there run SQL with the migrator's privileges at the next deploy: apply, baseline and
    /// repair refuse it (exit 6, problem unsafe_permissions), status and wait warn. This flag
    /// allows it, for a folder that is meant to be shared. The variable takes 1/true/yes/on or
    /// 0/false/no/off.
    #[arg(long, env = "MIGLOCK_ALLOW_WORLD_WRITABLE", action = ArgAction::SetTrue,
          value_parser = parse::switch, help_heading = MIGRATIONS, display_order = 13)]
    pub allow_world_writable: bool,
}

/// `--ahead`: the commands that compare the history with the files.
#[derive(Debug, Args)]
pub struct AheadArgs {
    /// Migrations applied above the newest local file (by a newer release): allow or reject
    ///
    /// allow: they count as current (exit 0, a SCHEMA_AHEAD warning), so an older image still
    /// starts during a rolling deploy or after a rollback. reject: they make the set invalid
    /// (exit 6). Applied migrations below the newest local file whose file is gone are invalid
    /// either way.
    #[arg(long, env = "MIGLOCK_AHEAD", value_enum, value_name = "POLICY",
          default_value_t = AheadArg::Allow, help_heading = MIGRATIONS, display_order = 12)]
    pub ahead: AheadArg,
}

/// Where the database is and which lock and history table are miglock's:
/// every command that connects.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL or key=value string; never printed
    ///
    /// postgres://USER@HOST:PORT/DATABASE?sslmode=require, or host=HOST dbname=DATABASE ….
    /// Without it, the libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
    /// PGSSLMODE and PGAPPNAME are used; they also fill whatever the URL leaves out. With
    /// neither, the local socket is tried once, and its failure says what was tried. An empty
    /// value is a usage error. Keep the password out of this flag (the process list shows it):
    /// use DATABASE_URL, PGPASSWORD or ~/.pgpass.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "URL",
        value_hint = ValueHint::Url,
        help_heading = CONNECTION,
        display_order = 20
    )]
    pub database_url: Option<String>,

    /// Whether `database_url` came from the flag rather than from
    /// `DATABASE_URL`: a password there is in the process list. Set by
    /// [`Cli::parse_args`].
    #[arg(skip)]
    pub database_url_on_command_line: bool,

    /// Keep retrying the first connection this long (the database may still be starting)
    #[arg(long, env = "MIGLOCK_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "30s",
          value_parser = parse::duration, allow_hyphen_values = true,
          help_heading = CONNECTION, display_order = 21)]
    pub connect_timeout: Duration,

    /// History table, optionally schema-qualified (schema.table) [default: the layout's]
    ///
    /// By default the layout's tool's own: refinery_schema_history (refinery),
    /// flyway_schema_history, goose_db_version, schema_migrations (golang-migrate, dbmate),
    /// _sqlx_migrations. Letters, digits, _ and $;
    /// folded to lower case and always quoted.
    #[arg(long, env = "MIGLOCK_TABLE", value_name = "TABLE",
          help_heading = MIGRATIONS, display_order = 11)]
    pub table: Option<String>,

    /// Advisory-lock key, 0 to 9223372036854775807 (derived from the database and table unless given)
    ///
    /// By default derived from the database name and the table:
    /// ('x0' || left(md5('miglock:' || <database> || ':' || <table>), 15))::bit(64)::bigint,
    /// where <table> is --table as given, else refinery_schema_history whatever the layout (so
    /// unlock, which reads no folder, finds the same key).
    /// Set it when replicas reach one database under different names.
    #[arg(long, env = "MIGLOCK_LOCK_KEY", value_name = "KEY",
          value_parser = parse::lock_key, allow_negative_numbers = true,
          help_heading = LOCK, display_order = 32)]
    pub lock_key: Option<i64>,

    /// Also take the layout's tool's own advisory lock (flyway, golang-migrate, goose, sqlx): on or off
    ///
    /// on: in the flyway, golang-migrate, goose and sqlx layouts, the lock attempt also takes the
    /// key that tool takes (computed as it does: Flyway's from "schema"."table", golang-migrate's
    /// CLI and library keys, goose's 4097083626, sqlx's from current_database()), both or
    /// neither, and holds it for the run: a replica still running the old tool and one running
    /// miglock never migrate at once. While the old tool holds it, miglock waits as for its own
    /// key (LOCK_BUSY names the tool, its key and the holder). off: only miglock's own key, for
    /// a database where the old tool runs for something else. refinery and dbmate take no lock:
    /// nothing changes there. See docs/guide/other-tools.md.
    #[arg(long, env = "MIGLOCK_TOOL_LOCK", value_enum, value_name = "MODE",
          default_value_t = ToolLockArg::On, help_heading = LOCK, display_order = 33)]
    pub tool_lock: ToolLockArg,
}

/// `--tool-lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolLockArg {
    On,
    Off,
}

/// `--lock-mode`: the commands that take the lock or wait on it.
#[derive(Debug, Args)]
pub struct LockModeArgs {
    /// What the advisory lock is tied to: auto, session, or transaction (behind a transaction pooler)
    ///
    /// auto: told from the connection: session on a direct connection, transaction behind a
    /// connection pooler (the cancel key PostgreSQL gives carries its pg_backend_pid(), a
    /// pooler's does not); apply refuses a pooler in statement pooling mode (exit 2); over a
    /// Unix socket (or a host given by hostaddr alone) the key is not read: session. Behind a
    /// session-pooling PgBouncer, auto chooses transaction: give session there to run files
    /// without a transaction. session: one connection holds the lock (pg_try_advisory_lock) for
    /// the whole run; needs a direct connection or session pooling. transaction: each
    /// migration's transaction takes the lock itself (pg_try_advisory_xact_lock) and re-reads
    /// the history under it, so PgBouncer's pool_mode=transaction is safe; migrations without a
    /// transaction are refused (exit 6). baseline and repair always take the session lock: they
    /// warn when told transaction, and under auto refuse a pooler (exit 2).
    #[arg(long, env = "MIGLOCK_LOCK_MODE", value_enum, value_name = "MODE",
          default_value_t = LockModeArg::Auto, help_heading = LOCK, display_order = 31)]
    pub lock_mode: LockModeArg,
}

/// `--format`, `-q`, `-v`: every command that reports a result.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output: text, or one JSON object on stdout describing the result
    #[arg(long, env = "MIGLOCK_FORMAT", value_enum, value_name = "FORMAT",
          default_value_t = FormatArg::Text, help_heading = OUTPUT, display_order = 60)]
    pub format: FormatArg,

    /// Log warnings and errors only
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose",
          help_heading = OUTPUT, display_order = 61)]
    pub quiet: u8,

    /// Log more (-v debug, -vv trace); RUST_LOG applies when neither -q nor -v is given
    #[arg(short, long, action = ArgAction::Count, help_heading = OUTPUT, display_order = 62)]
    pub verbose: u8,

    /// Log lines on stderr: text, or one JSON object per line (for a log pipeline)
    ///
    /// json: time, level, event (the line's token, LOCK_ACQUIRED…), fields (its key=value
    /// pairs), message (the text line) and, with many targets, target; the error and summary
    /// lines too.
    #[arg(long, env = "MIGLOCK_LOG_FORMAT", value_enum, value_name = "FORMAT",
          default_value_t = FormatArg::Text, help_heading = OUTPUT, display_order = 63)]
    pub log_format: FormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AheadArg {
    Allow,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockModeArg {
    Auto,
    Session,
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

/// `--set`: settings for the session of `apply`, `status` and `wait`, so
/// that an apply line copied to `status` or `wait` (`--set search_path=…`)
/// finds the same history table.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Set a PostgreSQL setting for the session (repeatable; MIGLOCK_SET: ';'-separated) [env: MIGLOCK_SET]
    ///
    /// apply: overrides miglock's own choices for the migrating session: statement_timeout=0 (or
    /// --statement-timeout), lock_timeout=0 (given here, it replaces the --ddl-lock-timeout
    /// schedule), idle_session_timeout=0, idle_in_transaction_session_timeout=0,
    /// tcp_keepalives_idle=5, tcp_keepalives_interval=5, tcp_keepalives_count=3,
    /// client_connection_check_interval=1000 (ms). status, wait: set for their session too.
    /// Without the flag, MIGLOCK_SET holds them separated by ';' (a value may hold commas, as in
    /// search_path=app,public). Once connected, the server is asked whether it takes them before
    /// anything else: an unknown setting or a refused value is a usage error (exit 2).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse::setting,
          help_heading = CONNECTION, display_order = 22)]
    pub settings: Vec<(String, String)>,
}

/// `--wait`: how long the commands that take the lock keep trying it.
#[derive(Debug, Args)]
pub struct LockWaitArgs {
    /// How long to keep retrying the lock; 0 = one try (exit 3 when it stays busy)
    ///
    /// MIGRATION_LOCK_WAIT_SECONDS is read when neither this flag nor MIGLOCK_WAIT is set.
    #[arg(long, env = "MIGLOCK_WAIT", value_name = "DURATION", default_value = "30s",
          value_parser = parse::duration, allow_hyphen_values = true,
          help_heading = LOCK, display_order = 30)]
    pub wait: Duration,

    /// Whether `wait` was given (flag or `MIGLOCK_WAIT`) rather than
    /// defaulted: only then is `MIGRATION_LOCK_WAIT_SECONDS` not read. Set
    /// by [`Cli::parse_args`].
    #[arg(skip)]
    pub wait_given: bool,
}

/// `--metrics-file`: `apply`, `status` and `wait`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write the run's figures to FILE at its end, in Prometheus's text format
    ///
    /// For node_exporter's textfile collector (a FILE ending in .prom in its directory) or a
    /// push to a Pushgateway: the exit code and end time of the run, and per target its
    /// outcome, exit code, migrations applied and pending, lock wait and duration. Written
    /// beside FILE and renamed over it, so a collector never reads half of it; a file that
    /// cannot be written is a warning (METRICS_NOT_WRITTEN), not an error.
    #[arg(long, env = "MIGLOCK_METRICS_FILE", value_name = "FILE", value_hint = ValueHint::FilePath,
          help_heading = OUTPUT, display_order = 64)]
    pub metrics_file: Option<std::path::PathBuf>,
}

// Many databases (`apply`, `status`, `wait`): the options, and the seam
// to `fleet::FleetConfig`. The runner is src/fleet.rs.

#[derive(Debug, Args)]
#[command(next_help_heading = MANY)]
pub struct FleetArgs {
    /// Run on every target listed in FILE ('-' = stdin): one connection string per line
    ///
    /// URL or key=value; '#' comments and blank lines are ignored. A line may add
    /// schema=NAME (a URL query parameter, a token after the URL, or a key=value pair) to
    /// migrate that schema of the database: first on search_path, history table and lock
    /// key in it. The libpq variables fill what a line leaves out.
    #[arg(
        long,
        env = "MIGLOCK_DATABASES_FROM",
        value_name = "FILE",
        value_hint = ValueHint::FilePath,
        conflicts_with = "all_databases"
    )]
    pub databases_from: Option<String>,

    /// Run on every database of the --database-url server that accepts connections
    ///
    /// Templates are left out, and so is the database of --database-url (the maintenance
    /// database) unless --match matches it.
    #[arg(long)]
    pub all_databases: bool,

    /// Run on every schema of the --database-url database (a schema per tenant)
    ///
    /// Each schema is a target as a schema=NAME line would make it: first on search_path,
    /// history table and lock key in it. PostgreSQL's own schemas (pg_*, information_schema)
    /// and public are left out unless --schema-match matches them.
    #[arg(long, conflicts_with_all = ["databases_from", "all_databases"])]
    pub all_schemas: bool,

    /// With --all-schemas: only the schemas whose name is LIKE PATTERN, e.g. 'tenant\_%'
    #[arg(long, value_name = "PATTERN", requires = "all_schemas")]
    pub schema_match: Option<String>,

    /// With --all-databases: only the databases whose name is LIKE PATTERN, e.g. 'tenant\_%'
    ///
    /// SQL's LIKE: % matches any run of characters and _ any one character, so 'tenant_%' also
    /// matches tenantX1; write \_ for a literal underscore, as in 'tenant\_%'.
    #[arg(long = "match", value_name = "PATTERN", requires = "all_databases")]
    pub pattern: Option<String>,

    /// With many targets: how many run at once, one connection each (1 to 256)
    #[arg(long, env = "MIGLOCK_JOBS", value_name = "N", default_value_t = 4,
          value_parser = parse::jobs)]
    pub jobs: u16,

    /// With many targets: start no other target after the first failure (they are not_started)
    // Not a conflict with --max-failures: a variable counts as given for
    // clap, and MIGLOCK_MAX_FAILURES must not make the flag an error. The
    // smaller budget wins.
    #[arg(long)]
    pub fail_fast: bool,

    /// With many targets: run the first N alone; if any of them fails, start no other
    ///
    /// A wave of N targets (in list order, --jobs at once) before the rest, which start only
    /// once every one of the N succeeded or was current: a bad migration stops on a few
    /// tenants instead of reaching them all. Any failure counts (1, 2, 5, 6, 8); the rest are
    /// not_started (CANARY_FAILED). With --shard, each shard runs its own canary.
    #[arg(long, env = "MIGLOCK_CANARY", value_name = "N", value_parser = parse::targets_count)]
    pub canary: Option<usize>,

    /// With many targets: start no other target once N have failed (--fail-fast is 1; the smaller wins)
    #[arg(long, env = "MIGLOCK_MAX_FAILURES", value_name = "N",
          value_parser = parse::targets_count)]
    pub max_failures: Option<usize>,

    /// With many targets: an empty list (no line in FILE, no database matching) is no error
    ///
    /// Without it, a targets file holding only comments and blank lines, or an --all-databases
    /// (--match) that finds no database, is a usage error (exit 2): an empty list is far more
    /// often a wrong file or pattern than a wish to do nothing. The variable takes
    /// 1/true/yes/on or 0/false/no/off.
    #[arg(long, env = "MIGLOCK_ALLOW_NO_TARGETS", action = ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_no_targets: bool,

    /// With many targets: run only shard INDEX of COUNT (from 0), a stable slice of the list
    ///
    /// Each target belongs to one shard, by a hash of its database and schema, so COUNT
    /// workers given 0 … COUNT-1 (a CI matrix, machines of their own) cover every target
    /// exactly once, whatever the order of the list. The list is checked whole first (an empty
    /// one is still exit 2); an empty shard is exit 0, saying so.
    // --shard wins over --shards (not a conflict: a variable counts as
    // given for clap, and MIGLOCK_SHARDS must not make the flag an error).
    #[arg(long, env = "MIGLOCK_SHARD", value_name = "INDEX/COUNT", value_parser = parse::shard)]
    pub shard: Option<(u32, u32)>,

    /// With many targets: N shards, this worker's index from JOB_COMPLETION_INDEX
    ///
    /// For a Kubernetes Indexed Job (completionMode: Indexed, completions: N), which gives each
    /// pod its index in JOB_COMPLETION_INDEX: the same as --shard JOB_COMPLETION_INDEX/N.
    #[arg(long, env = "MIGLOCK_SHARDS", value_name = "N", value_parser = parse::shard_count)]
    pub shards: Option<u32>,
}
