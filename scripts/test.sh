#!/bin/sh
# Runs the test suites and prints one TAP stream per suite, then the line
# "N passed, N failed" summing every C test, busted spec and integration spec.
# Exits non-zero on any failure.
#
#   scripts/test.sh all|unit|spec|integration
#
# Integration specs run twice: against the embedded broker and against a real
# Apache Kafka broker started by scripts/kafka.sh (SLUICE_TEST_REAL_KAFKA=0
# skips the second run and says so: it then counts as a failure, never as a
# pass). Environment: SLUICE_BIN (the binary, default ./sluice),
# SLUICE_TEST_BUILD (build folder of the C tests, default build).
set -u
cd "$(dirname "$0")/.."

BUILD=${SLUICE_TEST_BUILD:-build}
export SLUICE_BIN="${SLUICE_BIN:-$PWD/sluice}"
LOGDIR=$(mktemp -d)
trap 'rm -rf "$LOGDIR"' EXIT
what=${1:-all}
passed=0
failed=0

# run_suite NAME CMD...: runs CMD, shows its TAP, adds up ok / not ok lines.
# A suite that exits non-zero without reporting a failure counts one.
run_suite() {
    name=$1; shift
    log="$LOGDIR/$(echo "$name" | tr -c 'A-Za-z0-9_' '_').log"
    echo "# suite: $name"
    "$@" > "$log" 2>&1
    rc=$?
    cat "$log"
    ok=$(grep -c '^ok ' "$log")
    nok=$(grep -c '^not ok ' "$log")
    if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
        echo "not ok - suite $name exited with status $rc"
        nok=1
    fi
    passed=$((passed + ok))
    failed=$((failed + nok))
}

unit() {
    for t in "$BUILD"/tests/*_test; do
        [ -x "$t" ] || continue
        run_suite "c:$(basename "$t")" "$t"
    done
}

spec() {
    run_suite "busted:rules" busted -o TAP
}

integration() {
    SLUICE_TEST_KAFKA=embedded run_suite "integration:embedded" busted -o TAP --run=integration
    if [ "${SLUICE_TEST_REAL_KAFKA:-1}" = 0 ]; then
        echo "not ok - integration against real Kafka skipped (SLUICE_TEST_REAL_KAFKA=0)"
        failed=$((failed + 1))
        return
    fi
    addr=$(scripts/kafka.sh start --brokers 1 | tail -n 1)
    if [ -z "$addr" ] || ! scripts/kafka.sh status >/dev/null 2>&1; then
        echo "not ok - real Kafka broker could not be started (scripts/kafka.sh start)"
        failed=$((failed + 1))
        return
    fi
    SLUICE_TEST_KAFKA="$addr" run_suite "integration:kafka" busted -o TAP --run=integration
    scripts/kafka.sh stop >/dev/null 2>&1
}

case "$what" in
    unit) unit ;;
    spec) spec ;;
    integration) integration ;;
    all) unit; spec; integration ;;
    *) echo "usage: scripts/test.sh all|unit|spec|integration" >&2; exit 2 ;;
esac

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
