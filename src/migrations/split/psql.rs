//! psql's meta-commands (`\i file`, `\set x 1`, `\connect db`, `\gset`…):
//! where one ends, and what to write instead. They are psql's, never the
//! server's: PostgreSQL's lexer has no use for a backslash outside quotes,
//! so any such backslash in a file is one, and the file was written for
//! psql. miglock sends files to PostgreSQL, so they are refused before
//! anything runs, each with its line.

/// Where a meta-command that starts at a backslash ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Extent {
    /// The end of its text (trailing blanks left out).
    pub end: usize,
    /// Where the scan goes on: at its end of line, past a `\\` that ends
    /// its arguments (SQL follows on the line), or at the backslash of the
    /// next meta-command on the line.
    pub next: usize,
    /// `false` when the text ends before its line does: a reader with more
    /// text to come must scan it again.
    pub complete: bool,
}

/// The meta-command whose backslash is at `at`, as psql reads it: the
/// name runs to a blank or a backslash; the arguments to the end of the
/// line (psql reads them from the line only, so a quote never carries
/// over), or to a backslash outside quotes. `\;` and `\:` are two
/// characters only (psql puts a plain `;` or `:` into its query for them).
pub(super) fn extent(bytes: &[u8], at: usize) -> Extent {
    let len = bytes.len();
    if matches!(bytes.get(at + 1), Some(b';' | b':')) {
        return Extent {
            end: at + 2,
            next: at + 2,
            complete: true,
        };
    }
    let mut i = at + 1;
    while i < len && !blank(bytes[i]) && bytes[i] != b'\\' {
        i += 1;
    }
    // `\!` and `\copy` take the whole line, backslashes and all.
    let name = &bytes[at + 1..i];
    let whole_line = name == b"!" || name == b"copy";
    let trimmed = |i: usize| {
        let mut end = i;
        while end > at + 1 && blank(bytes[end - 1]) {
            end -= 1;
        }
        end
    };
    let mut quote: Option<u8> = None;
    loop {
        let Some(&b) = bytes.get(i) else {
            return Extent {
                end: trimmed(len),
                next: len,
                complete: false,
            };
        };
        if b == b'\n' {
            return Extent {
                end: trimmed(i),
                next: i,
                complete: true,
            };
        }
        match quote {
            // In single quotes a backslash escapes (`\'`), within the line.
            Some(b'\'') if b == b'\\' && bytes.get(i + 1).is_some_and(|c| *c != b'\n') => i += 2,
            Some(q) => {
                if b == q {
                    quote = None;
                }
                i += 1;
            }
            None if whole_line => i += 1,
            None => match b {
                b'\'' | b'"' | b'`' => {
                    quote = Some(b);
                    i += 1;
                }
                // Which of the two it is comes with the next byte.
                b'\\' if i + 1 == len => {
                    return Extent {
                        end: trimmed(i),
                        next: i,
                        complete: false,
                    };
                }
                // `\\` ends the arguments, and SQL follows on the line.
                b'\\' if bytes.get(i + 1) == Some(&b'\\') => {
                    return Extent {
                        end: i + 2,
                        next: i + 2,
                        complete: true,
                    };
                }
                b'\\' => {
                    return Extent {
                        end: trimmed(i),
                        next: i,
                        complete: true,
                    };
                }
                _ => i += 1,
            },
        }
    }
}

/// Blanks as PostgreSQL 15's lexers have them (`\v` is no blank there).
fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// The command's name with its backslash (`\set`), from its text; the
/// arguments are left out of messages (a `\connect` line may hold a
/// password).
pub(super) fn name(text: &str) -> &str {
    let body = text.get(1..).unwrap_or_default();
    if body.starts_with([';', ':']) {
        return &text[..2];
    }
    let end = body
        .find(|c: char| c.is_ascii_whitespace() || c == '\\')
        .map_or(text.len(), |n| n + 1);
    &text[..end]
}

/// Why the meta-command in `text` is refused, on `line`, with what to
/// write instead where SQL has an equivalent.
pub(super) fn refusal(text: &str, line: usize) -> String {
    let name = name(text);
    format!(
        "line {line}: `{name}` is a psql meta-command, which miglock does not run (it sends the \
         file to PostgreSQL, not through psql): {}",
        advice(&name[1..])
    )
}

fn advice(command: &str) -> &'static str {
    match command {
        "i" | "include" | "ir" | "include_relative" => {
            "it reads another file into psql's input; put that file's statements in this one (or \
             in a migration of their own)"
        }
        "set" | "unset" => {
            "it sets a psql variable, and PostgreSQL has none (nor psql's `:name` interpolation); \
             write the value where it is used, or use SET for a server setting"
        }
        "c" | "connect" => {
            "it switches psql to another database or user; a migration runs on the database \
             miglock connects to (run miglock against that database), and SET ROLE changes the role"
        }
        "g" | "gx" => "it sends the statement before it; end that statement with `;` instead",
        "gset" => {
            "it keeps a result in psql variables; use a DO block that SELECTs … INTO a PL/pgSQL \
             variable"
        }
        "gexec" => {
            "it runs each value of a result as a statement; use a DO block that EXECUTEs each \
             one (built with format())"
        }
        "gdesc" | "crosstabview" | "watch" => {
            "it shows a result in psql; remove it and end the statement before it with `;`"
        }
        "echo" | "qecho" | "warn" => {
            "it prints a message; use DO $$ BEGIN RAISE NOTICE '…'; END $$;"
        }
        "copy" => {
            "it copies through psql from a file on the client; use COPY … FROM a file on the \
             server, or INSERT"
        }
        "." => {
            "it ends the rows of a COPY … FROM stdin, which psql reads from its own input; use \
             INSERT (or COPY from a file on the server)"
        }
        "if" | "elif" | "else" | "endif" => "it is psql's conditional; use a DO block with IF",
        "q" | "quit" => "it quits psql; remove it (the end of the file ends the migration)",
        "!" | "setenv" | "getenv" | "cd" => {
            "it runs on the client; miglock runs nothing but SQL, so remove it"
        }
        ";" => "it puts statements together in one query in psql; write `;`",
        ":" => "it puts a plain `:` into psql's query; write `:`",
        c if c.starts_with('d')
            || c.starts_with("l") && c.len() <= 2
            || c.starts_with("list")
            || c.starts_with("sf")
            || c.starts_with("sv") =>
        {
            "it describes objects in psql; remove it (query the catalog with SELECT where a \
             migration needs to)"
        }
        _ => "it changes or shows psql's own state or output; remove it",
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify::{classify, Execution, ForbiddenKind, Reason};
    use super::super::scan::{split, statements};
    use super::*;

    fn text(sql: &str) -> (&str, &str, bool) {
        let e = extent(sql.as_bytes(), 0);
        (&sql[..e.end], &sql[e.next..], e.complete)
    }

    #[test]
    fn a_meta_command_runs_to_the_end_of_its_line() {
        assert_eq!(
            text("\\set x 1\nCREATE TABLE t ();"),
            ("\\set x 1", "\nCREATE TABLE t ();", true)
        );
        assert_eq!(text("\\i other.sql  \r\nx"), ("\\i other.sql", "\nx", true));
        // A quote never carries over to the next line.
        assert_eq!(text("\\echo 'it''s\nx;"), ("\\echo 'it''s", "\nx;", true));
        assert_eq!(text("\\echo 'a\\\nx;"), ("\\echo 'a\\", "\nx;", true));
        // At the end of the text, a reader with more to come looks again.
        assert_eq!(text("\\connect db"), ("\\connect db", "", false));
        assert_eq!(text("\\"), ("\\", "", false));
        assert_eq!(text("\\\n"), ("\\", "\n", true));
    }

    #[test]
    fn a_backslash_ends_the_arguments_outside_quotes() {
        // `\\`: SQL follows on the line.
        assert_eq!(
            text("\\set a 1 \\\\ SELECT 1;"),
            ("\\set a 1 \\\\", " SELECT 1;", true)
        );
        // One backslash: the next meta-command.
        assert_eq!(text("\\x \\t on"), ("\\x", "\\t on", true));
        assert_eq!(text("\\a\\b"), ("\\a", "\\b", true));
        assert_eq!(text("\\a\\\\ SELECT 1"), ("\\a\\\\", " SELECT 1", true));
        // A last backslash may start `\\`: a reader with more to come looks again.
        assert_eq!(text("\\set a 1 \\"), ("\\set a 1", "\\", false));
        assert_eq!(
            text("\\echo '\\\\' \"\\\" x\ny"),
            ("\\echo '\\\\' \"\\\" x", "\ny", true)
        );
        // The whole line for `\!` and `\copy`.
        assert_eq!(
            text("\\copy t from 'C:\\x' \\\\ y\nz"),
            ("\\copy t from 'C:\\x' \\\\ y", "\nz", true)
        );
        assert_eq!(text("\\; SELECT 2"), ("\\;", " SELECT 2", true));
        assert_eq!(text("\\:x"), ("\\:", "x", true));
    }

    #[test]
    fn the_refusal_names_the_command_and_never_its_arguments() {
        let message = refusal("\\connect postgres://u:secret@h/db", 4);
        assert!(
            message.starts_with("line 4: `\\connect` is a psql meta-command"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
        assert!(
            message.contains("database miglock connects to"),
            "{message}"
        );
        assert!(refusal("\\gset", 1).contains("DO block"));
        assert!(refusal("\\i x.sql", 1).contains("reads another file"));
        assert!(refusal("\\;", 1).contains("write `;`"));
        assert_eq!(name("\\dt+ public.*"), "\\dt+");
        assert_eq!(name("\\"), "\\");
        assert_eq!(name("\\x\\t"), "\\x");
    }

    #[test]
    fn a_meta_command_ends_at_its_line_and_swallows_nothing() {
        let sql = "\\set ON_ERROR_STOP on\nCREATE TABLE t (a int);\n\\connect other\nBEGIN;\n\
                   SELECT 1 \\gset\nCOMMIT;\n\\echo 'it''s;' \\\\ SELECT 2;";
        let s = split(sql);
        let items: Vec<(&str, usize, bool)> = s.iter().map(|s| (s.sql, s.line, s.meta)).collect();
        assert_eq!(
            items,
            [
                ("\\set ON_ERROR_STOP on", 1, true),
                ("CREATE TABLE t (a int)", 2, false),
                ("\\connect other", 3, true),
                ("BEGIN", 4, false),
                ("SELECT 1", 5, false),
                ("\\gset", 5, true),
                ("COMMIT", 6, false),
                // Its quote ends with its line; `\\` ends it, and SQL follows.
                ("\\echo 'it''s;' \\\\", 7, true),
                ("SELECT 2", 7, false),
            ]
        );
        assert!(s[1].words.starts_with(&["CREATE".to_string()]));
        assert!(s[0].words.is_empty() && s[0].terminated);
        // Inside quotes, comments and dollar quotes a backslash is text.
        let quoted = "SELECT '\\x', E'\\\\', $$\\i x$$ /* \\set */; -- \\q\nSELECT 2";
        assert!(split(quoted).iter().all(|s| !s.meta), "{:?}", split(quoted));
        // `\\;` is psql's too, and ends nothing else.
        let glued = split("SELECT 1\\; SELECT 2;");
        let glued: Vec<&str> = glued.iter().map(|s| s.sql).collect();
        assert_eq!(glued, ["SELECT 1", "\\;", "SELECT 2"]);
        // A last meta-command without its newline may go on in a later read.
        assert!(!split("SELECT 1;\n\\i fi").last().unwrap().terminated);
    }

    #[test]
    fn a_scan_resumes_after_a_meta_command() {
        let mut scanner = statements("SELECT 1 \\g\n\\i x");
        assert_eq!(scanner.next().map(|s| s.sql), Some("SELECT 1"));
        assert_eq!(scanner.clean().pos, "SELECT 1 ".len());
        assert_eq!(scanner.next().map(|s| s.sql), Some("\\g"));
        assert_eq!(scanner.clean().pos, "SELECT 1 \\g".len());
        assert_eq!(
            scanner.next().map(|s| (s.sql, s.terminated)),
            Some(("\\i x", false))
        );
        // Not complete: the clean place stays before it.
        assert_eq!(scanner.clean().pos, "SELECT 1 \\g".len());
        assert!(scanner.next().is_none());
    }

    #[test]
    fn psql_meta_commands_are_refused_each_on_its_line() {
        let script = "\\set ON_ERROR_STOP on\nCREATE TABLE t (a int);\n\\i more.sql\n\
                      SELECT 1 \\gset\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON t (a);";
        let c = classify(script);
        let found: Vec<(ForbiddenKind, usize)> =
            c.forbidden.iter().map(|f| (f.kind, f.line)).collect();
        assert_eq!(
            found,
            [
                (ForbiddenKind::PsqlMetaCommand, 1),
                (ForbiddenKind::PsqlMetaCommand, 3),
                (ForbiddenKind::PsqlMetaCommand, 4),
                (ForbiddenKind::TransactionControl, 5),
            ],
            "{:#?}",
            c.forbidden
        );
        assert!(c.forbidden[0]
            .message
            .starts_with("line 1: `\\set` is a psql meta-command"));
        assert!(c.forbidden[1].message.contains("reads another file"));
        // The statements after them are read as themselves: the index
        // build decides how the file runs, and the COMMIT is refused.
        assert_eq!(
            c.execution,
            Execution::NoTransaction {
                reason: Reason::Statement("CREATE INDEX CONCURRENTLY"),
                mixed: true
            }
        );
        let planned: Vec<&str> = c.statements.iter().map(|p| p.sql(script)).collect();
        assert_eq!(planned[0], "\\set ON_ERROR_STOP on");
        assert_eq!(planned[4], "\\gset");
        assert_eq!(planned[5], "COMMIT");
        // A meta-command says nothing of how a file runs.
        assert!(classify("\\connect app\nSELECT 1;\n")
            .execution
            .transactional());
    }
}
