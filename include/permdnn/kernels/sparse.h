// Products with unstructured sparse matrices (Deep Compression / EIE).
//
// CSR row-wise products for dense inputs (single vector and feature-major
// batches) and the CSC column-wise product that touches only the columns of
// nonzero inputs (what EIE does in hardware), each with a reference kernel
// (double accumulation) and a fast one (Highway gathers for CSR·x, SIMD over
// the batch for CSR·X; threads over rows). The int16 product accumulates
// exactly in int64 like the permuted-diagonal one. Formats: core/sparse_matrix.h.
#pragma once

#include <cstdint>
#include <span>

#include "permdnn/formats/sparse_matrix.h"

namespace permdnn::kernels {

// y = A·x + bias.
void CsrMatVec(const CsrMatrix& a, std::span<const float> x, std::span<const float> bias, std::span<float> y,
               int threads = 1);
// Y = A·X + bias, X feature-major (cols × batch).
void CsrMatMul(const CsrMatrix& a, std::span<const float> x, int64_t batch, std::span<const float> bias,
               std::span<float> y, int threads = 1);
// y = A·x + bias column by column, skipping x_j == 0.
void CscMatVecSparseInput(const CscMatrix& a, std::span<const float> x, std::span<const float> bias,
                          std::span<float> y);
// acc = A·x exactly, A's values given as int16 (same order as a.values()).
void CsrMatVecI16Acc(const CsrMatrix& a, std::span<const int16_t> values, std::span<const int16_t> x,
                     std::span<int64_t> acc);

namespace ref {
void CsrMatVec(const CsrMatrix& a, const float* x, const float* bias, float* y);
void CsrMatMul(const CsrMatrix& a, const float* x, int64_t batch, const float* bias, float* y);
}  // namespace ref

}  // namespace permdnn::kernels
