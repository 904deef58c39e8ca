#!/usr/bin/env bash
# Makes this machine able to run examples/demo.sh and `cargo test --locked`.
# Both start throwaway PostgreSQL clusters, so they need the server binaries
# (initdb, pg_ctl, postgres) and, as root, a `postgres` user to run them as
# (initdb refuses to run as root). The test suite also runs `ip` (iproute2:
# the network-fault test), `kill` (procps: the signal tests), `jq` (the
# GitHub Actions example's step summary), groff (groff-base: the man page
# is rendered as man(1) would), pgbouncer (the connection-pooler
# tests start their own, in front of a throwaway cluster; the package's
# service is not used) and squawk-cli at the version of the squawk crates
# miglock lints with (the lint's differential test runs both on one
# corpus), from npm into /usr/local (npm itself with apt-get when missing).
#
# Installs only what is missing, with apt-get (Debian, Ubuntu): as root
# directly, otherwise through sudo. Without root, sudo or apt-get it stops
# and prints what to run. When everything is there it changes nothing and
# prints one line, so running it again is harmless.
#
# examples/demo.sh and .ci/run both start with it.
#
# Environment:
#   MIGLOCK_PG_BINDIR  the directory holding initdb (the demo and the tests
#                      honour it too); nothing is searched or installed for it
#   MIGLOCK_PG_LIB     where the versions are looked for, default
#                      /usr/lib/postgresql (Debian's layout); for testing
#   MIGLOCK_PGBOUNCER  the pgbouncer binary, default /usr/sbin/pgbouncer
#                      (not on a non-root PATH); the tests honour it too
#   MIGLOCK_SQUAWK     the squawk binary to use instead (the tests honour
#                      it too); nothing is installed for it
#   MIGLOCK_SQUAWK_PREFIX  where npm installs squawk-cli, default /usr/local
#                      (the binary: $MIGLOCK_SQUAWK_PREFIX/bin/squawk); for testing
set -euo pipefail

lib=${MIGLOCK_PG_LIB:-/usr/lib/postgresql}
pgbouncer=${MIGLOCK_PGBOUNCER:-/usr/sbin/pgbouncer}
squawk_prefix=${MIGLOCK_SQUAWK_PREFIX:-/usr/local}
squawk=${MIGLOCK_SQUAWK:-$squawk_prefix/bin/squawk}
# Equal to the squawk crates' version in Cargo.toml.
squawk_version=2.66.0
export DEBIAN_FRONTEND=noninteractive

say() { echo "setup-postgres: $*"; }
die() {
    echo "setup-postgres: $*" >&2
    exit 1
}

# Where the server binaries are, looked for as the demo and the test suite
# look for them: MIGLOCK_PG_BINDIR, `pg_config --bindir`, the newest
# $lib/<version>/bin; then initdb on PATH. Prints nothing when not found.
find_bindir() {
    if [ -n "${MIGLOCK_PG_BINDIR:-}" ]; then
        [ -x "$MIGLOCK_PG_BINDIR/initdb" ] || die "MIGLOCK_PG_BINDIR=$MIGLOCK_PG_BINDIR has no initdb"
        echo "$MIGLOCK_PG_BINDIR"
        return
    fi
    local dir newest=0 version
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
            echo "$dir"
            return
        fi
    fi
    for dir in "$lib"/*/bin; do
        version=${dir%/bin}
        version=${version##*/}
        if [[ $version =~ ^[0-9]+$ ]] && [ -x "$dir/initdb" ] && ((version > newest)); then
            newest=$version
        fi
    done
    if ((newest > 0)); then
        echo "$lib/$newest/bin"
        return
    fi
    dir=$(type -P initdb || true)
    [ -z "$dir" ] || echo "${dir%/*}"
}

root=false
[ "$(id -u)" = 0 ] && root=true
changed=false

bindir=$(find_bindir)
packages=()
why="missing:"
if [ -z "$bindir" ]; then
    packages+=(postgresql-15)
    why+=" the PostgreSQL server binaries (no initdb from pg_config, under $lib/*/bin or on PATH)"
fi
if ! type -P ip >/dev/null; then
    packages+=(iproute2)
    why+=" ip (the network-fault test)"
fi
if ! type -P kill >/dev/null; then
    packages+=(procps)
    why+=" kill (the signal tests)"
fi
if ! type -P jq >/dev/null; then
    packages+=(jq)
    why+=" jq (the GitHub Actions example's test)"
fi
if ! type -P groff >/dev/null; then
    packages+=(groff-base)
    why+=" groff (the man page test)"
fi
if [ ! -x "$pgbouncer" ]; then
    packages+=(pgbouncer)
    why+=" $pgbouncer (the connection-pooler tests)"
fi

need_squawk=false
if [ "$("$squawk" --version 2>/dev/null || true)" != "squawk $squawk_version" ]; then
    need_squawk=true
    [ -z "${MIGLOCK_SQUAWK:-}" ] || die "MIGLOCK_SQUAWK=$MIGLOCK_SQUAWK is not squawk $squawk_version"
    if ! type -P npm >/dev/null; then
        packages+=(npm)
        why+=" npm (to install squawk-cli, the lint tests' reference)"
    fi
fi

if [ ${#packages[@]} -gt 0 ]; then
    install=(apt-get install -y --no-install-recommends)
    if ! command -v apt-get >/dev/null 2>&1; then
        die "$why. There is no apt-get: install them with this system's package manager (PostgreSQL: its server package, e.g. dnf install postgresql-server), then, unless initdb is on PATH, export MIGLOCK_PG_BINDIR=<the directory holding initdb>"
    fi
    if $root; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
    else
        die "$why. Not root and no sudo: as root, run
    apt-get update && ${install[*]} ${packages[*]}
(postgresql instead of postgresql-15 where there is no postgresql-15 package), then run $0 again"
    fi
    run() {
        say "running: $*"
        "$@"
    }
    say "$why; installing with apt-get"
    run "${as_root[@]}" apt-get update -qq
    if ! run "${as_root[@]}" "${install[@]}" -qq "${packages[@]}"; then
        [ -z "$bindir" ] || die "${install[*]} ${packages[*]} failed"
        # Releases without PostgreSQL 15 (Ubuntu 22.04 and 24.04, Debian 13,
        # …): the distribution's default version.
        packages=("${packages[@]/#postgresql-15/postgresql}")
        say "no postgresql-15 package here: the distribution's default version instead"
        run "${as_root[@]}" "${install[@]}" -qq "${packages[@]}"
    fi
    changed=true
    bindir=$(find_bindir)
    [ -n "$bindir" ] || die "installed ${packages[*]}, but still no initdb under $lib/*/bin"
fi

if $need_squawk; then
    if $root; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        die "missing: squawk-cli $squawk_version (the lint tests' reference). Not root and no sudo: as root, run
    npm install --global --prefix $squawk_prefix squawk-cli@$squawk_version
then run $0 again"
    fi
    say "missing: squawk-cli $squawk_version at $squawk (the lint tests' reference); installing with npm"
    # The binary is an optional dependency of squawk-cli (one package per
    # platform, from the same registry): asked for, whatever npm's config.
    install=(npm install --global --prefix "$squawk_prefix" --include=optional --no-audit --no-fund "squawk-cli@$squawk_version")
    say "running: ${as_root[*]+${as_root[*]} }${install[*]}"
    "${as_root[@]}" "${install[@]}" >/dev/null
    [ "$("$squawk" --version 2>/dev/null || true)" = "squawk $squawk_version" ] ||
        die "installed squawk-cli@$squawk_version, but $squawk --version does not say squawk $squawk_version"
    changed=true
fi

# initdb refuses to run as root: the demo and the tests run it as postgres.
if $root && ! id postgres >/dev/null 2>&1; then
    say "no postgres user: creating it (as root, the throwaway clusters run as postgres; initdb refuses root)"
    say "running: useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    changed=true
fi

if $changed; then
    say "done: PostgreSQL server binaries in $bindir"
else
    what="all present: PostgreSQL server binaries in $bindir, ip, kill, jq, groff, pgbouncer, squawk $squawk_version"
    ! $root || what+=", the postgres user"
    say "$what"
fi
case "$bindir" in
"${MIGLOCK_PG_BINDIR:-}" | "$lib"/*) ;;
*)
    # Found through pg_config or on PATH: the tests ask pg_config
    # themselves, but do not look for a bare initdb on PATH.
    if [ "$(pg_config --bindir 2>/dev/null || true)" != "$bindir" ]; then
        say "the tests do not look on PATH: export MIGLOCK_PG_BINDIR=$bindir"
    fi
    ;;
esac
