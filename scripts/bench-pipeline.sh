#!/bin/sh
# bench-pipeline.sh -- records from Kafka through the extract rule to the sink.
#
#   scripts/bench-pipeline.sh [N]
#   STEPS=window scripts/bench-pipeline.sh [N]    extract -> window -> record -> kafka
#   STEPS=forward scripts/bench-pipeline.sh [N]   extract -> kafka, the sink writing the
#       record as it came (input) beside userId and product
#   STEPS=model scripts/bench-pipeline.sh [N]     extract -> window -> model (built-in,
#       MODEL_FILE, trained by scripts/demo.sh model when missing) -> limit -> record
#       -> kafka: config/recommendations.lua's job without Shopify
#
# With STEPS=window or model the records view products of examples/catalog.json.
# Starts `sluice broker` (its own process, so its CPU is not counted), loads N
# realistic tracker records (scripts/gen-events.lua: ~1.4 KB, 10% filtered by
# the rules) into a topic of 64 partitions (the embedded broker keeps only
# 5 MiB per partition), then runs `sluice run` on config/recommendations.lua's
# steps and waits until every record is done. Prints records/s (wall clock,
# first to last record), the sluice process's CPU seconds, records per
# CPU-second (the figure that matters: the embedded broker itself delivers only
# a few tens of thousands of records/s) and peak RSS.
set -eu
cd "$(dirname "$0")/.."
N=${1:-${N:-60000}}
tmp=$(mktemp -d)
pids=
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

./sluice broker --partitions 64 --topics http.shopify-events,bench-out,sluice.dead-letter \
    >"$tmp/broker.out" 2>"$tmp/broker.err" &
pids="$!"
for _ in $(seq 50); do [ -s "$tmp/broker.out" ] && break; sleep 0.1; done
brokers=$(head -n 1 "$tmp/broker.out")

STEPS=${STEPS:-extract}
slugs_from=
case "$STEPS" in
extract | forward) ;;
window | model) slugs_from=${CATALOG_FILE:-examples/catalog.json} ;;
*) echo "bench-pipeline: STEPS must be extract, forward, window or model" >&2; exit 2 ;;
esac
if [ "$STEPS" = model ]; then
    ./scripts/demo.sh model >&2
fi
KEYED=1 SLUGS_FROM="$slugs_from" luajit scripts/gen-events.lua "$N" 10 >"$tmp/events.tsv"
kcat -b "$brokers" -P -t http.shopify-events -K"$(printf "\t")" <"$tmp/events.tsv"
port=$((20000 + $$ % 12000))   # below the ephemeral ports (32768-), which connections hold
# The steps after extract.
steps() {
    window='{ name = "window", window = { key = "userId", time = "product.viewTimestamp", length = "5m",
      dedupe = "eventId", aggregate = { slugs = { "list", "product.slug" },
      viewTimestamps = { "list", "product.viewTimestamp" } }, as = "aggregatedProducts", max_entries = 50 } },'
    debug='{ name = "sink", kafka = { topic = "bench-out", key = "userId",
      fields = { "userId", "product", "aggregatedProducts", "recommendationsOutput" } } },'
    case "$STEPS" in
    extract) echo '    { name = "sink", kafka = { topic = "bench-out", key = "userId", fields = { "userId", "product" } } },' ;;
    forward) echo '    { name = "sink", kafka = { topic = "bench-out", key = "userId", fields = { "userId", "product", "input" } } },' ;;
    window) printf '    %s\n    { lua = "recommendations.record" },\n    %s\n' "$window" "$debug" ;;
    model) printf '    %s\n    %s\n    { lua = "recommendations.limit" },\n    { lua = "recommendations.record" },\n    %s\n' \
        "$window" "{ name = \"model\", model = { kind = \"builtin\", file = \"${MODEL_FILE:-.cache/demo/recs.model}\", as = \"recommendationsModelOutput\", top_n = 20 } }," "$debug" ;;
    esac
}
cat >"$tmp/bench.lua" <<CONF
return {
  kafka = { brokers = "$brokers", group = "bench", input = "http.shopify-events" },
  rules = { path = "lua" },
  admin = "127.0.0.1:$port",
  pipeline = {
    { lua = "recommendations.extract",
      params = { store_url = "http://127.0.0.1:8080", app_id = "shopify-nu-recommendations" } },
$(steps)
  },
}
CONF
${SLUICE_WRAP:-} ./sluice run -c "$tmp/bench.lua" 2>"$tmp/run.err" &
pid=$!
pids="$pids $pid"

done_count() {
    curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null |
        awk '$1 == "sluice_records_done_total" { print $2 }'
}
cpu_now() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$pid/stat"; }
# user CPU s, system CPU s and minor page faults, space-separated
usage_now() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f %.2f %d", $14 / t, $15 / t, $10 }' "/proc/$pid/stat"; }
first= last= d0=0 cpu0=0 use0="0 0 0"
for _ in $(seq 2400); do
    d=$(done_count); d=${d:-0}
    now=$(date +%s.%N)
    if [ -z "$first" ] && [ "$d" != 0 ]; then first=$now; d0=$d; cpu0=$(cpu_now); use0=$(usage_now); fi
    if [ "$d" -ge "$N" ] 2>/dev/null; then last=$now; break; fi
    sleep 0.05
done
[ -n "$last" ] || { echo "bench-pipeline: only $(done_count) of $N records done" >&2; cat "$tmp/run.err" >&2; exit 1; }
cpu=$(cpu_now)
use=$(usage_now)
rss=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
out=$(kcat -b "$brokers" -C -t bench-out -e -q -f '.' 2>/dev/null | wc -c)
# Steady state: from the first poll that saw records done to the last, so
# start-up (group join, VM load) is not counted against the per-record cost.
awk -v n="$N" -v d0="$d0" -v a="$first" -v b="$last" -v cpu="$cpu" -v cpu0="$cpu0" \
    -v rss="$rss" -v out="$out" -v use0="$use0" -v use="$use" \
    -v steps="$(case "$STEPS" in extract) echo extract ;; forward) echo "extract (input written back)" ;;
                window) echo "extract -> window -> record" ;;
                model) echo "extract -> window -> model (built-in) -> limit -> record" ;; esac)" 'BEGIN {
    split(use0, u0, " "); split(use, u1, " ")
    printf "pipeline: %d records (~1.4 KB, 10%% filtered) kafka -> %s -> kafka, %d records out\n", n, steps, out
    printf "pipeline: %.0f records/s wall, %.2f CPU s in all (start-up included), peak RSS %d MB\n",
           (n - d0) / (b - a), cpu, rss
    printf "pipeline: %.0f records per CPU-second (steady state: %d records in %.2f CPU s)\n",
           (n - d0) / (cpu - cpu0), n - d0, cpu - cpu0
    printf "pipeline: steady state %.2f s user, %.2f s system, %.1f minor page faults per record\n",
           u1[1] - u0[1], u1[2] - u0[2], (u1[3] - u0[3]) / (n - d0)
}'
