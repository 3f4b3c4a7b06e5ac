#!/usr/bin/env bash
# Runs airlock's fuzz targets (fuzz/, cargo-fuzz + libFuzzer, nightly) for SECONDS each, one after
# the other, and prints per target: executions, coverage (cov/ft of libFuzzer's final stats line),
# corpus size, and crashes.
#
#   scripts/fuzz.sh [SECONDS]          # every target, SECONDS each (default 600)
#   FUZZ_TARGETS="scrub config_load" scripts/fuzz.sh 60
#
# What it needs: the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Inputs: the committed seeds fuzz/corpus/<target>/ and reproducers fuzz/regressions/<target>/
# (read only), plus a working corpus kept between runs in fuzz/target/work/<target>/ (where
# libFuzzer adds what it finds; not committed). Dictionaries: fuzz/dicts/<target>.dict.
# A crash is written to fuzz/artifacts/<target>/ and stops that target; the script goes on with
# the next one and exits 1 at the end if any target crashed (or failed to run).
# Logs: fuzz/target/logs/<target>.log. Build: release with debug assertions and overflow checks
# (-a), no sanitizer (-s none: the targets' own code forbids unsafe; the properties are assertions).
# Environment: FUZZ_TARGETS (default: all), FUZZ_JOBS (libFuzzer -jobs, default 1),
# FUZZ_TIMEOUT (seconds for one input before it counts as a hang, default 10).
set -euo pipefail

secs="${1:-600}"
case "$secs" in ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

all="sql_validate http_destination share_envelope mcp_request scrub config_load"
targets="${FUZZ_TARGETS:-$all}"
timeout_s="${FUZZ_TIMEOUT:-10}"
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR=never

# The heavy dependencies are optional features of the fuzz crate: build only what the chosen
# targets need.
features=""
for t in $targets; do
  case "$t" in
    sql_validate) features="$features sql" ;;
    http_destination) features="$features http" ;;
    mcp_request) features="$features mcp" ;;
    share_envelope|scrub|config_load) ;;
    *) echo "unknown fuzz target: $t (known: $all)" >&2; exit 2 ;;
  esac
done
features="$(echo $features | tr ' ' ',')"
flags=(--sanitizer none --debug-assertions --no-default-features)
[ -n "$features" ] && flags+=(--features "$features")

mkdir -p target/logs
start=$(date +%s)
for t in $targets; do
  cargo +nightly fuzz build "${flags[@]}" "$t"
done
echo "built in $(( $(date +%s) - start )) s: $targets"

rows=()
failed=0
for t in $targets; do
  work="target/work/$t"
  log="target/logs/$t.log"
  mkdir -p "$work" "artifacts/$t"
  seeds=("corpus/$t")
  [ -d "regressions/$t" ] && seeds+=("regressions/$t")
  extra=()
  [ -f "dicts/$t.dict" ] && extra+=("-dict=dicts/$t.dict")
  [ "${FUZZ_JOBS:-1}" != 1 ] && extra+=("-jobs=$FUZZ_JOBS" "-workers=$FUZZ_JOBS")
  before="$(ls "artifacts/$t" | sort)"
  t0=$(date +%s)
  status=0
  cargo +nightly fuzz run "${flags[@]}" "$t" "$work" "${seeds[@]}" -- \
    -max_total_time="$secs" -timeout="$timeout_s" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || status=$?
  took=$(( $(date +%s) - t0 ))
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
  final="$(grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse|INITED)' "$log" | tail -1 || true)"
  cov="$(echo "$final" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || true)"
  ft="$(echo "$final" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || true)"
  corp="$(echo "$final" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*' || true)"
  rate="$(echo "$final" | grep -o 'exec/s: [0-9]*' | grep -o '[0-9]*' || true)"
  new="$(comm -13 <(echo "$before") <(ls "artifacts/$t" | sort) | grep -E '^(crash|oom|timeout|leak|slow-unit)-' || true)"
  crashes="$(echo -n "$new" | grep -c . || true)"
  if [ "$status" != 0 ] && [ "$crashes" = 0 ]; then
    crashes="?"
  fi
  if [ "$status" != 0 ] || [ "$crashes" != 0 ]; then
    failed=1
    echo "== $t: exit $status; log $root/fuzz/$log"
    grep -E "panicked at|property|ERROR: libFuzzer|SUMMARY" "$log" | head -8 || true
    for a in $new; do
      echo "   reproducer: fuzz/artifacts/$t/$a"
      echo "   replay:     cd fuzz && cargo +nightly fuzz run ${flags[*]} $t artifacts/$t/$a"
    done
  fi
  rows+=("$(printf '%-17s %6s %12s %8s %7s %8s %7s %8s' "$t" "$took" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes")")
done

echo
echo "fuzz run: $secs s per target (scripts/fuzz.sh $secs), $(date -u +%Y-%m-%dT%H:%MZ), $(cargo +nightly --version)"
printf '%-17s %6s %12s %8s %7s %8s %7s %8s\n' target secs executions exec/s cov ft corpus crashes
for r in "${rows[@]}"; do echo "$r"; done
exit "$failed"
