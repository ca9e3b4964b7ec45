#!/bin/sh
# bench.sh -- what `make bench` prints: the core's microbenchmarks and the
# end-to-end figures. Speed and memory are measured here, never in tests.
#
#   JSON decode of a tracker record          core/bench/json_bench.c
#   window updates/s, bytes per key/entry    core/bench/window_bench.c
#   HTTP client requests per CPU-second      core/bench/httpc_bench.c
#   Kafka -> extract -> Kafka, per CPU-s     scripts/bench-pipeline.sh
#   ... -> window -> model -> Shopify (HTTP)  scripts/bench-http.sh
#   collector requests/s, p50/p99            scripts/bench-collector.sh
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "# sluice bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)"
echo "## json ($BUILD/bench/json_bench)"
"$BUILD/bench/json_bench"
echo "## window ($BUILD/bench/window_bench)"
"$BUILD/bench/window_bench"
echo "## http client ($BUILD/bench/httpc_bench)"
"$BUILD/bench/httpc_bench"
echo "## pipeline (scripts/bench-pipeline.sh)"
scripts/bench-pipeline.sh "${BENCH_RECORDS:-90000}"
echo "## http steps (scripts/bench-http.sh)"
scripts/bench-http.sh "${BENCH_HTTP_RECORDS:-6000}" 1 20
echo "## collector (scripts/bench-collector.sh)"
DURATION=${DURATION:-10s} scripts/bench-collector.sh
