// CirculantChannelDft (circulant.h): the block-circulant convolution in the
// channel-frequency domain. The transforms are p × p real DFT matrices
// applied to rows (RowMix, Highway); the per-frequency products are sgemm.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include <cblas.h>

#include "permdnn/core/error.h"
#include "permdnn/kernels/circulant.h"
#include "src/kernels/circulant_simd.h"

namespace permdnn::kernels {

CirculantChannelDft::CirculantChannelDft(const BlockCirculantMatrix& lifted, int64_t taps)
    : p_(lifted.p()), mb_(lifted.row_blocks()), taps_(taps) {
  // Several taps: each tap's columns are whole blocks (formats::Lift pads
  // them); one tap (a linear layer) may end in a partial block.
  if (taps < 1 || lifted.col_blocks() % taps != 0 || (taps > 1 && lifted.cols() != lifted.col_blocks() * p_))
    Fail("CirculantChannelDft: a [{}, {}] matrix of p = {} is not {} taps of whole blocks", lifted.rows(),
         lifted.cols(), p_, taps);
  if (p_ > 64) Fail("CirculantChannelDft: p = {} (at most 64)", p_);
  nb_ = lifted.col_blocks() / taps;
  const int p = p_;
  const double two_pi = 2.0 * std::numbers::pi;
  // Frequencies 0..p/2; a real one (0, and p/2 for even p) has one component.
  int64_t off = 0;
  for (int f = 0; 2 * f <= p; ++f) {
    Freq q;
    q.f = f;
    q.s = f == 0 || 2 * f == p ? 1 : 2;
    q.off = off;
    off += q.s;
    for (int c = 0; c < q.s; ++c) {
      slot_freq_.push_back(static_cast<int>(freqs_.size()));
      slot_comp_.push_back(c);
    }
    freqs_.push_back(std::move(q));
  }
  // Forward: component 0 = Σ_d cos(2π f d / p) x_d, component 1 = −Σ_d sin(...) x_d.
  // Inverse: x_c = (1/p)·Σ over all p frequencies, the conjugate pairs folded.
  fwd_.assign(static_cast<std::size_t>(p) * p, 0.0f);
  inv_.assign(static_cast<std::size_t>(p) * p, 0.0f);
  for (int k = 0; k < p; ++k) {
    const Freq& q = freqs_[slot_freq_[k]];
    const bool im = slot_comp_[k] == 1;
    for (int d = 0; d < p; ++d) {
      const double a = two_pi * q.f * d / p;
      // cos(π/2) and the like are ~1e-16, not 0: snapped, so that RowMix
      // skips them (p = 4: a quarter of the forward's coefficients).
      const auto snap = [](double v) { return static_cast<float>(std::fabs(v) < 1e-9 ? 0.0 : v); };
      fwd_[k * p + d] = snap(im ? -std::sin(a) : std::cos(a));
      const double scale = (q.s == 1 ? 1.0 : 2.0) / p;
      inv_[d * p + k] = snap(im ? -scale * std::sin(a) : scale * std::cos(a));
    }
  }
  // Per frequency, per block pair (I, J) and tap: λ = Σ_m v[m]·e^{−2πi f m/p}
  // of the block's defining vector (W[I·p + c, J·p + d] = v[(c − d) mod p]).
  for (Freq& q : freqs_) {
    const int64_t s = q.s, kcols = s * nb_ * taps_;
    q.w.assign(static_cast<std::size_t>(s * mb_ * kcols), 0.0f);
    for (int64_t I = 0; I < mb_; ++I)
      for (int64_t t = 0; t < taps_; ++t)
        for (int64_t J = 0; J < nb_; ++J) {
          const float* v = lifted.block(I, t * nb_ + J);
          double re = 0, im = 0;
          for (int m = 0; m < p; ++m) {
            const double a = two_pi * q.f * m / p;
            re += v[m] * std::cos(a);
            im -= v[m] * std::sin(a);
          }
          auto at = [&](int co, int ci) -> float& { return q.w[(I * s + co) * kcols + (J * s + ci) * taps_ + t]; };
          at(0, 0) = static_cast<float>(re);
          if (s == 2) {
            at(0, 1) = static_cast<float>(-im);
            at(1, 0) = static_cast<float>(im);
            at(1, 1) = static_cast<float>(re);
          }
        }
  }
}

int64_t CirculantChannelDft::product_macs() const {
  int64_t m = 0;
  for (const Freq& q : freqs_) m += q.s * mb_ * q.s * nb_ * taps_;
  return m;
}

void CirculantChannelDft::Forward(const float* x, int64_t ldx, int64_t in, float* t, int64_t ldt, int64_t n) const {
  const float* rows_in[64];
  float* rows_out[64];
  for (int64_t b = 0; b < nb_; ++b) {
    const int k = static_cast<int>(std::clamp<int64_t>(in - b * p_, 0, p_));
    for (int d = 0; d < k; ++d) rows_in[d] = x + (b * p_ + d) * ldx;
    for (int s = 0; s < p_; ++s) {
      const Freq& q = freqs_[slot_freq_[s]];
      rows_out[s] = t + (q.off * nb_ + b * q.s + slot_comp_[s]) * ldt;
    }
    RowMix(fwd_.data(), p_, k, p_, rows_in, rows_out, nullptr, n);
  }
}

void CirculantChannelDft::Products(const float* cols, int64_t ldc, float* u, int64_t ldu, int64_t n) const {
  for (const Freq& q : freqs_) {
    const int64_t m = q.s * mb_, k = q.s * nb_ * taps_;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, q.w.data(), static_cast<int>(k), cols + q.off * nb_ * taps_ * ldc,
                static_cast<int>(ldc), 0.0f, u + q.off * mb_ * ldu, static_cast<int>(ldu));
  }
}

void CirculantChannelDft::Inverse(const float* u, int64_t ldu, const float* scale, const float* bias, float* y,
                                  int64_t ldy, int64_t out, int64_t n) const {
  const float* rows_in[64];
  float* rows_out[64];
  float scaled[64 * 64];  // this block's rows of the inverse times the scale
  for (int64_t I = 0; I < mb_; ++I) {
    const int rows = static_cast<int>(std::clamp<int64_t>(out - I * p_, 0, p_));
    if (rows == 0) break;
    for (int s = 0; s < p_; ++s) {
      const Freq& q = freqs_[slot_freq_[s]];
      rows_in[s] = u + (q.off * mb_ + I * q.s + slot_comp_[s]) * ldu;
    }
    for (int c = 0; c < rows; ++c) rows_out[c] = y + (I * p_ + c) * ldy;
    const float* m = inv_.data();
    if (scale) {
      for (int c = 0; c < rows; ++c)
        for (int k = 0; k < p_; ++k) scaled[c * p_ + k] = scale[I * p_ + c] * inv_[c * p_ + k];
      m = scaled;
    }
    RowMix(m, rows, p_, p_, rows_in, rows_out, bias ? bias + I * p_ : nullptr, n);
  }
}

}  // namespace permdnn::kernels
