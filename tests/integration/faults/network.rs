//! The network under a holder: its link goes down without a FIN or RST
//! (a network namespace whose veth is taken down), and a server that
//! accepts the connection and never answers.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::harness::{two_migrations, wait_until, Miglock, MigrationDir, SETTLE};
use crate::probes::key_holders;

/// A network namespace joined to the host by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
    ns_ip: String,
    ns_if: String,
}

impl Netns {
    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn create() -> Result<Netns, String> {
        let n = std::process::id() % 200 + 20;
        let name = format!("mlk{}", std::process::id());
        let (host_if, ns_if) = (format!("mlkh{n}"), format!("mlkn{n}"));
        let (host_ip, ns_ip) = (format!("10.231.{n}.1"), format!("10.231.{n}.2"));
        let _ = Netns::ip(&["netns", "del", &name]);
        Netns::ip(&["netns", "add", &name])?;
        let netns = Netns {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
            ns_if: ns_if.clone(),
        };
        Netns::ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        Netns::ip(&["link", "set", &ns_if, "netns", &name])?;
        Netns::ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        Netns::ip(&["link", "set", &host_if, "up"])?;
        Netns::ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ])?;
        Netns::ip(&["-n", &name, "link", "set", &ns_if, "up"])?;
        Netns::ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Netns::ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_holder_whose_network_vanishes_loses_the_lock_within_30_seconds() {
    // No way to leave it out: a skipped test would count as a pass.
    let netns = Netns::create().unwrap_or_else(|why| {
        panic!(
            "cannot create a network namespace ({why}); this test needs root and iproute2 \
             (scripts/setup-postgres.sh installs iproute2)"
        )
    });
    let cluster = Cluster::start_with(&[(
        "listen_addresses",
        &format!("'127.0.0.1,{}'", netns.host_ip),
    )]);
    cluster.write_server_file(
        "pg_hba.conf",
        &format!(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all {}/32 scram-sha-256\n",
            netns.ns_ip
        ),
    );
    cluster
        .admin()
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
    let db = cluster.create_db();
    let key = db.default_key();
    let dir = MigrationDir::with(&[(
        "V1__long.sql",
        "CREATE TABLE t (id int);\nSELECT pg_sleep(600);\n",
    )]);
    let url = format!(
        "postgres://postgres:{}@{}:{}/{}",
        cluster.password(),
        netns.host_ip,
        cluster.port(),
        db.name()
    );
    let mut holder = Miglock::new()
        .program("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            env!("CARGO_BIN_EXE_miglock"),
            "apply",
            "--migrations",
        ])
        .arg(dir.path())
        .env("DATABASE_URL", &url)
        .spawn();
    wait_until(SETTLE, || {
        db.query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND client_addr = '{}' AND state = 'active' AND query LIKE '%pg_sleep(600)%'",
            netns.ns_ip
        )) == 1
    });
    assert_eq!(key_holders(&db, key).len(), 1);

    // The link goes down inside the namespace: no FIN, no RST, just silence.
    Netns::ip(&["-n", &netns.name, "link", "set", &netns.ns_if, "down"]).unwrap();
    let cut = Instant::now();
    wait_until(Duration::from_secs(60), || key_holders(&db, key).is_empty());
    let freed_after = cut.elapsed();
    eprintln!(
        "network cut: lock freed after {:.1}s",
        freed_after.as_secs_f64()
    );
    // keepalives: 5 s idle + 3 × 5 s probes, then client_connection_check_interval 1 s.
    assert!(
        freed_after <= Duration::from_secs(30),
        "lock freed after {freed_after:?}"
    );
    assert!(!db.table_exists("t"), "the cut migration rolled back");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM refinery_schema_history"),
        0
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_server_that_accepts_but_never_answers_is_given_up_on() {
    // The kernel completes the TCP handshake for a listening socket nobody
    // accepts from: rust-postgres's connect_timeout is satisfied, and the
    // start-up exchange would then wait for ever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = two_migrations();
    let out = Miglock::new()
        .env(
            "DATABASE_URL",
            format!("postgres://postgres:x@127.0.0.1:{port}/db"),
        )
        .args([
            "apply",
            "--format",
            "json",
            "--connect-timeout",
            "2s",
            "--migrations",
        ])
        .arg(dir.path())
        .run();
    out.assert_code(5)
        .assert_stderr_contains("the server accepted the connection but did not answer within 2s");
    // Given up on, not hung: the harness kills a run after 120 s.
    assert_eq!(out.json()["outcome"], "unavailable");
    // status and wait give up the same way.
    for command in ["status", "wait"] {
        Miglock::new()
            .env(
                "DATABASE_URL",
                format!("postgres://postgres:x@127.0.0.1:{port}/db"),
            )
            .args([command, "--connect-timeout", "1s", "--migrations"])
            .arg(dir.path())
            .run()
            .assert_code(5)
            .assert_stderr_contains("did not answer");
    }
    drop(silent);
}
