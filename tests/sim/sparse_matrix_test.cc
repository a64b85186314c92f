// The unstructured sparse formats of core (CSC, CSR, EIE packing).
#include "permdnn/formats/sparse_matrix.h"

#include <gtest/gtest.h>

#include <random>

#include "permdnn/core/error.h"
#include "support/compare.h"

namespace permdnn {
namespace {

std::vector<float> RandomDense(int64_t rows, int64_t cols, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::bernoulli_distribution keep(density);
  std::vector<float> d(static_cast<std::size_t>(rows * cols));
  for (auto& v : d) v = keep(rng) ? u(rng) : 0.0f;
  return d;
}

TEST(SparseMatrix, CscAndCsrRoundTripDense) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {17, 5}, {64, 65}}) {
    for (double density : {0.0, 0.1, 0.5, 1.0}) {
      auto dense = RandomDense(rows, cols, density, rows * 100 + cols);
      auto csc = CscMatrix::FromDense(dense, rows, cols);
      auto csr = CsrMatrix::FromDense(dense, rows, cols);
      EXPECT_EQ(csc.nnz(), csr.nnz());
      EXPECT_TRUE(testing::AllEqual<float>(dense, csc.ToDense())) << rows << "x" << cols << " d=" << density;
      EXPECT_TRUE(testing::AllEqual<float>(dense, csr.ToDense()));
      EXPECT_TRUE(testing::AllEqual<float>(dense, CsrMatrix::FromCsc(csc).ToDense()));
      EXPECT_TRUE(testing::AllEqual<float>(dense, CscMatrix::FromCsr(csr).ToDense()));
      EXPECT_EQ(csc.bytes(), csc.nnz() * 8 + (cols + 1) * 4);
    }
  }
}

TEST(SparseMatrix, RandomIsSeededAndHasTheDensity) {
  auto a = CscMatrix::Random(1000, 800, 0.09, 7);
  auto b = CscMatrix::Random(1000, 800, 0.09, 7);
  auto c = CscMatrix::Random(1000, 800, 0.09, 8);
  a.Validate();
  EXPECT_EQ(a.nnz(), b.nnz());
  EXPECT_TRUE(testing::AllEqual<int32_t>(a.row_idx(), b.row_idx()));
  EXPECT_NE(a.nnz(), c.nnz());
  // 72,000 expected nonzeros, binomial sd ~257: 4 sd.
  EXPECT_NEAR(a.density(), 0.09, 4 * 257.0 / 800000.0);
  auto r = CsrMatrix::Random(300, 200, 0.25, 1);
  r.Validate();
  EXPECT_NEAR(r.density(), 0.25, 0.01);
  EXPECT_EQ(CscMatrix::Random(5, 6, 1.0, 1).nnz(), 30);
  EXPECT_EQ(CscMatrix::Random(5, 6, 0.0, 1).nnz(), 0);
}

TEST(SparseMatrix, ValidationNamesTheProblem) {
  EXPECT_THROW(CscMatrix::Random(4, 4, -0.1, 1), Error);
  EXPECT_THROW(CscMatrix::Random(0, 4, 0.5, 1), Error);
  try {
    CscMatrix::FromParts(4, 2, {0, 2, 3}, {3, 1, 0}, {1, 2, 3});
    FAIL() << "unsorted rows accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not strictly increasing"), std::string::npos) << e.what();
  }
  EXPECT_THROW(CscMatrix::FromParts(4, 2, {0, 1, 2}, {0, 4}, {1, 2}), Error);     // row out of range
  EXPECT_THROW(CscMatrix::FromParts(4, 2, {0, 1}, {0}, {1}), Error);              // pointer count
  EXPECT_THROW(CsrMatrix::FromParts(2, 4, {0, 2, 1}, {0, 1}, {1, 2}), Error);     // decreasing
  EXPECT_THROW(CscMatrix::FromDense(std::vector<float>(5), 2, 3), Error);
}

// One column, one PE: gaps of 15 need no padding, 16 one, 32 two.
TEST(EiePacking, PaddingZerosWhenGapsExceedFifteen) {
  const int64_t rows = 100;
  std::vector<int32_t> rows_idx = {15, 32, 65, 66, 98};  // gaps 15, 16, 32, 0, 31
  auto csc = CscMatrix::FromParts(rows, 1, {0, 5}, rows_idx, {1, -1, 0.5f, -0.5f, 0.25f});
  auto packed = EiePackedMatrix::Build(csc, 1, EieCodebook::Linear(1.0));
  EXPECT_EQ(packed.real_entries(), 5);
  EXPECT_EQ(packed.padding_entries(), 0 + 1 + 2 + 0 + 1);
  EXPECT_EQ(packed.entries_in(0, 0), 9);
  // Bytes: one per entry + (cols + 1) 16-bit pointers per PE.
  EXPECT_EQ(packed.bytes(16), 9 + 2 * 2);
  EXPECT_EQ(packed.bytes(12), 9 + 3);  // 24 bits
  auto e = packed.entries(0);
  EXPECT_EQ(e[0].relative_row(), 15);
  EXPECT_FALSE(e[0].is_padding());
  EXPECT_TRUE(e[1].is_padding());
  EXPECT_EQ(e[1].relative_row(), 15);
  EXPECT_EQ(e[2].relative_row(), 0);
  auto back = packed.ToCsc();
  EXPECT_TRUE(testing::AllEqual<int32_t>(csc.row_idx(), back.row_idx()));
}

TEST(EiePacking, InterleavesRowsAndDecodesToTheCodebook) {
  auto csc = CscMatrix::Random(257, 130, 0.07, 3);
  float max_abs = 0;
  for (float v : csc.values()) max_abs = std::max(max_abs, std::fabs(v));
  const auto cb = EieCodebook::Linear(max_abs);
  for (int num_pe : {1, 4, 64}) {
    auto packed = EiePackedMatrix::Build(csc, num_pe, cb);
    EXPECT_EQ(packed.real_entries(), csc.nnz());
    int64_t total = 0;
    for (int pe = 0; pe < num_pe; ++pe) total += static_cast<int64_t>(packed.entries(pe).size());
    EXPECT_EQ(total, packed.total_entries());
    EXPECT_EQ(packed.bytes(16), total + num_pe * (130 + 1) * 2);
    auto back = packed.ToCsc();
    ASSERT_EQ(back.nnz(), csc.nnz());
    EXPECT_TRUE(testing::AllEqual<int32_t>(csc.row_idx(), back.row_idx()));
    for (int64_t i = 0; i < csc.nnz(); ++i) {
      const float want = cb.weights[cb.Encode(csc.values()[i])];
      ASSERT_EQ(back.values()[i], want) << "entry " << i;
      // Nearest level: within half a step (max/7) of it, except around 0,
      // where the middle level is nudged to max/14 (no shared weight is 0).
      ASSERT_LE(std::fabs(want - csc.values()[i]), max_abs / 7.0 + 1e-6);
    }
  }
  // More PEs -> more, shorter per-PE columns -> fewer long gaps.
  EXPECT_GE(EiePackedMatrix::Build(csc, 1, cb).padding_entries(),
            EiePackedMatrix::Build(csc, 64, cb).padding_entries());
}

TEST(EiePacking, RejectsBadArguments) {
  auto csc = CscMatrix::Random(8, 8, 0.5, 1);
  EXPECT_THROW(EiePackedMatrix::Build(csc, 0, EieCodebook::Linear(1)), Error);
  EXPECT_THROW(EieCodebook::Linear(0), Error);
  auto cb = EieCodebook::Linear(1);
  std::swap(cb.weights[3], cb.weights[4]);
  EXPECT_THROW(EiePackedMatrix::Build(csc, 2, cb), Error);
}

}  // namespace
}  // namespace permdnn
