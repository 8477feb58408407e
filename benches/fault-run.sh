#!/usr/bin/env bash
# Fault run, the long version: the `faults` integration test (tests/proxy/faults.rs) built in
# release and run with long sizes. The real farmgate binary serves a farm of three members on
# loopback under a steady keep-alive load while members are killed and restarted, one plugin file
# is replaced again and again, the config is rewritten and reloaded through the admin API, and
# hostile plugins (a loop, a panic, an allocation without end) come and go. The client counts
# failed requests (there must be none) and the proxy's RSS after the churn must be within 10 % of
# where it was after the warm-up. The short version runs in the test suite (`cargo test`).
#
# Environment (the defaults are the long run; the test's own defaults are the CI sizes):
#   FAULT_PLUGIN_SWAPS  replacements of the plugin file (default 100)
#   FAULT_RELOADS       config reloads (default 20)
#   FAULT_KILLS         member kills and restarts, taking the three members in turn (default 12)
#   FAULT_CLIENTS       concurrent keep-alive clients (default 8)
#   FAULT_SOAK_SECS     seconds the load keeps going after the churn (default 60)
#
# Usage: bash benches/fault-run.sh
set -euo pipefail

export FAULT_PLUGIN_SWAPS="${FAULT_PLUGIN_SWAPS:-100}"
export FAULT_RELOADS="${FAULT_RELOADS:-20}"
export FAULT_KILLS="${FAULT_KILLS:-12}"
export FAULT_CLIENTS="${FAULT_CLIENTS:-8}"
export FAULT_SOAK_SECS="${FAULT_SOAK_SECS:-60}"

for v in FAULT_PLUGIN_SWAPS FAULT_RELOADS FAULT_KILLS FAULT_CLIENTS FAULT_SOAK_SECS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then
        echo "error: $v must be a non-negative integer, got '${!v}'" >&2
        exit 2
    fi
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== building the proxy test binary and farmgate in release (when not up to date)" >&2
cargo test --release --test proxy --no-run

echo "== fault run: $FAULT_PLUGIN_SWAPS plugin swaps, $FAULT_RELOADS reloads, $FAULT_KILLS member kills, $FAULT_CLIENTS clients, ${FAULT_SOAK_SECS} s of load after the churn" >&2
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
start=$SECONDS
status=0
cargo test --release --test proxy -- faults::faults --exact --nocapture 2>&1 | tee "$out" || status=$?
elapsed=$((SECONDS - start))

echo
echo "== figures"
grep '^fault run:' "$out" || echo "(the test printed no figures)"
if [[ $status -eq 0 ]]; then
    echo "fault run passed in ${elapsed} s"
else
    echo "fault run FAILED (exit $status) after ${elapsed} s"
fi
exit "$status"
