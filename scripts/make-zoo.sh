#!/usr/bin/env bash
# Builds the model zoo of the runtime benchmarks in $ZOO (default
# build/zoo; generated, never committed) and its manifest zoo.json:
#   * torchvision resnet18, mobilenet_v2, squeezenet1_1 with random weights
#     (scripts/zoo_torchvision.py, Debian python3-torchvision, fixed seed,
#     opset 13, dynamic batch);
#   * the Fashion-MNIST mlp and cnn trained briefly by `permdnn train`
#     (1 epoch on the first $ZOO_TRAIN images: these models are for speed)
#     and exported by `permdnn export`;
#   * `permdnn compress --compress permdiag:p=P` of each at p = 4 and 8, and
#     the same with --portable (dense Conv/Gemm of the projected weights), the
#     file ONNX Runtime runs to check that the outputs agree;
#   * `--compress circulant:p=P` (CirCNN) of the CNNs resnet18 and the
#     Fashion-MNIST cnn at p = 4 and 8 (`$base-c$p.onnx`), with --portable too.
# Existing files are kept (delete $ZOO to rebuild). Needs a build with the
# training component for the Fashion-MNIST models (skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/release}
PERMDNN=${PERMDNN:-$BUILD_DIR/src/permdnn}
ZOO=${ZOO:-build/zoo}
ZOO_TRAIN=${ZOO_TRAIN:-10000}
SEED=${SEED:-0}
mkdir -p "$ZOO"
say() { echo "make-zoo: $*"; }

if ! /usr/bin/python3 -c 'import torchvision' 2>/dev/null; then
  say "error: /usr/bin/python3 lacks torchvision; install Debian's python3-torchvision (scripts/install-deps.sh)" >&2
  exit 1
fi
tv=()
for m in resnet18 mobilenet_v2 squeezenet1_1; do [[ -f "$ZOO/$m.onnx" ]] || tv+=("$m"); done
if ((${#tv[@]})); then
  (IFS=,; /usr/bin/python3 scripts/zoo_torchvision.py "$ZOO" --models "${tv[*]}" --seed "$SEED")
fi

fm=()
if "$PERMDNN" train --help >/dev/null 2>&1; then
  for m in mlp cnn; do
    fm+=("fmnist-$m")
    [[ -f "$ZOO/fmnist-$m.onnx" ]] && continue
    say "training $m (1 epoch on $ZOO_TRAIN images)"
    "$PERMDNN" train --model "$m" --epochs 1 --limit-train "$ZOO_TRAIN" --seed "$SEED" --threads 2 \
      --out "$ZOO/runs/$m" --resume >"$ZOO/runs-$m.log" 2>&1 || { say "error: training $m failed, see $ZOO/runs-$m.log" >&2; exit 1; }
    "$PERMDNN" export "$ZOO/runs/$m" --out "$ZOO/fmnist-$m.onnx" >/dev/null
  done
else
  say "permdnn was built without the training component: no Fashion-MNIST models"
fi

# compress BASE KIND TAG: $ZOO/$BASE-$TAG$P[-portable].onnx for p = 4 and 8.
compress() {
  local base=$1 kind=$2 tag=$3 p form out
  for p in 4 8; do
    for form in "" "-portable"; do
      out="$ZOO/$base-$tag$p$form.onnx"
      [[ -f "$out" ]] && continue
      "$PERMDNN" compress "$ZOO/$base.onnx" --compress "$kind:p=$p" --out "$out" \
        ${form:+--portable} >"$ZOO/$base-$tag$p$form.log"
    done
  done
}
cnns=(resnet18)
for m in "${fm[@]}"; do [[ $m == fmnist-cnn ]] && cnns+=(fmnist-cnn); done
for base in resnet18 mobilenet_v2 squeezenet1_1 "${fm[@]}"; do compress "$base" permdiag p; done
for base in "${cnns[@]}"; do compress "$base" circulant c; done

# The manifest: one entry per file permdnn runs; ort_file is the file ONNX
# Runtime runs on the same input (itself, or the --portable twin).
/usr/bin/python3 - "$ZOO" "${cnns[*]}" "${fm[@]}" <<'PY'
import json, os, sys
zoo, cnns, fm = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
shapes = {"resnet18": [3, 224, 224], "mobilenet_v2": [3, 224, 224], "squeezenet1_1": [3, 224, 224]}
entries = []
for base in ["resnet18", "mobilenet_v2", "squeezenet1_1"] + fm:
    shape = shapes.get(base, [1, 28, 28])
    entries.append({"name": base, "base": base, "variant": "dense", "file": f"{base}.onnx",
                    "ort_file": f"{base}.onnx", "input_shape": shape})
    for kind, tag in [("permdiag", "p")] + ([("circulant", "c")] if base in cnns else []):
        for p in (4, 8):
            entries.append({"name": f"{base}-{tag}{p}", "base": base, "variant": f"{kind}:p={p}",
                            "file": f"{base}-{tag}{p}.onnx", "ort_file": f"{base}-{tag}{p}-portable.onnx",
                            "input_shape": shape})
tmp = os.path.join(zoo, "zoo.json.tmp")
with open(tmp, "w") as f:
    json.dump({"models": entries}, f, indent=1)
os.replace(tmp, os.path.join(zoo, "zoo.json"))
print(f"make-zoo: {len(entries)} models in {zoo}/zoo.json")
PY
