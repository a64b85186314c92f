// A small persistent thread pool for kernels that split work over row blocks.
//
// Kernels call ParallelFor(n, threads, fn) with fn(begin, end, worker): the
// range [0, n) is cut into `threads` contiguous chunks of near-equal size and
// chunk i runs on worker i (worker 0 is the calling thread). Contiguous chunks
// keep each worker's weights a single sequential stream, which is what the
// memory system rewards. Workers are created lazily and reused; between jobs
// they spin (up to 100 µs, backing off on an oversubscribed machine) before
// blocking on a condition variable, so a call on a warm pool costs 1-2 µs
// (24 µs when every hand-off went through the condition variables; AMD EPYC
// Zen 5, 2 cores; bench/thread_pool_bench.cc, docs/runtime.md "Threads").
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

namespace permdnn {

// The least work, in multiply-adds (or equivalent), worth handing to another
// thread: about 5-10 µs of one core's time, several times a warm hand-off.
constexpr double kMinParallelWork = 5e5;

// Threads worth using for `work` multiply-adds: at most `threads`, at least
// one, and kMinParallelWork of the work each (a small node on two threads
// was slower than on one: the Fashion-MNIST cnn at p = 8, batch 1).
inline int ThreadsForWork(double work, int threads) {
  const double t = std::min(static_cast<double>(threads), work / kMinParallelWork);
  return t < 1 ? 1 : static_cast<int>(t);
}

// Number of hardware threads (at least 1).
int HardwareThreads();

// Runs fn over [0, n) split into min(threads, n) contiguous chunks; returns
// when all chunks are done. threads <= 1 runs inline. Exceptions thrown by fn
// are rethrown on the calling thread (the first one wins).
void ParallelFor(int64_t n, int threads,
                 const std::function<void(int64_t begin, int64_t end, int worker)>& fn);

// The chunk [begin, end) that worker w of `workers` gets out of [0, n).
inline void ChunkRange(int64_t n, int workers, int w, int64_t* begin, int64_t* end) {
  int64_t base = n / workers, extra = n % workers;
  *begin = w * base + (w < extra ? w : extra);
  *end = *begin + base + (w < extra ? 1 : 0);
}

}  // namespace permdnn
