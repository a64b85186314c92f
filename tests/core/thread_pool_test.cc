// ParallelFor: every index exactly once, chunks contiguous, errors propagate.
#include "permdnn/core/thread_pool.h"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace permdnn {
namespace {

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t n : {1, 2, 7, 100, 1001}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      ParallelFor(n, threads, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
}

TEST(ThreadPool, ChunksAreContiguousAndBalanced) {
  int64_t b, e, prev_end = 0;
  for (int w = 0; w < 3; ++w) {
    ChunkRange(10, 3, w, &b, &e);
    EXPECT_EQ(b, prev_end);
    EXPECT_GE(e - b, 3);
    EXPECT_LE(e - b, 4);
    prev_end = e;
  }
  EXPECT_EQ(prev_end, 10);
}

TEST(ThreadPool, RethrowsWorkerExceptions) {
  EXPECT_THROW(ParallelFor(10, 2,
                           [](int64_t b, int64_t, int) {
                             if (b > 0) throw std::runtime_error("boom");
                           }),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int> sum{0};
  ParallelFor(10, 2, [&](int64_t b, int64_t e, int) { sum += static_cast<int>(e - b); });
  EXPECT_EQ(sum.load(), 10);
}

// Back-to-back jobs meet spinning workers; after a pause longer than the
// spin the workers sleep on the condition variable and must still wake.
TEST(ThreadPool, BackToBackAndAfterSleep) {
  for (int round = 0; round < 4; ++round) {
    std::atomic<int64_t> sum{0};
    for (int i = 0; i < 2000; ++i)
      ParallelFor(4, 2, [&](int64_t b, int64_t e, int w) { sum += (e - b) * (w + 1); });
    EXPECT_EQ(sum.load(), 2000 * (2 * 1 + 2 * 2));
    std::this_thread::sleep_for(std::chrono::milliseconds(round == 0 ? 0 : 2));
  }
}

TEST(ThreadPool, NestedCallsRunInline) {
  std::atomic<int> sum{0};
  ParallelFor(4, 2, [&](int64_t b, int64_t e, int) {
    ParallelFor(3, 2, [&](int64_t b2, int64_t e2, int) { sum += static_cast<int>((e - b) * (e2 - b2)); });
  });
  EXPECT_EQ(sum.load(), 12);
}

}  // namespace
}  // namespace permdnn
