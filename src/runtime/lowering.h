// Internal: permuted-diagonal convolution weights <-> dense, shared by
// export (--portable) and compress.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace permdnn::runtime::detail {

// values [mb][nb][p][ksz], offsets [mb][nb] -> dense [out][in][ksz].
std::vector<float> PermDiagConvToDense(std::span<const float> values, std::span<const uint16_t> offsets,
                                       int64_t out, int64_t in, int p, int64_t ksz);

struct ConvProjection {
  std::vector<float> values;     // [mb][nb][p][ksz]
  std::vector<uint16_t> offsets; // [mb][nb]
  double kept_energy = 1.0;
};
// Per block the offset that keeps the most kernel energy (chosen by
// PermDiagMatrix::FromDense on the per-(out, in) kernel norms), kernels copied.
ConvProjection ProjectConv(std::span<const float> dense, int64_t out, int64_t in, int p, int64_t ksz);

}  // namespace permdnn::runtime::detail
