//! Reading a migrations folder: every file, strictly, with every problem
//! of every file found in one pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::file::{self, io_reason, Facts};
use std::sync::Arc;

use super::layout::placeholders::Placeholders;
use super::layout::{FileName, Layout};
use super::problems::{Problem, ProblemKind, Problems};
use super::script_config;
use super::walk::{folder_problem, missing_folder, walk, writable_problem};
use super::{refinery_version, LocalMigration, MigrationId, Version};

/// The files of a migrations folder, sorted by version.
#[derive(Debug, Clone, Default)]
pub struct MigrationSet {
    pub migrations: Vec<LocalMigration>,
    /// Whose folder it is: how its names, annotations and history read.
    pub layout: Layout,
    /// The down files (golang-migrate's, sqlx's `.down.sql`), never run by
    /// `apply`: `down` runs them.
    pub downs: Vec<(Version, PathBuf)>,
    /// The values of Flyway's placeholders, for files read later.
    pub placeholders: Arc<Placeholders>,
    /// Flyway's repeatable migrations (`R__…`), in Flyway's order (by
    /// description): run after the versioned ones when changed.
    pub repeatables: Vec<LocalMigration>,
}

/// A folder read whole, problems and all: its good files as a set, and
/// what is wrong with the others, so that a run can say everything at once
/// (`every_problem`).
#[derive(Debug, Default)]
pub struct Reading {
    /// The well-named files that could be read, one per version.
    pub set: MigrationSet,
    /// What reading the folder found: the folder itself, misnamed,
    /// duplicate and unreadable files.
    pub problems: Vec<Problem>,
    /// Files that read well but are no migration as they stand (misnamed,
    /// or one of several with a version): each would be pending once put
    /// right, so their statements are checked as a pending file's are.
    pub strays: Vec<Stray>,
    /// The versions of files that are there but not in `set` (duplicate,
    /// unreadable, misnamed with a good version part): an applied one is
    /// not "gone".
    pub unusable: BTreeSet<Version>,
    /// The folder, subfolders and files every user may write to (see
    /// [`Reading::judge_writable`]).
    pub writable: Vec<Problem>,
}

/// A file that read well but is no migration as it stands.
#[derive(Debug, Clone)]
pub struct Stray {
    pub path: PathBuf,
    /// The version its name gives, if its version part is good.
    pub version: Option<Version>,
}

impl Reading {
    /// What to make of what every user may write to: whoever can add or
    /// change a migration there runs SQL with the migrator's privileges at
    /// the next deploy. Problems where migrations run or are recorded
    /// (`refuse`); warnings where refusing would only keep applications
    /// from starting (`status`, `wait`); neither, said at debug level, when
    /// the user allows it (`--allow-world-writable`), as ssh lets a key
    /// others may read be used when told to.
    pub fn judge_writable(&mut self, allow: bool, refuse: bool) {
        for problem in std::mem::take(&mut self.writable) {
            if allow {
                log::debug!("{} (allowed: --allow-world-writable)", problem.message);
            } else if refuse {
                self.problems.push(problem);
            } else {
                log::warn!(
                    "UNSAFE_PERMISSIONS {} (apply, baseline and repair refuse to run with it)",
                    problem.message
                );
            }
        }
    }

    /// The set, unless reading the folder found a problem.
    pub fn strict(self) -> Result<MigrationSet, Problems> {
        if self.problems.is_empty() {
            Ok(self.set)
        } else {
            Err(Problems(self.problems))
        }
    }
}

/// How a file's name reads.
enum Name {
    Good(Version, String),
    /// Refused; the version its name still gives.
    Refused(Option<Version>),
}

/// What reading one file came to.
enum Read {
    Migration(LocalMigration),
    Stray(Stray),
    Problem(Problem),
}

impl MigrationSet {
    /// Reads every file under `dir` (recursively, as refinery does). Any
    /// `.sql` file that is not a well-formed migration is a problem, except
    /// hidden files (a name starting with `.`), which are ignored.
    #[cfg(any(test, feature = "testing"))]
    pub fn load(dir: &Path) -> Result<MigrationSet, Problems> {
        MigrationSet::read(dir, Layout::Refinery).strict()
    }

    /// Reads every file under `dir` as [`MigrationSet::load`] does (in
    /// `layout`: its names, its annotations, its subfolders or not), and
    /// keeps what is good beside what is not.
    #[cfg(any(test, feature = "testing"))]
    pub fn read(dir: &Path, layout: Layout) -> Reading {
        MigrationSet::read_with(dir, layout, &Arc::default())
    }

    /// [`MigrationSet::read`], Flyway's placeholders to be replaced with
    /// `values`.
    pub fn read_with(dir: &Path, layout: Layout, values: &Arc<Placeholders>) -> Reading {
        let mut reading = Reading::default();
        reading.set.layout = layout;
        reading.set.placeholders = Arc::clone(values);
        let problems = &mut reading.problems;
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                problems.push(folder_problem(dir, "is not a folder"));
                return reading;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(folder_problem(dir, &missing_folder(dir)));
                return reading;
            }
            Err(e) => {
                problems.push(folder_problem(dir, &io_reason(&e)));
                return reading;
            }
        }

        let mut files = Vec::new();
        let mut ancestors = Vec::new();
        let mut configs = Vec::new();
        let writable = &mut reading.writable;
        walk(
            dir,
            layout.recursive(),
            &mut ancestors,
            &mut files,
            problems,
            writable,
            (layout == Layout::Flyway).then_some(&mut configs),
        );
        if layout == Layout::Goose {
            problems.extend(go_migrations(dir));
        }
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
                named.push((path, Name::Refused(None)));
                continue;
            };
            match layout.read_name(file_name) {
                FileName::Up { version, name } => named.push((path, Name::Good(version, name))),
                FileName::Down { version } => reading.set.downs.push((version, path)),
                FileName::Ignored => {
                    log::debug!("{}: not a migration to {layout}, skipped", path.display());
                }
                FileName::Refused { why, version } => {
                    problems.push(Problem {
                        kind: ProblemKind::Misnamed,
                        message: format!("{}: {why}", path.display()),
                        file: Some(path.clone()),
                        version: None,
                        line: None,
                    });
                    named.push((path, Name::Refused(version)));
                }
            }
        }
        let read = read_all(named, layout, values);
        // One vector, sorted, rather than a map of one vector per version
        // (a vector's first allocation holds four migrations).
        let mut found = Vec::with_capacity(read.len());
        for (read, writable) in read {
            reading.writable.extend(writable);
            match read {
                Read::Migration(migration) => found.push(migration),
                Read::Stray(stray) => {
                    reading.unusable.extend(stray.version.clone());
                    reading.strays.push(stray);
                }
                Read::Problem(problem) => {
                    reading.unusable.extend(problem.version.clone());
                    problems.push(problem);
                }
            }
        }

        if layout == Layout::Flyway {
            for migration in &mut found {
                migration.set_script(dir);
            }
            problems.extend(script_config::apply(&configs, &mut found));
        }
        // Stable: files of one version keep the order they were found in.
        found.sort_by(|a, b| a.id.version.cmp(&b.id.version));
        // Repeatables sort last; each is known by its description.
        let first_repeatable = found.partition_point(|m| !m.id.version.is_repeatable());
        let repeatables = found.split_off(first_repeatable);
        let (repeatables, duplicates) = by_description(repeatables);
        reading.set.repeatables = repeatables;
        for files in duplicates {
            problems.push(duplicate(
                format!("the repeatable migration {:?} is in", files[0].id.name),
                &files,
                None,
            ));
        }
        let (migrations, duplicates) =
            without_duplicates(found, |a, b| a.id.version == b.id.version);
        reading.set.migrations = migrations;
        for files in duplicates {
            let version = files[0].id.version.clone();
            problems.push(duplicate(
                format!("version {version} is used by"),
                &files,
                Some(&version),
            ));
            reading.unusable.insert(version.clone());
            reading.strays.extend(files.into_iter().map(|m| Stray {
                path: m.path,
                version: Some(version.clone()),
            }));
        }
        reading
    }

    pub fn last_version(&self) -> Option<&Version> {
        self.migrations.last().map(|m| &m.id.version)
    }
}

/// Repeatable migrations in Flyway's order, its description's (`_` read as
/// a space, compared as text), and the descriptions more than one file
/// has, which Flyway refuses.
fn by_description(
    mut repeatables: Vec<LocalMigration>,
) -> (Vec<LocalMigration>, Vec<Vec<LocalMigration>>) {
    let key = |m: &LocalMigration| super::layout::flyway::description(&m.id.name);
    repeatables.sort_by_cached_key(key);
    without_duplicates(repeatables, |a, b| key(a) == key(b))
}

/// The files of a sorted list that no neighbour is `same` as, and each
/// group of those that are.
fn without_duplicates(
    files: Vec<LocalMigration>,
    same: impl Fn(&LocalMigration, &LocalMigration) -> bool,
) -> (Vec<LocalMigration>, Vec<Vec<LocalMigration>>) {
    let (mut kept, mut duplicates) = (Vec::with_capacity(files.len()), Vec::new());
    let mut rest = files.into_iter().peekable();
    while let Some(first) = rest.next() {
        if rest.peek().is_none_or(|next| !same(&first, next)) {
            kept.push(first);
            continue;
        }
        let mut group = vec![first];
        while let Some(next) = rest.next_if(|m| same(&group[0], m)) {
            group.push(next);
        }
        duplicates.push(group);
    }
    (kept, duplicates)
}

/// Several files where one is allowed: `what` names it ("version 3 is
/// used by"), the files follow.
fn duplicate(what: String, files: &[LocalMigration], version: Option<&Version>) -> Problem {
    let list: Vec<String> = files.iter().map(|m| m.path.display().to_string()).collect();
    Problem {
        kind: ProblemKind::Duplicate,
        message: format!("{what} {} files: {}", files.len(), list.join(", ")),
        file: Some(files[0].path.clone()),
        version: version.cloned(),
        line: None,
    }
}

/// Reads and checks the files, on several threads when there are many:
/// on a no-op run, reading hundreds of small files is most of the work.
fn read_all(
    named: Vec<(PathBuf, Name)>,
    layout: Layout,
    values: &Arc<Placeholders>,
) -> Vec<(Read, Option<Problem>)> {
    let read_one = |named| read_one(named, layout, values);
    const PER_THREAD: usize = 64;
    if named.len() < 2 * PER_THREAD {
        return named.into_iter().map(read_one).collect();
    }
    let threads = cpus().min(8).min(named.len() / PER_THREAD).max(1);
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
    // This thread reads the first chunk itself: one thread fewer to start.
    let mut chunks = chunks.into_iter();
    let first = chunks.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(read_one).collect::<Vec<_>>()))
            .collect();
        let mut read: Vec<_> = first.into_iter().map(read_one).collect();
        for worker in workers {
            read.extend(
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        read
    })
}

/// The CPUs this process may run on. Not `available_parallelism`, which
/// also reads the cgroup's CPU quota from /proc and /sys: five file reads,
/// a measurable share of a no-op run. Reading files is mostly waiting on
/// the kernel, so a quota below the CPU count costs little here.
fn cpus() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and the call writes
    // at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            usize::try_from(libc::CPU_COUNT(&set)).map_or(1, |n| n.max(1))
        } else {
            1
        }
    }
}

/// goose's Go migrations (`00002_backfill.go`): goose runs them from a
/// binary built with them, miglock cannot, and skipping one would leave a
/// gap goose then refuses.
fn go_migrations(dir: &Path) -> Vec<Problem> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            name.ends_with(".go")
                && !name.ends_with("_test.go")
                && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|path| Problem {
            kind: ProblemKind::Misnamed,
            message: format!(
                "{}: a goose Go migration, which only a binary built with goose can run; \
                 miglock runs SQL files only (write it as SQL, or keep running this folder \
                 with goose)",
                path.display()
            ),
            file: Some(path),
            version: None,
            line: None,
        })
        .collect()
}

/// A misnamed file is read too: what is wrong with its content would
/// otherwise only show once it is renamed. Also whether every user may
/// write to it, from the file opened (no lookup of its own).
fn read_one(
    (path, name): (PathBuf, Name),
    layout: Layout,
    values: &Arc<Placeholders>,
) -> (Read, Option<Problem>) {
    let (checked, version) = match &name {
        Name::Good(version, name) => (
            file::facts(&path, name, refinery_version(version), layout),
            Some(version.clone()),
        ),
        Name::Refused(version) => (file::facts(&path, "", 0, layout), version.clone()),
    };
    let writable = checked
        .as_ref()
        .ok()
        .and_then(|facts| writable_problem(&path, facts.mode, false))
        .map(|problem| Problem {
            version: version.clone(),
            ..problem
        });
    let read = match (checked, name) {
        (
            Ok(Facts {
                sections: Err(why), ..
            }),
            _,
        ) => Read::Problem(Problem {
            kind: ProblemKind::Annotation,
            message: format!("{}: {why}", path.display()),
            file: Some(path.clone()),
            version,
            line: None,
        }),
        (Ok(facts), Name::Good(version, name)) => Read::Migration(LocalMigration::read(
            MigrationId { version, name },
            path,
            layout,
            &facts,
            values,
        )),
        (Ok(_), Name::Refused(version)) => Read::Stray(Stray { path, version }),
        (Err(why), _) => Read::Problem(Problem {
            kind: ProblemKind::Unreadable,
            message: format!("{}: {why}", path.display()),
            file: Some(path.clone()),
            version,
            line: None,
        }),
    };
    (read, writable)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn a_byte_order_mark_is_kept_for_the_checksum_and_left_out_of_the_sql() {
        let dir = tempfile::tempdir().unwrap();
        let text = "\u{feff}CREATE TABLE t (id int);\n";
        std::fs::write(dir.path().join("V1__bom.sql"), text).unwrap();
        let set = MigrationSet::load(dir.path()).unwrap();
        let m = &set.migrations[0];
        assert_eq!(m.read_script().unwrap(), "CREATE TABLE t (id int);\n");
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
    fn what_every_user_may_write_to_is_found_without_a_lookup_of_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        std::fs::write(dir.path().join("V1__a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.path().join("V2__b.sql"), "SELECT 2;").unwrap();
        chmod(&dir.path().join("V2__b.sql"), 0o646);
        chmod(dir.path(), 0o1777);
        let mut reading = MigrationSet::read(dir.path(), Layout::Refinery);
        let modes: Vec<(Option<Version>, bool)> = reading
            .writable
            .iter()
            .map(|p| (p.version.clone(), p.message.contains("mode 1777: sticky")))
            .collect();
        assert_eq!(modes, [(None, true), (Some(Version::from(2)), false)]);
        assert!(reading.writable[1].message.contains("mode 0646"));
        // Where migrations run they are problems; elsewhere, warnings.
        reading.judge_writable(false, true);
        assert_eq!(reading.problems.len(), 2);
        assert!(reading.writable.is_empty());
        let mut warned = MigrationSet::read(dir.path(), Layout::Refinery);
        warned.judge_writable(false, false);
        assert!(warned.problems.is_empty() && warned.writable.is_empty());
        chmod(dir.path(), 0o700);
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
