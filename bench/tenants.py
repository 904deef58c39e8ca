#!/usr/bin/env python3
"""miglock over many databases: one `--databases-from` run against a shell
loop of single-target `miglock apply`, on a throwaway cluster (bench.py's).

  apply   200 fresh databases x 20 migrations: `--jobs 1`, `--jobs 4`,
          `--jobs 8`, and `for url in …; do miglock apply; done`
  noop    the same 200 databases, everything current
  many    1,000 databases, nothing pending: the no-op, `--jobs 4`
  schemas 5,000 schemas of one database (`--all-schemas`) x 5 migrations,
          `--jobs 4`, against one psql session running the same statements
          schema after schema; then the no-op

For each: wall time, and the peak number of client backends the server had
(pg_stat_activity polled every 10 ms from a session of its own, which is
left out of the count).

Usage: python3 bench/tenants.py [--databases 200] [--migrations 20] [--schemas 5000]
                                [--many 1000] [--only databases,many,schemas]
Builds miglock in release mode into $CARGO_TARGET_DIR (default target/).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, Cluster, log, pg_bindir, write_migrations  # noqa: E402


class PeakConnections:
    """Polls pg_stat_activity from one psql session until stopped."""

    def __init__(self, cluster):
        self.peak = 0
        self.stop = threading.Event()
        self.proc = subprocess.Popen(
            [f"{cluster.bindir}/psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(cluster.port),
             "-U", "postgres", "-d", "postgres"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self):
        query = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                 "AND pid <> pg_backend_pid();\n")
        while not self.stop.is_set():
            self.proc.stdin.write(query)
            self.proc.stdin.flush()
            self.peak = max(self.peak, int(self.proc.stdout.readline()))
            time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.thread.join()
        self.proc.stdin.close()
        self.proc.wait()
        return self.peak


def timed(cluster, cmd, shell=False):
    watch = PeakConnections(cluster)
    start = time.perf_counter()
    out = subprocess.run(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    peak = watch.finish()
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} exited {out.returncode}: {out.stderr[-2000:]}")
    return wall, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", type=int, default=200)
    parser.add_argument("--migrations", type=int, default=20)
    parser.add_argument("--schemas", type=int, default=5000)
    parser.add_argument("--many", type=int, default=1000)
    parser.add_argument("--only", default="databases,many,schemas")
    args = parser.parse_args()
    only = set(args.only.split(","))
    log("== building miglock (release)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    target_dir = os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target")
    miglock = f"{target_dir}/release/miglock"
    bindir = pg_bindir()
    log(f"== machine: {os.cpu_count()} cores, {os.uname().release}; PostgreSQL from {bindir}")
    cluster = Cluster(bindir)
    work = tempfile.mkdtemp(prefix="miglock-bench-tenants-")
    try:
        folder = f"{work}/migrations"
        write_migrations(folder, args.migrations,
                         lambda i: f"CREATE TABLE t_{i} (id bigint PRIMARY KEY, note text);\n")
        rows = []

        def databases(prefix):
            names = [f"{prefix}_{i:03}" for i in range(args.databases)]
            # One session for all: a psql per database would dominate.
            subprocess.run([f"{cluster.bindir}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(cluster.port), "-U", "postgres", "-d", "postgres"],
                           input="".join(f"CREATE DATABASE {n};\n" for n in names), text=True, check=True,
                           stdout=subprocess.DEVNULL)
            path = f"{work}/{prefix}.txt"
            with open(path, "w") as f:
                f.write("".join(cluster.url(n) + "\n" for n in names))
            return names, path

        if "schemas" in only:
            bench_schemas(cluster, miglock, work, args.schemas)
        if "many" in only:
            bench_many(cluster, miglock, work, args.many)
        if "databases" not in only:
            return
        base = [miglock, "apply", "-q", "--migrations", folder]
        # Every database first, then a checkpoint before each run: the WAL
        # of 200 CREATE DATABASE must not be flushed during the first run.
        sets = {name: databases(name) for name in ("loop", "jobs1", "jobs4", "jobs8")}

        def checkpoint():
            cluster.psql("postgres", "CHECKPOINT")

        loop = (f"while read -r url; do {miglock} apply -q --migrations {folder} --database-url \"$url\" "
                f"|| exit 1; done < {sets['loop'][1]}")
        checkpoint()
        wall, peak = timed(cluster, ["sh", "-c", loop])
        rows.append(("apply, shell loop of single-target runs", wall, peak))
        log(f"apply, shell loop: {wall:.2f} s, peak {peak} connections")
        for jobs in (1, 4, 8):
            checkpoint()
            wall, peak = timed(cluster, base + ["--databases-from", sets[f"jobs{jobs}"][1], "--jobs", str(jobs)])
            rows.append((f"apply, --jobs {jobs}", wall, peak))
            log(f"apply --jobs {jobs}: {wall:.2f} s, peak {peak} connections")

        checkpoint()
        wall, peak = timed(cluster, ["sh", "-c", loop])
        rows.append(("no-op, shell loop of single-target runs", wall, peak))
        log(f"no-op, shell loop: {wall:.2f} s, peak {peak} connections")
        for jobs in (1, 4, 8):
            wall, peak = timed(cluster, base + ["--databases-from", sets["jobs4"][1], "--jobs", str(jobs)])
            rows.append((f"no-op, --jobs {jobs}", wall, peak))
            log(f"no-op --jobs {jobs}: {wall:.2f} s, peak {peak} connections")

        log(f"\n| {args.databases} databases x {args.migrations} migrations | wall | peak connections |")
        log("|---|---|---|")
        for name, wall, peak in rows:
            log(f"| {name} | {wall:.2f} s | {peak} |")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def bench_many(cluster, miglock, work, count):
    """`count` databases, one migration applied to each, then the no-op
    over all of them with `--jobs 4`: a connection per database."""
    folder = f"{work}/many-migrations"
    write_migrations(folder, 1, lambda i: f"CREATE TABLE t_{i} (id bigint PRIMARY KEY);\n")
    names = [f"many_{i:05}" for i in range(count)]
    psql = [f"{cluster.bindir}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
            str(cluster.port), "-U", "postgres", "-d", "postgres"]
    subprocess.run(psql, input="".join(f"CREATE DATABASE {n};\n" for n in names), text=True, check=True,
                   stdout=subprocess.DEVNULL)
    path = f"{work}/many.txt"
    with open(path, "w") as f:
        f.write("".join(cluster.url(n) + "\n" for n in names))
    cluster.psql("postgres", "CHECKPOINT")
    base = [miglock, "apply", "-q", "--migrations", folder, "--databases-from", path]
    timed(cluster, base + ["--jobs", "8"])
    wall, peak = timed(cluster, base + ["--jobs", "4"])
    log(f"\n| {count} databases, nothing pending, --jobs 4 | {wall:.2f} s | {peak} peak connections |")


def bench_schemas(cluster, miglock, work, count, migrations=5):
    """`--all-schemas` over `count` schemas of one database, against one psql
    session running the same statements schema after schema."""
    folder = f"{work}/schema-migrations"
    write_migrations(folder, migrations, lambda i: f"CREATE TABLE t_{i} (id bigint PRIMARY KEY, note text);\n")
    psql = [f"{cluster.bindir}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
            str(cluster.port), "-U", "postgres"]
    rows = []
    for db in ("schemas_miglock", "schemas_psql"):
        cluster.create_db(db)
        subprocess.run(psql + ["-d", db], input="".join(f"CREATE SCHEMA tenant_{i:05};\n" for i in range(count)),
                       text=True, check=True, stdout=subprocess.DEVNULL)
    cluster.psql("postgres", "CHECKPOINT")
    # psql: each schema's migrations, one transaction each, as miglock runs them.
    script = f"{work}/schemas.sql"
    with open(script, "w") as f:
        for i in range(count):
            f.write(f"SET search_path = tenant_{i:05};\n")
            for m in range(1, migrations + 1):
                f.write(f"BEGIN; CREATE TABLE t_{m} (id bigint PRIMARY KEY, note text); COMMIT;\n")
    wall, peak = timed(cluster, psql + ["-d", "schemas_psql", "-f", script])
    rows.append((f"{count} schemas x {migrations} migrations, one psql session", wall, peak))
    env_url = cluster.url("schemas_miglock")
    apply = [miglock, "apply", "-q", "--database-url", env_url, "--all-schemas", "--schema-match",
             "tenant\\_%", "--jobs", "4", "--migrations", folder]
    cluster.psql("postgres", "CHECKPOINT")
    wall, peak = timed(cluster, apply)
    rows.append((f"{count} schemas x {migrations} migrations, miglock --all-schemas --jobs 4", wall, peak))
    wall, peak = timed(cluster, apply)
    rows.append((f"{count} schemas, nothing pending, miglock --all-schemas --jobs 4", wall, peak))
    log("\n| schemas | wall | peak connections |")
    log("|---|---|---|")
    for name, wall, peak in rows:
        log(f"| {name} | {wall:.2f} s | {peak} |")


if __name__ == "__main__":
    main()
