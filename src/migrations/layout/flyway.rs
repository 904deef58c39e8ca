//! Flyway's folder, as Flyway (OSS, its defaults) reads it: versioned
//! files `V<version>__<description>.sql` (the suffix in any case), the
//! version digits parted by `.` or `_` (`V1.0.25__`, `V20210608_1249__`),
//! its `${placeholders}`, and its checksum, a CRC-32 of the file's lines.
//! Repeatable migrations (`R__<description>.sql`) have no version: they
//! run after the versioned ones, each time their checksum changes.
//!
//! Callbacks (`afterMigrate.sql`…) and baseline migrations (`B…`) are
//! refused, not skipped: Flyway would run them, and miglock does not. Undo files (`U…`) are Flyway Teams'
//! and skipped, as Flyway's free edition skips them.

use super::FileName;
use crate::migrations::names::{dunder, split_dunder};
use crate::migrations::Version;

/// Whether `file_name` is a versioned Flyway name, `V<version>__….sql` or
/// `V<version>.sql` (the suffix in any case), its version parts of digits
/// that fit a version: `Some(dotted)`, told without making anything.
/// `None` says only that this quick look cannot tell ([`name`] can).
pub fn version_shape(file_name: &str) -> Option<bool> {
    let rest = file_name.strip_prefix('V')?;
    let end = dunder(rest).unwrap_or(rest.len().checked_sub(4)?);
    let (version, after) = rest.split_at(end);
    if !(after.starts_with("__") || after.eq_ignore_ascii_case(".sql"))
        || !super::has_sql_extension(after)
        || version.is_empty()
        || version.len() > 50
    {
        return None;
    }
    let mut parts = 0;
    for part in version.split(['.', '_']) {
        if part.is_empty() || part.len() > 18 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parts += 1;
    }
    Some(parts > 1)
}

/// What Flyway makes of `file_name`.
pub fn name(file_name: &str) -> FileName {
    let len = file_name.len();
    let stem = match file_name.get(len.saturating_sub(4)..) {
        Some(suffix) if suffix.eq_ignore_ascii_case(".sql") => &file_name[..len - 4],
        _ => return FileName::Ignored,
    };
    if is_callback(stem) {
        return refused(format!(
            "{stem} is a Flyway callback, which miglock does not run: move it out of the folder"
        ));
    }
    if stem == "R" || stem.starts_with("R__") {
        return FileName::Up {
            version: Version::Repeatable,
            name: stem.get(3..).unwrap_or_default().to_string(),
        };
    }
    if stem.starts_with('B') && stem[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return refused("baseline migrations (B<version>__) are not supported".into());
    }
    if stem.starts_with('U') && stem[1..].starts_with(|c: char| c.is_ascii_digit()) {
        // Flyway Teams' undo: the free edition skips them too.
        return FileName::Ignored;
    }
    let Some(rest) = stem.strip_prefix('V') else {
        return FileName::Ignored;
    };
    let (version, description) = split_dunder(rest).unwrap_or((rest, ""));
    // Flyway's version column is VARCHAR(50): a longer one could not be
    // recorded once the migration ran.
    if version.len() > 50 {
        return refused(format!(
            "the version {version:?} is longer than the 50 characters Flyway's history keeps"
        ));
    }
    match version_of(version) {
        Some(version) => FileName::Up {
            version,
            name: description.to_string(),
        },
        None => refused(format!(
            "the version {version:?} is not Flyway's (digits parted by . or _, e.g. V1.0.25__ or \
             V20210608_1249__): Flyway itself would skip the file without running it"
        )),
    }
}

fn refused(why: String) -> FileName {
    FileName::Refused { why, version: None }
}

/// Flyway's callback names: an event (`beforeMigrate`, `afterEachMigrate`,
/// `createSchema`…), alone or before `__`.
fn is_callback(stem: &str) -> bool {
    let event = split_dunder(stem).map_or(stem, |(event, _)| event);
    (event.starts_with("before") || event.starts_with("after") || event == "createSchema")
        && event.bytes().all(|b| b.is_ascii_alphabetic())
}

/// A Flyway version: parts of digits, parted by `.` or `_`.
pub fn version_of(text: &str) -> Option<Version> {
    if text.is_empty() {
        return None;
    }
    let part = |part: &str| {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse::<i64>().ok()
    };
    // Most versions are one number: no list to build.
    if !text.contains(['.', '_']) {
        return part(text).map(Version::Number);
    }
    let parts = text
        .split(['.', '_'])
        .map(part)
        .collect::<Option<Vec<i64>>>()?;
    Some(Version::Dotted(parts.into_boxed_slice()))
}

/// The version as Flyway writes it in its table: the file's, `_` made
/// `.`, leading zeros kept (`V001__` is `001`).
pub fn version_text(file_name: &str) -> Option<String> {
    let rest = file_name.strip_prefix('V')?;
    // Without `__`, the whole name but its extension.
    let version = match split_dunder(rest) {
        Some((version, _)) => version,
        None => rest.get(..rest.len().saturating_sub(4)).unwrap_or(rest),
    };
    Some(version.replace('_', "."))
}

/// Flyway's description: the file's, `_` made a space, at most 200
/// characters (`…` as Flyway abbreviates it).
pub fn description(name: &str) -> String {
    let description = name.replace('_', " ");
    if description.chars().count() <= 200 {
        return description;
    }
    let mut short: String = description.chars().take(197).collect();
    short.push_str("...");
    short
}

/// Flyway's checksum, fed the file's bytes a chunk at a time: the CRC-32
/// of its lines without their line ends (`\n`, `\r`), the first line
/// without its byte-order mark, as a signed 32-bit number. Line ends and
/// a BOM do not change it; every other byte does.
pub struct Checksum {
    digest: crc::Digest<'static, u32>,
    /// Bytes of the start still to be compared with a BOM.
    bom: usize,
}

static CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const BOM: &[u8] = "\u{feff}".as_bytes();

impl Checksum {
    pub fn new() -> Checksum {
        Checksum {
            digest: CRC.digest(),
            bom: 0,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        // The BOM is only ever at the start; the first read holds it whole
        // (a read of fewer than 3 bytes is a file of fewer than 3).
        if self.bom == 0 {
            self.bom = 1;
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        for line in bytes.split(|b| *b == b'\n' || *b == b'\r') {
            self.digest.update(line);
        }
    }

    pub fn finish(self) -> i32 {
        self.digest.finalize() as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(bytes: &[u8]) -> i32 {
        let mut sum = Checksum::new();
        sum.update(bytes);
        sum.finish()
    }

    /// Vectors from a JDK running Flyway's own algorithm (and ebean's
    /// test of the same one).
    #[test]
    fn the_checksum_is_flyways() {
        assert_eq!(checksum(b"hello\n"), 907060870);
        assert_eq!(checksum("hello\u{e4}\u{fc}\u{fc}\n".as_bytes()), 1859426839);
        let lf = b"CREATE TABLE users (id int);\nINSERT INTO users VALUES (1);\n";
        assert_eq!(checksum(lf), -1929710232);
        let crlf = b"CREATE TABLE users (id int);\r\nINSERT INTO users VALUES (1);\r\n";
        assert_eq!(checksum(crlf), -1929710232);
        let bom = "\u{feff}CREATE TABLE users (id int);\nINSERT INTO users VALUES (1);";
        assert_eq!(checksum(bom.as_bytes()), -1929710232);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn names_and_versions_read_as_flyway_reads_them() {
        let up = |v: Version, n: &str| FileName::Up {
            version: v,
            name: n.into(),
        };
        let dotted = |parts: &[i64]| Version::Dotted(parts.into());
        assert_eq!(name("V1__init.sql"), up(Version::Number(1), "init"));
        assert_eq!(name("V1.0.25__add_x.SQL"), up(dotted(&[1, 0, 25]), "add_x"));
        assert_eq!(
            name("V20210608_1249__fix.sql"),
            up(dotted(&[20210608, 1249]), "fix")
        );
        assert_eq!(name("V2.sql"), up(Version::Number(2), ""));
        assert_eq!(name("U3__undo.sql"), FileName::Ignored);
        assert_eq!(name("notes.sql"), FileName::Ignored);
        assert_eq!(name("V1__x.txt"), FileName::Ignored);
        assert_eq!(name("R__views.sql"), up(Version::Repeatable, "views"));
        assert_eq!(name("R.sql"), up(Version::Repeatable, ""));
        for refused in [
            "afterMigrate.sql",
            "beforeEachMigrate__x.sql",
            "B5__b.sql",
            "V1.x__a.sql",
        ] {
            assert!(
                matches!(name(refused), FileName::Refused { .. }),
                "{refused}"
            );
        }
        let long = format!("V{}__x.sql", "1.".repeat(25) + "1");
        assert!(matches!(name(&long), FileName::Refused { .. }), "{long}");
        assert_eq!(version_text("V001__x.sql").as_deref(), Some("001"));
        assert_eq!(version_text("V1_1__x.sql").as_deref(), Some("1.1"));
        assert_eq!(version_text("V2.sql").as_deref(), Some("2"));
        assert_eq!(version_of("1.01"), version_of("1.1"));
        assert!(version_of("1.9") < version_of("1.10"));
        assert_eq!(description("add_users_table"), "add users table");
        assert_eq!(description(&"x".repeat(250)).chars().count(), 200);
    }
}
