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
# arguments are passed to `permdnn bench` (a later --min-time wins).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/release}
PERMDNN=$BUILD_DIR/src/permdnn
mkdir -p "$BUILD_DIR"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PERMDNN" bench \
  --format permdiag,dense,csr,circulant,read --cpu-time --rounds 3 --min-time 0.6 "$@" \
  --json "$BUILD_DIR/bench.json" --markdown "$BUILD_DIR/bench-kernels.md"
python3 scripts/splice_section.py docs/benchmarks.md kernels "$BUILD_DIR/bench-kernels.md"
echo "updated docs/benchmarks.md (JSON: $BUILD_DIR/bench.json)"
