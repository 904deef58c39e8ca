//! Which tables a statement locks, and in which mode, from its leading
//! words: what a refused attempt looks up to find the sessions in its way
//! (PostgreSQL's error names none). The modes are PostgreSQL 15's (its
//! documentation's "Table-Level Lock Modes", and what `pg_locks` shows
//! for each statement in its own transaction). A statement the words do
//! not decide locks nothing here: the caller then escalates rather than
//! waits, the safe side.

use std::fmt;

use super::scan::Statement;

/// PostgreSQL's table lock modes, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockLevel {
    AccessShare,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

impl LockLevel {
    /// As PostgreSQL's documentation and `LOCK TABLE … IN … MODE` name it.
    pub fn sql_name(self) -> &'static str {
        match self {
            LockLevel::AccessShare => "ACCESS SHARE",
            LockLevel::RowShare => "ROW SHARE",
            LockLevel::RowExclusive => "ROW EXCLUSIVE",
            LockLevel::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockLevel::Share => "SHARE",
            LockLevel::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockLevel::Exclusive => "EXCLUSIVE",
            LockLevel::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// As `pg_locks.mode` shows it.
    pub fn pg_locks_name(self) -> &'static str {
        match self {
            LockLevel::AccessShare => "AccessShareLock",
            LockLevel::RowShare => "RowShareLock",
            LockLevel::RowExclusive => "RowExclusiveLock",
            LockLevel::ShareUpdateExclusive => "ShareUpdateExclusiveLock",
            LockLevel::Share => "ShareLock",
            LockLevel::ShareRowExclusive => "ShareRowExclusiveLock",
            LockLevel::Exclusive => "ExclusiveLock",
            LockLevel::AccessExclusive => "AccessExclusiveLock",
        }
    }

    /// The modes held by others that make a request for this one wait
    /// (the conflict table of PostgreSQL's documentation).
    pub fn conflicts(self) -> &'static [LockLevel] {
        use LockLevel::*;
        match self {
            AccessShare => &[AccessExclusive],
            RowShare => &[Exclusive, AccessExclusive],
            RowExclusive => &[Share, ShareRowExclusive, Exclusive, AccessExclusive],
            ShareUpdateExclusive => &[
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            Share => &[
                RowExclusive,
                ShareUpdateExclusive,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            ShareRowExclusive => &[
                RowExclusive,
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            Exclusive => &[
                RowShare,
                RowExclusive,
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            AccessExclusive => &[
                AccessShare,
                RowShare,
                RowExclusive,
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
        }
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.pg_locks_name();
        f.write_str(name.strip_suffix("Lock").unwrap_or(name))
    }
}

/// A relation a statement locks: its name as SQL (`app."My T"`, unquoted
/// parts folded to lower case, as PostgreSQL folds them), and the mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableLock {
    pub table: String,
    pub level: LockLevel,
}

impl Statement<'_> {
    /// The relations this statement locks, as far as its words tell.
    pub fn table_locks(&self) -> Vec<TableLock> {
        use LockLevel::*;
        let w = |i: usize| self.word(i);
        let mut locks = Vec::new();
        let lock = |at: usize, level: LockLevel, locks: &mut Vec<TableLock>| {
            if let Some(table) = self.name_at(at) {
                locks.push(TableLock { table, level });
            }
        };
        match (w(0), w(1)) {
            ("ALTER", "TABLE") => {
                let at = self.skip(2, &[&["IF", "EXISTS"], &["ONLY"]]);
                let level = if self.has_seq(&["VALIDATE", "CONSTRAINT"])
                    || self.has_seq(&["SET", "STATISTICS"])
                    || self.has_seq(&["SET", "("])
                    || self.has_seq(&["RESET", "("])
                    || self.has_seq(&["CLUSTER", "ON"])
                    || self.has_seq(&["SET", "WITHOUT", "CLUSTER"])
                    || self.has_seq(&["ATTACH", "PARTITION"])
                {
                    ShareUpdateExclusive
                } else if self.has_seq(&["FOREIGN", "KEY"])
                    || self.has_seq(&["ENABLE", "TRIGGER"])
                    || self.has_seq(&["DISABLE", "TRIGGER"])
                {
                    ShareRowExclusive
                } else {
                    AccessExclusive
                };
                lock(at, level, &mut locks);
                self.references(&mut locks);
            }
            ("ALTER", "INDEX" | "SEQUENCE" | "VIEW") => {
                let at = self.skip(2, &[&["IF", "EXISTS"]]);
                lock(at, AccessExclusive, &mut locks);
            }
            ("ALTER", "MATERIALIZED") if w(2) == "VIEW" => {
                let at = self.skip(3, &[&["IF", "EXISTS"]]);
                lock(at, AccessExclusive, &mut locks);
            }
            ("CREATE", _) => {
                let mut at = 1;
                if w(at) == "UNIQUE" {
                    at += 1;
                }
                if w(at) == "INDEX" {
                    let concurrently = w(at + 1) == "CONCURRENTLY";
                    if let Some(on) = self.words.iter().position(|word| word == "ON") {
                        let at = self.skip(on + 1, &[&["ONLY"]]);
                        lock(
                            at,
                            if concurrently {
                                ShareUpdateExclusive
                            } else {
                                Share
                            },
                            &mut locks,
                        );
                    }
                } else if self.trigger_or_rule() {
                    if let Some(on) = self
                        .words
                        .iter()
                        .position(|word| word == "ON" || word == "TO")
                    {
                        let level = if self.words.iter().any(|word| word == "TRIGGER") {
                            ShareRowExclusive
                        } else {
                            AccessExclusive
                        };
                        lock(on + 1, level, &mut locks);
                    }
                } else {
                    // CREATE TABLE … REFERENCES y: y's writers are in the way.
                    self.references(&mut locks);
                }
            }
            ("DROP", "TABLE" | "VIEW" | "SEQUENCE") => {
                let at = self.skip(2, &[&["IF", "EXISTS"]]);
                self.list(at, AccessExclusive, &mut locks);
            }
            ("DROP", "MATERIALIZED") if w(2) == "VIEW" => {
                let at = self.skip(3, &[&["IF", "EXISTS"]]);
                self.list(at, AccessExclusive, &mut locks);
            }
            ("DROP", "INDEX") => {
                let concurrently = w(2) == "CONCURRENTLY";
                let at = self.skip(2, &[&["CONCURRENTLY"], &["IF", "EXISTS"]]);
                let level = if concurrently {
                    ShareUpdateExclusive
                } else {
                    AccessExclusive
                };
                self.list(at, level, &mut locks);
            }
            ("TRUNCATE", _) => {
                let at = self.skip(1, &[&["TABLE"], &["ONLY"]]);
                self.list(at, AccessExclusive, &mut locks);
            }
            ("LOCK", _) => {
                let at = self.skip(1, &[&["TABLE"], &["ONLY"]]);
                let level = self.lock_mode().unwrap_or(AccessExclusive);
                self.list(at, level, &mut locks);
            }
            ("CLUSTER", _) => lock(self.skip(1, &[&["VERBOSE"]]), AccessExclusive, &mut locks),
            ("VACUUM", _) if self.words.iter().any(|word| word == "FULL") => {
                if let Some(at) = self
                    .words
                    .iter()
                    .rposition(|word| word == "FULL" || word == ")")
                {
                    self.list(at + 1, AccessExclusive, &mut locks);
                }
            }
            ("REFRESH", "MATERIALIZED") => {
                let concurrently = w(3) == "CONCURRENTLY";
                let at = self.skip(3, &[&["CONCURRENTLY"]]);
                lock(
                    at,
                    if concurrently {
                        Exclusive
                    } else {
                        AccessExclusive
                    },
                    &mut locks,
                );
            }
            ("REINDEX", _) => {
                let concurrently = self.words.iter().any(|word| word == "CONCURRENTLY");
                if let Some(kind) = self
                    .words
                    .iter()
                    .position(|word| word == "TABLE" || word == "INDEX")
                {
                    let at = self.skip(kind + 1, &[&["CONCURRENTLY"]]);
                    let level = match (concurrently, self.word(kind)) {
                        (true, _) => ShareUpdateExclusive,
                        (false, "TABLE") => Share,
                        _ => AccessExclusive,
                    };
                    lock(at, level, &mut locks);
                }
            }
            ("COMMENT", "ON") if w(2) == "TABLE" || w(2) == "COLUMN" => {
                // COMMENT ON COLUMN t.c: the table is every part but the last.
                let column = w(2) == "COLUMN";
                if let Some(mut table) = self.name_at(3) {
                    if column {
                        if let Some(dot) = table.rfind('.') {
                            table.truncate(dot);
                        }
                    }
                    locks.push(TableLock {
                        table,
                        level: ShareUpdateExclusive,
                    });
                }
            }
            ("INSERT", "INTO") | ("MERGE", "INTO") => lock(2, RowExclusive, &mut locks),
            ("UPDATE", _) => lock(self.skip(1, &[&["ONLY"]]), RowExclusive, &mut locks),
            ("DELETE", "FROM") => lock(self.skip(2, &[&["ONLY"]]), RowExclusive, &mut locks),
            _ => {}
        }
        locks.sort();
        locks.dedup();
        locks
    }

    /// Past any of `optional` word sequences found in turn at `at`.
    pub(super) fn skip(&self, mut at: usize, optional: &[&[&str]]) -> usize {
        for words in optional {
            if words
                .iter()
                .enumerate()
                .all(|(i, word)| self.word(at + i) == *word)
            {
                at += words.len();
            }
        }
        at
    }

    pub(super) fn has_seq(&self, seq: &[&str]) -> bool {
        self.words
            .windows(seq.len())
            .any(|w| w.iter().zip(seq).all(|(a, b)| a == b))
    }

    fn trigger_or_rule(&self) -> bool {
        let kinds = ["TRIGGER", "RULE"];
        self.words
            .iter()
            .take(6)
            .any(|word| kinds.contains(&word.as_str()))
    }

    /// `REFERENCES y` anywhere: y's writers conflict with the foreign key.
    fn references(&self, locks: &mut Vec<TableLock>) {
        for (i, word) in self.words.iter().enumerate() {
            if word == "REFERENCES" {
                if let Some(table) = self.name_at(i + 1) {
                    locks.push(TableLock {
                        table,
                        level: LockLevel::ShareRowExclusive,
                    });
                }
            }
        }
    }

    /// `a, b, c` from `at`, each locked at `level`.
    fn list(&self, mut at: usize, level: LockLevel, locks: &mut Vec<TableLock>) {
        while let Some((table, next)) = self.name_and_next(at) {
            locks.push(TableLock { table, level });
            if self.word(next) != "," {
                break;
            }
            at = self.skip(next + 1, &[&["ONLY"]]);
        }
    }

    /// `LOCK … IN <mode> MODE`.
    fn lock_mode(&self) -> Option<LockLevel> {
        use LockLevel::*;
        let at = self.words.iter().position(|word| word == "IN")?;
        let words: Vec<&str> = self.words[at + 1..]
            .iter()
            .map(String::as_str)
            .take_while(|word| *word != "MODE")
            .collect();
        Some(match words.as_slice() {
            ["ACCESS", "SHARE"] => AccessShare,
            ["ROW", "SHARE"] => RowShare,
            ["ROW", "EXCLUSIVE"] => RowExclusive,
            ["SHARE", "UPDATE", "EXCLUSIVE"] => ShareUpdateExclusive,
            ["SHARE"] => Share,
            ["SHARE", "ROW", "EXCLUSIVE"] => ShareRowExclusive,
            ["EXCLUSIVE"] => Exclusive,
            _ => AccessExclusive,
        })
    }

    pub(super) fn name_at(&self, at: usize) -> Option<String> {
        self.name_and_next(at).map(|(name, _)| name)
    }

    /// The (possibly qualified) name starting at word `at`, and the index
    /// of the word after it.
    fn name_and_next(&self, mut at: usize) -> Option<(String, usize)> {
        let mut parts = Vec::new();
        loop {
            parts.push(identifier(self.words.get(at)?)?);
            if self.word(at + 1) != "." {
                return Some((parts.join("."), at + 1));
            }
            at += 2;
        }
    }
}

/// A word as an identifier in SQL: a quoted one as written, an unquoted
/// one folded to lower case; `None` for a mark, a string or a keyword that
/// cannot start a name.
fn identifier(word: &str) -> Option<String> {
    if word.starts_with('"') {
        return Some(word.to_string());
    }
    let first = word.chars().next()?;
    let reserved = [
        "(", "SET", "WHERE", "AS", "USING", "ON", "VALUES", "DEFAULT", "SELECT",
    ];
    if !(first.is_alphabetic() || first == '_') || reserved.contains(&word) {
        return None;
    }
    Some(word.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::LockLevel::*;
    use super::*;
    use crate::migrations::split::split;

    fn locks(sql: &str) -> Vec<(String, LockLevel)> {
        split(sql)[0]
            .table_locks()
            .into_iter()
            .map(|l| (l.table, l.level))
            .collect()
    }

    fn one(table: &str, level: LockLevel) -> Vec<(String, LockLevel)> {
        vec![(table.to_string(), level)]
    }

    #[test]
    fn the_modes_postgresql_takes_for_common_ddl() {
        assert_eq!(
            locks("ALTER TABLE t ADD COLUMN c int"),
            one("t", AccessExclusive)
        );
        assert_eq!(
            locks("alter table if exists only App.\"My T\" add column c int default 0"),
            one("app.\"My T\"", AccessExclusive)
        );
        assert_eq!(
            locks("ALTER TABLE child ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES parent (id)"),
            vec![
                ("child".to_string(), ShareRowExclusive),
                ("parent".to_string(), ShareRowExclusive)
            ]
        );
        assert_eq!(
            locks("ALTER TABLE t VALIDATE CONSTRAINT c"),
            one("t", ShareUpdateExclusive)
        );
        assert_eq!(locks("CREATE INDEX i ON t (a)"), one("t", Share));
        assert_eq!(
            locks("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON ONLY s.t (a)"),
            one("s.t", ShareUpdateExclusive)
        );
        assert_eq!(
            locks("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()"),
            one("t", ShareRowExclusive)
        );
        assert_eq!(
            locks("CREATE TABLE c (id int, p int REFERENCES parent (id))"),
            one("parent", ShareRowExclusive)
        );
        assert_eq!(
            locks("DROP TABLE IF EXISTS a, b"),
            vec![
                ("a".to_string(), AccessExclusive),
                ("b".to_string(), AccessExclusive)
            ]
        );
        assert_eq!(
            locks("DROP INDEX CONCURRENTLY IF EXISTS i"),
            one("i", ShareUpdateExclusive)
        );
        assert_eq!(locks("TRUNCATE TABLE t"), one("t", AccessExclusive));
        assert_eq!(locks("LOCK TABLE t IN SHARE MODE"), one("t", Share));
        assert_eq!(
            locks("COMMENT ON COLUMN s.t.c IS 'x'"),
            one("s.t", ShareUpdateExclusive)
        );
        assert_eq!(locks("UPDATE t SET a = 1"), one("t", RowExclusive));
        assert_eq!(locks("INSERT INTO t VALUES (1)"), one("t", RowExclusive));
        assert!(locks("SELECT 1").is_empty());
        assert!(locks("DO $$ BEGIN ALTER TABLE t ADD c int; END $$").is_empty());
    }

    #[test]
    fn conflicts_follow_the_documentation_table() {
        assert_eq!(AccessShare.conflicts(), [AccessExclusive]);
        assert!(AccessExclusive.conflicts().contains(&AccessShare));
        // Symmetric: a conflicts with b exactly when b conflicts with a.
        let all = [
            AccessShare,
            RowShare,
            RowExclusive,
            ShareUpdateExclusive,
            Share,
            ShareRowExclusive,
            Exclusive,
            AccessExclusive,
        ];
        for a in all {
            for b in all {
                assert_eq!(
                    a.conflicts().contains(&b),
                    b.conflicts().contains(&a),
                    "{a} / {b}"
                );
            }
        }
        assert_eq!(ShareUpdateExclusive.to_string(), "ShareUpdateExclusive");
    }
}
