//! Migration files as projects write them: other tools' names and
//! editors' habits, files that cannot run in one transaction, a corpus of
//! real-world SQL applied by miglock and by psql, the splitter that cuts a
//! file into statements, big files, and what a file's session settings may
//! not reach.

mod big_files;
mod corpus;
mod no_transaction;
mod psql_meta;
mod real_world;
mod session_state;
mod splitting;
