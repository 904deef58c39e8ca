//! A migration file as PostgreSQL's own tools split it into statements
//! ([`scan`]), and what those statements ask of the runner ([`classify`]).

mod classify;
mod scan;

pub use classify::{
    classify, Classified, Execution, Forbidden, ForbiddenKind, IndexBuild, Planned,
};
#[cfg(any(test, feature = "testing"))]
pub use scan::{split, Statement};
