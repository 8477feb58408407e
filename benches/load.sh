#!/usr/bin/env bash
# Load benchmark: farmgate, nginx and HAProxy, each with one worker, proxying the same static
# nginx backend on loopback, loaded in turn by wrk from this machine.
#
# Environment:
#   LOAD_DURATION     seconds of each measured run (default 10)
#   LOAD_CONNECTIONS  wrk connections (default 50)
#   LOAD_ROUNDS       rounds over the three proxies; the median of each figure is reported (default 1)
#   LOAD_WARMUP       seconds of the warm-up run before each measured run (default 2)
#
# Usage: bash benches/load.sh
set -euo pipefail

LOAD_DURATION="${LOAD_DURATION:-10}"
LOAD_CONNECTIONS="${LOAD_CONNECTIONS:-50}"
LOAD_ROUNDS="${LOAD_ROUNDS:-1}"
LOAD_WARMUP="${LOAD_WARMUP:-2}"
WRK_THREADS=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
TEMPLATES="$SCRIPT_DIR/load"
PROXIES=(farmgate nginx haproxy)

for v in LOAD_DURATION LOAD_CONNECTIONS LOAD_ROUNDS LOAD_WARMUP; do
    if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $v must be a positive integer, got '${!v}'" >&2
        exit 2
    fi
done

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes and cleanup
# ---------------------------------------------------------------------------------------------

WORKDIR=""
STARTED_PIDS=()
WRK_PID=""

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
    if [[ -n "$WRK_PID" ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
    fi
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

# Installs nginx, HAProxy and wrk from Debian packages when their commands are missing. Package
# services are kept from starting during the install.
install_missing() {
    export PATH="$PATH:/usr/sbin:/sbin"
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0

    log "installing ${missing[*]}"
    local sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if ((added_policy)); then
        "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
    fi
}

install_missing

log "building farmgate (release)"
(cd "$REPO_ROOT" && cargo build --release --bin farmgate --quiet)
FARMGATE="$REPO_ROOT/target/release/farmgate"
[[ -x "$FARMGATE" ]] || die "no binary at $FARMGATE"

CLK_TCK="$(getconf CLK_TCK)"
CORES="$(nproc)"

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

# Waits up to 10 s until a URL answers 200 with the backend's page; fails otherwise.
wait_ready() {
    local name="$1" url="$2" pid="$3" i code
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up; see its log in $WORKDIR"
        code="$(curl -s -o "$WORKDIR/check.body" -w '%{http_code}' --max-time 2 "$url" || true)"
        if [[ "$code" == 200 ]]; then
            cmp -s "$WORKDIR/check.body" "$TEMPLATES/index.html" ||
                die "$name answered 200 with a body that is not the backend's page"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer 200 at $url within 10 s (last status: ${code:-none})"
}

# Prints the CPU time, in clock ticks, that the given processes have used so far: utime + stime,
# fields 14 and 15 of /proc/PID/stat, which cover all threads of each process.
cpu_ticks() {
    local total=0 pid stat rest fields
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        rest="${stat##*) }"
        read -r -a fields <<<"$rest"
        # After the command name, field 3 (state) is index 0, so utime is 11 and stime 12.
        total=$((total + fields[11] + fields[12]))
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

# Prints the median of its arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2
    }'
}

# Prints a / b with the given number of decimals, or "n/a" when b is zero.
ratio() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.*f", d, a / b }'
}

# ---------------------------------------------------------------------------------------------
# Backend
# ---------------------------------------------------------------------------------------------

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/farmgate-load.XXXXXX")"
# nginx workers run as an unprivileged user when started by root, so they must be able to read
# the document root inside the temporary directory.
chmod 755 "$WORKDIR"
mkdir -p "$WORKDIR/docroot" "$WORKDIR/backend-tmp" "$WORKDIR/nginx-proxy-tmp"
cp "$TEMPLATES/index.html" "$WORKDIR/docroot/index.html"
chmod 644 "$WORKDIR/docroot/index.html"

BACKEND_PORT="$(free_port)"
render backend-nginx.conf "$WORKDIR/backend.conf" "$BACKEND_PORT"
nginx -p "$WORKDIR" -e "$WORKDIR/backend-error.log" -c "$WORKDIR/backend.conf" \
    >"$WORKDIR/backend.out" 2>&1 &
BACKEND_PID=$!
STARTED_PIDS+=("$BACKEND_PID")
wait_ready backend "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID"
log "backend nginx on 127.0.0.1:$BACKEND_PORT (pid $BACKEND_PID)"

# ---------------------------------------------------------------------------------------------
# Proxies
# ---------------------------------------------------------------------------------------------

PROXY_PID=""
PROXY_PORT=""

# Starts one proxy in front of the backend and waits until it serves the backend's page.
start_proxy() {
    local name="$1"
    PROXY_PORT="$(free_port)"
    case "$name" in
    farmgate)
        render farmgate.toml "$WORKDIR/farmgate.toml" "$PROXY_PORT"
        "$FARMGATE" --log-level warn run --config "$WORKDIR/farmgate.toml" \
            >"$WORKDIR/farmgate.out" 2>&1 &
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
    esac
    PROXY_PID=$!
    STARTED_PIDS+=("$PROXY_PID")
    wait_ready "$name" "http://127.0.0.1:$PROXY_PORT/" "$PROXY_PID"
}

# Prints the pids whose CPU time counts for the running proxy: the process itself and, for
# nginx, its worker processes.
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

# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------

# Runs wrk in the background and waits for it, so that an interrupt stops the benchmark at once.
run_wrk() {
    local status=0
    wrk "$@" &
    WRK_PID=$!
    wait "$WRK_PID" || status=$?
    WRK_PID=""
    return "$status"
}

# Results, keyed by "proxy,round".
declare -A RPS P99 CPU10K ERRS

# Loads the running proxy: a warm-up, then a measured run whose figures are stored for a round.
measure() {
    local name="$1" round="$2" url="http://127.0.0.1:$PROXY_PORT/"
    local out="$WORKDIR/wrk-$name-$round.txt"
    local pids before after

    run_wrk -t"$WRK_THREADS" -c"$LOAD_CONNECTIONS" -d"${LOAD_WARMUP}s" "$url" >/dev/null

    mapfile -t pids < <(proxy_pids)
    before="$(cpu_ticks "${pids[@]}")"
    run_wrk -t"$WRK_THREADS" -c"$LOAD_CONNECTIONS" -d"${LOAD_DURATION}s" --latency "$url" >"$out"
    after="$(cpu_ticks "${pids[@]}")"
    kill -0 "$PROXY_PID" 2>/dev/null || die "$name exited during the measured run; see $WORKDIR"

    local requests rps p99 non2xx sockerr
    requests="$(awk '/requests in/ { print $1; exit }' "$out")"
    rps="$(awk '/^Requests\/sec:/ { print $2; exit }' "$out")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$out")")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF; exit }' "$out")"
    sockerr="$(awk '/Socket errors:/ {
        gsub(",", ""); print $4 + $6 + $8 + $10; exit }' "$out")"
    [[ -n "$requests" && -n "$rps" ]] || die "could not read wrk's output for $name: $(cat "$out")"

    RPS[$name,$round]="$rps"
    P99[$name,$round]="$p99"
    CPU10K[$name,$round]="$(awk -v t="$((after - before))" -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.4f", (t / hz) / (n / 10000); else print "nan" }')"
    ERRS[$name,$round]="$((${non2xx:-0} + ${sockerr:-0}))"
    printf '  round %d  %-8s  %10.1f req/s  p99 %8.3f ms  cpu %.2f s  %s non-2xx/3xx  %s socket errors\n' \
        "$round" "$name" "$rps" "$p99" "$(ratio "$((after - before))" "$CLK_TCK" 2)" \
        "${non2xx:-0}" "${sockerr:-0}"
}

echo "farmgate load benchmark"
echo "  machine: $CORES cores; $(uname -sr)"
echo "  wrk: $WRK_THREADS thread, $LOAD_CONNECTIONS connections, ${LOAD_WARMUP} s warm-up, ${LOAD_DURATION} s measured, $LOAD_ROUNDS round(s)"
echo "  versions: $("$FARMGATE" --version 2>&1 | head -n1); $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(haproxy -v 2>&1 | head -n1 | awk '{ print "haproxy " $3 }'); $(wrk -v 2>&1 | head -n1 | awk '{ print $1 " " $2 }')"
echo "  backend: nginx, 1 worker, static page of $(wc -c <"$TEMPLATES/index.html") bytes"
echo

# Each round starts the proxies in a different order, so none always runs first or last.
for ((round = 1; round <= LOAD_ROUNDS; round++)); do
    for ((k = 0; k < ${#PROXIES[@]}; k++)); do
        name="${PROXIES[$(((round - 1 + k) % ${#PROXIES[@]}))]}"
        start_proxy "$name"
        measure "$name" "$round"
        stop_proxy
    done
done

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

declare -A MED_RPS MED_P99 MED_CPU SUM_ERRS
for name in "${PROXIES[@]}"; do
    r=() p=() c=() e=0
    for ((round = 1; round <= LOAD_ROUNDS; round++)); do
        r+=("${RPS[$name,$round]}")
        p+=("${P99[$name,$round]}")
        c+=("${CPU10K[$name,$round]}")
        e=$((e + ${ERRS[$name,$round]}))
    done
    MED_RPS[$name]="$(median "${r[@]}")"
    MED_P99[$name]="$(median "${p[@]}")"
    MED_CPU[$name]="$(median "${c[@]}")"
    SUM_ERRS[$name]="$e"
done

echo
if ((LOAD_ROUNDS > 1)); then
    echo "Results (median of $LOAD_ROUNDS rounds; errors summed over all rounds)"
else
    echo "Results"
fi
printf '  %-9s %12s %12s %22s %14s\n' proxy "req/s" "p99 (ms)" "CPU-s per 10k req" "errors"
for name in "${PROXIES[@]}"; do
    printf '  %-9s %12.1f %12.3f %22.4f %14s\n' "$name" "${MED_RPS[$name]}" "${MED_P99[$name]}" \
        "${MED_CPU[$name]}" "${SUM_ERRS[$name]}"
done
echo "  (errors: non-2xx/3xx responses plus socket errors, as wrk reports them)"
echo
echo "Ratios"
echo "  req/s            farmgate/nginx   $(ratio "${MED_RPS[farmgate]}" "${MED_RPS[nginx]}")"
echo "  req/s            farmgate/HAProxy $(ratio "${MED_RPS[farmgate]}" "${MED_RPS[haproxy]}")"
echo "  CPU per request  farmgate/nginx   $(ratio "${MED_CPU[farmgate]}" "${MED_CPU[nginx]}")"
echo "  CPU per request  farmgate/HAProxy $(ratio "${MED_CPU[farmgate]}" "${MED_CPU[haproxy]}")"
echo
echo "Machine: $CORES cores. Note: the machine is shared and the load generator runs on it, so these numbers are noisy."
