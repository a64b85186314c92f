// PermDiagMatrix: construction, projection, reconstruction, validation.
#include "permdnn/formats/permdiag_matrix.h"

#include <cmath>
#include <random>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/formats/registry.h"

namespace permdnn {

template <typename T>
BasicPermDiag<T>::BasicPermDiag(int64_t rows, int64_t cols, int p)
    : BlockGrid(rows, cols, p, "permuted-diagonal matrix") {
  PERMDNN_CHECK(p <= 65535, "permuted-diagonal matrix: block size p must be <= 65535, got p = {}", p);
  values_.Resize(static_cast<std::size_t>(row_blocks_ * col_blocks_ * p));
  values_.Fill(T{0});
  offsets_.Resize(static_cast<std::size_t>(row_blocks_ * col_blocks_));
  offsets_.Fill(0);
}

template <typename T>
int64_t BasicPermDiag<T>::nnz() const {
  // Blocks fully inside the logical shape contribute p each; only the last
  // block row / column can be partial.
  int64_t full_rb = rows_ / p_, full_cb = cols_ / p_;
  int64_t count = full_rb * full_cb * p_;
  for (int64_t I = 0; I < row_blocks_; ++I) {
    for (int64_t J = (I < full_rb ? full_cb : 0); J < col_blocks_; ++J) {
      int k = offset(I, J);
      for (int c = 0; c < p_; ++c) {
        int64_t r = I * p_ + c, col = J * p_ + (c + k) % p_;
        if (r < rows_ && col < cols_) ++count;
      }
    }
  }
  return count;
}

template <typename T>
T BasicPermDiag<T>::At(int64_t r, int64_t c) const {
  int64_t I = r / p_, J = c / p_;
  int cr = static_cast<int>(r % p_), cc = static_cast<int>(c % p_);
  int k = offset(I, J);
  if ((cr + k) % p_ != cc) return T{0};
  return block(I, J)[cr];
}

template <typename T>
void BasicPermDiag<T>::Validate() const {
  for (int64_t I = 0; I < row_blocks_; ++I) {
    for (int64_t J = 0; J < col_blocks_; ++J) {
      int k = offset(I, J);
      PERMDNN_CHECK(k < p_, "permuted-diagonal matrix {}x{} p={}: block ({}, {}) has offset {} >= p",
                    rows_, cols_, p_, I, J, k);
      const T* q = block(I, J);
      for (int c = 0; c < p_; ++c) {
        int64_t r = I * p_ + c, col = J * p_ + (c + k) % p_;
        if ((r >= rows_ || col >= cols_) && q[c] != T{0})
          Fail("permuted-diagonal matrix {}x{} p={}: block ({}, {}) stores a nonzero at padded "
               "position ({}, {})",
               rows_, cols_, p_, I, J, r, col);
      }
    }
  }
}

template <typename T>
int64_t BasicPermDiag<T>::bytes() const {
  return formats::StoredSize(formats::Kind::kPermDiag, {rows_, cols_, {}, p_}, 0, 0, false,
                             {static_cast<int>(8 * sizeof(T)), true})
      .bytes;
}

template class BasicPermDiag<float>;
template class BasicPermDiag<int16_t>;

namespace {

// Zeroes the values that fall into the padding (rows >= m or cols >= n).
template <typename T>
void ZeroPadding(BasicPermDiag<T>& w) {
  if (w.rows() % w.p() == 0 && w.cols() % w.p() == 0) return;
  const int p = w.p();
  for (int64_t I = 0; I < w.row_blocks(); ++I) {
    for (int64_t J = 0; J < w.col_blocks(); ++J) {
      int k = w.offset(I, J);
      T* q = w.block(I, J);
      for (int c = 0; c < p; ++c)
        if (I * p + c >= w.rows() || J * p + (c + k) % p >= w.cols()) q[c] = T{0};
    }
  }
}

}  // namespace

PermDiagMatrix PermDiagMatrix::RandomWithStddev(int64_t rows, int64_t cols, int p, uint64_t seed,
                                                double stddev) {
  PermDiagMatrix w(rows, cols, p);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> offset_dist(0, p - 1);
  for (auto& k : w.offsets()) k = static_cast<uint16_t>(offset_dist(rng));
  std::normal_distribution<double> value_dist(0.0, stddev);
  for (auto& v : w.values()) v = static_cast<float>(value_dist(rng));
  ZeroPadding(w);
  return w;
}

PermDiagMatrix PermDiagMatrix::Random(int64_t rows, int64_t cols, int p, uint64_t seed) {
  double fan_in = static_cast<double>(CeilDiv(cols, p));
  return RandomWithStddev(rows, cols, p, seed, std::sqrt(2.0 / fan_in));
}

PermDiagMatrix PermDiagMatrix::WithColumnOffsets() const {
  PermDiagMatrix w = *this;
  const int64_t nb = w.col_blocks();
  for (int64_t I = 1; I < w.row_blocks(); ++I)
    for (int64_t J = 0; J < nb; ++J) w.offsets()[I * nb + J] = offsets()[J];
  ZeroPadding(w);
  return w;
}

PermDiagMatrix PermDiagMatrix::FromParts(int64_t rows, int64_t cols, int p,
                                         std::span<const float> values,
                                         std::span<const uint16_t> offsets) {
  PermDiagMatrix w(rows, cols, p);
  PERMDNN_CHECK(static_cast<int64_t>(values.size()) == w.stored_values(),
                "permuted-diagonal matrix {}x{} p={}: expected {} values ({}x{} blocks of {}), got {}",
                rows, cols, p, w.stored_values(), w.row_blocks(), w.col_blocks(), p, values.size());
  PERMDNN_CHECK(static_cast<int64_t>(offsets.size()) == w.num_blocks(),
                "permuted-diagonal matrix {}x{} p={}: expected {} offsets ({}x{} blocks), got {}",
                rows, cols, p, w.num_blocks(), w.row_blocks(), w.col_blocks(), offsets.size());
  std::copy(values.begin(), values.end(), w.values().begin());
  std::copy(offsets.begin(), offsets.end(), w.offsets().begin());
  w.Validate();
  return w;
}

PermDiagProjection PermDiagMatrix::FromDense(std::span<const float> dense, int64_t rows,
                                             int64_t cols, int p) {
  PermDiagMatrix w(rows, cols, p);
  PERMDNN_CHECK(static_cast<int64_t>(dense.size()) == rows * cols,
                "projection to permuted-diagonal: dense matrix {}x{} needs {} values, got {}", rows,
                cols, rows * cols, dense.size());
  auto at = [&](int64_t r, int64_t c) -> double {
    return (r < rows && c < cols) ? static_cast<double>(dense[r * cols + c]) : 0.0;
  };
  double total = 0, kept = 0;
  for (float v : dense) total += static_cast<double>(v) * v;
  std::vector<double> energy(static_cast<std::size_t>(p));
  for (int64_t I = 0; I < w.row_blocks(); ++I) {
    for (int64_t J = 0; J < w.col_blocks(); ++J) {
      std::fill(energy.begin(), energy.end(), 0.0);
      // energy[k] = Σ_c W[Ip+c, Jp+(c+k) mod p]²; accumulate row by row so the
      // dense matrix is read in order.
      for (int c = 0; c < p; ++c) {
        for (int d = 0; d < p; ++d) {
          double v = at(I * p + c, J * p + d);
          int k = (d - c + p) % p;
          energy[k] += v * v;
        }
      }
      int best = 0;
      for (int k = 1; k < p; ++k)
        if (energy[k] > energy[best]) best = k;
      kept += energy[best];
      w.offsets()[I * w.col_blocks() + J] = static_cast<uint16_t>(best);
      float* q = w.block(I, J);
      for (int c = 0; c < p; ++c) q[c] = static_cast<float>(at(I * p + c, J * p + (c + best) % p));
    }
  }
  PermDiagProjection result{std::move(w), total > 0 ? kept / total : 1.0};
  return result;
}

std::vector<float> PermDiagMatrix::ToDense() const {
  std::vector<float> dense(static_cast<std::size_t>(rows_ * cols_), 0.0f);
  for (int64_t I = 0; I < row_blocks_; ++I) {
    for (int64_t J = 0; J < col_blocks_; ++J) {
      int k = offset(I, J);
      const float* q = block(I, J);
      for (int c = 0; c < p_; ++c) {
        int64_t r = I * p_ + c, col = J * p_ + (c + k) % p_;
        if (r < rows_ && col < cols_) dense[r * cols_ + col] = q[c];
      }
    }
  }
  return dense;
}

PermDiagMatrixI16 PermDiagMatrixI16::Quantize(const PermDiagMatrix& m, int frac_bits) {
  if (frac_bits < -100) frac_bits = ChooseFracBits<int16_t>(MaxAbs(m.values()));
  PermDiagMatrixI16 q(m.rows(), m.cols(), m.p());
  std::copy(m.offsets().begin(), m.offsets().end(), q.offsets().begin());
  QuantizeSpan<int16_t>(m.values(), frac_bits, q.values());
  q.frac_bits_ = frac_bits;
  return q;
}

PermDiagMatrix PermDiagMatrixI16::Dequantize() const {
  PermDiagMatrix m(rows_, cols_, p_);
  std::copy(offsets().begin(), offsets().end(), m.offsets().begin());
  DequantizeSpan<int16_t>(values(), frac_bits_, m.values());
  return m;
}

}  // namespace permdnn
