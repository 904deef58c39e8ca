//! A migration file as PostgreSQL's own tools split it into statements
//! ([`scan`], psql's meta-commands included: [`psql`]), and what those
//! statements ask of the runner ([`classify`], from the leading words of
//! each, [`words`]), whether the file is held whole or read as a stream
//! ([`stream`]); and which of them name an object ([`mentions`]), for an
//! error PostgreSQL gives no position. Other tools' Down sections, which
//! would run too: [`markers`]. The statements that lock a table hard,
//! rewrite or scan it, for the plan: [`cost`].

mod classify;
mod cost;
mod locks;
mod markers;
mod mentions;
mod psql;
mod scan;
mod stream;
mod words;
mod work;

pub use classify::{
    classify, Execution, ForbiddenKind, IndexBuild, Planned, Summary, NO_TRANSACTION_MARK,
};
pub use cost::{CostlyStatements, MAX_STATEMENTS};
pub use locks::{LockLevel, TableLock};
pub use mentions::{mentions, Mention};
pub use scan::statements;
#[cfg(any(test, feature = "testing"))]
pub use scan::{split, Statement};
pub use stream::summarize;
