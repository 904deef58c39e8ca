//! The process environment, injected: commands and the configuration seam
//! read variables through an [`Env`], so tests resolve settings without
//! touching the real environment.

/// Reads one environment variable.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;
