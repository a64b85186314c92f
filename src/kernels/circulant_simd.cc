// Split-complex dot products and axpys for the circulant FFT kernel, and the
// row mix of the channel-DFT convolution, in Highway with dynamic dispatch.
// Four products per complex multiply-add; two accumulator pairs hide the FMA
// latency for the short (nb-long) sums.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/circulant_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>

#include "permdnn/core/error.h"
#include "src/kernels/circulant_simd.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void ComplexDotImpl(const float* wr, const float* wi, const float* xr, const float* xi, int64_t n, bool conj,
                    float* out_r, float* out_i) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto re0 = hn::Zero(d), im0 = hn::Zero(d), re1 = hn::Zero(d), im1 = hn::Zero(d);
  // conj flips the sign of wi.
  const auto s = hn::Set(d, conj ? -1.0f : 1.0f);
  int64_t j = 0;
  for (; j + 2 * N <= n; j += 2 * N) {
    const auto a0 = hn::LoadU(d, wr + j), b0 = hn::Mul(s, hn::LoadU(d, wi + j));
    const auto c0 = hn::LoadU(d, xr + j), e0 = hn::LoadU(d, xi + j);
    re0 = hn::MulAdd(a0, c0, re0);
    re0 = hn::NegMulAdd(b0, e0, re0);
    im0 = hn::MulAdd(a0, e0, im0);
    im0 = hn::MulAdd(b0, c0, im0);
    const auto a1 = hn::LoadU(d, wr + j + N), b1 = hn::Mul(s, hn::LoadU(d, wi + j + N));
    const auto c1 = hn::LoadU(d, xr + j + N), e1 = hn::LoadU(d, xi + j + N);
    re1 = hn::MulAdd(a1, c1, re1);
    re1 = hn::NegMulAdd(b1, e1, re1);
    im1 = hn::MulAdd(a1, e1, im1);
    im1 = hn::MulAdd(b1, c1, im1);
  }
  float re = hn::GetLane(hn::SumOfLanes(d, hn::Add(re0, re1)));
  float im = hn::GetLane(hn::SumOfLanes(d, hn::Add(im0, im1)));
  const float sg = conj ? -1.0f : 1.0f;
  for (; j < n; ++j) {
    const float b = sg * wi[j];
    re += wr[j] * xr[j] - b * xi[j];
    im += wr[j] * xi[j] + b * xr[j];
  }
  *out_r = re;
  *out_i = im;
}

void ComplexAxpyConjImpl(const float* wr, const float* wi, float gr, float gi, int64_t n, float* ar, float* ai) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto vgr = hn::Set(d, gr), vgi = hn::Set(d, gi);
  int64_t j = 0;
  for (; j + N <= n; j += N) {
    const auto a = hn::LoadU(d, wr + j), b = hn::LoadU(d, wi + j);
    // conj(a + ib)(gr + i gi) = (a gr + b gi) + i (a gi − b gr)
    hn::StoreU(hn::MulAdd(b, vgi, hn::MulAdd(a, vgr, hn::LoadU(d, ar + j))), d, ar + j);
    hn::StoreU(hn::NegMulAdd(b, vgr, hn::MulAdd(a, vgi, hn::LoadU(d, ai + j))), d, ai + j);
  }
  for (; j < n; ++j) {
    ar[j] += wr[j] * gr + wi[j] * gi;
    ai[j] += wr[j] * gi - wi[j] * gr;
  }
}

// Columns in chunks of kChunk, so that the k input rows of a chunk (2 KiB
// each: in L1 up to p = 16 or so) stay in cache while every output row of it
// is summed (4 vectors at a time).
void RowMixImpl(const float* m, int rows, int k, int ldm, const float* const* in, float* const* out,
                const float* bias, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr int64_t kChunk = 512;
  constexpr int kMaxK = 64;
  int nz[kMaxK];
  float cz[kMaxK];
  for (int64_t q0 = 0; q0 < n; q0 += kChunk) {
    const int64_t q1 = std::min(n, q0 + kChunk);
    for (int r = 0; r < rows; ++r) {
      int cnt = 0;
      for (int j = 0; j < k; ++j)
        if (const float c = m[static_cast<int64_t>(r) * ldm + j]; c != 0.0f) nz[cnt] = j, cz[cnt++] = c;
      const float b0 = bias ? bias[r] : 0.0f;
      const auto vb = hn::Set(d, b0);
      float* o = out[r];
      int64_t q = q0;
      for (; q + 4 * N <= q1; q += 4 * N) {
        auto a0 = vb, a1 = vb, a2 = vb, a3 = vb;
        for (int e = 0; e < cnt; ++e) {
          const auto c = hn::Set(d, cz[e]);
          const float* x = in[nz[e]] + q;
          a0 = hn::MulAdd(c, hn::LoadU(d, x), a0);
          a1 = hn::MulAdd(c, hn::LoadU(d, x + N), a1);
          a2 = hn::MulAdd(c, hn::LoadU(d, x + 2 * N), a2);
          a3 = hn::MulAdd(c, hn::LoadU(d, x + 3 * N), a3);
        }
        hn::StoreU(a0, d, o + q);
        hn::StoreU(a1, d, o + q + N);
        hn::StoreU(a2, d, o + q + 2 * N);
        hn::StoreU(a3, d, o + q + 3 * N);
      }
      for (; q + N <= q1; q += N) {
        auto a = vb;
        for (int e = 0; e < cnt; ++e) a = hn::MulAdd(hn::Set(d, cz[e]), hn::LoadU(d, in[nz[e]] + q), a);
        hn::StoreU(a, d, o + q);
      }
      for (; q < q1; ++q) {
        float a = b0;
        for (int e = 0; e < cnt; ++e) a += cz[e] * in[nz[e]][q];
        o[q] = a;
      }
    }
  }
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(ComplexDotImpl);
HWY_EXPORT(ComplexAxpyConjImpl);
HWY_EXPORT(RowMixImpl);
void RowMix(const float* m, int rows, int k, int ldm, const float* const* in, float* const* out, const float* bias,
            int64_t n) {
  if (k > 64) Fail("RowMix: {} inputs per row (at most 64)", k);
  HWY_DYNAMIC_DISPATCH(RowMixImpl)(m, rows, k, ldm, in, out, bias, n);
}
void ComplexDot(const float* wr, const float* wi, const float* xr, const float* xi, int64_t n, bool conj,
                float* out_r, float* out_i) {
  HWY_DYNAMIC_DISPATCH(ComplexDotImpl)(wr, wi, xr, xi, n, conj, out_r, out_i);
}
void ComplexAxpyConj(const float* wr, const float* wi, float gr, float gi, int64_t n, float* ar, float* ai) {
  HWY_DYNAMIC_DISPATCH(ComplexAxpyConjImpl)(wr, wi, gr, gi, n, ar, ai);
}
}  // namespace permdnn::kernels
#endif
