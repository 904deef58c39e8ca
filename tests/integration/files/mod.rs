//! Migration files as projects write them: other tools' names and
//! editors' habits, files that cannot run in one transaction, a corpus of
//! real-world SQL applied by miglock and by psql, and the splitter that
//! cuts a file into statements.

mod corpus;
mod no_transaction;
mod real_world;
mod splitting;
