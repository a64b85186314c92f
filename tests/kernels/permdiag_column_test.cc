// Shared-offset permuted-diagonal kernels (kernels/permdiag_column.h): the
// packing round trip, the rejection of matrices whose offsets are not
// shared, and the reference kernels against the general permdiag reference
// on the same matrix. The SIMD rows run against the reference on every
// compiled target in kernel_table_test.cc.
#include "permdnn/kernels/permdiag_column.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::AllNear;
using permdnn::testing::RandomVector;
using permdnn::testing::Tolerance;

PermDiagMatrix Shared(int64_t m, int64_t n, int p, uint64_t seed) {
  return PermDiagMatrix::RandomWithStddev(m, n, p, seed, 1.0).WithColumnOffsets();
}

TEST(PermDiagColumnWeights, BuildUnpackRoundTripAndPadding) {
  for (auto [m, n, p] : {std::tuple<int64_t, int64_t, int>{64, 48, 8}, {13, 10, 4}, {5, 7, 3}, {300, 17, 16}}) {
    const PermDiagMatrix w = Shared(m, n, p, static_cast<uint64_t>(m + n));
    ASSERT_TRUE(HasColumnOffsets(w));
    const PermDiagColumnWeights cw = PermDiagColumnWeights::Build(w);
    EXPECT_EQ(cw.mb_pad % PermDiagColumnWeights::kRowAlign, 0);
    EXPECT_GE(cw.mb_pad, cw.row_blocks);
    const PermDiagMatrix back = cw.Unpack();
    EXPECT_EQ(std::vector<float>(back.values().begin(), back.values().end()),
              std::vector<float>(w.values().begin(), w.values().end()));
    EXPECT_EQ(std::vector<uint16_t>(back.offsets().begin(), back.offsets().end()),
              std::vector<uint16_t>(w.offsets().begin(), w.offsets().end()));
    // Rows past row_blocks in every column are zero (kernels read them).
    for (int64_t r = 0; r < p; ++r)
      for (int64_t J = 0; J < cw.col_blocks; ++J)
        for (int64_t I = cw.row_blocks; I < cw.mb_pad; ++I) ASSERT_EQ(cw.At(r, I, J), 0.0f);
  }
}

TEST(PermDiagColumnWeights, RejectsOffsetsThatDifferWithinABlockColumn) {
  const PermDiagMatrix general = PermDiagMatrix::Random(32, 32, 4, 3);
  ASSERT_FALSE(HasColumnOffsets(general));  // seed 3 draws differing offsets
  try {
    PermDiagColumnWeights::Build(general);
    FAIL() << "accepted a general permdiag matrix";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("one offset per block column"), std::string::npos) << e.what();
  }
}

// The column layout's reference against the general reference, dense and
// sparse inputs, batch 1 and 5; and the public entry points on the
// reference path.
TEST(PermDiagColumnKernels, ReferenceEqualsGeneralPermDiag) {
  for (auto [m, n, p] : {std::tuple<int64_t, int64_t, int>{64, 48, 8}, {13, 10, 4}, {9, 31, 5}, {1, 1, 1}}) {
    const PermDiagMatrix w = Shared(m, n, p, 7);
    const PermDiagColumnWeights cw = PermDiagColumnWeights::Build(w);
    const auto bias = RandomVector(m, 1.0, 2);
    for (double density : {1.0, 0.35, 0.0})
      for (int64_t batch : {1, 5}) {
        const auto x = RandomVector(n * batch, density, 9);
        std::vector<float> expect(m * batch), got(m * batch);
        ref::MatMulRows(w.view(), x.data(), batch, bias.data(), expect.data());
        ref::ColumnMatMulRows(cw, x.data(), batch, bias.data(), got.data());
        EXPECT_TRUE(AllNear<float>(expect, got, Tolerance(cw.col_blocks + 1, 1.0))) << m << "x" << n << " p=" << p;
        SetPath(KernelPath::kReference);
        std::vector<float> via(m * batch);
        if (batch == 1) {
          PermDiagColumnMatVecSparseInput(cw, x, bias, via);
          EXPECT_EQ(via, got);
          PermDiagColumnMatVec(cw, x, bias, via);
        } else {
          PermDiagColumnMatMulRows(cw, x, batch, bias, via);
        }
        SetPath(KernelPath::kSimd);
        EXPECT_EQ(via, got);
      }
  }
}

TEST(PermDiagColumnKernels, ShapeErrorsNameTheOperand) {
  const PermDiagColumnWeights cw = PermDiagColumnWeights::Build(Shared(16, 24, 4, 1));
  std::vector<float> x(23), y(16);
  try {
    PermDiagColumnMatVec(cw, x, {}, y);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PermDiagColumnMatVec: x has 23 entries, expected 24"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace permdnn::kernels
