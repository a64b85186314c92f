#!/usr/bin/env bash
# Regenerates the kernel tables of docs/benchmarks.md on this machine:
# runs `permdnn bench` (OpenBLAS at its best: OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE unset for this command alone) and splices its Markdown
# between the kernels:begin / kernels:end markers. Run on a quiet machine.
# One-thread rows are timed by process CPU time (--cpu-time), so time slices
# lost to other processes on a shared machine stay out of the medians;
# two-thread rows are wall clock. The grid runs three times (--rounds 3,
# 0.2 s per measurement and round) and each row is the median of its three
# round medians, so a burst of load lands in one round of every format. Extra
# arguments are passed to `permdnn bench` (options it sets itself, such as
# --min-time, cannot be given again).
# Then the simdtargets section: the FC goals of issue 14 on Alex-6/7 and
# VGG-6/7 under AVX2 and AVX3 (`--simd-target`), each target in a process of
# its own with OpenBLAS on the kernels of a CPU whose best target it is
# (`--blas-per-target`: AVX2 against OpenBLAS's Haswell sgemm, as on an
# AVX2-only machine), and the table of the fastest target per kernel and p.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/release}
PERMDNN=$BUILD_DIR/src/permdnn
mkdir -p "$BUILD_DIR"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PERMDNN" bench \
  --format permdiag,dense,csr,circulant,read --cpu-time --rounds 3 --min-time 0.6 "$@" \
  --json "$BUILD_DIR/bench.json" --markdown "$BUILD_DIR/bench-kernels.md"
python3 scripts/splice_section.py docs/benchmarks.md kernels "$BUILD_DIR/bench-kernels.md"
# Issue 14: the FC goals under every x86 target the CPU runs, and the fastest
# target per kernel and p (the table PreferredSimdTarget follows). Set
# PERMDNN_SIMD_TARGETS to change the list; targets this CPU lacks are skipped.
targets=${PERMDNN_SIMD_TARGETS:-avx2,avx3}
available=$("$PERMDNN" bench --layers 8x8 --simd-target none 2>&1 | sed -n 's/.*(available: \(.*\))/\1/p' | tr -d ' ' || true)
keep=""
IFS=, read -ra wanted <<< "$targets"
for t in "${wanted[@]}"; do
  if [[ ",${available^^}," == *",${t^^},"* ]]; then keep+="${keep:+,}$t"; fi
done
if [[ "$keep" == *,* ]]; then
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PERMDNN" bench --layers Alex-6,Alex-7,VGG-6,VGG-7 \
    --format permdiag,dense,read --p 4,8,16 --batch 1,64 --act-density 1 --threads 1 --simd-target "$keep" \
    --blas-per-target --cpu-time --rounds 3 --min-time 0.6 --json "$BUILD_DIR/bench-simd.json" --markdown "$BUILD_DIR/bench-simd.md"
  python3 scripts/splice_section.py docs/benchmarks.md simdtargets "$BUILD_DIR/bench-simd.md"
else
  echo "fewer than two of the SIMD targets '$targets' run here (available: $available): simdtargets section kept"
fi
echo "updated docs/benchmarks.md (JSON: $BUILD_DIR/bench.json)"
