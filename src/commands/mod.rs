//! One module per command.

pub mod apply;
