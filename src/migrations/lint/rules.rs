//! Every rule `miglock lint` knows, its level when on, whether it is on by
//! default and why not, and the fix to give when squawk gives none. The
//! rules are squawk's (<https://squawkhq.com/docs/rules>); the levels and
//! the defaults are miglock's: a rule about a table lock or a rewrite that
//! stalls the application is `deny`, the others `warn`, and a rule whose
//! advice miglock already follows on its own is off.

use std::fmt;

use serde::Serialize;
use squawk_linter::Rule;

/// How much a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Off,
    Warn,
    Deny,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Warn => "warn",
            Level::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Some(Level::Off),
            "warn" => Some(Level::Warn),
            "deny" => Some(Level::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule: one of squawk's, or the statement squawk's parser could not
/// read (`syntax-error`, as squawk-cli reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleId {
    Squawk(Rule),
    SyntaxError,
}

/// Why a rule is off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Off {
    /// On by default.
    No,
    /// squawk's own opt-in rule.
    OptIn,
    /// miglock does what the rule asks, or makes it moot: the reason.
    Moot(&'static str),
}

pub struct RuleInfo {
    pub id: RuleId,
    /// squawk's name for it.
    pub name: &'static str,
    /// Its level when on.
    pub level: Level,
    pub off: Off,
    /// The fix, when squawk's finding carries no help of its own.
    pub fix: &'static str,
}

const STATEMENT_TIMEOUT_MOOT: &str = "miglock sets statement_timeout to 0 on purpose (or to \
    --statement-timeout): a role or server default must not cut a long migration";
/// On (at `warn`) when `apply --ddl-lock-timeout off` turns safe DDL off.
pub const LOCK_TIMEOUT_MOOT: &str = "safe DDL (--ddl-lock-timeout, on by default) gives each \
    migration attempt its own short lock_timeout and retries it";
const CONCURRENT_IN_TRANSACTION_MOOT: &str = "miglock runs a file with CREATE INDEX \
    CONCURRENTLY statement by statement, outside a transaction";

macro_rules! rule {
    ($rule:ident, $name:literal, $level:ident, $off:expr, $fix:literal) => {
        RuleInfo {
            id: RuleId::Squawk(Rule::$rule),
            name: $name,
            level: Level::$level,
            off: $off,
            fix: $fix,
        }
    };
}

/// Every rule, in the order the docs list them: the `deny` ones first.
pub const RULES: &[RuleInfo] = &[
    // Table locks and rewrites: the application stalls while they run.
    rule!(RequireConcurrentIndexCreation, "require-concurrent-index-creation", Deny, Off::No,
        "CREATE INDEX CONCURRENTLY (miglock runs it outside a transaction)"),
    rule!(RequireConcurrentIndexDeletion, "require-concurrent-index-deletion", Deny, Off::No,
        "DROP INDEX CONCURRENTLY"),
    rule!(ConstraintMissingNotValid, "constraint-missing-not-valid", Deny, Off::No,
        "add the constraint NOT VALID, then VALIDATE CONSTRAINT in a later migration"),
    rule!(AddingFieldWithDefault, "adding-field-with-default", Deny, Off::No,
        "add the column without the volatile default, backfill it in batches, then set the default"),
    rule!(AddingForeignKeyConstraint, "adding-foreign-key-constraint", Deny, Off::No,
        "add the foreign key NOT VALID, then VALIDATE CONSTRAINT in a later migration"),
    rule!(ChangingColumnType, "changing-column-type", Deny, Off::No,
        "add a column of the new type, backfill it, and switch over; or widen to a binary-coercible type"),
    rule!(AddingNotNullableField, "adding-not-nullable-field", Deny, Off::No,
        "add a CHECK (col IS NOT NULL) NOT VALID constraint, VALIDATE it, then SET NOT NULL"),
    rule!(AddingSerialPrimaryKeyField, "adding-serial-primary-key-field", Deny, Off::No,
        "build a unique index CONCURRENTLY, then ADD CONSTRAINT … PRIMARY KEY USING INDEX"),
    rule!(DisallowedUniqueConstraint, "disallowed-unique-constraint", Deny, Off::No,
        "build a unique index CONCURRENTLY, then ADD CONSTRAINT … UNIQUE USING INDEX"),
    rule!(PreferRepack, "prefer-repack", Deny, Off::No,
        "REPACK (CONCURRENTLY), PostgreSQL 19 and later (squawk checks it for those only)"),
    rule!(RequireConcurrentPartitionDetach, "require-concurrent-partition-detach", Deny, Off::No,
        "DETACH PARTITION … CONCURRENTLY"),
    rule!(RequireConcurrentReindex, "require-concurrent-reindex", Deny, Off::No,
        "REINDEX … CONCURRENTLY"),
    // Everything else: worth a look, not a stall.
    rule!(AddingRequiredField, "adding-required-field", Warn, Off::No,
        "give the column a default, or make it nullable"),
    rule!(RenamingColumn, "renaming-column", Warn, Off::No,
        "add a new column and move readers and writers over before dropping the old one"),
    rule!(RenamingTable, "renaming-table", Warn, Off::No,
        "create the new table (or a view) and move readers and writers over first"),
    rule!(BanDropDatabase, "ban-drop-database", Warn, Off::No,
        "drop databases outside migrations"),
    rule!(BanDropColumn, "ban-drop-column", Warn, Off::No,
        "stop reading and writing the column in a release before dropping it"),
    rule!(BanDropTable, "ban-drop-table", Warn, Off::No,
        "stop using the table in a release before dropping it"),
    rule!(BanDropNotNull, "ban-drop-not-null", Warn, Off::No,
        "make sure every reader copes with NULL first"),
    rule!(BanTruncateCascade, "ban-truncate-cascade", Warn, Off::No,
        "truncate the tables by name, without CASCADE"),
    rule!(BanCharField, "ban-char-field", Warn, Off::No, "use text or varchar"),
    rule!(BanCreateDomainWithConstraint, "ban-create-domain-with-constraint", Warn, Off::No,
        "put the constraint on the table columns instead"),
    rule!(BanAlterDomainWithAddConstraint, "ban-alter-domain-with-add-constraint", Warn, Off::No,
        "put the constraint on the table columns instead"),
    rule!(BanDuplicateColumnAssignments, "ban-duplicate-column-assignments", Warn, Off::No,
        "assign each column once"),
    rule!(BanUncommittedTransaction, "ban-uncommitted-transaction", Warn, Off::No,
        "end the transaction the file begins, or leave transaction control to miglock"),
    rule!(TransactionNesting, "transaction-nesting", Warn, Off::No,
        "leave transaction control to miglock (one transaction per file)"),
    rule!(PreferBigintOverInt, "prefer-bigint-over-int", Warn, Off::No, "use bigint"),
    rule!(PreferBigintOverSmallint, "prefer-bigint-over-smallint", Warn, Off::No, "use bigint"),
    rule!(PreferIdentity, "prefer-identity", Warn, Off::No,
        "use GENERATED … AS IDENTITY instead of serial"),
    rule!(PreferRobustStmts, "prefer-robust-stmts", Warn, Off::No,
        "add IF NOT EXISTS or IF EXISTS, so that a file cut off half-way can run again"),
    rule!(PreferTextField, "prefer-text-field", Warn, Off::No,
        "use text with a CHECK constraint on its length"),
    rule!(PreferTimestampTz, "prefer-timestamp-tz", Warn, Off::No, "use timestamptz"),
    rule!(RequireEnumValueOrdering, "require-enum-value-ordering", Warn, Off::No,
        "say where the value goes, with BEFORE or AFTER"),
    rule!(IdentifierTooLong, "identifier-too-long", Warn, Off::No,
        "keep names within 63 bytes (PostgreSQL cuts longer ones)"),
    rule!(UnusedIgnore, "unused-ignore", Warn, Off::No,
        "fix the rule name in the squawk-ignore comment"),
    RuleInfo {
        id: RuleId::SyntaxError,
        name: "syntax-error",
        level: Level::Warn,
        off: Off::No,
        fix: "check the statement (the linter's parser may also lag behind PostgreSQL's)",
    },
    // Off by default.
    rule!(RequireStatementTimeout, "require-statement-timeout", Warn,
        Off::Moot(STATEMENT_TIMEOUT_MOOT), "SET statement_timeout"),
    rule!(RequireLockTimeout, "require-lock-timeout", Warn, Off::Moot(LOCK_TIMEOUT_MOOT),
        "SET lock_timeout, or leave safe DDL on"),
    rule!(BanConcurrentIndexCreationInTransaction,
        "ban-concurrent-index-creation-in-transaction", Warn,
        Off::Moot(CONCURRENT_IN_TRANSACTION_MOOT), "run the build outside a transaction"),
    rule!(RequireTableSchema, "require-table-schema", Warn, Off::OptIn,
        "qualify the table with its schema"),
];

/// The rule squawk's `name` is (its spellings and aliases included):
/// `require-timeout-settings` stands for the two timeout rules.
pub fn by_name(name: &str) -> Option<Vec<&'static RuleInfo>> {
    let name = name.trim();
    match name {
        "syntax-error" => return Some(vec![info(RuleId::SyntaxError)]),
        // squawk reports it, but reads no such name.
        "unused-ignore" => return Some(vec![info(RuleId::Squawk(Rule::UnusedIgnore))]),
        _ => {}
    }
    let rule = Rule::try_from(name).ok()?;
    let expands = rule.expands_to();
    if expands.is_empty() {
        Some(vec![info(RuleId::Squawk(rule))])
    } else {
        Some(expands.iter().map(|r| info(RuleId::Squawk(*r))).collect())
    }
}

/// The table's entry for `id`.
pub fn info(id: RuleId) -> &'static RuleInfo {
    RULES
        .iter()
        .find(|r| r.id == id)
        .unwrap_or(&RULES[RULES.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_squawk_rule_has_one_entry_under_its_own_name() {
        for rule in enum_all() {
            if !rule.expands_to().is_empty() {
                continue;
            }
            let entries: Vec<_> = RULES
                .iter()
                .filter(|r| r.id == RuleId::Squawk(rule))
                .collect();
            assert_eq!(entries.len(), 1, "{rule}");
            assert_eq!(entries[0].name, rule.to_string());
        }
        assert_eq!(by_name("require-timeout-settings").unwrap().len(), 2);
        assert_eq!(
            by_name("prefer-timestamptz").unwrap()[0].name,
            "prefer-timestamp-tz"
        );
        assert!(by_name("no-such-rule").is_none());
    }

    /// squawk's rules, each once (it offers no list of its own but its
    /// names, which its `FromStr` reads).
    fn enum_all() -> Vec<Rule> {
        let mut all: Vec<Rule> = RULES
            .iter()
            .filter_map(|r| match r.id {
                RuleId::Squawk(rule) => Some(rule),
                RuleId::SyntaxError => None,
            })
            .collect();
        // Names squawk-cli 2.66 documents: any that the table lacks shows
        // up here as a parse that finds no entry.
        for name in SQUAWK_NAMES {
            let rule: Rule = name.parse().unwrap();
            if !all.contains(&rule) {
                all.push(rule);
            }
        }
        all
    }

    const SQUAWK_NAMES: &[&str] = &[
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
        "constraint-missing-not-valid",
        "adding-field-with-default",
        "adding-foreign-key-constraint",
        "changing-column-type",
        "adding-not-nullable-field",
        "adding-serial-primary-key-field",
        "renaming-column",
        "renaming-table",
        "disallowed-unique-constraint",
        "ban-drop-database",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-repack",
        "prefer-robust-stmts",
        "prefer-text-field",
        "prefer-timestamp-tz",
        "ban-char-field",
        "ban-drop-column",
        "ban-drop-table",
        "ban-drop-not-null",
        "transaction-nesting",
        "adding-required-field",
        "ban-concurrent-index-creation-in-transaction",
        "ban-create-domain-with-constraint",
        "ban-alter-domain-with-add-constraint",
        "ban-truncate-cascade",
        "ban-uncommitted-transaction",
        "require-enum-value-ordering",
        "require-table-schema",
        "identifier-too-long",
        "require-concurrent-partition-detach",
        "require-concurrent-reindex",
        "require-lock-timeout",
        "require-statement-timeout",
        "ban-duplicate-column-assignments",
    ];
}
