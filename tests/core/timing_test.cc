// The shared benchmark timing loop: medians, call counts, the CPU-time mode.
#include "permdnn/core/timing.h"

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
  // A busy loop of ~2 ms: every clock sees it (the CPU times as well, since
  // it computes), and the minimum never exceeds the median.
  auto busy = [] {
    const auto t0 = std::chrono::steady_clock::now();
    volatile double s = 0;
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2)) s = s + 1.0;
  };
  for (int clock : {0, 1, 2}) {  // wall, process CPU, thread CPU
    Timing t = TimeRuns(busy, {.warmup = 0, .min_reps = 5, .cpu_time = clock > 0, .thread_time = clock == 2});
    EXPECT_GE(t.wall_median_ms, 1.9) << "clock=" << clock;
    EXPECT_GT(t.median_ms, 0.2) << "clock=" << clock;  // loose: CPU time shrinks when descheduled
    EXPECT_LE(t.min_ms, t.median_ms) << "clock=" << clock;
  }
}

TEST(Timing, ThreadTimeLeavesOutOtherThreads) {
  // Another thread spins until it has used 5 ms of CPU (at most 2 s of wall
  // clock) while the calling thread waits for it in join(): process CPU
  // time sees the spin however loaded the machine, the caller's does not.
  auto run = [] {
    std::thread spin([] {
      const double t0 = ThreadCpuMs();
      const auto w0 = std::chrono::steady_clock::now();
      volatile double s = 0;
      while (ThreadCpuMs() - t0 < 5.0 && std::chrono::steady_clock::now() - w0 < std::chrono::seconds(2)) s = s + 1.0;
    });
    spin.join();
  };
  const Timing process = TimeRuns(run, {.warmup = 0, .min_reps = 3, .cpu_time = true});
  const Timing thread = TimeRuns(run, {.warmup = 0, .min_reps = 3, .thread_time = true});
  EXPECT_GE(process.median_ms, 4.5);
  EXPECT_LT(thread.median_ms, 2.0);  // thread creation and join only
  EXPECT_LT(thread.median_ms, process.median_ms);
}

}  // namespace
}  // namespace permdnn
