// Comparison helpers shared by the tests: on failure they print the first
// bad index and its neighbourhood, not just "arrays differ". Also the seeded
// random operands the kernel tests compare on.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace permdnn::testing {

// n values uniform in [-1, 1), each kept with probability `density` (else 0).
inline std::vector<float> RandomVector(int64_t n, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = coin(rng) < density ? value(rng) : 0.0f;
  return v;
}

// Float tolerance in the style of ruy's tests: eps · 64 · √depth · scale,
// where scale bounds one product (max|a| · max|b|).
inline double Tolerance(int64_t depth, double scale) {
  return std::numeric_limits<float>::epsilon() * 64.0 * std::sqrt(static_cast<double>(std::max<int64_t>(depth, 1))) *
             scale + 1e-30;
}

template <typename T>
std::string Neighbourhood(std::span<const T> expected, std::span<const T> actual, std::size_t i) {
  std::ostringstream out;
  std::size_t lo = i >= 3 ? i - 3 : 0, hi = std::min(expected.size(), i + 4);
  for (std::size_t j = lo; j < hi; ++j)
    out << (j == i ? "  > [" : "    [") << j << "] expected " << +expected[j] << " got " << +actual[j]
        << "\n";
  return out.str();
}

template <typename T>
::testing::AssertionResult AllNear(std::span<const T> expected, std::span<const T> actual,
                                   double tolerance) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure() << "size " << actual.size() << " != expected " << expected.size();
  for (std::size_t i = 0; i < expected.size(); ++i) {
    double e = expected[i], a = actual[i];
    if (!(std::fabs(e - a) <= tolerance))
      return ::testing::AssertionFailure()
             << "first mismatch at index " << i << " (tolerance " << tolerance << ")\n"
             << Neighbourhood(expected, actual, i);
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
::testing::AssertionResult AllEqual(std::span<const T> expected, std::span<const T> actual) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure() << "size " << actual.size() << " != expected " << expected.size();
  for (std::size_t i = 0; i < expected.size(); ++i)
    if (expected[i] != actual[i])
      return ::testing::AssertionFailure() << "first mismatch at index " << i << "\n"
                                           << Neighbourhood(expected, actual, i);
  return ::testing::AssertionSuccess();
}

}  // namespace permdnn::testing
