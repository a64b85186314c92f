// The read bound of a weight-streaming kernel, measured: a plain SIMD sum
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

}  // namespace permdnn::kernels
