//! Other tools' folders, as they are: each layout knows its tool's file
//! names and version order ([`Layout::read_name`]), its annotations
//! ([`annotations`]) and its history table (`history`'s `Shape`).
//!
//! refinery's layout is miglock's own and stays exactly as it was; `auto`
//! (the default) picks another only when no file has a refinery name (see
//! [`detect`]).

use std::fmt;
use std::path::Path;

use super::names::{has_sql_extension, parse_file_name, version_in};
use super::Version;

pub mod annotations;
pub mod flyway;
pub mod placeholders;

/// A tool whose folder and history table miglock reads and writes as that
/// tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `V<n>__<name>.sql`, `refinery_schema_history`.
    #[default]
    Refinery,
    /// `<n>_<name>.sql` with `-- +goose Up` / `-- +goose Down`,
    /// `goose_db_version`.
    Goose,
    /// `<n>_<name>.up.sql` and `.down.sql`, `schema_migrations` (one row,
    /// with its `dirty` flag).
    GolangMigrate,
    /// `<n>_<name>.sql` with `-- migrate:up` / `-- migrate:down`,
    /// `schema_migrations` (a `version` per applied file).
    Dbmate,
    /// `<n>_<name>.sql` (or `.up.sql` / `.down.sql`), `_sqlx_migrations`
    /// with the SHA-384 of each file.
    Sqlx,
    /// `V<1.0.25>__<description>.sql` with `${placeholders}`,
    /// `flyway_schema_history` with its CRC-32 checksums.
    Flyway,
}

/// `--layout`: a layout, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutFlag {
    #[default]
    Auto,
    Fixed(Layout),
}

/// What a file's name makes of it, in a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileName {
    /// A migration to apply: its version and name.
    Up { version: Version, name: String },
    /// A down script (golang-migrate's and sqlx's `.down.sql`) of a
    /// version: never run by `apply`, run by `down`.
    Down { version: Version },
    /// Not a migration to this tool, which skips it without a word.
    Ignored,
    /// Refused, with every reason, and the version it still gives.
    Refused {
        why: String,
        version: Option<Version>,
    },
}

impl Layout {
    pub const ALL: [Layout; 6] = [
        Layout::Refinery,
        Layout::Flyway,
        Layout::Goose,
        Layout::GolangMigrate,
        Layout::Dbmate,
        Layout::Sqlx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layout::Refinery => "refinery",
            Layout::Goose => "goose",
            Layout::GolangMigrate => "golang-migrate",
            Layout::Dbmate => "dbmate",
            Layout::Sqlx => "sqlx",
            Layout::Flyway => "flyway",
        }
    }

    /// The history table its tool uses by default.
    pub fn default_table(self) -> &'static str {
        match self {
            Layout::Refinery => super::history::DEFAULT_TABLE,
            Layout::Goose => "goose_db_version",
            Layout::GolangMigrate | Layout::Dbmate => "schema_migrations",
            Layout::Sqlx => "_sqlx_migrations",
            Layout::Flyway => "flyway_schema_history",
        }
    }

    /// Whether its tool reads subfolders too (refinery and Flyway do; the
    /// others read the folder's own files only).
    pub fn recursive(self) -> bool {
        matches!(self, Layout::Refinery | Layout::Flyway)
    }

    /// What the file `file_name` is in this layout, as its tool reads it.
    pub fn read_name(self, file_name: &str) -> FileName {
        match self {
            Layout::Refinery => match parse_file_name(file_name) {
                Ok((version, name)) => FileName::Up {
                    version: version.into(),
                    name: name.to_string(),
                },
                Err(why) => FileName::Refused {
                    why,
                    version: version_in(file_name).map(Version::from),
                },
            },
            Layout::Goose => goose_name(file_name),
            Layout::GolangMigrate => golang_migrate_name(file_name),
            Layout::Dbmate => dbmate_name(file_name),
            Layout::Sqlx => sqlx_name(file_name),
            Layout::Flyway => flyway::name(file_name),
        }
    }

    /// The version as its tool writes it in its history table: dbmate
    /// keeps the file's digits as text (`001` stays `001`).
    pub fn version_text(self, path: &Path, version: &Version) -> String {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        match self {
            Layout::Dbmate => {
                let digits = name.bytes().take_while(u8::is_ascii_digit).count();
                name[..digits].to_string()
            }
            Layout::Flyway => flyway::version_text(name).unwrap_or_else(|| version.to_string()),
            _ => version.to_string(),
        }
    }

    /// Whether a renamed file of this layout is a different migration:
    /// refinery records the name and Flyway the description, and both
    /// check it; the others record no name (sqlx records a description it
    /// never checks).
    pub fn checks_names(self) -> bool {
        matches!(self, Layout::Refinery | Layout::Flyway)
    }

    /// Whether the history's `recorded` name is the file name `name`'s
    /// ([`Layout::recorded_name`]), without making it (a no-op run asks it
    /// of every applied file).
    pub fn records_name_as(self, name: &str, recorded: &str) -> bool {
        match self {
            // Flyway's description is the name with each `_` a space, up
            // to its length limit.
            Layout::Flyway if name.len() == recorded.len() && name.len() <= 200 => name
                .bytes()
                .zip(recorded.bytes())
                .all(|(n, r)| if n == b'_' { r == b' ' } else { n == r }),
            Layout::Flyway => flyway::description(name) == recorded,
            _ => name == recorded,
        }
    }

    /// The name as its history table keeps it: Flyway's description.
    pub fn recorded_name(self, name: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Layout::Flyway => flyway::description(name).into(),
            _ => name.into(),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LayoutFlag {
    type Err = String;

    fn from_str(text: &str) -> Result<LayoutFlag, String> {
        if text == "auto" {
            return Ok(LayoutFlag::Auto);
        }
        if let Some(layout) = Layout::ALL.into_iter().find(|l| l.name() == text) {
            return Ok(LayoutFlag::Fixed(layout));
        }
        Err(format!(
            "unknown layout {:?}: expected auto, {}",
            crate::parse::shorten(text, 40),
            Layout::ALL.map(Layout::name).join(", ")
        ))
    }
}

impl LayoutFlag {
    /// The layout of the folder `dir`: as given, or told from the folder
    /// (`Err` when it cannot be told).
    pub fn resolve(self, dir: &Path) -> Result<Layout, String> {
        match self {
            LayoutFlag::Fixed(layout) => Ok(layout),
            LayoutFlag::Auto => {
                let layout = detect(dir)?;
                // Said once per run: which tool's table a run writes is no
                // detail.
                if layout != Layout::Refinery {
                    log::info!(
                        "LAYOUT layout={layout} (told from the files of {}; --layout names it)",
                        dir.display()
                    );
                }
                Ok(layout)
            }
        }
    }
}

/// A whole number of digits only (no sign), as a version.
fn digits_version(text: &str) -> Option<Version> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().map(Version::Number)
}

fn refused(why: String, version: Option<Version>) -> FileName {
    FileName::Refused { why, version }
}

/// sqlx: `<version>_<description>.sql`, `.up.sql` or `.down.sql`. A name
/// without `_` or not ending in `.sql` is skipped; one whose part before
/// the first `_` is not a number stops sqlx, and is refused here too.
fn sqlx_name(file_name: &str) -> FileName {
    let Some((version, rest)) = file_name.split_once('_') else {
        return FileName::Ignored;
    };
    if !rest.ends_with(".sql") {
        return FileName::Ignored;
    }
    let Some(version) = digits_version(version) else {
        return refused(
            format!(
                "expected an integer version before the first _ (sqlx's \
                 <version>_<description>.sql, e.g. 20240101000000_create_users.sql), found {version:?}"
            ),
            None,
        );
    };
    if rest.ends_with(".down.sql") {
        return FileName::Down { version };
    }
    let name = rest
        .strip_suffix(".up.sql")
        .or_else(|| rest.strip_suffix(".sql"))
        .unwrap_or(rest);
    FileName::Up {
        version,
        name: name.to_string(),
    }
}

/// goose: `<version>_<name>.sql`, a version of at least 1; the goose
/// command stops on any other `.sql` name, and so does miglock.
fn goose_name(file_name: &str) -> FileName {
    let Some(stem) = file_name.strip_suffix(".sql") else {
        return FileName::Ignored;
    };
    let Some((version, name)) = stem.split_once('_') else {
        return refused(
            format!(
                "goose wants a _ after the version (<version>_<name>.sql, e.g. \
                 00001_create_users.sql): it stops on {stem}.sql"
            ),
            digits_version(stem),
        );
    };
    match digits_version(version) {
        Some(Version::Number(0)) | None => refused(
            format!(
                "expected goose's <version>_<name>.sql with a version from 1 (e.g. \
                 00001_create_users.sql), found {version:?} before the first _"
            ),
            None,
        ),
        Some(version) => FileName::Up {
            version,
            name: name.to_string(),
        },
    }
}

/// golang-migrate: `<version>_<name>.up.<ext>` and `.down.<ext>`; any other
/// name is skipped.
fn golang_migrate_name(file_name: &str) -> FileName {
    let Some((version, rest)) = file_name.split_once('_') else {
        return FileName::Ignored;
    };
    let Some(version) = digits_version(version) else {
        return FileName::Ignored;
    };
    // `(.*)\.(down|up)\.(.*)`: the last `.up.` or `.down.` wins.
    let up = rest.rfind(".up.");
    let down = rest.rfind(".down.");
    match (up, down) {
        (Some(u), d) if d.is_none_or(|d| u > d) => FileName::Up {
            version,
            name: rest[..u].to_string(),
        },
        (_, Some(_)) => FileName::Down { version },
        _ => FileName::Ignored,
    }
}

/// dbmate: a name that starts with digits and ends in `.sql`; the version
/// is those digits, kept as text in its table.
fn dbmate_name(file_name: &str) -> FileName {
    let Some(stem) = file_name.strip_suffix(".sql") else {
        return FileName::Ignored;
    };
    let digits = stem.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return FileName::Ignored;
    }
    match digits_version(&stem[..digits]) {
        Some(version) => FileName::Up {
            version,
            name: stem[digits..].trim_start_matches('_').to_string(),
        },
        None => refused(
            format!("the version {} is too large", &stem[..digits]),
            None,
        ),
    }
}

/// What `auto` makes of a folder, from its files' names and, when they
/// are another tool's, the annotations at the head of one: Flyway when
/// every `V<digit>…` and `R__…` file, in the folder or a subfolder, has a
/// Flyway name and one has what only Flyway reads (a dotted or `_`-parted
/// version, `V1.0.25__`, or a repeatable `R__`); refinery when another
/// such file is there (a folder that read as refinery's before still
/// does: its misnamed files say so), or when no file has another tool's
/// name; golang-migrate for `.up.sql`/`.down.sql` pairs (sqlx's reversible
/// pairs look alike: a database sqlx migrated says so by its table);
/// goose or dbmate from their `Up` annotations; sqlx for plain
/// `<version>_<name>.sql` files. Other tools' annotations are not guessed
/// at: those are asked (`Err`). The database has its say too (see
/// `history`'s check of the tables already there).
pub fn detect(dir: &Path) -> Result<Layout, String> {
    // Of the folder's own files with another tool's name: the first by
    // name (its head tells goose's and dbmate's), and whether one is an
    // `.up.sql` (no list: a no-op run looks at every name).
    let (mut first, mut pairs): (Option<String>, bool) = (None, false);
    // Named V<digit>… or R__…: how many, how many of them Flyway's, and
    // whether one has what only Flyway reads, a dotted or `_`-parted
    // version or a repeatable's `R__`.
    let (mut v_named, mut flyways, mut flyway_only) = (0usize, 0usize, false);
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let top = folder == dir;
        let Ok(entries) = std::fs::read_dir(&folder) else {
            // Reading the folder says what is wrong with it.
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            // Real folders only: a link loop would never end.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push(entry.path());
                continue;
            }
            if !has_sql_extension(name) {
                continue;
            }
            let refinery_like = name.starts_with("R__")
                || name
                    .strip_prefix('V')
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            if refinery_like {
                v_named += 1;
                // Told without parsing the name (a no-op run looks at
                // every one).
                match flyway::version_shape(name) {
                    Some(dotted) => {
                        flyways += 1;
                        flyway_only |= dotted;
                    }
                    None => {
                        if let FileName::Up { version, .. } = flyway::name(name) {
                            flyways += 1;
                            flyway_only |= !matches!(version, Version::Number(_));
                        }
                    }
                }
                continue;
            }
            if top && name.as_bytes().first().is_some_and(u8::is_ascii_digit) && name.contains('_')
            {
                pairs |= name.ends_with(".up.sql");
                if first.as_deref().is_none_or(|f| name < f) {
                    first = Some(name.to_string());
                }
            }
        }
    }
    if v_named > 0 {
        // Every name Flyway's and one with a version or prefix only Flyway
        // reads: Flyway's folder (refinery stopped at that name before, so
        // no folder that ran as refinery's reads otherwise now); anything
        // else stays refinery's, its misnamed files saying so.
        return Ok(if flyways == v_named && flyway_only {
            Layout::Flyway
        } else {
            Layout::Refinery
        });
    }
    let Some(first) = first else {
        return Ok(Layout::Refinery);
    };
    if pairs {
        // golang-migrate's only shape, and sqlx's reversible one (`add
        // -r`): golang-migrate's. A database sqlx migrated says otherwise
        // by its table: `_sqlx_migrations` where golang-migrate's is
        // missing stops the run and names --layout sqlx.
        return Ok(Layout::GolangMigrate);
    }
    let head = read_head(&dir.join(&first));
    match annotations::tool_of(&head) {
        Some(Ok(layout)) => Ok(layout),
        Some(Err(tool)) => Err(format!(
            "{} holds {tool}'s annotations, and miglock does not read {tool}'s folders: name \
             the layout to run them as (--layout), or convert them",
            dir.join(&first).display()
        )),
        None => Ok(Layout::Sqlx),
    }
}

/// The first 8 KiB of a file as text (what is valid of it): where goose
/// and dbmate want their `Up` annotation.
fn read_head(path: &Path) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; 8192];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    buf.truncate(n);
    match String::from_utf8(buf) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests;
