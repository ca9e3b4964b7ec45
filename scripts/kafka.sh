#!/usr/bin/env bash
# Runs real Apache Kafka (KRaft, no ZooKeeper) on 127.0.0.1 for the integration
# specs: 1 node, or 3 nodes that are each broker + controller with a 3-voter
# quorum. The jars come from Maven Central through scripts/kafka-pom.xml and are
# cached in .cache/kafka/libs (Maven's repository in .cache/m2), so a clean clone
# needs only Java 17+, Maven and kcat, and a second run downloads nothing.
# Test infrastructure only: sluice itself never needs Java.
#
# Run `scripts/kafka.sh --help` for the commands.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
POM="$ROOT/scripts/kafka-pom.xml"
CACHE="$ROOT/.cache/kafka"
LIBS="$CACHE/libs"
RUN="$CACHE/run"
M2="$ROOT/.cache/m2"
STAMP="$LIBS/.pom.sha256"

: "${KAFKA_PARTITIONS:=4}"
: "${KAFKA_HEAP_OPTS:=-Xms128m -Xmx512m}"
: "${KAFKA_JVM_OPTS:=-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true}"
: "${KAFKA_START_TIMEOUT:=90}"
: "${KAFKA_STOP_TIMEOUT:=15}"

usage() {
    cat <<'EOF'
usage: scripts/kafka.sh COMMAND [ARGS]

Real Apache Kafka (KRaft mode) on 127.0.0.1 for tests. State lives in
.cache/kafka/run/, data in a temporary folder removed by `stop`.

commands:
  start [--brokers 1|3]   fetch the jars if needed (Maven Central, cached), format
                          storage, start the node(s), wait until every broker
                          answers, print the bootstrap address as the last line
                          (127.0.0.1:PORT[,...]). If already running, print the
                          address and exit 0.
  stop                    stop every node (TERM, then KILL after a timeout),
                          remove the temporary storage and the run state
  status                  print the bootstrap address and exit 0 if at least one
                          node runs (dead nodes are named on stderr), else exit 1
  kill-broker N           kill -9 node N (1..3), for failure specs
  restart-broker N        start node N again with its old storage and ports, and
                          wait until it has rejoined
  topic create NAME [--partitions N] [--replication-factor R] [--config K=V]...
  topic delete NAME
  topic describe [NAME]
  topic list              topic admin through Kafka's own TopicCommand
  group list
  group describe NAME     consumer groups, members and committed offsets/lag
                          through Kafka's own ConsumerGroupCommand
  fetch                   only fetch the jars into .cache/kafka/libs

environment:
  KAFKA_PORT              port of broker 1 (brokers 2 and 3 use the next two);
                          default: free ports chosen at random
  KAFKA_PARTITIONS        num.partitions for auto-created topics (default 4)
  KAFKA_REPLICATION_FACTOR default.replication.factor (default: number of brokers)
  KAFKA_MIN_INSYNC_REPLICAS min.insync.replicas (default 1)
  KAFKA_HEAP_OPTS         JVM heap per node (default "-Xms128m -Xmx512m")
  KAFKA_JVM_OPTS          other JVM options
  KAFKA_START_TIMEOUT     seconds to wait for the brokers (default 90)
  KAFKA_STOP_TIMEOUT      seconds to wait after TERM before KILL (default 15)

Logs: <storage dir>/node-N/server.log and node-N/stdout.log (the storage dir is
in .cache/kafka/run/dir). Needs java 17+, mvn (first run only) and kcat
(./scripts/deps.sh installs kcat).
EOF
}

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# ---------------------------------------------------------------- jars

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

fetch_jars() {
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(pom_hash)" ] \
        && ls "$LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then
        return 0
    fi
    need mvn "install Maven (apt-get install maven) to fetch the Kafka jars"
    need java "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"
    log "fetching Apache Kafka jars from Maven Central into .cache/kafka/libs (first run only)"
    rm -rf "$LIBS.tmp"
    mkdir -p "$LIBS.tmp" "$M2"
    if ! mvn -q -B -f "$POM" -Dmaven.repo.local="$M2" \
            dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$LIBS.tmp" >"$CACHE/mvn.log" 2>&1; then
        tail -n 30 "$CACHE/mvn.log" >&2
        rm -rf "$LIBS.tmp"
        die "could not fetch the Kafka jars with Maven (full log: $CACHE/mvn.log)"
    fi
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    pom_hash >"$STAMP"
}

# ---------------------------------------------------------------- ports

# Is a TCP port bound on this machine (any state, v4 or v6)?
port_used() {
    local hex
    hex=$(printf ':%04X ' "$1")
    grep -qi "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

PICKED=" "
free_port() {
    local p n=0
    while :; do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
        n=$((n + 1))
        [ $n -lt 1000 ] || die "no free TCP port found"
        case "$PICKED" in *" $p "*) continue ;; esac
        port_used "$p" && continue
        PICKED="$PICKED$p "
        echo "$p"
        return 0
    done
}

# ---------------------------------------------------------------- state

node_pid() { cat "$RUN/node-$1.pid" 2>/dev/null || true; }

# Is node N's JVM alive (and really ours, not a recycled pid)?
node_alive() {
    local pid
    pid=$(node_pid "$1")
    [ -n "$pid" ] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $(cat "$RUN/dir")/node-$1/server.properties"
}

nodes() { cat "$RUN/brokers" 2>/dev/null || echo 0; }

any_alive() {
    local i n
    n=$(nodes)
    for i in $(seq 1 "$n"); do node_alive "$i" && return 0; done
    return 1
}

# ---------------------------------------------------------------- config

write_log_config() {
    cat >"$1/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $1/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

write_tools_log_config() {
    cat >"$1/tools-log4j2.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
EOF
}

# write_node_config DIR N BROKER_PORT CONTROLLER_PORT VOTERS NODES
write_node_config() {
    local dir=$1 id=$2 port=$3 cport=$4 voters=$5 n=$6
    local rf=${KAFKA_REPLICATION_FACTOR:-$n}
    mkdir -p "$dir/node-$id/data"
    write_log_config "$dir/node-$id"
    cat >"$dir/node-$id/server.properties" <<EOF
# generated by scripts/kafka.sh
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/node-$id/data

auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=$KAFKA_PARTITIONS
default.replication.factor=$rf
min.insync.replicas=${KAFKA_MIN_INSYNC_REPLICAS:-1}
offsets.topic.replication.factor=$n
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$n
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=$n
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# small machine: few threads, quick failure detection for broker-kill specs
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=6000
controlled.shutdown.enable=true
EOF
}

# Starts node N from its generated config; the JVM gets its own session so
# the caller's terminal or process group signals do not reach it.
launch_node() {
    local dir id=$1
    dir=$(cat "$RUN/dir")
    # shellcheck disable=SC2086
    setsid java $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS \
        -Dlog4j2.configurationFile="$dir/node-$id/log4j2.properties" \
        -Dkafka.logs.dir="$dir/node-$id" \
        -cp "$LIBS/*" kafka.Kafka "$dir/node-$id/server.properties" \
        >"$dir/node-$id/stdout.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/node-$id.pid"
}

# ---------------------------------------------------------------- waiting

# Number of brokers the cluster's metadata lists, as seen through ADDR.
metadata_brokers() {
    kcat -b "$1" -L -m 3 -X socket.timeout.ms=2000 -X topic.metadata.refresh.interval.ms=-1 2>/dev/null \
        | sed -n 's/^ *\([0-9]*\) brokers:.*/\1/p' | head -n1
}

# wait_brokers ADDR WANT: until the metadata lists WANT brokers, all nodes live.
wait_brokers() {
    local addr=$1 want=$2 deadline got i n
    n=$(nodes)
    deadline=$(( $(date +%s) + KAFKA_START_TIMEOUT ))
    while :; do
        for i in $(seq 1 "$n"); do
            [ -f "$RUN/node-$i.killed" ] && continue
            if ! node_alive "$i"; then
                log "node $i exited during start; last lines of its logs:"
                tail -n 20 "$(cat "$RUN/dir")/node-$i/stdout.log" >&2 2>/dev/null || true
                tail -n 20 "$(cat "$RUN/dir")/node-$i/server.log" >&2 2>/dev/null || true
                return 1
            fi
        done
        got=$(metadata_brokers "$addr" || true)
        [ -n "$got" ] && [ "$got" -ge "$want" ] && return 0
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "brokers not ready after ${KAFKA_START_TIMEOUT}s (metadata lists ${got:-no} brokers, want $want)"
            return 1
        fi
        sleep 0.3
    done
}

# ---------------------------------------------------------------- commands

cmd_start() {
    local n=1
    while [ $# -gt 0 ]; do
        case "$1" in
            --brokers) [ $# -ge 2 ] || die "--brokers needs 1 or 3"; n=$2; shift 2 ;;
            --brokers=*) n=${1#--brokers=}; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "start: unknown argument '$1' (see --help)" ;;
        esac
    done
    case "$n" in 1|3) ;; *) die "--brokers must be 1 or 3, not '$n'" ;; esac

    if [ -f "$RUN/bootstrap" ] && any_alive; then
        if [ "$(nodes)" != "$n" ]; then
            log "already running with $(nodes) broker(s), not $n; run 'scripts/kafka.sh stop' first to change"
        fi
        cat "$RUN/bootstrap"
        return 0
    fi
    # stale state from a crash or a reboot: clean it up
    if [ -d "$RUN" ]; then cmd_stop >/dev/null 2>&1 || true; fi

    need java "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"
    need kcat "run ./scripts/deps.sh (installs kcat)"
    fetch_jars

    mkdir -p "$RUN"
    local dir i port cport voters="" bootstrap="" ports="" cports=""
    dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-kafka.XXXXXX")
    echo "$dir" >"$RUN/dir"
    echo "$n" >"$RUN/brokers"

    for i in $(seq 1 "$n"); do
        if [ -n "${KAFKA_PORT:-}" ]; then
            port=$((KAFKA_PORT + i - 1))
            port_used "$port" && { cmd_stop >/dev/null 2>&1 || true; die "port $port (KAFKA_PORT) is in use"; }
            PICKED="$PICKED$port "
        else
            port=$(free_port)
        fi
        ports="$ports $port"
    done
    for i in $(seq 1 "$n"); do
        cport=$(free_port)
        cports="$cports $cport"
        voters="$voters${voters:+,}$i@127.0.0.1:$cport"
    done
    for i in $(seq 1 "$n"); do
        port=$(echo "$ports" | cut -d' ' -f"$((i + 1))")
        cport=$(echo "$cports" | cut -d' ' -f"$((i + 1))")
        bootstrap="$bootstrap${bootstrap:+,}127.0.0.1:$port"
        write_node_config "$dir" "$i" "$port" "$cport" "$voters" "$n"
    done
    write_tools_log_config "$dir"

    # cluster id: 16 random bytes, base64url without padding (Kafka's Uuid
    # form). One in 64 starts with '-', which the storage tool's argument
    # parser takes for an option ("--cluster-id: expected one argument");
    # Kafka's own Uuid.randomUuid draws again then, and so do we.
    local cid="-"
    while [ "${cid#-}" != "$cid" ]; do
        cid=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    echo "$cid" >"$RUN/cluster-id"
    local pids="" failed=0
    for i in $(seq 1 "$n"); do
        java -Dlog4j2.configurationFile="$dir/tools-log4j2.properties" -cp "$LIBS/*" \
            kafka.tools.StorageTool format -t "$cid" -c "$dir/node-$i/server.properties" \
            >"$dir/node-$i/format.log" 2>&1 &
        pids="$pids $!"
    done
    for p in $pids; do wait "$p" || failed=1; done
    if [ $failed -ne 0 ]; then
        cat "$dir"/node-*/format.log >&2
        cmd_stop >/dev/null 2>&1 || true
        die "formatting the storage failed"
    fi

    for i in $(seq 1 "$n"); do launch_node "$i"; done
    echo "$bootstrap" >"$RUN/bootstrap"

    if ! wait_brokers "$bootstrap" "$n"; then
        # keep the logs for a look, stop the processes
        local keep
        keep=$(mktemp -d "${TMPDIR:-/tmp}/sluice-kafka-failed.XXXXXX")
        cp -r "$dir"/node-* "$keep"/ 2>/dev/null || true
        cmd_stop >/dev/null 2>&1 || true
        die "Kafka did not start (logs kept in $keep)"
    fi
    local version
    version=$(find "$LIBS" -name 'kafka_2.13-*.jar' | sed -n 's/.*kafka_2.13-\(.*\)\.jar$/\1/p')
    log "Kafka $version running, $n broker(s), storage $dir"
    echo "$bootstrap"
}

cmd_stop() {
    [ -d "$RUN" ] || { log "not running"; return 0; }
    local i n pid pids="" deadline dir
    n=$(nodes)
    for i in $(seq 1 "$n"); do
        if node_alive "$i"; then
            pid=$(node_pid "$i")
            kill -TERM "$pid" 2>/dev/null || true
            pids="$pids $pid"
        fi
    done
    deadline=$(( $(date +%s) + KAFKA_STOP_TIMEOUT ))
    for pid in $pids; do
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
            sleep 0.2
        done
    done
    dir=$(cat "$RUN/dir" 2>/dev/null || true)
    case "$dir" in
        */sluice-kafka.*) rm -rf "$dir" ;;
    esac
    rm -rf "$RUN"
    log "stopped"
}

cmd_status() {
    [ -f "$RUN/bootstrap" ] || return 1
    local i n dead=""
    n=$(nodes)
    for i in $(seq 1 "$n"); do node_alive "$i" || dead="$dead $i"; done
    if [ "$(echo "$dead" | wc -w)" -eq "$n" ]; then
        return 1
    fi
    [ -z "$dead" ] || log "node(s) not running:$dead"
    cat "$RUN/bootstrap"
}

node_arg() {
    local id=${1:-}
    [ -f "$RUN/bootstrap" ] || die "not running"
    case "$id" in ''|*[!0-9]*) die "give a node number 1..$(nodes)" ;; esac
    { [ "$id" -ge 1 ] && [ "$id" -le "$(nodes)" ]; } || die "node $id does not exist (1..$(nodes))"
    echo "$id"
}

cmd_kill_broker() {
    local id pid
    id=$(node_arg "${1:-}")
    node_alive "$id" || die "node $id is not running"
    pid=$(node_pid "$id")
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    touch "$RUN/node-$id.killed"
    log "killed node $id (pid $pid)"
}

cmd_restart_broker() {
    local id addr
    id=$(node_arg "${1:-}")
    node_alive "$id" && die "node $id is already running"
    launch_node "$id"
    rm -f "$RUN/node-$id.killed"
    addr=$(cut -d, -f"$id" "$RUN/bootstrap")
    # wait until the node answers itself and the cluster lists the live brokers
    if ! wait_brokers "$addr" "$(( $(nodes) - $(find "$RUN" -name 'node-*.killed' | wc -l) ))"; then
        die "node $id did not come back (logs in $(cat "$RUN/dir")/node-$id/)"
    fi
    log "node $id is back"
    cat "$RUN/bootstrap"
}

topic_tool() {
    local dir addr
    [ -f "$RUN/bootstrap" ] || die "not running; run 'scripts/kafka.sh start' first"
    dir=$(cat "$RUN/dir")
    addr=$(cat "$RUN/bootstrap")
    java -Dlog4j2.configurationFile="$dir/tools-log4j2.properties" -cp "$LIBS/*" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$addr" "$@"
}

cmd_topic() {
    local sub=${1:-}
    [ $# -gt 0 ] && shift
    case "$sub" in
        create)
            [ $# -ge 1 ] || die "topic create NAME [--partitions N] [--replication-factor R]"
            local name=$1; shift
            topic_tool --create --topic "$name" "$@" ;;
        delete)
            [ $# -ge 1 ] || die "topic delete NAME"
            local name=$1; shift
            topic_tool --delete --topic "$name" "$@" ;;
        describe)
            if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
                local name=$1; shift
                topic_tool --describe --topic "$name" "$@"
            else
                topic_tool --describe "$@"
            fi ;;
        list) topic_tool --list "$@" ;;
        *) die "topic: create|delete|describe|list (see --help)" ;;
    esac
}

cmd_group() {
    local sub=${1:-} dir addr
    [ $# -gt 0 ] && shift
    [ -f "$RUN/bootstrap" ] || die "not running; run 'scripts/kafka.sh start' first"
    dir=$(cat "$RUN/dir")
    addr=$(cat "$RUN/bootstrap")
    case "$sub" in
        list) set -- --list "$@" ;;
        describe)
            [ $# -ge 1 ] || die "group describe NAME"
            local name=$1; shift
            set -- --describe --group "$name" "$@" ;;
        *) die "group: list|describe NAME (see --help)" ;;
    esac
    java -Dlog4j2.configurationFile="$dir/tools-log4j2.properties" -cp "$LIBS/*" \
        org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
        --bootstrap-server "$addr" "$@"
}

# One start/stop/restart at a time (parallel spec runners share the state).
lock() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
}

case "${1:-}" in
    start) shift; lock; cmd_start "$@" ;;
    stop) lock; cmd_stop ;;
    status) cmd_status ;;
    kill-broker) shift; lock; cmd_kill_broker "$@" ;;
    restart-broker) shift; lock; cmd_restart_broker "$@" ;;
    topic) shift; cmd_topic "$@" ;;
    group) shift; cmd_group "$@" ;;
    fetch) mkdir -p "$CACHE"; fetch_jars; log "jars in $LIBS" ;;
    -h|--help|help) usage ;;
    '') usage >&2; exit 2 ;;
    *) echo "kafka.sh: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac
