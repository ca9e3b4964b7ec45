#!/usr/bin/env bash
# soak.sh -- `make soak`: the job under steady load while things go wrong, and
# a corpus of malformed tracker payloads at rate (issue 12). Not in `make test`.
#
#   scripts/soak.sh            (SOAK_SECONDS=90 SOAK_RATE=100 SOAK_CORPUS_SECONDS=60)
#
# On a three-broker Apache Kafka (scripts/kafka.sh start --brokers 3, topics of
# replication factor 3) runs a collector process and a worker process (extract
# -> window -> kafka sink, the shipped job's shape) and:
#
# 1. steady load: SOAK_RATE tracker POSTs/s (one page view each, its own eid)
#    for SOAK_SECONDS; meanwhile 20 SIGHUPs to the worker, kill -9 of the
#    worker twice (restarted at once, as a supervisor would), broker 2 killed
#    and restarted. Then every eid the collector acknowledged with 200 is
#    looked for at the sink: prints lost (must be 0) and duplicates.
# 2. corpus: every malformed kind of scripts/soak-load.py at SOAK_CORPUS_RATE
#    requests/s plus SOAK_VISITORS page views/s of new visitor ids, for
#    SOAK_CORPUS_SECONDS; prints the counts by reason (collector and extract)
#    and the RSS of both processes at start, middle and end. The window is
#    SOAK_WINDOW_SECONDS long (15), so its state of new visitors levels off
#    within the phase: "start" is measured once a window length has passed.
#
# Exits 1 on any loss, a process that died, or a collector that acknowledged
# nothing in the corpus phase; 0 otherwise. Leaves the logs in
# the folder it prints.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_LOAD=${SOAK_SECONDS:-90}
RATE=${SOAK_RATE:-100}
CORPUS_SECONDS=${SOAK_CORPUS_SECONDS:-60}
CORPUS_RATE=${SOAK_CORPUS_RATE:-200}
VISITORS=${SOAK_VISITORS:-10000}
WINDOW=${SOAK_WINDOW_SECONDS:-15}   # window length: its state levels off after it
STORE=http://127.0.0.1:8080
APP=shopify-nu-recommendations

tmp=$(mktemp -d /tmp/sluice-soak.XXXXXX)
pids=()
started_kafka=0
log() { printf 'soak: %s\n' "$*" >&2; }
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ "$started_kafka" = 1 ] && scripts/kafka.sh stop >/dev/null 2>&1 || true
    log "logs in $tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m" ") == 1 {print $2}'; }

[ -x ./sluice ] || make sluice >&2

# ---------------------------------------------------------------- Kafka

if brokers=$(scripts/kafka.sh status 2>/dev/null | tail -n 1) && [ "$(tr ',' '\n' <<<"$brokers" | wc -l)" = 3 ]; then
    log "using the running three-broker Kafka at $brokers"
else
    scripts/kafka.sh stop >/dev/null 2>&1 || true
    log "starting three Kafka brokers (scripts/kafka.sh start --brokers 3)"
    brokers=$(scripts/kafka.sh start --brokers 3 | tail -n 1)
    started_kafka=1
fi
run_id=$(date +%s)-$$
input=soak-in-$run_id output=soak-out-$run_id dlq=soak-dlq-$run_id group=soak-g-$run_id
for t in "$input" "$output" "$dlq"; do
    scripts/kafka.sh topic create "$t" --partitions 4 --replication-factor 3 >/dev/null
done

# ---------------------------------------------------------------- configs

cport=$(free_port) cadmin=$(free_port) wadmin=$(free_port)
cat >"$tmp/collector.lua" <<EOF
return {
  kafka = { brokers = "$brokers" },
  collector = { listen = "127.0.0.1:$cport", topic = "$input", allowed_origins = { "$STORE" },
                max_body = "64KB" },
  admin = "127.0.0.1:$cadmin",
}
EOF
cat >"$tmp/worker.lua" <<EOF
return {
  kafka = { brokers = "$brokers", group = "$group", input = "$input", dead_letter = "$dlq",
            consumer = { ["session.timeout.ms"] = "6000", ["heartbeat.interval.ms"] = "1000" } },
  rules = { path = "lua", budget = "200ms", watchdog = "5s", state_dir = "$tmp/state" },
  admin = "127.0.0.1:$wadmin",
  shutdown_timeout = "5s",
  pipeline = {
    { lua = "recommendations.extract", params = { store_url = "$STORE", app_id = "$APP" } },
    { name = "window", window = { key = "userId", time = "product.viewTimestamp", length = "${WINDOW}s",
        dedupe = "eventId", aggregate = { slugs = { "list", "product.slug" } },
        as = "aggregatedProducts", max_entries = 50, max_keys = 1000000 } },
    { name = "debug", kafka = { topic = "$output", key = "userId",
        fields = { "userId", "eventId", "product", "aggregatedProducts" } } },
  },
}
EOF

wait_http() { for _ in $(seq 150); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.2; done; return 1; }
./sluice run -c "$tmp/collector.lua" >"$tmp/collector.out" 2>"$tmp/collector.err" &
collector=$!
pids+=("$collector")
worker=
start_worker() {
    ./sluice run -c "$tmp/worker.lua" >>"$tmp/worker.out" 2>>"$tmp/worker.err" &
    worker=$!
    pids+=("$worker")
}
start_worker
wait_http "$cadmin" || { log "the collector did not start"; cat "$tmp/collector.err" >&2; exit 1; }
wait_http "$wadmin" || { log "the worker did not start"; cat "$tmp/worker.err" >&2; exit 1; }
log "collector :$cport (pid $collector), worker (pid $worker), brokers $brokers"

# ---------------------------------------------------------------- 1. steady load

log "steady load: $RATE POSTs/s for ${SECONDS_LOAD}s; 20 SIGHUPs, 2 kill -9 of the worker, broker 2 down and back"
: >"$tmp/acked"
python3 scripts/soak-load.py steady --port "$cport" --rate "$RATE" --seconds "$SECONDS_LOAD" \
    --acked "$tmp/acked" --store "$STORE" --app "$APP" >"$tmp/steady.json" &
load=$!
pids+=("$load")
t0=$(date +%s)
at() { while [ $(( $(date +%s) - t0 )) -lt "$1" ]; do sleep 0.2; done; }
step=$(( SECONDS_LOAD * 8 / 10 / 20 )); [ "$step" -ge 1 ] || step=1
hups=0 kills=0 broker_down=0
for i in $(seq 20); do
    at $(( 3 + i * step ))
    if [ "$i" = 6 ] || [ "$i" = 14 ]; then
        kill -9 "$worker" 2>/dev/null || true
        wait "$worker" 2>/dev/null || true
        kills=$((kills + 1))
        log "kill -9 worker ($kills of 2), restarted"
        start_worker
        wait_http "$wadmin" || log "the restarted worker does not answer /health yet"
    fi
    if [ "$i" = 9 ]; then scripts/kafka.sh kill-broker 2 >/dev/null; broker_down=1; log "broker 2 killed"; fi
    if [ "$i" = 17 ]; then scripts/kafka.sh restart-broker 2 >/dev/null; broker_down=0; log "broker 2 back"; fi
    kill -HUP "$worker" 2>/dev/null && hups=$((hups + 1))
done
[ "$broker_down" = 1 ] && scripts/kafka.sh restart-broker 2 >/dev/null
wait "$load" || true
log "load done: $(cat "$tmp/steady.json"); $hups SIGHUPs sent"

# Every acknowledged eid at the sink (waits until all are there, or 180 s).
count_sink() {
    kcat -C -b "$brokers" -t "$output" -o beginning -e -q -f '%s\n' 2>/dev/null |
        grep -o '"eventId":"[^"]*"' | cut -d'"' -f4 >"$tmp/sink" || true
}
acked=$(sort -u "$tmp/acked" | wc -l)
for _ in $(seq 90); do
    count_sink
    lost=$(sort -u "$tmp/acked" | comm -23 - <(sort -u "$tmp/sink") | wc -l)
    [ "$lost" = 0 ] && break
    sleep 2
done
total=$(wc -l <"$tmp/sink")
distinct=$(sort -u "$tmp/sink" | wc -l)
dlq_n=$(kcat -C -b "$brokers" -t "$dlq" -o beginning -e -q 2>/dev/null | wc -l)
echo "steady: acked $acked events, sink $total records ($distinct distinct): lost $lost, duplicates $((total - distinct)), dead letters $dlq_n; $hups SIGHUPs, $kills kill -9, broker 2 killed once"
fail=0
[ "$lost" = 0 ] || { log "LOST $lost acknowledged events"; fail=1; }

# ---------------------------------------------------------------- 2. corpus

kill -0 "$collector" 2>/dev/null || { log "the collector died"; exit 1; }
kill -0 "$worker" 2>/dev/null || { log "the worker died"; exit 1; }
log "corpus: $CORPUS_RATE malformed POSTs/s and $VISITORS new visitor ids/s for ${CORPUS_SECONDS}s"
python3 scripts/soak-load.py corpus --port "$cport" --rate "$CORPUS_RATE" --visitors "$VISITORS" \
    --seconds "$CORPUS_SECONDS" --store "$STORE" --app "$APP" >"$tmp/corpus.json" &
load=$!
pids+=("$load")
keys() { metric "$wadmin" 'sluice_window_keys{step="window"}'; }
sample() { echo "collector $(rss_kb "$collector") kB, worker $(rss_kb "$worker") kB ($(keys) window keys)"; }
c0=$(date +%s)
while [ $(( $(date +%s) - c0 )) -lt $(( WINDOW + 5 )) ]; do sleep 0.5; done
rss=$(sample)
while [ $(( $(date +%s) - c0 )) -lt $(( (CORPUS_SECONDS + WINDOW + 5) / 2 )) ]; do sleep 0.5; done
rss_mid=$(sample)
wait "$load" || true
rss_end=$(sample)
echo "RSS: start $rss; middle $rss_mid; end $rss_end"
python3 - "$tmp/corpus.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for k, v in sorted(r["kinds"].items()):
    print("corpus: %-17s sent %6d  codes %-22s collector %-11s extract %s" % (
        k, sum(v["codes"].values()), json.dumps(v["codes"], sort_keys=True), v["collector"], v["extract"] or "-"))
print("corpus: visitors: %(events)d events of new visitor ids sent, %(acked)d acknowledged" % r["visitors"])
EOF
echo "collector /metrics:"
curl -s "http://127.0.0.1:$cadmin/metrics" | grep '^sluice_collector_requests_total' | grep -v ' 0$' | sed 's/^/  /'
echo "worker /metrics (filtered by reason since its last restart):"
curl -s "http://127.0.0.1:$wadmin/metrics" | grep -E '^sluice_filtered_total|^sluice_window_keys|^sluice_step_dead_letters_total' |
    grep -v ' 0$' | sed 's/^/  /'
# A collector that answers 503 to everything loses nothing (the tracker
# retries) but is down: fail on it too.
acked_corpus=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["visitors"]["acked"])' "$tmp/corpus.json")
[ "$acked_corpus" -gt 0 ] || { log "the collector acknowledged no event of the corpus phase (see $tmp/collector.err)"; fail=1; }
for p in "$collector" "$worker"; do
    kill -0 "$p" 2>/dev/null || { log "process $p died during the corpus"; fail=1; }
done
echo "soak: lost $lost, duplicates $((total - distinct)), processes $([ "$fail" = 0 ] && echo alive || echo 'FAILED')"
exit "$fail"
