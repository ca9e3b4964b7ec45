#!/bin/sh
# Installs the project's Node tools: node and npm (Debian packages, via
# scripts/deps.sh) when missing, then the npm packages of package-lock.json
# into node_modules/ (`npm ci`) when they are missing or older than the lock:
# graphql-js for scripts/graphql-check.js, the Snowplow browser tracker the
# demo storefront serves, playwright-core for the browser tests. sluice itself
# never needs Node. Idempotent; a second run installs nothing.
set -eu
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    ./scripts/deps.sh
fi
stamp=node_modules/.package-lock.json
need=0
for pkg in graphql @snowplow/browser-tracker playwright-core; do
    [ -f "node_modules/$pkg/package.json" ] || need=1
done
if [ "$need" = 1 ] || [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
    echo "node-deps.sh: npm ci (package-lock.json)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
fi
