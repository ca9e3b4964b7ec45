#!/bin/sh
# Runs the test suites and prints one TAP stream per suite, then the line
# "N passed, N failed" summing every C test, busted spec and integration spec.
# Exits non-zero on any failure.
#
#   scripts/test.sh all|unit|spec|e2e|integration
#
# Integration specs run twice: against the embedded broker and against a real
# Apache Kafka broker started by scripts/kafka.sh (SLUICE_TEST_REAL_KAFKA=0
# skips the real-Kafka runs and says so: it then counts as a failure, never as
# a pass). Then spec/integration/realkafka_spec.lua runs once against a
# three-broker cluster (SLUICE_TEST_KAFKA3), killing and restarting brokers.
# A real MLflow scoring server (scripts/mlflow.sh) serves every integration
# run (SLUICE_TEST_MLFLOW); its contract spec, spec/integration/mlflow_spec.lua,
# runs once, as does spec/integration/testservers_spec.lua (the HTTP test
# servers of scripts/testservers/, no Kafka). A server or cluster that
# cannot start is a "not ok", never a skip.
# The browser tests (spec/e2e/: the widget against a fake read API, then the
# whole demo end to end) drive Debian's chromium with playwright-core, both
# installed by scripts/browser-deps.sh; where that fails they are "not ok".
# Brokers and the MLflow server this script started are stopped on exit,
# Ctrl-C included. Each part's wall time is printed as a "# time:" comment.
# Environment: SLUICE_BIN (the binary, default ./sluice),
# SLUICE_TEST_BUILD (build folder of the C tests, default build).
set -u
cd "$(dirname "$0")/.." || exit 1

BUILD=${SLUICE_TEST_BUILD:-build}
export SLUICE_BIN="${SLUICE_BIN:-$PWD/sluice}"
LOGDIR=$(mktemp -d)
what=${1:-all}
passed=0
failed=0
kafka_started=0
mlflow_started=0

# Stops what this script started; quiet, so that "N passed, N failed" stays
# the last line.
cleanup() {
    if [ "$kafka_started" = 1 ]; then scripts/kafka.sh stop >/dev/null 2>&1; kafka_started=0; fi
    if [ "$mlflow_started" = 1 ]; then scripts/mlflow.sh stop >/dev/null 2>&1; mlflow_started=0; fi
    rm -rf "$LOGDIR"
}
trap cleanup EXIT
trap 'echo "interrupted: stopping brokers and servers" >&2; exit 130' INT
trap 'exit 143' TERM HUP

fail() {
    echo "not ok - $*"
    failed=$((failed + 1))
}

# timed LABEL CMD...: runs CMD, then prints "# time: LABEL N s".
timed() {
    timed_label=$1; shift
    timed_t0=$(date +%s)
    "$@"
    echo "# time: $timed_label $(( $(date +%s) - timed_t0 )) s"
}

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
    if ! scripts/node-deps.sh >"$LOGDIR/node-deps.log" 2>&1; then
        sed 's/^/# /' "$LOGDIR/node-deps.log"
        fail "Node test tools could not be installed (scripts/node-deps.sh)"
    fi
    run_suite "busted:rules" busted -o TAP
}

# The bootstrap address of a fresh real Kafka cluster of $1 broker(s), or
# nothing (after a "not ok") when it cannot start.
start_kafka() {
    scripts/kafka.sh stop >/dev/null 2>&1
    kafka_started=1
    t0=$(date +%s)
    addr=$(scripts/kafka.sh start --brokers "$1" 2>"$LOGDIR/kafka-start.err" | tail -n 1)
    echo "# time: kafka.sh start --brokers $1 $(( $(date +%s) - t0 )) s"
    if [ -z "$addr" ] || ! scripts/kafka.sh status >/dev/null 2>&1; then
        sed 's/^/# /' "$LOGDIR/kafka-start.err"
        fail "real Kafka ($1 broker(s)) could not be started (scripts/kafka.sh start --brokers $1)"
        addr=
    fi
}

stop_kafka() {
    scripts/kafka.sh stop >/dev/null 2>&1
    kafka_started=0
}

# Starts the MLflow scoring server and exports SLUICE_TEST_MLFLOW.
start_mlflow() {
    mlflow_started=1
    url=$(scripts/mlflow.sh start 2>"$LOGDIR/mlflow-start.err" | tail -n 1)
    case "$url" in
        http://*) export SLUICE_TEST_MLFLOW="$url" ;;
        *)
            sed 's/^/# /' "$LOGDIR/mlflow-start.err"
            fail "MLflow scoring server could not be started (scripts/mlflow.sh start)"
            unset SLUICE_TEST_MLFLOW
            ;;
    esac
}

# busted over spec/integration/ for one Kafka flavour; the specs that run
# once (three brokers, the MLflow contract) are left out by name.
flavour() {
    run_suite "$1" busted -o TAP --run=integration \
        --exclude-pattern='^realkafka_spec' --exclude-pattern='^mlflow_spec' \
        --exclude-pattern='^testservers_spec'
}

kafka1() {
    start_kafka 1
    [ -n "$addr" ] || return
    SLUICE_TEST_KAFKA="$addr" flavour "integration:kafka"
    stop_kafka
}

kafka3() {
    start_kafka 3
    [ -n "$addr" ] || return
    SLUICE_TEST_KAFKA3="$addr" run_suite "integration:kafka-3-brokers" \
        busted -o TAP spec/integration/realkafka_spec.lua
    stop_kafka
}

# The HTTP test servers of scripts/testservers/ (no Kafka: once).
testservers() {
    run_suite "integration:testservers" busted -o TAP spec/integration/testservers_spec.lua
}

mlflow_contract() {
    [ -n "${SLUICE_TEST_MLFLOW:-}" ] || return
    run_suite "integration:mlflow" busted -o TAP spec/integration/mlflow_spec.lua
}

# Headless chromium: the widget against a fake read API, then `make demo`
# end to end (scripts/demo.sh, the real job). Screenshots in build/e2e/.
e2e() {
    if ! scripts/browser-deps.sh >"$LOGDIR/browser-deps.log" 2>&1; then
        sed 's/^/# /' "$LOGDIR/browser-deps.log"
        fail "chromium or the Node packages could not be installed (scripts/browser-deps.sh): browser tests not run"
        return
    fi
    run_suite "e2e:widget" node spec/e2e/widget.test.js
    run_suite "e2e:storefront" node spec/e2e/storefront.test.js
}

embedded() {
    SLUICE_TEST_KAFKA=embedded flavour "integration:embedded"
}

integration() {
    unset SLUICE_TEST_KAFKA3
    timed "MLflow server start" start_mlflow
    timed "integration:mlflow" mlflow_contract
    timed "integration:testservers" testservers
    timed "integration:embedded" embedded
    if [ "${SLUICE_TEST_REAL_KAFKA:-1}" = 0 ]; then
        fail "integration against real Kafka skipped (SLUICE_TEST_REAL_KAFKA=0)"
    else
        timed "integration:kafka (1 broker, start and stop included)" kafka1
        timed "integration:kafka-3-brokers (start and stop included)" kafka3
    fi
    if [ "$mlflow_started" = 1 ]; then
        scripts/mlflow.sh stop >/dev/null 2>&1
        mlflow_started=0
    fi
}

case "$what" in
    unit) unit ;;
    spec) spec ;;
    e2e) timed "e2e" e2e ;;
    integration) integration ;;
    all) unit; spec; timed "e2e" e2e; integration ;;
    *) echo "usage: scripts/test.sh all|unit|spec|e2e|integration" >&2; exit 2 ;;
esac

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
