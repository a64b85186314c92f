// Shared-offset permuted-diagonal matrices (permdiag_column.h): packing
// (PermDiagMatrix <-> values[r][J][mb_pad]) and the reference kernels.
#include "permdnn/kernels/permdiag_column.h"

#include <algorithm>
#include <vector>

#include "permdnn/core/error.h"
#include "permdnn/kernels/permdiag.h"

namespace permdnn::kernels {

bool HasColumnOffsets(const PermDiagMatrix& w) {
  for (int64_t I = 1; I < w.row_blocks(); ++I)
    for (int64_t J = 0; J < w.col_blocks(); ++J)
      if (w.offset(I, J) != w.offset(0, J)) return false;
  return true;
}

PermDiagColumnWeights PermDiagColumnWeights::Build(const PermDiagMatrix& m) {
  PermDiagColumnWeights w;
  w.rows = m.rows();
  w.cols = m.cols();
  w.p = m.p();
  w.row_blocks = m.row_blocks();
  w.col_blocks = m.col_blocks();
  w.mb_pad = (w.row_blocks + kRowAlign - 1) / kRowAlign * kRowAlign;
  w.tiles = (w.mb_pad + kTileRows - 1) / kTileRows;
  const int64_t p = w.p, mb = w.row_blocks, nb = w.col_blocks;
  w.offsets.Resize(static_cast<std::size_t>(nb));
  for (int64_t J = 0; J < nb; ++J) {
    w.offsets[J] = static_cast<uint16_t>(m.offset(0, J));
    for (int64_t I = 1; I < mb; ++I)
      PERMDNN_CHECK(m.offset(I, J) == m.offset(0, J),
                    "PermDiagColumnWeights: block ({}, {}) has offset {} but block (0, {}) has {}: the shared-offset "
                    "kernels need one offset per block column", I, J, m.offset(I, J), J, m.offset(0, J));
  }
  w.values.Resize(static_cast<std::size_t>(p * nb * w.mb_pad));
  w.values.Fill(0.0f);
  for (int64_t I = 0; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J) {
      const float* q = m.block(I, J);
      const int64_t t = I / kTileRows, h = w.TileHeight(t);
      for (int64_t r = 0; r < p; ++r)
        w.values[static_cast<std::size_t>(r * nb * w.mb_pad + t * kTileRows * nb + J * h + I % kTileRows)] = q[r];
    }
  return w;
}

PermDiagMatrix PermDiagColumnWeights::Unpack() const {
  const int64_t mb = row_blocks, nb = col_blocks;
  std::vector<float> v(static_cast<std::size_t>(mb * nb * p));
  std::vector<uint16_t> o(static_cast<std::size_t>(mb * nb));
  for (int64_t I = 0; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J) {
      o[I * nb + J] = offsets[J];
      for (int64_t r = 0; r < p; ++r) v[(I * nb + J) * p + r] = At(r, I, J);
    }
  return PermDiagMatrix::FromParts(rows, cols, p, v, o);
}

double MeasureSkipCrossover(const PermDiagColumnWeights& w, int threads, double min_seconds) {
  std::vector<float> y(static_cast<std::size_t>(w.rows));
  return MeasureSkipCrossover([&](std::span<const float> x) { PermDiagColumnMatVec(w, x, {}, y, threads); },
                              [&](std::span<const float> x) { PermDiagColumnMatVecSparseInput(w, x, {}, y, threads); },
                              w.cols, threads, min_seconds);
}

namespace ref {

void ColumnMatVec(const PermDiagColumnWeights& w, const float* x, const float* bias, float* y) {
  ColumnMatMulRows(w, x, 1, bias, y);
}

void ColumnMatMulRows(const PermDiagColumnWeights& w, const float* x, int64_t batch, const float* bias, float* y) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < w.p; ++r)
      for (int64_t I = 0; I < w.row_blocks && I * w.p + r < w.rows; ++I) {
        double acc = bias ? bias[I * w.p + r] : 0.0;
        for (int64_t J = 0; J < w.col_blocks; ++J) {
          const int64_t j = w.InputOf(r, J);
          if (j < w.cols) acc += static_cast<double>(w.At(r, I, J)) * x[b * w.cols + j];
        }
        y[b * w.rows + I * w.p + r] = static_cast<float>(acc);
      }
}

}  // namespace ref

}  // namespace permdnn::kernels
