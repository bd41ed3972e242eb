#!/bin/bash
# test_browser.sh - the page at / (web/) in a real Chromium (Debian's
# /usr/bin/chromium, driven by npm playwright-core: tests/browser/page.mjs)
# against real `imagejobs serve` processes on the suite's Redis and a
# PostgreSQL database of this test's own: first with --auth off (submit,
# watch, cancel, the list, Korean, a phone), then with --auth required and
# a key of `imagejobs keys create` (wrong token refused, right one works).
#
# Screenshots of the page mid-job and after the cancel are written to
# tests/screenshots/ of the build tree on every run. Without the suite's
# services (cmd/imagejobs-local test exports them) it skips, as the other
# end-to-end tests do; without Chromium or playwright-core it FAILS, with
# the reason: a browser test never passes by not running.
set -u
. "$(dirname "$0")/lib.sh"

if [ -z "${IMAGEJOBS_TEST_REDIS:-}" ] || [ -z "${IMAGEJOBS_TEST_PG_PORT:-}" ]; then
    echo "SKIP: no IMAGEJOBS_TEST_REDIS / IMAGEJOBS_TEST_PG_PORT (run cmd/imagejobs-local test)"
    exit 77
fi
dir=${IMAGEJOBS_BROWSER_DIR:-}
[ -n "$dir" ] && [ -f "$dir/node_modules/playwright-core/package.json" ] ||
    fail "playwright-core is not installed: IMAGEJOBS_BROWSER_DIR='$dir' (cmd/imagejobs-local test installs tests/browser there with npm ci)"
chromium=${IMAGEJOBS_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] ||
    fail "no Chromium at $chromium (Debian package chromium; cmd/imagejobs-local test installs it)"
command -v psql >/dev/null || fail "psql is needed to make the test's database"

src=$(cd "$(dirname "$0")" && pwd)
shots=${IMAGEJOBS_SCREENSHOTS:-$PWD/tests/screenshots}
tmp=$(mktemp -d)
db=browser_$$
conn="host=127.0.0.1 port=$IMAGEJOBS_TEST_PG_PORT dbname=$db user=postgres"
psql_admin() { psql -X -q -h 127.0.0.1 -p "$IMAGEJOBS_TEST_PG_PORT" -U postgres -d postgres "$@"; }
pid=
stop_serve() {
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    wait_exit "$pid" 30 || { kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
    pid=
}
cleanup() {
    stop_serve
    psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
psql_admin -c "CREATE DATABASE $db" || fail "cannot create database $db"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ready() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
    read -r line <&3
    exec 3<&-
    [[ $line == *" 200 "* ]]
}

# serve NAME ARGS...: starts serve on a free port (its log: tests/
# test_browser.NAME.log of the build tree) and sets url once it is ready.
serve() {
    local name=$1 log=$PWD/tests/test_browser.$1.log port i
    shift
    port=$((20000 + RANDOM % 20000))
    while port_in_use "$port"; do port=$((port + 1)); done
    "$IMAGEJOBS_BIN" serve --listen "127.0.0.1:$port" --redis "$IMAGEJOBS_TEST_REDIS" \
        --database "$conn" --instance "browser-$name-$$" --generators 2 "$@" >"$log" 2>&1 &
    pid=$!
    url=http://127.0.0.1:$port
    for i in $(seq 1 300); do
        ready "$port" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$log"
    fail "serve ($name) is not ready at $url/readyz"
}

# the scripts run beside their node_modules (ES modules resolve from there)
cp "$src/browser/page.mjs" "$dir/page.mjs"

serve page --auth off
(cd "$dir" && timeout 300 node page.mjs page "$url" "$shots") || fail "the served page (auth off): see above"
stop_serve

serve auth --auth required
token=$("$IMAGEJOBS_BIN" keys create --name browser-test --database "$conn" 2>"$tmp/keys.err") ||
    { cat "$tmp/keys.err"; fail "imagejobs keys create failed"; }
(cd "$dir" && timeout 180 node page.mjs auth "$url" "$shots" "$token") || fail "the page with auth required: see above"
stop_serve
pass "the page in Chromium, auth off and required"
