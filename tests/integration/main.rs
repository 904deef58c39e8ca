//! The integration tests: the miglock binary (and its library) against
//! throwaway PostgreSQL clusters, one module per user story.

// The harness.
mod cluster;
mod harness;
mod probes;
mod smoke;

// The stories.
mod adoption;
mod api;
mod deploy;
mod faults;
mod files;
mod inputs;
mod invalid_indexes;
mod layouts;
mod lifecycle;
mod lint;
mod plan;
mod plan_rewrites;
mod poolers;
mod safe_ddl;
mod server_log;
mod tenants;
mod tls;

// The source tree, the parsers, and the set-up script.
mod fuzz;
mod setup;
mod structure;
