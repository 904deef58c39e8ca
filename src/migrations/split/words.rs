//! What a statement's leading words say: whether PostgreSQL refuses it in
//! a transaction block, whether it controls the transaction, what index a
//! concurrent build makes. Words only: a lexer's answer, not a parser's.

use super::classify::IndexBuild;
use super::scan::Statement;

impl Statement<'_> {
    /// `SET [SESSION] standard_conforming_strings {=|TO} value`: the value,
    /// when the statement sets it.
    pub(super) fn sets_standard_strings(&self) -> Option<bool> {
        let at = match (self.word(0), self.word(1)) {
            ("SET", "SESSION") => 2,
            ("SET", _) => 1,
            _ => return None,
        };
        if self.word(at) != "STANDARD_CONFORMING_STRINGS" {
            return None;
        }
        // The value follows the name and `=` or `TO`, with or without
        // spaces (`standard_conforming_strings=off`), maybe quoted.
        let text = self.sql.to_ascii_lowercase();
        let rest = text
            .split_once("standard_conforming_strings")?
            .1
            .trim_start();
        let rest = match rest.strip_prefix('=') {
            Some(rest) => rest,
            None => rest.strip_prefix("to")?,
        };
        let value = rest
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == ';')
            .next()?
            .trim_matches('\'');
        match value {
            "on" | "true" | "yes" | "1" | "default" => Some(true),
            "off" | "false" | "no" | "0" => Some(false),
            _ => None,
        }
    }

    pub fn starts(&self, words: &[&str]) -> bool {
        words.iter().enumerate().all(|(i, w)| self.word(i) == *w)
    }

    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    /// What PostgreSQL 15 refuses in a transaction block (its
    /// `PreventInTransactionBlock` call sites that the statement's own
    /// words decide).
    pub fn refused_in_transaction(&self) -> Option<&'static str> {
        let w = |i| self.word(i);
        match w(0) {
            "VACUUM" => Some("VACUUM"),
            "CREATE" => {
                let mut i = 1;
                if w(i) == "UNIQUE" {
                    i += 1;
                }
                if w(i) == "INDEX" && w(i + 1) == "CONCURRENTLY" {
                    return Some("CREATE INDEX CONCURRENTLY");
                }
                match w(1) {
                    "DATABASE" => Some("CREATE DATABASE"),
                    "TABLESPACE" => Some("CREATE TABLESPACE"),
                    // create_slot is true unless turned off (or connect is).
                    "SUBSCRIPTION" if !self.option_off(&["CREATE_SLOT", "CONNECT"]) => {
                        Some("CREATE SUBSCRIPTION")
                    }
                    _ => None,
                }
            }
            "DROP" => match w(1) {
                "INDEX" if w(2) == "CONCURRENTLY" => Some("DROP INDEX CONCURRENTLY"),
                "DATABASE" => Some("DROP DATABASE"),
                "TABLESPACE" => Some("DROP TABLESPACE"),
                // Refused when the subscription has a slot, which cannot be
                // told from the text; outside a transaction it runs either way.
                "SUBSCRIPTION" => Some("DROP SUBSCRIPTION"),
                _ => None,
            },
            "REINDEX" => {
                // REINDEX [(options)] {INDEX|TABLE|SCHEMA|DATABASE|SYSTEM} [CONCURRENTLY] name
                if self.has("CONCURRENTLY") {
                    Some("REINDEX CONCURRENTLY")
                } else if ["SCHEMA", "DATABASE", "SYSTEM"]
                    .iter()
                    .any(|k| self.words.iter().take(8).any(|w| w == k))
                {
                    Some("REINDEX SCHEMA/DATABASE/SYSTEM")
                } else {
                    None
                }
            }
            // Without a table it clusters every table, each in its own
            // transaction.
            "CLUSTER" => {
                let rest: Vec<&str> = self.words[1..]
                    .iter()
                    .map(String::as_str)
                    .filter(|w| *w != "VERBOSE")
                    .collect();
                rest.is_empty().then_some("CLUSTER")
            }
            "ALTER" => match w(1) {
                "SYSTEM" => Some("ALTER SYSTEM"),
                "DATABASE" if self.has("TABLESPACE") && w(3) == "SET" => {
                    Some("ALTER DATABASE SET TABLESPACE")
                }
                "SUBSCRIPTION" if self.has("REFRESH") || self.has("PUBLICATION") => {
                    if self.has("PUBLICATION") && self.option_off(&["REFRESH"]) {
                        None
                    } else {
                        Some("ALTER SUBSCRIPTION REFRESH")
                    }
                }
                "TABLE" if self.has("DETACH") && self.has("CONCURRENTLY") => {
                    Some("ALTER TABLE DETACH PARTITION CONCURRENTLY")
                }
                _ => None,
            },
            "DISCARD" if w(1) == "ALL" => Some("DISCARD ALL"),
            _ => None,
        }
    }

    /// Whether a `WITH (…)` option among `names` is set to false/off.
    fn option_off(&self, names: &[&str]) -> bool {
        self.words.windows(3).any(|w| {
            names.contains(&w[0].as_str())
                && w[1] == "="
                && matches!(w[2].as_str(), "FALSE" | "OFF")
        }) || self
            .words
            .windows(2)
            .any(|w| names.contains(&w[0].as_str()) && matches!(w[1].as_str(), "FALSE" | "OFF"))
    }

    /// Top-level transaction control, as its command name.
    pub fn transaction_control(&self) -> Option<&'static str> {
        let w = |i| self.word(i);
        match w(0) {
            "BEGIN" => Some("BEGIN"),
            "START" if w(1) == "TRANSACTION" => Some("START TRANSACTION"),
            "COMMIT" if w(1) == "PREPARED" => Some("COMMIT PREPARED"),
            "COMMIT" => Some("COMMIT"),
            "END" => Some("END"),
            "ROLLBACK" if w(1) == "PREPARED" => Some("ROLLBACK PREPARED"),
            "ROLLBACK" if w(1) == "TO" || w(2) == "TO" => Some("ROLLBACK TO SAVEPOINT"),
            "ROLLBACK" => Some("ROLLBACK"),
            "ABORT" => Some("ABORT"),
            "SAVEPOINT" => Some("SAVEPOINT"),
            "RELEASE" => Some("RELEASE SAVEPOINT"),
            "PREPARE" if w(1) == "TRANSACTION" => Some("PREPARE TRANSACTION"),
            _ => None,
        }
    }

    /// `COMMIT AND CHAIN` (not `AND NO CHAIN`): a new transaction starts
    /// where this one ends.
    pub fn chains(&self) -> bool {
        self.words
            .windows(2)
            .any(|w| w[0] == "AND" && w[1] == "CHAIN")
    }

    pub fn is_copy_from_stdin(&self) -> bool {
        self.word(0) == "COPY"
            && self
                .words
                .windows(2)
                .any(|w| w[0] == "FROM" && w[1] == "STDIN")
    }

    /// The name a `CREATE INDEX CONCURRENTLY` statement gives its index,
    /// as stored in the catalog (folded to lower case unless quoted).
    pub fn created_index_name(&self) -> Option<String> {
        if self.refused_in_transaction()? != "CREATE INDEX CONCURRENTLY" {
            return None;
        }
        let at = self.words.iter().position(|w| w == "CONCURRENTLY")? + 1;
        let mut name = self.words.get(at)?;
        if name == "IF" {
            name = self.words.get(at + 3)?;
        }
        if name == "ON" {
            return None;
        }
        catalog_name(name)
    }

    /// The table a `CREATE INDEX CONCURRENTLY` builds on, unqualified, as
    /// PostgreSQL folds it.
    pub fn indexed_table(&self) -> Option<String> {
        if self.refused_in_transaction()? != "CREATE INDEX CONCURRENTLY" {
            return None;
        }
        let mut at = self.words.iter().position(|w| w == "ON")? + 1;
        if self.words.get(at).map(String::as_str) == Some("ONLY") {
            at += 1;
        }
        // schema.table: the table is the part after the last dot.
        while self.words.get(at + 1).map(String::as_str) == Some(".") {
            at += 2;
        }
        catalog_name(self.words.get(at)?)
    }

    /// The concurrent index build this statement is, if it is one: its
    /// failure can leave an `INVALID` index behind (PostgreSQL keeps the
    /// half-built index of a failed concurrent build, to be dropped by hand).
    pub fn index_build(&self) -> Option<IndexBuild> {
        match self.refused_in_transaction()? {
            "CREATE INDEX CONCURRENTLY" => Some(IndexBuild::Create {
                name: self.created_index_name(),
                table: self.indexed_table(),
            }),
            "REINDEX CONCURRENTLY" => Some(IndexBuild::Reindex),
            _ => None,
        }
    }
}

/// An identifier as the catalog stores it: a quoted one as written, an
/// unquoted one with its ASCII letters folded to lower case (PostgreSQL
/// leaves other letters alone in a multibyte encoding), both cut to 63
/// bytes at a character's edge, as PostgreSQL truncates them.
fn catalog_name(word: &str) -> Option<String> {
    let mut name = match word.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?.replace("\"\"", "\""),
        None => word.to_ascii_lowercase(),
    };
    let mut end = name.len().min(MAX_IDENTIFIER);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    Some(name)
}

/// NAMEDATALEN - 1.
const MAX_IDENTIFIER: usize = 63;
