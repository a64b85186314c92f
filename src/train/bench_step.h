// What the two training-step benchmarks (bench_train.cc: PermDiagLinear,
// bench_circulant.cc: BlockCirculantLinear, each against torch::nn::Linear)
// share: the layer-shape and repetition options, and the median of timed
// steps.
#pragma once

#include <cstdint>
#include <functional>

#include <CLI/CLI.hpp>

#include "permdnn/core/timing.h"

namespace permdnn::train {

inline void AddStepBenchOptions(CLI::App& app, int64_t* rows, int64_t* cols, int* p, int64_t* batch, int* reps,
                                int* threads) {
  app.add_option("--rows", *rows)->capture_default_str();
  app.add_option("--cols", *cols)->capture_default_str();
  app.add_option("--p", *p)->capture_default_str();
  app.add_option("--batch", *batch)->capture_default_str();
  app.add_option("--reps", *reps)->capture_default_str();
  app.add_option("--threads", *threads)->capture_default_str();
}

// Median of `reps` timed steps after 3 warm-ups (allocator, thread pools),
// by process CPU time when cpu_time (single-threaded comparisons on a shared
// machine: time descheduled does not count, cache interference does).
inline double MedianStepMs(int reps, const std::function<void()>& step, bool cpu_time = false) {
  return TimeRuns(step, {.warmup = 3, .min_reps = reps, .max_reps = reps, .cpu_time = cpu_time}).median_ms;
}

}  // namespace permdnn::train
