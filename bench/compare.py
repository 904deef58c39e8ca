#!/usr/bin/env python3
"""Is build B's no-op `apply` slower than build A's? Paired runs, so that
the drift of a shared VM (easily ±0.3 ms over a minute) hits both alike.

Each pair runs A and B back to back, in a random order, against the same
database (400 applied migrations, a throwaway cluster); the figure is the
median of the pairs' differences, with a 95% bootstrap interval. Two
medians taken in alternation are not enough here: on this 2-core VM they
have disagreed by 0.3 ms on the same two binaries an hour apart.

Usage: python3 bench/compare.py A B [--runs N] [-- extra apply arguments]
       e.g. python3 bench/compare.py /tmp/old/miglock target/release/miglock -- --layout refinery
"""

import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import MIGRATIONS, Cluster, log, pg_bindir, run, write_migrations  # noqa: E402


def main(argv):
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    runs = 400
    if "--runs" in argv:
        at = argv.index("--runs")
        try:
            runs = int(argv[at + 1])
        except (IndexError, ValueError):
            sys.exit("compare: --runs takes a number")
        argv = argv[:at] + argv[at + 2:]
    if len(argv) != 2 or runs < 20:
        sys.exit(__doc__)
    a, b = (os.path.abspath(p) for p in argv)
    for binary in (a, b):
        if not os.access(binary, os.X_OK):
            sys.exit(f"compare: {binary} is not an executable")
    cluster = Cluster(pg_bindir())
    try:
        cluster.create_db("noop")
        folder = f"{cluster.dir}/noop"
        write_migrations(folder, MIGRATIONS, lambda i: f"CREATE TABLE t_{i} (id int PRIMARY KEY, name text);\n")
        env = dict(os.environ, DATABASE_URL=cluster.url("noop"))
        command = lambda binary: ([binary, "apply", "-q", "--migrations", folder] + extra, env)
        run(*command(a))  # applies the 400
        for _ in range(10):  # warms the page cache and the server
            run(*command(a))
            run(*command(b))
        walls_a, walls_b, diffs = [], [], []
        for _ in range(runs):
            if random.random() < 0.5:
                wa, wb = run(*command(a))[0], run(*command(b))[0]
            else:
                wb, wa = run(*command(b))[0], run(*command(a))[0]
            walls_a.append(wa)
            walls_b.append(wb)
            diffs.append(wb - wa)
    finally:
        cluster.stop()
    boots = sorted(statistics.median(random.choices(diffs, k=len(diffs))) for _ in range(2000))
    low, high = boots[50], boots[1949]
    log(f"A {a}: median {statistics.median(walls_a):.3f} ms")
    log(f"B {b}: median {statistics.median(walls_b):.3f} ms")
    log(f"B - A, median of {runs} pairs: {statistics.median(diffs):+.3f} ms (95% interval {low:+.3f} to {high:+.3f})")
    if low > 0:
        log("B is slower")
    elif high < 0:
        log("B is faster")
    else:
        log("no difference this run can tell")


if __name__ == "__main__":
    main(sys.argv[1:])
