// The shared benchmark timing loop: medians, call counts, the CPU-time mode.
#include "permdnn/core/timing.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace permdnn {
namespace {

TEST(Timing, MedianOfOddEvenEmpty) {
  EXPECT_EQ(MedianOf({3.0, 1.0, 2.0}), 2.0);
  EXPECT_EQ(MedianOf({4.0, 1.0, 3.0, 2.0}), 2.5);  // mean of the two middle values
  EXPECT_EQ(MedianOf({}), 0.0);
}

TEST(Timing, WarmUpThenAtLeastMinRepsAtMostMaxReps) {
  int calls = 0;
  Timing t = TimeRuns([&] { ++calls; }, {.warmup = 3, .min_reps = 7, .min_time_s = 0.0, .max_reps = 100});
  EXPECT_EQ(t.reps, 7);
  EXPECT_EQ(calls, 10);  // 3 untimed + 7 timed
  // A minimum time keeps calling, but never past max_reps.
  calls = 0;
  t = TimeRuns([&] { ++calls; }, {.warmup = 0, .min_reps = 1, .min_time_s = 10.0, .max_reps = 50});
  EXPECT_EQ(t.reps, 50);
  EXPECT_EQ(calls, 50);
}

TEST(Timing, MeasuresWhatRuns) {
  // A busy loop of ~2 ms: both clocks see it (CPU time as well, since it
  // computes), and the minimum never exceeds the median.
  auto busy = [] {
    const auto t0 = std::chrono::steady_clock::now();
    volatile double s = 0;
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2)) s = s + 1.0;
  };
  for (int clock : {0, 1, 2}) {  // wall, process CPU, thread CPU
    Timing t = TimeRuns(busy, {.warmup = 0, .min_reps = 5, .cpu_time = clock > 0, .thread_time = clock == 2});
    EXPECT_GE(t.wall_median_ms, 1.9) << "clock=" << clock;
    EXPECT_GT(t.median_ms, 0.2) << "clock=" << clock;  // loose: CPU time shrinks when descheduled
    EXPECT_LE(t.min_ms, t.median_ms);
  }
}

TEST(Timing, ThreadTimeLeavesOutOtherThreads) {
  // Another thread spins for the whole timed call while the calling thread
  // sleeps: process CPU time sees the spin, the calling thread's does not.
  auto run = [] {
    std::atomic<bool> stop{false};
    std::thread spin([&] {
      volatile double s = 0;
      while (!stop.load(std::memory_order_relaxed)) s = s + 1.0;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stop = true;
    spin.join();
  };
  const Timing process = TimeRuns(run, {.warmup = 0, .min_reps = 3, .cpu_time = true});
  const Timing thread = TimeRuns(run, {.warmup = 0, .min_reps = 3, .cpu_time = true, .thread_time = true});
  EXPECT_GT(process.median_ms, 2.0);  // the spinning thread got some CPU in 20 ms, even on a busy machine
  EXPECT_LT(thread.median_ms, 2.0);   // the sleeping caller used next to none
  EXPECT_LT(thread.median_ms, process.median_ms);
}

}  // namespace
}  // namespace permdnn
