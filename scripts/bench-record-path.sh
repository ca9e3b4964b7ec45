#!/bin/sh
# bench-record-path.sh -- sluice's record path with Kafka out of the way: the
# shipped job's steps as the pipeline benches run them (bench/job.lua,
# BENCH_STEPS=sink: extract -> window -> the debug sink's encoding) over N
# generated records (scripts/gen-events.lua, ~1.5 KB, 10% filtered) with
# `sluice test --summary`, in records per CPU-second of the process (start-up
# included), median of 3 runs with their spread. Steadier than the Kafka
# figures of bench-compare.sh, which share the cores with a broker.
#
#   scripts/bench-record-path.sh [N]     (default 200000)
set -eu
cd "$(dirname "$0")/.."
N=${1:-200000}
BUILD=${BUILD:-build}
f="$BUILD/bench/events-$N.jsonl"
mkdir -p "$BUILD/bench"
if [ ! -s "$f" ] || [ scripts/gen-events.lua -nt "$f" ]; then
    SLUGS_FROM=examples/catalog.json luajit scripts/gen-events.lua "$N" 10 >"$f.tmp" && mv "$f.tmp" "$f"
fi
python3 - "$N" "$f" <<'PY'
import os
import resource
import subprocess
import sys

n, events = int(sys.argv[1]), sys.argv[2]
env = dict(os.environ, BENCH_BROKERS="embedded", BENCH_STEPS="sink", BENCH_INPUT="in",
           BENCH_OUTPUT="out", BENCH_GROUP="bench", BENCH_ADMIN="127.0.0.1:1")
rates = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(["./sluice", "test", "-c", "bench/job.lua", "-i", events, "--summary"],
                       env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0 or "%d record(s)" % n not in r.stdout:
        sys.exit("bench-record-path: sluice test failed:\n" + (r.stderr or r.stdout)[-2000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rates.append(n / cpu)
rates.sort()
print("record path without Kafka (sluice test of bench/job.lua, extract → window → sink "
      "encoding, %d records): %.0f records per CPU-second (median of 3, spread %.0f-%.0f)"
      % (n, rates[1], rates[0], rates[2]))
PY
