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
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/table.h"
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

// A conv's pack in tap-major quads (u8_taps = 9: four channels at one tap
// per quad) on X's rows in that order gives the same sums as the plain
// order: the same result to the bit, on the SIMD rows and the reference.
TEST(TernaryU8, TapMajorOrderMatchesThePlainOrder) {
  const int64_t C = 6, T = 9, cols = C * T, C4 = 8, rows = 20, batch = 37;  // C not a multiple of 4
  const TernaryMatrix m = Ternarize(RandomVector(rows * cols, 1.0, 11), rows, cols, 2 * T, 0.05, 0.5).matrix;
  const TernaryPack plain = TernaryPack::Build(m), taps = TernaryPack::Build(m, T);
  EXPECT_EQ(plain.u8_quads, TernaryU8Quads(cols));
  EXPECT_EQ(taps.u8_quads, T * C4 / 4);
  std::vector<float> x = RandomVector(cols * batch, 1.0, 12), xt(static_cast<std::size_t>(T * C4 * batch), 0.0f);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < T; ++t)
      std::copy(x.begin() + (c * T + t) * batch, x.begin() + (c * T + t + 1) * batch, xt.begin() + (t * C4 + c) * batch);
  std::vector<uint8_t> q(plain.u8_quads * TernaryU8RowBytes(batch)), qt(taps.u8_quads * TernaryU8RowBytes(batch));
  const TernaryU8Scale s = QuantizeTernaryInputU8(x, batch, q);
  QuantizeTernaryInputU8At(xt, batch, s, qt);
  const std::vector<float> bias = RandomVector(rows, 1.0, 13);
  std::vector<float> y(rows * batch), yt(rows * batch), yr(rows * batch);
  TernaryMatMulU8(plain, q, batch, s, bias, y);
  TernaryMatMulU8(taps, qt, batch, s, bias, yt);
  ref::TernaryMatMulU8(m, T, qt.data(), batch, s, bias.data(), yr.data());
  EXPECT_EQ(y, yt);
  EXPECT_TRUE(permdnn::testing::AllNear<float>(yr, yt, 1e-5));
  EXPECT_THROW(TernaryMatMulU8(taps, q, batch, s, bias, yt), Error);  // the plain order's size
  EXPECT_THROW(TernaryPack::Build(m, 7), Error);                       // 54 columns are not whole taps of 7
  EXPECT_THROW(TernaryMatMulU8(TernaryPack::Build(m, 0), q, batch, s, bias, y), Error);  // no 8-bit tables
}

// The .madd row's 16-bit sums at their bound: every code +1 and every byte
// 255 over 75 quads in one run, so each lane's pair sums reach 510 for 64
// quads between widenings (one more would wrap). Every SIMD row, forced.
TEST(TernaryU8, SumsAtTheBound) {
  const int64_t rows = 3, cols = 300, batch = 20;
  const TernaryPack w =
      TernaryPack::Build(Ternarize(std::vector<float>(rows * cols, 1.0f), rows, cols, cols, 0.05, 1.0).matrix);
  ASSERT_EQ(w.matrix.nonzeros(), rows * cols);
  std::vector<uint8_t> x(w.u8_quads * TernaryU8RowBytes(batch));
  QuantizeTernaryInputU8At(std::vector<float>(cols * batch, 1.0f), batch, {1.0f / 255.0f, 0}, x);
  std::vector<float> want(rows * batch), got(rows * batch);
  ref::TernaryMatMulU8(w.matrix, 1, x.data(), batch, {1.0f, 0}, nullptr, want.data());
  for (float v : want) ASSERT_FLOAT_EQ(v, 255.0f * cols * w.matrix.scale()[0]);
  for (const KernelRow& row : KernelTable()) {
    const KernelProblem q{KernelOp::kTernaryMatMulU8, static_cast<int>(cols), rows, cols, batch, false};
    if (row.op != q.op || row.name.find(".reference") != std::string::npos || !row.admits(q)) continue;
    ForceKernel(row.name);
    TernaryMatMulU8(w, x, batch, {1.0f, 0}, {}, got);
    ForceKernel("");
    EXPECT_EQ(want, got) << row.name;
  }
}

}  // namespace
}  // namespace permdnn::kernels
