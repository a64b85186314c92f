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
#include "permdnn/kernels/dispatch.h"
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
    // Batched, feature-major: per sample (3), and from kDftBatch samples on
    // the channel-DFT GEMMs, on one and two threads, with the bias.
    for (const int64_t batch : {int64_t{3}, CirculantFft::kDftBatch, int64_t{37}})
      for (int threads : {1, 2}) {
        std::vector<float> xb = Rand(n * batch, 4), yb(m * batch);
        fft.MatMul(xb, batch, bias, yb, threads);
        for (int64_t b = 0; b < batch; ++b) {
          std::vector<float> xc(n), yc(m);
          for (int64_t j = 0; j < n; ++j) xc[j] = xb[j * batch + b];
          std::vector<float> e = DenseMatVec(a, m, n, xc, false);
          for (int64_t r = 0; r < m; ++r) {
            e[r] += bias[r];
            yc[r] = yb[r * batch + b];
          }
          ASSERT_TRUE(AllNear<float>(e, yc, tol)) << "batch " << batch << " threads " << threads << " sample " << b;
        }
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

// The channel-DFT convolution (CirculantChannelDft) against the lifted
// matrix's dense reconstruction: im2col columns x[(ic·taps + t)][q] of `in`
// channels give y[o][q] = bias[o] + Σ D[o][t·nb·p + ic]·x[ic·taps + t][q].
// Forward runs on the columns themselves (a channel's taps·n values as its
// row), which is the im2col of the transformed input. Every compiled SIMD
// target, odd and even p, channels that are not multiples of p, and the
// positions in two ranges (row strides wider than the range).
class CirculantChannelDftTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { ForceSimdTarget(GetParam()); }
  void TearDown() override { ForceSimdTarget(0); }
};

TEST_P(CirculantChannelDftTest, MatchesTheDenseReconstruction) {
  struct Case {
    int p;
    int64_t out, in, taps, n;
  };
  for (const Case c : {Case{2, 6, 2, 9, 36}, Case{4, 16, 16, 9, 50}, Case{8, 24, 20, 1, 70}, Case{3, 10, 7, 4, 33},
                       Case{16, 32, 48, 9, 21}, Case{5, 9, 11, 2, 40}, Case{64, 64, 64, 1, 17}, Case{8, 3, 5, 9, 8},
                       Case{7, 20, 15, 9, 12}, Case{32, 70, 64, 4, 9}}) {
    const int64_t nb = (c.in + c.p - 1) / c.p, nbp = nb * c.p, wide = c.taps * nbp;
    BlockCirculantMatrix lifted = BlockCirculantMatrix::Random(c.out, wide, c.p, c.out * 7 + c.in);
    const std::vector<float> dense = lifted.ToDense(), x = Rand(c.in * c.taps * c.n, 5), bias = Rand(c.out, 6);
    std::vector<float> expect(c.out * c.n);
    for (int64_t o = 0; o < c.out; ++o)
      for (int64_t q = 0; q < c.n; ++q) {
        double acc = bias[o];
        for (int64_t ic = 0; ic < c.in; ++ic)
          for (int64_t t = 0; t < c.taps; ++t)
            acc += static_cast<double>(dense[o * wide + t * nbp + ic]) * x[(ic * c.taps + t) * c.n + q];
        expect[o * c.n + q] = static_cast<float>(acc);
      }
    CirculantChannelDft dft(lifted, c.taps);
    ASSERT_EQ(dft.in_rows(), nbp);
    const int64_t tn = c.taps * c.n;
    std::vector<float> t(dft.in_rows() * tn, NAN), u(dft.out_rows() * c.n, NAN), y(c.out * c.n, NAN);
    // Positions [0, split) and [split, n): each call sees its range only.
    const int64_t split = c.n / 3;
    for (auto [q0, q1] : {std::pair<int64_t, int64_t>{0, split}, {split, c.n}}) {
      for (int64_t tap = 0; tap < c.taps; ++tap)
        dft.Forward(x.data() + tap * c.n + q0, tn, c.in, t.data() + tap * c.n + q0, tn, q1 - q0);
      dft.Products(t.data() + q0, c.n, u.data() + q0, c.n, q1 - q0);
      dft.Inverse(u.data() + q0, c.n, nullptr, bias.data(), y.data() + q0, c.n, c.out, q1 - q0);
    }
    EXPECT_TRUE(AllNear<float>(expect, y, Tolerance(c.in * c.taps, 2.0) * 8))
        << "p=" << c.p << " " << c.out << "x" << c.in << " taps " << c.taps;
    // A per-channel scale (a folded BatchNormalization) and no bias.
    const std::vector<float> scale = Rand(c.out, 7);
    dft.Inverse(u.data(), c.n, scale.data(), nullptr, y.data(), c.n, c.out, c.n);
    for (int64_t o = 0; o < c.out; ++o)
      for (int64_t q = 0; q < c.n; ++q) expect[o * c.n + q] = scale[o] * (expect[o * c.n + q] - bias[o]);
    EXPECT_TRUE(AllNear<float>(expect, y, Tolerance(c.in * c.taps, 2.0) * 8)) << "scaled, p=" << c.p;
    // Real frequencies 0 (and p/2): one product per block pair; complex ones four.
    const int64_t mb = (c.out + c.p - 1) / c.p;
    EXPECT_EQ(dft.product_macs(), (2 * c.p - 2 + c.p % 2) * mb * nb * c.taps);
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, CirculantChannelDftTest, ::testing::ValuesIn(AvailableSimdTargets()),
                         [](const auto& info) { return SimdTargetName(info.param); });

TEST(CirculantChannelDftErrors, ShapesAreChecked) {
  // 2 taps of 3 blocks of 4 would be 24 columns.
  BlockCirculantMatrix w = BlockCirculantMatrix::Random(8, 20, 4, 1);
  EXPECT_THROW(CirculantChannelDft(w, 3), Error);
  EXPECT_THROW(CirculantChannelDft(BlockCirculantMatrix::Random(128, 128, 128, 1), 1), Error);
}

}  // namespace
}  // namespace permdnn::kernels
