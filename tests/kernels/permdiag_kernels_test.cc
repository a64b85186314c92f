// Every SIMD permuted-diagonal kernel against the reference kernel, on every
// SIMD target this CPU has, for p in {1,2,3,4,5,7,8,16,32,64}, shapes that
// are and are not multiples of p, batches {1,2,3,7,64} and input densities
// {1, 0.35, 0}. Integer paths must match exactly.
#include "permdnn/kernels/permdiag.h"

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/table.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::AllEqual;
using permdnn::testing::AllNear;
using permdnn::testing::RandomVector;
using permdnn::testing::Tolerance;

struct Shape {
  int64_t rows, cols;
};

// Shapes for block size p: tiny, multiples of p, and non-multiples.
std::vector<Shape> ShapesFor(int p) {
  std::vector<Shape> s = {{1, 1}, {3, 10}, {p, p}, {2 * p + 1, 3 * p - 1}, {4 * p, 5 * p + 3},
                          {7 * p - 1, 2 * p}};
  if (p <= 8) s.push_back({130, 257});  // several vectors and blocks of each kind
  return s;
}

double MaxAbsOf(std::span<const float> v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

class PermDiagKernels : public ::testing::TestWithParam<std::tuple<int64_t, int>> {
 protected:
  void SetUp() override { ForceSimdTarget(std::get<0>(GetParam())); }
  void TearDown() override { ForceSimdTarget(0); }
  int p() const { return std::get<1>(GetParam()); }
};

TEST_P(PermDiagKernels, MatVec) {
  const int p = this->p();
  for (Shape s : ShapesFor(p)) {
    for (double density : {1.0, 0.35, 0.0}) {
      PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, s.rows * 31 + s.cols, 1.0);
      auto x = RandomVector(s.cols, density, 7);
      auto bias = RandomVector(s.rows, 1.0, 8);
      std::vector<float> expect(s.rows), got(s.rows, -1.0f);
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        ref::MatVec(w.view(), x.data(), b, expect.data());
        for (int threads : {1, 2, 3}) {
          simd::MatVec(w.view(), x.data(), b, got.data(), threads);
          ASSERT_TRUE(AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, MaxAbsOf(w.values()) + 1.0)))
              << "MatVec " << s.rows << "x" << s.cols << " p=" << p << " density=" << density
              << " bias=" << with_bias << " threads=" << threads;
        }
      }
    }
  }
}

TEST_P(PermDiagKernels, MatMul) {
  const int p = this->p();
  for (Shape s : ShapesFor(p)) {
    PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, s.rows * 17 + s.cols, 1.0);
    auto bias = RandomVector(s.rows, 1.0, 3);
    for (int64_t batch : {1, 2, 3, 7, 64}) {
      for (double density : {1.0, 0.35, 0.0}) {
        auto x = RandomVector(s.cols * batch, density, batch);
        std::vector<float> expect(s.rows * batch), got(s.rows * batch, -1.0f);
        ref::MatMul(w.view(), x.data(), batch, bias.data(), expect.data());
        for (int threads : {1, 2}) {
          simd::MatMul(w.view(), x.data(), batch, bias.data(), got.data(), threads);
          ASSERT_TRUE(AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, MaxAbsOf(w.values()) + 1.0)))
              << "MatMul " << s.rows << "x" << s.cols << " p=" << p << " batch=" << batch
              << " density=" << density << " threads=" << threads;
        }
      }
    }
  }
}

// Batch-major Y = X·Wᵀ: batches exercise every sample-tile size (8, 4, 2, 1
// and their tails), with and without bias.
TEST_P(PermDiagKernels, MatMulRows) {
  const int p = this->p();
  std::vector<Shape> shapes = ShapesFor(p);
  // Wide enough for several J-superchunks of the SIMD kernel at batch 64.
  if (p <= 16) shapes.push_back({2 * p + 3, 300 * p + 5});
  for (Shape s : shapes) {
    PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, s.rows * 13 + s.cols, 1.0);
    auto bias = RandomVector(s.rows, 1.0, 5);
    // 128: two 64-sample chunks of the lanes row on AVX-512.
    for (int64_t batch : {1, 2, 3, 7, 13, 64, 128}) {
      for (double density : {1.0, 0.35, 0.0}) {
        auto x = RandomVector(s.cols * batch, density, batch + 100);
        for (bool with_bias : {false, true}) {
          const float* b = with_bias ? bias.data() : nullptr;
          std::vector<float> expect(s.rows * batch), got(s.rows * batch, -1.0f);
          ref::MatMulRows(w.view(), x.data(), batch, b, expect.data());
          for (int threads : {1, 2}) {
            simd::MatMulRows(w.view(), x.data(), batch, b, got.data(), threads);
            ASSERT_TRUE(AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, MaxAbsOf(w.values()) + 1.0)))
                << "MatMulRows " << s.rows << "x" << s.cols << " p=" << p << " batch=" << batch
                << " density=" << density << " bias=" << with_bias << " threads=" << threads;
          }
        }
      }
    }
  }
}

TEST_P(PermDiagKernels, MatVecT) {
  const int p = this->p();
  for (Shape s : ShapesFor(p)) {
    for (double density : {1.0, 0.35, 0.0}) {
      PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, s.rows + 5 * s.cols, 1.0);
      auto g = RandomVector(s.rows, density, 11);
      std::vector<float> expect(s.cols), got(s.cols, -1.0f);
      ref::MatVecT(w.view(), g.data(), expect.data());
      for (int threads : {1, 2, 3}) {
        simd::MatVecT(w.view(), g.data(), got.data(), threads);
        ASSERT_TRUE(AllNear<float>(expect, got, Tolerance(w.row_blocks(), MaxAbsOf(w.values()))))
            << "MatVecT " << s.rows << "x" << s.cols << " p=" << p << " density=" << density
            << " threads=" << threads;
      }
    }
  }
}

TEST_P(PermDiagKernels, MatMulT) {
  const int p = this->p();
  for (Shape s : ShapesFor(p)) {
    PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, 3 * s.rows + s.cols, 1.0);
    for (int64_t batch : {1, 2, 3, 7, 64}) {
      auto g = RandomVector(s.rows * batch, batch == 3 ? 0.35 : 1.0, batch + 1);
      std::vector<float> expect(s.cols * batch), got(s.cols * batch, -1.0f);
      ref::MatMulT(w.view(), g.data(), batch, expect.data());
      for (int threads : {1, 2}) {
        simd::MatMulT(w.view(), g.data(), batch, got.data(), threads);
        ASSERT_TRUE(AllNear<float>(expect, got, Tolerance(w.row_blocks(), MaxAbsOf(w.values()))))
            << "MatMulT " << s.rows << "x" << s.cols << " p=" << p << " batch=" << batch
            << " threads=" << threads;
      }
    }
  }
}

TEST_P(PermDiagKernels, MatVecSparseInput) {
  const int p = this->p();
  for (Shape s : ShapesFor(p)) {
    PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, 9 * s.rows + s.cols, 1.0);
    PermDiagColumnPack pack = PermDiagColumnPack::Build(w);
    auto bias = RandomVector(s.rows, 1.0, 4);
    for (double density : {1.0, 0.35, 0.0}) {
      auto x = RandomVector(s.cols, density, 13);
      std::vector<float> expect(s.rows), got(s.rows, -1.0f), rowwise(s.rows);
      ref::MatVecSparseInput(pack, x.data(), bias.data(), expect.data());
      // The column-wise oracle agrees with the row-wise one.
      ref::MatVec(w.view(), x.data(), bias.data(), rowwise.data());
      const double tol = Tolerance(w.col_blocks() + 1, MaxAbsOf(w.values()) + 1.0);
      ASSERT_TRUE(AllNear<float>(rowwise, expect, tol));
      for (int threads : {1, 2, 3}) {
        simd::MatVecSparseInput(pack, x.data(), bias.data(), got.data(), threads);
        ASSERT_TRUE(AllNear<float>(expect, got, tol))
            << "MatVecSparseInput " << s.rows << "x" << s.cols << " p=" << p << " density=" << density
            << " threads=" << threads;
      }
    }
  }
}

// The row pack (chunk-major, grouped row blocks): its reference kernel reads
// the layout directly and must agree with the row-major oracle; the SIMD
// kernel must agree with both. The last shape has 4 groups and a partial
// fifth, and 4 chunks with the last one partial (512/p column blocks per
// chunk), so both stream counts (2 and 4 chunks side by side) run with and
// without a partial chunk in the set.
TEST_P(PermDiagKernels, MatVecRowPack) {
  const int p = this->p();
  const int64_t group = 64 % p == 0 ? 64 / p : 1;
  std::vector<Shape> shapes = ShapesFor(p);
  const Shape big = {(4 * group + 1) * p - 1, (3 * (512 / p) + 5) * p - 1};
  shapes.push_back(big);
  for (Shape s : shapes) {
    PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, 5 * s.rows + s.cols, 1.0);
    // Chunked where UsesChunks allows it, and the row-major copy (forced by
    // a 0-byte limit).
    for (int64_t limit : {PermDiagRowPack::kChunkedMaxBytes, int64_t{0}}) {
    PermDiagRowPack pack = PermDiagRowPack::Build(w, limit);
    ASSERT_EQ(pack.chunked, PermDiagRowPack::UsesChunks(w, limit));
    if (s.rows == big.rows && s.cols == big.cols && limit > 0) ASSERT_EQ(pack.chunked, 64 % p == 0);
    auto bias = RandomVector(s.rows, 1.0, 6);
    for (double density : {1.0, 0.35}) {
      auto x = RandomVector(s.cols, density, 17);
      const double tol = Tolerance(w.col_blocks() + 1, MaxAbsOf(w.values()) + 1.0);
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        std::vector<float> expect(s.rows), packed(s.rows, -1.0f), got(s.rows, -1.0f);
        ref::MatVec(w.view(), x.data(), b, expect.data());
        ref::MatVecPacked(pack, x.data(), b, packed.data());
        ASSERT_TRUE(AllNear<float>(expect, packed, tol)) << "ref::MatVecPacked " << s.rows << "x" << s.cols << " p=" << p;
        for (int threads : {1, 2, 3}) {
          simd::MatVecPacked(pack, x.data(), b, got.data(), threads);
          ASSERT_TRUE(AllNear<float>(expect, got, tol))
              << "MatVecPacked " << s.rows << "x" << s.cols << " p=" << p << " density=" << density
              << " bias=" << with_bias << " threads=" << threads << " chunked=" << pack.chunked;
        }
      }
    }
    }
  }
}

TEST_P(PermDiagKernels, MatVecI16IsExact) {
  const int p = this->p();
  std::mt19937 rng(p);
  for (Shape s : ShapesFor(p)) {
    for (double density : {1.0, 0.35, 0.0}) {
      PermDiagMatrix wf = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, s.rows * 7 + s.cols, 1.0);
      PermDiagMatrixI16 w = PermDiagMatrixI16::Quantize(wf);
      // Include the extreme values: ±32767 products stress the accumulator.
      w.values()[0] = w.values()[0] == 0 ? 0 : 32767;
      auto xf = RandomVector(s.cols, density, 21);
      std::vector<int16_t> x(s.cols);
      for (int64_t j = 0; j < s.cols; ++j) x[j] = Quantize<int16_t>(xf[j], 15);
      if (s.cols > 1 && x[1] != 0) x[1] = -32767;
      std::vector<int64_t> expect(s.rows), got(s.rows, -1);
      ref::MatVecI16Acc(w.view(), x.data(), expect.data());
      for (int threads : {1, 2}) {
        simd::MatVecI16Acc(w.view(), x.data(), got.data(), threads);
        ASSERT_TRUE(AllEqual<int64_t>(expect, got))
            << "MatVecI16Acc " << s.rows << "x" << s.cols << " p=" << p << " density=" << density;
      }
    }
  }
}

// The int16 product's capped vectors with a scalar tail: p between the
// capped widths (6: four lanes and two scalar rows; 9 to 15: eight lanes and
// the rest), not in AllParams' p, on every target.
TEST(PermDiagI16, CappedVectorsWithScalarRowsAreExact) {
  for (int64_t target : AvailableSimdTargets()) {
    ForceSimdTarget(target);
    for (int p : {6, 9, 12, 15}) {
      PermDiagMatrixI16 w = PermDiagMatrixI16::Quantize(PermDiagMatrix::RandomWithStddev(5 * p - 2, 7 * p + 3, p, 99 + p, 1.0));
      std::mt19937 rng(static_cast<unsigned>(p));
      std::uniform_int_distribution<int> dist(-32767, 32767);
      std::vector<int16_t> x(static_cast<std::size_t>(w.cols()));
      for (int16_t& v : x) v = static_cast<int16_t>(dist(rng));
      std::vector<int64_t> expect(static_cast<std::size_t>(w.rows())), got(expect.size(), -1);
      ref::MatVecI16Acc(w.view(), x.data(), expect.data());
      for (int threads : {1, 2}) {
        simd::MatVecI16Acc(w.view(), x.data(), got.data(), threads);
        EXPECT_TRUE(AllEqual<int64_t>(expect, got)) << SimdTargetName(target) << " p=" << p << " threads=" << threads;
      }
    }
  }
  ForceSimdTarget(0);
}

std::vector<std::tuple<int64_t, int>> AllParams() {
  std::vector<std::tuple<int64_t, int>> params;
  for (int64_t target : AvailableSimdTargets())
    for (int p : {1, 2, 3, 4, 5, 7, 8, 16, 32, 64}) params.emplace_back(target, p);
  return params;
}

// The lanes pack (permdiag.h): Unpack gives the matrix back bit for bit,
// and the product on it equals the reference on the matrix, with several
// I- and J-chunks (the last ones partial: 150p + 3 rows and 40p + 5 columns
// on AVX-512; at p = 4 also 1203 x 285, past AVX2's 256 x 64 blocks) at
// batch 64 and 128 (the lanes row, where the target admits p; its workers
// start inside an I-chunk on two and three threads) and at batch 3 (another
// row, on the matrix unpacked), with and without bias.
TEST_P(PermDiagKernels, MatMulRowsLanesPack) {
  const int p = this->p();
  std::vector<Shape> shapes = ShapesFor(p);
  if (p <= 16) shapes.push_back({150 * p + 3, 40 * p + 5});
  if (p == 4) shapes.push_back({1203, 285});
  for (Shape s : shapes) {
    PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(s.rows, s.cols, p, s.rows * 11 + s.cols, 1.0);
    const PermDiagLanesPack pack = PermDiagLanesPack::Build(w);
    const PermDiagMatrix back = pack.Unpack();
    ASSERT_TRUE(AllEqual<float>(w.values(), back.values())) << s.rows << "x" << s.cols << " p=" << p;
    ASSERT_TRUE(std::equal(w.offsets().begin(), w.offsets().end(), back.offsets().begin()));
    auto bias = RandomVector(s.rows, 1.0, 6);
    for (int64_t batch : {3, 64, 128}) {
      auto x = RandomVector(s.cols * batch, 1.0, batch + 200);
      for (bool with_bias : {false, true}) {
        const std::span<const float> b = with_bias ? std::span<const float>(bias) : std::span<const float>();
        std::vector<float> expect(s.rows * batch);
        ref::MatMulRows(w.view(), x.data(), batch, with_bias ? bias.data() : nullptr, expect.data());
        for (int threads : {1, 2, 3}) {
          std::vector<float> got(s.rows * batch, -1.0f);
          PermDiagMatMulRows(pack, x, batch, b, got, threads);
          ASSERT_TRUE(AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, MaxAbsOf(w.values()) + 1.0)))
              << "lanes pack " << s.rows << "x" << s.cols << " p=" << p << " batch=" << batch << " bias=" << with_bias
              << " threads=" << threads << " chunks " << pack.chunk_rows << "x" << pack.chunk_cols;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Targets, PermDiagKernels, ::testing::ValuesIn(AllParams()),
    [](const ::testing::TestParamInfo<std::tuple<int64_t, int>>& info) {
      return SimdTargetName(std::get<0>(info.param)) + "_p" + std::to_string(std::get<1>(info.param));
    });

// ---- Public entry points: validation, dispatch switch, requantization ------

TEST(PermDiagPublic, RejectsShapeMismatches) {
  PermDiagMatrix w = PermDiagMatrix::Random(10, 12, 4, 1);
  std::vector<float> x(12), y(10);
  EXPECT_THROW(PermDiagMatVec(w, std::span<const float>(x.data(), 11), {}, y), Error);
  EXPECT_THROW(PermDiagMatVec(w, x, {}, std::span<float>(y.data(), 9)), Error);
  EXPECT_THROW(PermDiagMatVec(w, x, std::vector<float>(3), y), Error);
  EXPECT_THROW(PermDiagMatMul(w, x, 0, {}, y), Error);
  EXPECT_THROW(PermDiagMatMul(w, x, 2, {}, y), Error);
  EXPECT_THROW(PermDiagMatMulRows(w, x, 0, {}, y), Error);
  EXPECT_THROW(PermDiagMatMulRows(w, x, 2, {}, y), Error);
  EXPECT_THROW(PermDiagMatVecT(w, x, y), Error);
  try {
    PermDiagMatVec(w, std::span<const float>(x.data(), 11), {}, y);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x has 11 entries, expected 12"), std::string::npos) << e.what();
  }
}

TEST(PermDiagPublic, ReferencePathCanBeForced) {
  PermDiagMatrix w = PermDiagMatrix::Random(64, 64, 8, 2);
  auto x = RandomVector(64, 1.0, 3);
  std::vector<float> a(64), b(64);
  SetPath(KernelPath::kReference);
  EXPECT_EQ(ActivePath(), KernelPath::kReference);
  PermDiagMatVec(w, x, {}, a);
  SetPath(KernelPath::kSimd);
  PermDiagMatVec(w, x, {}, b);
  EXPECT_TRUE(AllNear<float>(a, b, Tolerance(8, 1.0)));
  std::vector<float> expect(64);
  ref::MatVec(w.view(), x.data(), nullptr, expect.data());
  EXPECT_EQ(a, expect);  // the reference path is the reference kernel, bit for bit
}

TEST(PermDiagPublic, I16RequantizesWithBias) {
  PermDiagMatrix wf = PermDiagMatrix::Random(20, 24, 4, 5);
  PermDiagMatrixI16 w = PermDiagMatrixI16::Quantize(wf);
  std::vector<int16_t> x(24);
  for (int j = 0; j < 24; ++j) x[j] = static_cast<int16_t>((j * 977) % 2001 - 1000);
  std::vector<int64_t> bias(20), acc(20);
  for (int r = 0; r < 20; ++r) bias[r] = r * 1001 - 7000;
  std::vector<int16_t> y(20);
  const int shift = w.frac_bits();
  PermDiagMatVecI16(w, x, bias, shift, y);
  ref::MatVecI16Acc(w.view(), x.data(), acc.data());
  for (int r = 0; r < 20; ++r) EXPECT_EQ(y[r], RequantizeShift<int16_t>(acc[r] + bias[r], shift)) << r;
}

TEST(PermDiagPublic, RowPackLayoutAndErrors) {
  // 3 groups of 8 row blocks (the last partial), 2 chunks of 64 column
  // blocks (the last partial): every block lands in its slot, padding is 0.
  PermDiagMatrix w = PermDiagMatrix::Random(8 * 19 + 5, 8 * 100, 8, 6);
  PermDiagRowPack pack = PermDiagRowPack::Build(w);
  EXPECT_EQ(pack.group, 8);
  EXPECT_EQ(pack.groups, 3);
  EXPECT_EQ(pack.chunk, 64);
  EXPECT_EQ(pack.chunks(), 2);
  EXPECT_EQ(pack.ChunkBlocks(1), 36);
  const int64_t I = 17, J = 70;  // group 2, row 1; chunk 1, step 6
  const int64_t slot = pack.ChunkStart(1) + (2 * 36 + 6) * 8 + 1;
  EXPECT_EQ(pack.offsets[slot], w.offset(I, J));
  EXPECT_EQ(pack.values[slot * 8 + 3], w.block(I, J)[3]);
  const int64_t pad = pack.ChunkStart(1) + (2 * 36 + 6) * 8 + 7;  // row block 23 >= 20
  for (int e = 0; e < 8; ++e) EXPECT_EQ(pack.values[pad * 8 + e], 0.0f);
  // Unpack is Build's inverse, bit for bit.
  PermDiagMatrix back = pack.Unpack();
  EXPECT_TRUE(std::ranges::equal(back.values(), w.values()));
  EXPECT_TRUE(std::ranges::equal(back.offsets(), w.offsets()));
  // One-byte offsets: never more bytes than the matrix beyond the padding.
  EXPECT_EQ(pack.bytes(), (pack.groups * pack.group) * pack.col_blocks * (8 * 4 + 1));

  std::vector<float> x(w.cols()), y(w.rows());
  EXPECT_THROW(PermDiagMatVec(pack, std::span<const float>(x.data(), x.size() - 1), {}, y), Error);
  EXPECT_THROW(PermDiagMatVec(pack, x, std::vector<float>(3), y), Error);
  try {
    PermDiagMatVec(pack, x, {}, std::span<float>(y.data(), 5));
    ADD_FAILURE() << "short y accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("y has 5 entries, expected 157"), std::string::npos) << e.what();
  }
  // p not dividing 64, matrices bigger than the limit and layers too short
  // for whole groups (10 outputs at p = 8: 2 of 8 row blocks) stay
  // row-major, with the matrix's values and offsets as they are.
  for (auto [big, limit] : {std::pair{PermDiagMatrix::Random(600, 700, 12, 1), PermDiagRowPack::kChunkedMaxBytes},
                            std::pair{PermDiagMatrix::Random(64, 64, 8, 2), int64_t{64 * 64 / 8 * 4 - 4}},
                            std::pair{PermDiagMatrix::Random(10, 800, 8, 3), PermDiagRowPack::kChunkedMaxBytes}}) {
    PermDiagRowPack rm = PermDiagRowPack::Build(big, limit);
    EXPECT_FALSE(rm.chunked);
    EXPECT_EQ(rm.bytes(), big.stored_values() * 4 + big.num_blocks() * 2);
    EXPECT_TRUE(std::equal(big.values().begin(), big.values().end(), rm.values.data()));
    EXPECT_TRUE(std::ranges::equal(rm.Unpack().offsets(), big.offsets()));
  }
}

// p = 4: each step of 16 row blocks is stored element-major, element e of
// row block r at e·16 + r (PermDiagRowPack::LaneMajor), padding rows 0.
TEST(PermDiagPublic, RowPackElementMajorAtP4) {
  PermDiagMatrix w = PermDiagMatrix::Random(4 * 44 + 2, 4 * 150, 4, 9);  // 45 row blocks: 3 groups, the last partial
  PermDiagRowPack pack = PermDiagRowPack::Build(w);
  ASSERT_TRUE(pack.chunked);
  ASSERT_TRUE(PermDiagRowPack::LaneMajor(4));
  EXPECT_EQ(pack.group, 16);
  EXPECT_EQ(pack.chunk, 128);
  const int64_t I = 35, J = 140;  // group 2, row 3; chunk 1 (22 blocks), step 12
  const int64_t step = pack.ChunkStart(1) + (2 * 22 + 12) * 16, slot = step + 3;
  EXPECT_EQ(pack.offsets[slot], w.offset(I, J));
  for (int e = 0; e < 4; ++e) {
    EXPECT_EQ(pack.ValueIndex(slot, e), step * 4 + e * 16 + 3);
    EXPECT_EQ(pack.values[step * 4 + e * 16 + 3], w.block(I, J)[e]);
    EXPECT_EQ(pack.values[step * 4 + e * 16 + 15], 0.0f);  // row block 47 >= 45
  }
  PermDiagMatrix back = pack.Unpack();
  EXPECT_TRUE(std::ranges::equal(back.values(), w.values()));
  EXPECT_TRUE(std::ranges::equal(back.offsets(), w.offsets()));
  // The product through the pack's kernel equals the reference on the matrix.
  std::vector<float> x(w.cols()), y(w.rows()), expect(w.rows()), bias(w.rows());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 11) - 5.0f;
  for (std::size_t i = 0; i < bias.size(); ++i) bias[i] = 0.25f * static_cast<float>(i % 3);
  if (ActiveSimdTarget() == "AVX3" || ActiveSimdTarget() == "AVX2")  // the x86 targets with lanes<4>
    EXPECT_EQ(SelectedKernel({KernelOp::kPermDiagMatVecPacked, 4, w.rows(), w.cols(), 1, true}),
              "permdiag.packed.lanes<4>");
  PermDiagMatVec(pack, x, bias, y, 3);  // three workers over the three groups
  SetPath(KernelPath::kReference);
  PermDiagMatVec(w, x, bias, expect);
  SetPath(KernelPath::kSimd);
  for (std::size_t r = 0; r < y.size(); ++r) EXPECT_NEAR(y[r], expect[r], 1e-3f * (1.0f + std::fabs(expect[r]))) << r;
}

// 17.8 MB of weights on one worker: the band (16-24 MiB) where the chunked
// kernel also prefetches each stream.
TEST(PermDiagPublic, RowPackPrefetchingBand) {
  PermDiagMatrix w = PermDiagMatrix::Random(4096, 8704, 8, 7);
  PermDiagRowPack pack = PermDiagRowPack::Build(w);
  ASSERT_TRUE(pack.chunked);
  ASSERT_GT(static_cast<int64_t>(pack.values.size() * sizeof(float)), int64_t{16} << 20);
  auto x = RandomVector(w.cols(), 1.0, 9);
  std::vector<float> expect(w.rows()), got(w.rows());
  ref::MatVec(w.view(), x.data(), nullptr, expect.data());
  PermDiagMatVec(pack, x, {}, got, 1);
  EXPECT_TRUE(AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, MaxAbsOf(w.values()) + 1.0)));
}

TEST(PermDiagPublic, ColumnPackStoresNoIndexBeyondOffsets) {
  PermDiagMatrix w = PermDiagMatrix::Random(64, 96, 8, 4);
  PermDiagColumnPack pack = PermDiagColumnPack::Build(w);
  EXPECT_EQ(static_cast<int64_t>(pack.col_values.size()), w.stored_values());
  EXPECT_EQ(static_cast<int64_t>(pack.col_offsets.size()), w.num_blocks());
}

}  // namespace
}  // namespace permdnn::kernels
