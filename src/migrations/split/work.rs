//! What a statement makes PostgreSQL do to a table's rows besides locking
//! it, from its leading words: rewrite it whole (a new file, every row
//! copied, indexes rebuilt: time and disk in proportion to its size, under
//! its lock), or scan it (every row read, to check a constraint or build an
//! index). PostgreSQL 15's rules, from ALTER TABLE's Notes:
//! <https://www.postgresql.org/docs/15/sql-altertable.html#SQL-ALTERTABLE-NOTES>.
//! A statement the words do not decide does nothing here.

use super::scan::Statement;

/// The work, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Work {
    /// Every row read (a constraint checked, an index built).
    Scan,
    /// A column type change the words cannot decide: no rewrite when the
    /// old type coerces to the new one as binary (`varchar(10)` to
    /// `varchar(20)` or `text`), a rewrite otherwise.
    MayRewrite,
    /// The table written anew.
    Rewrite,
}

impl Work {
    /// As the plan says it: `rewrites t`.
    pub fn verb(self) -> &'static str {
        match self {
            Work::Scan => "scans",
            Work::MayRewrite => "may rewrite",
            Work::Rewrite => "rewrites",
        }
    }

    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Scan => "scan",
            Work::MayRewrite => "may_rewrite",
            Work::Rewrite => "rewrite",
        }
    }
}

/// Functions a column default may call that are volatile: each row gets
/// its own value, so adding the column rewrites the table.
const VOLATILE: &[&str] = &[
    "RANDOM",
    "GEN_RANDOM_UUID",
    "UUID_GENERATE_V1",
    "UUID_GENERATE_V1MC",
    "UUID_GENERATE_V4",
    "CLOCK_TIMESTAMP",
    "TIMEOFDAY",
    "NEXTVAL",
    "TXID_CURRENT",
    "RANDOM_NORMAL",
];

/// Functions a default may call that are not volatile (one value for
/// every row, stored in the catalog: no rewrite).
const NOT_VOLATILE: &[&str] = &[
    "NOW",
    "TRANSACTION_TIMESTAMP",
    "STATEMENT_TIMESTAMP",
    "CURRENT_SETTING",
    "LOWER",
    "UPPER",
    "COALESCE",
    "ARRAY",
    "ROW",
    "JSONB_BUILD_OBJECT",
    "JSON_BUILD_OBJECT",
];

/// Types whose `nextval` default makes adding them a rewrite.
const SERIAL: &[&str] = &[
    "SERIAL",
    "BIGSERIAL",
    "SMALLSERIAL",
    "SERIAL2",
    "SERIAL4",
    "SERIAL8",
];

/// Target types a change to which may be binary-coercible.
const MAYBE_BINARY: &[&str] = &[
    "TEXT",
    "VARCHAR",
    "CHARACTER",
    "NUMERIC",
    "DECIMAL",
    "CITEXT",
];

impl Statement<'_> {
    /// The table this statement rewrites or scans, and which.
    pub fn table_work(&self) -> Option<(String, Work)> {
        let w = |i: usize| self.word(i);
        let table = |at: usize| self.name_at(at);
        match (w(0), w(1)) {
            ("ALTER", "TABLE") => {
                let at = self.skip(2, &[&["IF", "EXISTS"], &["ONLY"]]);
                let work = self.alter_table_work()?;
                Some((table(at)?, work))
            }
            ("CREATE", _) => {
                let at = if w(1) == "UNIQUE" { 2 } else { 1 };
                if w(at) != "INDEX" {
                    return None;
                }
                let on = self.words.iter().position(|word| word == "ON")?;
                Some((table(self.skip(on + 1, &[&["ONLY"]]))?, Work::Scan))
            }
            ("CLUSTER", _) => Some((table(self.skip(1, &[&["VERBOSE"]]))?, Work::Rewrite)),
            ("VACUUM", _) if self.words.iter().any(|word| word == "FULL") => {
                let at = self
                    .words
                    .iter()
                    .rposition(|word| word == "FULL" || word == ")")?;
                Some((table(at + 1)?, Work::Rewrite))
            }
            ("REFRESH", "MATERIALIZED") => {
                let concurrently = w(3) == "CONCURRENTLY";
                let at = self.skip(3, &[&["CONCURRENTLY"]]);
                let work = if concurrently {
                    Work::Scan
                } else {
                    Work::Rewrite
                };
                Some((table(at)?, work))
            }
            _ => None,
        }
    }

    /// The most an `ALTER TABLE`'s actions do, as far as its words tell.
    fn alter_table_work(&self) -> Option<Work> {
        let words = &self.words;
        let has = |seq: &[&str]| self.has_seq(seq);
        let mut work = None;
        let mut more = |w: Work| work = work.max(Some(w));
        if has(&["SET", "TABLESPACE"])
            || has(&["SET", "LOGGED"])
            || has(&["SET", "UNLOGGED"])
            || has(&["SET", "ACCESS", "METHOD"])
        {
            more(Work::Rewrite);
        }
        for (i, word) in words.iter().enumerate() {
            match word.as_str() {
                // ADD [COLUMN] c type …: a stored generated column, an
                // identity or serial column, or a volatile default.
                "ADD"
                    if !matches!(
                        self.word(i + 1),
                        "CONSTRAINT" | "CHECK" | "FOREIGN" | "PRIMARY" | "UNIQUE" | "EXCLUDE"
                    ) =>
                {
                    let end = words[i + 1..]
                        .iter()
                        .position(|w| w == ",")
                        .map_or(words.len(), |p| i + 1 + p);
                    let column = &words[i + 1..end];
                    let any = |names: &[&str]| column.iter().any(|w| names.contains(&w.as_str()));
                    if any(&["STORED", "IDENTITY"]) || any(SERIAL) {
                        more(Work::Rewrite);
                    }
                    if let Some(d) = column.iter().position(|w| w == "DEFAULT") {
                        let call = column.get(d + 2).is_some_and(|w| w == "(");
                        match column.get(d + 1) {
                            Some(f) if VOLATILE.contains(&f.as_str()) => more(Work::Rewrite),
                            Some(f) if call && !NOT_VOLATILE.contains(&f.as_str()) => {
                                more(Work::MayRewrite)
                            }
                            _ => {}
                        }
                    }
                    if any(&["CHECK", "REFERENCES", "UNIQUE", "PRIMARY"]) {
                        more(Work::Scan);
                    }
                }
                // ALTER [COLUMN] c [SET DATA] TYPE t (not a column named
                // "type").
                "TYPE"
                    if self.word(i.wrapping_sub(1)) == "DATA"
                        || self.word(i.wrapping_sub(2)) == "ALTER"
                        || (self.word(i.wrapping_sub(2)) == "COLUMN"
                            && self.word(i.wrapping_sub(3)) == "ALTER") =>
                {
                    let target = self.word(i + 1);
                    if has(&["USING"]) || !MAYBE_BINARY.contains(&target) {
                        more(Work::Rewrite);
                    } else {
                        more(Work::MayRewrite);
                    }
                }
                "NOT" if self.word(i + 1) == "NULL" && i > 0 && self.word(i - 1) == "SET" => {
                    more(Work::Scan);
                }
                "CHECK" | "FOREIGN" | "EXCLUDE" if !has(&["NOT", "VALID"]) => more(Work::Scan),
                "PRIMARY" | "UNIQUE" if !has(&["USING", "INDEX"]) => more(Work::Scan),
                "VALIDATE" if self.word(i + 1) == "CONSTRAINT" => more(Work::Scan),
                _ => {}
            }
        }
        work
    }
}

#[cfg(test)]
mod tests {
    use super::super::scan::split;
    use super::*;

    fn work(sql: &str) -> Option<(String, Work)> {
        split(sql)[0].table_work()
    }

    #[test]
    fn rewrites_and_scans_as_postgresql_15_does_them() {
        use Work::*;
        let cases: &[(&str, Option<Work>)] = &[
            ("ALTER TABLE t ADD COLUMN x int", None),
            ("ALTER TABLE t ADD COLUMN x int DEFAULT 0", None),
            ("ALTER TABLE t ADD COLUMN x timestamptz DEFAULT now()", None),
            (
                "ALTER TABLE t ADD COLUMN x int DEFAULT my_counter()",
                Some(MayRewrite),
            ),
            ("ALTER TABLE t ADD COLUMN type text", None),
            (
                "ALTER TABLE t ALTER COLUMN type SET DATA TYPE bigint",
                Some(Rewrite),
            ),
            ("ALTER TABLE t ALTER v TYPE bigint", Some(Rewrite)),
            (
                "ALTER TABLE t ADD COLUMN x float8 DEFAULT random()",
                Some(Rewrite),
            ),
            ("ALTER TABLE t ADD x bigserial", Some(Rewrite)),
            (
                "ALTER TABLE t ADD COLUMN x int GENERATED ALWAYS AS (id * 2) STORED",
                Some(Rewrite),
            ),
            ("ALTER TABLE t ALTER COLUMN id TYPE bigint", Some(Rewrite)),
            (
                "ALTER TABLE t ALTER COLUMN v TYPE varchar(20)",
                Some(MayRewrite),
            ),
            (
                "ALTER TABLE t ALTER COLUMN v TYPE text USING v || ''",
                Some(Rewrite),
            ),
            ("ALTER TABLE t ALTER COLUMN v SET NOT NULL", Some(Scan)),
            ("ALTER TABLE t ALTER COLUMN v DROP NOT NULL", None),
            ("ALTER TABLE t ADD CONSTRAINT c CHECK (id > 0)", Some(Scan)),
            (
                "ALTER TABLE t ADD CONSTRAINT c CHECK (id > 0) NOT VALID",
                None,
            ),
            ("ALTER TABLE t VALIDATE CONSTRAINT c", Some(Scan)),
            ("ALTER TABLE t ADD PRIMARY KEY (id)", Some(Scan)),
            (
                "ALTER TABLE t ADD CONSTRAINT p PRIMARY KEY USING INDEX i",
                None,
            ),
            ("ALTER TABLE t SET LOGGED", Some(Rewrite)),
            ("ALTER TABLE t RENAME COLUMN v TO w", None),
            ("CREATE INDEX i ON t (v)", Some(Scan)),
            (
                "CREATE UNIQUE INDEX CONCURRENTLY i ON ONLY t (v)",
                Some(Scan),
            ),
            ("VACUUM (FULL, VERBOSE) t", Some(Rewrite)),
            ("CLUSTER t USING i", Some(Rewrite)),
            ("REFRESH MATERIALIZED VIEW t", Some(Rewrite)),
        ];
        for (sql, expected) in cases {
            let got = work(sql);
            assert_eq!(got.as_ref().map(|(_, w)| *w), *expected, "{sql}");
            if let Some((table, _)) = got {
                assert_eq!(table, "t", "{sql}");
            }
        }
    }
}
