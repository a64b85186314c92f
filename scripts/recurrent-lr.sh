#!/usr/bin/env bash
# The learning-rate sweep of docs/recurrent.md, section "Learning rate"
# (issue #17): `--model lstm` and `--model charlm`, dense and permuted-diagonal
# p = 4, 8, 16, at each Adam learning rate of LSTM_LRS / LM_LRS; the recipe
# of the accuracy grid otherwise (6 epochs, hidden 256, the rate ×0.1 for the
# last third; charlm on 12,800 windows of 64 characters, batch 32), seed 1.
# The section (scripts/recurrent_lr_doc.py) sets each model at its best rate against the dense model at its
# best rate (the issue's targets), and lists the gaps at equal rates too.
#
#   scripts/recurrent-lr.sh             run what is missing (two runs at a time), then write the section
#   scripts/recurrent-lr.sh --doc-only  only regenerate the section from the results present
#   EMBED=256 scripts/recurrent-lr.sh   charlm with a 256-wide embedding (`--embed 256`) into
#                                       runs/ and results/recurrent-lr-e256 and the doc's section
#                                       recurrent-lr-e256 (TASKS defaults to charlm then)
#   EMBED=256 scripts/recurrent-lr.sh --seeds
#                                       each charlm model's best run over both widths again with
#                                       the seeds of SEEDS [2 3] (runs/ and results/recurrent-lr-e256-seeds)
#
# Environment (defaults in brackets): PERMDNN, RUNS [runs/recurrent-lr],
# RESULTS [results/recurrent-lr], THREADS per run [1], NICE [10], SEED [1],
# TASKS [lstm charlm], LSTM_LRS [1e-3 2e-3 3e-3 5e-3 8e-3], LM_LRS [1e-3 2e-3 5e-3 8e-3 1.2e-2;
# 5e-3 8e-3 1.2e-2 with EMBED set],
# EMBED [64] (charlm's embedding width; another width gets its own run,
# result and doc section names, suffixed -eEMBED, and its section ends with
# the charlm targets over both widths: each model's best run of either
# sweep against dense's best of either, BASE_RESULTS [results/recurrent-lr]
# holding the 64-wide runs).
# Every run is `permdnn train ... --resume` into $RUNS/TASK-MODEL-lrLR
# (scripts/lib.sh's train_run: a finished run directory is copied, not
# retrained); the section checks that each result was trained with the
# recipe above.
set -euo pipefail
cd "$(dirname "$0")/.."
PERMDNN=${PERMDNN:-build/release/src/permdnn}
EMBED=${EMBED:-64}
SUFFIX=$([[ $EMBED == 64 ]] || echo "-e$EMBED")
RUNS=${RUNS:-runs/recurrent-lr$SUFFIX}
RESULTS=${RESULTS:-results/recurrent-lr$SUFFIX}
THREADS=${THREADS:-1}
NICE=${NICE:-10}
SEED=${SEED:-1}
if [[ $EMBED == 64 ]]; then TASKS=${TASKS:-lstm charlm}; else TASKS=${TASKS:-charlm}; fi
LSTM_LRS=${LSTM_LRS:-1e-3 2e-3 3e-3 5e-3 8e-3}
BASE_LM_LRS="1e-3 2e-3 5e-3 8e-3 1.2e-2"  # the 64-wide charlm sweep's rates
if [[ $EMBED == 64 ]]; then LM_LRS=${LM_LRS:-$BASE_LM_LRS}; else LM_LRS=${LM_LRS:-5e-3 8e-3 1.2e-2}; fi
DOC=${DOC:-docs/recurrent.md}
BASE_RESULTS=${BASE_RESULTS:-results/recurrent-lr}
SEEDS=${SEEDS:-2 3}
SEED_RUNS=${SEED_RUNS:-$RUNS-seeds}
SEED_RESULTS=${SEED_RESULTS:-$RESULTS-seeds}
mkdir -p "$RUNS" "$RESULTS"
say() { echo "[recurrent-lr] $*"; }
# shellcheck source=scripts/lib.sh
source scripts/lib.sh  # train_run

MODELS=("dense dense" "p4 permdiag:p=4" "p8 permdiag:p=8" "p16 permdiag:p=16")
task_args() {  # TASK
  case $1 in
    lstm) echo "--model lstm --epochs 6 --hidden 256" ;;
    charlm) echo "--model charlm --epochs 6 --hidden 256 --embed $EMBED --seq-len 64 --batch 32 --limit-train 12800 --data /usr/share/games/fortunes" ;;
    *) say "unknown task '$1' (lstm, charlm)"; exit 2 ;;
  esac
}
task_lrs() { [[ $1 == lstm ]] && echo "$LSTM_LRS" || echo "$LM_LRS"; }

# Two streams: dense and p = 8, then p = 4 and p = 16, every rate and task.
stream() {  # MODEL-INDEX...
  local task lr i
  for task in $TASKS; do
    for lr in $(task_lrs "$task"); do
      for i in "$@"; do
        read -r tag spec <<<"${MODELS[$i]}"
        # shellcheck disable=SC2046
        train_run "$task-$tag-lr$lr" $(task_args "$task") --compress "$spec" --lr "$lr"
      done
    done
  done
}

DOC_ARGS=("$RESULTS" "$DOC" "$TASKS" "$LSTM_LRS" "$LM_LRS" "$EMBED" "$SUFFIX" "$BASE_RESULTS" "$SEED_RESULTS"
  "$BASE_LM_LRS" "$SEEDS")

# --seeds: each charlm model's best run over both widths (recurrent_lr_doc.py
# best) again with the seeds of SEEDS, into SEED_RUNS / SEED_RESULTS as
# charlm-TAG-eWIDTH-lrLR-sS; two streams.
seed_stream() {  # CELL-LINE...
  local line tag spec width lr s
  for s in $SEEDS; do
    for line in "$@"; do
      read -r tag spec width lr <<<"$line"
      # shellcheck disable=SC2046
      RUNS=$SEED_RUNS RESULTS=$SEED_RESULTS SEED=$s train_run "charlm-$tag-e$width-lr$lr-s$s" \
        $(EMBED=$width task_args charlm) --compress "$spec" --lr "$lr"
    done
  done
}

if [[ "${1:-}" == --seeds ]]; then
  [[ $EMBED != 64 ]] || { say "--seeds compares the two widths: set EMBED (e.g. EMBED=256)"; exit 2; }
  mkdir -p "$SEED_RUNS" "$SEED_RESULTS"
  mapfile -t CELLS < <(/usr/bin/python3 scripts/recurrent_lr_doc.py best "${DOC_ARGS[@]}")
  ((${#CELLS[@]} == 4)) || { say "--seeds needs both charlm sweeps complete (see above)"; exit 2; }
  seed_stream "${CELLS[0]}" "${CELLS[2]}" &
  a=$!
  seed_stream "${CELLS[1]}" "${CELLS[3]}" &
  b=$!
  wait "$a" "$b"
elif [[ "${1:-}" != --doc-only ]]; then
  stream 0 2 &
  a=$!
  stream 1 3 &
  b=$!
  wait "$a" "$b"
fi

/usr/bin/python3 scripts/recurrent_lr_doc.py doc "${DOC_ARGS[@]}"
