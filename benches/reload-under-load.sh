#!/usr/bin/env bash
# How long a plugin's new settings take to take effect while the machine is busy: farmgate (the
# debug or release binary, whichever is given) serves a sample member through the test router
# plugin under a steady wrk load, with CPU burners beside it; the config file is rewritten
# (write, then rename) to flip the plugin's `strip` setting, and the time until a request shows
# the new behaviour is measured, ROUNDS times. Prints each round and the median and maximum.
# The aim is at most 1 s; a figure is worth quoting only with the load it was taken under.
#
# Environment:
#   FARMGATE_BIN  the binary (default target/release/farmgate, else target/debug/farmgate)
#   ROUNDS        settings flips (default 10)
#   BURNERS       busy-loop processes beside the load (default 4)
#   CONNECTIONS   wrk connections (default 32)
#
# Usage: bash benches/reload-under-load.sh   (needs wrk and curl; run `cargo build` first)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${FARMGATE_BIN:-}"
if [[ -z "$bin" ]]; then
    bin=target/release/farmgate
    [[ -x "$bin" ]] || bin=target/debug/farmgate
fi
rounds="${ROUNDS:-10}"
burners="${BURNERS:-4}"
conns="${CONNECTIONS:-32}"
guest="$(ls -t target/*/build/farmgate-*/out/guests/wasm32-wasip2/release/test_router_v2.wasm 2>/dev/null | head -1)"
for need in "$bin" "$guest"; do
    [[ -n "$need" && -e "$need" ]] || { echo "error: missing $need; run cargo build first" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "error: wrk is needed" >&2; exit 2; }

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
web=$(free_port); member=$(free_port)
mkdir "$tmp/plugins.d"
cp "$guest" "$tmp/plugins.d/router.wasm"
config() {
    cat >"$tmp/farmgate.toml.partial" <<EOF
[access_log]
format = "off"
[plugins]
dir = "plugins.d"
[plugins.config.router]
settings = { farm = "main", strip = $1 }
[[listeners]]
name = "web"
bind = "127.0.0.1:$web"
[[rules]]
name = "site"
public_names = ["*"]
farm = "main"
[[farms]]
name = "main"
members = [{ name = "m", host = "127.0.0.1", port = $member }]
[[sample_servers]]
name = "m"
bind = "127.0.0.1:$member"
EOF
    mv "$tmp/farmgate.toml.partial" "$tmp/farmgate.toml"
}
config false
"$bin" --log-level warn run --config "$tmp/farmgate.toml" >"$tmp/log" 2>&1 &
pids+=($!)
url="http://127.0.0.1:$web/v2/x"
for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
curl -sf "$url" >/dev/null || { echo "error: farmgate did not start:" >&2; cat "$tmp/log" >&2; exit 1; }

for _ in $(seq "$burners"); do (while :; do :; done) & pids+=($!); done
wrk -t2 -c"$conns" -d1h "http://127.0.0.1:$web/" >/dev/null 2>&1 &
pids+=($!)
sleep 2

# With strip = true the member is asked for /x, else for /v2/x; its page says which.
times=()
strip=false
for r in $(seq "$rounds"); do
    if [[ $strip == false ]]; then strip=true; want="/x"; else strip=false; want="/v2/x"; fi
    start=$(date +%s%N)
    config "$strip"
    for _ in $(seq 3000); do
        curl -s "$url" | grep -qF "asked for <code>$want</code>" && break
        sleep 0.005
    done
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    times+=("$ms")
    echo "round $r: strip = $strip took effect after ${ms} ms (load average $(cut -d' ' -f1 /proc/loadavg))"
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "settings took effect: median ${sorted[$(( ${#sorted[@]} / 2 ))]} ms, max ${sorted[-1]} ms over $rounds rounds"
