//! Things that go wrong in production, done for real: signals and
//! SIGKILL, a DBA terminating the holder, a server that stops, a standby
//! or read-only server, a network that vanishes, a long query holding a
//! table lock a migration needs.

mod connections;
mod network;
mod signals;
mod standby;
mod table_locks;
