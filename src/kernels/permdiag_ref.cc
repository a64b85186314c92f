// Reference permuted-diagonal kernels: the oracle for every fast path.
//
// Plain loops straight from the definition in DESIGN.md, accumulating floats
// in double and fixed point exactly in int64. No packing, no SIMD, no
// threads. Reads only inside the arrays (x has cols entries, g has rows).
#include <cstring>
#include <vector>

#include "permdnn/kernels/permdiag.h"

namespace permdnn::kernels::ref {

void MatVec(const PermDiagView<float>& w, const float* x, const float* bias, float* y) {
  const int p = w.p;
  for (int64_t I = 0; I < w.row_blocks; ++I) {
    for (int c = 0; c < p; ++c) {
      int64_t r = I * p + c;
      if (r >= w.rows) break;
      double acc = bias ? bias[r] : 0.0;
      for (int64_t J = 0; J < w.col_blocks; ++J) {
        int64_t col = J * p + (c + w.offset(I, J)) % p;
        if (col < w.cols) acc += static_cast<double>(w.block(I, J)[c]) * x[col];
      }
      y[r] = static_cast<float>(acc);
    }
  }
}

// Straight from the pack's chunked layout (permdiag.h): every slot with the
// block ForEachBlock maps it to, plain loops, double accumulation.
void MatVecPacked(const PermDiagRowPack& w, const float* x, const float* bias, float* y) {
  if (!w.chunked) return MatVec(w.RowMajorView(), x, bias, y);
  const int p = w.p;
  std::vector<double> acc(static_cast<std::size_t>(w.row_blocks * p), 0.0);
  w.ForEachBlock([&](int64_t slot, int64_t I, int64_t J) {
    const int k = w.offsets[slot];
    for (int e = 0; e < p; ++e) {
      const int64_t col = J * p + (e + k) % p;
      if (col < w.cols) acc[I * p + e] += static_cast<double>(w.values[w.ValueIndex(slot, e)]) * x[col];
    }
  });
  for (int64_t r = 0; r < w.rows; ++r) y[r] = static_cast<float>(acc[r] + (bias ? bias[r] : 0.0));
}

void MatMulRows(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias,
               float* y) {
  for (int64_t b = 0; b < batch; ++b) MatVec(w, x + b * w.cols, bias, y + b * w.rows);
}

// Straight from the lanes pack (permdiag.h): each block where BlockStart
// puts it, plain loops, double accumulation per sample.
void MatMulRowsLanes(const PermDiagLanesPack& w, const float* x, int64_t batch, const float* bias, float* y) {
  const int p = w.p;
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * w.cols;
    for (int64_t I = 0; I < w.row_blocks; ++I)
      for (int c = 0; c < p; ++c) {
        const int64_t r = I * p + c;
        if (r >= w.rows) break;
        double acc = bias ? bias[r] : 0.0;
        for (int64_t J = 0; J < w.col_blocks; ++J) {
          const int64_t at = w.BlockStart(I, J);
          const int64_t col = J * p + (c + w.offsets[at / p]) % p;
          if (col < w.cols) acc += static_cast<double>(w.values[at + c]) * xb[col];
        }
        y[b * w.rows + r] = static_cast<float>(acc);
      }
  }
}

void MatMul(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias,
            float* y) {
  const int p = w.p;
  std::vector<double> acc(static_cast<std::size_t>(batch));
  for (int64_t I = 0; I < w.row_blocks; ++I) {
    for (int c = 0; c < p; ++c) {
      int64_t r = I * p + c;
      if (r >= w.rows) break;
      for (int64_t b = 0; b < batch; ++b) acc[b] = bias ? bias[r] : 0.0;
      for (int64_t J = 0; J < w.col_blocks; ++J) {
        int64_t col = J * p + (c + w.offset(I, J)) % p;
        if (col >= w.cols) continue;
        double q = w.block(I, J)[c];
        for (int64_t b = 0; b < batch; ++b) acc[b] += q * x[col * batch + b];
      }
      for (int64_t b = 0; b < batch; ++b) y[r * batch + b] = static_cast<float>(acc[b]);
    }
  }
}

void MatVecT(const PermDiagView<float>& w, const float* g, float* x) {
  // ∂L/∂x[J·p + d] = Σ_I q_IJ[(d − k) mod p] · g[I·p + (d − k) mod p]
  const int p = w.p;
  for (int64_t J = 0; J < w.col_blocks; ++J) {
    for (int d = 0; d < p; ++d) {
      int64_t col = J * p + d;
      if (col >= w.cols) break;
      double acc = 0;
      for (int64_t I = 0; I < w.row_blocks; ++I) {
        int c = (d - w.offset(I, J) + p) % p;
        int64_t r = I * p + c;
        if (r < w.rows) acc += static_cast<double>(w.block(I, J)[c]) * g[r];
      }
      x[col] = static_cast<float>(acc);
    }
  }
}

void MatMulT(const PermDiagView<float>& w, const float* g, int64_t batch, float* x) {
  const int p = w.p;
  std::vector<double> acc(static_cast<std::size_t>(batch));
  for (int64_t J = 0; J < w.col_blocks; ++J) {
    for (int d = 0; d < p; ++d) {
      int64_t col = J * p + d;
      if (col >= w.cols) break;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t I = 0; I < w.row_blocks; ++I) {
        int c = (d - w.offset(I, J) + p) % p;
        int64_t r = I * p + c;
        if (r >= w.rows) continue;
        double q = w.block(I, J)[c];
        for (int64_t b = 0; b < batch; ++b) acc[b] += q * g[r * batch + b];
      }
      for (int64_t b = 0; b < batch; ++b) x[col * batch + b] = static_cast<float>(acc[b]);
    }
  }
}

void MatVecSparseInput(const PermDiagColumnPack& w, const float* x, const float* bias, float* y) {
  // Column-wise: for every nonzero x_j, add x_j times column j. The row of
  // the one weight per row block follows from j and the block's offset.
  const int p = w.p;
  std::vector<double> acc(static_cast<std::size_t>(w.rows));
  for (int64_t r = 0; r < w.rows; ++r) acc[r] = bias ? bias[r] : 0.0;
  for (int64_t j = 0; j < w.cols; ++j) {
    if (x[j] == 0.0f) continue;
    int64_t J = j / p;
    int d = static_cast<int>(j % p);
    const float* v = w.col_values.data() + j * w.row_blocks;
    for (int64_t I = 0; I < w.row_blocks; ++I) {
      int k = p <= 256 ? w.col_offsets[J * w.row_blocks + I] : w.col_offsets16[J * w.row_blocks + I];
      int64_t r = I * p + (d - k + p) % p;
      if (r < w.rows) acc[r] += static_cast<double>(v[I]) * x[j];
    }
  }
  for (int64_t r = 0; r < w.rows; ++r) y[r] = static_cast<float>(acc[r]);
}

void MatVecI16Acc(const PermDiagView<int16_t>& w, const int16_t* x, int64_t* acc) {
  const int p = w.p;
  for (int64_t I = 0; I < w.row_blocks; ++I) {
    for (int c = 0; c < p; ++c) {
      int64_t r = I * p + c;
      if (r >= w.rows) break;
      int64_t sum = 0;
      for (int64_t J = 0; J < w.col_blocks; ++J) {
        int64_t col = J * p + (c + w.offset(I, J)) % p;
        if (col < w.cols) sum += int64_t{w.block(I, J)[c]} * x[col];
      }
      acc[r] = sum;
    }
  }
}

}  // namespace permdnn::kernels::ref
