#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time, then prints per target the
# executions, the time, the coverage (cov/ft from libFuzzer's last status line) and any crash
# artifact. Exits non-zero when a target found a crash (or failed to build or run).
#
#   fuzz/run.sh                      every target, 60 s each
#   FUZZ_SECONDS=300 fuzz/run.sh     longer
#   fuzz/run.sh translate_stream     only the named targets
#
# Stable toolchain: cargo-fuzz's default AddressSanitizer needs `-Zsanitizer`, i.e. nightly, so
# targets are built with `-s none` (SanitizerCoverage instrumentation only, which stable rustc
# accepts: `-Cpasses=sancov-module` and `-Cllvm-args`). Rust code is memory-safe without ASan;
# what is lost is detection of memory errors in C code, of which farmgate links none on these
# paths. Debug assertions and overflow checks are on (cargo-fuzz's default). Should a cargo-fuzz
# release ever pass a `-Z` flag with `-s none`, set FUZZ_BOOTSTRAP=1 to build with
# RUSTC_BOOTSTRAP=1 for the cargo-fuzz commands only.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config_parse translate_stream affinity_cookie rewrite_router framing_split)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || exit 1
fi

fuzz() {
    if [ "${FUZZ_BOOTSTRAP:-0}" = 1 ]; then
        RUSTC_BOOTSTRAP=1 cargo fuzz "$@"
    else
        cargo fuzz "$@"
    fi
}

fuzz build -s none || { echo "fuzz build failed" >&2; exit 1; }

mkdir -p logs
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    extra=()
    [ -f "dict/$t.dict" ] && extra+=("-dict=dict/$t.dict")
    # Room for the largest seed (the commented default config is about 11 KB).
    max_len=8192
    [ "$t" = config_parse ] && max_len=16384
    log="logs/$t.log"
    echo "== $t: ${seconds}s" >&2
    start=$(date +%s)
    # -max_total_time bounds the run; `timeout` only guards against a hang outside libFuzzer's
    # loop. New inputs go to corpus/$t (the first directory); seeds/ is only read.
    timeout --signal=INT --kill-after=30 $((seconds + 300)) \
        cargo fuzz run -s none "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -max_len="$max_len" "${extra[@]}" >"$log" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    line="$t: ${elapsed}s, ${execs:-?} execs (${rate:-?}/s), ${cov:-no coverage line}, ${corp:-}"
    if [ -n "$crash" ]; then
        case "$crash" in /*) ;; *) crash="fuzz/$crash" ;; esac
        line="$line, CRASH: $crash (log fuzz/$log)"
        status=1
    elif [ $rc -ne 0 ]; then
        line="$line, exit $rc (log fuzz/$log)"
        status=1
    fi
    summary+=("$line")
done

echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
exit $status
