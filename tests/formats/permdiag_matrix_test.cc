// PermDiagMatrix: structure, padding, projection, validation, quantization.
#include "permdnn/formats/permdiag_matrix.h"

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"

namespace permdnn {
namespace {

TEST(PermDiagMatrix, GeometryAndSizes) {
  PermDiagMatrix w(10, 13, 4);  // padded to 12 x 16
  EXPECT_EQ(w.row_blocks(), 3);
  EXPECT_EQ(w.col_blocks(), 4);
  EXPECT_EQ(w.padded_rows(), 12);
  EXPECT_EQ(w.padded_cols(), 16);
  EXPECT_EQ(w.stored_values(), 3 * 4 * 4);
  EXPECT_EQ(w.bytes(), 48 * 4 + 12 * 1);
  PermDiagMatrix big(512, 512, 512);
  EXPECT_EQ(big.bytes(), 512 * 4 + 1 * 2);  // p > 256 needs two-byte offsets
}

TEST(PermDiagMatrix, ExactlyOneNonzeroPerBlockRowAndColumn) {
  for (int p : {1, 2, 3, 4, 7, 8, 16}) {
    PermDiagMatrix w = PermDiagMatrix::Random(3 * p, 5 * p, p, 42 + p);
    std::vector<float> dense = w.ToDense();
    for (int64_t r = 0; r < w.rows(); ++r) {
      for (int64_t J = 0; J < w.col_blocks(); ++J) {
        int count = 0;
        for (int d = 0; d < p; ++d) count += dense[r * w.cols() + J * p + d] != 0.0f;
        EXPECT_EQ(count, 1) << "p=" << p << " row " << r << " block column " << J;
      }
    }
    EXPECT_EQ(w.nnz(), 3 * 5 * p);
    // The definition: W[Ip+c, Jp+(c+k) mod p] = q[c].
    for (int64_t I = 0; I < w.row_blocks(); ++I)
      for (int64_t J = 0; J < w.col_blocks(); ++J)
        for (int c = 0; c < p; ++c)
          ASSERT_EQ(dense[(I * p + c) * w.cols() + J * p + (c + w.offset(I, J)) % p], w.block(I, J)[c]);
  }
}

TEST(PermDiagMatrix, PaddingHoldsNoWeights) {
  PermDiagMatrix w = PermDiagMatrix::Random(10, 13, 4, 7);
  w.Validate();  // throws if a padded position is nonzero
  int64_t inside = 0;
  std::vector<float> dense = w.ToDense();
  for (float v : dense) inside += v != 0.0f;
  EXPECT_EQ(inside, w.nnz());
  EXPECT_LT(w.nnz(), w.stored_values());
}

TEST(PermDiagMatrix, RandomIsSeededAndFanInScaled) {
  PermDiagMatrix a = PermDiagMatrix::Random(256, 1024, 8, 1);
  PermDiagMatrix b = PermDiagMatrix::Random(256, 1024, 8, 1);
  PermDiagMatrix c = PermDiagMatrix::Random(256, 1024, 8, 2);
  EXPECT_TRUE(std::equal(a.values().begin(), a.values().end(), b.values().begin()));
  EXPECT_FALSE(std::equal(a.values().begin(), a.values().end(), c.values().begin()));
  double sq = 0;
  for (float v : a.values()) sq += v * v;
  double var = sq / a.stored_values();
  EXPECT_NEAR(var, 2.0 / 128.0, 0.1 * 2.0 / 128.0);  // He: 2 / fan_in, fan_in = 1024 / 8
}

TEST(PermDiagMatrix, ProjectionRecoversAPermDiagMatrixExactly) {
  for (int p : {1, 2, 4, 5, 8}) {
    PermDiagMatrix w = PermDiagMatrix::Random(23, 17, p, 3);
    auto proj = PermDiagMatrix::FromDense(w.ToDense(), 23, 17, p);
    EXPECT_DOUBLE_EQ(proj.kept_energy, 1.0);
    EXPECT_EQ(proj.matrix.ToDense(), w.ToDense()) << "p=" << p;
  }
}

TEST(PermDiagMatrix, ProjectionKeepsTheBestDiagonal) {
  // A 4x4 dense block whose diagonal k=2 carries the most energy.
  std::vector<float> dense(16, 0.1f);
  for (int c = 0; c < 4; ++c) dense[c * 4 + (c + 2) % 4] = 1.0f + c;
  auto proj = PermDiagMatrix::FromDense(dense, 4, 4, 4);
  EXPECT_EQ(proj.matrix.offset(0, 0), 2);
  double total = 0, kept = 0;
  for (float v : dense) total += static_cast<double>(v) * v;
  for (int c = 0; c < 4; ++c) kept += (1.0 + c) * (1.0 + c);
  EXPECT_NEAR(proj.kept_energy, kept / total, 1e-12);
  // Random dense: the kept fraction is at least 1/p (the mean over offsets).
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> r(64 * 48);
  for (auto& v : r) v = nd(rng);
  auto rp = PermDiagMatrix::FromDense(r, 64, 48, 8);
  EXPECT_GE(rp.kept_energy, 1.0 / 8);
  EXPECT_LE(rp.kept_energy, 1.0);
}

TEST(PermDiagMatrix, ValidationNamesTheProblem) {
  EXPECT_THROW(PermDiagMatrix(4, 4, 0), Error);
  EXPECT_THROW(PermDiagMatrix(0, 4, 2), Error);
  std::vector<float> values(2 * 2 * 2, 1.0f);
  std::vector<uint16_t> offsets = {0, 1, 2, 0};  // offset 2 >= p = 2
  try {
    PermDiagMatrix::FromParts(4, 4, 2, values, offsets);
    FAIL() << "offset >= p accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block (1, 0) has offset 2 >= p"), std::string::npos) << e.what();
  }
  std::vector<uint16_t> good = {0, 1, 1, 0};
  EXPECT_THROW(PermDiagMatrix::FromParts(4, 4, 2, std::vector<float>(7, 1.0f), good), Error);
  EXPECT_THROW(PermDiagMatrix::FromParts(4, 4, 2, values, std::vector<uint16_t>(3)), Error);
  EXPECT_THROW(PermDiagMatrix::FromDense(std::vector<float>(15), 4, 4, 2), Error);
  // A nonzero stored in the padding is refused.
  std::vector<float> pad_values(2 * 2 * 2, 1.0f);
  EXPECT_THROW(PermDiagMatrix::FromParts(3, 4, 2, pad_values, good), Error);
}

TEST(PermDiagMatrix, QuantizeRoundTrip) {
  PermDiagMatrix w = PermDiagMatrix::Random(40, 36, 4, 9);
  PermDiagMatrixI16 q = PermDiagMatrixI16::Quantize(w);
  EXPECT_EQ(q.frac_bits(), ChooseFracBits<int16_t>(MaxAbs(w.values())));
  PermDiagMatrix back = q.Dequantize();
  double step = std::ldexp(1.0, -q.frac_bits());
  for (int64_t i = 0; i < w.stored_values(); ++i)
    ASSERT_LE(std::fabs(back.values()[i] - w.values()[i]), step / 2 + 1e-9) << i;
  EXPECT_EQ(q.bytes(), w.stored_values() * 2 + w.num_blocks());
}

TEST(PermDiagMatrix, WithColumnOffsetsSharesRowBlockZerosOffsetAndZeroesNewPadding) {
  for (auto [m, n, p] : {std::tuple<int64_t, int64_t, int>{13, 10, 4}, {16, 24, 8}, {5, 7, 3}}) {
    const PermDiagMatrix r = PermDiagMatrix::Random(m, n, p, 11);
    const PermDiagMatrix w = r.WithColumnOffsets();
    for (int64_t I = 0; I < w.row_blocks(); ++I)
      for (int64_t J = 0; J < w.col_blocks(); ++J) {
        EXPECT_EQ(w.offset(I, J), r.offset(0, J)) << I << "," << J;
        for (int c = 0; c < p; ++c) {
          const bool pad = I * p + c >= m || J * p + (c + w.offset(I, J)) % p >= n;
          // Values kept where they are not padding under the shared offsets.
          EXPECT_EQ(w.block(I, J)[c], pad ? 0.0f : r.block(I, J)[c]) << I << "," << J << "," << c;
        }
      }
  }
}

}  // namespace
}  // namespace permdnn
