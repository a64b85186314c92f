// CSR / CSC products against the dense reconstruction and the reference
// kernels, on every SIMD target; int16 exact.
#include "permdnn/kernels/sparse.h"

#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/kernels/dispatch.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::AllNear;
using permdnn::testing::RandomVector;
using permdnn::testing::Tolerance;

class Sparse : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { ForceSimdTarget(GetParam()); }
  void TearDown() override { ForceSimdTarget(0); }
};

TEST_P(Sparse, ProductsMatchTheDenseMatrix) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{1, 1}, {7, 3}, {33, 65}, {130, 257}}) {
    for (double density : {0.05, 0.3, 1.0}) {
      std::vector<float> dense = RandomVector(m * n, density, m * 7 + n);
      CsrMatrix csr = CsrMatrix::FromDense(dense, m, n);
      CscMatrix csc = CscMatrix::FromDense(dense, m, n);
      std::vector<float> x = RandomVector(n, 0.35, 3), bias = RandomVector(m, 1.0, 4);
      std::vector<float> expect(m), got(m);
      for (int64_t r = 0; r < m; ++r) {
        double acc = bias[r];
        for (int64_t c = 0; c < n; ++c) acc += static_cast<double>(dense[r * n + c]) * x[c];
        expect[r] = static_cast<float>(acc);
      }
      const double tol = Tolerance(n + 1, 1.0);
      for (int threads : {1, 2}) {
        CsrMatVec(csr, x, bias, got, threads);
        ASSERT_TRUE(AllNear<float>(expect, got, tol)) << "CsrMatVec " << m << "x" << n << " density " << density;
      }
      CscMatVecSparseInput(csc, x, bias, got);
      ASSERT_TRUE(AllNear<float>(expect, got, tol)) << "CscMatVecSparseInput";
      for (int64_t batch : {1, 3, 7, 64}) {
        std::vector<float> xb = RandomVector(n * batch, 1.0, batch), yb(m * batch), eb(m * batch);
        ref::CsrMatMul(csr, xb.data(), batch, bias.data(), eb.data());
        CsrMatMul(csr, xb, batch, bias, yb, 2);
        ASSERT_TRUE(AllNear<float>(eb, yb, tol)) << "CsrMatMul batch " << batch;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, Sparse, ::testing::ValuesIn(AvailableSimdTargets()),
                         [](const auto& info) { return SimdTargetName(info.param); });

TEST(SparseI16, IsExact) {
  std::vector<float> dense = RandomVector(40 * 50, 0.2, 9);
  CsrMatrix csr = CsrMatrix::FromDense(dense, 40, 50);
  std::vector<int16_t> q(csr.nnz()), x(50);
  for (int64_t e = 0; e < csr.nnz(); ++e) q[e] = static_cast<int16_t>(csr.values()[e] * 32767);
  for (int j = 0; j < 50; ++j) x[j] = static_cast<int16_t>((j * 7919) % 65535 - 32767);
  std::vector<int64_t> acc(40);
  CsrMatVecI16Acc(csr, q, x, acc);
  for (int64_t r = 0; r < 40; ++r) {
    int64_t s = 0;
    for (int64_t e = csr.row_ptr()[r]; e < csr.row_ptr()[r + 1]; ++e) s += int64_t{q[e]} * x[csr.col_idx()[e]];
    EXPECT_EQ(acc[r], s);
  }
  EXPECT_THROW(CsrMatVecI16Acc(csr, std::vector<int16_t>(3), x, acc), Error);
}

}  // namespace
}  // namespace permdnn::kernels
