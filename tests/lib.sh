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

# ------------------------------------------------- end-to-end shell tests
# (test_browser.sh, test_nextjs.sh): the suite's services, free ports,
# HTTP checks, a database of the test's own.

# Skips (exit 77) without the suite's Redis and PostgreSQL, as the Check
# end-to-end tests do.
need_services() {
    if [ -z "${IMAGEJOBS_TEST_REDIS:-}" ] || [ -z "${IMAGEJOBS_TEST_PG_PORT:-}" ]; then
        echo "SKIP: no IMAGEJOBS_TEST_REDIS / IMAGEJOBS_TEST_PG_PORT (run cmd/imagejobs-local test)"
        exit 77
    fi
}

# Fails, with the reason, without playwright-core or Chromium: a browser
# test never passes by not running.
need_browser() {
    local dir=${IMAGEJOBS_BROWSER_DIR:-} chromium=${IMAGEJOBS_CHROMIUM:-/usr/bin/chromium}
    [ -n "$dir" ] && [ -f "$dir/node_modules/playwright-core/package.json" ] ||
        fail "playwright-core is not installed: IMAGEJOBS_BROWSER_DIR='$dir' (cmd/imagejobs-local test installs tests/browser there with npm ci)"
    [ -x "$chromium" ] ||
        fail "no Chromium at $chromium (Debian package chromium; cmd/imagejobs-local test installs it)"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [NOT]: a port nothing listens on (and not NOT), below Linux's
# ephemeral range (32768-60999), where the suite's own outgoing connections
# would take ports too. Prefer start_serve's port 0 where the port can be
# learnt after the fact.
free_port() {
    local p=$((20000 + RANDOM % 12000))
    while port_in_use "$p" || [ "$p" = "${1:-}" ]; do p=$((p + 1)); done
    echo "$p"
}

# start_serve LOG ARGS...: `imagejobs serve --listen 127.0.0.1:0 ARGS...` in
# the background, its output into LOG; sets SERVE_PID and, once it listens,
# SERVE_PORT (the kernel's pick: no race with another test for a port).
# Returns 1 when it does not listen within 60 s.
start_serve() {
    local log=$1
    shift
    "$IMAGEJOBS_BIN" serve --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
    SERVE_PID=$!
    wait_for_line "$log" "listening on .*\(port [0-9]+\)" 60 || return 1
    SERVE_PORT=$(sed -n 's/.*listening on .*(port \([0-9]*\)).*/\1/p' "$log" | head -n 1)
    [ -n "$SERVE_PORT" ]
}

# http_ok PORT PATH: GET answers 200.
http_ok() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    read -r line <&3
    exec 3<&-
    [[ $line == *" 200 "* ]]
}

# wait_http_ok PORT PATH SECONDS PID: until http_ok, while PID runs.
wait_http_ok() {
    local i
    for i in $(seq 1 $(($3 * 10))); do
        http_ok "$1" "$2" 2>/dev/null && return 0
        kill -0 "$4" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

psql_admin() { psql -X -q -h 127.0.0.1 -p "$IMAGEJOBS_TEST_PG_PORT" -U postgres -d postgres "$@"; }

# test_database NAME: creates database NAME on the suite's PostgreSQL and
# sets TEST_CONN to its conninfo; drop_test_database drops it.
test_database() {
    TEST_DB=$1
    TEST_CONN="host=127.0.0.1 port=$IMAGEJOBS_TEST_PG_PORT dbname=$TEST_DB user=postgres"
    psql_admin -c "CREATE DATABASE $TEST_DB" || fail "cannot create database $TEST_DB"
}
drop_test_database() {
    [ -n "${TEST_DB:-}" ] && psql_admin -c "DROP DATABASE IF EXISTS $TEST_DB WITH (FORCE)" >/dev/null 2>&1
}
