#!/usr/bin/env python3
"""miglock benchmarks, side by side with psql doing the same work.

Starts its own throwaway PostgreSQL cluster (fsync on, TCP on 127.0.0.1,
trust authentication for every client alike), builds miglock in release
mode, and runs each scenario alternating miglock and its baseline, reporting
medians and ratios:

  noop     `apply` with 400 migrations applied  vs  psql -c 'select 1'
           (process + connect + one query), plus peak RSS of each
  bulk     400 `create table` migrations on an empty database  vs  one psql
           session doing, per migration, BEGIN; SQL; history insert; COMMIT
           (wall time and client CPU time)
  handoff  holder's commit of its last migration -> waiter's first migration
           statement, on the server's clock, two miglock replicas sharing a
           lock key  vs  two psql sessions handing over a blocking
           pg_advisory_lock
  storm    100 replicas waiting for a held lock: lock attempts per second
           the server sees (transactions committed per second)
  ddl      pgbench traffic (4 clients, rate-capped) on a table while one
           session sits idle in a transaction that read it, and an ALTER TABLE
           on it: psql vs miglock's defaults, worst and p99 application latency
           while the migration is pending, and how long after the blocker ends
           the migration commits
  lint     `miglock lint` over 400 migration files of a few statements each
           (tables, indexes, foreign keys, column changes), no database:
           wall time and peak RSS
  memory   one 50 MB migration file (541,649 INSERTs): peak RSS of `apply`
           applying it, of `status` while it is pending and once applied, and
           of a no-op `apply`
  layouts  the no-op `apply` of 400 applied migrations in each tool's
           layout (Flyway, goose, dbmate, sqlx, golang-migrate: their names,
           annotations and history tables, told by --layout auto) against
           refinery's layout, 5x the runs of the others

Peers (sqlx-cli, refinery_cli, dbmate, node-pg-migrate) are measured on the
no-op when found on PATH, and skipped with a message otherwise; see
BENCHMARKS.md for how to install them.

Usage: python3 bench/bench.py [--runs N] [--only noop,bulk,handoff,storm,memory,ddl,lint,layouts]
       python3 bench/bench.py --check      # all but storm, against
                                           # TARGETS; exit 1 when one misses
"""

import argparse
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIGRATIONS = 400

# What --check holds the figures to: (name, target, how it compares).
TARGETS = {
    "noop wall vs psql select 1": (0.6, "ratio"),
    "noop peak RSS MB": (4.5, "value"),
    "bulk wall vs psql": (1.0, "ratio"),
    "bulk client CPU vs psql": (0.4, "ratio"),
    "handoff median vs psql": (1.15, "ratio"),
    "handoff p90 vs psql p90": (1.5, "ratio"),
    "memory apply peak RSS vs file": (2.5, "ratio"),
    "memory status pending peak RSS MB": (32, "value"),
    "memory status applied peak RSS MB": (32, "value"),
    "memory no-op apply peak RSS MB": (32, "value"),
    "ddl worst latency ms (defaults)": (100, "value"),
    "ddl commit after blocker ends ms": (1000, "value"),
    "lint 400 files ms": (200, "value"),
    "layouts no-op, worst vs refinery": (1.1, "ratio"),
}
FIGURES = {}
STATIC_TARGET = "x86_64-unknown-linux-gnu"
STATIC_BINARY = None


def figure(name, value):
    """Records a figure --check compares with its target."""
    FIGURES[name] = value


def log(msg):
    print(msg, flush=True)


def pg_bindir():
    if os.environ.get("MIGLOCK_PG_BINDIR"):
        return os.environ["MIGLOCK_PG_BINDIR"]
    candidates = sorted(
        (d for d in os.listdir("/usr/lib/postgresql") if os.path.exists(f"/usr/lib/postgresql/{d}/bin/initdb")),
        key=lambda v: [int(x) for x in v.split(".") if x.isdigit()],
    ) if os.path.isdir("/usr/lib/postgresql") else []
    if not candidates:
        sys.exit("bench: PostgreSQL server binaries not found (set MIGLOCK_PG_BINDIR)")
    return f"/usr/lib/postgresql/{candidates[-1]}/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway cluster; as root it runs as the postgres user."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="miglock-bench-")
        self.port = free_port()
        self.as_owner = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        data = f"{self.dir}/data"
        subprocess.run(self.as_owner + [f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8"],
                       check=True, stdout=subprocess.DEVNULL)
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                f"-c shared_buffers=128MB -c track_commit_timestamp=on -c log_timezone=UTC")
        subprocess.run(self.as_owner + [f"{bindir}/pg_ctl", "-D", data, "-l", f"{self.dir}/log", "-w", "-o", opts, "start"],
                       check=True, stdout=subprocess.DEVNULL)
        self.data = data

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, db, sql, capture=False):
        out = subprocess.run([f"{self.bindir}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                              "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip() if capture else None

    def create_db(self, name):
        self.psql("postgres", f"DROP DATABASE IF EXISTS {name}")
        self.psql("postgres", f"CREATE DATABASE {name}")

    def stop(self):
        subprocess.run(self.as_owner + [f"{self.bindir}/pg_ctl", "-D", self.data, "stop", "-m", "immediate"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def peak_rss_mb(cmd, env=None):
    """Peak RSS of one run, measured by GNU time (a forked Python child
    would count the interpreter's own pages before exec)."""
    if not os.path.exists("/usr/bin/time"):
        return float("nan")
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr}")
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def run(cmd, env=None):
    """Wall ms and client CPU ms of one process."""
    # stderr to a file, not a pipe: a run that logs more than a pipe holds
    # (apply's LINT_WARNING lines over 400 pending files) would block on it
    # while this waits for it to end.
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter() - start) * 1000
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def alternate(cases, runs):
    """Runs each case `runs` times, interleaved so drift hits all alike."""
    results = {name: [] for name in cases}
    for _ in range(runs):
        for name, cmd in cases.items():
            results[name].append(run(*cmd) if isinstance(cmd, tuple) else run(cmd))
    return results


def med(values, i=0):
    return statistics.median(v[i] for v in values)


def write_migrations(folder, count, body):
    os.makedirs(folder, exist_ok=True)
    for i in range(1, count + 1):
        with open(f"{folder}/V{i}__create_t_{i}.sql", "w") as f:
            f.write(body(i))


def bench_noop(cluster, miglock, runs, work):
    log(f"\n== no-op: apply with {MIGRATIONS} migrations applied, vs psql -c 'select 1'")
    cluster.create_db("noop")
    folder = f"{work}/noop"
    write_migrations(folder, MIGRATIONS, lambda i: f"CREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n")
    env = dict(os.environ, DATABASE_URL=cluster.url("noop"))
    run([miglock, "apply", "-q", "--migrations", folder], env)
    psql = [f"{cluster.bindir}/psql", "-X", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d",
            "noop", "-c", "select 1"]
    cases = {"psql select 1": psql, "miglock apply (no-op)": ([miglock, "apply", "-q", "--migrations", folder], env)}
    if STATIC_BINARY:
        cases["miglock, static build"] = ([STATIC_BINARY, "apply", "-q", "--migrations", folder], env)
    for name, cmd in peers_noop(cluster, folder).items():
        cases[name] = cmd
    results = alternate(cases, runs)
    base = med(results["psql select 1"])
    for name, values in results.items():
        cmd = cases[name]
        rss = statistics.median(peak_rss_mb(*cmd) if isinstance(cmd, tuple) else peak_rss_mb(cmd) for _ in range(5))
        log(f"  {name:28} {med(values):7.2f} ms  ratio {med(values) / base:4.2f}   "
            f"cpu {med(values, 1):6.2f} ms   peak RSS {rss:5.1f} MB")
        if name == "miglock apply (no-op)":
            figure("noop wall vs psql select 1", med(values) / base)
            figure("noop peak RSS MB", rss)


# Each layout's folder of 400 create-table migrations, as its tool names
# and annotates them: (name, body).
LAYOUT_FILES = {
    "flyway": lambda i, t: (f"V1.{i}__create_t_{i}.sql", t),
    "goose": lambda i, t: (f"{i:05d}_create_t_{i}.sql",
                           f"-- +goose Up\n{t}-- +goose Down\nDROP TABLE t_{i};\n"),
    "dbmate": lambda i, t: (f"2024{i:010d}_create_t_{i}.sql",
                            f"-- migrate:up\n{t}\n-- migrate:down\nDROP TABLE t_{i};\n"),
    "sqlx": lambda i, t: (f"{i:05d}_create_t_{i}.sql", t),
    "golang-migrate": lambda i, t: (f"{i:06d}_create_t_{i}.up.sql", t),
}


def write_layout(folder, layout):
    """400 create-table migrations as `layout`'s tool names and annotates them."""
    body = lambda i: f"CREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n"
    if layout == "refinery":
        write_migrations(folder, MIGRATIONS, body)
        return folder
    os.makedirs(folder, exist_ok=True)
    for i in range(1, MIGRATIONS + 1):
        name, text = LAYOUT_FILES[layout](i, body(i))
        with open(f"{folder}/{name}", "w") as f:
            f.write(text)
    return folder


def bench_layouts(cluster, miglock, runs, work):
    """The no-op in every layout, against refinery's (--layout auto)."""
    log(f"\n== layouts: apply with {MIGRATIONS} migrations applied, each tool's folder and table, vs refinery's")
    cases = {}
    for layout in ["refinery"] + list(LAYOUT_FILES):
        db = f"layout_{layout.replace('-', '_')}"
        cluster.create_db(db)
        folder = write_layout(f"{work}/layout-{layout}", layout)
        env = dict(os.environ, DATABASE_URL=cluster.url(db))
        cmd = [miglock, "apply", "-q", "--lint", "off", "--migrations", folder]
        run(cmd, env)
        cases[layout] = (cmd, env)
    # Differences of a few percent: many more runs than the other scenarios.
    results = alternate(cases, runs * 5)
    base = med(results["refinery"])
    worst = 0
    for name, values in results.items():
        ratio = med(values) / base
        worst = max(worst, ratio)
        log(f"  {name:28} {med(values):7.2f} ms  ratio {ratio:4.2f}   cpu {med(values, 1):6.2f} ms")
    figure("layouts no-op, worst vs refinery", worst)


def peers_noop(cluster, folder):
    """Peer tools found on PATH, set up on their own database each."""
    found = {}
    url = cluster.url
    if shutil.which("refinery"):
        cluster.create_db("peer_refinery")
        cfg = f"{folder}.refinery.toml"
        with open(cfg, "w") as f:
            f.write(f'[main]\ndb_type = "Postgres"\ndb_host = "127.0.0.1"\ndb_port = "{cluster.port}"\n'
                    f'db_user = "postgres"\ndb_name = "peer_refinery"\n')
        cmd = ["refinery", "migrate", "-c", cfg, "-p", folder]
        run(cmd)
        found["refinery_cli migrate"] = cmd
    else:
        log("  (refinery_cli not found: cargo install refinery_cli --no-default-features --features postgresql)")
    if shutil.which("sqlx"):
        cluster.create_db("peer_sqlx")
        sqlx_dir = f"{folder}.sqlx"
        os.makedirs(sqlx_dir, exist_ok=True)
        for i in range(1, MIGRATIONS + 1):
            with open(f"{sqlx_dir}/{i:04d}_create_t_{i}.sql", "w") as f:
                f.write(f"CREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n")
        cmd = ["sqlx", "migrate", "run", "--source", sqlx_dir, "--database-url", url("peer_sqlx")]
        run(cmd)
        found["sqlx-cli migrate run"] = cmd
    else:
        log("  (sqlx-cli not found: cargo install sqlx-cli --no-default-features --features postgres,rustls)")
    if shutil.which("dbmate"):
        cluster.create_db("peer_dbmate")
        dbmate_dir = f"{folder}.dbmate"
        os.makedirs(dbmate_dir, exist_ok=True)
        for i in range(1, MIGRATIONS + 1):
            with open(f"{dbmate_dir}/{i:04d}_create_t_{i}.sql", "w") as f:
                f.write(f"-- migrate:up\nCREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n-- migrate:down\n")
        cmd = ["dbmate", "--no-dump-schema", "-d", dbmate_dir, "-u", url("peer_dbmate") + "?sslmode=disable", "up"]
        run(cmd)
        found["dbmate up"] = cmd
    else:
        log("  (dbmate not found: npm install -g dbmate)")
    if shutil.which("node-pg-migrate"):
        cluster.create_db("peer_npm")
        npm_dir = f"{folder}.npm"
        os.makedirs(npm_dir, exist_ok=True)
        for i in range(1, MIGRATIONS + 1):
            with open(f"{npm_dir}/{i:04d}_create_t_{i}.sql", "w") as f:
                f.write(f"-- Up Migration\nCREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n")
        env = dict(os.environ, DATABASE_URL=url("peer_npm"))
        cmd = (["node-pg-migrate", "up", "-m", npm_dir, "--no-lock"], env)
        run(*cmd)
        found["node-pg-migrate up"] = (["node-pg-migrate", "up", "-m", npm_dir], env)
    else:
        log("  (node-pg-migrate not found: npm install -g node-pg-migrate pg)")
    return found


def lint_file(i):
    """A migration of a few statements, some of them findings."""
    return (
        f"-- Orders, part {i}.\n"
        f"CREATE TABLE IF NOT EXISTS t_{i} (\n"
        f"    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        f"    name text NOT NULL,\n"
        f"    amount numeric(12, 2) NOT NULL DEFAULT 0,\n"
        f"    created_at timestamptz NOT NULL DEFAULT now()\n"
        f");\n"
        f"CREATE INDEX t_{i}_name ON t_{i} (name);\n"
        f"ALTER TABLE t_{i} ADD COLUMN note varchar(200);\n"
        f"ALTER TABLE t_{i} ADD CONSTRAINT t_{i}_amount CHECK (amount >= 0);\n"
        f"COMMENT ON TABLE t_{i} IS 'orders, part {i}';\n"
    )


def bench_lint(miglock, runs, work):
    log(f"\n== lint: miglock lint over {MIGRATIONS} files, no database")
    folder = f"{work}/lint"
    write_migrations(folder, MIGRATIONS, lint_file)
    # Every finding a warning: exit 0, as the benchmark's runner wants.
    cmd = [miglock, "lint", "-q", "--lint-rules", "all=warn", "--migrations", folder]
    run(cmd)
    values = [run(cmd) for _ in range(runs)]
    rss = statistics.median(peak_rss_mb(cmd) for _ in range(5))
    log(f"  {'miglock lint (400 files)':28} {med(values):7.2f} ms   cpu {med(values, 1):6.2f} ms   "
        f"peak RSS {rss:5.1f} MB")
    figure("lint 400 files ms", med(values))


def bench_bulk(cluster, miglock, runs, work):
    log(f"\n== bulk: {MIGRATIONS} create-table migrations on an empty database, vs one psql session")
    folder = f"{work}/bulk"
    write_migrations(folder, MIGRATIONS, lambda i: f"CREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n")
    script = f"{work}/bulk.sql"
    with open(script, "w") as f:
        f.write("CREATE TABLE refinery_schema_history (version int4 PRIMARY KEY, name varchar(255), "
                "applied_on varchar(255), checksum varchar(255));\n")
        for i in range(1, MIGRATIONS + 1):
            f.write(f"BEGIN;\nCREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n"
                    f"INSERT INTO refinery_schema_history VALUES ({i}, 'create_t_{i}', now()::text, '0');\nCOMMIT;\n")
    # `apply` lints the pending files by default (`--lint warn`): 400 here,
    # so the run with the lint off says what the lint costs.
    walls = {"psql -f (same statements)": [], "miglock apply": [], "miglock apply --lint off": []}
    for r in range(runs):
        cluster.create_db("bulk_psql")
        cluster.create_db("bulk_miglock")
        cluster.create_db("bulk_nolint")
        cases = [
            ("psql -f (same statements)",
             ([f"{cluster.bindir}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
               str(cluster.port), "-U", "postgres", "-d", "bulk_psql", "-f", script], None)),
            ("miglock apply", ([miglock, "apply", "-q", "--migrations", folder],
                               dict(os.environ, DATABASE_URL=cluster.url("bulk_miglock")))),
            ("miglock apply --lint off", ([miglock, "apply", "-q", "--lint", "off", "--migrations", folder],
                                          dict(os.environ, DATABASE_URL=cluster.url("bulk_nolint")))),
        ]
        # Each goes first in turn, and each starts after a checkpoint: the
        # new databases' WAL, or the run before's, is not flushed on its
        # time (without it, 0.93x to 1.27x for the same build in 5 rounds).
        for name, (cmd, env) in cases[r % 3:] + cases[:r % 3]:
            cluster.psql("postgres", "CHECKPOINT")
            walls[name].append(run(cmd, env))
    base = med(walls["psql -f (same statements)"])
    base_cpu = med(walls["psql -f (same statements)"], 1)
    for name, values in walls.items():
        log(f"  {name:28} {med(values):8.1f} ms  ratio {med(values) / base:4.2f}   "
            f"client cpu {med(values, 1):6.1f} ms (ratio {med(values, 1) / base_cpu:4.2f})")
    figure("bulk wall vs psql", med(walls["miglock apply"]) / base)
    figure("bulk client CPU vs psql", med(walls["miglock apply"], 1) / base_cpu)


def bench_handoff(cluster, miglock, runs, work):
    log("\n== handoff: holder's commit of its last migration -> waiter's first migration statement (server clock:"
        " commit timestamp -> clock_timestamp())")
    holder_dir, waiter_dir = f"{work}/handoff-holder", f"{work}/handoff-waiter"
    os.makedirs(holder_dir, exist_ok=True)
    os.makedirs(waiter_dir, exist_ok=True)
    with open(f"{holder_dir}/V1__slow.sql", "w") as f:
        f.write("SELECT pg_sleep(0.5);\nINSERT INTO handoff VALUES ('holder', clock_timestamp());\n")
    # The waiter's history exists already (a replica of a deployed service):
    # what is measured is the handover, not a first run's CREATE TABLE.
    with open(f"{waiter_dir}/V1__earlier.sql", "w") as f:
        f.write("SELECT 1;\n")
    with open(f"{waiter_dir}/V2__first.sql", "w") as f:
        f.write("INSERT INTO handoff VALUES ('waiter', clock_timestamp());\n")
    gaps, psql_gaps = [], []
    psql = [f"{cluster.bindir}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
            "-d", "handoff"]

    def miglock_handover(env):
        holder = subprocess.Popen([miglock, "apply", "-q", "--lock-key", "77", "--table", "holder_history",
                                   "--migrations", holder_dir], env=env)
        wait_for(lambda: cluster.psql("handoff", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                                 "AND objid = 77 AND objsubid = 1", capture=True) == "1")
        waiter = subprocess.Popen([miglock, "apply", "-q", "--lock-key", "77", "--table", "waiter_history",
                                   "--migrations", waiter_dir], env=env)
        if holder.wait() != 0 or waiter.wait() != 0:
            raise RuntimeError("handoff run failed")
        gaps.append(gap(cluster, "handoff"))

    def psql_handover():
        # The same handover between two psql sessions on a blocking lock.
        a = subprocess.Popen(psql + ["-c", "SELECT pg_advisory_lock(78)", "-c", "SELECT pg_sleep(0.5)",
                                     "-c", "BEGIN; INSERT INTO handoff VALUES ('holder', clock_timestamp()); COMMIT;",
                                     "-c", "SELECT pg_advisory_unlock(78)"], stdout=subprocess.DEVNULL)
        wait_for(lambda: cluster.psql("handoff", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                                 "AND objid = 78", capture=True) == "1")
        b = subprocess.Popen(psql + ["-c", "SELECT pg_advisory_lock(78)",
                                     "-c", "INSERT INTO handoff VALUES ('waiter', clock_timestamp())"],
                             stdout=subprocess.DEVNULL)
        a.wait()
        b.wait()
        psql_gaps.append(gap(cluster, "handoff"))

    for r in range(runs):
        cluster.create_db("handoff")
        cluster.psql("handoff", "CREATE TABLE handoff (who text, at timestamptz)")
        env = dict(os.environ, DATABASE_URL=cluster.url("handoff"))
        run([miglock, "apply", "-q", "--lock-key", "77", "--table", "waiter_history", "--target", "1",
             "--migrations", waiter_dir], env)
        # The new database's WAL is flushed first, so that the first
        # holder's commit waits for its own only; and each side goes first
        # in every other run all the same (the first handover of a run
        # follows the new database's writes).
        cluster.psql("postgres", "CHECKPOINT")
        for side in (("miglock", "psql") if r % 2 == 0 else ("psql", "miglock")):
            if side == "miglock":
                miglock_handover(env)
            else:
                psql_handover()
            cluster.psql("handoff", "TRUNCATE handoff")
    log(f"  miglock replicas (NOTIFY)      median {statistics.median(gaps):6.2f} ms   "
        f"p90 {p90(gaps):6.2f} ms   ({runs} runs)")
    log(f"  psql, blocking pg_advisory_lock median {statistics.median(psql_gaps):6.2f} ms   "
        f"p90 {p90(psql_gaps):6.2f} ms   (the waiter blocks inside the server: what miglock must not do)")
    figure("handoff median vs psql", statistics.median(gaps) / statistics.median(psql_gaps))
    figure("handoff p90 vs psql p90", p90(gaps) / p90(psql_gaps))


def p90(values):
    return sorted(values)[max(0, int(len(values) * 0.9) - 1)]


def bench_ddl(cluster, miglock, work, runs=3, blocker_s=5.0):
    log(f"\n== ddl: pgbench traffic, a session idle in a transaction for {blocker_s:.0f} s, then ALTER TABLE")
    pgbench = f"{cluster.bindir}/pgbench"
    script = f"{work}/ddl-read.sql"
    with open(script, "w") as f:
        f.write("\\set id random(1, 10000)\nSELECT v FROM t WHERE id = :id;\n")
    results = {"psql": [], "miglock apply (defaults)": []}
    for r in range(runs):
        for tool in results:
            db = "ddl"
            cluster.create_db(db)
            cluster.psql(db, "CREATE TABLE t (id int PRIMARY KEY, v text); "
                             "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10000) g")
            folder = f"{work}/ddl-{r}"
            os.makedirs(folder, exist_ok=True)
            with open(f"{folder}/V1__t.sql", "w") as f:
                f.write("SELECT 1;\n")
            with open(f"{folder}/V2__add_c.sql", "w") as f:
                f.write("ALTER TABLE t ADD COLUMN c int;\n")
            env = dict(os.environ, DATABASE_URL=cluster.url(db))
            if tool != "psql":
                run([miglock, "apply", "-q", "--target", "1", "--migrations", folder], env)
            logdir = tempfile.mkdtemp(prefix="ddl-log-", dir=work)
            seconds = int(blocker_s) + 6
            bench = subprocess.Popen([pgbench, "-n", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                                      "-c", "4", "-j", "2", "-R", "400", "-T", str(seconds), "-f", script, "-l",
                                      "--log-prefix", f"{logdir}/tx", db],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            psql = [f"{cluster.bindir}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                    "-d", db]
            blocker = subprocess.Popen(psql + ["-c", f"BEGIN; SELECT count(*) FROM t; SELECT pg_sleep({blocker_s}); COMMIT;"],
                                       stdout=subprocess.DEVNULL)
            # The blocker is inside its transaction (the sleep stands for an
            # idle one: it holds its lock on t without a statement on t).
            wait_for(lambda: cluster.psql(db, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(%' "
                                              "AND state = 'active' AND pid <> pg_backend_pid()", capture=True) == "1")
            blocker_started = time.time()
            migration_started = time.time()
            if tool == "psql":
                run(psql + ["-c", "ALTER TABLE t ADD COLUMN c int"])
            else:
                run([miglock, "apply", "-q", "--migrations", folder], env)
            committed = time.time()
            blocker.wait()
            blocker_ended = blocker_started + blocker_s
            bench.wait()
            latencies = []
            for name in os.listdir(logdir):
                with open(f"{logdir}/{name}") as f:
                    for line in f:
                        fields = line.split()
                        # client tx latency_us script epoch_s epoch_us [lag_us]
                        done = int(fields[4]) + int(fields[5]) / 1e6
                        if migration_started <= done <= committed + 0.5:
                            latencies.append(int(fields[2]) / 1000)
            latencies.sort()
            worst = latencies[-1] if latencies else float("nan")
            p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
            after = (committed - blocker_ended) * 1000
            results[tool].append((worst, p99, after))
    for tool, values in results.items():
        worst = statistics.median(v[0] for v in values)
        p99v = statistics.median(v[1] for v in values)
        after = statistics.median(v[2] for v in values)
        log(f"  {tool:28} worst {worst:8.1f} ms   p99 {p99v:8.1f} ms   committed {after:7.0f} ms after "
            f"the blocker ended   (medians of {runs})")
        if tool != "psql":
            figure("ddl worst latency ms (defaults)", worst)
            figure("ddl commit after blocker ends ms", after)


def bench_memory(cluster, miglock, work, rows=541_649):
    log(f"\n== memory: one migration file of {rows} INSERTs")
    db = "memory"
    cluster.create_db(db)
    folder = f"{work}/memory"
    os.makedirs(folder, exist_ok=True)
    path = f"{folder}/V1__big.sql"
    with open(path, "w") as f:
        f.write("CREATE TABLE big (id int, note text);\n")
        for i in range(rows):
            # About 97 bytes a line: 50 MiB, the size of the file.
            f.write(f"INSERT INTO big VALUES ({i}, 'row {i} of the big file, padded as the issue''s 50 MB file');\n")
    size_mb = os.path.getsize(path) / (1 << 20)
    env = dict(os.environ, DATABASE_URL=cluster.url(db))
    status = [miglock, "status", "-q", "--migrations", folder]
    apply = [miglock, "apply", "-q", "--migrations", folder]
    pending = peak_rss_mb(status, env)
    applied_rss = peak_rss_mb(apply, env)
    done = peak_rss_mb(status, env)
    noop = peak_rss_mb(apply, env)
    log(f"  file {size_mb:.1f} MB: apply {applied_rss:.1f} MB ({applied_rss / size_mb:.2f}x the file), "
        f"status pending {pending:.1f} MB, status applied {done:.1f} MB, no-op apply {noop:.1f} MB")
    figure("memory apply peak RSS vs file", applied_rss / size_mb)
    figure("memory status pending peak RSS MB", pending)
    figure("memory status applied peak RSS MB", done)
    figure("memory no-op apply peak RSS MB", noop)


def gap(cluster, db):
    """Milliseconds from the holder's commit (its commit timestamp) to the
    waiter's first statement (clock_timestamp() in it), both server clock."""
    return float(cluster.psql(db, "SELECT extract(epoch FROM (SELECT at FROM handoff WHERE who = 'waiter') - "
                                  "(SELECT pg_xact_commit_timestamp(xmin) FROM handoff WHERE who = 'holder')) * 1000",
                              capture=True))


def bench_storm(cluster, miglock, work, waiters=100, seconds=20, settle=10):
    log(f"\n== storm: {waiters} replicas waiting for a held lock, counted over {seconds} s after {settle} s")
    db = "storm"
    cluster.create_db(db)
    folder = f"{work}/storm"
    write_migrations(folder, 1, lambda i: "CREATE TABLE t (id int);\n")
    env = dict(os.environ, DATABASE_URL=cluster.url(db))
    cluster.psql("postgres", f"ALTER DATABASE {db} SET log_statement = 'all'")
    holder = subprocess.Popen([f"{cluster.bindir}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U",
                               "postgres", "-d", db, "-c", f"SELECT pg_advisory_lock(91), pg_sleep({settle + seconds + 30})"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: cluster.psql(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 91 "
                                      "AND objsubid = 1", capture=True) == "1")
    procs = [subprocess.Popen([miglock, "apply", "-q", "--lock-key", "91", "--wait", f"{settle + seconds + 20}s",
                               "--migrations", folder], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(waiters)]
    wait_for(lambda: cluster.psql(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 91 "
                                      "AND objsubid = 2", capture=True) == str(waiters), timeout=60)
    time.sleep(settle)
    # Every lock attempt is a statement calling pg_try_advisory_lock(91):
    # count them in the server's statement log over the window.
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    attempts = count_logged(cluster, "pg_try_advisory_lock(91)", start, end)
    rate = attempts / (end - start)
    log(f"  {rate:.1f} lock attempts per second in total ({rate / waiters:.2f} per replica), all {waiters} waiting")
    subprocess.run([f"{cluster.bindir}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                    "-d", db, "-c", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                    "'%pg_advisory_lock(91)%' AND pid <> pg_backend_pid()"], stdout=subprocess.DEVNULL)
    holder.wait()
    codes = [p.wait() for p in procs]
    log(f"  after the holder went: {codes.count(0)} of {waiters} replicas exited 0")


def count_logged(cluster, needle, start, end):
    """Statements containing `needle` the server logged between two times
    (log lines start with the log_line_prefix's '%m' timestamp)."""
    import datetime
    count = 0
    with open(f"{cluster.dir}/log", errors="replace") as f:
        for line in f:
            if needle not in line:
                continue
            try:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
            except ValueError:
                continue
            if start <= stamp <= end:
                count += 1
    return count


def wait_for(condition, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(0.02)
    raise RuntimeError("timed out waiting")


def main():
    global STATIC_BINARY
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only", default="noop,bulk,handoff,storm,memory")
    parser.add_argument("--check", action="store_true",
                        help="run noop, bulk, handoff and memory and exit 1 when a figure misses its target")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if args.check:
        only = {"noop", "bulk", "handoff", "memory", "ddl", "lint", "layouts"}
    log("== building miglock (release)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    miglock = f"{ROOT}/target/release/miglock"
    if "noop" in only and os.uname().machine == "x86_64":
        # The binary the releases and examples/Dockerfile ship: static-pie,
        # no shared libraries to map. Shown beside the figures, which are
        # those of `cargo build --release` (what `cargo install` gives).
        log("== building the static release binary (RUSTFLAGS=-C target-feature=+crt-static)")
        flags = (os.environ.get("RUSTFLAGS", "") + " -C target-feature=+crt-static").strip()
        built = subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--target", STATIC_TARGET],
                               cwd=ROOT, env=dict(os.environ, RUSTFLAGS=flags))
        if built.returncode == 0:
            STATIC_BINARY = f"{ROOT}/target/{STATIC_TARGET}/release/miglock"
        else:
            log("  (the static build failed: the no-op runs without it)")
    bindir = pg_bindir()
    log(f"== machine: {os.cpu_count()} cores, {os.uname().release}; PostgreSQL from {bindir}")
    cluster = Cluster(bindir)
    work = tempfile.mkdtemp(prefix="miglock-bench-work-")
    try:
        if "noop" in only:
            bench_noop(cluster, miglock, args.runs, work)
        if "bulk" in only:
            bench_bulk(cluster, miglock, max(3, args.runs // 3), work)
        if "handoff" in only:
            # As many handovers a side as the other scenarios' runs: with
            # 15, the same build's median moved from 1.17x to 1.56x between
            # runs, across the target.
            bench_handoff(cluster, miglock, max(5, args.runs), work)
        if "storm" in only:
            bench_storm(cluster, miglock, work)
        if "memory" in only:
            bench_memory(cluster, miglock, work)
        if "ddl" in only:
            bench_ddl(cluster, miglock, work)
        if "lint" in only:
            bench_lint(miglock, args.runs, work)
        if "layouts" in only:
            bench_layouts(cluster, miglock, args.runs, work)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.check:
        sys.exit(check())


def check():
    """Each figure against its target; 1 when one misses (or is missing)."""
    log("\n== check (figures of this run, targets of BENCHMARKS.md)")
    missed = 0
    for name, (target, kind) in TARGETS.items():
        value = FIGURES.get(name)
        ok = value is not None and value <= target
        missed += not ok
        shown = "missing" if value is None else (f"{value:.2f}x" if kind == "ratio" else f"{value:.1f}")
        limit = f"{target}x" if kind == "ratio" else f"{target}"
        log(f"  {'ok  ' if ok else 'MISS'} {name:38} {shown:>9}  (target <= {limit})")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    log(f"  commit {commit}{' (with uncommitted changes to src/)' if dirty else ''}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    log("== check: " + ("all targets met" if not missed else f"{missed} target(s) missed"))
    return 1 if missed else 0


if __name__ == "__main__":
    main()
