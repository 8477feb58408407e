#!/usr/bin/env bash
# Load benchmark: farmgate beside nginx and HAProxy, each with one worker, proxying the same static
# nginx member on loopback, measured side by side in one run (docs: DESIGN.md section 5).
#
# Four proxies in front of the one member:
#   nginx            one worker, keep-alive to the member, the forwarding headers farmgate sends
#   HAProxy          one thread, the same
#   farmgate plain   benches/load/farmgate.toml: plain proxying like the peers
#   farmgate TMG     benches/load/farmgate-tmg.toml: the TMG defaults the product ships: an
#                    internal site name (link translation runs on the text/html page, whose
#                    absolute links name it), cookie affinity, three member names that the
#                    [hosts] table maps to the one member
# The peers serve the same page untranslated; that difference is what the comparison shows.
#
# What it measures, per proxy:
#   1. Closed loop, in LOAD_ROUNDS interleaved rounds (each round starts the proxies in another
#      order): wrk -t1 -c$LOAD_CONNECTIONS after a warm-up. req/s and p99 as wrk reports them;
#      user and system CPU per request from utime and stime in /proc/PID/stat of the proxy (and
#      its children, for nginx's worker) over the measured run, divided by the requests wrk
#      counted; syscalls and context switches per request from
#      `perf stat -e raw_syscalls:sys_enter,context-switches -p PID` over the same run (n/a where
#      perf cannot count them; perf runs during the measured run, so its small per-syscall cost
#      is in every proxy's figures alike).
#   2. Open loop: p99 at a fixed rate, half the slowest proxy's median req/s from step 1 (or
#      LOAD_RATE), held by oha with latency correction (so a stall counts against every request
#      it delays), in LOAD_ROUNDS interleaved rounds.
#   3. Memory: RSS (VmRSS in /proc/PID/status, the proxy and its children summed) after start,
#      and with LOAD_IDLE_CLIENTS idle HTTP/1.1 keep-alive client connections open (each sent one
#      GET and read the response), and the difference. The client connections are then closed.
# Every figure is printed per round, then one table: medians with the [min-max] range over the
# rounds, and ratios to nginx.
#
# The machine is shared and noisy and the load generator runs on it: an absolute figure means
# little. Only ratios against the peers measured in the same run are worth quoting.
#
# It installs what is missing: nginx, HAProxy, wrk, curl, python3 and linux-perf from Debian
# packages, and oha from crates.io into target/bench-tools (only when no oha is on PATH). It
# starts only its own processes, stops them by PID, takes every port from the free-port helper
# and removes its temporary directory on exit.
#
# Environment:
#   LOAD_DURATION      seconds of each measured run (default 10)
#   LOAD_CONNECTIONS   client connections of wrk and oha (default 32)
#   LOAD_ROUNDS        interleaved rounds over the proxies; medians are reported (default 3)
#   LOAD_WARMUP        seconds of the warm-up run before each measured run (default 2)
#   LOAD_RATE          req/s of the open-loop run; 0 = half the slowest median req/s (default 0)
#   LOAD_IDLE_CLIENTS  idle keep-alive connections for the RSS figure; 0 skips it (default 1000)
#   LOAD_PERF          1 = count syscalls and context switches with perf when it can; 0 = don't
#                      (default 1)
#   LOAD_AFFINITY_COOKIE
#                      1 = every load request carries the farm's affinity cookie, as a browser's
#                      does after its first response, so farmgate TMG serves returning sessions;
#                      0 = none does, so it balances and sets the cookie on every response
#                      (default 1; the peers get the same requests and pass the cookie on)
#   CARGO_TARGET_DIR   where cargo builds the release farmgate measured (default target/)
#   LOAD_FARMGATE      a farmgate binary to measure as it is, instead of building one (to
#                      compare two builds of the same tree run by run)
#
# Usage: bash benches/load.sh
set -euo pipefail

LOAD_DURATION="${LOAD_DURATION:-10}"
LOAD_CONNECTIONS="${LOAD_CONNECTIONS:-32}"
LOAD_ROUNDS="${LOAD_ROUNDS:-3}"
LOAD_WARMUP="${LOAD_WARMUP:-2}"
LOAD_RATE="${LOAD_RATE:-0}"
LOAD_IDLE_CLIENTS="${LOAD_IDLE_CLIENTS:-1000}"
LOAD_PERF="${LOAD_PERF:-1}"
LOAD_AFFINITY_COOKIE="${LOAD_AFFINITY_COOKIE:-1}"
WRK_THREADS=1
OHA_VERSION=1.16.0
# The internal site name of farmgate-tmg.toml; the page's absolute links name it.
INTERNAL_SITE="intranet.bench.local"
# A fixed affinity key, so the cookie stays valid across the restarts of farmgate between runs.
AFFINITY_KEY="farmgate-load-benchmark-affinity-key"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
TEMPLATES="$SCRIPT_DIR/load"
PROXIES=(nginx haproxy farmgate farmgate-tmg)
declare -A LABEL=([nginx]="nginx" [haproxy]="HAProxy" [farmgate]="farmgate plain"
    [farmgate-tmg]="farmgate TMG")

for v in LOAD_DURATION LOAD_CONNECTIONS LOAD_ROUNDS LOAD_WARMUP; do
    if ! [[ "${!v}" =~ ^[1-9][0-9]{0,5}$ ]]; then
        echo "error: $v must be a positive integer, got '${!v}'" >&2
        exit 2
    fi
done
for v in LOAD_RATE LOAD_IDLE_CLIENTS; do
    if ! [[ "${!v}" =~ ^(0|[1-9][0-9]{0,6})$ ]]; then
        echo "error: $v must be a non-negative integer, got '${!v}'" >&2
        exit 2
    fi
done
for v in LOAD_PERF LOAD_AFFINITY_COOKIE; do
    if ! [[ "${!v}" =~ ^[01]$ ]]; then
        echo "error: $v must be 0 or 1, got '${!v}'" >&2
        exit 2
    fi
done
if ((LOAD_IDLE_CLIENTS > 20000)); then
    echo "error: LOAD_IDLE_CLIENTS must be at most 20000, got $LOAD_IDLE_CLIENTS" >&2
    exit 2
fi

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes and cleanup
# ---------------------------------------------------------------------------------------------

WORKDIR=""
# Long-lived processes this script started (the member and the proxy of the moment).
STARTED_PIDS=()
# The load tool, perf and the idle-client script of the moment, each stopped on exit.
TOOL_PID=""
PERF_PID=""
IDLE_PID=""

# Prints the pids of the direct children of a process.
children_of() {
    local parent="$1" stat_file stat rest ppid
    for stat_file in /proc/[0-9]*/stat; do
        stat="$(cat "$stat_file" 2>/dev/null)" || continue
        rest="${stat##*) }"
        read -r _ ppid _ <<<"$rest"
        if [[ "$ppid" == "$parent" ]]; then
            stat_file="${stat_file#/proc/}"
            echo "${stat_file%/stat}"
        fi
    done
}

# Stops one process and its children: SIGTERM, then SIGKILL after 5 s.
stop_process() {
    local pid="$1" kids i p
    kill -0 "$pid" 2>/dev/null || return 0
    kids="$(children_of "$pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    for p in $pid $kids; do
        kill -KILL "$p" 2>/dev/null || true
    done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    local pid
    for pid in "$TOOL_PID" "$PERF_PID" "$IDLE_PID"; do
        [[ -n "$pid" ]] && stop_process "$pid"
    done
    for pid in "${STARTED_PIDS[@]}"; do
        stop_process "$pid"
    done
    if [[ -n "$WORKDIR" && -d "$WORKDIR" ]]; then
        rm -rf "$WORKDIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

SUDO=()
[[ "$(id -u)" == 0 ]] || SUDO=(sudo)

# Installs Debian packages; package services are kept from starting during the install.
apt_install() {
    log "installing $*"
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null
    if ((added_policy)); then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    fi
}

# Installs nginx, HAProxy, wrk, curl, python3 and perf from Debian packages when their commands
# are missing.
install_missing() {
    export PATH="$PATH:/usr/sbin:/sbin"
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    if ((LOAD_PERF)) && ! command -v perf >/dev/null; then
        missing+=(linux-perf)
    fi
    ((${#missing[@]} == 0)) && return 0
    apt_install "${missing[@]}"
}

# Sets OHA to an oha binary: the one on PATH, else the one in target/bench-tools, which is
# installed from crates.io when missing.
find_oha() {
    OHA="$(command -v oha || true)"
    [[ -n "$OHA" ]] && return 0
    local root="$REPO_ROOT/target/bench-tools"
    OHA="$root/bin/oha"
    if [[ ! -x "$OHA" ]]; then
        log "installing oha $OHA_VERSION from crates.io into $root (once; takes a few minutes)"
        cargo install --quiet --locked --root "$root" --version "$OHA_VERSION" oha ||
            die "could not install oha"
    fi
    [[ -x "$OHA" ]] || die "no oha at $OHA"
}

install_missing
find_oha

# perf is usable when it can count the syscall tracepoint and context switches of a command.
PERF_OK=0
PERF_NOTE="off (LOAD_PERF=0)"
if ((LOAD_PERF)); then
    if command -v perf >/dev/null &&
        perf stat -x, -e raw_syscalls:sys_enter,context-switches true 2>&1 >/dev/null |
        awk -F, '$3 == "raw_syscalls:sys_enter" && $1 ~ /^[0-9]+$/ { ok = 1 } END { exit !ok }'; then
        PERF_OK=1
        PERF_NOTE="$(perf --version 2>&1 | head -n1)"
    else
        PERF_NOTE="unusable here (\`perf stat -e raw_syscalls:sys_enter,context-switches true\` counts nothing)"
    fi
fi

if [[ -n "${LOAD_FARMGATE:-}" ]]; then
    FARMGATE="$LOAD_FARMGATE"
    log "measuring the farmgate binary $FARMGATE (not rebuilt)"
else
    log "building farmgate (release)"
    (cd "$REPO_ROOT" && cargo build --release --bin farmgate --quiet)
    FARMGATE="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/farmgate"
fi
[[ -x "$FARMGATE" ]] || die "no binary at $FARMGATE"

CLK_TCK="$(getconf CLK_TCK)"
CORES="$(nproc)"

# The idle clients, the proxies and the member each need a descriptor per connection.
if [[ "$(ulimit -n)" != unlimited ]] && (($(ulimit -n) < LOAD_IDLE_CLIENTS + 1024)); then
    ulimit -n "$((LOAD_IDLE_CLIENTS + 1024))" 2>/dev/null ||
        die "the open-file limit ($(ulimit -n)) is too low for $LOAD_IDLE_CLIENTS idle clients"
fi

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

# Prints a loopback TCP port in the ephemeral range that no socket is using.
free_port() {
    local lo hi port i
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    for ((i = 0; i < 200; i++)); do
        port=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
        if command -v ss >/dev/null; then
            [[ -z "$(ss -Htan "( sport = :$port )" 2>/dev/null)" ]] || continue
        elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        echo "$port"
        return 0
    done
    die "found no free port"
}

# Writes a template with @WORKDIR@, @DOCROOT@, @PORT@ and @BACKEND_PORT@ filled in.
render() {
    local template="$1" out="$2" port="$3"
    sed -e "s|@WORKDIR@|$WORKDIR|g" \
        -e "s|@DOCROOT@|$WORKDIR/docroot|g" \
        -e "s|@PORT@|$port|g" \
        -e "s|@BACKEND_PORT@|${BACKEND_PORT:-0}|g" \
        "$TEMPLATES/$template" >"$out"
}

# Waits up to 10 s until a URL answers 200 with the expected page; fails otherwise. The response
# headers are left in $WORKDIR/check.head.
wait_ready() {
    local name="$1" url="$2" pid="$3" expected="$4" i code
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up; see its log in $WORKDIR"
        code="$(curl -s -D "$WORKDIR/check.head" -o "$WORKDIR/check.body" -w '%{http_code}' \
            --max-time 2 "$url" || true)"
        if [[ "$code" == 200 ]]; then
            cmp -s "$WORKDIR/check.body" "$expected" ||
                die "$name answered 200 with a body that is not the expected page: $(diff "$expected" "$WORKDIR/check.body" | head -n 20)"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer 200 at $url within 10 s (last status: ${code:-none})"
}

# Prints the user and the system CPU time, in clock ticks, that the given processes have used so
# far: utime and stime, fields 14 and 15 of /proc/PID/stat, which cover all threads of each.
cpu_ticks() {
    local user=0 sys=0 pid stat rest fields
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        rest="${stat##*) }"
        read -r -a fields <<<"$rest"
        # After the command name, field 3 (state) is index 0, so utime is 11 and stime 12.
        user=$((user + fields[11]))
        sys=$((sys + fields[12]))
    done
    echo "$user $sys"
}

# Prints the summed VmRSS, in KiB, of the given processes.
rss_kib() {
    local total=0 pid kib
    for pid in "$@"; do
        kib="$(awk '$1 == "VmRSS:" { print $2; exit }' "/proc/$pid/status" 2>/dev/null)" || continue
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# Converts a wrk latency ("812.00us", "1.23ms", "1.05s") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "nan" }
    }'
}

# Prints the median, the minimum and the maximum of its arguments ("n/a" when any is n/a).
stats() {
    printf '%s\n' "$@" | sort -g | awk '
        $1 == "n/a" { na = 1 }
        { a[NR] = $1 }
        END {
            if (na || NR == 0) { print "n/a n/a n/a"; exit }
            m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            printf "%.6f %.6f %.6f\n", m, a[1], a[NR]
        }'
}

# Prints a / b with the given number of decimals, or "n/a" when b is zero or either is n/a.
ratio() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {
        if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.*f", d, a / b }'
}

# Prints a number with the given decimals, or n/a.
fmt() {
    awk -v v="$1" -v d="$2" 'BEGIN { if (v == "n/a") print "n/a"; else printf "%.*f", d, v }'
}

# Prints "median [min-max]" from the output of stats, with the given decimals; just the median
# when there is one round.
fmt_range() {
    local med min max
    read -r med min max <<<"$1"
    if [[ "$med" == n/a ]]; then
        echo "n/a"
    elif ((LOAD_ROUNDS == 1)); then
        fmt "$med" "$2"
    else
        echo "$(fmt "$med" "$2") [$(fmt "$min" "$2")-$(fmt "$max" "$2")]"
    fi
}

# Runs a load tool in the background and waits for it, so that an interrupt stops the benchmark
# at once.
run_tool() {
    local status=0
    "$@" &
    TOOL_PID=$!
    wait "$TOOL_PID" || status=$?
    TOOL_PID=""
    return "$status"
}

# ---------------------------------------------------------------------------------------------
# Member
# ---------------------------------------------------------------------------------------------

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/farmgate-load.XXXXXX")"
# nginx workers run as an unprivileged user when started by root, so they must be able to read
# the document root inside the temporary directory.
chmod 755 "$WORKDIR"
mkdir -p "$WORKDIR/docroot" "$WORKDIR/backend-tmp" "$WORKDIR/nginx-proxy-tmp"
cp "$TEMPLATES/index.html" "$WORKDIR/docroot/index.html"
chmod 644 "$WORKDIR/docroot/index.html"
grep -q "http://$INTERNAL_SITE/" "$TEMPLATES/index.html" ||
    die "the page has no absolute link to $INTERNAL_SITE, so link translation would not run"

BACKEND_PORT="$(free_port)"
render backend-nginx.conf "$WORKDIR/backend.conf" "$BACKEND_PORT"
nginx -p "$WORKDIR" -e "$WORKDIR/backend-error.log" -c "$WORKDIR/backend.conf" \
    >"$WORKDIR/backend.out" 2>&1 &
BACKEND_PID=$!
STARTED_PIDS+=("$BACKEND_PID")
wait_ready backend "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID" "$TEMPLATES/index.html"
log "backend nginx on 127.0.0.1:$BACKEND_PORT (pid $BACKEND_PID)"

# Both farmgate configs must pass `farmgate check` before anything is measured.
for config in farmgate.toml farmgate-tmg.toml; do
    render "$config" "$WORKDIR/check-$config" "$(free_port)"
    "$FARMGATE" check "$WORKDIR/check-$config" >"$WORKDIR/check-$config.out" 2>&1 ||
        die "farmgate check refused benches/load/$config:
$(cat "$WORKDIR/check-$config.out")"
done
log "farmgate check: farmgate.toml and farmgate-tmg.toml are valid"

# ---------------------------------------------------------------------------------------------
# Proxies
# ---------------------------------------------------------------------------------------------

PROXY_PID=""
PROXY_PORT=""
# Extra request headers of every load request (the affinity cookie, when asked for).
LOAD_HEADERS=()

# Starts one proxy in front of the member and waits until it serves the page (for farmgate TMG,
# the page with its links translated to the name the client used).
start_proxy() {
    local name="$1" expected="$TEMPLATES/index.html"
    PROXY_PORT="$(free_port)"
    case "$name" in
    farmgate | farmgate-tmg)
        render "$name.toml" "$WORKDIR/$name.toml" "$PROXY_PORT"
        FARMGATE_AFFINITY_KEY="$AFFINITY_KEY" "$FARMGATE" --log-level warn run \
            --config "$WORKDIR/$name.toml" >"$WORKDIR/$name.out" 2>&1 &
        ;;
    nginx)
        render proxy-nginx.conf "$WORKDIR/nginx-proxy.conf" "$PROXY_PORT"
        nginx -p "$WORKDIR" -e "$WORKDIR/nginx-proxy-error.log" -c "$WORKDIR/nginx-proxy.conf" \
            >"$WORKDIR/nginx-proxy.out" 2>&1 &
        ;;
    haproxy)
        render haproxy.cfg "$WORKDIR/haproxy.cfg" "$PROXY_PORT"
        haproxy -q -c -f "$WORKDIR/haproxy.cfg" >/dev/null ||
            die "HAProxy refused its config: $(haproxy -c -f "$WORKDIR/haproxy.cfg" 2>&1)"
        haproxy -db -f "$WORKDIR/haproxy.cfg" >"$WORKDIR/haproxy.out" 2>&1 &
        ;;
    *) die "unknown proxy $name" ;;
    esac
    PROXY_PID=$!
    STARTED_PIDS+=("$PROXY_PID")
    if [[ "$name" == farmgate-tmg ]]; then
        expected="$WORKDIR/expected-tmg.html"
        sed "s|http://$INTERNAL_SITE|http://127.0.0.1:$PROXY_PORT|g" "$TEMPLATES/index.html" \
            >"$expected"
    fi
    wait_ready "${LABEL[$name]}" "http://127.0.0.1:$PROXY_PORT/" "$PROXY_PID" "$expected"
}

# Prints the pids whose CPU time, syscalls and memory count for the running proxy: the process
# itself and, for nginx, its worker process.
proxy_pids() {
    echo "$PROXY_PID"
    children_of "$PROXY_PID"
}

stop_proxy() {
    local pid kept=()
    stop_process "$PROXY_PID"
    for pid in "${STARTED_PIDS[@]}"; do
        [[ "$pid" == "$PROXY_PID" ]] || kept+=("$pid")
    done
    STARTED_PIDS=("${kept[@]}")
    PROXY_PID=""
}

# farmgate TMG once before the rounds: its first response must pin the client with the affinity
# cookie; the cookie (valid across restarts, the key being fixed) is what the load sends.
start_proxy farmgate-tmg
AFFINITY_COOKIE="$(awk 'tolower($1) == "set-cookie:" && $2 ~ /^farmgate_affinity=/ {
    sub(/;.*/, "", $2); print $2; exit }' "$WORKDIR/check.head" | tr -d '\r')"
[[ -n "$AFFINITY_COOKIE" ]] ||
    die "farmgate TMG set no affinity cookie: $(cat "$WORKDIR/check.head")"
code="$(curl -s -o /dev/null -D "$WORKDIR/check.head" -w '%{http_code}' --max-time 2 \
    -H "Cookie: $AFFINITY_COOKIE" "http://127.0.0.1:$PROXY_PORT/" || true)"
[[ "$code" == 200 ]] || die "farmgate TMG answered $code to a request with its own cookie"
stop_proxy
if ((LOAD_AFFINITY_COOKIE)); then
    LOAD_HEADERS=(-H "Cookie: $AFFINITY_COOKIE")
fi

# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------

# Closed-loop results, keyed by "proxy,round".
declare -A RPS P99 USER_US SYS_US CPU_US SYSCALLS CTXSW ERRS
# Open-loop results, keyed by "proxy,round".
declare -A RATE_P99 RATE_GOT RATE_ERRS
# Memory, keyed by proxy.
declare -A RSS_START RSS_IDLE

# Starts perf counting syscalls and context switches of the given pids, into a file.
start_perf() {
    local out="$1" list
    shift
    list="$(IFS=,; echo "$*")"
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$list" -o "$out" \
        >/dev/null 2>&1 &
    PERF_PID=$!
    # perf attaches to every thread of the processes before it counts; give it the time.
    sleep 0.3
    kill -0 "$PERF_PID" 2>/dev/null || die "perf stat exited at start: $(cat "$out" 2>/dev/null)"
}

# Stops perf; it writes its counts when interrupted.
stop_perf() {
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
}

# Prints the count of one event from perf's CSV output, or n/a.
perf_count() {
    awk -F, -v e="$2" '$3 == e && $1 ~ /^[0-9]+$/ { print $1; found = 1; exit }
        END { if (!found) print "n/a" }' "$1"
}

# Loads the running proxy with wrk: a warm-up, then a measured run whose figures are stored for
# a round.
# shellcheck disable=SC2034 # the result arrays are read through stats_of's nameref
measure() {
    local name="$1" round="$2" url="http://127.0.0.1:$PROXY_PORT/"
    local out="$WORKDIR/wrk-$name-$round.txt" perf_out="$WORKDIR/perf-$name-$round.csv"
    local pids before after u0 s0 u1 s1

    run_tool wrk -t"$WRK_THREADS" -c"$LOAD_CONNECTIONS" -d"${LOAD_WARMUP}s" \
        "${LOAD_HEADERS[@]}" "$url" >/dev/null

    mapfile -t pids < <(proxy_pids)
    ((PERF_OK)) && start_perf "$perf_out" "${pids[@]}"
    before="$(cpu_ticks "${pids[@]}")"
    run_tool wrk -t"$WRK_THREADS" -c"$LOAD_CONNECTIONS" -d"${LOAD_DURATION}s" --latency \
        "${LOAD_HEADERS[@]}" "$url" >"$out"
    after="$(cpu_ticks "${pids[@]}")"
    ((PERF_OK)) && stop_perf
    kill -0 "$PROXY_PID" 2>/dev/null || die "$name exited during the measured run; see $WORKDIR"
    read -r u0 s0 <<<"$before"
    read -r u1 s1 <<<"$after"

    local requests rps p99 non2xx sockerr syscalls=n/a ctxsw=n/a
    requests="$(awk '/requests in/ { print $1; exit }' "$out")"
    rps="$(awk '/^Requests\/sec:/ { print $2; exit }' "$out")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$out")")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF; exit }' "$out")"
    sockerr="$(awk '/Socket errors:/ {
        gsub(",", ""); print $4 + $6 + $8 + $10; exit }' "$out")"
    [[ -n "$requests" && -n "$rps" ]] || die "could not read wrk's output for $name: $(cat "$out")"
    ((requests > 0)) || die "wrk completed no request through $name: $(cat "$out")"
    if ((PERF_OK)); then
        syscalls="$(perf_count "$perf_out" raw_syscalls:sys_enter)"
        ctxsw="$(perf_count "$perf_out" context-switches)"
    fi

    per_request() { # ticks or count -> per request (ticks to microseconds when $2 is "us")
        awk -v v="$1" -v n="$requests" -v hz="$CLK_TCK" -v unit="$2" 'BEGIN {
            if (v == "n/a") { print "n/a"; exit }
            if (unit == "us") v = v * 1e6 / hz
            printf "%.6f", v / n }'
    }
    RPS[$name,$round]="$rps"
    P99[$name,$round]="$p99"
    USER_US[$name,$round]="$(per_request "$((u1 - u0))" us)"
    SYS_US[$name,$round]="$(per_request "$((s1 - s0))" us)"
    CPU_US[$name,$round]="$(per_request "$((u1 - u0 + s1 - s0))" us)"
    SYSCALLS[$name,$round]="$(per_request "$syscalls" count)"
    CTXSW[$name,$round]="$(per_request "$ctxsw" count)"
    ERRS[$name,$round]="$((${non2xx:-0} + ${sockerr:-0}))"
    printf '  round %d  %-14s %9.0f req/s  p99 %7.3f ms  user %6.1f us/req  sys %6.1f us/req  syscalls %6s/req  ctx-sw %6s/req  %s errors\n' \
        "$round" "${LABEL[$name]}" "$rps" "$p99" "${USER_US[$name,$round]}" \
        "${SYS_US[$name,$round]}" "$(fmt "${SYSCALLS[$name,$round]}" 2)" \
        "$(fmt "${CTXSW[$name,$round]}" 3)" "${ERRS[$name,$round]}"
}

# Loads the running proxy at a fixed rate with oha (open loop): a warm-up with wrk, then the
# measured run whose p99 is stored for a round.
# shellcheck disable=SC2034 # the result arrays are read through stats_of's nameref
measure_rate() {
    local name="$1" round="$2" rate="$3" url="http://127.0.0.1:$PROXY_PORT/"
    local out="$WORKDIR/oha-$name-$round.json" fields

    run_tool wrk -t"$WRK_THREADS" -c"$LOAD_CONNECTIONS" -d"${LOAD_WARMUP}s" \
        "${LOAD_HEADERS[@]}" "$url" >/dev/null
    run_tool "$OHA" --no-tui --output-format json -c "$LOAD_CONNECTIONS" -q "$rate" \
        -z "${LOAD_DURATION}s" --latency-correction --wait-ongoing-requests-after-deadline \
        "${LOAD_HEADERS[@]}" "$url" >"$out" 2>"$WORKDIR/oha-$name-$round.err" ||
        die "oha failed against $name: $(cat "$WORKDIR/oha-$name-$round.err")"
    kill -0 "$PROXY_PID" 2>/dev/null || die "$name exited during the fixed-rate run; see $WORKDIR"

    # p99 in ms, achieved req/s, and failed requests: errors plus non-2xx answers.
    fields="$(python3 - "$out" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
p99 = d["latencyPercentiles"]["p99"]
ok = sum(n for code, n in d.get("statusCodeDistribution", {}).items() if str(code).startswith("2"))
bad = sum(n for code, n in d.get("statusCodeDistribution", {}).items() if not str(code).startswith("2"))
errors = sum(d.get("errorDistribution", {}).values())
print("%.6f %.3f %d %d" % ((p99 or 0) * 1000, d["summary"]["requestsPerSec"], bad + errors, ok))
EOF
    )" || die "could not read oha's output for $name: $(head -c 2000 "$out")"
    local p99 got errs ok
    read -r p99 got errs ok <<<"$fields"
    ((ok > 0)) || die "oha got no 2xx response from $name: $(head -c 2000 "$out")"
    RATE_P99[$name,$round]="$p99"
    RATE_GOT[$name,$round]="$got"
    RATE_ERRS[$name,$round]="$errs"
    printf '  round %d  %-14s %6d req/s asked, %9.1f held  p99 %7.3f ms  %s errors\n' \
        "$round" "${LABEL[$name]}" "$rate" "$got" "$p99" "$errs"
}

# Opens the idle clients against the running proxy and notes its RSS before and with them.
measure_rss() {
    local name="$1" line pids
    mapfile -t pids < <(proxy_pids)
    sleep 1
    RSS_START[$name]="$(rss_kib "${pids[@]}")"

    # The clients read their go-ahead from a FIFO and write their state to a file.
    local fifo="$WORKDIR/idle-$name.fifo" state="$WORKDIR/idle-$name.out" ctl i
    mkfifo "$fifo"
    : >"$state"
    python3 "$TEMPLATES/idle-clients.py" 127.0.0.1 "$PROXY_PORT" "$LOAD_IDLE_CLIENTS" \
        <"$fifo" >"$state" 2>"$WORKDIR/idle-$name.err" &
    IDLE_PID=$!
    exec {ctl}>"$fifo"
    for ((i = 0; i < 1200; i++)); do
        grep -q '^open ' "$state" && break
        kill -0 "$IDLE_PID" 2>/dev/null || break
        sleep 0.1
    done
    line="$(head -n1 "$state")"
    if [[ "$line" != "open $LOAD_IDLE_CLIENTS" ]]; then
        exec {ctl}>&-
        die "the idle clients could not all connect to ${LABEL[$name]}: $(cat "$WORKDIR/idle-$name.err")"
    fi
    sleep 1
    RSS_IDLE[$name]="$(rss_kib "${pids[@]}")"
    echo check >&"$ctl"
    exec {ctl}>&-
    wait "$IDLE_PID" || die "the idle clients failed: $(cat "$WORKDIR/idle-$name.err")"
    IDLE_PID=""
    line="$(sed -n 2p "$state")"
    [[ "$line" == "still-open $LOAD_IDLE_CLIENTS" ]] ||
        die "${LABEL[$name]} closed idle clients while RSS was read (${line:-no answer})"
    printf '  %-14s RSS %8.1f MiB at start, %8.1f MiB with %d idle clients: +%.1f MiB, %.1f KiB per client\n' \
        "${LABEL[$name]}" "$(ratio "${RSS_START[$name]}" 1024 3)" \
        "$(ratio "${RSS_IDLE[$name]}" 1024 3)" "$LOAD_IDLE_CLIENTS" \
        "$(ratio "$((RSS_IDLE[$name] - RSS_START[$name]))" 1024 3)" \
        "$(ratio "$((RSS_IDLE[$name] - RSS_START[$name]))" "$LOAD_IDLE_CLIENTS" 3)"
}

# Runs one pass over the proxies per round, each round starting at another proxy.
rounds() {
    local what="$1" round k name
    shift
    for ((round = 1; round <= LOAD_ROUNDS; round++)); do
        for ((k = 0; k < ${#PROXIES[@]}; k++)); do
            name="${PROXIES[$(((round - 1 + k) % ${#PROXIES[@]}))]}"
            start_proxy "$name"
            "$what" "$name" "$round" "$@"
            stop_proxy
        done
    done
}

echo "farmgate load benchmark"
echo "  machine: $CORES cores; $(uname -sr)"
echo "  versions: $("$FARMGATE" --version 2>&1 | head -n1); $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(haproxy -v 2>&1 | head -n1 | awk '{ print "haproxy " $3 }'); $(wrk -v 2>&1 | head -n1 | awk '{ print $1 " " $2 }'); $("$OHA" --version 2>&1 | head -n1)"
echo "  member: nginx, 1 worker, static text/html page of $(wc -c <"$TEMPLATES/index.html") bytes with $(grep -o "http://$INTERNAL_SITE/" "$TEMPLATES/index.html" | wc -l) absolute links to $INTERNAL_SITE"
echo "  load: $LOAD_CONNECTIONS connections, ${LOAD_WARMUP} s warm-up, ${LOAD_DURATION} s measured, $LOAD_ROUNDS interleaved round(s); affinity cookie sent: $( ((LOAD_AFFINITY_COOKIE)) && echo "yes ($AFFINITY_COOKIE)" || echo no)"
echo "  perf: $PERF_NOTE"
echo

echo "Closed loop: wrk -t$WRK_THREADS -c$LOAD_CONNECTIONS -d${LOAD_DURATION}s"
rounds measure

# Half the slowest proxy's median req/s, unless LOAD_RATE says otherwise.
declare -A MED_RPS
slowest=""
for name in "${PROXIES[@]}"; do
    r=()
    for ((round = 1; round <= LOAD_ROUNDS; round++)); do r+=("${RPS[$name,$round]}"); done
    read -r "MED_RPS[$name]" _ _ <<<"$(stats "${r[@]}")"
    if [[ -z "$slowest" ]] || awk -v a="${MED_RPS[$name]}" -v b="${MED_RPS[$slowest]}" 'BEGIN { exit !(a < b) }'; then
        slowest="$name"
    fi
done
if ((LOAD_RATE > 0)); then
    RATE="$LOAD_RATE"
    RATE_WHY="LOAD_RATE"
else
    RATE="$(awk -v r="${MED_RPS[$slowest]}" 'BEGIN { printf "%d", r / 2 }')"
    ((RATE > 0)) || RATE=1
    RATE_WHY="half of ${LABEL[$slowest]}'s median $(fmt "${MED_RPS[$slowest]}" 0) req/s, the slowest"
fi

echo
echo "Open loop: oha -c$LOAD_CONNECTIONS -q$RATE -z${LOAD_DURATION}s --latency-correction ($RATE_WHY)"
rounds measure_rate "$RATE"

if ((LOAD_IDLE_CLIENTS > 0)); then
    echo
    echo "Memory: $LOAD_IDLE_CLIENTS idle HTTP/1.1 keep-alive clients, each after one GET"
    for name in "${PROXIES[@]}"; do
        start_proxy "$name"
        measure_rss "$name"
        stop_proxy
    done
fi

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

# Prints stats over the rounds of one result array for one proxy.
stats_of() {
    local -n results="$1"
    local name="$2" values=() round
    for ((round = 1; round <= LOAD_ROUNDS; round++)); do values+=("${results[$name,$round]}"); done
    stats "${values[@]}"
}

COL=24
row() { # label, then one cell per proxy
    local label="$1" cell
    shift
    printf '  %-34s' "$label"
    for cell in "$@"; do printf ' %*s' "$COL" "$cell"; done
    printf '\n'
}

declare -A MED_CPU
for name in "${PROXIES[@]}"; do
    read -r "MED_CPU[$name]" _ _ <<<"$(stats_of CPU_US "$name")"
done

cells() { # a function printing one proxy's cell, called for each proxy
    local name out=()
    for name in "${PROXIES[@]}"; do out+=("$("$@" "$name")"); done
    row "${ROW_LABEL}" "${out[@]}"
}
cell_stats() { fmt_range "$(stats_of "$1" "$3")" "$2"; }
cell_errors() {
    local total=0 round
    for ((round = 1; round <= LOAD_ROUNDS; round++)); do
        total=$((total + ERRS[$1,$round] + RATE_ERRS[$1,$round]))
    done
    echo "$total"
}
cell_cpu_ratio() { ratio "${MED_CPU[$1]}" "${MED_CPU[nginx]}"; }
cell_rps_ratio() { ratio "${MED_RPS[$1]}" "${MED_RPS[nginx]}"; }
cell_rss() {
    case "$1" in
    start) ratio "${RSS_START[$2]}" 1024 1 ;;
    idle) ratio "${RSS_IDLE[$2]}" 1024 1 ;;
    diff) echo "+$(ratio "$((RSS_IDLE[$2] - RSS_START[$2]))" 1024 1) ($(ratio "$((RSS_IDLE[$2] - RSS_START[$2]))" "$LOAD_IDLE_CLIENTS" 1) KiB/client)" ;;
    esac
}

echo
if ((LOAD_ROUNDS > 1)); then
    echo "Results: median [min-max] of $LOAD_ROUNDS interleaved rounds; ratios of medians; errors summed"
else
    echo "Results: one round"
fi
header=()
for name in "${PROXIES[@]}"; do header+=("${LABEL[$name]}"); done
row "" "${header[@]}"
ROW_LABEL="req/s (wrk -c$LOAD_CONNECTIONS)"; cells cell_stats RPS 0
ROW_LABEL="p99 ms (wrk -c$LOAD_CONNECTIONS)"; cells cell_stats P99 3
ROW_LABEL="user CPU us/req"; cells cell_stats USER_US 1
ROW_LABEL="system CPU us/req"; cells cell_stats SYS_US 1
ROW_LABEL="CPU us/req (user+system)"; cells cell_stats CPU_US 1
ROW_LABEL="syscalls/req"; cells cell_stats SYSCALLS 2
ROW_LABEL="context switches/req"; cells cell_stats CTXSW 3
ROW_LABEL="CPU/req ratio to nginx"; cells cell_cpu_ratio
ROW_LABEL="req/s ratio to nginx"; cells cell_rps_ratio
ROW_LABEL="p99 ms at $RATE req/s (oha)"; cells cell_stats RATE_P99 3
ROW_LABEL="req/s held at that rate"; cells cell_stats RATE_GOT 0
ROW_LABEL="errors (wrk + oha)"; cells cell_errors
if ((LOAD_IDLE_CLIENTS > 0)); then
    ROW_LABEL="RSS MiB after start"; cells cell_rss start
    ROW_LABEL="RSS MiB, $LOAD_IDLE_CLIENTS idle clients"; cells cell_rss idle
    ROW_LABEL="RSS MiB difference"; cells cell_rss diff
fi
echo
echo "  req/s and p99 from wrk (closed loop); CPU from utime and stime in /proc/PID/stat; syscalls"
echo "  and context switches from perf stat over the measured run; all per request wrk counted."
((PERF_OK)) || echo "  syscalls and context switches are n/a: perf is $PERF_NOTE."
echo "  The fixed rate is open loop: oha holds $RATE req/s and corrects latency for coordinated"
echo "  omission. RSS is VmRSS of the process and its children. errors: non-2xx/3xx responses plus"
echo "  socket errors (wrk), failed or non-2xx requests (oha)."
echo "  Machine: $CORES cores, shared and noisy, load generator on the same machine: quote only the"
echo "  ratios to the peers measured in this run."
echo "  Took $SECONDS s."
