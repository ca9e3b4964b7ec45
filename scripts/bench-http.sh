#!/bin/sh
# bench-http.sh -- records from Kafka through extract, window, the model step
# (MLflow protocol) and the Shopify step, to the debug record.
#
#   scripts/bench-http.sh [N] [DELAY_MS ...]
#
# For each DELAY_MS (default: 1 and 20) the HTTP test servers of
# scripts/testservers/ (mlflow.py, shopify.py with an unlimited cost bucket)
# answer every request after that delay. Starts `sluice broker` (its own
# process), loads N tracker records of N different visitors (so every
# product view is one model request and one Shopify write: nothing
# coalesces), runs `sluice run` and waits until every record is done. Prints
# records/s (wall clock, first to last record done), records and HTTP requests
# per CPU-second of the sluice process, the most requests in flight each
# server saw, then p50/p99 latency over a second phase of records produced at
# a steady rate into the running job: from an input record's Kafka timestamp
# to the debug record, which is produced once Shopify acknowledged the write.
# The consumer's fetch.wait.max.ms is FETCH_WAIT_MS (default 5): librdkafka's
# mock broker holds a caught-up consumer's fetch for that whole wait (500 ms
# by default), which would otherwise be most of the latency measured.
set -eu
cd "$(dirname "$0")/.."
N=${1:-6000}
[ $# -gt 0 ] && shift
DELAYS=${*:-1 20}
RATE_RECORDS=${RATE_RECORDS:-1000}   # latency phase: records, at ~200/s
tmp=$(mktemp -d)
pids=
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# start NAME CMD...: runs CMD in the background (killed on exit), waits for
# its first line, the address, in $tmp/NAME.out. Not in a subshell: $pids
# must keep the process.
start() {
    name=$1; shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids="$pids $!"
    for _ in $(seq 100); do [ -s "$tmp/$name.out" ] && break; sleep 0.1; done
}
first_line() { head -n 1 "$tmp/$1.out"; }

metric() {
    curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null | awk -v m="$1" '$1 == m { print $2 }'
}
cpu_now() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$pid/stat"; }
requests() {
    m=$(metric 'sluice_http_requests_total{endpoint="model"}')
    s=$(metric 'sluice_http_requests_total{endpoint="shopify"}')
    echo $(( ${m:-0} + ${s:-0} ))
}

run() {
    delay=$1
    topic=in-$delay out=out-$delay
    start "ml-$delay" python3 -B scripts/testservers/mlflow.py
    start "shop-$delay" python3 -B scripts/testservers/shopify.py
    ml=$(first_line "ml-$delay") shop=$(first_line "shop-$delay")
    for u in "$ml" "$shop"; do
        curl -s -o /dev/null -H 'Content-Type: application/json' \
            -d "{\"mode\": \"slow\", \"delay_ms\": $delay}" "$u/_control"
    done
    curl -s -o /dev/null -H 'Content-Type: application/json' -d '{"bucket": {"maximumAvailable":
        1000000000, "currentlyAvailable": 1000000000, "restoreRate": 1000000000, "cost": 1}}' \
        "$shop/_control"
    KEYED=1 luajit scripts/gen-events.lua "$N" 10 "$N" >"$tmp/events.tsv"
    kcat -b "$brokers" -P -t "$topic" -K"$(printf "\t")" <"$tmp/events.tsv"
    port=$((20000 + ($$ + delay) % 12000))   # below the ephemeral ports, 32768-
    cat >"$tmp/bench-$delay.lua" <<CONF
return {
  kafka = { brokers = "$brokers", group = "bench-$delay", input = "$topic",
            consumer = { ["fetch.wait.max.ms"] = "${FETCH_WAIT_MS:-5}" } },
  rules = { path = "lua" },
  admin = "127.0.0.1:$port",
  pipeline = {
    { lua = "recommendations.extract",
      params = { store_url = "http://127.0.0.1:8080", app_id = "shopify-nu-recommendations" } },
    { name = "window", window = { key = "userId", time = "product.viewTimestamp", length = "5m",
        dedupe = "eventId", as = "aggregatedProducts", max_entries = 50,
        aggregate = { slugs = { "list", "product.slug" }, viewTimestamps = { "list", "product.viewTimestamp" } } } },
    { name = "model", model = { kind = "mlflow", url = "$ml", as = "recommendationsModelOutput",
        input = "recommendations.model.input", output = "recommendations.model.output",
        max_in_flight = 64, timeout = "10s" } },
    { lua = "recommendations.limit" },
    { name = "shopify", http = { url = "$shop/admin/api/2026-07/graphql.json",
        headers = { ["X-Shopify-Access-Token"] = "shpat_test_token" }, max_in_flight = 64,
        request = "recommendations.shopify.request", response = "recommendations.shopify.response",
        as = "sendResult", accept = { 200 } } },
    { lua = "recommendations.record" },
    { name = "debug", kafka = { topic = "$out", key = "userId",
        fields = { "userId", "kafka", "recommendationsOutput", "sendResult" } } },
  },
}
CONF
    ./sluice run -c "$tmp/bench-$delay.lua" 2>"$tmp/run-$delay.err" &
    pid=$!
    pids="$pids $pid"
    first= last= d0=0 cpu0=0 r0=0
    for _ in $(seq 6000); do
        d=$(metric sluice_records_done_total); d=${d:-0}
        now=$(date +%s.%N)
        if [ -z "$first" ] && [ "$d" != 0 ]; then first=$now; d0=$d; cpu0=$(cpu_now); r0=$(requests); fi
        if [ "$d" -ge "$N" ] 2>/dev/null; then last=$now; break; fi
        sleep 0.05
    done
    [ -n "$last" ] || { echo "bench-http: only $(metric sluice_records_done_total) of $N records done" >&2
                        tail -20 "$tmp/run-$delay.err" >&2; exit 1; }
    cpu=$(cpu_now) reqs=$(requests)
    mlmax=$(curl -s "$ml/_stats" | luajit -e 'print(require"cjson".decode(io.read"*a").max_in_flight)')
    shmax=$(curl -s "$shop/_stats" | luajit -e 'print(require"cjson".decode(io.read"*a").max_in_flight)')
    dl=$(metric sluice_dead_letters_total)
    awk -v n="$N" -v d0="$d0" -v a="$first" -v b="$last" -v cpu="$cpu" -v cpu0="$cpu0" \
        -v r="$reqs" -v r0="$r0" -v delay="$delay" -v mlmax="$mlmax" -v shmax="$shmax" -v dl="${dl:-0}" 'BEGIN {
        printf "http %2d ms: %d records (N visitors) kafka -> extract -> window -> model -> shopify -> kafka\n", delay, n
        printf "http %2d ms: %.0f records/s wall, %.0f records per CPU-second, %d HTTP requests (%.0f per CPU-second), %d dead letters\n",
               delay, (n - d0) / (b - a), (n - d0) / (cpu - cpu0), r, (r - r0) / (cpu - cpu0), dl
        printf "http %2d ms: most requests in flight: model %d, shopify %d (max_in_flight 64 each)\n", delay, mlmax, shmax
    }'
    # Latency: records at a steady ~200/s into the running job.
    # the same records for new visitors ("r" + duid), so their windows start empty
    head -n "$RATE_RECORDS" "$tmp/events.tsv" | sed 's/^/r/; s/"duid":"/"duid":"r/g' >"$tmp/rate.tsv"
    i=0
    while IFS= read -r l; do
        printf '%s\n' "$l"; i=$((i + 1))
        [ $((i % 20)) -eq 0 ] && sleep 0.1
    done <"$tmp/rate.tsv" | kcat -b "$brokers" -P -t "$topic" -K"$(printf "\t")" -X linger.ms=1
    sleep 2
    # This phase's debug records are those of its visitors ("r..."): kcat
    # interleaves partitions in no fixed order, so counting the records read
    # before it would take a few of the first phase's (seconds old) for its own.
    kcat -b "$brokers" -C -t "$out" -e -q -f '%T %s\n' 2>/dev/null |
        DELAY=$delay luajit -e '
          local cjson = require "cjson"
          local lat = {}
          for line in io.lines() do
            local ts, v = line:match("^(%d+) (.*)$")
            local ok, r = pcall(cjson.decode, v or "")
            if ok and type(r.userId) == "string" and r.userId:sub(1, 1) == "r" and r.kafka
               and r.kafka.timestamp then
              lat[#lat + 1] = tonumber(ts) - r.kafka.timestamp
            end
          end
          table.sort(lat)
          local function p(q) return lat[math.max(1, math.ceil(#lat * q))] or -1 end
          io.write(string.format("http %2d ms: latency Kafka timestamp -> debug record after the Shopify ack, "
            .. "%d records at ~200/s: p50 %d ms, p99 %d ms\n", tonumber(os.getenv("DELAY")), #lat, p(0.5), p(0.99)))'
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

start broker ./sluice broker --partitions 16
brokers=$(first_line broker)
for d in $DELAYS; do run "$d"; done
