//! The annotations as each tool reads them, line by line and as a stream.

use super::*;

#[test]
fn goose_annotations_read_as_goose_reads_them_with_or_without_a_copy() {
    // goose's own reading: every `--` dropped, then the first `+goose`.
    let goose = |line: &str| {
        (line.trim().starts_with("--") && line.contains("+goose")).then(|| {
            line.replace("--", "")
                .replacen("+goose", "", 1)
                .trim()
                .to_string()
        })
    };
    for line in [
        "-- +goose Up",
        "  --   +goose   StatementBegin  ",
        "--+goose Down",
        "-- note +goose Up",
        "-- +goose Up -- again",
        "---+goose NO TRANSACTION",
        "-- +goose",
        "-- plain comment",
        "SELECT '+goose'; -- x",
        "--\u{a0}+goose Up",
        "-- +goose-- Up",
        "-- +goose Up--",
    ] {
        assert_eq!(
            goose_annotation(line).map(|a| a.into_owned()),
            goose(line),
            "{line:?}"
        );
    }
}

#[test]
fn goose_statement_ends_read_as_goose_splits_its_words() {
    // goose's own reading: the last word before one that starts with `--`.
    let goose = |line: &str| {
        line.split_whitespace()
            .take_while(|word| !word.starts_with("--"))
            .last()
            .is_some_and(|word| word.ends_with(';'))
    };
    for line in [
        "CREATE TABLE t (id int);",
        "SELECT 1; -- note",
        "SELECT 1 -- note;",
        "SELECT 1;-- glued",
        "SELECT 1;\r",
        "a---b;",
        "x; ---a",
        "--",
        "",
        "   ",
        "SELECT ';'",
        "SELECT 1;\u{a0}-- after a no-break space",
        "é; -- é",
        "SELECT 2 --; 3;",
        "a--b; -- c",
        "a--b -- c;",
    ] {
        assert_eq!(ends_statement(line), goose(line), "{line:?}");
    }
}

#[test]
fn annotation_words_lowered_on_the_stack() {
    let mut buffer = [0u8; 16];
    assert_eq!(lower_short("StatementBegin", &mut buffer), "statementbegin");
    assert_eq!(lower_short("NO TRANSACTION", &mut buffer), "no transaction");
    assert_eq!(
        lower_short("Ünicode", &mut buffer),
        "Ünicode".to_ascii_lowercase()
    );
    assert_eq!(lower_short("a word longer than sixteen", &mut buffer), "");
    assert_eq!(
        lower_short("SIXTEEN BYTES...", &mut buffer),
        "sixteen bytes..."
    );
    assert_eq!(lower_short("SEVENTEEN BYTES..", &mut buffer), "");
}

#[test]
fn goose_sections_and_their_problems() {
    let text = "-- a note\n-- +goose Up\n-- +goose StatementBegin\nCREATE FUNCTION f() \
                RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n-- +goose StatementEnd\n\n\
                -- +goose Down\nDROP FUNCTION f();\n";
    let sections = scan(Layout::Goose, text).unwrap();
    assert_eq!(sections.up, Some((3, 7)));
    assert!(!sections.no_transaction);
    let up = up_only(text, sections);
    assert_eq!(up.lines().count(), text.lines().count());
    assert!(
        up.contains("CREATE FUNCTION") && !up.contains("DROP"),
        "{up}"
    );
    let no_tx = "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON t (a);\n";
    let sections = scan(Layout::Goose, no_tx).unwrap();
    assert!(sections.no_transaction);
    // miglock's marker ahead of the (blanked) annotation line.
    assert!(up_only(no_tx, sections).starts_with("/* miglock:no-transaction */ \n\n"));
    for (bad, why) in [
        ("select 1;\n-- +goose Up\n", "SQL before"),
        ("-- nothing\n", "no -- +goose Up"),
        ("-- +goose Up\n-- +goose Up\n", "second"),
        (
            "-- +goose Up\n-- +goose StatementBegin\nselect 1;\n",
            "without StatementEnd",
        ),
        ("-- +goose Up\n-- +goose ENVSUB ON\n", "not supported"),
        (
            "-- +goose Up\n-- +goose Sideways\n",
            "unknown goose annotation",
        ),
        ("-- +goose Up\n  -- +goose Down\n", "no indent"),
        (
            "-- +goose Up\nselect 1\n-- +goose Down\n",
            "missing semicolon",
        ),
        (
            "-- +goose Up\nselect 1; -- fine\nselect\n  2\n",
            "line 3: the statement",
        ),
        ("\u{feff}-- +goose Up\nselect 1;\n", "byte-order mark"),
    ] {
        let err = scan(Layout::Goose, bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn dbmate_sections_and_their_problems() {
    let text = "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (a);\n\n\
                -- migrate:down\nDROP INDEX i;\n";
    let sections = scan(Layout::Dbmate, text).unwrap();
    assert_eq!(sections.up, Some((1, 4)));
    assert!(sections.no_transaction);
    let up = up_only(text, sections);
    assert_eq!(
        up,
        "/* miglock:no-transaction */ -- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t \
         (a);\n\n\n\n"
    );
    for (bad, why) in [
        ("select 1;\n-- migrate:up\n-- migrate:down\n", "SQL before"),
        ("-- migrate:up\nselect 1;\n", "no -- migrate:down"),
        (
            "-- migrate:up\n-- migrate:down\n-- migrate:up\n-- migrate:down\n",
            "second -- migrate:up",
        ),
        (
            "-- migrate:up bad\n-- migrate:down\n",
            "invalid dbmate option",
        ),
    ] {
        let err = scan(Layout::Dbmate, bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
    // Not a directive: indented, or another word.
    assert_eq!(dbmate_directive("  -- migrate:up"), None);
    assert_eq!(dbmate_directive("-- migrate:upgrade"), None);
    assert_eq!(dbmate_directive("--migrate:down\r"), Some((false, "")));
}

#[test]
fn sqlx_reads_its_marker_from_the_first_bytes_only() {
    let marked = scan(
        Layout::Sqlx,
        "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
    );
    assert!(marked.unwrap().no_transaction);
    for not in [
        "\u{feff}-- no-transaction\n",
        " -- no-transaction\n",
        "\n-- no-transaction\n",
    ] {
        assert!(!scan(Layout::Sqlx, not).unwrap().no_transaction, "{not:?}");
    }
}

#[test]
fn the_stream_gives_what_the_whole_text_gives() {
    let text = "\u{feff}-- +goose NO TRANSACTION\r\n-- +goose Up\r\nselect 1;\r\n\
                -- +goose Down\r\nselect 2;";
    // (goose refuses the BOM; the stream strips it as any reader does.)
    let sections = scan(Layout::Goose, text.trim_start_matches('\u{feff}')).unwrap();
    let whole = up_only(text.trim_start_matches('\u{feff}'), sections);
    let mut streamed = String::new();
    UpOnly::new(text.as_bytes(), sections)
        .read_to_string(&mut streamed)
        .unwrap();
    assert_eq!(streamed, whole);
    assert_eq!(
        whole,
        "/* miglock:no-transaction */ \r\n\r\nselect 1;\r\n\r\n"
    );
}
