#!/bin/sh
# Installs what the browser tests need: Debian's chromium (the end-to-end and
# widget tests drive it with playwright-core through /usr/bin/chromium) and
# the npm packages of package-lock.json (scripts/node-deps.sh). Run as root
# (or with sudo available). Idempotent; exits non-zero, naming what is
# missing, when chromium cannot be installed: the browser tests then fail,
# they are never skipped.
set -eu
cd "$(dirname "$0")/.."

./scripts/node-deps.sh
if [ ! -x /usr/bin/chromium ]; then
    echo "browser-deps.sh: installing chromium (Debian package)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2 || true
    $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "browser-deps.sh: /usr/bin/chromium is missing after apt-get install chromium" >&2
    exit 1
fi
