// Packing and the reference loops of the permuted-diagonal convolution
// (include/permdnn/kernels/permdiag_conv.h); the SIMD kernel is in
// permdiag_conv_simd.cc.
#include <algorithm>
#include <cmath>

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
  w.index.Resize(static_cast<std::size_t>(w.out_vectors * nb * lanes));
  w.weights.Resize(static_cast<std::size_t>(w.out_vectors * nb * taps * lanes));
  w.bias.Resize(static_cast<std::size_t>(w.out_vectors * lanes));
  std::fill(w.weights.begin(), w.weights.end(), 0.0f);
  std::fill(w.bias.begin(), w.bias.end(), 0.0f);
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
  for (int64_t o = 0; o < out_channels; ++o)
    w.bias[o] = (bias.empty() ? 0.0f : bias[o]) * (scale.empty() ? 1.0f : scale[o]) + (shift.empty() ? 0.0f : shift[o]);
  return w;
}

void PermDiagConv2DReference(const PermDiagConvPack& w, const PermDiagConvShape& s, const float* x,
                             const PermDiagConvEpilogue& e, float* y) {
  const int L = w.lanes, p = w.p, taps = w.kh * w.kw;
  const int64_t iv_count = (s.in_channels + L - 1) / L, nb = w.col_blocks;
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
              const int64_t in_ch = (J * p) / L * L + w.index[(ov * nb + J) * L + l];
              const int64_t iv = in_ch / L, il = in_ch % L;
              if (iv >= iv_count) continue;
              const float* xv = x + (n * iv_count + iv) * in_plane;
              for (int ky = 0; ky < w.kh; ++ky) {
                const int64_t iy = oy * s.stride_h - s.pad_top + ky;
                if (iy < 0 || iy >= s.in_h) continue;
                for (int kx = 0; kx < w.kw; ++kx) {
                  const int64_t ix = ox * s.stride_w - s.pad_left + kx;
                  if (ix < 0 || ix >= s.in_w) continue;
                  acc += static_cast<double>(w.weights[((ov * nb + J) * taps + ky * w.kw + kx) * L + l]) *
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
