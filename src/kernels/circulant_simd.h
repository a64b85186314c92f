// SIMD helpers of the FFT circulant kernel (internal to permdnn::kernels).
// Split-complex arrays; no over-read past n.
#pragma once

#include <cstdint>

namespace permdnn::kernels {

// (*out_r, *out_i) = Σ_j W_j · X_j, or Σ_j conj(W_j) · X_j when conj.
void ComplexDot(const float* wr, const float* wi, const float* xr, const float* xi, int64_t n, bool conj,
                float* out_r, float* out_i);
// a_j += conj(W_j) · g for j < n (g a scalar complex).
void ComplexAxpyConj(const float* wr, const float* wi, float gr, float gi, int64_t n, float* ar, float* ai);
// out[r][q] = bias[r] + Σ_{j < k} m[r·ldm + j] · in[j][q] for r < rows, q < n
// (bias may be null: 0). Row pointers, so the rows may lie anywhere; an out
// row must not be an in row. Zero coefficients are skipped.
void RowMix(const float* m, int rows, int k, int ldm, const float* const* in, float* const* out, const float* bias,
            int64_t n);

}  // namespace permdnn::kernels
