#!/bin/sh
# demo.sh -- what `make demo` runs: the recommendations job on embedded
# defaults (in-process broker, collector on COLLECTOR_LISTEN, admin on
# ADMIN_LISTEN), fed with the real tracker requests captured in
# spec/fixtures/snowplow/ as a browser would send them, then left running so
# you can send your own events. Ctrl-C stops it (DEMO_ONCE=1: stop at once).
set -eu
cd "$(dirname "$0")/.."
COLLECTOR_LISTEN=${COLLECTOR_LISTEN:-127.0.0.1:8080}
ADMIN_LISTEN=${ADMIN_LISTEN:-127.0.0.1:9100}
export COLLECTOR_LISTEN ADMIN_LISTEN
log=$(mktemp)
./sluice run -c config/recommendations.lua 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT INT TERM

i=0
until curl -sf "http://$COLLECTOR_LISTEN/health" >/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "demo: sluice did not start; its log:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
brokers=$(sed -n 's/.*embedded broker on \([0-9.:]*\).*/\1/p' "$log" | head -n 1)
echo "sluice runs: collector http://$COLLECTOR_LISTEN, metrics http://$ADMIN_LISTEN/metrics, broker $brokers"
echo "sending the captured tracker requests (a visitor browsing 6 products, duplicates included)..."
bodies=$(mktemp -d)
luajit - "$bodies" <<'LUA'
local cjson = require "cjson"
local n = 0
for line in io.lines("spec/fixtures/snowplow/batch-bufferSize3.requests.jsonl") do
  local r = cjson.decode(line)
  if r.method == "POST" then
    n = n + 1
    local f = assert(io.open(string.format("%s/%02d.json", arg[1], n), "wb"))
    f:write(r.body)
    f:close()
  end
end
LUA
for body in "$bodies"/*.json; do
    curl -s -o /dev/null -w "  POST tp2 -> %{http_code}\n" \
        -H 'Content-Type: application/json; charset=UTF-8' -H 'Origin: http://127.0.0.1:8080' \
        --data-binary @"$body" "http://$COLLECTOR_LISTEN/com.snowplowanalytics.snowplow/tp2"
done
rm -rf "$bodies"
# The consumer joins its group in a few seconds; wait until it has read them.
i=0
until curl -s "http://$ADMIN_LISTEN/metrics" | grep -q '^sluice_records_done_total [6-9]'; do
    i=$((i + 1)); [ $i -gt 300 ] && break; sleep 0.1
done
echo "what the pipeline wrote to shopify-found-recommendations (visitor, product, window):"
kcat -b "$brokers" -C -t shopify-found-recommendations -e -q -f '  %s\n' 2>/dev/null
echo "filtered and deduplicated, from /metrics:"
curl -s "http://$ADMIN_LISTEN/metrics" | grep -E '^sluice_(filtered|records_in|dead)' | sed 's/^/  /'
[ "${DEMO_ONCE:-0}" = 1 ] && exit 0
echo "sluice keeps running; send tracker events to http://$COLLECTOR_LISTEN (Ctrl-C stops)."
wait "$pid"
