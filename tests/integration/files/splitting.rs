//! The splitter, which cuts a file into the statements psql would send,
//! checked against the server's own parser.

use postgres::SimpleQueryMessage;
use proptest::prelude::*;

use miglock::testing::split;

use crate::cluster::{Cluster, TestDb};

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
