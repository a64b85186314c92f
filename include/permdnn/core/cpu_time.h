// Process CPU time, for benchmarks on a shared machine: time slices lost to
// other processes do not count (cache and memory contention still do), so
// it is a single-threaded run's latency without the scheduler's noise.
#pragma once

#include <algorithm>
#include <ctime>
#include <vector>

namespace permdnn {

// Milliseconds of CPU time used by this process so far (all its threads).
inline double ProcessCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

// Milliseconds of CPU time used by the calling thread so far: a one-thread
// measurement on a loaded machine without the other threads of the process
// (e.g. the kernel-crossover measurement the runtime makes at load).
inline double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

// The median of reps calls of f in the calling thread's CPU time, after one
// warm-up call: the per-call timing of the stand-alone benchmarks (bench/),
// which run everything on the calling thread.
template <class F>
double MedianThreadCpuMs(F&& f, int reps) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = ThreadCpuMs();
    f();
    t.push_back(ThreadCpuMs() - t0);
  }
  std::sort(t.begin(), t.end());
  return t.empty() ? 0.0 : t[t.size() / 2];
}
}  // namespace permdnn
