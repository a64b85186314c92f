#include "permdnn/core/aligned_buffer.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace permdnn {
namespace {

bool AllZero(const AlignedBuffer<float>& b) {
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b[i] != 0.0f) return false;
  return true;
}

TEST(AlignedBuffer, SmallBuffersAreLineAlignedAndZeroed) {
  for (std::size_t n : {1u, 7u, 16u, 1000u}) {
    AlignedBuffer<float> b(n);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % kBufferAlignment, 0u) << n;
    EXPECT_TRUE(AllZero(b)) << n;
  }
}

TEST(AlignedBuffer, LargeBuffersAreHugePageAlignedAndZeroed) {
  // 3 MiB of floats: over the 2 MiB threshold, so the block starts on a
  // 2 MiB boundary (huge-page candidate) and is still zeroed everywhere.
  AlignedBuffer<float> b((std::size_t{3} << 20) / sizeof(float));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % (std::size_t{2} << 20), 0u);
  EXPECT_TRUE(AllZero(b));
  b[b.size() - 1] = 1.0f;  // the whole range is writable
  AlignedBuffer<float> copy = b;
  EXPECT_EQ(copy[copy.size() - 1], 1.0f);
}

TEST(AlignedBuffer, GrowingReallocatesZeroedShrinkingKeepsData) {
  AlignedBuffer<float> b(4, 2.0f);
  b.Resize(2);
  EXPECT_EQ(b[1], 2.0f);
  b.Resize(1 << 20);
  EXPECT_TRUE(AllZero(b));
}

}  // namespace
}  // namespace permdnn
