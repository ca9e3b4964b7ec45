#!/bin/sh
# demo.sh -- what `make demo` runs: the whole loop on one machine. It trains
# the built-in model when there is no model file, starts the recommendations
# job on embedded defaults (in-process broker, collector with the read API,
# pipeline, admin listener) and the demo storefront, prints the URL to open,
# and prints the time from each page view to the recommendations on the page.
# Ctrl-C (or SIGTERM) stops everything it started and exits 0.
#
#   scripts/demo.sh              start the demo (DEMO_ONCE=1: start, check, stop)
#   scripts/demo.sh counts       one line of per-step counts every 2 s, from /metrics
#   scripts/demo.sh counts --once
#   scripts/demo.sh model        only train the model file when it is missing
#                                or older than the catalog (what `make run` does)
#
# Environment (defaults): STORE_URL (http://127.0.0.1:8080), COLLECTOR_LISTEN
# (127.0.0.1:9090), ADMIN_LISTEN (127.0.0.1:9100), KAFKA_BROKERS (embedded),
# DEMO_DIR (.cache/demo: logs, the generated interactions), MODEL_FILE
# ($DEMO_DIR/recs.model: the built-in model the job reads), CATALOG_FILE
# (examples/catalog.json).
# SLUICE_BIN (./sluice: the binary to run, e.g. the sanitizer build).
set -eu
cd "$(dirname "$0")/.."
SLUICE=${SLUICE_BIN:-./sluice}

STORE_URL=${STORE_URL:-http://127.0.0.1:8080}
STORE_URL=${STORE_URL%/}
COLLECTOR_LISTEN=${COLLECTOR_LISTEN:-127.0.0.1:9090}
ADMIN_LISTEN=${ADMIN_LISTEN:-127.0.0.1:9100}
DEMO_DIR=${DEMO_DIR:-.cache/demo}
MODEL_FILE=${MODEL_FILE:-$DEMO_DIR/recs.model}
CATALOG_FILE=${CATALOG_FILE:-examples/catalog.json}
export STORE_URL COLLECTOR_LISTEN ADMIN_LISTEN MODEL_FILE CATALOG_FILE

# counts: sums per step of sluice_step_out_total, _filtered_total and
# _step_errors_total, with the collector's events and the dead letters.
counts_line() {
    curl -sf "http://$ADMIN_LISTEN/metrics" | awk '
        function step(s) { if (!(s in seen)) { seen[s] = 1; order[++n] = s } }
        function label(l,   v) { v = $1; sub(".*" l "=\"", "", v); sub("\".*", "", v); return v }
        /^sluice_collector_events_total / { ev = $2 }
        /^sluice_records_in_total / { rin = $2 }
        /^sluice_records_done_total / { done = $2 }
        /^sluice_dead_letters_total/ { dl += $2 }
        /^sluice_step_out_total\{/ { s = label("step"); step(s); out[s] += $2 }
        /^sluice_filtered_total\{/ { s = label("step"); step(s); filt[s] += $2 }
        /^sluice_step_errors_total\{/ { s = label("step"); step(s); err[s] += $2 }
        END {
            line = sprintf("events %d | records in %d", ev, rin)
            for (i = 1; i <= n; i++) {
                s = order[i]
                line = line sprintf(" | %s: out %d", s, out[s])
                if (filt[s] > 0) line = line sprintf(", filtered %d", filt[s])
                if (err[s] > 0) line = line sprintf(", errors %d", err[s])
            }
            printf "%s | done %d | dead letters %d\n", line, done, dl
        }'
}

if [ "${1:-}" = counts ]; then
    while :; do
        if ! counts_line; then
            echo "demo.sh counts: nothing answers on http://$ADMIN_LISTEN/metrics (is make demo running?)" >&2
            exit 1
        fi
        [ "${2:-}" = --once ] && exit 0
        sleep 2
    done
fi
# The built-in model file, trained from the seed's generated interactions
# when it is missing or older than the catalog.
train_model() {
    [ -f "$MODEL_FILE" ] && [ ! "$CATALOG_FILE" -nt "$MODEL_FILE" ] && return 0
    mkdir -p "$DEMO_DIR" "$(dirname "$MODEL_FILE")"
    echo "demo: training the built-in model from the seed's generated interactions -> $MODEL_FILE"
    if ! { "$SLUICE" model gen --seed 1 --out "$DEMO_DIR/interactions.tsv" >/dev/null 2>"$DEMO_DIR/train.log" \
        && "$SLUICE" model train -i "$DEMO_DIR/interactions.tsv" -c "$CATALOG_FILE" -o "$MODEL_FILE" 2>>"$DEMO_DIR/train.log"; }; then
        echo "demo: training failed; its log:" >&2
        tail -n 20 "$DEMO_DIR/train.log" | sed 's/^/  /' >&2
        exit 1
    fi
}

if [ "${1:-}" = model ]; then
    train_model
    exit 0
fi
[ $# -eq 0 ] || { echo "usage: scripts/demo.sh [counts [--once] | model]" >&2; exit 2; }

mkdir -p "$DEMO_DIR"
sluice_pid=""
store_pid=""
latency_pid=""
stopping=0

# Stops what this script started, newest first, and waits for each (at
# most 8 s in all; what is still running then is killed, and named).
stop_all() {
    [ "$stopping" = 1 ] && return
    stopping=1
    for pid in $latency_pid $store_pid $sluice_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    i=0
    for pid in $latency_pid $store_pid $sluice_pid; do
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 80 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if kill -KILL "$pid" 2>/dev/null; then
            echo "demo: $(ps -o args= -p "$pid" 2>/dev/null || echo "process $pid") did not stop in time: killed" >&2
        fi
        wait "$pid" 2>/dev/null || true
    done
}
interrupted=0
trap 'stop_all' EXIT
# Ctrl-C reaches the whole process group (sluice and the storefront stop on
# it too): the loop below notices and stops the rest.
trap 'interrupted=1' INT TERM

die() {
    if [ "${interrupted:-0}" = 1 ]; then   # Ctrl-C while starting: not a failure
        echo "demo: stopped"
        exit 0
    fi
    echo "demo: $1" >&2
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 20 "$2" | sed 's/^/  /' >&2
    exit 1
}

# The tracker the storefront serves (npm), node and npm when missing.
./scripts/node-deps.sh || die "could not install the Node packages (scripts/node-deps.sh)"

train_model
"$SLUICE" run -c config/recommendations.lua >"$DEMO_DIR/sluice.log" 2>&1 &
sluice_pid=$!
i=0
until curl -sf "http://$COLLECTOR_LISTEN/health" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 150 ] || ! kill -0 "$sluice_pid" 2>/dev/null; then
        die "sluice did not start; its log ($DEMO_DIR/sluice.log):" "$DEMO_DIR/sluice.log"
    fi
    sleep 0.1
done
# The consumer group's first assignment takes a few seconds (the broker's
# initial rebalance delay): a page viewed before it would wait for it.
i=0
until grep -q 'assigned [0-9]* partition' "$DEMO_DIR/sluice.log" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 300 ] || ! kill -0 "$sluice_pid" 2>/dev/null; then
        die "sluice got no partitions of its input topic; its log ($DEMO_DIR/sluice.log):" "$DEMO_DIR/sluice.log"
    fi
    sleep 0.1
done
echo "demo: sluice runs: collector http://$COLLECTOR_LISTEN, metrics http://$ADMIN_LISTEN/metrics, log $DEMO_DIR/sluice.log"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$COLLECTOR_LISTEN/recommendations/not-a-visitor-id" || true)
if [ "$code" != 400 ]; then
    echo "demo: warning: the collector has no read API (GET /recommendations/<visitor> answered $code, not 400):" >&2
    echo "demo: this config has no store step yet, so pages show no recommendations" >&2
fi

COLLECTOR_URL="http://$COLLECTOR_LISTEN" node examples/storefront/server.js >"$DEMO_DIR/storefront.log" 2>&1 &
store_pid=$!
i=0
until grep -q '^storefront: http' "$DEMO_DIR/storefront.log" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$store_pid" 2>/dev/null; then
        die "the storefront did not start; its log ($DEMO_DIR/storefront.log):" "$DEMO_DIR/storefront.log"
    fi
    sleep 0.1
done

brokers=${KAFKA_BROKERS:-embedded}
if [ "$brokers" = embedded ]; then
    brokers=$(sed -n 's/.*embedded broker on \([0-9.:]*\).*/\1/p' "$DEMO_DIR/sluice.log" | head -n 1)
fi
if [ -n "$brokers" ] && command -v kcat >/dev/null 2>&1; then
    node examples/storefront/latency.js --kcat "$brokers" 2>>"$DEMO_DIR/latency.log" &
    latency_pid=$!
fi

cat <<EOF

  Open $STORE_URL/ and browse a few products: each product page shows
  "You may also be interested in..." with what the model recommends for
  this visitor's last 5 minutes of views; the time from each page view to
  the recommendations on the page is printed here.

  Counts of each step, from another terminal:  scripts/demo.sh counts
  Ctrl-C stops everything.

EOF
if [ "${DEMO_ONCE:-0}" = 1 ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' "$STORE_URL/products/laptop")
    [ "$code" = 200 ] || die "the storefront answered $code for /products/laptop"
    counts_line | sed 's/^/demo: /'
    stop_all
    exit 0
fi
# Until Ctrl-C, or until sluice or the storefront stops on its own.
while [ "$interrupted" = 0 ] && kill -0 "$sluice_pid" 2>/dev/null && kill -0 "$store_pid" 2>/dev/null; do
    sleep 1 &
    wait $! 2>/dev/null || true   # a signal ends the wait at once; its trap runs
done
if [ "$interrupted" = 1 ]; then
    echo
    echo "demo: stopping"
    stop_all
    echo "demo: stopped"
    exit 0
fi
kill -0 "$sluice_pid" 2>/dev/null || die "sluice stopped; its log ($DEMO_DIR/sluice.log):" "$DEMO_DIR/sluice.log"
die "the storefront stopped; its log ($DEMO_DIR/storefront.log):" "$DEMO_DIR/storefront.log"
