// Repeated timing of one operation, for the benchmark commands (permdnn
// bench, permdnn run --bench, the training benchmarks, the stand-alone
// benchmarks in bench/): warm-up calls, then
// timed calls until both a minimum count and a minimum time are reached (or
// a cap), reported as median and minimum. One place for the loop so every
// command's "median" means the same thing.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

#include "permdnn/core/cpu_time.h"

namespace permdnn {

// The median (the mean of the two middle values for an even count); 0 for
// an empty vector.
inline double MedianOf(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct TimingOptions {
  int warmup = 1;           // untimed calls first (caches, page faults, lazy set-up)
  int min_reps = 5;         // at least this many timed calls...
  double min_time_s = 0.0;  // ...and at least this long in all (wall clock)
  int max_reps = 2000;      // but never more calls than this
  bool cpu_time = false;    // time by process CPU time instead of the wall clock
  // Time by the calling thread's CPU time (whatever cpu_time says), for
  // work that stays on the calling thread in a process with other threads
  // (the stand-alone benchmarks in bench/).
  bool thread_time = false;
};

struct Timing {
  double median_ms = 0, min_ms = 0;
  double wall_median_ms = 0;  // the wall clock's median, whichever timer ranks
  int reps = 0;
};

template <typename F>
Timing TimeRuns(F&& run, const TimingOptions& o) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < o.warmup; ++i) run();
  std::vector<double> ms, wall;
  ms.reserve(static_cast<std::size_t>(std::max(o.min_reps, 0)));
  wall.reserve(ms.capacity());
  const bool cpu = o.cpu_time || o.thread_time;
  const auto cpu_ms = [&o] { return o.thread_time ? ThreadCpuMs() : ProcessCpuMs(); };
  const auto start = Clock::now();
  while (static_cast<int>(ms.size()) < o.min_reps ||
         (std::chrono::duration<double>(Clock::now() - start).count() < o.min_time_s &&
          static_cast<int>(ms.size()) < o.max_reps)) {
    const double c0 = cpu ? cpu_ms() : 0.0;
    const auto t0 = Clock::now();
    run();
    wall.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    ms.push_back(cpu ? cpu_ms() - c0 : wall.back());
  }
  Timing t;
  t.median_ms = MedianOf(ms);
  t.wall_median_ms = MedianOf(wall);
  t.min_ms = ms.empty() ? 0.0 : *std::min_element(ms.begin(), ms.end());
  t.reps = static_cast<int>(ms.size());
  return t;
}

// The median of `reps` calls of run (after one warm-up call) in the calling
// thread's CPU time: the stand-alone benchmarks' timing (bench/), which run
// everything on the calling thread.
template <typename F>
double ThreadCpuMedianMs(F&& run, int reps) {
  return TimeRuns(run, {.warmup = 1, .min_reps = reps, .max_reps = reps, .thread_time = true}).median_ms;
}

}  // namespace permdnn
