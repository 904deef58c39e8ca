//! `scripts/setup-postgres.sh`, the set-up `examples/demo.sh` and `.ci/run`
//! start with. Its decisions are checked on a stub machine: a PATH holding
//! only stubs of `apt-get`, `sudo`, `useradd`, `id`, `ip`, `kill`, `jq`, `groff` and
//! `pgbouncer` (`MIGLOCK_PGBOUNCER`, outside PATH as in /usr/sbin), `npm` and
//! the `squawk` it installs (under `MIGLOCK_SQUAWK_PREFIX`) (each
//! records how it was called; `apt-get install` "installs" into the fake
//! tree), and a fake `/usr/lib/postgresql` (`MIGLOCK_PG_LIB`). Nothing on the
//! real machine is looked at or changed.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SCRIPT: &str = "scripts/setup-postgres.sh";

/// Every stub logs `name args…` and runs with a PATH of its own for the
/// real tools it needs; `id` and the installed tools come from the stub bin.
const APT_GET: &str = r#"#!/bin/sh
echo "apt-get $*" >>"$STUB_ROOT/calls"
[ "$("$STUB_ROOT/bin/id" -u)" = 0 ] || { echo "apt-get stub: not root" >&2; exit 100; }
[ "$DEBIAN_FRONTEND" = noninteractive ] || { echo "apt-get stub: would prompt" >&2; exit 100; }
[ "$1" = install ] || exit 0
PATH=/usr/bin:/bin
for package in "$@"; do
    case "$package" in
    postgresql-15)
        [ ! -e "$STUB_ROOT/state/no-postgresql-15" ] || { echo "E: Unable to locate package postgresql-15" >&2; exit 100; } ;;
    esac
done
tool() { printf '#!/bin/sh\nexit 0\n' >"$1" && chmod +x "$1"; }
for package in "$@"; do
    case "$package" in
    postgresql-15) mkdir -p "$MIGLOCK_PG_LIB/15/bin" && tool "$MIGLOCK_PG_LIB/15/bin/initdb" ;;
    postgresql) mkdir -p "$MIGLOCK_PG_LIB/17/bin" && tool "$MIGLOCK_PG_LIB/17/bin/initdb" ;;
    iproute2) tool "$STUB_ROOT/bin/ip" ;;
    procps) tool "$STUB_ROOT/bin/kill" ;;
    jq) tool "$STUB_ROOT/bin/jq" ;;
    groff-base) tool "$STUB_ROOT/bin/groff" ;;
    pgbouncer) tool "$MIGLOCK_PGBOUNCER" ;;
    esac
done
"#;

const SUDO: &str = r#"#!/bin/sh
echo "sudo $*" >>"$STUB_ROOT/calls"
STUB_UID=0 exec "$@"
"#;

const USERADD: &str = r#"#!/bin/sh
echo "useradd $*" >>"$STUB_ROOT/calls"
[ "$("$STUB_ROOT/bin/id" -u)" = 0 ] || exit 1
/bin/rm -f "$STUB_ROOT/state/no-postgres-user"
"#;

const ID: &str = r#"#!/bin/sh
case "$*" in
-u) echo "${STUB_UID:-0}" ;;
postgres) [ ! -e "$STUB_ROOT/state/no-postgres-user" ] ;;
*) echo "id stub: unexpected arguments: $*" >&2; exit 2 ;;
esac
"#;

const TOOL: &str = "#!/bin/sh\nexit 0\n";

const SQUAWK: &str = "#!/bin/sh\n[ \"$1\" = --version ] && echo 'squawk 2.66.0'\n";

/// `npm install --global --prefix P squawk-cli@V` "installs" P/bin/squawk.
const NPM: &str = r#"#!/bin/sh
echo "npm $*" >>"$STUB_ROOT/calls"
[ "$("$STUB_ROOT/bin/id" -u)" = 0 ] || { echo "npm stub: not root" >&2; exit 1; }
PATH=/usr/bin:/bin
mkdir -p "$MIGLOCK_SQUAWK_PREFIX/bin"
cat >"$MIGLOCK_SQUAWK_PREFIX/bin/squawk" <<'STUB'
#!/bin/sh
[ "$1" = --version ] && echo "squawk 2.66.0"
STUB
chmod +x "$MIGLOCK_SQUAWK_PREFIX/bin/squawk"
"#;

struct Machine {
    _dir: tempfile::TempDir,
    root: PathBuf,
    uid: u32,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Machine {
    /// Root, apt-get present, sudo present, `ip` and `kill` present, a
    /// postgres user, and no PostgreSQL server.
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for sub in ["bin", "lib", "state", "sbin", "local", "local/bin"] {
            fs::create_dir(root.join(sub)).unwrap();
        }
        let machine = Machine {
            _dir: dir,
            root,
            uid: 0,
        };
        for (name, text) in [
            ("apt-get", APT_GET),
            ("sudo", SUDO),
            ("useradd", USERADD),
            ("id", ID),
            ("ip", TOOL),
            ("kill", TOOL),
            ("jq", TOOL),
            ("groff", TOOL),
            ("npm", NPM),
        ] {
            machine.write_executable(&machine.root.join("bin").join(name), text);
        }
        machine.write_executable(&machine.root.join("local/bin/squawk"), SQUAWK);
        machine.write_executable(&machine.pgbouncer(), TOOL);
        // The stub sudo runs `env DEBIAN_FRONTEND=… apt-get …`.
        symlink(real_tool("env"), machine.root.join("bin/env")).unwrap();
        machine
    }

    fn write_executable(&self, path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn pgbouncer(&self) -> PathBuf {
        self.root.join("sbin/pgbouncer")
    }

    fn without_pgbouncer(self) -> Machine {
        fs::remove_file(self.pgbouncer()).unwrap();
        self
    }

    fn without_squawk(self) -> Machine {
        fs::remove_file(self.root.join("local/bin/squawk")).unwrap();
        self
    }

    fn lib(&self) -> PathBuf {
        self.root.join("lib")
    }

    fn with_server(self, version: &str) -> Machine {
        let bin = self.lib().join(version).join("bin");
        fs::create_dir_all(&bin).unwrap();
        self.write_executable(&bin.join("initdb"), TOOL);
        self
    }

    fn not_root(mut self) -> Machine {
        self.uid = 1000;
        self
    }

    fn without(self, stub: &str) -> Machine {
        fs::remove_file(self.root.join("bin").join(stub)).unwrap();
        self
    }

    fn with_state(self, flag: &str) -> Machine {
        fs::write(self.root.join("state").join(flag), "").unwrap();
        self
    }

    /// The script, with nothing of the real environment but the stubs.
    fn run(&self) -> Run {
        let out = Command::new(real_tool("bash"))
            .arg(Path::new(REPO).join(SCRIPT))
            .env_clear()
            .env("PATH", self.root.join("bin"))
            .env("MIGLOCK_PG_LIB", self.lib())
            .env("MIGLOCK_PGBOUNCER", self.pgbouncer())
            .env("MIGLOCK_SQUAWK_PREFIX", self.root.join("local"))
            .env("STUB_ROOT", &self.root)
            .env("STUB_UID", self.uid.to_string())
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The stubs' calls so far, one `name args…` each; cleared.
    fn take_calls(&self) -> Vec<String> {
        let path = self.root.join("calls");
        let text = fs::read_to_string(&path).unwrap_or_default();
        let _ = fs::remove_file(&path);
        text.lines().map(str::to_string).collect()
    }

    /// A second run finds everything and changes nothing.
    #[track_caller]
    fn assert_all_present(&self, bindir: &str, postgres_user: bool) {
        let again = self.run();
        again.assert_code(0);
        let user = if postgres_user {
            ", the postgres user"
        } else {
            ""
        };
        assert_eq!(
            again.stdout,
            format!(
                "setup-postgres: all present: PostgreSQL server binaries in {}, ip, kill, jq, groff, pgbouncer, squawk 2.66.0{user}\n",
                self.lib().join(bindir).display()
            ),
            "one line; stderr: {}",
            again.stderr
        );
        assert_eq!(self.take_calls(), Vec::<String>::new(), "nothing run");
    }
}

impl Run {
    #[track_caller]
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A real tool's path, found before PATH is replaced by the stubs.
fn real_tool(name: &str) -> PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not found in /usr/bin or /bin"))
}

const INSTALL: &str = "apt-get install -y --no-install-recommends -qq";

#[test]
fn everything_present_installs_nothing_and_says_so_in_one_line() {
    let machine = Machine::new().with_server("15").with_server("16");
    // The newest version, as the demo and the tests pick it.
    machine.assert_all_present("16/bin", true);
    machine.assert_all_present("16/bin", true);
}

#[test]
fn as_root_without_the_server_it_installs_postgresql_15_and_then_finds_it() {
    let machine = Machine::new();
    let run = machine.run();
    run.assert_code(0);
    assert_eq!(
        machine.take_calls(),
        [
            "apt-get update -qq".to_string(),
            format!("{INSTALL} postgresql-15"),
        ]
    );
    assert!(
        run.stdout
            .contains("missing: the PostgreSQL server binaries"),
        "says why: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "setup-postgres: running: {INSTALL} postgresql-15\n"
        )),
        "says what it runs: {}",
        run.stdout
    );
    machine.assert_all_present("15/bin", true);
}

#[test]
fn without_a_postgresql_15_package_it_installs_the_default_version() {
    let machine = Machine::new().with_state("no-postgresql-15");
    machine.run().assert_code(0);
    assert_eq!(
        machine.take_calls(),
        [
            "apt-get update -qq".to_string(),
            format!("{INSTALL} postgresql-15"),
            format!("{INSTALL} postgresql"),
        ]
    );
    machine.assert_all_present("17/bin", true);
}

#[test]
fn not_root_it_installs_through_sudo_and_needs_no_postgres_user() {
    let machine = Machine::new().not_root().with_state("no-postgres-user");
    let run = machine.run();
    run.assert_code(0);
    let sudo = "sudo env DEBIAN_FRONTEND=noninteractive";
    assert_eq!(
        machine.take_calls(),
        [
            format!("{sudo} apt-get update -qq"),
            "apt-get update -qq".to_string(),
            format!("{sudo} {INSTALL} postgresql-15"),
            format!("{INSTALL} postgresql-15"),
        ]
    );
    assert!(
        run.stdout.contains(&format!(
            "setup-postgres: running: {sudo} {INSTALL} postgresql-15\n"
        )),
        "{}",
        run.stdout
    );
    machine.assert_all_present("15/bin", false);
}

#[test]
fn not_root_without_sudo_it_prints_the_command_and_installs_nothing() {
    let machine = Machine::new().not_root().without("sudo");
    let run = machine.run();
    run.assert_code(1);
    assert!(
        run.stderr.contains(
            "as root, run\n    apt-get update && apt-get install -y --no-install-recommends postgresql-15\n"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(machine.take_calls(), Vec::<String>::new());
    assert!(!machine.lib().join("15").exists());
}

#[test]
fn without_apt_get_it_stops_and_says_what_is_missing() {
    let machine = Machine::new().without("apt-get");
    let run = machine.run();
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("missing: the PostgreSQL server binaries"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("There is no apt-get"), "{}", run.stderr);
    assert!(run.stderr.contains("MIGLOCK_PG_BINDIR"), "{}", run.stderr);
    assert_eq!(machine.take_calls(), Vec::<String>::new());
}

#[test]
fn as_root_it_creates_the_missing_postgres_user_once() {
    let machine = Machine::new()
        .with_server("15")
        .with_state("no-postgres-user");
    let run = machine.run();
    run.assert_code(0);
    assert_eq!(
        machine.take_calls(),
        ["useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres"]
    );
    assert!(run.stdout.contains("initdb refuses root"), "{}", run.stdout);
    machine.assert_all_present("15/bin", true);
}

#[test]
fn missing_test_tools_are_installed_without_touching_postgresql() {
    let machine = Machine::new()
        .with_server("15")
        .without("ip")
        .without("kill")
        .without("jq")
        .without("groff")
        .without_pgbouncer();
    let run = machine.run();
    run.assert_code(0);
    assert_eq!(
        machine.take_calls(),
        [
            "apt-get update -qq".to_string(),
            format!("{INSTALL} iproute2 procps jq groff-base pgbouncer"),
        ]
    );
    assert!(
        run.stdout
            .contains("pgbouncer (the connection-pooler tests)"),
        "{}",
        run.stdout
    );
    machine.assert_all_present("15/bin", true);
}

#[test]
fn a_missing_squawk_cli_is_installed_from_npm_at_the_pinned_version() {
    let machine = Machine::new().with_server("15").without_squawk();
    let run = machine.run();
    run.assert_code(0);
    let prefix = machine.root.join("local");
    assert_eq!(
        machine.take_calls(),
        [format!(
            "npm install --global --prefix {} --include=optional --no-audit --no-fund squawk-cli@2.66.0",
            prefix.display()
        )]
    );
    assert!(
        run.stdout.contains("missing: squawk-cli 2.66.0"),
        "{}",
        run.stdout
    );
    machine.assert_all_present("15/bin", true);
    // The pin is the crates': one version for both.
    let manifest = fs::read_to_string(Path::new(REPO).join("Cargo.toml")).unwrap();
    assert!(manifest.contains("squawk-linter = \"=2.66.0\""));
}

/// The demo and CI share the set-up, so they cannot drift apart.
#[test]
fn the_demo_and_ci_start_with_the_script() {
    let read = |file: &str| fs::read_to_string(Path::new(REPO).join(file)).unwrap();
    let demo = read("examples/demo.sh");
    let call = demo
        .find("\"$here/scripts/setup-postgres.sh\"\n")
        .expect("demo.sh runs the set-up script");
    assert!(call < demo.find("cargo build").unwrap(), "before building");
    let ci = read(".ci/run");
    let call = ci
        .find("\nscripts/setup-postgres.sh\n")
        .expect(".ci/run runs the set-up script");
    assert!(
        call < ci.find("$test_command\n").unwrap(),
        "before the tests"
    );
    assert!(
        !ci.contains("postgresql-15"),
        "no second copy of the install"
    );
}
