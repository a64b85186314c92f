// Packing and the reference loops of the permuted-diagonal convolution
// (include/permdnn/kernels/permdiag_conv.h); the SIMD kernel is in
// permdiag_conv_simd.cc.
#include <algorithm>
#include <cmath>
#include <vector>

#include "permdnn/core/error.h"
#include "permdnn/kernels/permdiag_conv.h"

namespace permdnn::kernels {

PermDiagConvPack PermDiagConvPack::Build(std::span<const float> values, std::span<const uint16_t> offsets,
                                         int64_t out_channels, int64_t in_channels, int p, int kh, int kw, int lanes,
                                         std::span<const float> bias, std::span<const float> scale,
                                         std::span<const float> shift) {
  PERMDNN_CHECK(p >= 1 && lanes >= 1 && kh >= 1 && kw >= 1, "PermDiagConvPack: p={} lanes={} kernel {}x{}", p, lanes,
                kh, kw);
  const int64_t mb = (out_channels + p - 1) / p, nb = (in_channels + p - 1) / p, taps = int64_t{kh} * kw;
  PERMDNN_CHECK(static_cast<int64_t>(values.size()) == mb * nb * p * taps && static_cast<int64_t>(offsets.size()) == mb * nb,
                "PermDiagConvPack: {} values and {} offsets for {}x{} blocks of p={} and {} taps", values.size(),
                offsets.size(), mb, nb, p, taps);
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == out_channels, "PermDiagConvPack: bias size");
  PERMDNN_CHECK(scale.empty() || static_cast<int64_t>(scale.size()) == out_channels, "PermDiagConvPack: scale size");
  PERMDNN_CHECK(shift.empty() || static_cast<int64_t>(shift.size()) == out_channels, "PermDiagConvPack: shift size");
  PermDiagConvPack w;
  w.p = p;
  w.lanes = lanes;
  w.kh = kh;
  w.kw = kw;
  w.out_channels = out_channels;
  w.in_channels = in_channels;
  w.out_vectors = (out_channels + lanes - 1) / lanes;
  w.col_blocks = nb;
  w.chained = taps > 1 && lanes > 1 && lanes % p == 0;
  const int64_t per_vector = lanes / p;  // blocks per vector (chained)
  w.passes = w.chained ? (nb + per_vector - 1) / per_vector * per_vector : nb;
  const int64_t passes = w.passes;
  w.index.Resize(static_cast<std::size_t>(w.out_vectors * passes * lanes));
  w.weights.Resize(static_cast<std::size_t>(w.out_vectors * passes * taps * lanes));
  w.bias.Resize(static_cast<std::size_t>(w.out_vectors * lanes));
  std::fill(w.weights.begin(), w.weights.end(), 0.0f);
  std::fill(w.bias.begin(), w.bias.end(), 0.0f);
  for (int64_t o = 0; o < out_channels; ++o)
    w.bias[o] = (bias.empty() ? 0.0f : bias[o]) * (scale.empty() ? 1.0f : scale[o]) + (shift.empty() ? 0.0f : shift[o]);
  if (w.chained) {
    w.chain.Resize(static_cast<std::size_t>(w.out_vectors * passes * lanes));
    std::vector<int32_t> inverse(static_cast<std::size_t>(lanes));
    for (int64_t ov = 0; ov < w.out_vectors; ++ov) {
      int32_t* F = w.index.data() + ov * passes * lanes;
      for (int64_t v = 0; v < passes; ++v) {
        const int64_t g = v / per_vector, k = v % per_vector;
        for (int l = 0; l < lanes; ++l) {
          const int64_t b = l / p, c = l % p, jb = (b + k) % per_vector;
          const int64_t o = ov * lanes + l, I = ov * per_vector + b, J = g * per_vector + jb;
          // (The shift is the block's, for its padded rows too: one shift
          // per block keeps F_v a permutation.)
          const bool block = I < mb && J < nb, real = block && o < out_channels;
          const int64_t shift_k = block ? offsets[I * nb + J] % p : 0;
          const int64_t lane = jb * p + (c + shift_k) % p;
          F[v * lanes + l] = static_cast<int32_t>(lane);
          const int64_t in_ch = J * p + (c + shift_k) % p;
          if (real && in_ch < in_channels) {
            const float a = scale.empty() ? 1.0f : scale[o];
            for (int64_t t = 0; t < taps; ++t)
              w.weights[((ov * passes + v) * taps + t) * lanes + lane] = a * values[((I * nb + J) * p + c) * taps + t];
          }
        }
      }
      // chain[v][m] = F_{v-1}[F_v⁻¹[m]]; chain[0] = F_last.
      int32_t* C = w.chain.data() + ov * passes * lanes;
      for (int64_t v = passes - 1; v >= 1; --v) {
        for (int l = 0; l < lanes; ++l) inverse[static_cast<std::size_t>(F[v * lanes + l])] = l;
        for (int m = 0; m < lanes; ++m) C[v * lanes + m] = F[(v - 1) * lanes + inverse[static_cast<std::size_t>(m)]];
      }
      std::copy(F + (passes - 1) * lanes, F + passes * lanes, C);
    }
    return w;
  }
  for (int64_t ov = 0; ov < w.out_vectors; ++ov)
    for (int64_t J = 0; J < nb; ++J)
      for (int L = 0; L < lanes; ++L) {
        const int64_t o = ov * lanes + L, I = o / p, c = o % p;
        const int64_t first = (J * p) / lanes * lanes;  // first channel of the input vector holding J's start
        int32_t rel = static_cast<int32_t>(J * p - first);
        if (o < out_channels && I < mb) {
          const int64_t k = offsets[I * nb + J];
          const int64_t in_ch = J * p + (c + k) % p;
          rel = static_cast<int32_t>(in_ch - first);
          const float a = scale.empty() ? 1.0f : scale[o];
          if (in_ch < in_channels)
            for (int64_t t = 0; t < taps; ++t)
              w.weights[((ov * nb + J) * taps + t) * lanes + L] = a * values[((I * nb + J) * p + c) * taps + t];
        }
        w.index[(ov * nb + J) * lanes + L] = rel;
      }
  // Shared when every real lane of every vector reads what vector 0's lane
  // does (padded lanes carry zero weights, so any index serves them); one
  // vector has nothing to share (its runs keep the general kernel's).
  w.shared_index = w.out_vectors > 1;
  for (int64_t ov = 1; ov < w.out_vectors && w.shared_index; ++ov)
    for (int64_t J = 0; J < nb && w.shared_index; ++J)
      for (int L = 0; L < lanes && ov * lanes + L < out_channels; ++L)
        if (w.index[(ov * nb + J) * lanes + L] != w.index[J * lanes + L]) {
          w.shared_index = false;
          break;
        }
  // Rotated: p = lanes, one tap, on 8 lanes, at least 4 column blocks,
  // offsets not shared (what permdiag_conv_simd.cc's rows may run it on: no
  // second copy of the weights for the others). Block (ov, J)'s shift k is
  // lane 0's index (the vector's first channel always exists; its padded
  // rows have zero weights, so reading any lane serves them). Per output vector the
  // blocks sorted by shift (by J within one), then cut into pairs within
  // each shift, a shift's odd block paired with a zero-weight copy of itself.
  if (taps == 1 && lanes == 8 && p == lanes && nb >= kRotatedMinBlocks && !w.shared_index) {
    w.rotated = true;
    w.rot_first.Resize(static_cast<std::size_t>(w.out_vectors + 1));
    w.rot_final.Resize(static_cast<std::size_t>(w.out_vectors));
    std::vector<int32_t> pairs;  // (a, b, move, 0) per pair
    std::vector<float> pw;       // a's weights, then b's, in the pair's frame
    std::vector<std::vector<int32_t>> by_shift(static_cast<std::size_t>(lanes));
    for (int64_t ov = 0; ov < w.out_vectors; ++ov) {
      w.rot_first[ov] = static_cast<int32_t>(pairs.size() / 4);
      for (auto& v : by_shift) v.clear();
      for (int64_t J = 0; J < nb; ++J)
        by_shift[static_cast<std::size_t>(w.index[(ov * nb + J) * lanes])].push_back(static_cast<int32_t>(J));
      int32_t prev = -1;
      for (int32_t k = 0; k < lanes; ++k) {
        const std::vector<int32_t>& blocks = by_shift[static_cast<std::size_t>(k)];
        for (std::size_t i = 0; i < blocks.size(); i += 2) {
          const bool pad = i + 1 == blocks.size();
          const int32_t A = blocks[i], B = pad ? A : blocks[i + 1];
          pairs.insert(pairs.end(), {A, B, prev < 0 ? 0 : (prev - k + lanes) % lanes, 0});
          for (int half = 0; half < 2; ++half)
            for (int l = 0; l < lanes; ++l)  // lane l holds output lane (l - k) mod lanes
              pw.push_back(half == 1 && pad ? 0.0f
                                            : w.weights[(ov * nb + (half ? B : A)) * lanes + (l - k + lanes) % lanes]);
          prev = k;
        }
      }
      w.rot_final[ov] = prev;
    }
    w.rot_first[w.out_vectors] = static_cast<int32_t>(pairs.size() / 4);
    w.rot_pairs.Resize(pairs.size());
    std::copy(pairs.begin(), pairs.end(), w.rot_pairs.begin());
    w.rot_weights.Resize(pw.size());
    std::copy(pw.begin(), pw.end(), w.rot_weights.begin());
  }
  return w;
}

void PermDiagConv2DReference(const PermDiagConvPack& w, const PermDiagConvShape& s, const float* x,
                             const PermDiagConvEpilogue& e, float* y) {
  const int L = w.lanes, p = w.p, taps = w.kh * w.kw;
  const int64_t iv_count = (s.in_channels + L - 1) / L, nb = w.passes;
  const int64_t in_plane = s.in_h * s.in_w * L;
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t ov = 0; ov < w.out_vectors; ++ov)
      for (int64_t oy = 0; oy < s.out_h; ++oy)
        for (int64_t ox = 0; ox < s.out_w; ++ox)
          for (int l = 0; l < L; ++l) {
            const int64_t o = ov * L + l;
            const int64_t at = ((n * w.out_vectors + ov) * s.out_h + oy) * s.out_w * L + ox * L + l;
            if (o >= w.out_channels) {
              y[at] = 0.0f;
              continue;
            }
            double acc = w.bias[o];
            for (int64_t J = 0; J < nb; ++J) {
              const int32_t lane = w.index[(ov * nb + J) * L + l];
              const int64_t in_ch = (J * p) / L * L + lane;
              const int64_t wl = w.chained ? lane : l;  // (a chained pack: output lane l's weight at lane F[l])
              const int64_t iv = in_ch / L, il = in_ch % L;
              if (iv >= iv_count) continue;
              const float* xv = x + (n * iv_count + iv) * in_plane;
              for (int ky = 0; ky < w.kh; ++ky) {
                const int64_t iy = oy * s.stride_h - s.pad_top + ky;
                if (iy < 0 || iy >= s.in_h) continue;
                for (int kx = 0; kx < w.kw; ++kx) {
                  const int64_t ix = ox * s.stride_w - s.pad_left + kx;
                  if (ix < 0 || ix >= s.in_w) continue;
                  acc += static_cast<double>(w.weights[((ov * nb + J) * taps + ky * w.kw + kx) * L + wl]) *
                         xv[(iy * s.in_w + ix) * L + il];
                }
              }
            }
            float v = static_cast<float>(acc);
            if (e.residual) v += e.residual[at];
            y[at] = std::min(std::max(v, e.lo), e.hi);
          }
}

}  // namespace permdnn::kernels
