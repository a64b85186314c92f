// Block-circulant (CirCNN): the format against its definition, and every
// product (FFT, direct, transposed, batched, int16) against the dense
// reconstruction, for p in {1,2,3,4,8,16,32} and sizes that are not
// multiples of p.
#include "permdnn/kernels/circulant.h"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::AllEqual;
using permdnn::testing::AllNear;
using permdnn::testing::Tolerance;

std::vector<float> Rand(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = u(rng);
  return v;
}

std::vector<float> DenseMatVec(const std::vector<float>& a, int64_t m, int64_t n, const std::vector<float>& x,
                               bool transpose) {
  std::vector<float> y(static_cast<std::size_t>(transpose ? n : m));
  for (int64_t r = 0; r < (transpose ? n : m); ++r) {
    double acc = 0;
    for (int64_t c = 0; c < (transpose ? m : n); ++c) acc += static_cast<double>(transpose ? a[c * n + r] : a[r * n + c]) * x[c];
    y[r] = static_cast<float>(acc);
  }
  return y;
}

class Circulant : public ::testing::TestWithParam<int> {};

TEST_P(Circulant, FormatFollowsTheDefinition) {
  const int p = GetParam();
  BlockCirculantMatrix w = BlockCirculantMatrix::Random(2 * p + 1, 3 * p - 1 + (p == 1), p, 5);
  std::vector<float> dense = w.ToDense();
  for (int64_t r = 0; r < w.rows(); ++r)
    for (int64_t c = 0; c < w.cols(); ++c)
      ASSERT_EQ(dense[r * w.cols() + c], w.block(r / p, c / p)[((r % p - c % p) % p + p) % p]);
  EXPECT_EQ(w.bytes(), w.stored_values() * 4);
  // Projecting a block-circulant matrix (whole blocks) gives it back exactly.
  BlockCirculantMatrix whole = BlockCirculantMatrix::Random(3 * p, 2 * p, p, 6);
  auto proj = BlockCirculantMatrix::FromDense(whole.ToDense(), 3 * p, 2 * p, p);
  EXPECT_NEAR(proj.kept_energy, 1.0, 1e-6);
  EXPECT_EQ(proj.matrix.ToDense(), whole.ToDense());
}

TEST_P(Circulant, ProjectionIsLeastSquares) {
  const int p = GetParam();
  const int64_t m = 3 * p + 1, n = 2 * p + 3;
  std::vector<float> a = Rand(m * n, 7);
  auto proj = BlockCirculantMatrix::FromDense(a, m, n, p);
  // The residual is orthogonal to every circulant direction: perturbing one
  // stored value never lowers the squared error.
  auto err = [&](const BlockCirculantMatrix& w) {
    std::vector<float> d = w.ToDense();
    double e = 0;
    for (std::size_t i = 0; i < d.size(); ++i) e += (d[i] - a[i]) * static_cast<double>(d[i] - a[i]);
    return e;
  };
  const double base = err(proj.matrix);
  for (int64_t i = 0; i < proj.matrix.stored_values(); i += 3) {
    BlockCirculantMatrix w = proj.matrix;
    w.values()[i] += 0.01f;
    EXPECT_GE(err(w), base - 1e-6) << "value " << i;
  }
  EXPECT_GT(proj.kept_energy, 0.0);
  EXPECT_LE(proj.kept_energy, 1.0 + 1e-9);
}

TEST_P(Circulant, ProductsMatchTheDenseReconstruction) {
  const int p = GetParam();
  for (auto [m, n] : {std::pair<int64_t, int64_t>{1, 1}, {p, p}, {2 * p + 1, 3 * p - 1 + (p == 1)}, {5 * p, 4 * p + 2}}) {
    BlockCirculantMatrix w = BlockCirculantMatrix::Random(m, n, p, m * 13 + n);
    std::vector<float> a = w.ToDense(), x = Rand(n, 1), g = Rand(m, 2), bias = Rand(m, 3);
    std::vector<float> expect = DenseMatVec(a, m, n, x, false);
    for (int64_t r = 0; r < m; ++r) expect[r] += bias[r];
    const double tol = Tolerance(n, 2.0) * 4;
    CirculantFft fft(w);
    std::vector<float> y(m);
    for (int threads : {1, 2}) {
      fft.MatVec(x, bias, y, threads);
      ASSERT_TRUE(AllNear<float>(expect, y, tol)) << "FFT " << m << "x" << n << " p=" << p;
    }
    CirculantMatVecDirect(w, x, bias, y);
    ASSERT_TRUE(AllNear<float>(expect, y, tol)) << "direct";
    ref::CirculantMatVec(w.view(), x.data(), bias.data(), y.data());
    ASSERT_TRUE(AllNear<float>(expect, y, tol)) << "reference";
    std::vector<float> expect_t = DenseMatVec(a, m, n, g, true), xt(n);
    fft.MatVecT(g, xt, 2);
    ASSERT_TRUE(AllNear<float>(expect_t, xt, Tolerance(m, 2.0) * 4)) << "FFT transposed";
    ref::CirculantMatVecT(w.view(), g.data(), xt.data());
    ASSERT_TRUE(AllNear<float>(expect_t, xt, Tolerance(m, 2.0) * 4)) << "reference transposed";
    // Batched, feature-major.
    const int64_t batch = 3;
    std::vector<float> xb = Rand(n * batch, 4), yb(m * batch);
    fft.MatMul(xb, batch, {}, yb, 1);
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<float> xc(n), yc(m);
      for (int64_t j = 0; j < n; ++j) xc[j] = xb[j * batch + b];
      std::vector<float> e = DenseMatVec(a, m, n, xc, false);
      for (int64_t r = 0; r < m; ++r) yc[r] = yb[r * batch + b];
      ASSERT_TRUE(AllNear<float>(e, yc, tol)) << "batched sample " << b;
    }
  }
}

TEST_P(Circulant, Int16IsExact) {
  const int p = GetParam();
  const int64_t m = 2 * p + 1, n = 3 * p + 2;
  BlockCirculantMatrix w = BlockCirculantMatrix::Random(m, n, p, 9);
  std::vector<int16_t> q(w.stored_values());
  const int fw = ChooseFracBits<int16_t>(MaxAbs(w.values()));
  QuantizeSpan<int16_t>(w.values(), fw, q);
  CirculantView<int16_t> view{m, n, p, w.row_blocks(), w.col_blocks(), q.data()};
  std::vector<int16_t> x(n);
  auto xf = Rand(n, 10);
  for (int64_t j = 0; j < n; ++j) x[j] = Quantize<int16_t>(xf[j], 15);
  std::vector<int64_t> acc(m), expect(m);
  CirculantMatVecI16Acc(view, x, acc);
  for (int64_t r = 0; r < m; ++r) {
    int64_t s = 0;
    for (int64_t c = 0; c < n; ++c) s += int64_t{q[(r / p * w.col_blocks() + c / p) * p + ((r % p - c % p) % p + p) % p]} * x[c];
    expect[r] = s;
  }
  EXPECT_TRUE(AllEqual<int64_t>(expect, acc));
}

INSTANTIATE_TEST_SUITE_P(P, Circulant, ::testing::Values(1, 2, 3, 4, 8, 16, 32),
                         [](const auto& info) { return "p" + std::to_string(info.param); });

TEST(CirculantErrors, BadShapesAreNamed) {
  EXPECT_THROW(BlockCirculantMatrix(4, 4, 0), Error);
  EXPECT_THROW(BlockCirculantMatrix::FromParts(4, 4, 2, std::vector<float>(7)), Error);
  EXPECT_THROW(BlockCirculantMatrix::FromDense(std::vector<float>(15), 4, 4, 2), Error);
  BlockCirculantMatrix w = BlockCirculantMatrix::Random(8, 8, 4, 1);
  CirculantFft fft(w);
  std::vector<float> x(7), y(8);
  EXPECT_THROW(fft.MatVec(x, {}, y), Error);
}

}  // namespace
}  // namespace permdnn::kernels
