// The 8-bit path of the ternary products (kernels/ternary.h): the quad
// layout, the zero point, the quantizers and the float-in / float-out result
// against the fp32 product.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include <gtest/gtest.h>
#include "permdnn/core/error.h"
#include "permdnn/formats/ternary_matrix.h"
#include "permdnn/kernels/ternary.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::RandomVector;

// Element (k, b) of the quad layout.
uint8_t At(const std::vector<uint8_t>& xq, int64_t batch, int64_t k, int64_t b) {
  return xq[static_cast<std::size_t>((k / 4) * TernaryU8RowBytes(batch) + b * 4 + k % 4)];
}

TEST(TernaryU8, NonNegativeInputUsesZeroPointZeroAndAllLevels) {
  const int64_t K = 6, B = 3;  // 6 rows: a second quad half padded
  std::vector<float> x(K * B);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.25f * static_cast<float>(i);
  std::vector<uint8_t> q(TernaryU8Quads(K) * TernaryU8RowBytes(B), 77);
  const TernaryU8Scale s = QuantizeTernaryInputU8(x, B, q);
  EXPECT_EQ(s.zero, 0);
  EXPECT_FLOAT_EQ(s.scale, x.back() / 255.0f);
  EXPECT_EQ(At(q, B, K - 1, B - 1), 255);
  EXPECT_EQ(At(q, B, 0, 0), 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t b = 0; b < B; ++b)
      EXPECT_LE(std::fabs(x[k * B + b] - s.scale * At(q, B, k, b)), 0.5f * s.scale * (1 + 1e-5f)) << k << "," << b;
  for (int64_t k = K; k < 8; ++k)
    for (int64_t b = 0; b < B; ++b) EXPECT_EQ(At(q, B, k, b), 0) << "padding holds the zero point";
  EXPECT_EQ(TernaryU8RowBytes(B), 64);
  for (int64_t k = 0; k < 8; ++k)
    for (int64_t b = B; b < 16; ++b) EXPECT_EQ(At(q, B, k, b), 0) << "padding columns hold the zero point";
}

TEST(TernaryU8, SignedInputUsesZeroPoint128) {
  const std::vector<float> x = {-2.0f, 1.0f, 0.0f, 2.0f, 0.5f};
  std::vector<uint8_t> q(TernaryU8Quads(5) * TernaryU8RowBytes(1));
  const TernaryU8Scale s = QuantizeTernaryInputU8(x, 1, q);
  EXPECT_EQ(s.zero, 128);
  EXPECT_FLOAT_EQ(s.scale, 2.0f / 127.0f);
  EXPECT_EQ(q[0], 1);    // -127 + 128
  EXPECT_EQ(q[3], 255);  // 127 + 128
  EXPECT_EQ(q[2], 128);
  EXPECT_EQ(q[64], 160);  // row 4 (the second quad row): 31.75 → 32, + 128
  EXPECT_EQ(q[65], 128);  // padding of the quad
  EXPECT_EQ(q[4], 128);   // padding column
}

TEST(TernaryU8, QuantizeErrors) {
  std::vector<float> x(8, 0.0f);
  std::vector<uint8_t> q(64, 9);  // 8 values as 4 rows x batch 2: one quad row
  EXPECT_EQ(QuantizeTernaryInputU8(x, 2, q).scale, 1.0f);  // all zero
  for (uint8_t v : q) EXPECT_EQ(v, 0);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(QuantizeTernaryInputU8(x, 2, q), Error);
  x[3] = -std::numeric_limits<float>::infinity();
  EXPECT_THROW(QuantizeTernaryInputU8(x, 2, q), Error);
  std::vector<uint8_t> short_q(8);
  EXPECT_THROW(QuantizeTernaryInputU8(x, 2, short_q), Error);
  EXPECT_THROW(QuantizeTernaryInputU8(x, 3, q), Error);  // 8 values are not whole columns of 3
  // At a calibrated scale: saturation, NaN → the zero point, bad scales and zero points refused.
  const std::vector<float> y = {0.0f, 1.0f, 5.0f, -5.0f, std::numeric_limits<float>::quiet_NaN(), 0.5f, -0.5f, 0.004f};
  std::vector<uint8_t> yq(2 * 64);  // 8 rows, batch 1: two quad rows
  QuantizeTernaryInputU8At(y, 1, {1.0f / 127.0f, 128}, yq);
  EXPECT_EQ(yq[0], 128);
  EXPECT_EQ(yq[1], 255);
  EXPECT_EQ(yq[2], 255);
  EXPECT_EQ(yq[3], 0);  // -128 + 128: saturated at the byte's end
  EXPECT_EQ(yq[64], 128);
  EXPECT_EQ(yq[65], 192);  // 63.5 rounds to even: 64
  EXPECT_EQ(yq[66], 64);
  EXPECT_EQ(yq[67], 129);
  QuantizeTernaryInputU8At(y, 1, {1.0f / 255.0f, 0}, yq);
  EXPECT_EQ(yq[3], 0);  // negative: saturated at 0
  EXPECT_EQ(yq[1], 255);
  EXPECT_THROW(QuantizeTernaryInputU8At(y, 1, {0.0f, 0}, yq), Error);
  EXPECT_THROW(QuantizeTernaryInputU8At(y, 1, {1e-44f, 0}, yq), Error);
  EXPECT_THROW(QuantizeTernaryInputU8At(y, 1, {1.0f, 7}, yq), Error);
}

TEST(TernaryU8, ProductShapeErrors) {
  const TernaryPack w = TernaryPack::Build(Ternarize(RandomVector(4 * 32, 1.0, 5), 4, 32, 16, 0.05, 0.5).matrix);
  std::vector<uint8_t> x(8 * TernaryU8RowBytes(3));
  std::vector<float> y(4 * 3);
  EXPECT_NO_THROW(TernaryMatMulU8(w, x, 3, {1.0f, 0}, {}, y));
  EXPECT_THROW(TernaryMatMulU8(w, x, 17, {1.0f, 0}, {}, y), Error);
  EXPECT_THROW(TernaryMatMulU8(w, x, 3, {1.0f, 300}, {}, y), Error);
  std::vector<float> short_y(5);
  EXPECT_THROW(TernaryMatMulU8(w, x, 3, {1.0f, 0}, {}, short_y), Error);
}

// Float X quantized, then the 8-bit product: within the quantization's
// error of the fp32 product on every row, for a non-negative input (ReLU
// outputs) and a signed one.
TEST(TernaryU8, CloseToTheFp32Product) {
  for (bool relu : {true, false})
    for (int64_t rows : {16, 64}) {
      const int64_t cols = 290, batch = 100;  // 290: a half quad at the end
      const TernaryPack w =
          TernaryPack::Build(Ternarize(RandomVector(rows * cols, 1.0, 5), rows, cols, 145, 0.05, 0.5).matrix);
      std::vector<float> x = RandomVector(cols * batch, 1.0, 6);
      if (relu)
        for (float& v : x) v = std::max(v, 0.0f);
      const std::vector<float> bias = RandomVector(rows, 1.0, 7);
      std::vector<uint8_t> q(TernaryU8Quads(cols) * TernaryU8RowBytes(batch));
      const TernaryU8Scale s = QuantizeTernaryInputU8(x, batch, q);
      EXPECT_EQ(s.zero, relu ? 0 : 128);
      std::vector<float> y32(rows * batch), y8(rows * batch);
      TernaryMatMul(w, x, batch, bias, y32);
      TernaryMatMulU8(w, q, batch, s, bias, y8);
      float smax = 0;
      for (float v : w.matrix.scale()) smax = std::max(smax, std::fabs(v));
      const float tol = 0.5f * s.scale * smax * static_cast<float>(cols) + 1e-4f;
      float worst = 0;
      for (std::size_t i = 0; i < y32.size(); ++i) worst = std::max(worst, std::fabs(y32[i] - y8[i]));
      EXPECT_LT(worst, tol) << rows << " rows, relu " << relu;
      EXPECT_GT(worst, 0.0f) << rows << " rows";  // it is the 8-bit path
    }
}

}  // namespace
}  // namespace permdnn::kernels
