// The shared benchmark timing loop: medians, call counts, the CPU-time mode.
#include "permdnn/core/timing.h"

#include <chrono>

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
  for (bool cpu : {false, true}) {
    Timing t = TimeRuns(busy, {.warmup = 0, .min_reps = 5, .cpu_time = cpu});
    EXPECT_GE(t.wall_median_ms, 1.9) << "cpu=" << cpu;
    EXPECT_GT(t.median_ms, 0.2) << "cpu=" << cpu;  // loose: CPU time shrinks when descheduled
    EXPECT_LE(t.min_ms, t.median_ms);
  }
}

}  // namespace
}  // namespace permdnn
