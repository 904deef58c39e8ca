//! One migration file on disk. Read twice, and never held between: once,
//! streamed, when the folder is read (its checksum and the checks every
//! file must pass), and again, whole, when it runs — checked against that
//! checksum, so what runs is what was planned. A no-op run and `status`
//! hold no migration's text, whatever the size of the files.

use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::Path;

use sha2::Digest;
use siphasher::sip::SipHasher13;

use super::layout::annotations::{Scanner, Sections};
use super::layout::{flyway, placeholders, Layout};

const BOM: &str = "\u{feff}";

/// What reading a file once tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub checksum: u64,
    pub size: Size,
    /// Its permission bits (of a link's target: the file opened).
    pub mode: u32,
    /// What its layout's annotations say (goose, dbmate, sqlx), or what
    /// is wrong with them.
    pub sections: Result<Sections, String>,
    /// sqlx's checksum, the SHA-384 of the file's bytes.
    pub sha384: Option<[u8; 48]>,
    /// Flyway's checksum, the CRC-32 of its lines.
    pub crc: Option<i32>,
    /// Flyway's placeholders in it, each with the first line it is on.
    pub placeholders: Vec<(String, u64)>,
}

/// A file's size, for the people who read about it (`repair`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    pub bytes: u64,
    /// As `str::lines` counts them.
    pub lines: u64,
}

/// refinery's checksum, the one refinery and refinery_cli store: SipHash-1-3
/// with zero keys over the name, the version (as `i32`) and the SQL, each
/// fed through `Hash` — the calls `refinery::Migration::unapplied` makes
/// (`str`'s `Hash` writes its bytes, then `0xff`). Fed here a chunk at a
/// time, which SipHash allows. Computed by hand because refinery only
/// offers it behind its file-name regex, whose compilation cost half of a
/// whole no-op run; the tests check it against refinery's own.
pub struct Checksum(SipHasher13);

impl Checksum {
    pub fn new(name: &str, version: i32) -> Checksum {
        let mut hasher = SipHasher13::new();
        name.hash(&mut hasher);
        version.hash(&mut hasher);
        Checksum(hasher)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    pub fn finish(mut self) -> u64 {
        self.0.write_u8(0xff);
        self.0.finish()
    }
}

/// The checksum of a whole text.
#[cfg(test)]
pub fn checksum(name: &str, version: i32, sql: &str) -> u64 {
    let mut sum = Checksum::new(name, version);
    sum.update(sql.as_bytes());
    sum.finish()
}

/// Reads the file at `path` once, a chunk at a time: its checksum, size
/// and mode, or why it cannot be a migration (unreadable, not UTF-8, a NUL
/// byte, empty). Open, stat the open file (who may write to it), read,
/// close: no lookup by path (`fs::read`'s statx costs as much as reading a
/// small file), no allocation.
pub fn facts(path: &Path, name: &str, version: i32, layout: Layout) -> Result<Facts, String> {
    // One buffer per reading thread, zeroed once: zeroing 8 KiB on the
    // stack for each file was a third of a no-op run's instructions.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CUT + CHUNK]);
    }
    BUF.with_borrow_mut(|buf| facts_in(buf, path, name, version, layout))
}

/// The bytes of a character the last read cut off go just before the next
/// read's, so every chunk is validated whole.
const CUT: usize = 3;
const CHUNK: usize = 8192;

fn facts_in(
    buf: &mut [u8],
    path: &Path,
    name: &str,
    version: i32,
    layout: Layout,
) -> Result<Facts, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::open(path).map_err(|e| cannot_read(&e))?;
    let metadata = file.metadata().map_err(|e| cannot_read(&e))?;
    let mode = metadata.permissions().mode();
    // Read up to the size it has, without the read that would find the
    // end (a third of a small file's cost); a file written meanwhile
    // fails its checksum when it runs, read whole then.
    let size = metadata.len();
    let mut sum = Checksum::new(name, version);
    let mut sha384 = (layout == Layout::Sqlx).then(sha2::Sha384::new);
    let mut crc = (layout == Layout::Flyway).then(flyway::Checksum::new);
    let mut annotated = (layout != Layout::Refinery).then(|| Lines::new(layout));
    let mut cut = 0;
    let mut bytes = 0u64;
    let mut newlines = 0u64;
    let mut last = None;
    let mut blank = true;
    // The byte-order mark is one character: whole in the first text decoded.
    let mut at_start = true;
    loop {
        let n = match file.read(&mut buf[CUT..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(cannot_read(&e)),
        };
        let read = &buf[CUT..CUT + n];
        sum.update(read);
        if let Some(sha) = &mut sha384 {
            sha.update(read);
        }
        if let Some(crc) = &mut crc {
            crc.update(read);
        }
        if bytes == 0 {
            if let Some(lines) = &mut annotated {
                lines.scanner.first_bytes(read);
            }
        }
        if let Some(at) = read.iter().position(|b| *b == 0) {
            let line = newlines + read[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let offset = bytes + at as u64;
            return Err(format!(
                "contains a NUL byte (line {line}, offset {offset}), which PostgreSQL cannot receive: \
                 is it a UTF-16 file or a binary one?"
            ));
        }
        // From the cut character's first byte (`bytes - cut` in the file).
        let chunk = &buf[CUT - cut..CUT + n];
        let valid = match std::str::from_utf8(chunk) {
            Ok(text) => text.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(not_utf8(bytes - cut as u64 + e.valid_up_to() as u64)),
        };
        let mut text = std::str::from_utf8(&chunk[..valid]).unwrap_or_default();
        if at_start && !text.is_empty() {
            at_start = false;
            text = text.strip_prefix(BOM).unwrap_or(text);
        }
        if blank {
            blank = text.trim().is_empty();
        }
        newlines += text.bytes().filter(|b| *b == b'\n').count() as u64;
        if let Some(lines) = &mut annotated {
            lines.push(text);
        }
        if let Some(c) = text.chars().next_back() {
            last = Some(c);
        }
        let left = chunk.len() - valid;
        buf.copy_within(CUT + n - left..CUT + n, CUT - left);
        cut = left;
        bytes += n as u64;
        if bytes == size {
            break;
        }
    }
    if cut > 0 {
        return Err(not_utf8(bytes - cut as u64));
    }
    // golang-migrate, sqlx and Flyway run an empty file (their `create`
    // commands write them): it records its row. refinery's are refused.
    if blank && matches!(layout, Layout::Refinery) {
        return Err("is empty".into());
    }
    let (sections, placeholders) = match annotated {
        Some(lines) => lines.finish(),
        None => (Ok(Sections::default()), Vec::new()),
    };
    Ok(Facts {
        checksum: sum.finish(),
        size: Size {
            bytes,
            // `str::lines`: a last line without a newline still counts.
            lines: newlines + u64::from(last.is_some_and(|c| c != '\n')),
        },
        mode,
        sections,
        sha384: sha384.map(|sha| sha.finalize().into()),
        crc: crc.map(flyway::Checksum::finish),
        placeholders,
    })
}

/// A file's text, a chunk at a time, to its layout's [`Scanner`] a line
/// at a time. A line is held only up to what an annotation could be: a
/// long line is SQL.
struct Lines {
    scanner: Scanner,
    partial: String,
    /// Flyway's placeholders, fed the whole text (not the lines held).
    placeholders: Option<placeholders::Scan>,
}

impl Lines {
    const HELD: usize = 4096;

    fn new(layout: Layout) -> Lines {
        Lines {
            scanner: Scanner::new(layout),
            partial: String::new(),
            placeholders: (layout == Layout::Flyway).then(placeholders::Scan::new),
        }
    }

    fn push(&mut self, text: &str) {
        if let Some(scan) = &mut self.placeholders {
            scan.feed(text);
        }
        // Only goose's and dbmate's annotations are lines: the others'
        // files are not cut into them (a copy of every line of every file
        // on a no-op run).
        if !self.scanner.reads_lines() {
            return;
        }
        let mut rest = text;
        while let Some(at) = rest.find('\n') {
            self.hold(&rest[..at]);
            self.end_line();
            rest = &rest[at + 1..];
        }
        self.hold(rest);
    }

    fn hold(&mut self, piece: &str) {
        let room = Self::HELD.saturating_sub(self.partial.len());
        let mut cut = piece.len().min(room);
        while !piece.is_char_boundary(cut) {
            cut -= 1;
        }
        self.partial.push_str(&piece[..cut]);
    }

    fn end_line(&mut self) {
        self.scanner.line(&self.partial);
        self.partial.clear();
    }

    fn finish(mut self) -> (Result<Sections, String>, Vec<(String, u64)>) {
        if !self.partial.is_empty() {
            self.end_line();
        }
        let found = self.placeholders.map(placeholders::Scan::finish);
        (self.scanner.finish(), found.unwrap_or_default())
    }
}

/// The file's text without its byte-order mark (PostgreSQL would take it
/// for part of the first word), read whole, once its checksum is the one
/// the run planned with.
pub fn text(
    path: &Path,
    name: &str,
    version: i32,
    expected: u64,
    size: u64,
) -> Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|e| cannot_read(&e))?;
    let bytes = read_sized(&mut file, size).map_err(|e| cannot_read(&e))?;
    let mut sum = Checksum::new(name, version);
    sum.update(&bytes);
    let now = sum.finish();
    if now != expected {
        return Err(format!(
            "changed since this run read it (checksum {expected} then, {now} now)"
        ));
    }
    let mut text =
        String::from_utf8(bytes).map_err(|e| not_utf8(e.utf8_error().valid_up_to() as u64))?;
    if text.starts_with(BOM) {
        text.drain(..BOM.len());
    }
    Ok(text)
}

/// Reads a file whose size was `size` when the folder was read: one read
/// of one byte more than that, when the file is as it was (`fs::read` adds
/// a statx and a read that finds the end). A file that changed in size is
/// read to its end, and its checksum tells.
fn read_sized(file: &mut std::fs::File, size: u64) -> io::Result<Vec<u8>> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let want = size.saturating_add(1);
    let mut bytes = vec![0u8; want.min(1 << 30)];
    let mut filled = 0;
    loop {
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        // The size it had: the end, unless a read came back short just
        // there, which the checksum would tell.
        if filled == size {
            break;
        }
        if filled == bytes.len() {
            // Longer than when the folder was read.
            bytes.truncate(filled);
            file.read_to_end(&mut bytes)?;
            return Ok(bytes);
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// A reader of a file that stops at `size` bytes without asking the
/// system whether there are more (a read that finds the end costs as much
/// as a small file's whole read); what follows is not read (a file that
/// grew fails its checksum when it runs).
pub struct Sized<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Sized<R> {
    pub fn new(inner: R, size: u64) -> Sized<R> {
        Sized { inner, left: size }
    }
}

impl<R: Read> Read for Sized<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Opens the file for reading its text as a stream (the BOM and UTF-8
/// are the reader's to handle).
pub fn open(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::open(path).map_err(|e| cannot_read(&e))
}

pub fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "does not exist".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn cannot_read(e: &io::Error) -> String {
    format!("cannot be read ({})", io_reason(e))
}

fn not_utf8(offset: u64) -> String {
    format!("is not valid UTF-8 (first bad byte at offset {offset})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
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

    #[test]
    fn a_file_read_in_chunks_has_the_checksum_of_the_whole() {
        // Bigger than a chunk, with characters cut at the chunks' ends.
        let text = format!("\u{feff}-- é\n{}", "select 'éà€𝄞';\n".repeat(20_000));
        let file = write(text.as_bytes());
        let facts = facts(file.path(), "big", 7, Layout::Refinery).unwrap();
        let theirs = refinery::Migration::unapplied("V7__big", &text).unwrap();
        assert_eq!(facts.checksum, theirs.checksum());
        assert_eq!(facts.size.bytes, text.len() as u64);
        assert_eq!(facts.size.lines, text.lines().count() as u64);
        let read = super::text(file.path(), "big", 7, facts.checksum, facts.size.bytes).unwrap();
        assert_eq!(read, text.trim_start_matches('\u{feff}'));
    }

    #[test]
    fn a_file_is_read_whole_whatever_its_size_became() {
        let text = "select 1;\n".repeat(1000);
        let file = write(text.as_bytes());
        let size = text.len() as u64;
        let read = |size| read_sized(&mut std::fs::File::open(file.path()).unwrap(), size);
        assert_eq!(read(size).unwrap(), text.as_bytes());
        // Grown or shrunk since: still all of it, for the checksum to tell.
        assert_eq!(read(10).unwrap(), text.as_bytes());
        assert_eq!(read(size * 3).unwrap(), text.as_bytes());
        assert_eq!(read(0).unwrap(), text.as_bytes());
        let mut sized = Vec::new();
        Sized::new(std::fs::File::open(file.path()).unwrap(), 15)
            .read_to_end(&mut sized)
            .unwrap();
        assert_eq!(sized, &text.as_bytes()[..15]);
    }

    #[test]
    fn what_cannot_be_a_migration_says_why() {
        let cases: [(&[u8], &str); 5] = [
            (b"SELECT 1;\nSELECT '\0';", "NUL byte (line 2, offset 18)"),
            (
                b"SELECT '\xff';",
                "not valid UTF-8 (first bad byte at offset 8)",
            ),
            (
                b"SELECT '\xc3",
                "not valid UTF-8 (first bad byte at offset 8)",
            ),
            ("\u{feff}  \n\t".as_bytes(), "is empty"),
            (b"", "is empty"),
        ];
        for (bytes, why) in cases {
            let file = write(bytes);
            let err = facts(file.path(), "x", 1, Layout::Refinery).unwrap_err();
            assert!(err.contains(why), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn a_file_changed_since_it_was_read_is_refused() {
        let file = write(b"select 1;");
        let facts = facts(file.path(), "x", 1, Layout::Refinery).unwrap();
        std::fs::write(file.path(), b"select 2;").unwrap();
        let err = text(file.path(), "x", 1, facts.checksum, facts.size.bytes).unwrap_err();
        assert!(err.contains("changed since this run read it"), "{err}");
    }
}
