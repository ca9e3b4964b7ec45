#!/bin/sh
# bench-compare.sh -- the pipeline's figures, side by side, on the embedded
# broker and on real Kafka (bench/compare.py does the measuring):
#
#   records per CPU-second of each consuming process, on the same records in
#   the same run: a C librdkafka consumer that only counts (the ceiling), and
#   one that produces a record for each it reads with the sinks' settings
#   (the Kafka client's share of the pipeline's shape);
#   sluice extract, extract -> window, extract -> window -> sink (the shipped
#   job's shape, bench/job.lua); a plain Python job doing the same rules,
#   window and sink (bench/plain_job.py); median of BENCH_ROUNDS interleaved
#   rounds with the spread, and the ratio of each to sluice's whole job;
#
#   end-to-end latency p50/p99/p99.9 of the whole job at offered loads of
#   BENCH_RATES records/s, with the shipped config's consumer fetch wait and
#   with librdkafka's default (and on real Kafka with fetches of at least
#   64 KiB or 10 ms, for less CPU), sluice's CPU per record over each load and
#   the C consume -> produce ceiling's at each rate.
#
#   scripts/bench-compare.sh            (make bench runs it)
#   BENCH_QUICK=1 scripts/bench-compare.sh      a short run (a minute or two)
#   BENCH_KAFKA=0 ...                   the embedded broker only
#
# BENCH_RECORDS (default 200000; the embedded broker keeps 5 MiB a partition,
# so it gets BENCH_EMBEDDED_PARTITIONS=64 partitions where real Kafka gets 4),
# BENCH_ROUNDS (3), BENCH_RATES (5000,20000), BENCH_SECONDS (10 per load).
# Real Kafka is scripts/kafka.sh's: started here and stopped after when it was
# not running. Needs `make sluice build/bench/consume build/bench/produce` and
# scripts/deps.sh bench (python3-confluent-kafka); `make bench` sees to both.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_RECORDS:=60000}" "${BENCH_ROUNDS:=1}" "${BENCH_SECONDS:=3}"
fi
: "${BENCH_RECORDS:=200000}" "${BENCH_ROUNDS:=3}" "${BENCH_SECONDS:=10}"
: "${BENCH_RATES:=5000,20000}" "${BENCH_EMBEDDED_PARTITIONS:=64}" "${BENCH_KAFKA:=1}"
PY=/usr/bin/python3   # Debian's, which python3-confluent-kafka is installed for

# The records: scripts/gen-events.lua is deterministic, so they are made once.
# 20000 visitors whatever the count (a visitor comes back every 740 s of event
# time, as in the issue's measurements); latency's 100000 visitors come back
# every few seconds of its real time stamps.
mkdir -p "$BUILD/bench"
events() {
    f="$BUILD/bench/events-$1-$2.tsv"
    if [ ! -s "$f" ] || [ scripts/gen-events.lua -nt "$f" ]; then
        KEYED=1 luajit scripts/gen-events.lua "$1" 10 "$2" >"$f.tmp" && mv "$f.tmp" "$f"
    fi
    echo "$f"
}
tput=$(events "$BENCH_RECORDS" 20000)
lat=$(events 200000 100000)

echo "# machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
     "$(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
run() {
    $PY bench/compare.py "$@" || echo "not measured: bench/compare.py $* failed (above)"
}
run throughput --brokers embedded --partitions "$BENCH_EMBEDDED_PARTITIONS" \
    --events "$tput" --records "$BENCH_RECORDS" --rounds "$BENCH_ROUNDS"
run latency --brokers embedded --partitions "$BENCH_EMBEDDED_PARTITIONS" \
    --events "$lat" --rates "$BENCH_RATES" --seconds "$BENCH_SECONDS"

[ "$BENCH_KAFKA" = 1 ] || exit 0
started=
if ! brokers=$(scripts/kafka.sh status 2>/dev/null); then
    if ! brokers=$(scripts/kafka.sh start 2>"$BUILD/bench/kafka-start.log" | tail -n 1); then
        echo "not measured on real Kafka: scripts/kafka.sh start failed:"
        tail -n 5 "$BUILD/bench/kafka-start.log"
        exit 0
    fi
    started=1
    trap 'scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT INT TERM
fi
echo "# real Kafka: $(find .cache/kafka/libs/ -name 'kafka_2.13-*.jar' | sed -n 's/.*kafka_2.13-\(.*\)\.jar$/Apache Kafka \1/p')," \
     "one broker (scripts/kafka.sh${started:+, started for this run}) on the same cores"
run throughput --brokers "$brokers" --partitions 4 \
    --events "$tput" --records "$BENCH_RECORDS" --rounds "$BENCH_ROUNDS"
run latency --brokers "$brokers" --partitions 4 \
    --events "$lat" --rates "$BENCH_RATES" --seconds "$BENCH_SECONDS" --batches 65536:10
