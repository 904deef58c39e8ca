//! The line of the statement a failed migration stopped at, when
//! PostgreSQL gives no position (`ALTER TABLE app.tasks …` on a missing
//! table: `relation "app.tasks" does not exist`, and nothing else). The
//! synchronous client drops the CommandComplete messages of a failed
//! simple query, so how many statements ran first is not known, and
//! running them again to find out is out of the question. What is known
//! is what the error names (its table, column, constraint or type, the
//! quoted names of its message, its CONTEXT) and what each statement of
//! the file names: when exactly one statement could have raised it, its
//! line is given, and the message says that it was inferred and from
//! what. Between several, none is. Only a failure pays for this.

use postgres::error::DbError;

use crate::migrations::split::{mentions, Mention};

/// Where an error was: `line` as located from its position, else as
/// inferred from `script` (the migration's text); with the words that go
/// after the file's name in the message (`, line 6, the statement naming
/// app.tasks`).
pub fn place(line: Option<usize>, db: &DbError, script: &str) -> (Option<usize>, String) {
    if let Some(line) = line {
        return (Some(line), format!(", line {line}"));
    }
    match infer(db, script) {
        Some((line, why)) => (Some(line), format!(", line {line}, {why}")),
        None => (None, String::new()),
    }
}

/// The line of the one statement the error points to, and why it is that
/// one.
fn infer(db: &DbError, script: &str) -> Option<(usize, String)> {
    match db.where_() {
        // Raised in an anonymous code block (its frame, the outermost, is
        // the last line): a DO statement of the file.
        Some(context)
            if context
                .lines()
                .last()
                .is_some_and(|frame| frame.contains("function inline_code_block")) =>
        {
            do_block(context, script)
        }
        // Raised in a function or trigger that some statement called:
        // which one is not in the error.
        Some(_) => None,
        None => named(db, script),
    }
}

/// The statement that names what the error names: the quoted names of its
/// message, else its fields. A name no statement holds says nothing (an
/// index or constraint PostgreSQL named itself); each other one narrows
/// the statements down.
fn named(db: &DbError, script: &str) -> Option<(usize, String)> {
    let quoted: Vec<String> = db
        .message()
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    let fields: Vec<String> = [db.table(), db.column(), db.constraint(), db.datatype()]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect();
    [quoted, fields]
        .into_iter()
        .find_map(|names| the_one_naming(script, names))
}

fn the_one_naming(script: &str, all: Vec<String>) -> Option<(usize, String)> {
    let mut names: Vec<String> = Vec::with_capacity(all.len());
    for name in all {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return None;
    }
    let found = mentions(script, &names);
    let held: Vec<usize> = (0..names.len())
        .filter(|&i| found.iter().any(|m| m.names[i]))
        .collect();
    if held.is_empty() {
        return None;
    }
    let naming_all: Vec<&Mention> = found
        .iter()
        .filter(|m| held.iter().all(|&i| m.names[i]))
        .collect();
    let [one] = naming_all[..] else {
        return None;
    };
    let named: Vec<&str> = held.iter().map(|&i| names[i].as_str()).collect();
    Some((
        one.line,
        format!("the statement naming {}", named.join(" and ")),
    ))
}

/// The DO block an error of PL/pgSQL's `inline_code_block` came from: the
/// file's only one, or the only one holding the SQL statement its CONTEXT
/// quotes.
fn do_block(context: &str, script: &str) -> Option<(usize, String)> {
    let blocks: Vec<Mention> = mentions(script, &[])
        .into_iter()
        .filter(|m| m.is_do)
        .collect();
    if let [one] = &blocks[..] {
        return Some((one.line, "the file's only DO block".into()));
    }
    // The statement the block itself ran, quoted just before its frame
    // (it may span lines).
    let frame = context.rfind("\nPL/pgSQL function inline_code_block")?;
    let before = &context[..frame];
    let start = before.rfind("SQL statement \"")? + "SQL statement \"".len();
    let quoted = before[start..]
        .strip_suffix('"')
        .filter(|statement| !statement.is_empty())?;
    let holding: Vec<&Mention> = blocks.iter().filter(|m| m.sql.contains(quoted)).collect();
    match holding[..] {
        [one] => Some((
            one.line,
            "the DO block holding the statement in the error's CONTEXT".into(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_one_statement_naming_every_name_a_statement_holds() {
        let script = "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n\
                      ALTER TABLE t DROP COLUMN gone;\nALTER TABLE app.tasks ADD b int;";
        let one = |list: &[&str]| the_one_naming(script, names(list));
        assert_eq!(
            one(&["app.tasks"]),
            Some((4, "the statement naming app.tasks".into()))
        );
        // `t_pkey` is named by no statement: it narrows nothing.
        assert_eq!(
            one(&["gone", "t", "t_pkey", "gone"]),
            Some((3, "the statement naming gone and t".into()))
        );
        // Three statements name t: none is chosen.
        assert_eq!(one(&["t"]), None);
        assert_eq!(one(&["elsewhere"]), None);
        assert_eq!(one(&[]), None);
    }

    #[test]
    fn a_do_block_by_itself_or_by_the_statement_its_context_quotes() {
        let context = "SQL statement \"ALTER TABLE nope\n    ADD x int\"\n\
                       PL/pgSQL function inline_code_block line 3 at SQL statement";
        let two = "DO $$ BEGIN PERFORM 1; END $$;\nSELECT 1;\n\
                   DO $$ BEGIN\n  ALTER TABLE nope\n    ADD x int;\nEND $$;";
        assert_eq!(do_block(context, two).map(|(line, _)| line), Some(3));
        let one = "SELECT 1;\nDO $$ BEGIN RAISE 'x'; END $$;";
        let raise = "PL/pgSQL function inline_code_block line 1 at RAISE";
        assert_eq!(
            do_block(raise, one),
            Some((2, "the file's only DO block".into()))
        );
        let alike = "DO $$ BEGIN ALTER TABLE nope\n    ADD x int; END $$;\n\
                     DO $$ BEGIN ALTER TABLE nope\n    ADD x int; END $$;";
        assert_eq!(do_block(context, alike), None);
        assert_eq!(do_block(raise, two), None);
    }
}
