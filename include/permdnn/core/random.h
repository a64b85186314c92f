// SplitMix64: a small, fast, well-mixed seeded generator for bulk workload
// generation (a 4M-nonzero matrix in tens of milliseconds, where
// std::mt19937_64 + distributions would take most of a second). Results
// depend only on the seed, on every platform.
#pragma once

#include <cstdint>

namespace permdnn {

struct SplitMix64 {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1].
  double Unit() { return (static_cast<double>(Next() >> 11) + 1.0) * 0x1.0p-53; }
};

}  // namespace permdnn
