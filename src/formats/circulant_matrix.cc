// BlockCirculantMatrix: construction, projection, reconstruction.
#include "permdnn/formats/circulant_matrix.h"

#include <cmath>
#include <random>

#include "permdnn/core/error.h"
#include "permdnn/formats/registry.h"

namespace permdnn {

BlockCirculantMatrix::BlockCirculantMatrix(int64_t rows, int64_t cols, int p)
    : BlockGrid(rows, cols, p, "block-circulant matrix") {
  values_.Resize(static_cast<std::size_t>(row_blocks_ * col_blocks_ * p));
  values_.Fill(0.0f);
}

BlockCirculantMatrix BlockCirculantMatrix::Random(int64_t rows, int64_t cols, int p, uint64_t seed) {
  BlockCirculantMatrix w(rows, cols, p);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, std::sqrt(2.0 / static_cast<double>(cols)));
  for (auto& v : w.values()) v = static_cast<float>(nd(rng));
  return w;
}

BlockCirculantMatrix BlockCirculantMatrix::FromParts(int64_t rows, int64_t cols, int p,
                                                     std::span<const float> values) {
  BlockCirculantMatrix w(rows, cols, p);
  PERMDNN_CHECK(static_cast<int64_t>(values.size()) == w.stored_values(),
                "block-circulant matrix {}x{} p={}: expected {} values ({}x{} blocks of {}), got {}", rows, cols, p,
                w.stored_values(), w.row_blocks(), w.col_blocks(), p, values.size());
  std::copy(values.begin(), values.end(), w.values().begin());
  return w;
}

CirculantProjection BlockCirculantMatrix::FromDense(std::span<const float> dense, int64_t rows, int64_t cols,
                                                    int p) {
  BlockCirculantMatrix w(rows, cols, p);
  PERMDNN_CHECK(static_cast<int64_t>(dense.size()) == rows * cols,
                "projection to block-circulant: dense matrix {}x{} needs {} values, got {}", rows, cols, rows * cols,
                dense.size());
  std::vector<double> sum(static_cast<std::size_t>(p));
  std::vector<int> count(static_cast<std::size_t>(p));
  double total = 0;
  for (float v : dense) total += static_cast<double>(v) * v;
  for (int64_t I = 0; I < w.row_blocks(); ++I) {
    for (int64_t J = 0; J < w.col_blocks(); ++J) {
      std::fill(sum.begin(), sum.end(), 0.0);
      std::fill(count.begin(), count.end(), 0);
      for (int c = 0; c < p && I * p + c < rows; ++c) {
        for (int d = 0; d < p && J * p + d < cols; ++d) {
          int t = ((c - d) % p + p) % p;
          sum[t] += dense[(I * p + c) * cols + J * p + d];
          ++count[t];
        }
      }
      float* q = w.block(I, J);
      for (int t = 0; t < p; ++t) q[t] = count[t] ? static_cast<float>(sum[t] / count[t]) : 0.0f;
    }
  }
  // Kept energy: the projection is orthogonal, so ‖P(W)‖² / ‖W‖².
  std::vector<float> back = w.ToDense();
  double kept = 0;
  for (float v : back) kept += static_cast<double>(v) * v;
  return {std::move(w), total > 0 ? kept / total : 1.0};
}

int64_t BlockCirculantMatrix::bytes() const {
  return formats::StoredSize(formats::Kind::kCirculant, {rows_, cols_, {}, p_}, 0, 0, false).bytes;
}

std::vector<float> BlockCirculantMatrix::ToDense() const {
  std::vector<float> dense(static_cast<std::size_t>(rows_ * cols_));
  for (int64_t r = 0; r < rows_; ++r) {
    const int64_t I = r / p_;
    const int c = static_cast<int>(r % p_);
    for (int64_t col = 0; col < cols_; ++col) {
      const int64_t J = col / p_;
      const int d = static_cast<int>(col % p_);
      dense[r * cols_ + col] = block(I, J)[((c - d) % p_ + p_) % p_];
    }
  }
  return dense;
}

}  // namespace permdnn
