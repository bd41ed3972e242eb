#!/bin/sh
# bench/cancel-latency.sh CSV PNG - plots the stop-latency distributions of
# a bench/cancel-latency run (its CSV) as cumulative curves, one per mode,
# on a log time axis. bench/cancel-latency --plot calls it; it also replots
# a saved CSV. Installs gnuplot (Debian's gnuplot-nox) when it is missing.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: bench/cancel-latency.sh CSV PNG" >&2
    exit 2
fi
csv=$1 png=$2

if ! command -v gnuplot >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "cancel-latency.sh: gnuplot is missing (apt-get install gnuplot-nox)" >&2
        exit 1
    fi
    echo "cancel-latency.sh: installing gnuplot-nox" >&2
    export DEBIAN_FRONTEND=noninteractive
    # the package lists may be stale or absent on a fresh machine
    apt-get install -y -q --no-install-recommends gnuplot-nox >&2 ||
        { apt-get update -q >&2 &&
            apt-get install -y -q --no-install-recommends gnuplot-nox >&2; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One file per mode, in the CSV's order: sorted stop latencies (ms) and the
# fraction of combinations stopped by then.
awk -F, -v dir="$tmp" '
    NR > 1 && $2 == "stop" {
        if (!($1 in n)) { order[++modes] = $1; n[$1] = 0 }
        v[$1, ++n[$1]] = $5 + 0
    }
    END {
        for (m = 1; m <= modes; m++) {
            name = order[m]; k = n[name]
            for (i = 1; i <= k; i++) s[i] = v[name, i]
            # insertion sort: a few hundred samples per mode
            for (i = 2; i <= k; i++) {
                x = s[i]
                for (j = i - 1; j >= 1 && s[j] > x; j--) s[j + 1] = s[j]
                s[j + 1] = x
            }
            f = dir "/" m ".dat"
            printf "# %s\n", name > f
            for (i = 1; i <= k; i++) printf "%.4f %.5f\n", s[i], i / k > f
            close(f)
            print name > (dir "/modes")
        }
    }' "$csv"

[ -s "$tmp/modes" ] || { echo "cancel-latency.sh: no stop samples in $csv" >&2; exit 1; }

plot=
i=0
while IFS= read -r name; do
    i=$((i + 1))
    plot="$plot${plot:+, }'$tmp/$i.dat' using 1:2 with steps lw 2 title '$name'"
done <"$tmp/modes"

gnuplot <<GP
set terminal pngcairo size 1100,700 font ",11" noenhanced
set output '$png'
set title "cancel received -> combination stopped (server timestamps), one sample per combination"
set xlabel "stop latency, ms (log scale)"
set ylabel "fraction of combinations stopped"
set logscale x 10
set format x "%g"
set yrange [0:1.02]
set grid xtics mxtics ytics
set key below
plot $plot
GP
echo "cancel-latency.sh: wrote $png" >&2
