//! The splitter, which cuts a file into the statements psql would send:
//! checked against the server's own parser, and fuzzed with arbitrary
//! bytes and with "token soup" (random runs of quotes, dollar quotes,
//! comments, semicolons, parentheses, `BEGIN ATOMIC … END`, backslashes
//! and `SET standard_conforming_strings = off`). The classifier, which
//! reads the split to decide how a file runs, is fuzzed beside it.
//!
//! The properties without a database run 256 cases each, like those of
//! `fuzz`; for a longer campaign:
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test --test integration files::splitting::
//! ```

use postgres::SimpleQueryMessage;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use miglock::testing::split::{self, Execution, ForbiddenKind, Statement};

use crate::cluster::{Cluster, TestDb};

// ---------------------------------------------------------------------------
// Against the server
// ---------------------------------------------------------------------------

/// Pieces of SQL text that hold `;` and quotes in every way the lexer
/// knows; each is a complete expression.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'a;b'".to_string()),
        Just("'it''s; ok'".to_string()),
        Just("E'\\';x'".to_string()),
        Just("e'\\n;\\t'".to_string()),
        Just("'back\\'".to_string()),
        Just("U&'d\\0061t;a'".to_string()),
        Just("$$ ; $ $x$ ' \" $$".to_string()),
        Just("$body$ $$ ; ' $body$".to_string()),
        Just("$a_1$ ;; $a_1$".to_string()),
        Just("(SELECT 1 AS \"semi;colon\")".to_string()),
        Just("(SELECT 2 AS \"q\"\"q;\")".to_string()),
        Just("1e2".to_string()),
        Just("x'1f'".to_string()),
        Just("(1 /* c; /* nested; */ c; */ + 2)".to_string()),
        Just("3 -- a comment; here\n".to_string()),
        Just("CASE WHEN true THEN 'x;' END".to_string()),
        "[a-z;' ]{0,6}".prop_map(|s| format!("$q${s}$q$")),
        "[a-z;]{0,6}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
    ]
}

/// A statement built from pieces: a SELECT, a DO block, a function with a
/// `$$` body, a SQL-standard function body, or nothing (`;;`).
fn statement() -> impl Strategy<Value = String> {
    let pieces = || proptest::collection::vec(piece(), 1..4);
    prop_oneof![
        4 => pieces().prop_map(|p| format!("SELECT {}", p.join(", "))),
        1 => pieces().prop_map(|p| format!(
            "DO $do$ BEGIN PERFORM {}; END $do$", p.join(", ")
        )),
        1 => (0u32..1000, pieces()).prop_map(|(n, p)| format!(
            "CREATE OR REPLACE FUNCTION f{n}_{}() RETURNS void LANGUAGE plpgsql AS $fn$ BEGIN PERFORM {}; END $fn$",
            p.len(),
            p.join(", ")
        )),
        1 => (0u32..1000, pieces()).prop_map(|(n, p)| format!(
            "CREATE OR REPLACE FUNCTION g{n}() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1 WHERE {} IS NOT NULL;\n  SELECT CASE WHEN true THEN 2 END;\nEND",
            p[0]
        )),
        1 => Just(String::new()),
        1 => Just("/* only a comment; */".to_string()),
    ]
}

/// How many statements the server ran: its CommandComplete messages for
/// the whole text sent as one query. A final `SELECT 0` keeps a text of
/// only comments from being an empty query (whose EmptyQueryResponse the
/// client reports as a CommandComplete too).
fn server_count(client: &mut postgres::Client, sql: &str) -> Result<usize, postgres::Error> {
    client.batch_execute("BEGIN")?;
    let messages = client.simple_query(&format!("{sql}\nSELECT 0"));
    client.batch_execute("ROLLBACK")?;
    Ok(messages?
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count()
        - 1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The split has as many statements as the server parses in the whole
    /// file, and each piece runs on its own.
    #[test]
    fn the_split_agrees_with_the_server(
        statements in proptest::collection::vec(statement(), 1..6),
        separators in proptest::collection::vec(
            prop_oneof![Just(";\n"), Just(";"), Just(" ;\n\n-- c;\n"), Just(";;")], 6)
    ) {
        let mut file = String::new();
        for (i, s) in statements.iter().enumerate() {
            file.push_str(s);
            file.push_str(separators[i]);
        }
        let db = shared_db();
        let mut client = db.client();
        let expected = server_count(&mut client, &file)
            .unwrap_or_else(|e| panic!("the server refused {file:?}: {e}"));
        let split = split::split(&file);
        prop_assert_eq!(split.len(), expected, "{:?} split as {:#?}", file, split);
        client.batch_execute("BEGIN").unwrap();
        for s in &split {
            let sent = client.simple_query(s.sql);
            prop_assert!(sent.is_ok(), "{:?} alone: {:?}", s.sql, sent.err());
            let complete = sent.unwrap().iter().filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))).count();
            prop_assert_eq!(complete, 1, "{:?} is not one statement", s.sql);
        }
        client.batch_execute("ROLLBACK").unwrap();
    }
}

/// One database for every case of the property (each case rolls back).
fn shared_db() -> &'static TestDb<'static> {
    static DB: std::sync::OnceLock<TestDb<'static>> = std::sync::OnceLock::new();
    DB.get_or_init(|| Cluster::shared().create_db())
}

// ---------------------------------------------------------------------------
// Arbitrary text and token soup
// ---------------------------------------------------------------------------

/// What makes a lexer's life hard, one fragment at a time: every way to
/// open (and not close) a string, a quoted identifier, a dollar quote or a
/// comment; what ends a statement or keeps it open; what changes how
/// backslashes read.
const FRAGMENTS: &[&str] = &[
    "'",
    "''",
    "\"",
    "\"\"",
    "$$",
    "$tag$",
    "$a_1$",
    "$",
    "$1",
    "a$b",
    "E'\\''",
    "e'",
    "E'\\",
    "\\",
    "\\'",
    "\\\\",
    "\\set x 'a;b'\n",
    "\\i other.sql",
    "\\gset",
    "\\;",
    "\\copy t from 'x;' \\\\",
    "U&'",
    "U&\"",
    "u&'d\\0061t'",
    "B'",
    "X'1f'",
    "N'",
    "--",
    "-- c;\n",
    "-",
    "/*",
    "*/",
    "/* a /* nested; */ b */",
    "/",
    "*",
    ";",
    ";;",
    "(",
    ")",
    " ",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "\x0c",
    "\x0b",
    "BEGIN",
    "BEGIN ATOMIC",
    "END",
    "CASE",
    "CREATE",
    "CREATE OR REPLACE",
    "FUNCTION",
    "PROCEDURE",
    "SELECT 1",
    "f()",
    "COMMIT",
    "COPY t FROM stdin",
    "CREATE INDEX CONCURRENTLY i ON t (a)",
    "VACUUM",
    "DISCARD ALL",
    "AND CHAIN",
    "SET standard_conforming_strings = off",
    "SET standard_conforming_strings = on",
    "set session standard_conforming_strings to 'off'",
    "SET standard_conforming_strings=off",
    "1e",
    "1.5e+3",
    ".5",
    "1_000",
    "..",
    "é",
    "\u{feff}",
    "日本",
    "\0",
];

/// A random run of [`FRAGMENTS`], words and characters.
fn token_soup() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        8 => proptest::sample::select(FRAGMENTS).prop_map(str::to_string),
        1 => "[a-zA-Z_]{1,6}",
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(fragment, 0..48).prop_map(|fragments| fragments.concat())
}

/// Arbitrary bytes read as a file is read by a lenient editor: invalid
/// UTF-8 becomes U+FFFD.
fn lossy_bytes() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 0..300)
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads what lies between statements as PostgreSQL's lexer reads it:
/// blanks, `;`, `-- …` to the end of the line, `/* … */` (nested, or on to
/// the end of the text). Returns how many `;` it holds, or what is left
/// from the first thing that is none of those.
fn semicolons_between(gap: &str) -> Result<usize, &str> {
    let bytes = gap.as_bytes();
    let mut semicolons = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' => {
                semicolons += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n' || *b == b'\r')
                    .map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            _ => return Err(&gap[i..]),
        }
    }
    Ok(semicolons)
}

/// What every split must be, whatever the text: statements that are
/// non-empty slices of it, in order, apart, on the lines they say; and
/// between and around them nothing but blanks, `;` and comments (so no
/// word, quote or digit is lost), at least one `;` between two of them
/// unless one is a psql meta-command (which ends at its end of line, and
/// ends the statement before it). Cut out and joined again with `;` (a
/// newline beside a meta-command), they split the same way.
fn check_split(text: &str) -> Result<(), TestCaseError> {
    let statements = split::split(text);
    let mut end = 0;
    let mut gaps = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        prop_assert!(
            !s.sql.is_empty(),
            "statement {} is empty: {:?}",
            i,
            statements
        );
        prop_assert!(
            s.start >= end,
            "statement {} starts at {} inside the one before (which ends at {})",
            i,
            s.start,
            end
        );
        prop_assert_eq!(
            text.get(s.start..s.start + s.sql.len()),
            Some(s.sql),
            "statement {} is not the text at its start {}",
            i,
            s.start
        );
        prop_assert_eq!(
            s.line,
            1 + text[..s.start].matches('\n').count(),
            "statement {} {:?}",
            i,
            s.sql
        );
        // It starts at a token: not a blank, a `;` or a comment.
        prop_assert!(
            !s.sql
                .starts_with(|c: char| c.is_ascii_whitespace() || c == ';')
                && !s.sql.starts_with("--")
                && !s.sql.starts_with("/*"),
            "statement {} {:?}",
            i,
            s.sql
        );
        gaps.push(&text[end..s.start]);
        end = s.start + s.sql.len();
    }
    gaps.push(&text[end..]);
    for (i, gap) in gaps.iter().enumerate() {
        match semicolons_between(gap) {
            Ok(semicolons) => prop_assert!(
                semicolons > 0
                    || i == 0
                    || i == statements.len()
                    || statements[i - 1].meta
                    || statements[i].meta,
                "no `;` between statements {} and {}: {:?}",
                i - 1,
                i,
                statements
            ),
            Err(rest) => prop_assert!(
                false,
                "outside the statements, before statement {}: {:?} (in {:?}) is no blank, `;` or comment; \
                 statements: {:?}",
                i,
                rest,
                gap,
                statements
            ),
        }
    }
    let sqls: Vec<&str> = statements.iter().map(|s| s.sql).collect();
    let mut joined = String::new();
    for (i, s) in statements.iter().enumerate() {
        if i > 0 {
            let beside_meta = statements[i - 1].meta || s.meta;
            joined.push_str(if beside_meta { "\n" } else { ";\n" });
        }
        joined.push_str(s.sql);
    }
    let again: Vec<&str> = split::split(&joined).iter().map(|s| s.sql).collect();
    prop_assert_eq!(again, sqls, "joined again: {:?}", joined);
    Ok(())
}

/// Whether the file's first line is the marker, as the README words it:
/// `-- miglock:no-transaction` (or refinery's `-- refinery:noTransaction`),
/// any case, after a byte-order mark and blanks.
fn has_marker(text: &str) -> bool {
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("");
    first.trim().strip_prefix("--").is_some_and(|comment| {
        let comment = comment.trim();
        comment.eq_ignore_ascii_case("miglock:no-transaction")
            || comment.eq_ignore_ascii_case("refinery:noTransaction")
    })
}

/// What the classifier says agrees with the split and with each
/// statement's own reading: a file runs in a transaction unless marked or
/// holding a statement PostgreSQL refuses in one (the first such names
/// the reason, and any other makes it "mixed"); a file that runs without
/// one is planned statement by statement exactly as split; every refusal
/// is on the line of a statement and says so; transaction control is
/// refused only in a file that runs in miglock's transaction, `COPY …
/// FROM stdin`, `DISCARD ALL` and every psql meta-command in any (a
/// meta-command, never sent, says nothing of how the file runs).
fn check_classify(text: &str) -> Result<(), TestCaseError> {
    let classified = split::classify(text);
    let statements = split::split(text);
    let marker = has_marker(text);
    let sent = statements.iter().filter(|s| !s.meta).count();
    let refused: Vec<&str> = statements
        .iter()
        .filter_map(Statement::refused_in_transaction)
        .collect();
    let reason = |kind: &str| kind.replace(' ', "_").to_ascii_lowercase();
    let expected = if marker {
        Some("marker".to_string())
    } else {
        refused.first().map(|first| {
            if refused.len() < sent {
                format!("{}, mixed", reason(first))
            } else {
                reason(first)
            }
        })
    };
    prop_assert_eq!(
        classified.execution.without_transaction(),
        expected,
        "{:?}",
        classified.execution
    );
    if let Execution::NoTransaction { mixed, .. } = &classified.execution {
        prop_assert!(!marker || !mixed);
        prop_assert_eq!(classified.statements.len(), statements.len());
        for (planned, s) in classified.statements.iter().zip(&statements) {
            prop_assert_eq!(planned.span.clone(), s.start..s.start + s.sql.len());
            prop_assert_eq!(planned.line, s.line);
            prop_assert_eq!(planned.sql(text), s.sql);
            prop_assert_eq!(planned.control, s.transaction_control());
        }
    } else {
        prop_assert!(classified.statements.is_empty());
    }
    let lines: Vec<usize> = statements.iter().map(|s| s.line).collect();
    for forbidden in &classified.forbidden {
        prop_assert!(lines.contains(&forbidden.line), "{:?}", forbidden);
        let prefix = format!("line {}: ", forbidden.line);
        prop_assert!(forbidden.message.starts_with(&prefix), "{:?}", forbidden);
    }
    let count = |kind| {
        classified
            .forbidden
            .iter()
            .filter(|f| f.kind == kind)
            .count()
    };
    let control = statements
        .iter()
        .filter(|s| s.transaction_control().is_some())
        .count();
    if marker {
        // Only a BEGIN left open at the end of the file.
        prop_assert!(count(ForbiddenKind::TransactionControl) <= 1);
    } else {
        prop_assert_eq!(count(ForbiddenKind::TransactionControl), control);
    }
    let unsupported = statements
        .iter()
        .filter(|s| s.is_copy_from_stdin() || s.starts(&["DISCARD", "ALL"]))
        .count();
    prop_assert_eq!(count(ForbiddenKind::Unsupported), unsupported);
    prop_assert_eq!(
        count(ForbiddenKind::PsqlMetaCommand),
        statements.len() - sent
    );
    Ok(())
}

proptest! {
    /// Arbitrary bytes: the split holds (see [`check_split`]).
    #[test]
    fn any_bytes_split_into_slices_of_the_text(text in lossy_bytes()) {
        check_split(&text)?;
    }

    /// Token soup: the split holds (see [`check_split`]).
    #[test]
    fn token_soup_splits_into_slices_of_the_text(text in token_soup()) {
        check_split(&text)?;
    }

    /// Token soup after `SET standard_conforming_strings = off`, where a
    /// backslash escapes in plain strings too.
    #[test]
    fn token_soup_splits_alike_without_standard_strings(text in token_soup()) {
        check_split(&format!("SET standard_conforming_strings = off;\n{text}"))?;
    }

    /// Arbitrary bytes and token soup, with and without the marker: the
    /// classifier agrees with the split (see [`check_classify`]).
    #[test]
    fn the_classifier_agrees_with_the_split(
        text in prop_oneof![lossy_bytes(), token_soup()],
        marker in proptest::sample::select(vec![
            "",
            "-- miglock:no-transaction\n",
            "\u{feff}-- refinery:noTransaction\r\n",
        ]),
    ) {
        check_classify(&format!("{marker}{text}"))?;
    }
}
