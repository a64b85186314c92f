// The weight gradient of a permuted-diagonal layer, the one product of
// training that the kernels component does not have (LibTorch-free; the
// autograd function in permdiag_layers.h calls it).
//
// For Y = W·X (feature-major: X is cols × B, G = ∂L/∂Y is rows × B, both
// row-major so the B samples of one feature are contiguous):
//
//     ∂L/∂q_IJ[c] = Σ_b G[I·p + c, b] · X[J·p + (c + k_IJ) mod p, b]
//
// i.e. one length-B dot product per stored value; the dense m×n gradient is
// never formed. Output layout is the canonical values layout [mb][nb][p];
// padded positions (row ≥ rows or column ≥ cols) get exactly 0, so padding
// never trains. The SIMD path (Highway, dynamic dispatch; its performance
// model is at the top of src/train/permdiag_grad.cc) works block by block,
// batch-chunked so the slices it reuses stay in L1, and splits row blocks
// over threads (permdnn::ParallelFor), so every worker writes a disjoint
// slice of dq; it is deterministic for a fixed thread count.
#pragma once

#include <cstdint>

#include "permdnn/formats/permdiag_matrix.h"

namespace permdnn::train {

// dq[(I·nb + J)·p + c] = ∂L/∂q_IJ[c]. `w` supplies the geometry and offsets
// (its values are not read). Reference: double accumulation, the oracle.
void PermDiagWeightGradRef(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch,
                           float* dq);
// Fast path (SIMD, `threads` workers).
void PermDiagWeightGrad(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch,
                        float* dq, int threads);
// The same gradient from batch-major operands (LibTorch's layout): G is
// B × rows and X is B × cols, row-major. Fast path; PermDiagLinear uses it.
void PermDiagWeightGradRows(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch,
                            float* dq, int threads);

}  // namespace permdnn::train
