#!/bin/bash
# test_render.sh - `imagejobs render`, the command that needs no service:
# it writes a PNG, the same twice for the same arguments, and refuses bad
# usage with exit status 2 and a reason.
set -u
. "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

render() { "$IMAGEJOBS_BIN" render --backend cpu --width 64 --height 64 --steps 4 "$@"; }

render --prompt "a red fox in a snowy forest" --seed 7 -o "$tmp/a.png" >"$tmp/out" ||
    fail "render exited non-zero"
grep -q "^backend cpu: 64x64, 4 steps, seed 7: .* -> $tmp/a.png\$" "$tmp/out" ||
    { cat "$tmp/out"; fail "render did not report backend, size and file"; }
[ "$(head -c 8 "$tmp/a.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
    fail "the output is not a PNG"
pass "render writes a PNG and says what it did"

render --prompt "a red fox in a snowy forest" --seed 7 --output "$tmp/b.png" >/dev/null ||
    fail "the second render exited non-zero"
cmp -s "$tmp/a.png" "$tmp/b.png" || fail "the same arguments gave another image"
render --prompt "a red fox in a snowy forest" --seed 8 -o "$tmp/c.png" >/dev/null ||
    fail "the third render exited non-zero"
cmp -s "$tmp/a.png" "$tmp/c.png" && fail "another seed gave the same image"
pass "render is deterministic in its arguments"

expect_usage() { # $1: what the error must name; the rest: arguments
    local what=$1 st=0
    shift
    "$IMAGEJOBS_BIN" render "$@" >/dev/null 2>"$tmp/err" || st=$?
    [ "$st" -eq 2 ] || fail "render $*: exit status $st, not 2"
    grep -q -- "$what" "$tmp/err" || { cat "$tmp/err"; fail "render $*: no mention of $what"; }
}
expect_usage "--prompt" -o "$tmp/x.png"
expect_usage "--output" --prompt fox
expect_usage "--seed" --prompt fox --seed -1 -o "$tmp/x.png"
expect_usage "width" --prompt fox --width 63 -o "$tmp/x.png"
expect_usage "--backend" --prompt fox --backend tpu -o "$tmp/x.png"
expect_usage "no-such-flag" --prompt fox --no-such-flag -o "$tmp/x.png"
[ ! -e "$tmp/x.png" ] || fail "a refused render wrote a file"
pass "bad usage is refused with exit status 2 and a reason"
