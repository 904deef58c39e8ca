//! One connection kept between the targets a worker runs (many targets):
//! 5,000 schemas of one database need not be 5,000 connects. A session
//! that ends cleanly is reset with `DISCARD ALL` (settings, role, `LISTEN`,
//! advisory locks, temporary tables, prepared statements: what a new
//! connection would not have) and kept for the worker's next target if
//! that is the same database, user and application name; any other target
//! drops it. Off outside many-targets workers: a single run has no next
//! target.

use std::cell::{Cell, RefCell};

use postgres::Client;

use super::sniff::CancelKey;
use super::target::ConnectTarget;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static SPARE: RefCell<Option<(String, Client, CancelKey)>> = const { RefCell::new(None) };
}

/// Lets this thread keep a connection between its targets.
pub fn enable() {
    ENABLED.with(|on| on.set(true));
}

pub fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// What a kept connection must match to serve again: the target as printed
/// (user, hosts, port, database; never the password) and the
/// application_name it was opened with.
pub fn key(target: &ConnectTarget, application_name: &str) -> String {
    format!("{target}\0{}\0{application_name}", target.tls.mode)
}

/// Keeps `client`, reset, for the next target (dropping any other kept).
pub fn keep(key: String, mut client: Client, cancel: CancelKey) {
    if !enabled() || client.is_closed() {
        return;
    }
    // It fails inside a transaction block, or on a session that broke: a
    // session that cannot be made as new is not kept.
    if client.batch_execute("DISCARD ALL").is_err() {
        return;
    }
    // DISCARD ALL deallocated the statements the client caches for types.
    client.clear_type_cache();
    SPARE.with(|spare| *spare.borrow_mut() = Some((key, client, cancel)));
}

/// Closes the kept connection: before the thread ends, not in its
/// thread-local destructors (the client's runtime needs thread-locals of
/// its own).
pub fn close() {
    let kept = SPARE.with(|spare| spare.borrow_mut().take());
    drop(kept);
}

/// The kept connection, if it matches `key`; one that does not is closed.
pub fn take(key: &str) -> Option<(Client, CancelKey)> {
    if !enabled() {
        return None;
    }
    SPARE.with(|spare| match spare.borrow_mut().take() {
        Some((kept, client, cancel)) if kept == key && !client.is_closed() => {
            Some((client, cancel))
        }
        _ => None,
    })
}
