#!/usr/bin/env bash
# Runs a real MLflow scoring server (`mlflow models serve`) on 127.0.0.1 with a
# small deterministic recommendation model (scripts/mlflow/model.py) that speaks
# the seed model's signature, for sluice's model-step specs.
# MLflow comes from PyPI into a virtualenv in .cache/mlflow/venv (pins in
# scripts/mlflow/requirements.txt); a second run installs nothing.
# Test infrastructure only: sluice itself never needs Python.
#
# Run `scripts/mlflow.sh --help` for the commands.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/scripts/mlflow"
CACHE="$ROOT/.cache/mlflow"
VENV="$CACHE/venv"
MODEL="$CACHE/model"
RUN="$CACHE/run"

: "${MLFLOW_PYTHON:=python3}"
: "${MLFLOW_WORKERS:=1}"
: "${MLFLOW_START_TIMEOUT:=90}"
: "${MLFLOW_STOP_TIMEOUT:=10}"

# no phoning home, no git probing from the server
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true GIT_PYTHON_REFRESH=quiet
export PYTHONDONTWRITEBYTECODE=1

usage() {
    cat <<'EOF'
usage: scripts/mlflow.sh COMMAND

A real MLflow scoring server on 127.0.0.1 serving scripts/mlflow/model.py
(deterministic recommendations from the seed inventory; the ranking rule is in
that file's docstring). State lives in .cache/mlflow/run/.

commands:
  start     create the virtualenv and the model if needed (PyPI, cached), start
            `mlflow models serve --env-manager local`, wait until /ping answers
            200 and print the base URL as the last line (http://127.0.0.1:PORT).
            If already running, print the URL and exit 0.
  stop      stop the server (TERM to its process group, KILL after a timeout)
  status    print the URL and exit 0 if running, else exit 1
  install   only create the virtualenv and save the model

Scoring: POST $URL/invocations, Content-Type: application/json, body
  {"dataframe_split": {"columns": ["userId","items","timestamps"],
                       "data": [["u1", ["shirt","jeans"], ["1795667676496", "1795667680000"]]]}}
or {"dataframe_records": [{"userId": "u1", "items": [...], "timestamps": [...]}]}
or {"inputs": [{"userId": "u1", "items": [...], "timestamps": [...]}]}
answer {"predictions": [{"itemIds": ["gid://shopify/Product/...", ...],
                         "preds": [0.952381, ...]}]}, one object per row.

environment:
  MLFLOW_PORT            port (default: a free port chosen at random)
  MLFLOW_WORKERS         uvicorn workers (default 1)
  MLFLOW_PYTHON          interpreter for the virtualenv (default python3)
  MLFLOW_START_TIMEOUT   seconds to wait for /ping (default 90)
  MLFLOW_STOP_TIMEOUT    seconds to wait after TERM before KILL (default 10)

Log: .cache/mlflow/run/server.log. Needs python3 (3.10+) with venv, and curl.
EOF
}

die() { echo "mlflow.sh: $*" >&2; exit 1; }
log() { echo "mlflow.sh: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

ensure_venv() {
    local want
    want="$(hash_of "$SRC/requirements.txt") $("$MLFLOW_PYTHON" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo none)"
    if [ -x "$VENV/bin/mlflow" ] && [ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    need "$MLFLOW_PYTHON" "install Python 3 (or set MLFLOW_PYTHON)"
    log "installing MLflow into .cache/mlflow/venv (first run only)"
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    if ! "$MLFLOW_PYTHON" -m venv "$VENV" >"$CACHE/install.log" 2>&1; then
        cat "$CACHE/install.log" >&2
        rm -rf "$VENV"
        die "could not create a virtualenv with $MLFLOW_PYTHON (Debian: apt-get install python3-venv)"
    fi
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            -r "$SRC/requirements.txt" >>"$CACHE/install.log" 2>&1; then
        tail -n 30 "$CACHE/install.log" >&2
        rm -rf "$VENV"
        die "pip could not install scripts/mlflow/requirements.txt (full log: $CACHE/install.log)"
    fi
    echo "$want" >"$VENV/.stamp"
}

ensure_model() {
    local want
    want=$(hash_of "$SRC/model.py" "$SRC/save_model.py" "$SRC/inventory.json" "$SRC/requirements.txt")
    if [ -f "$MODEL/MLmodel" ] && [ "$(cat "$CACHE/model.stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    log "saving the model into .cache/mlflow/model"
    if ! "$VENV/bin/python" "$SRC/save_model.py" "$MODEL" >"$CACHE/save_model.log" 2>&1; then
        cat "$CACHE/save_model.log" >&2
        rm -rf "$MODEL"
        die "saving the model failed"
    fi
    echo "$want" >"$CACHE/model.stamp"
}

port_used() {
    local hex
    hex=$(printf ':%04X ' "$1")
    grep -qi "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

free_port() {
    local p n=0
    while :; do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
        n=$((n + 1))
        [ $n -lt 1000 ] || die "no free TCP port found"
        port_used "$p" || { echo "$p"; return 0; }
    done
}

server_pid() { cat "$RUN/server.pid" 2>/dev/null || true; }

# Is the server's leading process alive (and ours, not a recycled pid)?
alive() {
    local pid
    pid=$(server_pid)
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "models serve -m $MODEL "
}

ping_ok() {
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1/ping" 2>/dev/null || true)" = 200 ]
}

cmd_start() {
    [ $# -eq 0 ] || die "start takes no arguments (see --help)"
    if alive && [ -f "$RUN/url" ] && ping_ok "$(cat "$RUN/url")"; then
        cat "$RUN/url"
        return 0
    fi
    if [ -d "$RUN" ]; then cmd_stop >/dev/null 2>&1 || true; fi
    need curl "run ./scripts/deps.sh (installs curl)"
    ensure_venv
    ensure_model

    local port url deadline
    if [ -n "${MLFLOW_PORT:-}" ]; then
        port=$MLFLOW_PORT
        port_used "$port" && die "port $port (MLFLOW_PORT) is in use"
    else
        port=$(free_port)
    fi
    url="http://127.0.0.1:$port"
    mkdir -p "$RUN"
    # own session and process group: `stop` signals the CLI and its uvicorn child
    PATH="$VENV/bin:$PATH" setsid "$VENV/bin/mlflow" models serve -m "$MODEL" \
        --env-manager local -h 127.0.0.1 -p "$port" -w "$MLFLOW_WORKERS" \
        >"$RUN/server.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/server.pid"
    echo "$url" >"$RUN/url"

    deadline=$(( $(date +%s) + MLFLOW_START_TIMEOUT ))
    until ping_ok "$url"; do
        if ! alive; then
            tail -n 30 "$RUN/server.log" >&2 || true
            cmd_stop >/dev/null 2>&1 || true
            die "the MLflow server exited during start"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 30 "$RUN/server.log" >&2 || true
            cmd_stop >/dev/null 2>&1 || true
            die "the MLflow server did not answer /ping within ${MLFLOW_START_TIMEOUT}s"
        fi
        sleep 0.3
    done
    log "MLflow $("$VENV/bin/python" -c 'import mlflow; print(mlflow.__version__)') serving $MODEL"
    echo "$url"
}

# PIDs of the processes in process group $1
group_pids() {
    ps -e -o pid=,pgid= | awk -v g="$1" '$2 == g { print $1 }'
}

cmd_stop() {
    [ -d "$RUN" ] || { log "not running"; return 0; }
    local pid deadline
    pid=$(server_pid)
    if [ -n "$pid" ] && alive; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        deadline=$(( $(date +%s) + MLFLOW_STOP_TIMEOUT ))
        while [ -n "$(group_pids "$pid")" ]; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                kill -KILL -- "-$pid" 2>/dev/null || true
            fi
            sleep 0.2
        done
    fi
    rm -rf "$RUN"
    log "stopped"
}

cmd_status() {
    alive && [ -f "$RUN/url" ] || return 1
    cat "$RUN/url"
}

# One start/stop/install at a time (parallel spec runners share the state).
lock() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
}

case "${1:-}" in
    start) shift; lock; cmd_start "$@" ;;
    stop) lock; cmd_stop ;;
    status) cmd_status ;;
    install) lock; ensure_venv; ensure_model; log "ready: $VENV, $MODEL" ;;
    -h|--help|help) usage ;;
    '') usage >&2; exit 2 ;;
    *) echo "mlflow.sh: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac
