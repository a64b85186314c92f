// kernels::StreamSum, the read bound of permdnn bench --format read: every
// element is read once and counted, on every SIMD target, for sizes around
// the 8-vector step. kernels::StreamFill, the write bound of the conv
// bench's activation floor: every element written, nothing past the end.
#include "permdnn/kernels/stream.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/kernels/dispatch.h"

namespace permdnn::kernels {
namespace {

TEST(StreamSum, SumsEveryElementOnEveryTarget) {
  for (int64_t target : AvailableSimdTargets()) {
    ForceSimdTarget(target);
    for (std::size_t n : {0, 1, 7, 8, 63, 64, 65, 127, 128, 129, 1000, 4099}) {
      std::vector<float> v(n);
      double want = 0;
      for (std::size_t i = 0; i < n; ++i) {
        v[i] = static_cast<float>((i * 37) % 11) - 5.0f;  // small integers: exact in float
        want += v[i];
      }
      EXPECT_EQ(StreamSum(v), static_cast<float>(want)) << SimdTargetName(target) << " n=" << n;
    }
  }
  ForceSimdTarget(0);
}

TEST(StreamFill, WritesEveryElementAndNothingElseOnEveryTarget) {
  for (int64_t target : AvailableSimdTargets()) {
    ForceSimdTarget(target);
    for (std::size_t n : {0, 1, 7, 8, 63, 64, 65, 127, 128, 129, 1000, 4099}) {
      std::vector<float> v(n + 3, -1.0f);  // three guard elements after the span
      StreamFill({v.data(), n}, 2.5f);
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(v[i], 2.5f) << SimdTargetName(target) << " n=" << n << " i=" << i;
      for (std::size_t i = n; i < n + 3; ++i) ASSERT_EQ(v[i], -1.0f) << SimdTargetName(target) << " n=" << n;
    }
  }
  ForceSimdTarget(0);
}

}  // namespace
}  // namespace permdnn::kernels
