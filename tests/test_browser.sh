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
# the reason.
set -u
. "$(dirname "$0")/lib.sh"

need_services
need_browser
dir=$IMAGEJOBS_BROWSER_DIR
src=$(cd "$(dirname "$0")" && pwd)
shots=${IMAGEJOBS_SCREENSHOTS:-$PWD/tests/screenshots}
tmp=$(mktemp -d)
pid=
stop_serve() {
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    wait_exit "$pid" 30 || { kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
    pid=
}
cleanup() {
    stop_serve
    drop_test_database
    rm -rf "$tmp"
}
trap cleanup EXIT
test_database browser_$$

# serve NAME ARGS...: starts serve on a free port (its log: tests/
# test_browser.NAME.log of the build tree) and sets url once it is ready.
serve() {
    local name=$1 log=$PWD/tests/test_browser.$1.log
    shift
    start_serve "$log" --redis "$IMAGEJOBS_TEST_REDIS" --database "$TEST_CONN" \
        --instance "browser-$name-$$" --generators 2 "$@" ||
        { tail -n 20 "$log"; fail "serve ($name) did not listen"; }
    pid=$SERVE_PID
    url=http://127.0.0.1:$SERVE_PORT
    wait_http_ok "$SERVE_PORT" /readyz 30 "$pid" ||
        { tail -n 20 "$log"; fail "serve ($name) is not ready at $url/readyz"; }
}

# the scripts run beside their node_modules (ES modules resolve from there)
cp "$src/browser/lib.mjs" "$src/browser/page.mjs" "$dir/"

serve page --auth off
(cd "$dir" && timeout 300 node page.mjs page "$url" "$shots") || fail "the served page (auth off): see above"
stop_serve

serve auth --auth required
token=$("$IMAGEJOBS_BIN" keys create --name browser-test --database "$TEST_CONN" 2>"$tmp/keys.err") ||
    { cat "$tmp/keys.err"; fail "imagejobs keys create failed"; }
# it stops the server itself at the end (a cancel that fails)
(cd "$dir" && timeout 180 node page.mjs auth "$url" "$shots" "$token" "$pid") || fail "the page with auth required: see above"
stop_serve
pass "the page in Chromium, auth off and required"
