//! The classifier: what a file's statements ask of the runner — whether
//! the file can run in one transaction, what it must not contain, and, for
//! a file that runs statement by statement, where each statement is and
//! what the runner must know of it. It reads the scanner's statements one
//! at a time and keeps only that, never the statements themselves.

use std::fmt;
use std::ops::Range;

use super::cost::CostlyStatements;
use super::locks::TableLock;
use super::scan::{self, Statement};

/// Why a file runs outside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `-- miglock:no-transaction` (or refinery's `-- refinery:noTransaction`)
    /// on the first line.
    Marker,
    /// The first statement PostgreSQL refuses in a transaction block.
    Statement(&'static str),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Marker => f.write_str("marker"),
            Reason::Statement(kind) => f.write_str(&kind.replace(' ', "_").to_ascii_lowercase()),
        }
    }
}

/// How a file is executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// In one transaction with its history row.
    Transaction,
    /// Statement by statement in autocommit; `mixed` when it also holds
    /// statements that could have run in a transaction (so it is not
    /// atomic).
    NoTransaction { reason: Reason, mixed: bool },
}

impl Execution {
    pub fn transactional(&self) -> bool {
        matches!(self, Execution::Transaction)
    }

    /// Why it runs without a transaction (`marker`, or the kind of its
    /// first statement PostgreSQL refuses in one, `, mixed` when it holds
    /// others too); `None` when it runs in one.
    pub fn without_transaction(&self) -> Option<String> {
        match self {
            Execution::Transaction => None,
            Execution::NoTransaction { reason, mixed } => Some(if *mixed {
                format!("{reason}, mixed")
            } else {
                reason.to_string()
            }),
        }
    }
}

/// What kind of statement a file must not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenKind {
    /// BEGIN, COMMIT, SAVEPOINT… in a file that runs in miglock's own
    /// transaction, or a BEGIN never ended.
    TransactionControl,
    /// `COPY … FROM stdin`, `DISCARD ALL`.
    Unsupported,
    /// A psql meta-command (`\i`, `\set`, `\connect`, `\gset`…).
    PsqlMetaCommand,
    /// goose's or dbmate's Down section (`-- +goose Down`, `-- migrate:down`).
    DownSection,
}

/// A statement a file must not hold, found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub kind: ForbiddenKind,
    pub line: usize,
    pub message: String,
}

/// A concurrent index build, whose failure PostgreSQL leaves behind as an
/// INVALID index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexBuild {
    /// `CREATE INDEX CONCURRENTLY [name] ON table`: the names as stored in
    /// the catalog (folded unless quoted), when the text gives them.
    Create {
        name: Option<String>,
        table: Option<String>,
    },
    /// `REINDEX … CONCURRENTLY`: its copies are named `…_ccnew`/`…_ccold`.
    Reindex,
}

/// One statement of a file that runs statement by statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Where it is in the file's text (without the BOM), in bytes.
    pub span: Range<usize>,
    /// The line its first token is on, from 1.
    pub line: usize,
    /// Top-level transaction control, as its command name.
    pub control: Option<&'static str>,
    /// `COMMIT AND CHAIN`: a new transaction starts where this one ends.
    pub chains: bool,
    pub index_build: Option<IndexBuild>,
    /// The tables it locks (see [`Statement::table_locks`]).
    pub locks: Vec<TableLock>,
}

impl Planned {
    /// Its text in `script`, the file's text the span was taken from.
    pub fn sql<'s>(&self, script: &'s str) -> &'s str {
        script.get(self.span.clone()).unwrap_or_default()
    }
}

/// What a file asks of the runner, without its statements: what the
/// plan, `status` and the refusals before a run need, and the tables it
/// locks (what a refused attempt looks up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub execution: Execution,
    pub forbidden: Vec<Forbidden>,
    /// Each table once, at the strongest mode the file takes it in; at
    /// most [`MAX_LOCKS`] (a data file of inserts names one table).
    pub locks: Vec<TableLock>,
    /// The indexes its `CREATE INDEX CONCURRENTLY` statements name, as the
    /// catalog stores them: an INVALID one of these names, once the file is
    /// applied, is this file's to rebuild (`apply --rebuild-invalid-indexes`).
    pub index_names: Vec<String>,
    /// The tables its statements rewrite or scan, each once at the most
    /// the file does to it; at most [`MAX_LOCKS`].
    pub work: Vec<(String, super::work::Work)>,
    /// Its statements that lock a table harder than its writers do, or
    /// rewrite or scan one, in order (the plan's lines).
    pub costly: CostlyStatements,
}

/// How many locked tables a summary keeps: the lookup they feed names
/// them in one statement.
pub const MAX_LOCKS: usize = 64;

/// What the classifier found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub execution: Execution,
    pub forbidden: Vec<Forbidden>,
    /// Each statement, for a file that runs without a transaction; empty
    /// for one that runs in a transaction (sent whole, as one script).
    pub statements: Vec<Planned>,
}

/// The mark miglock puts ahead of the first line of another tool's file
/// that asks for no transaction in its own way (`layout::annotations`).
pub const NO_TRANSACTION_MARK: &str = "/* miglock:no-transaction */";

/// Whether the file's first line asks for no transaction: a `--` comment
/// of its own, or [`NO_TRANSACTION_MARK`].
pub fn has_marker(sql: &str) -> bool {
    let first = sql
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("");
    if first.trim_start().starts_with(NO_TRANSACTION_MARK) {
        return true;
    }
    let Some(comment) = first.trim().strip_prefix("--") else {
        return false;
    };
    let comment = comment.trim();
    comment.eq_ignore_ascii_case("miglock:no-transaction")
        || comment.eq_ignore_ascii_case("refinery:noTransaction")
}

/// Reads a file's statements one at a time (see the module docs): how the
/// file must run, from its marker or its statements, and what in it would
/// make miglock's run differ from psql's or break miglock's own bookkeeping
/// (transaction control in a file that runs in miglock's transaction,
/// `COPY … FROM stdin`, `DISCARD ALL`, psql's meta-commands).
pub struct Classifier {
    marker: bool,
    first_refused: Option<&'static str>,
    mixed: bool,
    forbidden: Vec<Forbidden>,
    /// Where the file's own transaction was opened and not yet ended.
    open: Option<usize>,
    /// Each table, at the strongest mode seen.
    locks: std::collections::BTreeMap<String, super::locks::LockLevel>,
    index_names: std::collections::BTreeSet<String>,
    work: std::collections::BTreeMap<String, super::work::Work>,
    costly: CostlyStatements,
}

impl Classifier {
    /// `marker`: the file's first line asks for no transaction.
    pub fn new(marker: bool) -> Classifier {
        Classifier {
            marker,
            first_refused: None,
            mixed: false,
            forbidden: Vec::new(),
            open: None,
            locks: std::collections::BTreeMap::new(),
            index_names: std::collections::BTreeSet::new(),
            work: std::collections::BTreeMap::new(),
            costly: CostlyStatements::default(),
        }
    }

    /// Takes statement `s` into account (it starts `offset` bytes further
    /// into the file than the text it was scanned from); what the runner
    /// needs of it.
    pub fn feed(&mut self, s: &Statement, offset: usize) -> Planned {
        let start = offset + s.start;
        if s.meta {
            // Never sent: it says nothing of how the file runs.
            self.forbidden.push(Forbidden {
                kind: ForbiddenKind::PsqlMetaCommand,
                line: s.line,
                message: super::psql::refusal(s.sql, s.line),
            });
            return Planned {
                span: start..start + s.sql.len(),
                line: s.line,
                control: None,
                chains: false,
                index_build: None,
                locks: Vec::new(),
            };
        }
        match s.refused_in_transaction() {
            Some(kind) => {
                self.first_refused.get_or_insert(kind);
            }
            None => self.mixed = true,
        }
        let control = s.transaction_control();
        let chains = s.chains();
        match control {
            Some("BEGIN" | "START TRANSACTION") => self.open = Some(s.line),
            // AND CHAIN ends a transaction and opens the next at once.
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") if chains => self.open = Some(s.line),
            Some("COMMIT" | "END" | "ROLLBACK" | "ABORT" | "PREPARE TRANSACTION") => {
                self.open = None;
            }
            _ => {}
        }
        if let Some(what) = control.filter(|_| !self.marker) {
            self.forbidden.push(Forbidden {
                kind: ForbiddenKind::TransactionControl,
                line: s.line,
                message: format!(
                    "line {}: {what} controls the transaction, but miglock runs this file in its own \
                     transaction with its history row; remove it, or put `-- miglock:no-transaction` on \
                     the first line to run the file statement by statement as psql would, its own \
                     BEGIN/COMMIT honoured",
                    s.line
                ),
            });
        }
        if s.is_copy_from_stdin() {
            self.forbidden.push(Forbidden {
                kind: ForbiddenKind::Unsupported,
                line: s.line,
                message: format!(
                    "line {}: COPY … FROM stdin reads its rows from psql's input, which miglock does not \
                     have; use INSERT, or COPY from a server-side file",
                    s.line
                ),
            });
        }
        if s.starts(&["DISCARD", "ALL"]) {
            self.forbidden.push(Forbidden {
                kind: ForbiddenKind::Unsupported,
                line: s.line,
                message: format!(
                    "line {}: DISCARD ALL would release the advisory lock this run holds (and its \
                     session settings); remove it",
                    s.line
                ),
            });
        }
        let locks = s.table_locks();
        for lock in &locks {
            if self.locks.len() < MAX_LOCKS || self.locks.contains_key(&lock.table) {
                let level = self.locks.entry(lock.table.clone()).or_insert(lock.level);
                *level = (*level).max(lock.level);
            }
        }
        let work = s.table_work();
        if let Some((table, work)) = &work {
            if self.work.len() < MAX_LOCKS || self.work.contains_key(table) {
                let most = self.work.entry(table.clone()).or_insert(*work);
                *most = (*most).max(*work);
            }
        }
        self.costly.note(s, &locks, work.as_ref());
        let index_build = s.index_build();
        if let Some(IndexBuild::Create {
            name: Some(name), ..
        }) = &index_build
        {
            self.index_names.insert(name.clone());
        }
        Planned {
            span: start..start + s.sql.len(),
            line: s.line,
            control,
            chains,
            index_build,
            locks,
        }
    }

    /// Another tool's Down section starts on `line` (the first one found).
    pub fn down_section(&mut self, line: usize, tool: &str) {
        let kind = ForbiddenKind::DownSection;
        if !self.forbidden.iter().any(|f| f.kind == kind) {
            let message = super::markers::refusal(tool, line);
            self.forbidden.push(Forbidden {
                kind,
                line,
                message,
            });
        }
    }

    pub fn finish(mut self) -> Summary {
        let execution = if self.marker {
            Execution::NoTransaction {
                reason: Reason::Marker,
                mixed: false,
            }
        } else {
            match self.first_refused {
                Some(kind) => Execution::NoTransaction {
                    reason: Reason::Statement(kind),
                    mixed: self.mixed,
                },
                None => Execution::Transaction,
            }
        };
        if let (Some(line), true) = (self.open, self.marker) {
            // psql would roll it back at the end of the file, with its
            // session; miglock's session goes on to record the file as
            // applied.
            self.forbidden.push(Forbidden {
                kind: ForbiddenKind::TransactionControl,
                line,
                message: format!(
                    "line {line}: the transaction this BEGIN opens is never ended; add COMMIT at the \
                     end of the file"
                ),
            });
        }
        Summary {
            execution,
            forbidden: self.forbidden,
            locks: self
                .locks
                .into_iter()
                .map(|(table, level)| TableLock { table, level })
                .collect(),
            index_names: self.index_names.into_iter().collect(),
            work: self.work.into_iter().collect(),
            costly: self.costly,
        }
    }
}

/// Classifies `script` (a file's text without its BOM), held whole: with
/// each statement's place, for the runner of a file without a transaction.
pub fn classify(script: &str) -> Classified {
    let mut classifier = Classifier::new(has_marker(script));
    let mut scanner = scan::statements(script);
    let statements: Vec<Planned> = scanner.by_ref().map(|s| classifier.feed(&s, 0)).collect();
    if let Some((line, tool)) = scanner.down_section() {
        classifier.down_section(line, tool);
    }
    let Summary {
        execution,
        forbidden,
        ..
    } = classifier.finish();
    Classified {
        statements: if execution.transactional() {
            Vec::new()
        } else {
            statements
        },
        execution,
        forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::split::split;

    #[test]
    fn classifies_what_cannot_run_in_a_transaction() {
        let kind = |sql: &str| split(sql)[0].refused_in_transaction();
        assert_eq!(
            kind("create unique index concurrently i on t(a)"),
            Some("CREATE INDEX CONCURRENTLY")
        );
        assert_eq!(kind("CREATE INDEX i ON t(a)"), None);
        assert_eq!(
            kind("drop index concurrently if exists i"),
            Some("DROP INDEX CONCURRENTLY")
        );
        assert_eq!(
            kind("reindex (verbose) table concurrently t"),
            Some("REINDEX CONCURRENTLY")
        );
        assert_eq!(kind("reindex table t"), None);
        assert_eq!(
            kind("reindex schema s"),
            Some("REINDEX SCHEMA/DATABASE/SYSTEM")
        );
        assert_eq!(kind("vacuum analyze t"), Some("VACUUM"));
        assert_eq!(kind("analyze t"), None);
        assert_eq!(kind("cluster verbose"), Some("CLUSTER"));
        assert_eq!(kind("cluster t using i"), None);
        assert_eq!(kind("alter type e add value 'x'"), None);
        assert_eq!(
            kind("alter system set work_mem = '1MB'"),
            Some("ALTER SYSTEM")
        );
        assert_eq!(
            kind("create subscription s connection 'c' publication p with (create_slot = false)"),
            None
        );
        assert_eq!(
            kind("create subscription s connection 'c' publication p"),
            Some("CREATE SUBSCRIPTION")
        );
        assert_eq!(
            kind("alter table t detach partition p concurrently"),
            Some("ALTER TABLE DETACH PARTITION CONCURRENTLY")
        );
        assert_eq!(
            kind("create function f() returns int as $$ vacuum $$ language sql"),
            None
        );
    }

    #[test]
    fn execution_from_marker_or_statements() {
        let m = |sql: &str| classify(sql).execution;
        assert_eq!(m("create table t(a int);"), Execution::Transaction);
        assert_eq!(
            m("-- miglock:no-transaction\ncreate table t(a int);"),
            Execution::NoTransaction {
                reason: Reason::Marker,
                mixed: false
            }
        );
        assert!(!m("-- refinery:noTransaction\nselect 1").transactional());
        assert_eq!(
            m("create index concurrently i on t(a);"),
            Execution::NoTransaction {
                reason: Reason::Statement("CREATE INDEX CONCURRENTLY"),
                mixed: false
            }
        );
        let mixed = m("create table t(a int);\ncreate index concurrently i on t(a);");
        assert_eq!(
            mixed,
            Execution::NoTransaction {
                reason: Reason::Statement("CREATE INDEX CONCURRENTLY"),
                mixed: true
            }
        );
        assert_eq!(
            mixed.without_transaction().as_deref(),
            Some("create_index_concurrently, mixed")
        );
        assert_eq!(Execution::Transaction.without_transaction(), None);
    }

    #[test]
    fn a_file_without_a_transaction_keeps_each_statement_and_its_index_build() {
        let script = "-- miglock:no-transaction\nBEGIN;\nselect 1;\nCOMMIT AND CHAIN;\nCOMMIT;\n\
                      create index concurrently if not exists \"I\" on app.t (a);\n\
                      reindex index concurrently j;";
        let c = classify(script);
        let texts: Vec<&str> = c.statements.iter().map(|p| p.sql(script)).collect();
        assert_eq!(
            texts,
            [
                "BEGIN",
                "select 1",
                "COMMIT AND CHAIN",
                "COMMIT",
                "create index concurrently if not exists \"I\" on app.t (a)",
                "reindex index concurrently j"
            ]
        );
        assert_eq!(c.statements[2].control, Some("COMMIT"));
        assert!(c.statements[2].chains && !c.statements[3].chains);
        assert_eq!(
            c.statements[4].index_build,
            Some(IndexBuild::Create {
                name: Some("I".into()),
                table: Some("t".into())
            })
        );
        assert_eq!(c.statements[5].index_build, Some(IndexBuild::Reindex));
        assert_eq!(c.statements[5].line, 7);
        // A file that runs in one transaction is sent whole.
        assert!(classify("select 1; select 2;").statements.is_empty());
    }

    #[test]
    fn transaction_control_is_refused_without_the_marker() {
        let r = |sql: &str| classify(sql).forbidden;
        let found = r("create table t(a int);\nCOMMIT;\n");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].kind, found[0].line),
            (ForbiddenKind::TransactionControl, 2)
        );
        assert!(r("-- miglock:no-transaction\nBEGIN; select 1; COMMIT;").is_empty());
        // The mark miglock puts ahead of another tool's first line.
        assert!(has_marker(
            "/* miglock:no-transaction */ INSERT INTO t VALUES (1);\n"
        ));
        assert!(!has_marker(
            "INSERT INTO t VALUES (1); /* miglock:no-transaction */\n"
        ));
        let open = r("-- miglock:no-transaction\nselect 1;\nBEGIN;\nselect 2;");
        assert_eq!(
            (open[0].kind, open[0].line),
            (ForbiddenKind::TransactionControl, 3)
        );
        assert!(r("do $$ begin commit; end $$;").is_empty());
        let table = |sql: &str| split(sql)[0].indexed_table();
        assert_eq!(
            table("create index concurrently on t (a)").as_deref(),
            Some("t")
        );
        assert_eq!(
            table("CREATE INDEX CONCURRENTLY i ON ONLY app.\"My T\" (a)").as_deref(),
            Some("My T")
        );
        assert_eq!(table("create index i on t (a)"), None);
        let chained = r("-- miglock:no-transaction\nBEGIN;\nselect 1;\nCOMMIT AND CHAIN;");
        assert_eq!(
            (chained[0].kind, chained[0].line),
            (ForbiddenKind::TransactionControl, 4)
        );
        assert!(r("-- miglock:no-transaction\nBEGIN;\nCOMMIT AND NO CHAIN;").is_empty());
        assert!(r("create procedure p() begin atomic select 1; end;").is_empty());
        assert_eq!(
            r("copy t from stdin;\n1\n\\.\n")[0].kind,
            ForbiddenKind::Unsupported
        );
        assert!(r("copy t from '/tmp/x';").is_empty());
    }

    #[test]
    fn a_summary_names_the_indexes_its_concurrent_builds_make() {
        let names = |sql: &str| {
            let mut classifier = Classifier::new(has_marker(sql));
            for s in scan::statements(sql) {
                classifier.feed(&s, 0);
            }
            classifier.finish().index_names
        };
        let long = "x".repeat(70);
        assert_eq!(
            names(&format!(
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS T_Id ON t (id);\n\
                 create index concurrently \"Big \"\"I\"\"\" on t (a);\n\
                 create index concurrently on t (b);\n\
                 create index concurrently Índice on t (c);\n\
                 create index concurrently {long} on t (d);\n\
                 reindex index concurrently t_id;\n\
                 create index plain on t (e);\n"
            )),
            [
                "Big \"I\"".to_string(),
                "t_id".to_string(),
                "x".repeat(63),
                "Índice".to_string(),
            ]
        );
    }
}
