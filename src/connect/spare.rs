//! One connection kept between the targets a worker runs (many targets):
//! 5,000 schemas of one database need not be 5,000 connects. A session
//! that ended cleanly on PostgreSQL itself (its cancel key is its backend:
//! no pooler, whose server sessions are shared) is kept; the worker's next
//! target takes it if it would connect to exactly the same place (the
//! whole resolved connection: hosts, addresses, port, database, user,
//! password, options, TLS files), after `DISCARD ALL` (settings, role,
//! `LISTEN`, advisory locks, temporary tables, prepared statements: what a
//! new connection would not have). That reset is also the connection's
//! health check: when it fails (a session left in a transaction, a server
//! restarted meanwhile) the connection is closed and a new one made. Any
//! other target drops it. Off outside many-targets workers.

use std::cell::{Cell, RefCell};

use fallible_iterator::FallibleIterator;
use md5::{Digest, Md5};
use postgres::Client;

use super::sniff::CancelKey;
use super::target::ConnectTarget;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static SPARE: RefCell<Option<(String, Client, CancelKey)>> = const { RefCell::new(None) };
}

/// Lets this thread keep a connection between its targets, until the
/// returned guard is dropped (also when the thread unwinds: a client must
/// not be closed by the thread's own thread-local destructors, after those
/// of the runtime it needs).
pub fn enable() -> Guard {
    ENABLED.with(|on| on.set(true));
    Guard
}

pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        ENABLED.with(|on| on.set(false));
        let kept = SPARE.with(|spare| spare.borrow_mut().take());
        drop(kept);
    }
}

fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// What a kept connection must match to serve again: the whole resolved
/// connection (its `Debug` leaves the password out: a digest of it goes in
/// instead) and the application_name it was opened with.
pub fn key(target: &ConnectTarget, application_name: &str) -> String {
    let password = target
        .config
        .get_password()
        .map(|p| format!("{:?}", Md5::digest(p).as_slice()))
        .unwrap_or_default();
    format!(
        "{:?}\0{:?}\0{password}\0{application_name}",
        target.config, target.tls
    )
}

/// Keeps `client` for the next target, if it is PostgreSQL's own session
/// (`backend_pid` is the pid its cancel key carries).
pub fn keep(key: String, client: Client, cancel: CancelKey, backend_pid: Option<i32>) {
    let direct = matches!(cancel, CancelKey::Pid(pid) if backend_pid == Some(pid));
    if !enabled() || !direct || client.is_closed() || std::thread::panicking() {
        return;
    }
    SPARE.with(|spare| *spare.borrow_mut() = Some((key, client, cancel)));
}

/// The kept connection, if it matches `key` and resets cleanly; one that
/// does not is closed.
pub fn take(key: &str) -> Option<(Client, CancelKey)> {
    if !enabled() {
        return None;
    }
    let (kept, mut client, cancel) = SPARE.with(|spare| spare.borrow_mut().take())?;
    if kept != key || client.batch_execute("DISCARD ALL").is_err() {
        return None;
    }
    // Its types are looked up again (their lookup statements are gone).
    client.clear_type_cache();
    // Notifications the last target's LISTEN buffered are not this one's.
    {
        let mut notifications = client.notifications();
        let mut buffered = notifications.iter();
        while let Ok(Some(_)) = buffered.next() {}
    }
    Some((client, cancel))
}
