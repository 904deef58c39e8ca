#!/bin/sh
# Container entrypoint: apply pending migrations with miglock (exactly one
# replica migrates, the others find the schema current), then exec the
# application given as arguments, or refuse to start it.
#
#   ENTRYPOINT ["/usr/local/bin/miglock-entrypoint"]
#   CMD ["/usr/local/bin/api", "--port", "8080"]
#
# miglock reads its own settings from the environment (DATABASE_URL,
# MIGLOCK_MIGRATIONS, MIGLOCK_WAIT, MIGLOCK_WAIT_TIMEOUT, RUN_MIGRATIONS, ...).
# This script adds three:
#
#   MIGLOCK_BIN                 the miglock binary (default: miglock, found on PATH)
#   MIGLOCK_ON_BUSY             start (default) or wait: when another replica held the lock
#                               for all of MIGLOCK_WAIT (apply exit 3), start at once, or run
#                               `miglock wait` first so the app never sees the old schema
#   MIGLOCK_WAIT_WHEN_DISABLED  0 (default) or 1: when RUN_MIGRATIONS is off (apply exit 4),
#                               run `miglock wait` before starting; for services that never
#                               migrate but must not start on an old schema
#
# What each exit of `miglock apply` leads to:
#
#   0 applied/current  start the app
#   3 skipped (busy)   start the app, or wait first (MIGLOCK_ON_BUSY=wait)
#   4 disabled         start the app, or wait first (MIGLOCK_WAIT_WHEN_DISABLED=1)
#   5 unavailable      exit 75 (EX_TEMPFAIL) without starting: a transient failure,
#                      the orchestrator restarts the container
#   8 blocked          exit 75 too: another session held a table lock a migration
#                      needs for the whole --ddl-lock-budget; nothing of it was
#                      applied, and a later start tries again
#   any other          exit with that code without starting: 1 failed, 2 usage,
#                      6 invalid migration set, 130 interrupted, 127 miglock not found
#
# `miglock wait` ending other than 0 is handled the same way (7: still pending
# at MIGLOCK_WAIT_TIMEOUT). Decisions go to stderr, each line starting with
# "miglock-entrypoint:". Without arguments nothing is started: the script
# exits 0 where it would have started the app (a migrate-only run).
set -eu

log() {
    printf 'miglock-entrypoint: %s\n' "$*" >&2
}

miglock=${MIGLOCK_BIN:-miglock}

# A typo must not silently pick a behaviour: refuse it before touching anything.
on_busy=${MIGLOCK_ON_BUSY:-start}
case $on_busy in
    start | wait) ;;
    *)
        log "MIGLOCK_ON_BUSY must be start or wait, not '$on_busy': not starting the app; exit 2"
        exit 2
        ;;
esac
case ${MIGLOCK_WAIT_WHEN_DISABLED:-0} in
    1 | true | yes | on) wait_when_disabled=1 ;;
    0 | false | no | off | '') wait_when_disabled=0 ;;
    *)
        log "MIGLOCK_WAIT_WHEN_DISABLED must be 1 or 0, not '$MIGLOCK_WAIT_WHEN_DISABLED': not starting the app; exit 2"
        exit 2
        ;;
esac

# Until it execs the app this shell is PID 1 of the container (or the one
# child of an init such as tini, which signals nobody else): `docker stop` or
# a pod deletion signals the shell, never miglock, and PID 1 even ignores
# SIGTERM unless it handles it, so the stop would hang until SIGKILL. Forward
# SIGTERM and SIGINT to miglock, which rolls back, releases the lock and
# exits 130.
child=
caught=
signals=
forward() {
    caught=$1
    signals="$signals."
    if [ -n "$child" ]; then
        kill "-$1" "$child" 2>/dev/null || :
    fi
}
trap 'forward TERM' TERM
trap 'forward INT' INT

# Runs miglock with the given arguments and sets rc to its exit code. It runs
# in the background because a shell runs traps only between commands, and
# `wait` is the one command a trap interrupts.
run_miglock() {
    "$miglock" "$@" &
    child=$!
    # A signal that came before $child was known still has to reach it.
    if [ -n "$caught" ]; then
        kill "-$caught" "$child" 2>/dev/null || :
    fi
    rc=
    while :; do
        seen=$signals
        status=0
        wait "$child" || status=$?
        # 127 after an interrupted wait: the shell had already collected the
        # child's status, so the earlier answer stands.
        if [ "$status" -eq 127 ] && [ -n "$rc" ]; then
            break
        fi
        rc=$status
        # A trap that ran during `wait` cut it short (status 128+n) while
        # miglock may still be rolling back: wait for it again.
        if [ "$signals" = "$seen" ]; then
            break
        fi
    done
    child=
}

describe() {
    case $1 in
        1) echo "failed: a migration failed and was rolled back, or another error" ;;
        2) echo "usage: bad flags, environment values or URL" ;;
        6) echo "invalid: the migration set is unsafe to run" ;;
        7) echo "pending: the schema is still not current at MIGLOCK_WAIT_TIMEOUT" ;;
        126 | 127) echo "cannot run $miglock (MIGLOCK_BIN)" ;;
        130) echo "interrupted" ;;
        *) echo "unexpected" ;;
    esac
}

# Ends the script without starting the app.
refuse() { # command exit-code
    if [ "$2" -eq 5 ]; then
        log "$1 exited 5 (unavailable: no database connection): not starting the app; exit 75 so that the orchestrator retries"
        exit 75
    fi
    if [ "$2" -eq 8 ]; then
        log "$1 exited 8 (blocked: a migration's table lock stayed held by another session): not starting the app; exit 75 so that the orchestrator retries"
        exit 75
    fi
    log "$1 exited $2 ($(describe "$2")): not starting the app; exit $2"
    exit "$2"
}

run_miglock apply
then_wait=0
case $rc in
    0)
        log "apply exited 0 (the schema is current)"
        ;;
    3)
        if [ "$on_busy" = wait ]; then
            log "apply exited 3 (skipped: another replica holds the lock); MIGLOCK_ON_BUSY=wait: waiting for the schema"
            then_wait=1
        else
            log "apply exited 3 (skipped: another replica holds the lock); MIGLOCK_ON_BUSY=start: starting without waiting"
        fi
        ;;
    4)
        if [ "$wait_when_disabled" = 1 ]; then
            log "apply exited 4 (disabled: RUN_MIGRATIONS is off); MIGLOCK_WAIT_WHEN_DISABLED=1: waiting for the schema"
            then_wait=1
        else
            log "apply exited 4 (disabled: RUN_MIGRATIONS is off)"
        fi
        ;;
    *) refuse apply "$rc" ;;
esac

if [ "$then_wait" = 1 ]; then
    run_miglock wait
    if [ "$rc" -ne 0 ]; then
        refuse wait "$rc"
    fi
    log "wait exited 0 (the schema is current)"
fi

# The orchestrator asked us to stop while miglock was finishing: starting
# the app now would ignore that request.
if [ -n "$caught" ]; then
    log "received SIG$caught: not starting the app; exit 130"
    exit 130
fi

if [ "$#" -eq 0 ]; then
    log "no app command given: exit 0"
    exit 0
fi
# Only the program name is logged: its arguments may hold secrets.
log "starting $1"
exec "$@"
