#!/bin/sh
# bench-collector.sh -- load a collector with the captured tracker POST.
#
#   scripts/bench-collector.sh [URL]
#
# With URL (or COLLECTOR_URL), loads that running collector. Without, starts
# `./sluice broker` and `./sluice run` with a collector-only config on a free
# port, loads it, and stops both. wrk keeps connections alive, as browsers do.
# DURATION (10s), CONNECTIONS (32), THREADS (2) tune the load; BODY picks the
# body file (see scripts/wrk-post.lua). Prints requests/s and p50/p99 latency;
# every 200 was acknowledged by the broker before it was sent.
set -eu
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
URL=${1:-${COLLECTOR_URL:-}}
command -v wrk >/dev/null || { echo "bench-collector: wrk is not installed (apt-get install wrk)" >&2; exit 2; }

tmp=
pids=
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    [ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

if [ -z "$URL" ]; then
    [ -x ./sluice ] || make sluice >/dev/null
    tmp=$(mktemp -d)
    mkfifo "$tmp/broker.out"
    ./sluice broker --partitions 4 --topics http.shopify-events >"$tmp/broker.out" 2>"$tmp/broker.err" &
    pids="$!"
    read -r brokers <"$tmp/broker.out"
    cat "$tmp/broker.out" >/dev/null &
    port=$((20000 + $$ % 12000))   # below the ephemeral ports (32768-), which connections hold
    cat >"$tmp/bench.lua" <<CONF
return {
  kafka = { brokers = "$brokers" },
  collector = {
    listen = "127.0.0.1:$port",
    allowed_origins = { "http://127.0.0.1:8080" },
  },
}
CONF
    ./sluice run -c "$tmp/bench.lua" 2>"$tmp/sluice.err" &
    pids="$! $pids"
    URL="http://127.0.0.1:$port"
    i=0
    until curl -sf "$URL/health" >/dev/null; do
        i=$((i + 1))
        if [ $i -gt 100 ]; then
            echo "bench-collector: collector did not come up; its log:" >&2
            cat "$tmp/sluice.err" >&2
            exit 1
        fi
        sleep 0.1
    done
fi

echo "collector $URL, body ${BODY:-spec/fixtures/snowplow/tp2-post-product.body.raw}, $CONNECTIONS connections, $THREADS threads, $DURATION"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/wrk-post.lua "$URL" |
    sed -n '/^requests\/s/,$p'
