#!/usr/bin/env bash
# Installs the other migration tools the test suite runs beside miglock:
# sqlx-cli (from crates.io) and dbmate (from npm), at the versions the
# layout tests were written against. Their folders and history tables
# must round-trip with miglock's: sqlx and dbmate carry on where miglock
# stopped and the other way round (tests/integration/layouts).
#
# Installs only what is missing or at another version; when everything is
# there it changes nothing and prints one line, so running it again is
# harmless. .ci/run runs it after setup-postgres.sh; the tests run it
# themselves, into a folder of the build's, when a tool is missing.
#
# Environment:
#   MIGLOCK_PEERS_ROOT  install into ROOT/bin instead of cargo's bin folder
#                       and npm's global prefix (no root needed)
#   MIGLOCK_SQLX        the sqlx binary to use instead (nothing is installed)
#   MIGLOCK_DBMATE      the dbmate binary to use instead (nothing is installed)
set -euo pipefail

sqlx_version=0.9.0
dbmate_version=2.36.0

say() { echo "setup-peers: $*"; }
die() {
    echo "setup-peers: $*" >&2
    exit 1
}

root=${MIGLOCK_PEERS_ROOT:-}
cargo_root=()
npm_prefix=()
if [ -n "$root" ]; then
    cargo_root=(--root "$root")
    npm_prefix=(--prefix "$root")
fi

# Where the tests look: the root's bin folder, PATH, cargo's bin folder.
find_tool() {
    local name=$1
    if [ -n "$root" ]; then
        [ -x "$root/bin/$name" ] && echo "$root/bin/$name"
        return 0
    fi
    command -v "$name" 2>/dev/null && return
    [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/$name" ] && echo "${CARGO_HOME:-$HOME/.cargo}/bin/$name"
    return 0
}

installed=()

if [ -z "${MIGLOCK_SQLX:-}" ]; then
    sqlx=$(find_tool sqlx)
    if [ -z "$sqlx" ] || ! "$sqlx" --version 2>/dev/null | grep -qx "sqlx-cli $sqlx_version"; then
        command -v cargo >/dev/null || die "cargo is missing (needed to install sqlx-cli)"
        say "installing sqlx-cli $sqlx_version from crates.io (a few minutes)"
        cargo install --locked --quiet "${cargo_root[@]}" sqlx-cli --version "$sqlx_version" \
            --no-default-features --features postgres,rustls
        installed+=("sqlx-cli $sqlx_version")
    fi
fi

if [ -z "${MIGLOCK_DBMATE:-}" ]; then
    dbmate=$(find_tool dbmate)
    if [ -z "$dbmate" ] || ! "$dbmate" --version 2>/dev/null | grep -qx "dbmate version $dbmate_version"; then
        command -v npm >/dev/null || die "npm is missing (needed to install dbmate)"
        say "installing dbmate $dbmate_version from npm"
        npm install --global "${npm_prefix[@]}" --no-audit --no-fund --loglevel=error \
            "dbmate@$dbmate_version"
        installed+=("dbmate $dbmate_version")
    fi
fi

if [ ${#installed[@]} -eq 0 ]; then
    say "sqlx-cli $sqlx_version and dbmate $dbmate_version are there"
else
    say "installed: ${installed[*]}"
fi
