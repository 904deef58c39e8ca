//! Which statements of a script name an object: what tells the statement
//! an error came from when PostgreSQL gives no position for it (the
//! simple query protocol does not say how many statements completed
//! before the one that failed).

use super::scan::{self, Statement};

/// How many words of each statement are looked through: a statement
/// names its objects early; what lies further in a big statement is data.
const KEEP: usize = 4096;

/// A statement that names one of the names asked about, or is a `DO`
/// block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention<'a> {
    /// The line its first token is on, from 1.
    pub line: usize,
    pub sql: &'a str,
    /// For each name asked about, whether it names it.
    pub names: Vec<bool>,
    /// A `DO` block: where an error with a PL/pgSQL context from
    /// `inline_code_block` came from.
    pub is_do: bool,
}

/// The statements of `script` that name any of `names` (each as PostgreSQL
/// prints it in an error: its dotted parts as stored, `app.Tasks` for
/// `app."Tasks"`), and its `DO` blocks. An unquoted word names what it
/// folds to; a quoted one what it spells.
pub fn mentions<'a>(script: &'a str, names: &[String]) -> Vec<Mention<'a>> {
    let names: Vec<Vec<&str>> = names.iter().map(|n| n.split('.').collect()).collect();
    scan::statements(script)
        .keep_words(KEEP)
        .filter(|s| !s.meta)
        .filter_map(|s| {
            let named: Vec<bool> = names.iter().map(|parts| names_in(&s, parts)).collect();
            let is_do = s.word(0) == "DO";
            (is_do || named.contains(&true)).then_some(Mention {
                line: s.line,
                sql: s.sql,
                names: named,
                is_do,
            })
        })
        .collect()
}

/// Whether the statement's words hold the dotted name `parts`.
fn names_in(s: &Statement, parts: &[&str]) -> bool {
    let span = 2 * parts.len() - 1;
    s.words.windows(span).any(|w| {
        parts
            .iter()
            .enumerate()
            .all(|(i, part)| same(&w[2 * i], part) && (i == 0 || w[2 * i - 1] == "."))
    })
}

/// Whether a word of the scanner (unquoted words upper-cased, quoted ones
/// with their quotes) is the identifier `name`.
fn same(word: &str, name: &str) -> bool {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\"") == name,
        None => word.to_ascii_lowercase() == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(script: &str, names: &[&str]) -> Vec<(usize, Vec<bool>)> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        mentions(script, &names)
            .into_iter()
            .map(|m| (m.line, m.names))
            .collect()
    }

    #[test]
    fn statements_are_found_by_the_names_they_hold_as_postgres_folds_them() {
        let script = "CREATE TABLE tasks (id int);\n\
                      -- cft_task_db.tasks is made elsewhere\n\
                      INSERT INTO config VALUES ('cft_task_db.tasks');\n\
                      ALTER TABLE Cft_Task_Db . tasks ADD COLUMN note text;\n\
                      ALTER TABLE \"Cft\".tasks ADD COLUMN b int;";
        // Comments and strings name nothing; case folds unless quoted.
        assert_eq!(lines(script, &["cft_task_db.tasks"]), [(4, vec![true])]);
        assert_eq!(lines(script, &["Cft.tasks"]), [(5, vec![true])]);
        assert_eq!(
            lines(script, &["tasks", "note"]),
            [
                (1, vec![true, false]),
                (4, vec![true, true]),
                (5, vec![true, false])
            ]
        );
    }

    #[test]
    fn do_blocks_are_always_listed_and_meta_commands_never() {
        let script = "\\set x 1\nDO $$ BEGIN PERFORM 1; END $$;\nSELECT 1;";
        let found = mentions(script, &["x".to_string()]);
        assert_eq!(found.len(), 1);
        assert!(found[0].is_do && found[0].line == 2);
        assert_eq!(found[0].names, [false]);
    }
}
