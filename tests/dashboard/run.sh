#!/usr/bin/env bash
# The admin dashboard in a real browser: installs what the test needs when it is missing (Debian's
# chromium, playwright-core from npm into tests/dashboard/node_modules), builds farmgate when
# target/debug/farmgate is missing, then runs tests/dashboard/dashboard.test.mjs, which starts
# farmgate on free loopback ports, drives the dashboard in headless Chromium and saves a
# screenshot to target/dashboard.png. Run from anywhere; needs root for apt-get on a fresh machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

chromium_bin=/usr/bin/chromium
farmgate_bin="$repo/target/debug/farmgate"

# Node 20 or later (playwright-core needs it).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "error: the dashboard test needs Node.js 20 or later with npm" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "error: the dashboard test needs Node.js 20 or later, found $(node --version)" >&2
  exit 1
fi

# Chromium from Debian (playwright's own browser downloads are not used).
if [ ! -x "$chromium_bin" ]; then
  echo "dashboard: installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 1200 apt-get install -y -qq chromium >/dev/null
fi

# playwright-core, exactly as package-lock.json pins it.
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
  echo "dashboard: installing playwright-core"
  (cd "$here" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -x "$farmgate_bin" ]; then
  echo "dashboard: building farmgate"
  timeout 3000 cargo build
fi

# Scratch space for the config, plugin folder and browser profile; whatever the test started is
# ended here too, should it be stopped before it cleans up itself.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/farmgate-dashboard.XXXXXX")"
test_pid=""
cleanup() {
  if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
    kill "$test_pid" 2>/dev/null || true
    sleep 1
  fi
  if [ -f "$tmp/pids" ]; then
    while read -r pid; do
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        sleep 1
        kill -9 "$pid" 2>/dev/null || true
      fi
    done <"$tmp/pids"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "dashboard: running tests/dashboard/dashboard.test.mjs"
# In the background so that a signal to this script runs the cleanup at once.
DASHBOARD_TMP="$tmp" FARMGATE_BIN="$farmgate_bin" CHROMIUM="$chromium_bin" \
  timeout -k 10 240 node "$here/dashboard.test.mjs" &
test_pid=$!
status=0
wait "$test_pid" || status=$?
test_pid=""
exit "$status"
