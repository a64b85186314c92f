#!/usr/bin/env bash
# Regenerates docs/comparison.md: dense vs permuted-diagonal (PermDNN) vs
# block-circulant (CirCNN) vs magnitude pruning (Deep Compression, without and
# with 4-bit weight sharing) for mlp and cnn on Fashion-MNIST at matched
# compression (permdiag/circulant p = 4, 8, 16; pruned densities chosen so the
# whole model has the bytes of the permdiag p model). Per row: test accuracy,
# model bytes, runtime latency (batch 1 and 64, one thread) and the simulated
# accelerator (PermDNN engine for permdiag, CirCNN for circulant, EIE for
# pruned) throughput and energy per inference.
#
#   scripts/comparison.sh              train what is missing, measure, write the doc
#   scripts/comparison.sh --doc-only   only regenerate docs/comparison.md from results/comparison
#
# Environment: PERMDNN (binary, default build/release/src/permdnn), RUNS
# (runs/comparison), RESULTS (results/comparison), ACCURACY_RUNS
# (runs/accuracy: finished runs of scripts/accuracy.sh with the same recipe
# are copied instead of retrained), THREADS per training run (1), NICE (0),
# RATIOS ("8 4 16", the order they are done in), MODELS ("mlp cnn", trained
# in two parallel streams; MODELS= trains nothing and only measures what is
# finished), MLP_EPOCHS (12), MLP_FT_EPOCHS (6), CNN_EPOCHS (8),
# CNN_FT_EPOCHS (2), FT_LR (5e-4), SEED (1), MEASURE (1; 0 skips export/bench/sim).
# Every training run is `permdnn train ... --resume` (an interrupted run
# continues); a finished run's summary.json and metrics.csv are copied to
# $RESULTS/NAME/, the measurements (export.json, bench.json, sim.json) are
# written there too. The doc is generated from $RESULTS only.
set -euo pipefail
cd "$(dirname "$0")/.."
PERMDNN=${PERMDNN:-build/release/src/permdnn}
RUNS=${RUNS:-runs/comparison}
RESULTS=${RESULTS:-results/comparison}
ACCURACY_RUNS=${ACCURACY_RUNS:-runs/accuracy}
THREADS=${THREADS:-1}
NICE=${NICE:-0}
RATIOS=${RATIOS:-8 4 16}
MODELS=${MODELS-mlp cnn}
MLP_EPOCHS=${MLP_EPOCHS:-12}
MLP_FT_EPOCHS=${MLP_FT_EPOCHS:-6}
CNN_EPOCHS=${CNN_EPOCHS:-8}
CNN_FT_EPOCHS=${CNN_FT_EPOCHS:-2}
FT_LR=${FT_LR:-5e-4}
SEED=${SEED:-1}
DOC=${DOC:-docs/comparison.md}
mkdir -p "$RUNS" "$RESULTS"

say() { echo "[comparison $(date -u +%H:%M:%S)] $*"; }

# reuse NAME ACC_NAME: copy a finished accuracy.sh run (same recipe and seed).
reuse() {
  if [[ ! -f "$RESULTS/$1/summary.json" && ! -e "$RUNS/$1" && -f "$ACCURACY_RUNS/$2/summary.json" ]]; then
    say "$1: reusing the finished run $ACCURACY_RUNS/$2 (same recipe)"
    cp -r "$ACCURACY_RUNS/$2" "$RUNS/$1"
  fi
}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh  # train_run, need_run

# density MODEL R BITS: the prune density whose model bytes equal those of the
# permdiag p=R model (from the trainer's byte formula, src/train/models.h).
density() {
  python3 - "$RESULTS/$1-permdiag-${2}x/summary.json" "$RUNS/$1-dense/model.json" "$3" <<'PY'
import json, sys
target = json.load(open(sys.argv[1]))
layers = {l["name"]: l for l in json.load(open(sys.argv[2]))["layers"] if "out" in l}
bits = int(sys.argv[3])
fixed, weights = 0, 0
compressed = {l["name"] for l in target["layers"] if l["compress"] not in ("dense", "-")}
for l in target["layers"]:
    if l["name"] not in compressed:
        fixed += l["bytes"]  # dense layers, batch-norm: as in the permdiag model
        continue
    out = layers[l["name"]]["out"]
    w = l["dense_params"] - out  # out·in·kk
    fixed += (out + 1) * 4 + out * 4 + ((1 << bits) * 4 if bits else 0)  # row_ptr, bias, codebook
    weights += w
per_nnz = 4 + (1 if bits else 4)  # int32 col_idx + float32 value or uint8 code
print(f"{(target['model_bytes'] - fixed) / (per_nnz * weights):.4g}")
PY
}

# row MODEL METHOD R: train one compressed row.
row() {
  local model=$1 method=$2 r=$3 name="$1-$2-${3}x" epochs ft from=()
  if [[ $model == mlp ]]; then epochs=$MLP_EPOCHS; ft=$MLP_FT_EPOCHS; else epochs=$CNN_FT_EPOCHS; ft=$CNN_FT_EPOCHS; fi
  case $method in
    permdiag | circulant)
      if [[ $model == mlp ]]; then
        [[ $method == permdiag ]] && reuse "$name" "mlp-p$r"
        train_run "$name" --model mlp --compress "$method:p=$r" --epochs "$epochs"
        return
      fi
      need_run "$model-dense" "$name" || return 0
      [[ -f "$RESULTS/$name/summary.json" ]] ||
        train_run "$name" --model "$model" --compress "$method:p=$r" --epochs "$ft" --lr "$FT_LR" --from "$RUNS/$model-dense"
      ;;
    permdiag-conv | circulant-conv)
      [[ $method == permdiag-conv ]] && reuse "$name" "mlp-p$r-converted"
      [[ -f "$RESULTS/$name/summary.json" ]] || need_run "$model-dense" "$name" || return 0
      train_run "$name" --model "$model" --compress "${method%-conv}:p=$r" --epochs "$ft" --lr "$FT_LR" \
        --from "$RUNS/$model-dense"
      ;;
    pruned | pruned4)
      [[ -f "$RESULTS/$name/summary.json" ]] && { train_run "$name"; return; }
      need_run "$model-dense" "$name" || return 0
      [[ -f "$RESULTS/$model-permdiag-${r}x/summary.json" ]] ||
        { say "$name needs $model-permdiag-${r}x (its byte count is the target)"; return 0; }
      local bits=0 spec
      [[ $method == pruned4 ]] && bits=4
      spec="prune:density=$(density "$model" "$r" "$bits")"
      ((bits)) && spec+=",bits=$bits"
      train_run "$name" --model "$model" --compress "$spec" --epochs "$ft" --lr "$FT_LR" --from "$RUNS/$model-dense"
      ;;
  esac
}

stream() {  # all rows of one model, ratio by ratio
  local model=$1 methods r m
  if [[ $model == mlp ]]; then
    reuse mlp-dense mlp-dense
    train_run mlp-dense --model mlp --compress dense --epochs "$MLP_EPOCHS"
    methods="permdiag circulant pruned pruned4 permdiag-conv circulant-conv"
  else
    reuse cnn-dense cnn-dense
    train_run cnn-dense --model cnn --compress dense --epochs "$CNN_EPOCHS"
    methods="permdiag circulant pruned pruned4"
  fi
  for r in $RATIOS; do
    for m in $methods; do row "$model" "$m" "$r"; done
  done
}

# measure NAME: export to ONNX, benchmark (1 thread, batch 1 and 64) and
# simulate the run; results in $RESULTS/NAME/{export,bench,sim}.json.
measure() {
  local name=$1 dir="$RESULTS/$1" onnx="$RUNS/$1/model.onnx"
  [[ -f "$dir/summary.json" ]] || return 0
  [[ -f "$dir/bench.json" && -f "$dir/sim.json" ]] && return 0
  [[ -f "$RUNS/$name/model.json" ]] || { say "$name: no run directory to measure"; return 0; }
  say "$name: export, bench, sim"
  if ! "$PERMDNN" export "$RUNS/$name" --out "$onnx" --json "$dir/export.json" >"$RUNS/$name.export.log" 2>&1; then
    say "$name: export FAILED, see $RUNS/$name.export.log"
    return 0
  fi
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PERMDNN" run "$onnx" --bench --batch 1,64 --threads 1 \
    --json "$dir/bench.json" >"$RUNS/$name.bench.log" 2>&1 || say "$name: bench FAILED, see $RUNS/$name.bench.log"
  # The machine's state when this row was benchmarked: load, time, the kernels' SIMD target.
  python3 - "$dir/load.json" "$PERMDNN" <<'PY'
import datetime, json, os, sys
sys.path.insert(0, "scripts")
from machine import permdnn_simd_target
out, permdnn = sys.argv[1], sys.argv[2]
rec = {"loadavg": os.getloadavg(), "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
       "simd_target": permdnn_simd_target(permdnn)}
with open(out + ".tmp", "w") as f:
    json.dump(rec, f)
os.replace(out + ".tmp", out)
PY
  local arch
  case $name in
    *-permdiag*) arch=permdnn ;;
    *-circulant*) arch=circnn ;;
    *-pruned*) arch=eie ;;
    *) echo '{"none": "dense model: no compressed FC layer for the accelerator models"}' >"$dir/sim.json"; return 0 ;;
  esac
  "$PERMDNN" sim --model "$onnx" --arch "$arch" --json "$dir/sim.json" >"$RUNS/$name.sim.log" 2>&1 ||
    { say "$name: sim FAILED, see $RUNS/$name.sim.log"; rm -f "$dir/sim.json"; }
}

if [[ "${1:-}" != "--doc-only" ]]; then
  [[ -x "$PERMDNN" ]] || { echo "no $PERMDNN: build first (make build) or set PERMDNN" >&2; exit 1; }
  pids=()
  for model in $MODELS; do
    stream "$model" &
    pids+=($!)
  done
  wait "${pids[@]}"
  # Measured one at a time after the training, so the two streams do not disturb the timings.
  if [[ ${MEASURE:-1} == 1 ]]; then
    for d in "$RESULTS"/*/; do measure "$(basename "$d")"; done
  fi
fi

python3 - "$RESULTS" "$DOC" "$0" <<'PY'
import datetime, json, os, statistics, sys
res, doc, script = sys.argv[1], sys.argv[2], sys.argv[3]

def load(name, what="summary"):
    path = os.path.join(res, name, what + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)

METHODS = {  # key: (label, recipe for mlp, recipe for cnn, engine)
    "dense": ("dense", "scratch", "scratch", None),
    "permdiag": ("permdiag (PermDNN)", "scratch", "converted", "permdnn"),
    "circulant": ("circulant (CirCNN)", "scratch", "converted", "circnn"),
    "pruned": ("pruned (Deep Compression)", "converted", "converted", "eie"),
    "pruned4": ("pruned + 4-bit sharing", "converted", "converted", "eie"),
    "permdiag-conv": ("permdiag (PermDNN)", "converted", None, "permdnn"),
    "circulant-conv": ("circulant (CirCNN)", "converted", None, "circnn"),
}
ORDER = {"mlp": ["permdiag", "circulant", "pruned", "pruned4", "permdiag-conv", "circulant-conv"],
         "cnn": ["permdiag", "circulant", "pruned", "pruned4"]}
ENGINE_NAME = {"permdnn": "PermDNN", "circnn": "CirCNN", "eie": "EIE"}

def compressed_ratio(s):
    layers = [l for l in s["layers"] if l["compress"] not in ("dense", "-")]
    if not layers:
        return None
    return sum(4 * l["dense_params"] for l in layers) / sum(l["bytes"] for l in layers)

def bench(name):
    b = load(name, "bench")
    if b is None:
        return None
    return {r["batch"]: r["median_s"] for r in b}, {r["batch"]: r["min_s"] for r in b}

def sim(name, arch):
    s = load(name, "sim")
    if s is None or "records" not in s:
        return None
    recs = [r for r in s["records"] if r["arch"] == arch]
    if not recs:
        return None
    lat_us = sum(r["latency_us"] for r in recs)
    return {"fps": 1e6 / lat_us, "uj": sum(r["energy_uj"] for r in recs), "layers": [r["layer"] for r in recs]}

def spec(s):
    return s["compress"]

lines = []
w = lines.append
w("# Comparison: PermDNN vs CirCNN vs Deep Compression / EIE on Fashion-MNIST")
w("")
w(f"Generated by `{os.path.relpath(script)}` from the records in `{res}/` (one directory per row: the trainer's "
  "`summary.json` and `metrics.csv`, `export.json`, `bench.json`, `sim.json`, `load.json`); do not edit by hand. "
  f"Last generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Regenerate everything (training what is missing, "
  "resuming interrupted runs) with `scripts/comparison.sh`, only this file with `scripts/comparison.sh --doc-only`.")
w("")
w("## Recipe")
w("")
w("- **Matched compression.** Compression = dense bytes / model bytes of the **whole model**, every stored byte "
  "counted as the trainer's run format stores it (`summary.json` `model_bytes`): float32 values, biases, batch-norm, "
  "permdiag block offsets (1 byte at p ≤ 256), CSR `row_ptr` and `col_idx` (int32), uint8 codes and the float32 "
  "codebook (16 entries per layer) of weight sharing. The first conv (cnn) and the last layer stay dense in every "
  "method, as `--compress` does by default, so the whole-model ratio is below the nominal one; the *layers* column "
  "is the ratio of the compressed layers alone. permdiag and circulant use p = 4, 8, 16 (circulant stores no "
  "offsets, so it is a little smaller at the same p). The pruning density of each row is computed by the script "
  "from the trainer's byte formula so that the pruned model has **the bytes of the permdiag model** at that p "
  "(CSR: 8 bytes per kept weight; with 4-bit sharing 5 bytes: int32 index + uint8 code); it is shown in the row.")
w("- **mlp** (784-1024-1024-10): dense, permdiag and circulant from scratch, 12 epochs, Adam lr 1e-3, ×0.1 for the "
  "last third, batch 128, seed 1 (the `scripts/accuracy.sh` recipe; its dense and permdiag runs are reused). "
  "Pruning the Deep Compression way: from the trained dense run (`--from`), 6 epochs at lr 5e-4: gradual magnitude "
  "pruning (cubic schedule, 16 steps) over the first half, masked retraining after; with 4 bits, k-means "
  "weight sharing at 3/4 and codebook fine-tuning for the last quarter (`src/train/README.md`). For the same "
  "starting point, permdiag and circulant were also converted from the dense run with the same 6 epochs "
  "(rows marked *converted*).")
w("- **cnn** (conv 32-64-128, fc 1152-256-10): every cnn epoch costs minutes on this machine, so every compressed "
  "row is a conversion of the dense cnn run (8 epochs from scratch) plus 2 epochs of fine-tuning at lr 5e-4 — "
  "the same for all methods (pruning: the schedule above compressed into those 2 epochs). The compressed rows thus "
  "saw 2 more epochs than the dense row.")
w("- **Accuracy**: test accuracy after the last epoch (10,000 images); drop = dense − this, in points.")
w("- **Latency**: `permdnn export RUN` then `permdnn run model.onnx --bench --batch 1,64 --threads 1` (OpenBLAS "
  "without the OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides); median (and minimum) wall time of a whole forward "
  "pass over ≥ 0.3 s of repetitions; × dense = dense median / this median. All rows were benchmarked one after "
  "the other in one pass, with no training run of this script going on. *ONNX bytes*: the bytes of the exported initializers the runtime reads (`export.json`; "
  "permdiag offsets take 2 bytes each there instead of 1, so slightly more than the run format).")
w("- **Simulator**: `permdnn sim --model model.onnx --arch ENGINE` on the activations of 16 real test images: "
  "PermDNN engine for permdiag, CirCNN engine for circulant, EIE for pruned (EIE's own packed format: 4-bit codes + "
  "4-bit relative indices with padding, whatever the trainer's sharing). It simulates the **compressed layers**: "
  "FC layers (`PermDiagMatMul`, `BlockCirculantMatMul`, `SparseMatMul`) as matrix × vector, compressed convolutions "
  "as their im2col matrix on every output position's column (evenly sampled above 256 positions per image and "
  "scaled), one layer after the other; inferences/s = 1 / sum of their latencies, energy = sum of their energies "
  "(28 nm, 16-bit). Dense layers (the first conv, the last layer) are not in it, so for cnn conv2, conv3 and fc1 "
  "are simulated, and the dense model has no simulated number (n/a). "
  "The engines have different PE counts and clocks (defaults of `permdnn sim --list-params`), see "
  "`docs/simulator.md`.")
sys.path.insert(0, "scripts")  # the script has cd'd to the repository root
from machine import cpu_name
states = [json.load(open(os.path.join(res, d, "load.json")))
          for d in sorted(os.listdir(res)) if os.path.exists(os.path.join(res, d, "load.json"))]
loads = [st["loadavg"][0] for st in states]
times = sorted(st["utc"] for st in states if "utc" in st)
targets = sorted({st["simd_target"] for st in states if st.get("simd_target", "unknown") != "unknown"})
span = ""
if times:
    last = times[-1][11:] if times[-1][:10] == times[0][:10] else times[-1]
    span = f"; {len(times)} of the {len(states)} rows were benchmarked {times[0]}–{last} UTC"
w(f"- **Machine**: {cpu_name()}, {os.cpu_count()} cores"
  + (f", permdnn's kernels on Highway target {', '.join(targets)}" if targets else "")
  + span
  + (f" at a 1-minute load average of {min(loads):.1f}–{max(loads):.1f}" if loads else "")
  + " (each row's `load.json`); compare within a table, not across days.")
w("")

missing = []
target = {}
for model in ["mlp", "cnn"]:
    dense = load(f"{model}-dense")
    db = bench(f"{model}-dense")
    w(f"## {model}")
    w("")
    if dense is None:
        w(f"The dense {model} run is not finished yet.")
        w("")
        missing.append(f"{model}-dense")
        continue
    for r in [4, 8, 16]:
        w(f"### {model} at {r}× (nominal)")
        w("")
        w("| method | recipe | compress | test acc | drop | model bytes | ratio (model) | ratio (layers) | ONNX bytes "
          "| B=1 µs median (min) | × dense | B=64 ms median (min) | × dense | sim engine | sim inf/s | sim µJ/inf |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for key in ["dense"] + ORDER[model]:
            name = f"{model}-dense" if key == "dense" else f"{model}-{key}-{r}x"
            label, rec_mlp, rec_cnn, engine = METHODS[key]
            recipe = rec_mlp if model == "mlp" else rec_cnn
            s = load(name)
            if s is None:
                w(f"| {label} | {recipe} | | not run yet | | | | | | | | | | | | |")
                missing.append(name)
                continue
            acc = 100 * s["final_test_accuracy"]
            drop = "" if key == "dense" else f"{100 * dense['final_test_accuracy'] - acc:.2f}"
            if key != "dense":
                target.setdefault((model, r), {})[key] = 100 * dense["final_test_accuracy"] - acc
            cr = compressed_ratio(s)
            e = load(name, "export")
            onnx = f"{sum(l['stored_bytes'] for l in e['layers']):,}" if e else "not measured"
            b = bench(name)
            if b:
                (b, bmin), rel = b, (lambda k: f"{db[0][k] / b[k]:.2f}×" if db else "")
                lat = (f"{1e6 * b[1]:.1f} ({1e6 * bmin[1]:.1f}) | {rel(1)} | {1e3 * b[64]:.2f} ({1e3 * bmin[64]:.2f}) "
                       f"| {rel(64)}")
            else:
                lat = "not measured | | | "
            if engine is None:
                sm = "— | n/a | n/a"
            else:
                si = sim(name, engine)
                sm = (f"{ENGINE_NAME[engine]} ({', '.join(si['layers'])}) | {si['fps']:,.0f} | {si['uj']:.3f}" if si
                      else f"{ENGINE_NAME[engine]} | not measured | ")
            w(f"| {label} | {recipe} ({s['epochs']} ep) | `{spec(s)}` | {acc:.2f}% | {drop} | {s['model_bytes']:,} | "
              f"{s['compression']:.2f}× | {f'{cr:.2f}×' if cr else '1.00×'} | {onnx} | {lat} | {sm} |")
        w("")

w("## Target: accuracy at 8× on mlp")
w("")
t = target.get(("mlp", 8), {})
def fmt(k):
    return f"{t[k]:.2f}" if k in t else "not run yet"
w("Drop vs dense in points (negative = better than dense): "
  + "; ".join(f"{METHODS[k][0]} {METHODS[k][1]} {fmt(k)}" for k in ORDER["mlp"]) + ".")
w("")
w("Target: permdiag within 0.3 points of the better of circulant and pruned (here: the best of circulant, pruned and pruned + 4-bit sharing).")
w("")
for pd, others, what in [("permdiag", ["circulant", "pruned", "pruned4"], "permdiag from scratch vs the best other row"),
                         ("permdiag-conv", ["circulant-conv", "pruned", "pruned4"],
                          "converted from the dense run, 6 epochs each")]:
    got = [k for k in others if k in t]
    if pd not in t or not got:
        w(f"- {what}: not run yet")
        continue
    best = min(got, key=lambda k: t[k])
    gap = t[pd] - t[best]
    verdict = "**met**" if gap <= 0.3 else "**MISSED**"
    w(f"- {what}: permdiag drop {t[pd]:.2f}, best other {METHODS[best][0]} ({METHODS[best][1]}) {t[best]:.2f}: "
      f"permdiag is {abs(gap):.2f} points {'behind' if gap > 0 else 'ahead'} → {verdict}")
w("")
# Plot (if gnuplot is there): mlp test accuracy against model bytes, one line per method and recipe.
import shutil, subprocess, tempfile
svg = os.path.join(res, "mlp-accuracy.svg")
if shutil.which("gnuplot"):
    series = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in ORDER["mlp"]:
            pts = [(s["model_bytes"], 100 * s["final_test_accuracy"]) for s in
                   (load(f"mlp-{key}-{r}x") for r in [16, 8, 4]) if s is not None]
            if not pts:
                continue
            path = os.path.join(tmp, key + ".dat")
            with open(path, "w") as f:
                f.write("".join(f"{b} {a}\n" for b, a in pts))
            label = f"{METHODS[key][0]}, {METHODS[key][1]}"
            series.append(f"'{path}' using 1:2 with linespoints title '{label}'")
        d = load("mlp-dense")
        if series and d is not None:
            series.append(f"{100 * d['final_test_accuracy']} with lines dashtype 2 title 'dense'")
            script_text = ("set terminal svg size 800,480 font 'sans,11'\n"
                           f"set output '{svg}.tmp'\nset logscale x 2\nset xlabel 'model bytes (whole model)'\n"
                           "set ylabel 'test accuracy (%)'\nset key bottom right\nset grid\n"
                           "set title 'mlp on Fashion-MNIST: accuracy vs bytes'\nplot " + ", ".join(series) + "\n")
            if subprocess.run(["gnuplot"], input=script_text, text=True).returncode == 0:
                os.replace(svg + ".tmp", svg)
if os.path.exists(svg):
    w(f"![mlp accuracy against model bytes]({os.path.relpath(svg, os.path.dirname(doc) or '.')})")
    w("")
notes = os.path.join(res, "notes.md")
if os.path.exists(notes):
    with open(notes) as f:
        w(f.read().rstrip())
    w("")
if missing:
    w("**Partial results**: " + ", ".join(f"`{m}`" for m in missing) + " had not finished when this file was "
      "generated; rerun the script (it resumes and skips finished runs) to complete the tables.")
    w("")
os.makedirs(os.path.dirname(doc) or ".", exist_ok=True)
tmp = doc + ".tmp"
with open(tmp, "w") as f:
    f.write("\n".join(lines))
os.replace(tmp, doc)
PY
say "wrote $DOC"
