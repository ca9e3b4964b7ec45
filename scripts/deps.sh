#!/bin/sh
# Installs the Debian packages sluice needs to build and test, skipping those
# already present. Run as root (or with sudo available). Idempotent.
#
#   scripts/deps.sh          what `make`, `make test` and `make run` need
#   scripts/deps.sh bench    also what `make bench` compares sluice with: the
#                            plain Python consumer's confluent-kafka (bench/)
set -eu

PKGS="pkg-config libluajit-5.1-dev luajit librdkafka-dev libevent-dev
libcurl4-openssl-dev libssl-dev lua-cjson lua-busted lua-check kcat wrk curl cppcheck
clang libclang-rt-14-dev libhiredis-dev redis-server"
case "${1:-}" in
'') ;;
bench) PKGS="$PKGS python3 python3-confluent-kafka" ;;
*) echo "deps.sh: unknown argument '$1' (none, or bench)" >&2; exit 2 ;;
esac

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
# Node and npm (test tools, scripts/node-deps.sh) by command, not by package:
# NodeSource's nodejs package brings its own npm, Debian's needs the npm one.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

echo "deps.sh: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || true
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
