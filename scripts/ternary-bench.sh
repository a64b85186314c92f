#!/bin/sh
# The kernel table of docs/ternary.md (issue 18): the im2col matrices of the
# three conv stages of a ResNet-20-style net on 28x28 inputs (16, 32, 64
# channels at 28x28, 14x14, 7x7; 3x3 kernels, group_ch 16 -> groups of
# 16·9 = 144 columns), each at B=1 and B=16 (batch = output positions x B),
# and a 300x784 linear layer at B=1 (group 16), ternary at 50% group density
# against OpenBLAS in the same run, one thread, under AVX3 and AVX2.
# Usage: scripts/ternary-bench.sh [build/release/src/permdnn] [out dir]
set -e
BIN=${1:-build/release/src/permdnn}
OUT=${2:-/tmp/permdnn-ternary-bench}
mkdir -p "$OUT"
run() {
  name=$1; shift
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" bench --format dense,ternary --threads 1 --act-density 1 \
    --cpu-time --rounds 3 --min-time 0.6 --simd-target avx3,avx2 --group-density 0.5 \
    --json "$OUT/$name.json" "$@" | tee "$OUT/$name.txt"
}
run stage1 --layers 16x144 --p 144 --batch 784,12544
run stage2 --layers 32x288 --p 144 --batch 196,3136
run stage3 --layers 64x576 --p 144 --batch 49,784
run fc --layers 300x784 --p 16 --batch 1
