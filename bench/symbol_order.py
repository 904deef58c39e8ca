#!/usr/bin/env python3
"""Writes build/symbol-order.txt: the functions a no-op `apply` (in each
layout), a `status` and a small `apply` execute, in that order, for the linker to lay out side
by side (build.rs passes the list to it; BENCHMARKS.md says what it buys).

Builds the two x86_64 release binaries exactly as they are shipped (the
`cargo build --release` one and the static one of the release workflow:
their symbol names differ), with the linker's map of where each function
went, runs each command under callgrind against a throwaway cluster, and
keeps each function once, in the group of the first run that executes it. The binaries have no
symbols (the profile strips them, and keeping them would change every
symbol's name), so the map names what callgrind only knows by address.

Run it again after a Rust upgrade, or when the no-op's peak RSS in
`bench.py` creeps up: a function added since is laid out with the rest of
the code, not with the start-up's.

Usage: python3 bench/symbol_order.py
       python3 bench/symbol_order.py --check dynamic=<map> static=<map>
           exit 1 unless nine in ten of the functions listed for each build
           are in its link map (a build with MIGLOCK_LINK_MAP=<map>)
"""

import bisect
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LAYOUT_FILES, ROOT, Cluster, log, pg_bindir, write_layout, write_migrations  # noqa: E402

TARGET = "x86_64-unknown-linux-gnu"
OUT = f"{ROOT}/build/symbol-order.txt"


def build(name, extra_env, extra_args):
    """Builds a release binary as it is shipped; returns it and the map."""
    link_map = f"{ROOT}/target/symbol-order/{name}.map"
    os.makedirs(os.path.dirname(link_map), exist_ok=True)
    env = dict(os.environ, MIGLOCK_LINK_MAP=link_map, **extra_env)
    log(f"== building the {name} release binary")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"] + extra_args, cwd=ROOT, env=env, check=True)
    sub = f"{TARGET}/release" if "--target" in extra_args else "release"
    return f"{ROOT}/target/{sub}/miglock", link_map


def functions(link_map):
    """(start, end, symbol) of each function in the map's .text, by start.

    lld's map: the columns VMA, LMA, Size and Align, then an output
    section, an input section or a symbol, each starting under its own
    header word (`Out`, `In`, `Symbol`)."""
    out, in_text = [], False
    with open(link_map) as f:
        header = next(f)
        out_col, symbol_col = header.index("Out"), header.index("Symbol")
        for line in f:
            m = re.match(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ +", line)
            if not m:
                continue
            name = line[m.end():].rstrip("\n")
            if m.end() == out_col:
                in_text = name == ".text"
            elif in_text and m.end() == symbol_col:
                start = int(m.group(1), 16)
                out.append((start, start + int(m.group(2), 16), name))
    out.sort()
    return out


def executed(binary, args, env, work):
    """Addresses (in the binary) of the instructions a run executes, in
    callgrind's order. Instructions, not functions: without symbols,
    callgrind knows a function only by a call to it, and code reached by a
    tail call's jump would be counted as the caller's."""
    out = f"{work}/callgrind.out"
    subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes", f"--callgrind-out-file={out}", binary] + args,
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    objects, ob, addresses, last, call = {}, None, [], 0, False
    with open(out) as f:
        for line in f:
            first = line[:1]
            if first in "0123456789+-*":
                # A cost line: `position cost…`, where the position (the
                # instruction's address in its file) is absolute, relative
                # to the last one (+n, -n) or the same (*). The line after
                # `calls=` is the call's: callgrind writes it without
                # making it the last position.
                pos = line.split(None, 1)[0]
                at = last
                if pos.startswith("0x"):
                    at = int(pos, 16)
                elif first in "+-":
                    at = last + int(pos)
                elif first != "*":
                    at = int(pos)
                if not call:
                    last = at
                call = False
                if ob == binary:
                    addresses.append(at)
                continue
            call = line.startswith("calls=")
            m = re.match(r"^(c?)ob=\((\d+)\)(?: (.+))?$", line.rstrip("\n"))
            if m:
                callee, ident, name = m.groups()
                if name is not None:
                    objects[ident] = name
                if not callee:
                    ob = objects.get(ident)
    return addresses


def check(maps):
    """Exit 1 unless most of the list's functions of each build are in its
    link map: a new Rust or package version renames them all, and lld
    skips a name it does not find without a word."""
    listed, kind = {}, None
    with open(OUT) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# ") and line.endswith((": dynamic", ": static")):
                kind = line.rsplit(": ", 1)[1]
            elif line and not line.startswith("#") and kind:
                listed.setdefault(kind, set()).add(line)
    failed = False
    if not maps:
        sys.exit("symbol_order: --check wants dynamic=<map> and/or static=<map>")
    for arg in maps:
        kind, _, link_map = arg.partition("=")
        if kind not in ("dynamic", "static") or not os.path.isfile(link_map):
            sys.exit(f"symbol_order: {arg!r}: give dynamic=<map> or static=<map>, a linker map that exists")
        names = {name for _, _, name in functions(link_map)}
        wanted = listed.get(kind, set())
        found = len(wanted & names)
        share = found / len(wanted) if wanted else 0
        log(f"{kind}: {found} of the {len(wanted)} functions listed for it are in {link_map} ({share:.0%})")
        failed |= share < 0.9
    if failed:
        sys.exit("symbol_order: the list no longer names this build's functions: "
                 "run python3 bench/symbol_order.py and commit build/symbol-order.txt")


def main():
    if sys.argv[1:2] == ["--check"]:
        return check(sys.argv[2:])
    if not shutil.which("valgrind"):
        sys.exit("symbol_order: valgrind not found")
    builds = {
        "dynamic": build("dynamic", {}, []),
        "static": build("static", {"RUSTFLAGS": "-C target-feature=+crt-static"}, ["--target", TARGET]),
    }
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    cluster = Cluster(pg_bindir())
    work = tempfile.mkdtemp(prefix="miglock-symbol-order-")
    # Each run's functions, those of both builds side by side, the no-op's
    # first (in refinery's layout, then in each other tool's): it is the
    # run every container start makes.
    layouts = ["refinery"] + list(LAYOUT_FILES)
    runs = [f"apply, no-op, {layout} layout" for layout in layouts] + ["status", "apply, 3 pending"]
    groups = {(run, name): [] for run in runs for name in builds}
    seen = set()
    try:
        folders = {layout: write_layout(f"{work}/{layout}", layout) for layout in layouts}
        pending = f"{work}/pending"
        write_migrations(pending, 3, lambda i: (f"CREATE TABLE p_{i} (id bigint PRIMARY KEY, name text);\n"
                                                f"CREATE INDEX p_{i}_name ON p_{i} (name);\n"
                                                f"INSERT INTO p_{i} VALUES (1, 'a');\n"))
        for name, (binary, link_map) in builds.items():
            commands = {}
            for layout, folder in folders.items():
                db = f"applied_{layout.replace('-', '_')}"
                cluster.create_db(db)
                env = dict(os.environ, DATABASE_URL=cluster.url(db))
                subprocess.run([binary, "apply", "-q", "--lint", "off", "--migrations", folder], env=env, check=True)
                commands[f"apply, no-op, {layout} layout"] = (["apply", "-q", "--migrations", folder], env)
                if layout == "refinery":
                    commands["status"] = (["status", "--migrations", folder], env)
            cluster.create_db("pending")
            commands["apply, 3 pending"] = (["apply", "--migrations", pending],
                                            dict(os.environ, DATABASE_URL=cluster.url("pending")))
            table = functions(link_map)
            starts = [start for start, _, _ in table]
            found, missed = 0, 0
            for run in runs:
                args, env = commands[run]
                for address in executed(binary, args, env, work):
                    i = bisect.bisect_right(starts, address) - 1
                    if i < 0 or address >= table[i][1]:
                        missed += 1
                        continue
                    found += 1
                    symbol = table[i][2]
                    if symbol not in seen:
                        seen.add(symbol)
                        groups[(run, name)].append(symbol)
            log(f"  {name}: {found} addresses in {len(table)} functions, {missed} outside them")
            if found == 0 or missed > found // 10:
                sys.exit(f"symbol_order: the {name} run's addresses do not match its map")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("# Written by bench/symbol_order.py; read by build.rs. The functions each run\n"
                "# below executes, those of the `cargo build --release` binary and of the static\n"
                f"# one, for {TARGET}, built by the rustc of the next line (build.rs uses the\n"
                "# list only with that one: another's symbol names differ).\n"
                f"# rustc: {rustc}\n")
        for run in runs:
            for name in builds:
                f.write(f"# {run}: {name}\n")
                f.write("".join(f"{symbol}\n" for symbol in groups[(run, name)]))
    log(f"== wrote {os.path.relpath(OUT, ROOT)} ({len(seen)} functions: "
        + ", ".join(f"{sum(len(groups[(run, name)]) for name in builds)} for {run}" for run in runs) + ")")


if __name__ == "__main__":
    main()
