#!/usr/bin/env sh
# miglock demo: a throwaway PostgreSQL, five replicas started at once, one of
# them migrates and the others find the schema current. Then the exit codes an
# entrypoint branches on. Needs cargo; installs the PostgreSQL server binaries
# first when they are missing (scripts/setup-postgres.sh, which also leaves the
# machine ready for `cargo test --locked`). Works as root (the cluster then
# runs as the postgres user).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

echo "==> checking the set-up (scripts/setup-postgres.sh)"
"$here/scripts/setup-postgres.sh"

# Found as scripts/setup-postgres.sh and the test suite find them.
bindir=${MIGLOCK_PG_BINDIR:-}
if [ -z "$bindir" ]; then
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        bindir=$(pg_config --bindir)
    else
        for dir in /usr/lib/postgresql/*/bin; do
            [ -x "$dir/initdb" ] || continue
            version=${dir%/bin}
            version=${version##*/}
            case "$version" in *[!0-9]* | "") continue ;; esac
            if [ -z "$bindir" ] || [ "$version" -gt "$newest" ]; then
                bindir=$dir newest=$version
            fi
        done
    fi
fi
if [ -z "$bindir" ] && command -v initdb >/dev/null 2>&1; then
    bindir=$(dirname "$(command -v initdb)")
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "demo: PostgreSQL server binaries not found (set MIGLOCK_PG_BINDIR to the directory holding initdb)" >&2
    exit 1
fi

echo "==> building miglock"
cargo build --locked --quiet
# Where cargo put it: target/, or CARGO_TARGET_DIR (relative to here).
miglock="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/miglock"

work=$(mktemp -d /tmp/miglock-demo.XXXXXX)
as_owner() { "$@"; }
if [ "$(id -u)" = 0 ]; then
    chown postgres "$work"
    as_owner() { runuser -u postgres -- "$@"; }
fi
port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000 ))
cleanup() {
    as_owner "$bindir/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$port ($work)"
as_owner "$bindir/initdb" -D "$work/data" -U postgres -A trust -E UTF8 >/dev/null
as_owner "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w -o \
    "-p $port -k $work -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
"$bindir/psql" -X -q -h "$work" -p "$port" -U postgres -c "CREATE DATABASE demo"

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/demo"
# The demo's migrations live in examples/migrations, away from the default
# folder (./migrations), so that no command copied from the docs applies
# them to a reader's own database.
export MIGLOCK_MIGRATIONS=examples/migrations

echo "==> five replicas start at once: api-1 api-2 worker-1 worker-2 calls-1"
for replica in api-1 api-2 worker-1 worker-2 calls-1; do
    (
        code=0
        MIGLOCK_INSTANCE=$replica "$miglock" apply --wait 20s 2>"$work/$replica.log" || code=$?
        echo "$code" >"$work/$replica.code"
    ) &
done
wait

for replica in api-1 api-2 worker-1 worker-2 calls-1; do
    code=$(cat "$work/$replica.code")
    applied=$(grep -c MIGRATION_APPLIED "$work/$replica.log" || true)
    if [ "$applied" -gt 0 ]; then
        what="applied $applied migrations under the lock"
    elif grep -q SCHEMA_CURRENT "$work/$replica.log"; then
        what="found the schema current ($(sed -n 's/.*SCHEMA_CURRENT.*(\(.*\))$/\1/p' "$work/$replica.log" | tail -n 1))"
    else
        what="see $work/$replica.log"
    fi
    printf '  %-9s exit %s  %s\n' "$replica" "$code" "$what"
done

echo "==> the log of the replica that migrated"
for replica in api-1 api-2 worker-1 worker-2 calls-1; do
    if grep -q MIGRATION_APPLIED "$work/$replica.log"; then
        sed 's/^/  /' "$work/$replica.log"
    fi
done

echo "==> the history table (refinery's own, so refinery and refinery_cli read it too)"
"$bindir/psql" -X -h "$work" -p "$port" -U postgres -d demo \
    -c "SELECT version, name, applied_on FROM refinery_schema_history ORDER BY version"

echo "==> miglock status: what a DBA sees (the lock is free now; while busy it names the holder)"
"$miglock" status | sed 's/^/  /'

echo "==> exit codes an entrypoint branches on"
code=0; RUN_MIGRATIONS=0 "$miglock" apply -q || code=$?
echo "  RUN_MIGRATIONS=0 miglock apply            -> exit $code (disabled, nothing touched)"
code=0; "$miglock" apply -q || code=$?
echo "  miglock apply (again)                     -> exit $code (current)"
code=0; "$miglock" apply -q --database-url "postgres://postgres@127.0.0.1:1/demo" --connect-timeout 1s 2>/dev/null || code=$?
echo "  miglock apply (nothing listening)         -> exit $code (unavailable)"
mkdir "$work/bad" && cp examples/migrations/*.sql "$work/bad/" && echo "select 1;" >"$work/bad/V5-oops.sql"
code=0; "$miglock" apply -q --migrations "$work/bad" 2>/dev/null || code=$?
echo "  miglock apply (a misnamed file)           -> exit $code (invalid, nothing run)"
echo "==> the same lock and history in-process: examples/embedded.rs (miglock::Migrator)"
mkdir "$work/next" && cp examples/migrations/*.sql "$work/next/"
echo "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS embedded_note text;" >"$work/next/V5__embedded_note.sql"
code=0; cargo run --locked --quiet --example embedded -- "$work/next" >"$work/embedded.out" 2>&1 || code=$?
sed 's/^/  /' "$work/embedded.out"
echo "  cargo run --example embedded              -> exit $code"
echo "==> done; the cluster is removed"
