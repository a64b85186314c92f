// The cost of one ParallelFor hand-off on a warm pool: two chunks of no
// work, so the time is the wake-up of the worker and the wait for it.
// docs/runtime.md quotes it with the pool's spinning on (default) and off
// (PERMDNN_POOL_SPIN=0):
//
//   build/release/bench/permdnn_pool_bench
//   PERMDNN_POOL_SPIN=0 build/release/bench/permdnn_pool_bench
#include <atomic>
#include <cstdint>

#include <benchmark/benchmark.h>

#include "permdnn/core/thread_pool.h"

namespace {

void BM_ParallelForHandOff(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  std::atomic<int64_t> sink{0};
  permdnn::ParallelFor(threads, threads, [&](int64_t b, int64_t e, int) { sink += e - b; });  // workers up
  for (auto _ : state)
    permdnn::ParallelFor(threads, threads, [&](int64_t b, int64_t e, int) { sink += e - b; });
  benchmark::DoNotOptimize(sink.load());
}
BENCHMARK(BM_ParallelForHandOff)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
