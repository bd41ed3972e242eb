#!/bin/bash
# test_serve.sh - the imagejobs binary's command line and signal handling:
# SIGTERM and SIGINT shut `serve` down in order with exit status 0.
set -u
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$IMAGEJOBS_BIN" serve --help >"$tmp/help" || fail "serve --help exited non-zero"
for flag in --listen --redis --database --generators --backend --instance \
            --cancel-check --cors-origin IMAGEJOBS_LISTEN DATABASE_URL; do
    grep -q -- "$flag" "$tmp/help" || fail "serve --help does not list $flag"
done
pass "serve --help lists every flag and variable"

if "$IMAGEJOBS_BIN" serve --no-such-flag 2>"$tmp/err"; then
    fail "an unknown flag was accepted"
fi
grep -q "no-such-flag" "$tmp/err" || fail "the error does not name the bad flag"
IMAGEJOBS_CANCEL_CHECK=sometimes "$IMAGEJOBS_BIN" serve 2>"$tmp/err" \
    && fail "a bad IMAGEJOBS_CANCEL_CHECK was accepted"
grep -q "cancel-check" "$tmp/err" || fail "the error does not name --cancel-check"
pass "bad flags and variables are refused with a reason"

for sig in TERM INT; do
    log="$tmp/serve-$sig.log"
    "$IMAGEJOBS_BIN" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    wait_for_line "$log" "serving" 30 || { cat "$log"; fail "serve did not start"; }
    kill -"$sig" "$pid"
    wait_exit "$pid" 30 || { kill -9 "$pid"; fail "serve ignored SIG$sig"; }
    [ "$EXIT_STATUS" -eq 0 ] || { cat "$log"; fail "SIG$sig: exit status $EXIT_STATUS"; }
    grep -q "stopped" "$log" || fail "SIG$sig: no orderly shutdown logged"
    pass "SIG$sig stops serve with exit status 0"
done

# --rt-priority: the threads of the cancel's way at SCHED_FIFO, the others
# not; a generator that computes on its own thread never
"$IMAGEJOBS_BIN" serve --rt-priority 100 2>"$tmp/err" && fail "--rt-priority 100 was accepted"
grep -q "rt-priority" "$tmp/err" || fail "the error does not name --rt-priority"
policy() { # PID COMM: the scheduling policy of PID's thread named COMM
    local t
    for t in /proc/"$1"/task/*; do
        if [ "$(cat "$t/comm")" = "$2" ]; then
            awk '$1 == "policy" { print $3 }' "$t/sched"
            return
        fi
    done
}
for pool in shared per-generator; do
    log="$tmp/serve-rt-$pool.log"
    "$IMAGEJOBS_BIN" serve --listen 127.0.0.1:0 --generators 2 --rt-priority 1 \
        --compute-pool "$pool" >"$log" 2>&1 &
    pid=$!
    wait_for_line "$log" "serving" 30 || { cat "$log"; fail "serve did not start"; }
    if grep -q "rt-priority 1: " "$log"; then
        pass "--rt-priority without the privilege: said once, ordinary scheduling ($pool)"
    else
        want_gen=1
        [ "$pool" = shared ] || want_gen=0
        [ "$(policy "$pid" http)" = 1 ] || fail "http is not SCHED_FIFO ($pool)"
        [ "$(policy "$pid" redis)" = 1 ] || fail "redis is not SCHED_FIFO ($pool)"
        [ "$(policy "$pid" generator-1)" = "$want_gen" ] \
            || fail "generator-1's policy is $(policy "$pid" generator-1), not $want_gen ($pool)"
        [ "$(policy "$pid" store)" = 0 ] || fail "store is not at ordinary priority ($pool)"
        pass "--rt-priority 1 ($pool): http, redis$([ "$want_gen" = 1 ] && echo ' and the generators') at SCHED_FIFO, the store not"
    fi
    kill -TERM "$pid"
    wait_exit "$pid" 30 || { kill -9 "$pid"; fail "serve --rt-priority ignored SIGTERM"; }
    [ "$EXIT_STATUS" -eq 0 ] || { cat "$log"; fail "--rt-priority: exit status $EXIT_STATUS"; }
done
