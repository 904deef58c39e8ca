//! The migration set on disk, read strictly, and its comparison with the
//! history table.
//!
//! The format and the checksum are refinery's, so refinery, refinery_cli and
//! miglock recognise each other's history (the tests hold both against
//! refinery's own code). The strictness is miglock's: refinery silently
//! skips misnamed files, runs two files with the same version, and panics
//! on some names (`|1__x.sql` matches its `[U|V]` pattern and then reaches
//! `unreachable!`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::AheadPolicy;
use crate::history::AppliedMigration;
use crate::split::{self, Mode, Statement};

/// One `V<version>__<name>.sql` file.
#[derive(Debug, Clone)]
pub struct LocalMigration {
    pub version: i32,
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    pub checksum: u64,
}

impl LocalMigration {
    /// The SQL to send: the file without its UTF-8 byte-order mark, which
    /// PostgreSQL would take for part of the first word. The checksum
    /// keeps it, as refinery reads the file whole.
    pub fn script(&self) -> &str {
        script(&self.sql)
    }
}

fn script(sql: &str) -> &str {
    sql.strip_prefix('\u{feff}').unwrap_or(sql)
}

impl LocalMigration {
    /// How the file runs, and its statements when it runs without a
    /// transaction.
    pub fn plan(&self) -> (Mode, Vec<Statement<'_>>) {
        // Without the BOM: the splitter would read it as part of the first
        // word (`\u{feff}BEGIN`), and miss what that word says.
        let statements = split::split(self.script());
        (split::mode(self.script(), &statements), statements)
    }

    /// Why the file runs without a transaction (`marker`, or the kind of
    /// its first statement PostgreSQL refuses in one, `, mixed` when it
    /// holds others too); `None` when it runs in one.
    pub fn no_transaction(&self) -> Option<String> {
        match self.plan().0 {
            Mode::Transaction => None,
            Mode::NoTransaction { reason, mixed } => Some(if mixed {
                format!("{reason}, mixed")
            } else {
                reason.to_string()
            }),
        }
    }
}

impl fmt::Display for LocalMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}__{}", self.version, self.name)
    }
}

/// Why a migration set is unsafe to run. Every problem found is reported,
/// not just the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_path")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The line of `file` the problem is on, where it is on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The folder is missing or cannot be read.
    Folder,
    /// A `.sql` file whose name is not `V<version>__<name>.sql`.
    Misnamed,
    /// Two files with the same version.
    Duplicate,
    /// A file that cannot be read, is not UTF-8, holds a NUL byte, or is
    /// empty.
    Unreadable,
    /// An applied migration whose file changed.
    Divergent,
    /// An applied migration whose file is gone.
    Missing,
    /// A file not applied although a later version is.
    OutOfOrder,
    /// An applied migration newer than every file here (a newer release
    /// applied it), refused because of `--ahead reject`.
    Ahead,
    /// A pending file that runs in miglock's transaction but controls the
    /// transaction itself (BEGIN, COMMIT, SAVEPOINT…).
    TransactionControl,
    /// A pending file with a statement miglock cannot run (`COPY … FROM
    /// stdin`, `DISCARD ALL`).
    Unsupported,
}

/// A path in JSON even when it is not UTF-8 (bad bytes shown as U+FFFD):
/// the file that is misnamed for that very reason must still be named.
fn lossy_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_str(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

impl ProblemKind {
    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Folder => "folder",
            ProblemKind::Misnamed => "misnamed",
            ProblemKind::Duplicate => "duplicate",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Divergent => "divergent",
            ProblemKind::Missing => "missing",
            ProblemKind::OutOfOrder => "out_of_order",
            ProblemKind::Ahead => "ahead",
            ProblemKind::TransactionControl => "transaction_control",
            ProblemKind::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// All problems as one error, one per line.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the migration set is unsafe to run ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        if let Some(hint) = flyway_hint(&self.0) {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The files of a migrations folder, sorted by version.
#[derive(Debug, Clone, Default)]
pub struct MigrationSet {
    pub migrations: Vec<LocalMigration>,
}

impl MigrationSet {
    /// Reads every file under `dir` (recursively, as refinery does). Any
    /// `.sql` file that is not a well-formed migration is a problem, except
    /// hidden files (a name starting with `.`), which are ignored.
    pub fn load(dir: &Path) -> Result<MigrationSet, Problems> {
        let mut problems = Vec::new();
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Problems(vec![folder_problem(dir, "is not a folder")]));
            }
            Err(e) => {
                return Err(Problems(vec![folder_problem(dir, &io_reason(&e))]));
            }
        }

        let mut by_version: BTreeMap<i32, Vec<LocalMigration>> = BTreeMap::new();
        let mut files = Vec::new();
        let mut ancestors = Vec::new();
        walk(dir, &mut ancestors, &mut files, &mut problems);
        let mut named = Vec::with_capacity(files.len());
        for path in files {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                problems.push(Problem {
                    kind: ProblemKind::Misnamed,
                    message: format!("{}: the file name is not valid UTF-8", path.display()),
                    file: Some(path.clone()),
                    version: None,
                    line: None,
                });
                continue;
            };
            match parse_file_name(file_name) {
                Ok((version, name)) => {
                    let name = name.to_string();
                    named.push((path, version, name));
                }
                Err(why) => problems.push(Problem {
                    kind: ProblemKind::Misnamed,
                    message: format!("{}: {why}", path.display()),
                    file: Some(path.clone()),
                    version: None,
                    line: None,
                }),
            }
        }
        for read in read_all(named) {
            match read {
                Ok(migration) => by_version
                    .entry(migration.version)
                    .or_default()
                    .push(migration),
                Err(problem) => problems.push(problem),
            }
        }

        let mut migrations = Vec::with_capacity(by_version.len());
        for (version, mut files) in by_version {
            if files.len() > 1 {
                let list: Vec<String> =
                    files.iter().map(|m| m.path.display().to_string()).collect();
                problems.push(Problem {
                    kind: ProblemKind::Duplicate,
                    message: format!(
                        "version {version} is used by {} files: {}",
                        files.len(),
                        list.join(", ")
                    ),
                    file: Some(files[0].path.clone()),
                    version: Some(version.into()),
                    line: None,
                });
                continue;
            }
            migrations.push(files.remove(0));
        }
        if problems.is_empty() {
            Ok(MigrationSet { migrations })
        } else {
            Err(Problems(problems))
        }
    }

    pub fn last_version(&self) -> Option<i32> {
        self.migrations.last().map(|m| m.version)
    }
}

/// Reads and checks the files, on several threads when there are many:
/// on a no-op run, reading hundreds of small files is most of the work.
fn read_all(named: Vec<(PathBuf, i32, String)>) -> Vec<Result<LocalMigration, Problem>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(8).min(named.len() / 64).max(1);
    if threads == 1 {
        return named.into_iter().map(read_one).collect();
    }
    let chunk = named.len().div_ceil(threads);
    let mut chunks = Vec::new();
    let mut rest = named;
    while rest.len() > chunk {
        let tail = rest.split_off(chunk);
        chunks.push(rest);
        rest = tail;
    }
    chunks.push(rest);
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(read_one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn read_one((path, version, name): (PathBuf, i32, String)) -> Result<LocalMigration, Problem> {
    use std::io::Read;
    let unreadable = |why: String| Problem {
        kind: ProblemKind::Unreadable,
        message: format!("{}: {why}", path.display()),
        file: Some(path.clone()),
        version: Some(version.into()),
        line: None,
    };
    // open, read to the end, close: without the size lookup (statx) that
    // `fs::read` and `File::read_to_end` make, which costs as much as the read.
    let mut bytes = Vec::new();
    let read = std::fs::File::open(&path).and_then(|mut file| {
        let mut chunk = [0u8; 8192];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    });
    if let Err(e) = read {
        return Err(unreadable(format!("cannot be read ({})", io_reason(&e))));
    }
    let sql = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        unreadable(format!(
            "is not valid UTF-8 (first bad byte at offset {at})"
        ))
    })?;
    if let Some(at) = sql.find('\0') {
        let line = sql[..at].matches('\n').count() + 1;
        return Err(unreadable(format!(
            "contains a NUL byte (line {line}, offset {at}), which PostgreSQL cannot receive: \
             is it a UTF-16 file or a binary one?"
        )));
    }
    if script(&sql).trim().is_empty() {
        return Err(unreadable("is empty".into()));
    }
    Ok(LocalMigration {
        version,
        checksum: checksum(&name, version, &sql),
        name,
        path,
        sql,
    })
}

/// refinery's checksum, the one refinery and refinery_cli store: SipHash-1-3
/// with zero keys over the name, the version (as `i32`) and the SQL, each
/// fed through `Hash` — the calls `refinery::Migration::unapplied` makes.
/// Computed here because refinery only offers it behind its file-name
/// regex, whose compilation cost half of a whole no-op run; the tests
/// check it against refinery's own on every build.
pub fn checksum(name: &str, version: i32, sql: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = siphasher::sip::SipHasher13::new();
    name.hash(&mut hasher);
    version.hash(&mut hasher);
    sql.hash(&mut hasher);
    hasher.finish()
}

fn has_sql_extension(file_name: &str) -> bool {
    let bytes = file_name.as_bytes();
    bytes.len() >= 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".sql")
}

/// Checks a file name against `V<version>__<name>.sql` as refinery reads
/// it (name made of word characters), with an ASCII version from 1 to
/// 2147483647 (refinery's history column is INT4). A refused name comes
/// with every reason it fails, so one rename fixes it.
pub fn parse_file_name(file_name: &str) -> Result<(i32, &str), String> {
    match check_file_name(file_name) {
        (Some(parsed), reasons) if reasons.is_empty() => Ok(parsed),
        (_, reasons) => Err(format!("{} ({FORM})", reasons.join("; "))),
    }
}

const FORM: &str = "expected V<version>__<name>.sql, e.g. V1__create_users.sql";

/// The version and name when the name is good, and every reason it is not.
/// Each part is checked even after an earlier one failed.
fn check_file_name(file_name: &str) -> (Option<(i32, &str)>, Vec<String>) {
    let mut reasons = Vec::new();
    let stem = match file_name.strip_suffix(".sql") {
        Some(stem) => stem,
        None => {
            reasons.push("the extension must be .sql in lower case".to_string());
            // `.SQL` and the like are ASCII, so the cut is on a boundary.
            match file_name.len().checked_sub(4) {
                Some(end) if has_sql_extension(file_name) => &file_name[..end],
                _ => file_name,
            }
        }
    };
    let rest = if let Some(rest) = stem.strip_prefix('V') {
        rest
    } else if let Some(name) = stem.strip_prefix("R__") {
        reasons.push(
            "repeatable (R__) migrations are not supported: make it a versioned V<version>__ file"
                .into(),
        );
        check_name(name, &mut reasons);
        return (None, reasons);
    } else if let Some(rest) = stem.strip_prefix('U') {
        reasons.push(
            "unversioned (U) migrations are not supported: give it a V<version> prefix".into(),
        );
        rest
    } else {
        reasons.push("the name must start with V (upper case)".into());
        // `v1__x`, `|1__x`: one stray character where the V belongs.
        let mut chars = stem.chars();
        match (chars.next(), chars.clone().next()) {
            (Some(_), Some(next)) if next.is_ascii_digit() => chars.as_str(),
            _ => stem,
        }
    };
    let Some((version, name)) = rest.split_once("__") else {
        reasons.push("no \"__\" between version and name".into());
        return (None, reasons);
    };
    let version = check_version(version, &mut reasons);
    check_name(name, &mut reasons);
    (version.map(|v| (v, name)), reasons)
}

fn check_version(version: &str, reasons: &mut Vec<String>) -> Option<i32> {
    if version.is_empty() {
        reasons
            .push("the version between V and \"__\" is missing: it is not a whole number".into());
        return None;
    }
    if !version.bytes().all(|b| b.is_ascii_digit()) {
        reasons.push(format!(
            "the version {version:?} is not a whole number (digits 0-9 only)"
        ));
        return None;
    }
    match version.parse::<u64>() {
        Ok(0) => {
            reasons.push("version 0 is not allowed: versions start at 1".into());
            None
        }
        Ok(v) if v <= i32::MAX as u64 => Some(v as i32),
        _ => {
            reasons.push(format!(
                "the version {version} is too large (at most {})",
                i32::MAX
            ));
            None
        }
    }
}

fn check_name(name: &str, reasons: &mut Vec<String>) {
    if name.is_empty() {
        reasons.push("the name after \"__\" is empty".into());
        return;
    }
    // refinery's `\w`: Unicode letters, marks, digits and connector punctuation.
    let mut bad: Vec<char> = Vec::new();
    for c in name.chars() {
        if !is_word_char(c) && !bad.contains(&c) {
            bad.push(c);
        }
    }
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|c| format!("{c:?}")).collect();
        reasons.push(format!(
            "the name contains {}; use letters, digits and _ only",
            list.join(", ")
        ));
    }
}

/// Whether a refused name looks like one of Flyway's (`V1.0.10__x.sql`,
/// `V2_1__x.sql`, `R__x.sql`, `U1__x.sql`): such a set is usually being
/// moved over from Flyway whole, and wants a word on converting it.
fn is_flyway_style(file_name: &str) -> bool {
    let stem = file_name
        .get(..file_name.len().saturating_sub(4))
        .unwrap_or(file_name);
    if stem.starts_with("R__") {
        return true;
    }
    let Some(rest) = stem.strip_prefix('V').or_else(|| stem.strip_prefix('U')) else {
        return false;
    };
    let Some((version, _)) = rest.split_once("__") else {
        return false;
    };
    let undo = stem.starts_with('U');
    let dotted = version.contains(['.', '_'])
        && version
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'_');
    dotted || (undo && !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
}

/// The one word on Flyway names a set gets, however many files have them.
pub fn flyway_hint(problems: &[Problem]) -> Option<&'static str> {
    let flyway = problems.iter().any(|p| {
        p.kind == ProblemKind::Misnamed
            && p.file
                .as_deref()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .is_some_and(is_flyway_style)
    });
    flyway.then_some(
        "hint: some names look like Flyway's. miglock expects V<integer>__<name>.sql, the name made \
         of letters, digits and _. Give each file an integer version that keeps the order, e.g. \
         V1.0.10 → V10010 (every part padded to the same width) or renumber them 1, 2, 3…; \
         repeatable (R__) and undo (U) migrations are not supported.",
    )
}

/// refinery's `\w` (the regex crate's Unicode word class: letters, marks,
/// decimal digits, connector punctuation). ASCII is decided here; other
/// characters by the same regex class refinery uses, compiled only when a
/// name needs it (compiling the Unicode class costs more than a whole
/// no-op run).
fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    static WORD: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    WORD.get_or_init(|| regex::Regex::new(r"^\w$").ok())
        .as_ref()
        .is_some_and(|word| word.is_match(c.encode_utf8(&mut [0; 4])))
}

fn folder_problem(dir: &Path, why: &str) -> Problem {
    Problem {
        kind: ProblemKind::Folder,
        message: format!("migrations folder {}: {why}", dir.display()),
        file: Some(dir.to_path_buf()),
        version: None,
        line: None,
    }
}

/// Collects the `.sql` files under `dir` (following symbolic links, in
/// file-name order at each level, as refinery does), and a problem for
/// each entry that cannot be walked. Hand-written rather than walkdir:
/// sorting by name there re-parses every path on each comparison, which
/// cost more than reading the files.
fn walk(
    dir: &Path,
    ancestors: &mut Vec<(u64, u64)>,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<Problem>,
) {
    use std::os::unix::fs::MetadataExt;
    let unreadable = |path: &Path, why: String| Problem {
        kind: ProblemKind::Unreadable,
        message: format!("{}: {why}", path.display()),
        file: Some(path.to_path_buf()),
        version: None,
        line: None,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let kind = if ancestors.is_empty() {
                ProblemKind::Folder
            } else {
                ProblemKind::Unreadable
            };
            problems.push(Problem {
                kind,
                ..unreadable(dir, format!("cannot be read ({})", io_reason(&e)))
            });
            return;
        }
    };
    let id = std::fs::metadata(dir).map_or((0, 0), |meta| (meta.dev(), meta.ino()));
    ancestors.push(id);
    let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = entries
        .filter_map(Result::ok)
        .map(|e| (e.file_name(), e))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (name, entry) in entries {
        let path = entry.path();
        let is_sql = has_sql_extension(&name.to_string_lossy());
        // Editor and tool droppings (`.#V8__x.sql`, `.V1__a.sql.swp`) are
        // not migrations, even when their name ends in `.sql`.
        let hidden = name.as_encoded_bytes().starts_with(b".");
        // The type comes with the directory entry; only links cost a stat.
        let Ok(mut file_type) = entry.file_type() else {
            continue;
        };
        let mut target = None;
        if file_type.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(meta) => {
                    file_type = meta.file_type();
                    target = Some((meta.dev(), meta.ino()));
                }
                Err(e) => {
                    // An Emacs lock file is a dangling link.
                    if hidden {
                        skip_hidden(&path);
                    } else if is_sql {
                        problems.push(unreadable(
                            &path,
                            format!("cannot be read ({})", io_reason(&e)),
                        ));
                    }
                    continue;
                }
            }
        }
        if hidden && !file_type.is_dir() {
            skip_hidden(&path);
            continue;
        }
        if file_type.is_dir() {
            if is_sql {
                problems.push(unreadable(
                    &path,
                    "is a folder, not a migration file".into(),
                ));
                continue;
            }
            if let Some(id) = target {
                if ancestors.contains(&id) {
                    problems.push(unreadable(
                        &path,
                        "is a symbolic link loop back to a folder above it".into(),
                    ));
                    continue;
                }
            }
            walk(&path, ancestors, files, problems);
        } else if is_sql && file_type.is_file() {
            files.push(path);
        } else if is_sql {
            // A FIFO would block the read forever; a device is no migration.
            problems.push(unreadable(&path, "is not a regular file".into()));
        }
    }
    ancestors.pop();
}

fn skip_hidden(path: &Path) {
    log::debug!(
        "ignoring hidden file {} (a name starting with '.' is no migration)",
        path.display()
    );
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// What the history and the files say together.
#[derive(Debug, Clone, Default)]
pub struct Plan<'a> {
    /// Applied migrations, in version order (as the history has them).
    pub applied: Vec<AppliedMigration>,
    /// Files to apply, in version order, up to the target.
    pub pending: Vec<&'a LocalMigration>,
    /// Files past the target, left for a later run.
    pub beyond_target: usize,
    /// Applied migrations above the newest file (`--ahead allow`): a newer
    /// release applied them. Also in `applied`.
    pub ahead: Vec<AppliedMigration>,
    /// The newest file's version.
    pub newest_local: Option<i32>,
}

impl<'a> Plan<'a> {
    /// Compares files and history. Divergent, missing and out-of-order
    /// migrations are problems (refinery's `abort_divergent` and
    /// `abort_missing`, both on), except applied migrations above the
    /// newest file: during a rolling deploy or a rollback an older image
    /// meets a database a newer one has migrated, and refusing to start it
    /// would turn every rollback into an outage. `ahead` decides whether
    /// they are current (`allow`) or problems (`reject`).
    pub fn new(
        set: &'a MigrationSet,
        history: &[AppliedMigration],
        target: Option<i32>,
        ahead_policy: AheadPolicy,
    ) -> Result<Plan<'a>, Problems> {
        let mut sorted;
        let history = if history.is_sorted_by_key(|a| a.version) {
            history
        } else {
            sorted = history.to_vec();
            sorted.sort_by_key(|a| a.version);
            &sorted
        };
        let newest_applied = history.last().map(|a| a.version);
        let newest_local = set.last_version();
        let mut problems = Vec::new();
        let mut pending = Vec::new();
        let mut beyond_target = 0;
        let mut ahead = Vec::new();
        // Both lists are in version order: one merge pass, no lookups.
        let mut applied = history.iter().peekable();
        let mut files = set.migrations.iter().peekable();
        loop {
            let (a, m) = (applied.peek().copied(), files.peek().copied());
            match (a, m) {
                (None, None) => break,
                (Some(a), Some(m)) if a.version == i64::from(m.version) => {
                    if let Some(problem) = divergence(a, m) {
                        problems.push(problem);
                    }
                    applied.next();
                    files.next();
                }
                // Past the last file: every file is older than `a`. With no
                // file at all, the folder is far more likely the wrong one
                // (a bad --migrations, an image built without them) than a
                // release that has none, so that stays `missing`.
                (Some(a), None) => {
                    match (newest_local, ahead_policy) {
                        (None, _) => problems.push(missing(a)),
                        (Some(newest), AheadPolicy::Reject) => {
                            problems.push(rejected_ahead(a, newest));
                        }
                        (Some(_), AheadPolicy::Allow) => ahead.push(a.clone()),
                    }
                    applied.next();
                }
                (Some(a), Some(m)) if a.version < i64::from(m.version) => {
                    problems.push(missing(a));
                    applied.next();
                }
                (_, Some(m)) => {
                    let version = i64::from(m.version);
                    if let Some(newest) = newest_applied.filter(|newest| *newest > version) {
                        problems.push(Problem {
                            kind: ProblemKind::OutOfOrder,
                            message: format!(
                                "{}: not applied, but the later version {newest} is; give it a version above {newest}",
                                m.path.display()
                            ),
                            file: Some(m.path.clone()),
                            version: Some(version),
                            line: None,
                        });
                    } else if target.is_some_and(|t| m.version > t) {
                        beyond_target += 1;
                    } else {
                        pending.push(m);
                    }
                    files.next();
                }
            }
        }
        if problems.is_empty() {
            Ok(Plan {
                applied: history.to_vec(),
                pending,
                beyond_target,
                ahead,
                newest_local,
            })
        } else {
            Err(Problems(problems))
        }
    }
}

fn missing(applied: &AppliedMigration) -> Problem {
    Problem {
        kind: ProblemKind::Missing,
        message: format!(
            "V{}__{} was applied on {} but its file is gone from the migrations folder",
            applied.version, applied.name, applied.applied_on
        ),
        file: None,
        version: Some(applied.version),
        line: None,
    }
}

fn rejected_ahead(applied: &AppliedMigration, newest_local: i32) -> Problem {
    Problem {
        kind: ProblemKind::Ahead,
        message: format!(
            "V{}__{} was applied on {} by a newer release: it is newer than this image, whose \
             newest migration is V{newest_local} (--ahead reject refuses to run with it)",
            applied.version, applied.name, applied.applied_on
        ),
        file: None,
        version: Some(applied.version),
        line: None,
    }
}

/// An applied migration whose file no longer matches it: renamed, or with
/// other content (refinery's `abort_divergent`).
fn divergence(applied: &AppliedMigration, file: &LocalMigration) -> Option<Problem> {
    let what = if file.name != applied.name {
        format!(
            "the name changed from {:?} to {:?}",
            applied.name, file.name
        )
    } else if applied.checksum.parse::<u64>() != Ok(file.checksum) {
        format!(
            "its content changed (checksum {} applied, {} on disk)",
            applied.checksum, file.checksum
        )
    } else {
        return None;
    };
    Some(Problem {
        kind: ProblemKind::Divergent,
        message: format!(
            "{}: applied on {} but {what}",
            file.path.display(),
            applied.applied_on
        ),
        file: Some(file.path.clone()),
        version: Some(applied.version),
        line: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_kind_words_are_the_json_words() {
        use ProblemKind::*;
        for kind in [
            Folder, Misnamed, Duplicate, Unreadable, Divergent, Missing, OutOfOrder, Ahead,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn file_names_accepted_as_refinery_reads_them() {
        assert_eq!(parse_file_name("V1__init.sql"), Ok((1, "init")));
        assert_eq!(
            parse_file_name("V0010__add_users_2.sql"),
            Ok((10, "add_users_2"))
        );
        assert_eq!(
            parse_file_name("V2147483647__max.sql"),
            Ok((i32::MAX, "max"))
        );
        assert_eq!(
            parse_file_name("V3__créer_table.sql"),
            Ok((3, "créer_table"))
        );
    }

    #[test]
    fn file_names_refused_with_a_reason() {
        let cases = [
            ("V1_init.sql", "__"),
            ("V1__init.SQL", "lower case"),
            ("v1__init.sql", "start with V"),
            ("U1__init.sql", "unversioned"),
            ("|1__init.sql", "start with V"),
            ("V__init.sql", "whole number"),
            ("Vx__init.sql", "whole number"),
            ("V1.5__init.sql", "whole number"),
            ("R__init.sql", "repeatable"),
            ("V١__init.sql", "whole number"),
            ("V0__init.sql", "version 0"),
            ("V2147483648__big.sql", "too large"),
            ("V99999999999999999999999__big.sql", "too large"),
            ("V1__.sql", "empty"),
            ("V1__add-users.sql", "'-'"),
            ("V1__add users.sql", "' '"),
            ("V1__a.b.sql", "'.'"),
        ];
        for (name, why) in cases {
            let err = parse_file_name(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn a_bad_name_gets_every_reason_at_once() {
        let err = parse_file_name("V1.0.10__add-users to.sql").unwrap_err();
        assert!(err.contains("\"1.0.10\" is not a whole number"), "{err}");
        assert!(err.contains("'-', ' '"), "{err}");
        let err = parse_file_name("V99999999999__add-users.sql").unwrap_err();
        assert!(err.contains("too large") && err.contains("'-'"), "{err}");
        let err = parse_file_name("v0__.SQL").unwrap_err();
        for why in ["lower case", "start with V", "version 0", "empty"] {
            assert!(err.contains(why), "{why}: {err}");
        }
        let err = parse_file_name("R__views-all.sql").unwrap_err();
        assert!(err.contains("repeatable") && err.contains("'-'"), "{err}");
        assert_eq!(err.matches("expected V<version>").count(), 1, "{err}");
    }

    #[test]
    fn flyway_names_get_one_hint_for_the_whole_set() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "V1.0.10__a.sql",
            "V2_1__b.sql",
            "R__c.sql",
            "U3__d.sql",
            "V4__ok.sql",
        ] {
            std::fs::write(dir.path().join(name), "SELECT 1;").unwrap();
        }
        let problems = MigrationSet::load(dir.path()).unwrap_err();
        assert_eq!(problems.0.len(), 4, "{problems}");
        let text = problems.to_string();
        assert_eq!(text.matches("look like Flyway").count(), 1, "{text}");
        assert!(text.contains("V1.0.10 → V10010"), "{text}");
        for not_flyway in [
            "v1__a.sql",
            "V1__a-b.sql",
            "V1_a.sql",
            "Vx__a.sql",
            "U__a.sql",
        ] {
            assert!(!is_flyway_style(not_flyway), "{not_flyway}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_kept_for_the_checksum_and_left_out_of_the_sql() {
        let dir = tempfile::tempdir().unwrap();
        let text = "\u{feff}CREATE TABLE t (id int);\n";
        std::fs::write(dir.path().join("V1__bom.sql"), text).unwrap();
        let set = MigrationSet::load(dir.path()).unwrap();
        let m = &set.migrations[0];
        assert_eq!(m.script(), "CREATE TABLE t (id int);\n");
        let theirs = refinery::Migration::unapplied("V1__bom", text).unwrap();
        assert_eq!(m.checksum, theirs.checksum());
        // A mark and nothing else is an empty file.
        std::fs::write(dir.path().join("V1__bom.sql"), "\u{feff}\n").unwrap();
        let problems = MigrationSet::load(dir.path()).unwrap_err();
        assert!(problems.to_string().contains("is empty"), "{problems}");
    }

    #[test]
    fn a_nul_byte_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("V1__nul.sql"), "SELECT 1;\nSELECT '\0';").unwrap();
        let problems = MigrationSet::load(dir.path()).unwrap_err();
        assert_eq!(problems.0[0].kind, ProblemKind::Unreadable);
        assert!(
            problems.0[0]
                .message
                .contains("NUL byte (line 2, offset 18)"),
            "{problems}"
        );
    }

    #[test]
    fn refinery_agrees_with_the_names_accepted() {
        for name in ["V1__init", "V0010__add_users_2", "V3__créer_table"] {
            let m = refinery::Migration::unapplied(name, "select 1").unwrap();
            let file_name = format!("{name}.sql");
            let (v, n) = parse_file_name(&file_name).unwrap();
            assert_eq!((m.version(), m.name()), (v, n));
        }
    }

    #[test]
    fn checksum_is_refinerys() {
        for (version, name, sql) in [
            (1, "init", "create table t (id int);"),
            (2147483647, "créer_table", "-- é\n\r\nselect 'x';"),
            (42, "a", ""),
        ] {
            let theirs =
                refinery::Migration::unapplied(&format!("V{version}__{name}"), sql).unwrap();
            assert_eq!(
                checksum(name, version, sql),
                theirs.checksum(),
                "V{version}__{name}"
            );
        }
    }

    fn set(files: &[(i32, &str, &str)]) -> MigrationSet {
        MigrationSet {
            migrations: files
                .iter()
                .map(|(v, name, sql)| LocalMigration {
                    version: *v,
                    name: name.to_string(),
                    path: PathBuf::from(format!("m/V{v}__{name}.sql")),
                    sql: sql.to_string(),
                    checksum: checksum(name, *v, sql),
                })
                .collect(),
        }
    }

    fn applied(m: &LocalMigration) -> AppliedMigration {
        AppliedMigration {
            version: m.version.into(),
            name: m.name.clone(),
            applied_on: "2026-01-01T00:00:00Z".into(),
            checksum: m.checksum.to_string(),
        }
    }

    #[test]
    fn plan_lists_pending_after_applied() {
        let s = set(&[(1, "a", "x"), (2, "b", "y"), (5, "c", "z")]);
        let plan = Plan::new(&s, &[applied(&s.migrations[0])], None, ALLOW).unwrap();
        let pending: Vec<i32> = plan.pending.iter().map(|m| m.version).collect();
        assert_eq!(pending, [2, 5]);
        let plan = Plan::new(&s, &[applied(&s.migrations[0])], Some(4), ALLOW).unwrap();
        assert_eq!(plan.pending.len(), 1);
        assert_eq!(plan.beyond_target, 1);
    }

    #[test]
    fn plan_reports_every_divergent_missing_and_out_of_order_migration() {
        let s = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z"), (10, "d", "w")]);
        let mut renamed = applied(&s.migrations[0]);
        renamed.name = "old".into();
        let mut edited = applied(&s.migrations[1]);
        edited.checksum = "1".into();
        let gone = AppliedMigration {
            version: 9,
            ..applied(&s.migrations[2])
        };
        let err = Plan::new(&s, &[renamed, edited, gone], None, ALLOW).unwrap_err();
        let kinds: Vec<ProblemKind> = err.0.iter().map(|p| p.kind).collect();
        // In version order: V1, V2, V3 (a file below the applied V9), V9
        // (gone, and below the newest file V10, so no newer release's).
        assert_eq!(
            kinds,
            [
                ProblemKind::Divergent,
                ProblemKind::Divergent,
                ProblemKind::OutOfOrder,
                ProblemKind::Missing
            ]
        );
        let text = err.to_string();
        assert!(text.contains("4 problems"), "{text}");
        assert!(text.contains("name changed"), "{text}");
        assert!(text.contains("content changed"), "{text}");
        assert!(text.contains("file is gone"), "{text}");
        assert!(text.contains("later version 9"), "{text}");
    }

    const ALLOW: AheadPolicy = AheadPolicy::Allow;

    #[test]
    fn applied_migrations_above_the_newest_file_are_ahead_not_missing() {
        let new = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z"), (5, "e", "v")]);
        let history: Vec<AppliedMigration> = new.migrations.iter().map(applied).collect();
        let old = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z")]);
        let plan = Plan::new(&old, &history, None, ALLOW).unwrap();
        assert!(plan.pending.is_empty());
        assert_eq!(plan.newest_local, Some(3));
        let ahead: Vec<i64> = plan.ahead.iter().map(|a| a.version).collect();
        assert_eq!(ahead, [5]);
        assert_eq!(plan.applied.len(), 4);

        let err = Plan::new(&old, &history, None, AheadPolicy::Reject).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].kind, ProblemKind::Ahead);
        assert_eq!(err.0[0].version, Some(5));
        let text = err.to_string();
        assert!(text.contains("newer than this image"), "{text}");
        assert!(text.contains("V3"), "{text}");
        assert!(!text.contains("gone"), "{text}");
    }

    #[test]
    fn ahead_never_excuses_a_gap_or_a_changed_file() {
        let new = set(&[(1, "a", "x"), (2, "b", "y"), (3, "c", "z"), (5, "e", "v")]);
        let mut history: Vec<AppliedMigration> = new.migrations.iter().map(applied).collect();
        history[0].checksum = "1".into();
        // V2 gone from the old image, though its V3 is there.
        let old = set(&[(1, "a", "x"), (3, "c", "z")]);
        let err = Plan::new(&old, &history, None, ALLOW).unwrap_err();
        let kinds: Vec<ProblemKind> = err.0.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::Divergent, ProblemKind::Missing]);
    }

    #[test]
    fn an_empty_folder_with_history_is_missing_everything_not_ahead() {
        let new = set(&[(1, "a", "x"), (2, "b", "y")]);
        let history: Vec<AppliedMigration> = new.migrations.iter().map(applied).collect();
        let err = Plan::new(&MigrationSet::default(), &history, None, ALLOW).unwrap_err();
        let kinds: Vec<ProblemKind> = err.0.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::Missing, ProblemKind::Missing]);
    }

    #[test]
    fn hidden_files_are_ignored_even_when_named_like_migrations() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("V1__a.sql"), "SELECT 1;").unwrap();
        // Vim's swap file, a hidden copy, and Emacs' lock file (a dangling link).
        std::fs::write(dir.path().join(".V1__a.sql.swp"), "junk").unwrap();
        std::fs::write(dir.path().join(".V2__copy.sql"), "SELECT 2;").unwrap();
        std::os::unix::fs::symlink("user@host.1234:1", dir.path().join(".#V8__x.sql")).unwrap();
        std::fs::write(dir.path().join(".sql"), "").unwrap();
        let set = MigrationSet::load(dir.path()).unwrap();
        let names: Vec<String> = set.migrations.iter().map(|m| m.to_string()).collect();
        assert_eq!(names, ["V1__a"]);
        // A visible misnamed file is still a problem.
        std::fs::write(dir.path().join("V8__x.sql.sql"), "SELECT 8;").unwrap();
        std::fs::write(dir.path().join("v9__x.sql"), "SELECT 9;").unwrap();
        let problems = MigrationSet::load(dir.path()).unwrap_err();
        assert_eq!(problems.0.len(), 2, "{problems}");
    }
}
