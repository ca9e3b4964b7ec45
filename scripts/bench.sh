#!/bin/sh
# bench.sh -- what `make bench` prints: the core's microbenchmarks and the
# end-to-end figures. Speed and memory are measured here, never in tests.
#
#   JSON decode of a tracker record          core/bench/json_bench.c
#   window updates/s, bytes per key/entry    core/bench/window_bench.c
#   HTTP client requests per CPU-second      core/bench/httpc_bench.c
#   model training, bytes, us per request    core/bench/model_bench.c
#   the record path without Kafka, per CPU-s  scripts/bench-record-path.sh
#   sluice beside a C consumer and a plain
#   Python job, per CPU-s; latency p50/p99    scripts/bench-compare.sh (bench/)
#   (embedded broker and real Kafka)
#   ... -> window -> model -> Shopify (HTTP)  scripts/bench-http.sh
#   collector requests/s, p50/p99            scripts/bench-collector.sh
#   page view -> recommendations shown       spec/e2e/storefront.test.js (chromium)
#
# BENCH_QUICK=1: fewer records and shorter runs throughout (a couple of minutes).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_HTTP_RECORDS:=2000}" "${DURATION:=3s}" "${BENCH_RECORD_PATH_RECORDS:=60000}"
fi
echo "# sluice bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)"
echo "## json ($BUILD/bench/json_bench)"
"$BUILD/bench/json_bench"
echo "## window ($BUILD/bench/window_bench)"
"$BUILD/bench/window_bench"
echo "## http client ($BUILD/bench/httpc_bench)"
"$BUILD/bench/httpc_bench"
echo "## model ($BUILD/bench/model_bench)"
"$BUILD/bench/model_bench"
echo "## record path without Kafka (scripts/bench-record-path.sh)"
scripts/bench-record-path.sh "${BENCH_RECORD_PATH_RECORDS:-200000}"
echo "## pipeline: sluice, a C consumer and a plain Python job on the same records (scripts/bench-compare.sh)"
scripts/bench-compare.sh
echo "## http steps (scripts/bench-http.sh)"
scripts/bench-http.sh "${BENCH_HTTP_RECORDS:-6000}" 1 20
echo "## collector (scripts/bench-collector.sh)"
DURATION=${DURATION:-10s} scripts/bench-collector.sh
echo "## page view -> recommendations on the page (spec/e2e/storefront.test.js, headless chromium)"
if scripts/browser-deps.sh >/dev/null 2>&1; then
    out=$(node spec/e2e/storefront.test.js 2>&1) || true
    echo "$out" | grep -E '^# (latency|demo: latency)' || { echo "not measured:"; echo "$out" | grep -E '^(not ok|# Error)' | head -n 4; }
else
    echo "not measured: scripts/browser-deps.sh could not install chromium"
fi
