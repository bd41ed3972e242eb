# tests/lib.sh - helpers for the shell tests (sourced).
# Automake's test driver reads the exit status: 0 pass, 77 skip, else fail.

: "${IMAGEJOBS_BIN:?IMAGEJOBS_BIN must name the imagejobs binary}"

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# wait_for_line FILE REGEX SECONDS: polls FILE until a line matches; the
# poll interval is short, the bound generous (sanitizer builds are slow).
wait_for_line() {
    local file=$1 regex=$2 limit=$3 waited=0
    until grep -Eq -- "$regex" "$file" 2>/dev/null; do
        [ "$waited" -ge $((limit * 20)) ] && return 1
        sleep 0.05
        waited=$((waited + 1))
    done
}

# wait_exit PID SECONDS: waits for PID (a child of this shell) to exit and
# sets EXIT_STATUS; returns 1 if it is still running after SECONDS.
wait_exit() {
    local pid=$1 limit=$2 waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge $((limit * 20)) ]; then
            return 1
        fi
        # a zombie still answers kill -0; ps tells it apart
        if [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = "Z" ]; then
            break
        fi
        sleep 0.05
        waited=$((waited + 1))
    done
    EXIT_STATUS=0
    wait "$pid" || EXIT_STATUS=$?
}
