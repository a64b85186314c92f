# Shell functions shared by the training scripts (accuracy.sh, comparison.sh,
# accuracy-recurrent.sh, accuracy-shared.sh, admm.sh, ternary-train.sh,
# recurrent-lr.sh; source it). The caller sets PERMDNN, RUNS, RESULTS, NICE, SEED, THREADS
# and defines say() (its log prefix).

# train_run NAME ARGS...: one `permdnn train ARGS ... --resume` into
# $RUNS/NAME; when it has finished, its summary.json and metrics.csv are
# copied to $RESULTS/NAME/ (the tracked results the docs are generated from).
# Skipped when $RESULTS/NAME is there already; a finished run directory
# without results is copied, not retrained. A failed run is reported and the
# grid goes on.
train_run() {
  local name=$1
  shift
  if [[ -f "$RESULTS/$name/summary.json" ]]; then
    say "$name: trained already ($RESULTS/$name)"
    return 0
  fi
  if [[ ! -f "$RUNS/$name/summary.json" ]]; then
    say "$name: $PERMDNN train $* (log $RUNS/$name.log)"
    if ! nice -n "$NICE" "$PERMDNN" train "$@" --seed "$SEED" --threads "$THREADS" --out "$RUNS/$name" --resume \
      >"$RUNS/$name.log" 2>&1; then
      say "$name FAILED, see $RUNS/$name.log"
      return 0
    fi
  fi
  mkdir -p "$RESULTS/$name"
  cp "$RUNS/$name/summary.json" "$RUNS/$name/metrics.csv" "$RESULTS/$name/"
  say "$name: done, $(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); \
print(f\"{100*s['final_test_accuracy']:.2f}% test, {s['model_bytes']:,} bytes ({s['compression']:.2f}x)\")" \
    "$RESULTS/$name/summary.json")"
}

# need_run NAME USER: USER (a conversion) starts from the run directory
# $RUNS/NAME, which must hold a finished run (summary.json: the trainer
# writes model.json at every best epoch, summary.json once, at the end).
need_run() {
  [[ -f "$RUNS/$1/summary.json" ]] || { say "$2 needs the finished run directory $RUNS/$1 (rerun it)"; return 1; }
}

# run_dir NAME ARGS...: make sure the run directory $RUNS/NAME holds a
# finished model for runs that start from it (--from): train_run skips a
# run whose results are tracked already, so on a fresh clone the directory
# is retrained here with the same arguments and seed 1 (the dense starts of
# every seed's runs are seed 1's; the same arguments and seed give the same
# model). Its results are not touched. It costs that training even when
# every result that starts from the directory is tracked already. Call it
# before the streams run side by side; a lock on $RUNS/NAME.lock also keeps
# a second invocation of a script from training the same directory at once
# (it waits, then finds the run finished).
run_dir() {
  local name=$1
  shift
  mkdir -p "$RUNS"
  (
    flock 9
    [[ -f "$RUNS/$name/summary.json" ]] && exit 0
    say "$name: retraining its run directory $RUNS/$name (log $RUNS/$name.log)"
    nice -n "$NICE" "$PERMDNN" train "$@" --seed 1 --threads "$THREADS" --out "$RUNS/$name" --resume \
      >>"$RUNS/$name.log" 2>&1 || say "$name FAILED, see $RUNS/$name.log"
  ) 9>"$RUNS/$name.lock"
}

# run_streams NAME...: the functions stream_NAME of the caller, all at once
# (each in the background), waiting for all of them.
run_streams() {
  local pids=() s
  for s in "$@"; do
    "stream_$s" &
    pids+=($!)
  done
  wait "${pids[@]}"
}
