// Validation and conversions of the block-circulant and pruned formats (see
// compressed_formats.h).
#include "runtime/compressed_formats.h"

#include <cmath>

#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/core/error.h"

namespace permdnn::runtime::detail {

void ValidateCsr(const std::string& where, int64_t rows, int64_t cols, std::span<const int64_t> row_ptr,
                 std::span<const int64_t> col_idx) {
  const int64_t nnz = static_cast<int64_t>(col_idx.size());
  PERMDNN_CHECK(nnz < (int64_t{1} << 31), "{}: col_idx has {} entries, more than int32 indices allow", where, nnz);
  PERMDNN_CHECK(static_cast<int64_t>(row_ptr.size()) == rows + 1,
                "{}: row_ptr has {} entries, expected out_features + 1 = {}", where, row_ptr.size(), rows + 1);
  PERMDNN_CHECK(row_ptr[0] == 0, "{}: row_ptr[0] = {}, must be 0", where, row_ptr[0]);
  for (int64_t r = 0; r < rows; ++r)
    PERMDNN_CHECK(row_ptr[r + 1] >= row_ptr[r], "{}: row_ptr is not monotone: row_ptr[{}] = {} < row_ptr[{}] = {}",
                  where, r + 1, row_ptr[r + 1], r, row_ptr[r]);
  PERMDNN_CHECK(row_ptr[rows] == nnz, "{}: row_ptr[{}] = {} must equal nnz = {} (the length of col_idx)", where, rows,
                row_ptr[rows], nnz);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t e = row_ptr[r]; e < row_ptr[r + 1]; ++e) {
      PERMDNN_CHECK(col_idx[e] >= 0 && col_idx[e] < cols, "{}: col_idx[{}] = {} (row {}) is out of range [0, {})",
                    where, e, col_idx[e], r, cols);
      PERMDNN_CHECK(e == row_ptr[r] || col_idx[e] > col_idx[e - 1],
                    "{}: unsorted CSR rows: row {} has col_idx[{}] = {} after {} (must be strictly increasing)",
                    where, r, e, col_idx[e], col_idx[e - 1]);
    }
  }
}

std::vector<float> DecodeCodebook(const std::string& where, std::span<const int64_t> codes,
                                  std::span<const float> codebook, int64_t expected_k) {
  const int64_t k = static_cast<int64_t>(codebook.size());
  PERMDNN_CHECK(k >= 1 && k <= kMaxCodebookSize, "{}: codebook has {} entries, must have 1 to {}", where, k,
                kMaxCodebookSize);
  PERMDNN_CHECK(expected_k <= 0 || k == expected_k, "{}: codebook has {} entries, expected 2^bits = {}", where, k,
                expected_k);
  for (int64_t j = 0; j < k; ++j)
    PERMDNN_CHECK(std::isfinite(codebook[j]), "{}: codebook[{}] = {} is not finite", where, j, codebook[j]);
  std::vector<float> w(codes.size());
  for (std::size_t e = 0; e < codes.size(); ++e) {
    PERMDNN_CHECK(codes[e] >= 0 && codes[e] < k, "{}: codes[{}] = {} is not an index into the codebook of {} entries",
                  where, e, codes[e], k);
    w[e] = codebook[codes[e]];
  }
  return w;
}

CsrMatrix MakeCsr(const std::string& where, int64_t rows, int64_t cols, std::span<const int64_t> row_ptr,
                  std::span<const int64_t> col_idx, std::vector<float> values) {
  ValidateCsr(where, rows, cols, row_ptr, col_idx);
  PERMDNN_CHECK(values.size() == col_idx.size(), "{}: {} values for {} col_idx entries", where, values.size(),
                col_idx.size());
  for (std::size_t e = 0; e < values.size(); ++e)
    PERMDNN_CHECK(std::isfinite(values[e]), "{}: values[{}] = {} is not finite", where, e, values[e]);
  std::vector<int32_t> rp(row_ptr.begin(), row_ptr.end()), ci(col_idx.begin(), col_idx.end());
  try {
    return CsrMatrix::FromParts(rows, cols, std::move(rp), std::move(ci), std::move(values));
  } catch (const Error& e) {
    Fail("{}: {}", where, e.what());
  }
}

std::vector<float> CirculantConvToDense(std::span<const float> values, int64_t out, int64_t in, int p, int64_t ksz) {
  const int64_t mb = CeilDiv(out, p), nb = CeilDiv(in, p);
  PERMDNN_CHECK(static_cast<int64_t>(values.size()) == mb * nb * p * ksz,
                "circulant conv: {} values, expected {} blocks x p={} x kernel {} = {}", values.size(), mb * nb, p, ksz,
                mb * nb * p * ksz);
  std::vector<float> dense(static_cast<std::size_t>(out * in * ksz));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      const int64_t I = o / p, J = i / p, c = o % p, d = i % p;
      const float* w = values.data() + ((I * nb + J) * p + ((c - d) % p + p) % p) * ksz;
      std::copy(w, w + ksz, dense.begin() + (o * in + i) * ksz);
    }
  return dense;
}

CirculantConvProjection ProjectCirculantConv(std::span<const float> dense, int64_t out, int64_t in, int p,
                                             int64_t ksz) {
  PERMDNN_CHECK(static_cast<int64_t>(dense.size()) == out * in * ksz, "circulant conv projection: {} values, expected {}",
                dense.size(), out * in * ksz);
  const int64_t mb = CeilDiv(out, p), nb = CeilDiv(in, p);
  CirculantConvProjection r;
  r.values.assign(static_cast<std::size_t>(mb * nb * p * ksz), 0.0f);
  std::vector<float> slice(static_cast<std::size_t>(out * in));
  double total = 0, kept = 0;
  for (int64_t t = 0; t < ksz; ++t) {
    for (int64_t k = 0; k < out * in; ++k) slice[k] = dense[k * ksz + t];
    CirculantProjection pr = BlockCirculantMatrix::FromDense(slice, out, in, p);
    double e = 0;
    for (float v : slice) e += double(v) * v;
    total += e;
    kept += pr.kept_energy * e;
    for (int64_t b = 0; b < mb * nb; ++b)
      for (int64_t s = 0; s < p; ++s) r.values[(b * p + s) * ksz + t] = pr.matrix.values()[b * p + s];
  }
  r.kept_energy = total > 0 ? kept / total : 1.0;
  return r;
}

}  // namespace permdnn::runtime::detail
