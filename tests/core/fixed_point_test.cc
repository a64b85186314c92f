// Fixed point: rounding half away from zero, saturation at both edges,
// scale selection, and requantization of exact accumulators.
#include "permdnn/core/fixed_point.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace permdnn {
namespace {

TEST(FixedPoint, QuantizeRoundsHalfAwayFromZero) {
  // frac_bits = 1: step 0.5, so x = 0.25 is exactly half a step.
  EXPECT_EQ(Quantize<int16_t>(0.25f, 1), 1);
  EXPECT_EQ(Quantize<int16_t>(-0.25f, 1), -1);
  EXPECT_EQ(Quantize<int16_t>(0.24f, 1), 0);
  EXPECT_EQ(Quantize<int16_t>(0.75f, 1), 2);
  EXPECT_EQ(Quantize<int16_t>(-0.75f, 1), -2);
  EXPECT_EQ(Quantize<int8_t>(2.5f, 0), 3);
  EXPECT_EQ(Quantize<int8_t>(-2.5f, 0), -3);
}

TEST(FixedPoint, QuantizeSaturatesSymmetrically) {
  EXPECT_EQ(Quantize<int16_t>(1e9f, 0), 32767);
  EXPECT_EQ(Quantize<int16_t>(-1e9f, 0), -32767);
  EXPECT_EQ(Quantize<int16_t>(32767.4f, 0), 32767);
  EXPECT_EQ(Quantize<int16_t>(32767.5f, 0), 32767);   // would round to 32768
  EXPECT_EQ(Quantize<int16_t>(-32767.5f, 0), -32767);  // never -32768
  EXPECT_EQ(Quantize<int8_t>(127.5f, 0), 127);
  EXPECT_EQ(Quantize<int8_t>(-200.0f, 0), -127);
  EXPECT_EQ(Quantize<int16_t>(std::numeric_limits<float>::infinity(), 4), 32767);
  EXPECT_EQ(Quantize<int16_t>(-std::numeric_limits<float>::infinity(), 4), -32767);
  EXPECT_EQ(Quantize<int16_t>(std::numeric_limits<float>::quiet_NaN(), 4), 0);
}

TEST(FixedPoint, DequantizeInvertsOnGrid) {
  for (int f : {-3, 0, 5, 14}) {
    for (int q : {-32767, -1, 0, 1, 12345, 32767}) {
      float x = Dequantize<int16_t>(static_cast<int16_t>(q), f);
      EXPECT_EQ(Quantize<int16_t>(x, f), q) << "f=" << f << " q=" << q;
    }
  }
}

TEST(FixedPoint, ChooseFracBitsUsesTheRangeWithoutSaturating) {
  EXPECT_EQ(ChooseFracBits<int16_t>(1.0), 14);   // 1.0·2^14 = 16384 <= 32767, 2^15 would not fit
  EXPECT_EQ(ChooseFracBits<int16_t>(0.99), 15);  // 0.99·2^15 = 32440
  EXPECT_EQ(ChooseFracBits<int8_t>(0.5), 7);     // 0.5·2^7 = 64... 2^8 = 128 > 127
  EXPECT_EQ(ChooseFracBits<int16_t>(0.0), 15);
  for (double m : {1e-6, 0.001, 0.37, 1.0, 3.999, 4.0, 1000.0, 40000.0}) {
    int f = ChooseFracBits<int16_t>(m);
    EXPECT_LE(RoundHalfAway(std::ldexp(m, f)), 32767) << m;
    EXPECT_GT(RoundHalfAway(std::ldexp(m, f + 1)), 32767) << m;
  }
}

TEST(FixedPoint, RequantizeShiftRoundsAndSaturates) {
  EXPECT_EQ(RequantizeShift<int16_t>(5, 1), 3);    // 2.5 -> 3
  EXPECT_EQ(RequantizeShift<int16_t>(-5, 1), -3);  // -2.5 -> -3
  EXPECT_EQ(RequantizeShift<int16_t>(7, 2), 2);    // 1.75 -> 2
  EXPECT_EQ(RequantizeShift<int16_t>(-6, 2), -2);  // -1.5 -> -2
  EXPECT_EQ(RequantizeShift<int16_t>(-5, 2), -1);  // -1.25 -> -1
  EXPECT_EQ(RequantizeShift<int16_t>(int64_t{1} << 40, 10), 32767);
  EXPECT_EQ(RequantizeShift<int16_t>(-(int64_t{1} << 40), 10), -32767);
  EXPECT_EQ(RequantizeShift<int16_t>(100, 0), 100);
  EXPECT_EQ(RequantizeShift<int16_t>(100, -2), 400);
  EXPECT_EQ(RequantizeShift<int16_t>(10000, -2), 32767);
  EXPECT_EQ(RequantizeShift<int16_t>(-10000, -2), -32767);
  EXPECT_EQ(RequantizeShift<int8_t>(1000, 2), 127);
  EXPECT_EQ(RequantizeShift<int16_t>(12345, 70), 0);
}

TEST(FixedPoint, RequantizeMatchesRealArithmetic) {
  // For in-range values the result equals round-half-away(acc / 2^shift).
  for (int64_t acc = -5000; acc <= 5000; acc += 37) {
    for (int shift = 1; shift < 8; ++shift) {
      double expect = RoundHalfAway(static_cast<double>(acc) / (1 << shift));
      EXPECT_EQ(RequantizeShift<int16_t>(acc, shift), static_cast<int16_t>(expect));
    }
  }
}

}  // namespace
}  // namespace permdnn
