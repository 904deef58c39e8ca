//! PgBouncer in front of a throwaway cluster, and miglock behind it.
//!
//! A transaction pooler hands each transaction to whichever server session
//! is free, so session state (a session advisory lock, LISTEN, SET) stays
//! on a server session other clients then use. `pool_mode = session`
//! behaves as a direct connection.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{self, TestDb};

pub const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer process on a free port of 127.0.0.1, in front of one
/// cluster; stopped (and its directory removed) when dropped, or when
/// the test process ends however it ends.
pub struct Pooler {
    dir: PathBuf,
    port: u16,
    password: String,
    watchdog: Child,
}

impl Pooler {
    /// `mode`: `transaction`, `session` or `statement`. Five server
    /// sessions per database, so replicas share them.
    #[track_caller]
    pub fn start(db: &TestDb, mode: &str) -> Pooler {
        let cluster = db.cluster();
        let dir = cluster::cluster_root().join(format!(
            "miglock-pgb-{}-{}",
            std::process::id(),
            &cluster::random_hex16()[..8]
        ));
        cluster::make_owned_dir(&dir);
        for attempt in 1..=8 {
            let port = cluster::reserve_port();
            let config = format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pg_port} user=postgres password={password}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir = {dir}\n\
                 auth_type = trust\n\
                 auth_file = {dir}/users.txt\n\
                 admin_users = postgres\n\
                 pool_mode = {mode}\n\
                 default_pool_size = 5\n\
                 min_pool_size = 0\n\
                 max_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits, options\n\
                 logfile = {dir}/pgbouncer.log\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n",
                pg_port = cluster.port(),
                password = cluster.password(),
                dir = dir.display(),
            );
            write_owned(
                &dir.join("users.txt"),
                &format!("\"postgres\" \"{}\"\n", cluster.password()),
            );
            write_owned(&dir.join("pgbouncer.ini"), &config);
            // The shell ends PgBouncer (which refuses to run as root) and
            // removes the directory when its stdin closes: at drop, or when
            // this process dies.
            const SCRIPT: &str = r#""$0" "$1/pgbouncer.ini" >>"$1/stderr.log" 2>&1 &
pid=$!
read _eof
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$1""#;
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c")
                .arg(SCRIPT)
                .arg(PGBOUNCER)
                .arg(&dir)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .current_dir("/")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            if let Some((uid, gid)) = cluster::server_owner() {
                sh.uid(uid).gid(gid);
            }
            let watchdog = sh.spawn().expect("spawn pgbouncer");
            let pooler = Pooler {
                dir: dir.clone(),
                port,
                password: cluster.password().to_string(),
                watchdog,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && pooler.log().contains("process up")
                {
                    return pooler;
                }
                let log = pooler.log();
                if log.contains("Address already in use") && attempt < 8 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "pgbouncer did not start on port {port}:\n{log}\n{}",
                    fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // Port taken: the stderr of the shell is gone with its directory,
            // so make it again for the next attempt.
            drop(pooler);
            cluster::make_owned_dir(&dir);
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `db` through the pooler.
    pub fn url(&self, db: &TestDb) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{}",
            self.password,
            self.port,
            db.name()
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

fn write_owned(path: &std::path::Path, contents: &str) {
    let mut file = fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(contents.as_bytes()).expect("write");
    if let Some((uid, gid)) = cluster::server_owner() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
}

#[test]
fn the_harness_pooler_forwards_queries_and_shares_server_sessions() {
    let db = cluster::Cluster::shared().create_db();
    let pooler = Pooler::start(&db, "transaction");
    let mut client = postgres::Client::connect(&pooler.url(&db), postgres::NoTls).expect("connect");
    let rows = client.simple_query("SELECT 1").expect("select");
    assert!(!rows.is_empty());
}
