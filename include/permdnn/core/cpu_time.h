// Process CPU time, for benchmarks on a shared machine: time slices lost to
// other processes do not count (cache and memory contention still do), so
// it is a single-threaded run's latency without the scheduler's noise.
#pragma once

#include <ctime>

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
}  // namespace permdnn
