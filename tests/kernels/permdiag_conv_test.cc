// The permuted-diagonal convolution (kernels/permdiag_conv.h) against an
// independent oracle: the dense reconstruction of the weights (out channel
// I·p + c reads in channel J·p + (c + k_IJ) mod p), convolved by plain loops
// over plain NCHW tensors in double, then bias, scale/shift (a folded
// normalization), residual and clamp. Both the reference loops and the SIMD
// kernel of every compiled target, for block sizes below, equal to and above
// the lanes, channel counts that leave partial blocks and vectors, 1x1 and
// 3x3 kernels at stride 1 and 2 (the SIMD rows' row-by-row checks are in
// kernel_table_test.cc).
#include "permdnn/kernels/permdiag_conv.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/table.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::AllNear;
using permdnn::testing::RandomVector;
using permdnn::testing::Tolerance;

struct Case {
  int p, kernel, stride;
  int64_t out, in, h, w, batch;
  int pad = -1;  // -1: kernel / 2 on every side
  int end = -1;  // padding at the bottom and right (the output size follows); -1: pad
  bool shared = false;  // offsets shared down each block column (k_IJ = k_J)
};

// Plain [N][C][H][W] <-> blocked [N][C/L][H][W][L].
std::vector<float> Block(const std::vector<float>& x, int64_t n, int64_t c, int64_t hw, int L) {
  const int64_t cv = (c + L - 1) / L;
  std::vector<float> out(n * cv * hw * L, 0.0f);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t q = 0; q < hw; ++q) out[((s * cv + ch / L) * hw + q) * L + ch % L] = x[(s * c + ch) * hw + q];
  return out;
}

class PermDiagConvTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { ForceSimdTarget(GetParam()); }
  void TearDown() override { ForceSimdTarget(0); }
};

TEST_P(PermDiagConvTest, MatchesTheDenseReconstruction) {
  const int L = PermDiagConvLanes();
  const std::vector<Case> cases = {
      {4, 3, 1, 32, 32, 9, 11, 2}, {8, 3, 2, 24, 20, 10, 7, 1}, {16, 1, 1, 40, 33, 5, 6, 1},
      {2, 1, 2, 7, 9, 8, 8, 1},    {32, 3, 1, 64, 64, 4, 5, 1}, {3, 3, 1, 10, 14, 6, 6, 1},
      {4, 3, 1, 6, 5, 3, 17, 2},
      // Tiles of several output vectors (permdiag_conv_simd.cc ConvRun;
      // without padding the 1x1 layers run Conv1x1's runs of two vectors,
      // the padded ones below the four-vector tiles): 1x1 stride 2 with 7
      // vectors on 16 lanes (pairs and a leftover, a partial last vector); 3x3
      // stride 2 wide enough for interior tiles at full width on 16 and 8
      // lanes; weights past 256 KiB (the group-outer loop order).
      {1, 1, 2, 100, 40, 6, 9, 1}, {4, 1, 2, 100, 40, 6, 9, 1}, {4, 3, 2, 48, 40, 10, 18, 1},
      {1, 3, 2, 48, 160, 8, 17, 1},
      // An output over 2 MiB (2.36 MB): the tiles prefetch their output
      // and residual lines (OutputPrefetchPays).
      {4, 3, 1, 128, 16, 48, 48, 2},
      // p equal to the lanes (16 on AVX-512, 8 on AVX2: each column block a
      // whole input vector), with a partial last output vector and a partial
      // last column block.
      {16, 3, 1, 40, 44, 9, 11, 1}, {16, 3, 2, 40, 44, 12, 13, 2}, {8, 3, 1, 20, 28, 9, 10, 1},
      {8, 3, 2, 20, 28, 11, 9, 2}, {16, 3, 1, 32, 32, 18, 18, 1}, {16, 3, 2, 40, 32, 18, 18, 1},
      // Padding other than kernel / 2, so edge tiles skip several halo rows
      // and read zeros for several columns: 3x3 pad 2 at stride 1 (two rows
      // and columns outside on every side) and stride 2 (two at the top,
      // left and bottom, one on the right), and a 1x1 at stride 2 with pad 1
      // whose last row tile reads only padding (bias and residual alone).
      {4, 3, 1, 32, 24, 7, 9, 1, 2}, {8, 3, 2, 24, 20, 9, 8, 1, 2}, {4, 1, 2, 20, 36, 7, 6, 2, 1},
      // Padless 1x1 layers on runs of positions (permdiag_conv_simd.cc
      // Conv1x1): inputs wide enough that a chunk of positions (16 KiB of
      // input) is shorter than the sample, so chunks end inside an output
      // row; at stride 2 a run's positions cross rows.
      {4, 1, 1, 40, 272, 7, 9, 2}, {8, 1, 2, 36, 200, 9, 11, 3},
      // More padless 1x1 layers: 400 and 352 input channels (on 16 lanes a
      // chunk of 16 KiB then holds a single run of 8 positions, on 8 lanes
      // one of 6), p = 16 at stride 2 and p = 8 with partial last output
      // vectors (on 8 lanes the reference and the 1x1 tile), and 3x3 planes
      // (9 positions: runs of 8 and 1 on 16 lanes) in a batch of 5.
      {4, 1, 1, 72, 400, 5, 7, 3}, {16, 1, 2, 40, 352, 7, 9, 2}, {8, 1, 1, 20, 136, 3, 3, 5},
      // 1x1 with padding at the bottom and right only (ONNX pads = [0, 0, 1,
      // 1]): the output outgrows the padless size, so the tiles run it and
      // its last rows and columns read padding (bias and residual alone);
      // at stride 2 an even input gives the extra row and column.
      {4, 1, 1, 40, 40, 5, 6, 1, 0, 1}, {8, 1, 2, 36, 40, 6, 8, 2, 0, 1}, {2, 1, 2, 24, 20, 6, 7, 1, 0, 2},
      // Padded 1x1 layers: the tiles of four output vectors at stride 2 on
      // 16 lanes (7 vectors: one four-vector tile and leftovers alone) and
      // the 1x1 tile at stride 1.
      {4, 1, 2, 100, 40, 6, 9, 1, 1}, {4, 1, 1, 40, 33, 5, 6, 1, 1},
      // Shared offsets (the permdiag-column format): padless 1x1 layers run
      // the .shared rows (runs of four output vectors on 16 lanes, two on 8,
      // sharing each permuted input position; 72, 100 and 88 channels leave
      // 1, 3 and 2 vectors past the fours on 16 lanes, the last of 88 a
      // partial one inside a shared pair), at stride 1 and 2, p below and
      // equal to the lanes; padded ones fall back to the tiles.
      {4, 1, 1, 72, 400, 5, 7, 3, -1, -1, true}, {8, 1, 2, 100, 200, 9, 11, 2, -1, -1, true},
      {4, 1, 1, 88, 64, 6, 5, 2, -1, -1, true},
      {16, 1, 1, 100, 352, 3, 7, 2, -1, -1, true}, {2, 1, 1, 40, 34, 4, 5, 1, -1, -1, true},
      {8, 1, 1, 40, 40, 5, 6, 1, 1, -1, true},
      // p equal to the lanes, 1x1 without padding, at least 4 column blocks
      // (the .rotated row on 8 lanes: blocks in pairs in the order of their
      // shifts, summed in each shift's frame): a partial last block (197
      // channels) and output vector (20 of 24 lanes), runs of 12 positions
      // and a shorter last one (7x9 = 63 positions per sample), two samples;
      // 4 blocks (the fewest it takes); 3 blocks, which it does not take;
      // padded (pad 1), which it hands to the tiles.
      {8, 1, 1, 20, 197, 7, 9, 2}, {8, 1, 1, 20, 32, 5, 5, 1}, {8, 1, 1, 20, 24, 7, 9, 1},
      {8, 1, 1, 20, 40, 5, 6, 1, 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "p=" << c.p << " " << c.kernel << "x" << c.kernel << " s" << c.stride << " pad "
                                      << (c.pad >= 0 ? c.pad : c.kernel / 2) << " end " << c.end << " "
                                      << c.out << "x" << c.in << " " << c.h << "x" << c.w << " lanes " << L
                                      << (c.shared ? " shared" : ""));
    const int pad = c.pad >= 0 ? c.pad : c.kernel / 2, taps = c.kernel * c.kernel, p = c.p;
    const int end = c.end >= 0 ? c.end : pad;
    const int64_t oh = (c.h + pad + end - c.kernel) / c.stride + 1, ow = (c.w + pad + end - c.kernel) / c.stride + 1;
    const int64_t mb = (c.out + p - 1) / p, nb = (c.in + p - 1) / p;
    const uint64_t seed = static_cast<uint64_t>(c.p * 100 + c.out);
    const auto values = RandomVector(mb * nb * p * taps, 1.0, seed);
    std::vector<uint16_t> offsets(mb * nb);
    std::mt19937 rng(static_cast<unsigned>(seed));
    for (auto& k : offsets) k = static_cast<uint16_t>(rng() % p);
    if (c.shared)
      for (int64_t b = nb; b < mb * nb; ++b) offsets[b] = offsets[b % nb];
    const auto bias = RandomVector(c.out, 1.0, seed + 1), scale = RandomVector(c.out, 1.0, seed + 2),
               shift = RandomVector(c.out, 1.0, seed + 3);
    const auto x = RandomVector(c.batch * c.in * c.h * c.w, 1.0, seed + 4);
    const auto residual = RandomVector(c.batch * c.out * oh * ow, 1.0, seed + 5);
    // Oracle in plain layouts.
    std::vector<float> dense(c.out * c.in * taps, 0.0f);
    for (int64_t I = 0; I < mb; ++I)
      for (int64_t J = 0; J < nb; ++J)
        for (int ci = 0; ci < p; ++ci) {
          const int64_t o = I * p + ci, i = J * p + (ci + offsets[I * nb + J]) % p;
          if (o >= c.out || i >= c.in) continue;
          for (int t = 0; t < taps; ++t) dense[(o * c.in + i) * taps + t] = values[((I * nb + J) * p + ci) * taps + t];
        }
    const float lo = -0.5f, hi = 2.0f;
    std::vector<float> want(c.batch * c.out * oh * ow);
    for (int64_t n = 0; n < c.batch; ++n)
      for (int64_t o = 0; o < c.out; ++o)
        for (int64_t y = 0; y < oh; ++y)
          for (int64_t xo = 0; xo < ow; ++xo) {
            double acc = 0;
            for (int64_t i = 0; i < c.in; ++i)
              for (int ky = 0; ky < c.kernel; ++ky)
                for (int kx = 0; kx < c.kernel; ++kx) {
                  const int64_t iy = y * c.stride - pad + ky, ix = xo * c.stride - pad + kx;
                  if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                  acc += static_cast<double>(dense[(o * c.in + i) * taps + ky * c.kernel + kx]) *
                         x[((n * c.in + i) * c.h + iy) * c.w + ix];
                }
            const int64_t at = ((n * c.out + o) * oh + y) * ow + xo;
            const double v = scale[o] * (acc + bias[o]) + shift[o] + residual[at];
            want[at] = static_cast<float>(std::min<double>(std::max<double>(v, lo), hi));
          }
    const PermDiagConvPack w =
        PermDiagConvPack::Build(values, offsets, c.out, c.in, p, c.kernel, c.kernel, L, bias, scale, shift);
    const PermDiagConvShape s{c.batch, c.in, c.out, c.h, c.w, oh, ow, c.kernel, c.kernel, c.stride, c.stride, pad, pad};
    const auto xb = Block(x, c.batch, c.in, c.h * c.w, L);
    const auto rb = Block(residual, c.batch, c.out, oh * ow, L);
    const auto wantb = Block(want, c.batch, c.out, oh * ow, L);
    const PermDiagConvEpilogue e{rb.data(), lo, hi};
    std::vector<float> ref(wantb.size(), 9.0f), simd(wantb.size(), 9.0f);
    PermDiagConv2DReference(w, s, xb.data(), e, ref.data());
    PermDiagConv2D(w, s, xb.data(), e, simd.data(), 2);
    double amax = 0;
    for (float v : scale) amax = std::max(amax, static_cast<double>(std::fabs(v)));
    const double tol = Tolerance(nb * taps + 3, 4.0 * amax);
    EXPECT_TRUE(AllNear<float>(wantb, ref, tol)) << "reference loops";
    EXPECT_TRUE(AllNear<float>(wantb, simd, tol)) << "dispatched kernel";
    KernelProblem q{KernelOp::kPermDiagConv, p, c.out, c.in, c.batch, false};
    q.kh = q.kw = c.kernel;
    q.stride = c.stride;
    q.shared = w.shared_index;
    const bool simd_row = L > 1 && L % p == 0;
    EXPECT_EQ(PermDiagConvSimdAdmits(w, s), simd_row);
    EXPECT_EQ(SelectedKernel(q).rfind("permdiag.conv.reference", 0) != 0, simd_row) << SelectedKernel(q);
    // Where p divides the lanes, the pack finds shared offsets on 1x1 layers
    // of several vectors (a single vector, or p = 1, is trivially shared;
    // for p > lanes each vector holds other rows of a block), and the
    // .shared row runs them.
    if (c.kernel == 1 && p > 1 && w.out_vectors > 1 && simd_row) EXPECT_EQ(w.shared_index, c.shared);
    if (c.shared && simd_row) EXPECT_TRUE(SelectedKernel(q).ends_with(".shared")) << SelectedKernel(q);
    // The rotated row: 8 lanes, p = 8, 1x1 at stride 1 (padded layers fall
    // back to the tiles inside it), at least 4 column blocks, offsets not
    // shared (the .shared row comes first); its pack carries the rotated
    // form on 8 lanes only.
    const bool rotated = L == 8 && p == 8 && c.kernel == 1 && c.stride == 1 && !c.shared && nb >= 4;
    EXPECT_EQ(SelectedKernel(q).ends_with(".rotated"), rotated) << SelectedKernel(q);
    EXPECT_EQ(w.rotated, L == 8 && p == 8 && c.kernel == 1 && nb >= 4 && !w.shared_index);
  }
}

// A rotated pack (p = lanes = 8, 25 column blocks) with hand-set shifts: the
// first output vector's blocks alternate between shifts 3 and 5 (its first
// frame is not 0, six shifts have no blocks, an odd shift padded), the
// second's are all 6 (no move between its pairs, a single final one). The
// pack's pairs are checked on every target; on 8 lanes the .rotated row runs it and equals the reference
// loops, with a partial last run (35 positions: 12, 12, 11).
TEST_P(PermDiagConvTest, RotatedPackPairsWithHandSetShifts) {
  const int p = 8, lanes = 8;
  const int64_t out = 16, in = 200, mb = 2, nb = 25, h = 5, wd = 7;
  const auto values = RandomVector(mb * nb * p, 1.0, 41);
  std::vector<uint16_t> offsets(mb * nb);
  for (int64_t J = 0; J < nb; ++J) {
    offsets[J] = J % 2 == 0 ? 3 : 5;
    offsets[nb + J] = 6;
  }
  const auto bias = RandomVector(out, 1.0, 42);
  const PermDiagConvPack w = PermDiagConvPack::Build(values, offsets, out, in, p, 1, 1, lanes, bias);
  ASSERT_TRUE(w.rotated);
  // Vector 0: shift 3 (blocks 0, 2, .., 24: seven pairs, the last 24 with
  // itself at zero weights), then shift 5 (blocks 1, 3, .., 23: six pairs,
  // the first after a rotation by (3 - 5) mod 8 = 6); vector 1: 13 pairs of
  // shift 6.
  EXPECT_EQ(w.rot_first[0], 0);
  EXPECT_EQ(w.rot_first[1], 13);
  EXPECT_EQ(w.rot_first[2], 26);
  const auto pair = [&](int i) {
    return std::vector<int32_t>(w.rot_pairs.begin() + 4 * i, w.rot_pairs.begin() + 4 * i + 3);
  };
  EXPECT_EQ(pair(0), (std::vector<int32_t>{0, 2, 0}));
  EXPECT_EQ(pair(6), (std::vector<int32_t>{24, 24, 0}));
  EXPECT_EQ(pair(7), (std::vector<int32_t>{1, 3, 6}));
  EXPECT_EQ(pair(13), (std::vector<int32_t>{0, 1, 0}));
  EXPECT_EQ(w.rot_final[0], 5);
  EXPECT_EQ(w.rot_final[1], 6);
  for (int c = 0; c < lanes; ++c) {
    // Block 1 of vector 0 (shift 5) leads pair 7: lane (c + 5) mod 8 holds
    // output lane c's weight; the padded half of pair 6 is zero.
    EXPECT_EQ(w.rot_weights[(7 * 2) * lanes + (c + 5) % lanes], values[(0 * nb + 1) * p + c]);
    EXPECT_EQ(w.rot_weights[(6 * 2 + 1) * lanes + c], 0.0f);
  }
  if (PermDiagConvLanes() != lanes) return;
  const PermDiagConvShape s{1, in, out, h, wd, h, wd, 1, 1, 1, 1, 0, 0};
  const auto x = RandomVector(nb * h * wd * lanes, 1.0, 43);
  const PermDiagConvEpilogue e{};
  std::vector<float> ref(2 * h * wd * lanes, 9.0f), simd(ref.size(), 9.0f);
  PermDiagConv2DReference(w, s, x.data(), e, ref.data());
  PermDiagConv2D(w, s, x.data(), e, simd.data(), 1);
  EXPECT_TRUE(AllNear<float>(ref, simd, Tolerance(nb + 1, 4.0)));
  KernelProblem q{KernelOp::kPermDiagConv, p, out, in, 1, false};
  EXPECT_EQ(SelectedKernel(q), "permdiag.conv.1x1s1.rotated");
}

// BlockedChannelGather, the shared-offset conv's channel gathers: a
// permutation of the channels of a blocked tensor (with and without the
// epilogue's residual and clamp) equals the definition, element by element.
TEST_P(PermDiagConvTest, BlockedChannelGatherPermutesChannels) {
  const int L = PermDiagConvLanes();
  const int64_t vectors = 3, positions = 7, c = vectors * L;
  std::mt19937 rng(11);
  std::vector<int> perm(static_cast<std::size_t>(c));
  for (int64_t i = 0; i < c; ++i) perm[i] = static_cast<int>(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> from(static_cast<std::size_t>(c));
  for (int64_t i = 0; i < c; ++i) from[i] = perm[i] / L * static_cast<int32_t>(positions) * L + perm[i] % L;
  const std::vector<float> x = RandomVector(c * positions, 1.0, 12),
                           r = RandomVector(c * positions, 1.0, 13);
  for (bool epilogue : {false, true}) {
    PermDiagConvEpilogue e;
    if (epilogue) {
      e.residual = r.data();
      e.lo = -0.25f;
      e.hi = 0.5f;
    }
    std::vector<float> y(x.size(), 9.0f);
    BlockedChannelGather(x.data(), from.data(), vectors, positions, L, e, y.data());
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t q = 0; q < positions; ++q) {
        const int64_t at = (ch / L * positions + q) * L + ch % L;
        const float src = x[(perm[ch] / L * positions + q) * L + perm[ch] % L] + (epilogue ? r[at] : 0.0f);
        ASSERT_EQ(y[at], std::min(std::max(src, e.lo), e.hi)) << "channel " << ch << " position " << q;
      }
  }
}

// ProbePermuteIssue, what permdnn_conv_bench sets the 1x1 rows against:
// under each target it reports that target's lanes and three positive,
// finite rates, or zeros where it has no vectors (no timing is asserted:
// the host is shared). Between 0.01 and 100 operations per ns of each
// kind: below any build's (the sanitizer build, its vectors in memory,
// measured 0.12-0.19) and far above what one core issues; a probe whose
// loop the compiler had removed would report thousands.
TEST_P(PermDiagConvTest, PermuteIssueProbeReportsRates) {
  const PermuteIssueRates r = ProbePermuteIssue(0.005);
  EXPECT_EQ(r.lanes, PermDiagConvLanes());
  for (double rate : {r.fma_per_ns, r.permute_per_ns, r.pair_per_ns}) {
    if (r.lanes == 1) {  // no vector target: nothing measured
      EXPECT_EQ(rate, 0.0);
      continue;
    }
    EXPECT_TRUE(std::isfinite(rate));
    EXPECT_GT(rate, 0.01);
    EXPECT_LT(rate, 100.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, PermDiagConvTest, ::testing::ValuesIn(AvailableSimdTargets()),
                         [](const auto& info) { return SimdTargetName(info.param); });

TEST(PermDiagConvPackErrors, SizesAreChecked) {
  const std::vector<float> values(4 * 9, 1.0f);
  const std::vector<uint16_t> offsets(1, 0);
  EXPECT_THROW(PermDiagConvPack::Build(values, offsets, 4, 4, 4, 3, 3, 16, std::vector<float>(3, 0.0f)), Error);
  EXPECT_THROW(PermDiagConvPack::Build(values, offsets, 8, 4, 4, 3, 3, 16), Error);
  EXPECT_NO_THROW(PermDiagConvPack::Build(values, offsets, 4, 4, 4, 3, 3, 16));
}

}  // namespace
}  // namespace permdnn::kernels
