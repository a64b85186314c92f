// SigmoidInPlace / TanhInPlace (activation.h) in Highway with dynamic
// dispatch. Layout: one contiguous float array, processed in whole vectors
// and a scalar tail (no reads past n).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/activation_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <cmath>
#include <cstdint>

#include "permdnn/kernels/activation.h"
#include "permdnn/kernels/dispatch.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void SigmoidImpl(float* x, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto one = hn::Set(d, 1.0f);
  // exp(88) is the largest finite float exp; beyond ±80 the sigmoid is 0 / 1 in float.
  const auto lo = hn::Set(d, -80.0f), hi = hn::Set(d, 80.0f);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::Clamp(hn::Neg(hn::LoadU(d, x + i)), lo, hi);
    hn::StoreU(hn::Div(one, hn::Add(one, hn::Exp(d, v))), d, x + i);
  }
  for (; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void TanhImpl(float* x, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Tanh(d, hn::LoadU(d, x + i)), d, x + i);
  for (; i < n; ++i) x[i] = std::tanh(x[i]);
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(SigmoidImpl);
HWY_EXPORT(TanhImpl);

void SigmoidInPlaceReference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x[i]))));
}
void TanhInPlaceReference(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::tanh(static_cast<double>(x[i])));
}
void SigmoidInPlace(float* x, int64_t n) {
  if (ActivePath() == KernelPath::kReference) return SigmoidInPlaceReference(x, n);
  HWY_DYNAMIC_DISPATCH(SigmoidImpl)(x, n);
}
void TanhInPlace(float* x, int64_t n) {
  if (ActivePath() == KernelPath::kReference) return TanhInPlaceReference(x, n);
  HWY_DYNAMIC_DISPATCH(TanhImpl)(x, n);
}
}  // namespace permdnn::kernels
#endif
