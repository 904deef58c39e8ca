//! Throwaway PostgreSQL clusters for the integration tests.
//!
//! All tests of the binary run in one process, so there is one lazily started
//! [`Cluster::shared`] cluster in which every test makes its own database, and
//! private clusters ([`Cluster::start`]) for tests that stop, kill or restart
//! the server.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, SimpleQueryMessage};

/// Set by harness connections so that tests counting sessions in
/// `pg_stat_activity` can leave them out.
pub const HARNESS_APPLICATION_NAME: &str = "miglock-test-harness";

/// Every password of every cluster started by this process; the output of
/// every command run by the harness is checked against all of them.
static PASSWORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Ports handed to clusters of this process. The kernel may give the same
/// free port to two threads that probe at nearly the same time, and a stopped
/// private cluster must get its port back on `start_again`.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

static CLUSTER_COUNTER: AtomicUsize = AtomicUsize::new(0);
static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

const START_ATTEMPTS: usize = 8;

/// Passwords of all clusters started so far in this process.
pub fn known_passwords() -> Vec<String> {
    PASSWORDS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A PostgreSQL cluster (one data directory and one postmaster) living in a
/// fresh directory under the system temp dir.
pub struct Cluster {
    dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bindir: PathBuf,
    port: u16,
    password: String,
    shared: bool,
    settings: Vec<(String, String)>,
    /// The watchdog waits for EOF on this pipe, i.e. for this process to end
    /// (however it ends), then stops the server and removes `dir`.
    watchdog: Mutex<Option<Child>>,
}

impl Cluster {
    /// The cluster shared by all tests of this process, started on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        // If the start panics the lock stays empty, so every test that needs
        // the cluster reports the start failure instead of an unrelated error.
        SHARED.get_or_init(|| Cluster::launch(&[], true))
    }

    /// A private cluster for tests that stop, kill or restart the server.
    /// Stopped (immediate mode) and deleted on drop. Unlike the shared one it
    /// runs with `synchronous_commit = on`, so a committed transaction
    /// survives `stop_immediate` and a killed postmaster.
    #[track_caller]
    pub fn start() -> Cluster {
        Cluster::launch(&[], false)
    }

    /// Like [`Cluster::start`] with extra `postgresql.conf` settings, which
    /// override the harness defaults. Values are written verbatim, so quote
    /// strings yourself: `("lock_timeout", "'5s'")`.
    #[track_caller]
    pub fn start_with(settings: &[(&str, &str)]) -> Cluster {
        Cluster::launch(settings, false)
    }

    /// Like [`Cluster::start_with`], with `files` written into the data
    /// directory (as [`Cluster::write_server_file`] does) before the server
    /// first starts: certificates and keys for `ssl = on`, a `pg_hba.conf`
    /// of the test's own. No reload to wait for.
    #[track_caller]
    pub fn start_with_files(settings: &[(&str, &str)], files: &[(&str, &str)]) -> Cluster {
        Cluster::launch_from(settings, false, None, files)
    }

    /// A hot standby of this (private) cluster, streaming from it: made
    /// with `pg_basebackup -R`, read-only, stopped and deleted on drop.
    #[track_caller]
    pub fn start_standby(&self) -> Cluster {
        self.assert_private("a standby");
        // initdb's pg_hba.conf lets no one replicate.
        let mut hba = fs::read_to_string(self.data_dir.join("pg_hba.conf")).expect("read pg_hba");
        if !hba.contains("replication") {
            hba.push_str("local replication all trust\n");
            self.write_server_file("pg_hba.conf", &hba);
            self.admin()
                .batch_execute("SELECT pg_reload_conf()")
                .unwrap();
        }
        Cluster::launch_from(&[], false, Some(self), &[])
    }

    #[track_caller]
    fn launch(settings: &[(&str, &str)], shared: bool) -> Cluster {
        Cluster::launch_from(settings, shared, None, &[])
    }

    #[track_caller]
    fn launch_from(
        settings: &[(&str, &str)],
        shared: bool,
        primary: Option<&Cluster>,
        files: &[(&str, &str)],
    ) -> Cluster {
        let bindir = bindir().to_path_buf();
        let password = match primary {
            Some(primary) => primary.password.clone(),
            None => format!("pw-{}", random_hex16()),
        };
        PASSWORDS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(password.clone());

        let dir = cluster_root().join(format!(
            "miglock-pg-{}-{}-{}",
            std::process::id(),
            CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed),
            &random_hex16()[..6]
        ));
        let socket_dir = dir.join("sock");
        // The socket path is `<socket_dir>/.s.PGSQL.<port>` and must fit in
        // sockaddr_un (107 bytes), or the server cannot create it.
        assert!(
            socket_dir.as_os_str().len() < 80,
            "socket dir {} is too long for a unix socket path; set TMPDIR to a shorter directory",
            socket_dir.display()
        );

        let mut cluster = Cluster {
            data_dir: dir.join("data"),
            log_file: dir.join("server.log"),
            socket_dir,
            dir,
            bindir,
            port: 0,
            password,
            shared,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            watchdog: Mutex::new(None),
        };
        // The watchdog comes first so that nothing is left behind if this
        // process dies at any later point. A panic in here drops `cluster`
        // (even the shared one, which is not in its OnceLock yet), and Drop
        // cleans up at once.
        cluster.spawn_watchdog();
        make_owned_dir(&cluster.dir);
        make_owned_dir(&cluster.socket_dir);
        match primary {
            Some(primary) => cluster.base_backup(primary),
            None => cluster.initdb(),
        }
        for (name, contents) in files {
            cluster.write_server_file(name, contents);
        }

        for attempt in 1..=START_ATTEMPTS {
            cluster.port = reserve_port();
            cluster.write_settings();
            match cluster.pg_ctl_start() {
                Ok(()) => return cluster,
                // Another process took the probed port between our probe and
                // the server's bind; any other failure is real.
                Err(log) if is_port_conflict(&log) && attempt < START_ATTEMPTS => continue,
                Err(log) => panic!(
                    "PostgreSQL cluster in {} failed to start on port {}:\n{}",
                    cluster.dir.display(),
                    cluster.port,
                    log
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    fn initdb(&self) {
        let pwfile = self.dir.join("pwfile");
        fs::write(&pwfile, format!("{}\n", self.password)).expect("write pwfile");
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)).expect("chmod pwfile");
        chown_to_server(&pwfile);
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "--pwfile"])
            .arg(&pwfile)
            .args([
                "-A",
                "scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-locale",
                // Skipping the final fsync of a few hundred files saves most
                // of initdb's time; the cluster never has to survive a crash
                // of the machine.
                "--no-sync",
                "--no-instructions",
            ]);
        run_checked(&mut cmd, "initdb");
        let _ = fs::remove_file(&pwfile);

        self.write_server_file(
            "pg_hba.conf",
            "local all all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n",
        );
        // Later settings win in postgresql.conf, so an include at the end
        // overrides what initdb wrote; the included file is rewritten before
        // each start attempt with the chosen port.
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(conf, "\ninclude 'miglock_harness.conf'").expect("append include");
    }

    /// The data directory as a copy of `primary`'s, set up (`-R`) to
    /// stream from it as a hot standby.
    fn base_backup(&self, primary: &Cluster) {
        let mut cmd = self.pg_command("pg_basebackup");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-h")
            .arg(&primary.socket_dir)
            .args(["-p", &primary.port.to_string(), "-U", "postgres"])
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]);
        run_checked(&mut cmd, "pg_basebackup");
    }

    fn write_settings(&self) {
        // With synchronous_commit=off a COMMIT returns before its WAL is
        // written, and an immediate stop (or a killed postmaster) throws away
        // the WAL buffers: committed transactions vanish after the restart.
        // Only private clusters are stopped that way, and their fault tests
        // must be able to rely on committed data.
        let synchronous_commit = if self.shared { "off" } else { "on" };
        let mut text = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = {synchronous_commit}\n\
             full_page_writes = off\n\
             max_connections = 300\n\
             shared_buffers = 32MB\n\
             log_min_messages = warning\n",
            self.port,
            self.socket_dir.display()
        );
        for (k, v) in &self.settings {
            text.push_str(&format!("{k} = {v}\n"));
        }
        self.write_server_file("miglock_harness.conf", &text);
    }

    /// Writes a file into the data directory, owned by the server's user
    /// and private to it (PostgreSQL refuses a key file others can read).
    pub fn write_server_file(&self, name: &str, contents: &str) {
        let path = self.data_dir.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        chown_to_server(&path);
    }

    /// Runs `pg_ctl start` and waits until the server accepts connections;
    /// on failure returns what pg_ctl and the server logged.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log_before = fs::metadata(&self.log_file).map_or(0, |m| m.len());
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-s", "start"]);
        let out = cmd.output().expect("spawn pg_ctl");
        if out.status.success() {
            return Ok(());
        }
        let mut log = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.log_file) {
            use std::io::Seek;
            let _ = f.seek(std::io::SeekFrom::Start(log_before));
            let _ = f.read_to_end(&mut log);
        }
        Err(format!(
            "pg_ctl start: {}\n{}{}\n--- server log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&String::from_utf8_lossy(&log), 60)
        ))
    }

    fn spawn_watchdog(&self) {
        // A pipe instead of polling `kill -0 <pid>`: as root the watchdog
        // runs as the postgres user, which may not signal the test process,
        // and EOF also arrives when the test process is SIGKILLed.
        //
        // If the process dies during initdb or `pg_ctl start`, those go on as
        // orphans and keep writing into the directory, so one `rm -rf` can
        // lose the race (rmdir fails with ENOTEMPTY); retry until it is gone.
        // A postmaster that comes up after its data dir vanished notices the
        // missing postmaster.pid within a minute and shuts itself down.
        const SCRIPT: &str = r#"read _eof
for _ in 1 2 3 4 5 6 7 8 9 10; do
    "$0" -D "$1" stop -m immediate -w >/dev/null 2>&1
    rm -rf "$2" 2>/dev/null
    [ -e "$2" ] || exit 0
    sleep 1
done"#;
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(SCRIPT)
            .arg(self.bindir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(&self.dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at `cargo test` must not
            // kill the watchdog before it has cleaned up.
            .process_group(0);
        if let Some((uid, gid)) = server_owner() {
            sh.uid(uid).gid(gid);
        }
        let child = sh.spawn().expect("spawn cluster watchdog");
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    /// A command for one of the server binaries, run as the server's owner.
    fn pg_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(tool));
        // PGPORT, PGDATA and friends in the caller's environment would
        // silently change what the tools do.
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            // The server's owner may not be allowed into the test's cwd, and
            // initdb and postgres fail if they cannot resolve it.
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = server_owner() {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    #[track_caller]
    fn assert_private(&self, what: &str) {
        assert!(
            !self.shared,
            "{what} on the shared cluster would break concurrent tests; use Cluster::start()"
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<dbname>`
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{}",
            self.password, self.port, dbname
        )
    }

    /// Connection settings for the unix socket (trusted, no password).
    pub fn socket_config(&self, dbname: &str) -> postgres::Config {
        let mut config = self.base_config(dbname);
        config.host_path(&self.socket_dir);
        config
    }

    /// Connection settings for TCP to 127.0.0.1 with the password, the way
    /// the binary connects.
    pub fn tcp_config(&self, dbname: &str) -> postgres::Config {
        let mut config = self.base_config(dbname);
        config.host("127.0.0.1").password(&self.password);
        config
    }

    fn base_config(&self, dbname: &str) -> postgres::Config {
        let mut config = Client::configure();
        config
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .application_name(HARNESS_APPLICATION_NAME)
            .connect_timeout(Duration::from_secs(30));
        config
    }

    /// A fresh connection over the unix socket. Harness helpers use it:
    /// SCRAM makes a TCP connection cost ~90 ms in an unoptimised build,
    /// and the socket keeps working in tests that break password auth.
    pub fn connect(&self, dbname: &str) -> Client {
        self.socket_config(dbname)
            .connect(NoTls)
            .unwrap_or_else(|e| {
                panic!("connect to {dbname} via {}: {e}", self.socket_dir.display())
            })
    }

    /// A fresh TCP connection with the password.
    pub fn connect_tcp(&self, dbname: &str) -> Client {
        self.tcp_config(dbname)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to {dbname} on 127.0.0.1:{}: {e}", self.port))
    }

    /// A fresh TCP connection with the password to database `postgres`.
    pub fn admin(&self) -> Client {
        self.connect_tcp("postgres")
    }

    /// A fresh database on this cluster.
    #[track_caller]
    pub fn create_db(&self) -> TestDb<'_> {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // CREATE DATABASE fails with "source database is being accessed by
        // other users" if anyone is connected to the template, and template1
        // is a common target of tools and tests. Nobody can connect to
        // template0 (datallowconn is false), so concurrent creates are safe.
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        TestDb {
            cluster: self,
            name,
        }
    }

    /// Crash-like stop: the server does no shutdown checkpoint, so the next
    /// start runs crash recovery.
    #[track_caller]
    pub fn stop_immediate(&self) {
        self.assert_private("stop_immediate");
        self.pg_ctl_stop("immediate");
    }

    /// Clean stop: disconnects clients, rolls back their transactions and
    /// writes a shutdown checkpoint.
    #[track_caller]
    pub fn stop_fast(&self) {
        self.assert_private("stop_fast");
        self.pg_ctl_stop("fast");
    }

    #[track_caller]
    fn pg_ctl_stop(&self, mode: &str) {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60", "-s", "-m", mode, "stop"]);
        run_checked(&mut cmd, &format!("pg_ctl stop -m {mode}"));
    }

    /// Starts a stopped cluster again with the same data dir and port.
    #[track_caller]
    pub fn start_again(&self) {
        self.assert_private("start_again");
        // The port stays reserved in this process, but for a short while
        // after a stop it can still be held by another process's socket
        // (the kernel hands the same range out to outgoing connections).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(log) if is_port_conflict(&log) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(log) => panic!(
                    "PostgreSQL cluster in {} failed to start again on port {}:\n{}",
                    self.dir.display(),
                    self.port,
                    log
                ),
            }
        }
    }

    /// Clean stop then start on the same port.
    #[track_caller]
    pub fn restart(&self) {
        self.stop_fast();
        self.start_again();
    }

    /// The postmaster's pid, if the server is running (or crashed and left
    /// its pid file behind).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Everything the server has logged so far.
    pub fn server_log(&self) -> String {
        fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let mut cmd = self.pg_command("pg_ctl");
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", "60", "-s", "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(mut child) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            // Closing the pipe lets the watchdog run; it finds nothing left
            // to do, and waiting for it avoids a zombie per private cluster.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A database of its own for one test.
pub struct TestDb<'c> {
    cluster: &'c Cluster,
    name: String,
}

impl<'c> TestDb<'c> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// TCP URL with the password.
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// A fresh connection over the unix socket (see [`Cluster::connect`]).
    pub fn client(&self) -> Client {
        self.cluster.connect(&self.name)
    }

    /// A fresh TCP connection with the password.
    pub fn client_tcp(&self) -> Client {
        self.cluster.connect_tcp(&self.name)
    }

    pub fn cluster(&self) -> &'c Cluster {
        self.cluster
    }

    /// Runs `sql` (which must return one row with one column) and parses
    /// the value as an integer, whatever its SQL type.
    #[track_caller]
    pub fn query_i64(&self, sql: &str) -> i64 {
        let rows = self.query_strings(sql);
        match rows.as_slice() {
            [row] if row.len() == 1 => {
                let value = row[0]
                    .as_deref()
                    .unwrap_or_else(|| panic!("{sql}: returned NULL"));
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("{sql}: {value:?} is not an i64: {e}"))
            }
            _ => panic!("{sql}: expected one row with one column, got {rows:?}"),
        }
    }

    /// Runs `sql` with the simple query protocol (so column types do not
    /// matter) and returns the rows of the last statement as text.
    #[track_caller]
    pub fn query_strings(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let messages = self
            .client()
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut rows = Vec::new();
        for message in messages {
            match message {
                SimpleQueryMessage::Row(row) => rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                // A new statement starts: keep only the last one's rows.
                SimpleQueryMessage::RowDescription(_) => rows.clear(),
                _ => {}
            }
        }
        rows
    }

    /// The versions in refinery's history table, in order (none when the
    /// table does not exist).
    pub fn history(&self) -> Vec<i64> {
        self.history_of("refinery_schema_history")
    }

    /// The versions in the history table `table`, in order (none when it
    /// does not exist).
    pub fn history_of(&self, table: &str) -> Vec<i64> {
        if !self.table_exists(table) {
            return Vec::new();
        }
        self.query_strings(&format!("SELECT version FROM {table} ORDER BY version"))
            .into_iter()
            .map(|row| row[0].as_deref().unwrap().parse().unwrap())
            .collect()
    }

    /// The default lock key for refinery's table, computed by PostgreSQL
    /// from the formula the README documents.
    pub fn default_key(&self) -> i64 {
        self.key_for("refinery_schema_history")
    }

    /// The default lock key for the history table `table` (as miglock
    /// spells it: lower case, schema-qualified or not).
    pub fn key_for(&self, table: &str) -> i64 {
        self.query_i64(&format!(
            "SELECT ('x0' || left(md5('miglock:' || current_database() || ':' || '{table}'), 15))::bit(64)::bigint"
        ))
    }

    /// Whether `name` (optionally schema-qualified, resolved through the
    /// search_path, unquoted names folded to lower case) is a table, view,
    /// sequence or other relation.
    pub fn table_exists(&self, name: &str) -> bool {
        self.client()
            .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&name])
            .unwrap_or_else(|e| panic!("to_regclass({name}): {e}"))
            .get(0)
    }

    /// Whether table `table` has a column `column`.
    pub fn column_exists(&self, table: &str, column: &str) -> bool {
        self.query_i64(&format!(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = '{table}' AND column_name = '{column}'"
        )) == 1
    }
}

impl Drop for TestDb<'_> {
    fn drop(&mut self) {
        // Each database takes ~7 MB; a suite's worth would pile up in the
        // shared cluster. FORCE ends sessions of children a test left
        // running. After a failure keep quiet: the cluster may be down.
        if std::thread::panicking() {
            return;
        }
        let mut config = self.cluster.socket_config("postgres");
        config.connect_timeout(Duration::from_secs(5));
        if let Ok(mut client) = config.connect(NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Where the PostgreSQL server binaries are: `MIGLOCK_PG_BINDIR`, else
/// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(find_bindir)
}

fn find_bindir() -> PathBuf {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("MIGLOCK_PG_BINDIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            has_initdb(&dir),
            "MIGLOCK_PG_BINDIR={} has no initdb",
            dir.display()
        );
        return dir;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL server binaries not found: set MIGLOCK_PG_BINDIR to the directory \
             holding initdb and pg_ctl, put pg_config on PATH, or install them \
             (Debian: apt-get install postgresql)"
        ),
    }
}

/// The uid/gid to run the server as: the `postgres` user when we are root
/// (initdb and postgres refuse to run as root), else `None` (ourselves).
pub fn server_owner() -> Option<(u32, u32)> {
    static OWNER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *OWNER.get_or_init(|| {
        if effective_uid() != 0 {
            return None;
        }
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let ids = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        });
        Some(ids.unwrap_or_else(|| {
            panic!(
                "running as root, but there is no `postgres` user in /etc/passwd to run \
                 the server as (initdb refuses to run as root)"
            )
        }))
    })
}

fn effective_uid() -> u32 {
    // /proc/self belongs to the process's effective uid; std has no geteuid.
    if let Ok(meta) = fs::metadata("/proc/self") {
        return meta.uid();
    }
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("parse id -u")
}

pub fn make_owned_dir(dir: &Path) {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    chown_to_server(dir);
}

fn chown_to_server(path: &Path) {
    if let Some((uid, gid)) = server_owner() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

pub fn random_hex16() -> String {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A port that was free a moment ago and that no other cluster of this
/// process has; the server may still lose it to another process.
pub fn reserve_port() -> u16 {
    let mut ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let ports = ports.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("probe a free port")
            .port();
        if ports.insert(port) {
            return port;
        }
    }
}

fn is_port_conflict(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
}

#[track_caller]
fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where clusters live: `MIGLOCK_TEST_TMPDIR`, else /dev/shm when it is a
/// writable tmpfs (initdb and CREATE DATABASE are several times faster
/// there than on a disk, even with fsync off), else the temp dir.
pub fn cluster_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MIGLOCK_TEST_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let probe = shm.join(format!(".miglock-probe-{}", std::process::id()));
    if std::fs::create_dir(&probe).is_ok() {
        let _ = std::fs::remove_dir(&probe);
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}
