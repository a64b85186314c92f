// The int16 path of the ternary products (kernels/ternary.h): the input
// quantizers and the float-in / float-out result against the fp32 product.
#include "permdnn/kernels/ternary.h"
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include <gtest/gtest.h>
#include "permdnn/core/error.h"
#include "permdnn/formats/ternary_matrix.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::RandomVector;

TEST(TernaryI16, QuantizeUsesTheWholeRangeAndRoundsToNearest) {
  std::vector<float> x = RandomVector(1000, 1.0, 3);  // 1000: a SIMD body and a scalar tail
  x[17] = -4.0f;                                      // the largest magnitude, negative
  std::vector<int16_t> q(x.size());
  const float s = QuantizeTernaryInput(x, q);
  EXPECT_FLOAT_EQ(s, 4.0f / kTernaryI16Bound);
  EXPECT_EQ(q[17], -kTernaryI16Bound);
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_LE(std::abs(int{q[i]}), kTernaryI16Bound) << i;
    EXPECT_LE(std::fabs(x[i] - s * q[i]), 0.5f * s * (1 + 1e-5f)) << i;
  }
}

TEST(TernaryI16, QuantizeAllZeroAndNonFinite) {
  std::vector<float> x(37, 0.0f);
  std::vector<int16_t> q(x.size(), 5);
  EXPECT_EQ(QuantizeTernaryInput(x, q), 1.0f);
  for (int16_t v : q) EXPECT_EQ(v, 0);
  x[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(QuantizeTernaryInput(x, q), Error);
  // NaN anywhere: in the SIMD body or the scalar tail (Max alone drops it).
  for (std::size_t at : {std::size_t{0}, std::size_t{17}, std::size_t{36}}) {
    std::vector<float> y(37, 1.0f);
    y[at] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(QuantizeTernaryInput(y, q), Error) << at;
  }
  std::vector<int16_t> short_q(5);
  EXPECT_THROW(QuantizeTernaryInput(x, short_q), Error);
}

TEST(TernaryI16, QuantizeAtACalibratedScaleSaturates) {
  std::vector<float> x = {0.0f, 0.5f, -0.5f, 1.0f, 3.0f, -3.0f, 0.00049f, 0.00051f};
  for (int i = 0; i < 40; ++i) x.push_back(2.0f * static_cast<float>(i - 20));  // a SIMD body
  std::vector<int16_t> q(x.size());
  QuantizeTernaryInputAt(x, 1.0f / kTernaryI16Bound, q);  // range [-1, 1]
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 512);  // 511.5 rounds to even
  EXPECT_EQ(q[2], -512);
  EXPECT_EQ(q[3], kTernaryI16Bound);
  EXPECT_EQ(q[4], kTernaryI16Bound);  // past the range: saturated
  EXPECT_EQ(q[5], -kTernaryI16Bound);
  EXPECT_EQ(q[6], 1);
  EXPECT_EQ(q[7], 1);
  for (std::size_t i = 8; i < x.size(); ++i) EXPECT_EQ(std::abs(int{q[i]}), x[i] == 0 ? 0 : kTernaryI16Bound) << i;
  EXPECT_THROW(QuantizeTernaryInputAt(x, 0.0f, q), Error);
  EXPECT_THROW(QuantizeTernaryInputAt(x, 1e-44f, q), Error);  // subnormal: 1 / scale is inf
  // NaN gives 0 in the SIMD body and in the tail.
  std::vector<float> z(37, 0.5f);
  z[5] = z[36] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int16_t> zq(z.size(), 7);
  QuantizeTernaryInputAt(z, 1.0f / kTernaryI16Bound, zq);
  EXPECT_EQ(zq[5], 0);
  EXPECT_EQ(zq[36], 0);
  EXPECT_EQ(zq[4], 512);
}

// Float X quantized, then the int16 product: within the quantization's
// error of the fp32 product on every row (lists below 32 rows, the lookup
// tables from 32).
TEST(TernaryI16, CloseToTheFp32Product) {
  for (int64_t rows : {16, 64}) {
    const int64_t cols = 288, batch = 100;
    const TernaryPack w =
        TernaryPack::Build(Ternarize(RandomVector(rows * cols, 1.0, 5), rows, cols, 144, 0.05, 0.5).matrix);
    const std::vector<float> x = RandomVector(cols * batch, 1.0, 6), bias = RandomVector(rows, 1.0, 7);
    std::vector<int16_t> q(x.size());
    const float s = QuantizeTernaryInput(x, q);
    std::vector<float> y32(rows * batch), y16(rows * batch);
    TernaryMatMul(w, x, batch, bias, y32);
    TernaryMatMulI16(w, q, batch, s, bias, y16);
    // Each of the <= 288 inputs is off by <= s/2, times |scale| <= max scale.
    float smax = 0;
    for (float v : w.matrix.scale()) smax = std::max(smax, std::fabs(v));
    const float tol = 0.5f * s * smax * static_cast<float>(cols) + 1e-4f;
    float worst = 0;
    for (std::size_t i = 0; i < y32.size(); ++i) worst = std::max(worst, std::fabs(y32[i] - y16[i]));
    EXPECT_LT(worst, tol) << rows << " rows";
    EXPECT_GT(worst, 0.0f) << rows << " rows";  // it is the int16 path
  }
}

}  // namespace
}  // namespace permdnn::kernels
