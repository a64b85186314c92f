// StreamSum and StreamFill (stream.h): the read and write bounds, in Highway
// with dynamic dispatch.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/stream_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cstdint>

#include "permdnn/kernels/stream.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

float StreamSumImpl(const float* v, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  auto a4 = hn::Zero(d), a5 = hn::Zero(d), a6 = hn::Zero(d), a7 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 8 * N <= n; i += 8 * N) {
    a0 = hn::Add(a0, hn::LoadU(d, v + i));
    a1 = hn::Add(a1, hn::LoadU(d, v + i + N));
    a2 = hn::Add(a2, hn::LoadU(d, v + i + 2 * N));
    a3 = hn::Add(a3, hn::LoadU(d, v + i + 3 * N));
    a4 = hn::Add(a4, hn::LoadU(d, v + i + 4 * N));
    a5 = hn::Add(a5, hn::LoadU(d, v + i + 5 * N));
    a6 = hn::Add(a6, hn::LoadU(d, v + i + 6 * N));
    a7 = hn::Add(a7, hn::LoadU(d, v + i + 7 * N));
  }
  const auto s = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  float sum = hn::GetLane(hn::SumOfLanes(d, s));
  for (; i < n; ++i) sum += v[i];
  return sum;
}

void StreamFillImpl(float* v, int64_t n, float value) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto x = hn::Set(d, value);
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    hn::StoreU(x, d, v + i);
    hn::StoreU(x, d, v + i + N);
    hn::StoreU(x, d, v + i + 2 * N);
    hn::StoreU(x, d, v + i + 3 * N);
  }
  for (; i < n; ++i) v[i] = value;
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(StreamSumImpl);
HWY_EXPORT(StreamFillImpl);

float StreamSum(std::span<const float> v) {
  return HWY_DYNAMIC_DISPATCH(StreamSumImpl)(v.data(), static_cast<int64_t>(v.size()));
}

void StreamFill(std::span<float> v, float value) {
  HWY_DYNAMIC_DISPATCH(StreamFillImpl)(v.data(), static_cast<int64_t>(v.size()), value);
}
}  // namespace permdnn::kernels
#endif
