// Products with a shared-offset permuted-diagonal matrix (the registry's
// permdiag-column format, SPEC `permdiag:p=8,offsets=column`): every block of
// block column J has the same offset k_J, so
//
//     W[I·p + r, J·p + (r + k_J) mod p] = q_IJ[r]      for every row block I.
//
// Group the outputs by residue r = row mod p and the inputs by the residue
// they reach: input j = J·p + d meets only rows I·p + (d − k_J) mod p, one
// residue for all I. The matrix is therefore p dense (m/p)×(n/p) blocks
//     G_r[I][J] = q_IJ[r]
// between the permuted inputs x_r[J] = x[J·p + (r + k_J) mod p] and the
// residue-major outputs y_r[I] = y[I·p + r]: a grouped linear layer with a
// channel shuffle on each side (docs/shared-offsets.md). Three products
// follow from it, none with a per-weight index or a scatter:
//   * dense input, batch 1 (PermDiagColumnMatVec): y_r = G_r · x_r for every r;
//   * zero-skipping (PermDiagColumnMatVecSparseInput): for every nonzero
//     input j, y_r += x_j · G_r[:, J], one contiguous AXPY of m/p weights
//     over a contiguous weight column (the column-wise product of PermDNN
//     without its transversal scatter);
//   * batched, batch-major (PermDiagColumnMatMulRows): p GEMMs
//     Y_r = X_r · G_rᵀ on the permuted inputs (OpenBLAS sgemm).
//
// Layout (PermDiagColumnWeights): G_r cut into row tiles of kTileRows = 128
// rows (the last one shorter), each tile stored column by column:
//     values[r][t][J][0..H_t) = G_r[t·128 + i][J],   H_t = TileHeight(t),
// rows padded to mb_pad = row_blocks rounded up to 16 (a whole number of
// vectors on every x86 target; zeros past row_blocks). A tile's column is
// H_t contiguous floats and a tile is one contiguous run, so the
// dense-input product streams the weights in order, the skipping product
// reads only the H_t-float pieces of the nonzero columns, and each tile is
// a row-major [nb][H_t] matrix for sgemm. offsets[J] = k_J. Kernels read
// values only inside these arrays.
//
// Every op has a reference kernel (ref::, double accumulation on the same
// layout) and rows in the kernel table (table.h: permdiag_column.*); the
// public functions validate shapes and dispatch like permdiag.h's.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/formats/permdiag_matrix.h"

namespace permdnn::kernels {

struct PermDiagColumnWeights {
  int64_t rows = 0, cols = 0;
  int p = 1;
  int64_t row_blocks = 0, col_blocks = 0;
  int64_t mb_pad = 0;               // row_blocks rounded up to kRowAlign
  int64_t tiles = 0;                // ceil(mb_pad / kTileRows)
  AlignedBuffer<float> values;      // [p][tiles][col_blocks][TileHeight(t)]
  AlignedBuffer<uint16_t> offsets;  // [col_blocks]: k_J

  static constexpr int64_t kRowAlign = 16;
  // 8 AVX-512 vectors: one register tile of accumulators (two on AVX2).
  static constexpr int64_t kTileRows = 128;
  // Error (naming the first block that differs) unless every block of a
  // block column has the same offset.
  static PermDiagColumnWeights Build(const PermDiagMatrix& w);
  // The general matrix back (offsets expanded to every row block).
  PermDiagMatrix Unpack() const;
  int64_t TileHeight(int64_t t) const { return std::min(kTileRows, mb_pad - t * kTileRows); }
  // Tile t of G_r: [col_blocks][TileHeight(t)], column J at J·TileHeight(t).
  const float* Tile(int64_t r, int64_t t) const {
    return values.data() + r * col_blocks * mb_pad + t * kTileRows * col_blocks;
  }
  // G_r[I][J].
  float At(int64_t r, int64_t I, int64_t J) const {
    const int64_t t = I / kTileRows;
    return Tile(r, t)[J * TileHeight(t) + I % kTileRows];
  }
  // Input feature of G_r's column J: J·p + (r + k_J) mod p (may be >= cols
  // in the last, padded column block).
  int64_t InputOf(int64_t r, int64_t J) const { return J * p + (r + offsets[J]) % p; }
  int64_t bytes() const { return static_cast<int64_t>(values.size() * sizeof(float) + offsets.size() * 2); }
};

// Whether every block of each block column of w has one offset.
bool HasColumnOffsets(const PermDiagMatrix& w);

// y = W·x + bias (dense input, batch 1).
void PermDiagColumnMatVec(const PermDiagColumnWeights& w, std::span<const float> x, std::span<const float> bias,
                          std::span<float> y, int threads = 1);
// The same, reading only the weights of nonzero inputs.
void PermDiagColumnMatVecSparseInput(const PermDiagColumnWeights& w, std::span<const float> x,
                                     std::span<const float> bias, std::span<float> y, int threads = 1);
// Y = X·Wᵀ + bias, batch-major: X is batch × cols, Y batch × rows.
void PermDiagColumnMatMulRows(const PermDiagColumnWeights& w, std::span<const float> x, int64_t batch,
                              std::span<const float> bias, std::span<float> y, int threads = 1);

// The crossover density of w's zero-skipping product against its
// dense-input one (kernels/permdiag.h MeasureSkipCrossover).
double MeasureSkipCrossover(const PermDiagColumnWeights& w, int threads, double min_seconds = 4e-3);

namespace ref {
void ColumnMatVec(const PermDiagColumnWeights& w, const float* x, const float* bias, float* y);
void ColumnMatMulRows(const PermDiagColumnWeights& w, const float* x, int64_t batch, const float* bias, float* y);
}  // namespace ref

}  // namespace permdnn::kernels
