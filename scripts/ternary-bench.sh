#!/bin/sh
# The kernel table of docs/ternary.md (issue 18): the im2col matrices of the
# three conv stages of a ResNet-20-style net on 28x28 inputs (16, 32, 64
# channels at 28x28, 14x14, 7x7; 3x3 kernels, group_ch 16 -> groups of
# 16·9 = 144 columns), each at B=1 and B=16 (batch = output positions x B),
# and the linear layers of the Fashion-MNIST mlp (784-1024-1024-10) at B=1
# (group 16), ternary at 50% group density (fp32, and the int16 and 8-bit
# products at batch > 1: ternary-i16, ternary-u8) against OpenBLAS in the same run,
# one thread, under AVX3 and AVX2 (--blas-per-target: each target in a
# process of its own, OpenBLAS on the kernels of a CPU whose best target it is,
# so the AVX2 pass compares with an AVX2 sgemm, as an AVX2-only user would);
# the 8-bit product once more with its `.madd` row forced (a CPU without
# VNNI). Then the whole mlp end to end at B=1:
# trained 1 epoch on 2,000 images (speed does not depend on accuracy),
# exported, compressed to ternary (fc1, fc2; fc3 stays dense, as in
# training), and both files timed by `permdnn run --bench`, alternating, five
# rounds (the median of the round medians is printed last); then the resnet
# end to end (below).
# Usage: [PIN=CPU] scripts/ternary-bench.sh [build/release/src/permdnn] [out dir]
# PIN runs every timed command on that CPU (taskset): on a VM whose vCPUs
# differ in speed (a busy sibling thread on the host halves one's L1 load
# rate), processes compared with each other then run on the same one.
set -e
BIN=${1:-build/release/src/permdnn}
OUT=${2:-/tmp/permdnn-ternary-bench}
PINCMD=""
[ -n "${PIN:-}" ] && PINCMD="taskset -c $PIN"
mkdir -p "$OUT"
run() {
  name=$1; shift
  $PINCMD env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" bench --format dense,ternary,ternary-i16,ternary-u8 --threads 1 --act-density 1 \
    --cpu-time --rounds 3 --min-time 0.6 --simd-target avx3,avx2 --blas-per-target --group-density 0.5 \
    --json "$OUT/$name.json" "$@" | tee "$OUT/$name.txt"
}
run stage1 --layers 16x144 --p 144 --batch 784,12544
run stage2 --layers 32x288 --p 144 --batch 196,3136
run stage3 --layers 64x576 --p 144 --batch 49,784
run fc --layers 1024x784,1024x1024,300x784 --p 16 --batch 1
# The 8-bit product as a CPU without VNNI runs it (AVX-512 without VNNI,
# e.g. Skylake-X; AVX2 without AVX-VNNI, e.g. Zen 3 or Haswell): the
# `.madd` row (vpmaddubsw) forced with --kernel, against the same sgemm.
madd() {
  name=$1; shift
  $PINCMD env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" bench --format dense,ternary-u8 --threads 1 --act-density 1 \
    --cpu-time --rounds 3 --min-time 0.6 --simd-target avx3,avx2 --blas-per-target --group-density 0.5 \
    --kernel ternary.matmul_u8.madd --json "$OUT/$name.json" "$@" | tee "$OUT/$name.txt"
}
madd stage1-madd --layers 16x144 --p 144 --batch 784,12544
madd stage2-madd --layers 32x288 --p 144 --batch 196,3136
madd stage3-madd --layers 64x576 --p 144 --batch 49,784

# End to end: the mlp, dense and ternary, B = 1, one thread.
if [ ! -f "$OUT/mlp.onnx" ]; then
  "$BIN" train --model mlp --epochs 1 --limit-train 2000 --seed 0 --threads 2 --out "$OUT/mlp-run" >"$OUT/mlp-train.log"
  "$BIN" export "$OUT/mlp-run" --out "$OUT/mlp.onnx" >/dev/null
fi
"$BIN" compress "$OUT/mlp.onnx" --compress "ternary:group=16:density=0.5,fc3=dense" --out "$OUT/mlp-ternary.onnx" \
  >"$OUT/mlp-ternary.txt"
for round in 1 2 3 4 5; do
  for m in mlp mlp-ternary; do
    $PINCMD env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" run "$OUT/$m.onnx" --bench --batch 1 --threads 1 \
      --min-time 1 --json "$OUT/e2e-$m-$round.json" >/dev/null
  done
done
/usr/bin/python3 - "$OUT" <<'PY' | tee "$OUT/e2e.txt"
import json, statistics, sys
out = sys.argv[1]
med = {}
for m in ("mlp", "mlp-ternary"):
    runs = []
    for r in range(1, 6):
        recs = json.load(open(f"{out}/e2e-{m}-{r}.json"))
        runs.append(1e3 * next(x["median_s"] for x in recs if x["batch"] == 1))
    med[m] = statistics.median(runs)
    print(f"{m}: B=1 median of 5 round medians {med[m]:.4f} ms (rounds: {', '.join(f'{v:.4f}' for v in runs)})")
print(f"ternary mlp end to end: {med['mlp'] / med['mlp-ternary']:.2f}x the dense mlp at B=1")
PY

# End to end: the ResNet-20-style resnet (16-32-64 channels, 28x28), trained
# 1 epoch on 2,000 images, exported, every 3x3 and 1x1 conv but the first
# compressed to ternary (group 16, half the groups kept), then dense,
# ternary fp32, ternary int16 (`--int16`: calibrated on the timed input,
# the convs' columns int16) and ternary int8 (`--int8`: the sample quantized
# into 8-bit planes of four channels, the columns 8-bit quads) timed by
# `permdnn run --bench` at B=1 and 16,
# alternating, five rounds; the dense model runs its convs on oneDNN.
if [ ! -f "$OUT/resnet.onnx" ]; then
  "$BIN" train --model resnet --epochs 1 --limit-train 2000 --seed 0 --threads 2 --out "$OUT/resnet-run" \
    >"$OUT/resnet-train.log"
  "$BIN" export "$OUT/resnet-run" --out "$OUT/resnet.onnx" >/dev/null
fi
"$BIN" compress "$OUT/resnet.onnx" --compress "ternary:group=16:density=0.5,conv1=dense,fc=dense" \
  --out "$OUT/resnet-ternary.onnx" >"$OUT/resnet-ternary.txt"
for round in 1 2 3 4 5; do
  for v in dense ternary ternary-int16 ternary-int8; do
    case $v in
      dense) set -- "$OUT/resnet.onnx" ;;
      ternary) set -- "$OUT/resnet-ternary.onnx" ;;
      ternary-int16) set -- "$OUT/resnet-ternary.onnx" --int16 ;;
      ternary-int8) set -- "$OUT/resnet-ternary.onnx" --int8 ;;
    esac
    $PINCMD env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" run "$@" --bench --batch 1,16 --threads 1 --min-time 0.5 \
      --cpu-time --json "$OUT/e2e-resnet-$v-$round.json" >/dev/null
  done
done
/usr/bin/python3 - "$OUT" <<'PY' | tee "$OUT/e2e-resnet.txt"
import json, statistics, sys
out = sys.argv[1]
for batch in (1, 16):
    med = {}
    for v in ("dense", "ternary", "ternary-int16", "ternary-int8"):
        runs = [1e3 * next(x["median_s"] for x in json.load(open(f"{out}/e2e-resnet-{v}-{r}.json")) if x["batch"] == batch)
                for r in range(1, 6)]
        med[v] = statistics.median(runs)
        print(f"resnet {v} B={batch}: median of 5 round medians {med[v]:.4f} ms "
              f"(rounds: {', '.join(f'{x:.4f}' for x in runs)})")
    print(f"resnet B={batch}: dense / ternary {med['dense'] / med['ternary']:.2f}x, "
          f"dense / ternary-int16 {med['dense'] / med['ternary-int16']:.2f}x, "
          f"dense / ternary-int8 {med['dense'] / med['ternary-int8']:.2f}x")
PY
