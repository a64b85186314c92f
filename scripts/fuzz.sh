#!/usr/bin/env bash
# Runs the libFuzzer targets built by `make fuzz-build` (docs/reliability.md):
#
#   FUZZ_SECONDS=60 FUZZ_JOBS=2 scripts/fuzz.sh [TARGET...]     # default: every target
#
# Each target runs FUZZ_SECONDS in fork mode (FUZZ_JOBS jobs, crashes do not
# stop it: -ignore_crashes=1) on its corpus in fuzz/corpus/<target>/, which
# it extends in place. Every crash, leak, timeout (> 10 s) or out-of-memory
# input is minimized and copied to fuzz/regressions/<target>/, where `make
# test` replays it: fix the bug, then commit the input with the fix. The
# log of each target is FUZZ_LOG_DIR/<target>.log (default FUZZ_DIR/logs);
# the summary printed at the end is libFuzzer's final status line per target
# (runs, cov, ft, corpus). Relative FUZZ_DIR / FUZZ_LOG_DIR are taken from
# the repository root (PERMDNN_ROOT, default: this script's parent folder).
set -euo pipefail

root=${PERMDNN_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
fuzz_dir=${FUZZ_DIR:-build/fuzz}
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(onnx onnx_struct onnx_tools npy idx run_dir train_from sim_config sim_tech text)
log_dir=${FUZZ_LOG_DIR:-$fuzz_dir/logs}
mkdir -p "$log_dir"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

max_len() {
  case "$1" in
    onnx|npy|sim_config|text) echo 4096 ;;
    train_from) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

found_total=0
summary=()
for t in "${targets[@]}"; do
  bin="$fuzz_dir/fuzz/permdnn_fuzz_$t"
  [[ -x "$bin" ]] || { echo "fuzz.sh: $bin is missing (make fuzz-build)" >&2; exit 2; }
  corpus="$root/fuzz/corpus/$t"
  artifacts="$fuzz_dir/artifacts/$t"
  regressions="$root/fuzz/regressions/$t"
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  extra=()
  [[ "$t" == onnx_struct || "$t" == onnx_tools ]] && extra=("$root/fuzz/corpus/onnx")  # seeds, read only
  dict=()
  [[ -f "$root/fuzz/dicts/$t.dict" ]] && dict=("-dict=$root/fuzz/dicts/$t.dict")
  log="$log_dir/$t.log"
  echo "fuzz.sh: $t for ${seconds}s, $jobs jobs (log $log)"
  "$bin" -fork="$jobs" -ignore_crashes=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len="$(max_len "$t")" -print_funcs=0 -artifact_prefix="$artifacts/" "${dict[@]}" "$corpus" "${extra[@]}" \
    > "$log" 2>&1 || echo "fuzz.sh: $t: libFuzzer exited with status $? (see $log)"
  stats=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)
  # Keep the corpus small in the tree: the subset that covers the same.
  merged="$fuzz_dir/merged/$t"
  rm -rf "$merged" && mkdir -p "$merged"
  if "$bin" -merge=1 -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" "$merged" "$corpus" >> "$log" 2>&1 \
     && [[ -n "$(ls -A "$merged")" ]]; then
    rm -rf "$corpus" && mv "$merged" "$corpus"
  fi
  found=0
  declare -A seen=()
  while IFS= read -r a; do
    [[ -n "$a" ]] || continue
    # One input per distinct failure: the sanitizer's SUMMARY line (file and
    # line of the fault), or libFuzzer's kind for leaks, timeouts, OOMs.
    sig=$( ("$bin" -runs=1 -timeout=10 -rss_limit_mb=2048 "$a" 2>&1 || true) \
            | grep -m1 -E '^SUMMARY:|what\(\):|ERROR: libFuzzer: (timeout|out-of-memory|deadly signal)' || true)
    sig=${sig%% in *}
    [[ -n "$sig" ]] || sig="${a##*/}"
    if [[ -n "${seen[$sig]:-}" ]]; then continue; fi
    seen[$sig]=1
    echo "fuzz.sh: $t: $sig" | tee -a "$log"
    mkdir -p "$regressions"
    name=$(basename "$a")
    # Shrink it; inputs that do not reproduce alone (a timeout under load)
    # are kept as they are.
    if ! "$bin" -minimize_crash=1 -runs=20000 -max_total_time=120 -timeout=10 -rss_limit_mb=2048 \
         -exact_artifact_path="$regressions/$name" "$a" >> "$log" 2>&1 || [[ ! -s "$regressions/$name" ]]; then
      cp "$a" "$regressions/$name"
    fi
    echo "fuzz.sh: $t: NEW $regressions/$name"
    found=$((found + 1))
  done < <(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) \
             | sort)
  summary+=("$t: ${stats:-no status line}; corpus $(find "$corpus" -type f | wc -l) files; new crash inputs: $found")
  unset seen
  found_total=$((found_total + found))
done
printf '%s\n' "${summary[@]}"
[[ $found_total -eq 0 ]] || { echo "fuzz.sh: $found_total crashing inputs in fuzz/regressions/: fix them" >&2; exit 1; }
