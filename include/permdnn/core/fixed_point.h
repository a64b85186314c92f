// Symmetric fixed point with a per-tensor power-of-two scale.
//
// A tensor is stored as integers q with real value q · 2^-frac_bits. The range
// is symmetric, [-(2^(b-1) - 1), 2^(b-1) - 1] (int16: ±32767, int8: ±127), so
// negation never overflows. Conversion rounds half away from zero and
// saturates. Products accumulate exactly in int64 at scale 2^-(fw + fx) and
// are brought back to a narrow type by RequantizeShift, which rounds half away
// from zero and saturates too. These few functions are the whole arithmetic
// contract: the int16 kernels and the accelerator simulator both call them,
// which is what makes their outputs agree bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

namespace permdnn {

template <typename T>
struct FixedTraits;
template <>
struct FixedTraits<int16_t> {
  static constexpr int kBits = 16;
  static constexpr int32_t kMax = 32767;
};
template <>
struct FixedTraits<int8_t> {
  static constexpr int kBits = 8;
  static constexpr int32_t kMax = 127;
};

// Rounds half away from zero: 2.5 -> 3, -2.5 -> -3.
inline double RoundHalfAway(double x) { return x < 0 ? -std::floor(-x + 0.5) : std::floor(x + 0.5); }

// Real value -> fixed point of type T with `frac_bits` fractional bits.
// NaN maps to 0; ±inf saturate.
template <typename T>
inline T Quantize(float x, int frac_bits) {
  constexpr double kMax = FixedTraits<T>::kMax;
  if (std::isnan(x)) return 0;
  double scaled = RoundHalfAway(std::ldexp(static_cast<double>(x), frac_bits));
  if (scaled > kMax) scaled = kMax;
  if (scaled < -kMax) scaled = -kMax;
  return static_cast<T>(scaled);
}

template <typename T>
inline float Dequantize(T q, int frac_bits) {
  return static_cast<float>(std::ldexp(static_cast<double>(q), -frac_bits));
}

// The largest frac_bits such that max_abs still fits in T without
// saturation; 0-valued tensors get frac_bits = bits - 1. Clamped to
// [-32, 62] so that shifts stay well defined.
template <typename T>
inline int ChooseFracBits(double max_abs) {
  constexpr int kBits = FixedTraits<T>::kBits;
  if (!(max_abs > 0) || !std::isfinite(max_abs)) return kBits - 1;
  int exponent;
  std::frexp(max_abs, &exponent);  // max_abs = m · 2^exponent, m in [0.5, 1)
  int frac_bits = kBits - 1 - exponent;
  // Rounding may push max_abs·2^f up to exactly 2^(b-1); back off one bit then.
  if (RoundHalfAway(std::ldexp(max_abs, frac_bits)) > FixedTraits<T>::kMax) --frac_bits;
  if (frac_bits < -32) frac_bits = -32;
  if (frac_bits > 62) frac_bits = 62;
  return frac_bits;
}

// Brings an exact accumulator down by `shift` bits (scale 2^-(f_acc) to
// 2^-(f_acc - shift)), rounding half away from zero, then saturates to T.
// A negative shift multiplies (saturating).
template <typename T>
inline T RequantizeShift(int64_t acc, int shift) {
  constexpr int64_t kMax = FixedTraits<T>::kMax;
  int64_t r;
  if (shift > 0) {
    if (shift >= 63) return 0;
    const int64_t half = int64_t{1} << (shift - 1);
    // |acc| <= 2^63 - 1 never overflows here except for INT64_MIN, which an
    // exact sum of int16 products cannot reach.
    r = acc >= 0 ? (acc + half) >> shift : -((-acc + half) >> shift);
  } else if (shift < 0) {
    int s = -shift;
    if (acc == 0) return 0;
    if (s >= 62 || (acc > 0 ? acc > (kMax >> s) : -acc > (kMax >> s)))
      return static_cast<T>(acc > 0 ? kMax : -kMax);
    r = acc << s;
  } else {
    r = acc;
  }
  if (r > kMax) r = kMax;
  if (r < -kMax) r = -kMax;
  return static_cast<T>(r);
}

// Whole-tensor helpers.
template <typename T>
inline void QuantizeSpan(std::span<const float> in, int frac_bits, std::span<T> out) {
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = Quantize<T>(in[i], frac_bits);
}
template <typename T>
inline void DequantizeSpan(std::span<const T> in, int frac_bits, std::span<float> out) {
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = Dequantize<T>(in[i], frac_bits);
}
inline double MaxAbs(std::span<const float> v) {
  double m = 0;
  for (float x : v)
    if (std::isfinite(x) && std::fabs(x) > m) m = std::fabs(x);
  return m;
}

}  // namespace permdnn
