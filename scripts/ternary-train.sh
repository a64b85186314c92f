#!/usr/bin/env bash
# Regenerates the "Training" section of docs/ternary.md (issue 18): PE-wise
# group pruning + ternary weights with Weight Penalty Clipping
# (`permdnn train --compress ternary:...`) on Fashion-MNIST, the accuracy /
# bytes table against the dense model and the ablation (group pruning alone,
# ternary alone, both with plain group lasso, both with WPC), every
# compressed run fine-tuned from the same dense run with the same epochs, and
# each one exported and evaluated by the runtime (TernaryMatMul / TernaryConv).
#
#   scripts/ternary-train.sh              run what is missing (mlp, cnn and resnet streams in parallel), then the doc
#   scripts/ternary-train.sh --doc-only   only regenerate the section
#   STREAMS="mlp" scripts/ternary-train.sh  one stream only (mlp, cnn, resnet, cnn3, res3, resq3, alpha, resfull, resfull6, resfullq6, resfullseeds, resfullseeds07)
#
# Environment: PERMDNN (default build/release/src/permdnn), RUNS (runs/ternary),
# RESULTS (results/ternary), THREADS per run (1), NICE (10), SEED (1).
# Every run is `permdnn train ... --resume` (lib.sh's train_run): an
# interrupted grid continues; finished runs (results/ternary/NAME/summary.json)
# are not run again. The dense runs use the same command as scripts/admm.sh's
# (mlp 12 epochs, cnn 4 epochs, seed 1): a finished run directory of that
# command may be copied to runs/ternary/ instead of retraining it. On a
# fresh clone the dense run directories the chosen streams start from
# (--from) are retrained first (lib.sh run_dir), even when every result
# that starts from them is tracked.
set -euo pipefail
cd "$(dirname "$0")/.."
PERMDNN=${PERMDNN:-build/release/src/permdnn}
RUNS=${RUNS:-runs/ternary}
RESULTS=${RESULTS:-results/ternary}
THREADS=${THREADS:-1}
NICE=${NICE:-10}
SEED=${SEED:-1}
STREAMS=${STREAMS:-mlp cnn resnet}
DOC=${DOC:-docs/ternary.md}
mkdir -p "$RUNS" "$RESULTS"
say() { echo "[ternary-train] $*"; }
# shellcheck source=scripts/lib.sh
source scripts/lib.sh  # train_run, need_run

# The recipe (written into the doc): every compressed run fine-tunes the
# dense run (--from) at lr 5e-4; the schedule of src/train/ternary_layers.h
# (WPC for the first 40% of the steps, group pruning, masked float training
# to 50%, ternary with the straight-through estimator for the rest).
MLP_FT=(--model mlp --epochs 6 --lr 5e-4)
CNN_FT=(--model cnn --epochs 1 --lr 5e-4)
# cnn with 3 epochs (the last at lr 5e-5): WPC and plain lasso only (machine time).
CNN3_FT=(--model cnn --epochs 3 --lr 5e-4)
# resnet (ResNet-20 widths 16/32/64, about 4x cnn's work per image): machine
# time allowed a 10,000-image training subset, 2 dense epochs and 1 epoch of
# each compressed run only.
RES_LIMIT=(--limit-train 10000)
RES_FT=(--model resnet --width 16 --epochs 1 --lr 5e-4 "${RES_LIMIT[@]}")
RES3_FT=(--model resnet --width 16 --epochs 3 --lr 5e-4 "${RES_LIMIT[@]}")
G=16      # group_ch (the authors' CIFAR ResNet-20 value)
D=0.5     # fraction of groups kept

runtime_check() {  # the run exported (ai.permdnn ternary ops) and evaluated by the runtime
  local name=$1
  if [[ -f "$RESULTS/$name/summary.json" && ! -f "$RESULTS/$name/runtime.txt" ]]; then
    "$PERMDNN" export "$RUNS/$name" --out "$RUNS/$name.onnx" >"$RESULTS/$name/runtime.txt" 2>&1 &&
      nice -n "$NICE" "$PERMDNN" eval "$RUNS/$name.onnx" --threads 1 >>"$RESULTS/$name/runtime.txt" 2>&1 ||
      say "$name: export/eval FAILED (see $RESULTS/$name/runtime.txt)"
  fi
}

tern_run() {  # train_run from the model's dense run, then the runtime check
  local name=$1
  train_run "$@"
  runtime_check "$name"
}

ablation() {  # MODEL: the five rows, each --from the dense run
  local m=$1
  local -n ft=$2
  tern_run "$m-wpc" --compress "ternary:group=$G:density=$D:wpc=0.7" "${ft[@]}" --from "$RUNS/$m-dense"
  tern_run "$m-lasso" --compress "ternary:group=$G:density=$D:lambda=5e-4" "${ft[@]}" --from "$RUNS/$m-dense"
  tern_run "$m-group" --compress "ternary:group=$G:density=$D:wpc=0.7:ternarize=0" "${ft[@]}" --from "$RUNS/$m-dense"
  tern_run "$m-ternary" --compress "ternary:group=$G" "${ft[@]}" --from "$RUNS/$m-dense"
  tern_run "$m-wpcq" --compress "ternary:group=$G:density=$D:wpcq=0.5" "${ft[@]}" --from "$RUNS/$m-dense"
}

stream_mlp() {
  train_run mlp-dense --model mlp --compress dense --epochs 12
  if need_run mlp-dense mlp-ternary; then ablation mlp MLP_FT; fi
}

stream_cnn() {
  train_run cnn-dense --model cnn --compress dense --epochs 4
  if need_run cnn-dense cnn-ternary; then ablation cnn CNN_FT; fi
}

stream_cnn3() {
  if need_run cnn-dense cnn-wpc-e3; then
    tern_run cnn-wpc-e3 --compress "ternary:group=$G:density=$D:wpc=0.7" "${CNN3_FT[@]}" --from "$RUNS/cnn-dense"
    tern_run cnn-lasso-e3 --compress "ternary:group=$G:density=$D:lambda=5e-4" "${CNN3_FT[@]}" --from "$RUNS/cnn-dense"
  fi
}

stream_res3() {  # resnet with 3 compressed epochs (the last at lr 5e-5): WPC and plain lasso only
  if need_run resnet-dense resnet-wpc-e3; then
    tern_run resnet-wpc-e3 --compress "ternary:group=$G:density=$D:wpc=0.7" "${RES3_FT[@]}" --from "$RUNS/resnet-dense"
    tern_run resnet-lasso-e3 --compress "ternary:group=$G:density=$D:lambda=5e-4" "${RES3_FT[@]}" \
      --from "$RUNS/resnet-dense"
  fi
}

stream_resq3() {  # resnet, 3 compressed epochs: WPC with θ = the median group norm (after STREAMS=resnet's dense run)
  if need_run resnet-dense resnet-wpcq-e3; then
    tern_run resnet-wpcq-e3 --compress "ternary:group=$G:density=$D:wpcq=0.5" "${RES3_FT[@]}" --from "$RUNS/resnet-dense"
  fi
}

stream_alpha() {  # one α per layer (alpha=layer) against the WPC rows' α per output row, same SPEC otherwise
  if need_run mlp-dense mlp-wpc-alpha; then
    tern_run mlp-wpc-alpha --compress "ternary:group=$G:density=$D:wpc=0.7:alpha=layer" "${MLP_FT[@]}" \
      --from "$RUNS/mlp-dense"
  fi
  if need_run cnn-dense cnn-wpc-alpha; then
    tern_run cnn-wpc-alpha --compress "ternary:group=$G:density=$D:wpc=0.7:alpha=layer" "${CNN_FT[@]}" \
      --from "$RUNS/cnn-dense"
  fi
}

resfull_pair() {  # EPOCHS: resnet-full WPC and plain lasso, EPOCHS each from the same dense run, in parallel
  local e=$1
  local ft=(--model resnet --width 16 --epochs "$e" --lr 5e-4)  # all 60,000 training images
  if need_run resnet-full-dense "resnet-full-wpc-e$e"; then
    tern_run "resnet-full-wpc-e$e" --compress "ternary:group=$G:density=$D:wpc=0.7" "${ft[@]}" \
      --from "$RUNS/resnet-full-dense" &
    tern_run "resnet-full-lasso-e$e" --compress "ternary:group=$G:density=$D:lambda=5e-4" "${ft[@]}" \
      --from "$RUNS/resnet-full-dense"
    wait
  fi
}

stream_resfull() {  # resnet on the full training set: dense 3 epochs, then WPC and plain lasso (3 epochs each)
  train_run resnet-full-dense --model resnet --width 16 --compress dense --epochs 3
  resfull_pair 3
}

stream_resfull6() {  # the same pair with twice the fine-tuning
  resfull_pair 6
}

# resnet-full, 6 epochs: WPC with θ = the median group norm (wpcq=0.5: the
# groups below the line that pruning at density 0.5 draws are pushed to zero,
# the kept half is left alone), at the issue's two λ (5e-4 and 1e-3).
stream_resfullq6() {  # after STREAMS=resfull's dense run
  local ft=(--model resnet --width 16 --epochs 6 --lr 5e-4)
  if need_run resnet-full-dense resnet-full-wpcq-e6; then
    tern_run resnet-full-wpcq-e6 --compress "ternary:group=$G:density=$D:wpcq=0.5" "${ft[@]}" \
      --from "$RUNS/resnet-full-dense" &
    tern_run resnet-full-wpcq-l1e-3-e6 --compress "ternary:group=$G:density=$D:wpcq=0.5:lambda=1e-3" "${ft[@]}" \
      --from "$RUNS/resnet-full-dense"
    wait
  fi
}

# resnet-full, 6 epochs: the median-θ WPC row and the plain lasso row again
# with other data orders (--seed 2 and 3; the dense start stays seed 1's), so
# the pair's difference can be set against the spread between seeds.
stream_resfullseeds() {  # after STREAMS=resfull's dense run
  local ft=(--model resnet --width 16 --epochs 6 --lr 5e-4) s
  need_run resnet-full-dense resnet-full-wpcq-e6-s2 || return 0
  for s in 2 3; do
    SEED=$s tern_run "resnet-full-wpcq-e6-s$s" --compress "ternary:group=$G:density=$D:wpcq=0.5" "${ft[@]}" \
      --from "$RUNS/resnet-full-dense" &
    SEED=$s tern_run "resnet-full-lasso-e6-s$s" --compress "ternary:group=$G:density=$D:lambda=5e-4" "${ft[@]}" \
      --from "$RUNS/resnet-full-dense"
    wait
  done
}

# The θ = 0.7 × mean WPC row (the issue's "ratio 0.7" rule; 0.47 points
# below plain lasso with seed 1) with the same two other data orders, side
# by side; the lasso rows of those seeds are stream resfullseeds'.
stream_resfullseeds07() {  # after STREAMS=resfull's dense run
  local ft=(--model resnet --width 16 --epochs 6 --lr 5e-4)
  need_run resnet-full-dense resnet-full-wpc-e6-s2 || return 0
  SEED=2 tern_run resnet-full-wpc-e6-s2 --compress "ternary:group=$G:density=$D:wpc=0.7" "${ft[@]}" \
    --from "$RUNS/resnet-full-dense" &
  SEED=3 tern_run resnet-full-wpc-e6-s3 --compress "ternary:group=$G:density=$D:wpc=0.7" "${ft[@]}" \
    --from "$RUNS/resnet-full-dense"
  wait
}

stream_resnet() {
  train_run resnet-dense --model resnet --width 16 --compress dense --epochs 2 "${RES_LIMIT[@]}"
  if need_run resnet-dense resnet-ternary; then ablation resnet RES_FT; fi
}

if [[ "${1:-}" != "--doc-only" ]]; then
  [[ -x "$PERMDNN" ]] || { echo "no $PERMDNN: build first (make build) or set PERMDNN" >&2; exit 1; }
  # The streams that start from a dense run another stream trains: its
  # directory retrained when only its results are here (a fresh clone;
  # train_run skips a run whose results are tracked), before the streams
  # run side by side (two streams must not train one directory).
  for s in $STREAMS; do
    case $s in
      cnn3 | alpha) run_dir cnn-dense --model cnn --compress dense --epochs 4 ;;&
      alpha) run_dir mlp-dense --model mlp --compress dense --epochs 12 ;;
      res3 | resq3) run_dir resnet-dense --model resnet --width 16 --compress dense --epochs 2 "${RES_LIMIT[@]}" ;;
      resfull6 | resfullq6 | resfullseeds | resfullseeds07) run_dir resnet-full-dense --model resnet --width 16 --compress dense --epochs 3 ;;
    esac
  done
  run_streams $STREAMS
fi

python3 scripts/ternary_train_doc.py "$RESULTS" "$0" >"$RESULTS/section.md"
python3 scripts/splice_section.py "$DOC" ternary-train "$RESULTS/section.md"
say "wrote the ternary-train section of $DOC"
