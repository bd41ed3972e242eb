#!/bin/sh
# test_openapi.sh - docs/openapi.json is the API: it passes
# `@redocly/cli lint`, the binary serves it byte for byte at
# GET /openapi.json, and every response the end-to-end tests received
# (tests/api_client.c logs them to $IMAGEJOBS_RESPONSE_LOG) validates
# against it (tests/openapi/validate.mjs, ajv). tests/tests.am runs it after
# those tests. Skips, as they do, without the suite's services.
. "$(dirname "$0")/lib.sh"

doc=$(dirname "$0")/../docs/openapi.json
if [ -z "${IMAGEJOBS_RESPONSE_LOG:-}" ] || [ -z "${IMAGEJOBS_TEST_DATABASE:-}" ]; then
    echo "skip: run by cmd/imagejobs-local test (the suite's services and its response log)"
    exit 77
fi
dir=${IMAGEJOBS_OPENAPI_DIR:?IMAGEJOBS_OPENAPI_DIR must name tests/openapi installed with npm ci}
[ -f "$dir/node_modules/@redocly/cli/bin/cli.js" ] || fail "@redocly/cli is not installed in $dir"

node "$dir/node_modules/@redocly/cli/bin/cli.js" lint --config "$(dirname "$0")/openapi/redocly.yaml" --format stylish "$doc" >"$dir/lint.out" 2>&1 ||
    { cat "$dir/lint.out"; fail "redocly lint refused docs/openapi.json"; }
pass "redocly lint: docs/openapi.json is valid OpenAPI 3.1"

# the served document is the file
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
start_serve "$tmp/serve.log" --generators 0 --auth required \
    --redis "$IMAGEJOBS_TEST_REDIS" --database "$IMAGEJOBS_TEST_DATABASE" \
    --instance "openapi-$$" || { cat "$tmp/serve.log"; fail "serve did not start"; }
pid=$SERVE_PID
port=$SERVE_PORT
node -e '
const [port, file] = process.argv.slice(1);
fetch(`http://127.0.0.1:${port}/openapi.json`).then(async (r) => {
  const body = Buffer.from(await r.arrayBuffer());
  const want = require("fs").readFileSync(file);
  if (r.status !== 200 || !r.headers.get("content-type").startsWith("application/json") || !body.equals(want)) {
    console.error(`GET /openapi.json: ${r.status} ${r.headers.get("content-type")}, ${body.length} bytes, not the file (${want.length})`);
    process.exit(1);
  }
}).catch((e) => { console.error(e.message); process.exit(1); });
' "$port" "$doc" || fail "GET /openapi.json is not docs/openapi.json"
pass "GET /openapi.json serves docs/openapi.json (without a key)"

[ -s "$IMAGEJOBS_RESPONSE_LOG" ] || fail "no response was logged to $IMAGEJOBS_RESPONSE_LOG"
node "$dir/validate.mjs" "$doc" "$IMAGEJOBS_RESPONSE_LOG" || fail "responses that docs/openapi.json does not describe"
pass "every response the end-to-end tests received matches docs/openapi.json"
