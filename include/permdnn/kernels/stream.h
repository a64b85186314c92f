// The read and write bounds of streaming kernels, measured. The read bound: a plain SIMD sum
// over a buffer (one vector load and one add per vector, 8 independent
// accumulators, nothing else), Highway-dispatched like the kernels. Timed
// on the same bytes as a kernel, it is the fastest any kernel that must read
// those bytes once can run (`permdnn bench --format read`, BM_StreamRead).
#pragma once

#include <span>

namespace permdnn::kernels {

// The sum of v (float accumulation in 8·N lanes; the value only keeps the
// reads from being optimized away).
float StreamSum(std::span<const float> v);

// Stores `value` into every element of v with full-width vector stores (the
// write bound: the fewest stores that cover v, as a kernel's own output
// stores would be; std::fill in a build without -march uses 16-byte ones).
void StreamFill(std::span<float> v, float value);

}  // namespace permdnn::kernels
