#!/bin/bash
# test_nextjs.sh - examples/nextjs, the seed's Next.js client unchanged,
# against a real `imagejobs serve` (the suite's Redis, a database of this
# test's own), cross-origin: `next build` with NEXT_PUBLIC_API_URL naming
# the server, `next start` on another port, and tests/browser/nextjs.mjs in
# Chromium (playwright-core). The server logs its requests (debug), so the
# test also sees the browser's CORS preflight of the seed's cancel.
#
# Skips without the suite's services, as the other end-to-end tests do;
# FAILS, with the reason, without Chromium, playwright-core or the
# example's node_modules (cmd/imagejobs-local test installs all three).
set -u
. "$(dirname "$0")/lib.sh"

need_services
need_browser
bdir=$IMAGEJOBS_BROWSER_DIR
ndir=${IMAGEJOBS_NEXTJS_DIR:-}
[ -n "$ndir" ] && [ -x "$ndir/node_modules/.bin/next" ] ||
    fail "examples/nextjs is not installed: IMAGEJOBS_NEXTJS_DIR='$ndir' (cmd/imagejobs-local test runs npm ci there)"

src=$(cd "$(dirname "$0")" && pwd)
example=$src/../examples/nextjs
pid= npid=
cleanup() {
    if [ -n "$npid" ]; then
        kill -TERM -- "-$npid" 2>/dev/null
        wait "$npid" 2>/dev/null
    fi
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        wait_exit "$pid" 30 || kill -KILL "$pid" 2>/dev/null
    fi
    drop_test_database
}
trap cleanup EXIT
test_database nextjs_$$

# serve first, on the kernel's pick of a port: the example is built with
# its URL; the example's own port is taken just before next start
log=$PWD/tests/test_nextjs.serve.log
next_port=$(free_port)
site=http://127.0.0.1:$next_port
start_serve "$log" --redis "$IMAGEJOBS_TEST_REDIS" \
    --database "$TEST_CONN" --instance "nextjs-$$" --generators 2 --auth off \
    --cors-origin "$site" --log-level debug || { tail -n 20 "$log"; fail "serve did not listen"; }
pid=$SERVE_PID
api_port=$SERVE_PORT
api=http://127.0.0.1:$api_port
wait_http_ok "$api_port" /readyz 30 "$pid" || { tail -n 20 "$log"; fail "serve is not ready"; }

# the example's sources, fresh, beside the node_modules of its lockfile
(cd "$example" && cp -R app components hooks lib next.config.mjs postcss.config.js \
    tailwind.config.js tsconfig.json "$ndir/") || fail "cannot copy examples/nextjs"
cp "$src/browser/lib.mjs" "$src/browser/nextjs.mjs" "$bdir/"
export NEXT_TELEMETRY_DISABLED=1
(cd "$ndir" && NEXT_PUBLIC_API_URL=$api timeout 400 node_modules/.bin/next build) \
    >"$PWD/tests/test_nextjs.build.log" 2>&1 ||
    { tail -n 30 "$PWD/tests/test_nextjs.build.log"; fail "next build failed"; }
pass "next build (NEXT_PUBLIC_API_URL=$api)"

# serve's --cors-origin names this port: it must still be free
port_in_use "$next_port" && fail "port $next_port for next start was taken during next build"
setsid "$ndir/node_modules/.bin/next" start -p "$next_port" -H 127.0.0.1 "$ndir" \
    >"$PWD/tests/test_nextjs.start.log" 2>&1 &
npid=$!
wait_http_ok "$next_port" / 60 "$npid" ||
    { tail -n 20 "$PWD/tests/test_nextjs.start.log"; fail "next start did not answer on $site"; }
pass "next start on $site, imagejobs serve on $api"

(cd "$bdir" && timeout 240 node nextjs.mjs "$site" "$api") | tee "$PWD/tests/test_nextjs.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "the Next.js example in Chromium: see above"
job=$(sed -n 's/^job: //p' "$PWD/tests/test_nextjs.out")
grep -q "OPTIONS /api/jobs/$job/cancel: 204" "$log" ||
    fail "serve saw no CORS preflight of the cancel of $job"
pass "the browser preflighted the seed's cancel (OPTIONS ... 204)"
