#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, one at
# a time, and prints each one's executions, speed, corpus size and any crash.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # SECONDS defaults to 60
#   FUZZ_ARGS="-runs=10000000" scripts/fuzz.sh 600 config
#
# FUZZ_ARGS adds libFuzzer flags to every run. FUZZ_SANITIZER picks the
# sanitizer (default none: the code is safe Rust, and a run without one
# does several times more executions; `address` checks the dependencies'
# unsafe code too).
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Each corpus starts from the committed seeds in fuzz/corpus/<target>/ and
# keeps what a run adds there (git ignores it). A crash leaves its input in
# fuzz/artifacts/<target>/; the script then exits 1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi

# The same flags for the build and every run, so nothing is rebuilt:
# debug assertions on, so that an arithmetic overflow is a crash too.
common=(--debug-assertions --sanitizer "${FUZZ_SANITIZER:-none}")
build_flags=(+nightly fuzz build "${common[@]}")
run_flags=(+nightly fuzz run "${common[@]}")

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building the fuzz targets"
cargo "${build_flags[@]}"

logs="target/fuzz-logs"
mkdir -p "$logs"
failed=()
summary=()
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  log="$logs/$target.log"
  started=$(date +%s)
  status=0
  # One process, one thread: the machines are small and shared.
  # shellcheck disable=SC2086
  cargo "${run_flags[@]}" "$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  elapsed=$(($(date +%s) - started))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  corpus=$(find "corpus/$target" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    result="ok"
  else
    failed+=("$target")
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
    result="FAILED (exit $status${artifact:+, input in $artifact})"
    # The reason: libFuzzer's error line and the panic message.
    grep -E '^==[0-9]+== ERROR|panicked at|^SUMMARY' "$log" | head -n 5 | sed 's/^/  /' || true
  fi
  line="$target: ${runs:-?} executions in ${elapsed}s (${speed:-?} exec/s), corpus $corpus files: $result"
  echo "$line"
  summary+=("$line")
done

echo "== fuzzing summary (logs in fuzz/$logs)"
printf '%s\n' "${summary[@]}"
echo "fuzzing: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found a problem in: ${failed[*]}" >&2
  exit 1
fi
