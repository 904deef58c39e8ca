//! Classifying a file without holding it: the text is read in chunks and
//! scanned from the last clean place (just past a top-level `;`), so what
//! is held at once is a chunk and the one statement that spans it, however
//! big the file (`status` over a 50 MB data migration stays small).

use std::io::{self, Read};

use super::classify::{has_marker, Classifier, Summary};
use super::scan::Scanner;

const CHUNK: usize = 64 * 1024;

/// The summary of the text `reader` gives (a file without its checksum's
/// concerns: it was checked when read; the text must be UTF-8).
pub fn summarize(reader: impl Read) -> io::Result<Summary> {
    let mut text = Utf8Chunks::new(reader);
    let mut buf = String::new();
    let mut want = CHUNK;
    let mut line = 1;
    let mut standard_strings = true;
    // Whether `buf` starts a line of the file (a chunk resumes past a `;`).
    let mut starts_line = true;
    let mut started: Option<Classifier> = None;
    let classifier = loop {
        let eof = text.fill(&mut buf, want)?;
        let classifier = match &mut started {
            Some(classifier) => classifier,
            None => {
                // The marker is on the first line: have all of it first.
                if !eof && !buf.contains('\n') {
                    want = want.saturating_mul(2);
                    continue;
                }
                if buf.starts_with('\u{feff}') {
                    buf.drain(..'\u{feff}'.len_utf8());
                }
                started.insert(Classifier::new(has_marker(&buf)))
            }
        };
        let mut scanner =
            Scanner::continuing(&buf, line, standard_strings).resumed(starts_line, eof);
        for statement in scanner.by_ref() {
            // A statement the chunk cut off is scanned again, whole, with
            // the next one.
            if !statement.terminated && !eof {
                break;
            }
            classifier.feed(&statement, 0);
        }
        if let Some((line, tool)) = scanner.down_section() {
            classifier.down_section(line, tool);
        }
        if eof {
            break started.take();
        }
        let clean = scanner.clean();
        // One statement longer than what is held: hold more next time.
        want = if clean.pos == 0 {
            want.saturating_mul(2)
        } else {
            CHUNK
        };
        if clean.pos > 0 {
            starts_line = matches!(buf.as_bytes()[clean.pos - 1], b'\n' | b'\r');
        }
        buf.drain(..clean.pos);
        line = clean.line;
        standard_strings = clean.standard_strings;
    };
    Ok(classifier
        .unwrap_or_else(|| Classifier::new(false))
        .finish())
}

/// UTF-8 text from a reader, chunk by chunk: a character cut by a chunk's
/// end waits for the next.
struct Utf8Chunks<R> {
    reader: R,
    /// Bytes of a character the last read cut off.
    carry: Vec<u8>,
    /// Bytes read so far, for the offset in an error.
    offset: u64,
}

impl<R: Read> Utf8Chunks<R> {
    fn new(reader: R) -> Utf8Chunks<R> {
        Utf8Chunks {
            reader,
            carry: Vec::new(),
            offset: 0,
        }
    }

    /// Appends at least `want` more bytes of text to `buf` (fewer at the
    /// end); `true` at the end of the text.
    fn fill(&mut self, buf: &mut String, want: usize) -> io::Result<bool> {
        let mut added = 0;
        while added < want {
            // Read straight into `carry`, no zeroed chunk: a small file
            // costs what it holds, not a 64 KiB buffer.
            let before = self.carry.len();
            let step = CHUNK.min(want - added).max(4) as u64;
            let n = match self.reader.by_ref().take(step).read_to_end(&mut self.carry) {
                Ok(_) => self.carry.len() - before,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.carry.truncate(before);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                if !self.carry.is_empty() {
                    return Err(invalid(self.offset));
                }
                return Ok(true);
            }
            let valid = match std::str::from_utf8(&self.carry) {
                Ok(text) => text.len(),
                // A character cut at the end: keep its bytes for the next read.
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(e) => return Err(invalid(self.offset + e.valid_up_to() as u64)),
            };
            let text =
                std::str::from_utf8(&self.carry[..valid]).map_err(|_| invalid(self.offset))?;
            buf.push_str(text);
            self.offset += valid as u64;
            added += valid;
            self.carry.drain(..valid);
        }
        Ok(false)
    }
}

fn invalid(offset: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("is not valid UTF-8 (first bad byte at offset {offset})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::split::{classify, ForbiddenKind};

    /// A reader that hands out `step` bytes at a time.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn summary_in_chunks(text: &str, step: usize) -> Summary {
        summarize(Trickle {
            bytes: text.as_bytes(),
            step,
        })
        .unwrap()
    }

    #[test]
    fn a_file_read_in_any_chunks_is_summarized_as_when_held_whole() {
        let big_statement = format!("INSERT INTO t VALUES ('{}');\n", "é;".repeat(50_000));
        let texts = [
            "\u{feff}-- miglock:no-transaction\nBEGIN;\nselect 1;\nCOMMIT;\n".to_string(),
            "create table t(a int);\n-- a comment; with a semicolon\nCOMMIT;\n/* block; */ select $$;$$;"
                .to_string(),
            format!("create table t(a text);\n{big_statement}create index concurrently i on t(a);\n"),
            "SET standard_conforming_strings = off;\nselect 'a\\';b';\ncopy t from stdin;\n"
                .to_string(),
            "select 1; -- no newline at the end".to_string(),
            "\\set ON_ERROR_STOP on\nBEGIN;\nSELECT 1 \\gset\n\\echo 'x;' \\\\ COMMIT;\n\\i a_file.sql"
                .to_string(),
            "-- +goose Up\ncreate table t(a int);\n-- +goose StatementBegin\nselect 1;\n\
             -- +goose StatementEnd\n  -- +goose Down\ndrop table t;\n-- migrate:down\n"
                .to_string(),
            "-- migrate:up\ncreate table t(a int);\n\n-- migrate:down\ndrop table t;\n".to_string(),
            // Not a Down section: inside a function body, or after code on its line.
            "create function f() returns int language sql as $$\n-- +goose Down\nselect 1 $$;\n\
             select 1; -- migrate:down\n"
                .to_string(),
        ];
        for text in &texts {
            let whole = classify(text.trim_start_matches('\u{feff}'));
            let at_once = summary_in_chunks(text, usize::MAX);
            for step in [1, 3, 7, 4096, CHUNK + 1, 10 * CHUNK] {
                let summary = summary_in_chunks(text, step);
                assert_eq!(summary.costly, at_once.costly, "step {step}: {text:.60}");
                assert_eq!(
                    summary.execution, whole.execution,
                    "step {step}: {text:.60}"
                );
                assert_eq!(
                    summary.forbidden, whole.forbidden,
                    "step {step}: {text:.60}"
                );
            }
        }
    }

    #[test]
    fn another_tools_down_section_is_forbidden_once_with_its_line() {
        let goose = "-- +goose Up\ncreate table t(a int);\n\n-- +goose Down\ndrop table t;\n";
        for step in [1, 5, 4096] {
            let summary = summary_in_chunks(goose, step);
            assert_eq!(summary.forbidden.len(), 1, "{:?}", summary.forbidden);
            let found = &summary.forbidden[0];
            assert_eq!((found.kind, found.line), (ForbiddenKind::DownSection, 4));
            assert!(found
                .message
                .contains("-- +goose Down starts goose's Down section"));
        }
        let dbmate = "-- migrate:up\ncreate table t(a int);\n-- migrate:down\ndrop table t;\n";
        let found = &summary_in_chunks(dbmate, 3).forbidden[0];
        assert_eq!((found.kind, found.line), (ForbiddenKind::DownSection, 3));
        let body =
            "create function f() returns int language sql as $$\n-- +goose Down\nselect 1 $$;\n";
        assert!(summary_in_chunks(body, 7).forbidden.is_empty());
    }

    /// The reader's chunk edge falls at every place around the markers:
    /// after a `;` mid-line, inside a comment, at a line's start.
    #[test]
    fn down_markers_across_chunk_edges_are_read_as_in_the_whole_text() {
        let filler = "select 1;\n".repeat(CHUNK / 10 - 4);
        for shift in 0..48 {
            let text = format!(
                "select '{}';\n{filler}select 2; -- migrate:down later\nselect 3;\n\
                 -- migrate:downtime\nselect 4;\n-- +goose Down\ndrop table t;\n",
                "x".repeat(shift)
            );
            let goose_line = 1 + filler.lines().count() + 5;
            let whole = classify(&text);
            let summary = summary_in_chunks(&text, 4096);
            assert_eq!(summary.forbidden, whole.forbidden, "shift {shift}");
            let found: Vec<_> = summary.forbidden.iter().map(|f| (f.kind, f.line)).collect();
            assert_eq!(
                found,
                [(ForbiddenKind::DownSection, goose_line)],
                "shift {shift}"
            );
        }
    }

    #[test]
    fn bad_utf8_is_an_error_with_its_offset() {
        let err = summarize(Trickle {
            bytes: b"select 1;\nselect '\xff';",
            step: 4,
        })
        .unwrap_err();
        assert!(err.to_string().contains("offset 18"), "{err}");
        let cut = summarize(Trickle {
            bytes: "select 'é".as_bytes().split_last().unwrap().1,
            step: 2,
        })
        .unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::InvalidData);
    }
}
