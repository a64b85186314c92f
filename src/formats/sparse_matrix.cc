// Unstructured sparse formats (see sparse_matrix.h).
#include "permdnn/formats/sparse_matrix.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "permdnn/core/error.h"
#include "permdnn/core/random.h"

namespace permdnn {

namespace {

constexpr int64_t kIndexMax = std::numeric_limits<int32_t>::max();

void CheckShape(const char* what, int64_t rows, int64_t cols) {
  PERMDNN_CHECK(rows >= 1 && cols >= 1, "{}: shape must be at least 1x1, got {}x{}", what, rows, cols);
  PERMDNN_CHECK(rows < kIndexMax && cols < kIndexMax,
                "{}: dimensions must be below 2^31 (int32 indices), got {}x{}", what, rows, cols);
}

// Compressed "major" storage shared by CSC (major = column) and CSR
// (major = row): pointers over the major dimension, minor indices.
struct Compressed {
  std::vector<int32_t> ptr, idx;
  std::vector<float> val;
};

Compressed CompressDense(std::span<const float> dense, int64_t rows, int64_t cols, bool by_column,
                         const char* what) {
  CheckShape(what, rows, cols);
  PERMDNN_CHECK(static_cast<int64_t>(dense.size()) == rows * cols,
                "{} {}x{}: dense matrix must have {} values, got {}", what, rows, cols, rows * cols,
                dense.size());
  const int64_t major = by_column ? cols : rows, minor = by_column ? rows : cols;
  Compressed c;
  c.ptr.assign(static_cast<std::size_t>(major + 1), 0);
  for (int64_t a = 0; a < major; ++a) {
    for (int64_t b = 0; b < minor; ++b) {
      float v = by_column ? dense[b * cols + a] : dense[a * cols + b];
      if (v != 0.0f) {
        c.idx.push_back(static_cast<int32_t>(b));
        c.val.push_back(v);
      }
    }
    PERMDNN_CHECK(static_cast<int64_t>(c.idx.size()) < kIndexMax, "{} {}x{}: more than 2^31 nonzeros",
                  what, rows, cols);
    c.ptr[a + 1] = static_cast<int32_t>(c.idx.size());
  }
  return c;
}

// Bernoulli(density) per entry via geometric gaps: O(nnz) random draws.
Compressed RandomCompressed(int64_t rows, int64_t cols, double density, uint64_t seed, bool by_column,
                            const char* what) {
  CheckShape(what, rows, cols);
  PERMDNN_CHECK(density >= 0.0 && density <= 1.0, "{} {}x{}: density must be in [0, 1], got {}", what, rows,
                cols, density);
  const double expected = density * static_cast<double>(rows) * static_cast<double>(cols);
  PERMDNN_CHECK(expected < 0.9 * static_cast<double>(kIndexMax),
                "{} {}x{}: density {} gives ~{:.0f} nonzeros, more than int32 indices allow", what, rows, cols,
                density, expected);
  const int64_t major = by_column ? cols : rows, minor = by_column ? rows : cols;
  Compressed c;
  c.ptr.assign(static_cast<std::size_t>(major + 1), 0);
  c.idx.reserve(static_cast<std::size_t>(expected * 1.01 + 16));
  c.val.reserve(c.idx.capacity());
  SplitMix64 rng{seed};
  const double fan_in = std::max(1.0, density * static_cast<double>(cols));
  // He-uniform: U(-s, s) with s = sqrt(6 / fan_in) has variance 2 / fan_in.
  const double scale = std::sqrt(6.0 / fan_in);
  const double log_q = density < 1.0 ? std::log1p(-density) : 0.0;
  for (int64_t a = 0; a < major; ++a) {
    if (density > 0.0) {
      int64_t b = -1;
      while (true) {
        if (density >= 1.0) {
          ++b;
        } else {
          // Number of failures before the next success ~ Geometric(density).
          double u = rng.Unit();  // (0, 1]
          double skip = std::floor(std::log(u) / log_q);
          if (skip >= static_cast<double>(minor)) break;
          b += 1 + static_cast<int64_t>(skip);
        }
        if (b >= minor) break;
        float v = static_cast<float>((2.0 * rng.Unit() - 1.0) * scale);
        if (v == 0.0f) v = std::numeric_limits<float>::min();
        c.idx.push_back(static_cast<int32_t>(b));
        c.val.push_back(v);
      }
    }
    c.ptr[a + 1] = static_cast<int32_t>(c.idx.size());
  }
  return c;
}

void ValidateCompressed(const char* what, int64_t rows, int64_t cols, bool by_column,
                        const std::vector<int32_t>& ptr, const std::vector<int32_t>& idx,
                        const std::vector<float>& val) {
  const int64_t major = by_column ? cols : rows, minor = by_column ? rows : cols;
  const char* major_name = by_column ? "column" : "row";
  PERMDNN_CHECK(static_cast<int64_t>(ptr.size()) == major + 1, "{} {}x{}: expected {} pointers, got {}", what,
                rows, cols, major + 1, ptr.size());
  PERMDNN_CHECK(idx.size() == val.size(), "{} {}x{}: {} indices but {} values", what, rows, cols, idx.size(),
                val.size());
  PERMDNN_CHECK(ptr[0] == 0 && ptr[major] == static_cast<int64_t>(idx.size()),
                "{} {}x{}: pointers must run from 0 to nnz = {}, got {}..{}", what, rows, cols, idx.size(),
                ptr[0], ptr[major]);
  for (int64_t a = 0; a < major; ++a) {
    PERMDNN_CHECK(ptr[a] <= ptr[a + 1], "{} {}x{}: pointers decrease at {} {}", what, rows, cols, major_name, a);
    for (int32_t e = ptr[a]; e < ptr[a + 1]; ++e) {
      PERMDNN_CHECK(idx[e] >= 0 && idx[e] < minor, "{} {}x{}: {} {} entry {} has index {} outside [0, {})",
                    what, rows, cols, major_name, a, e, idx[e], minor);
      PERMDNN_CHECK(e == ptr[a] || idx[e] > idx[e - 1],
                    "{} {}x{}: {} {} indices not strictly increasing at entry {}", what, rows, cols,
                    major_name, a, e);
    }
  }
}

// Transposes compressed storage (CSC <-> CSR) with a counting sort.
Compressed Transpose(int64_t major, int64_t minor, std::span<const int32_t> ptr,
                     std::span<const int32_t> idx, std::span<const float> val) {
  Compressed t;
  t.ptr.assign(static_cast<std::size_t>(minor + 1), 0);
  for (int32_t i : idx) ++t.ptr[i + 1];
  for (int64_t b = 0; b < minor; ++b) t.ptr[b + 1] += t.ptr[b];
  t.idx.resize(idx.size());
  t.val.resize(val.size());
  std::vector<int32_t> next(t.ptr.begin(), t.ptr.end() - 1);
  for (int64_t a = 0; a < major; ++a) {
    for (int32_t e = ptr[a]; e < ptr[a + 1]; ++e) {
      int32_t dst = next[idx[e]]++;
      t.idx[dst] = static_cast<int32_t>(a);
      t.val[dst] = val[e];
    }
  }
  return t;
}

}  // namespace

// ---- CSC --------------------------------------------------------------------

CscMatrix CscMatrix::FromDense(std::span<const float> dense, int64_t rows, int64_t cols) {
  Compressed c = CompressDense(dense, rows, cols, true, "CSC matrix");
  return FromParts(rows, cols, std::move(c.ptr), std::move(c.idx), std::move(c.val));
}

CscMatrix CscMatrix::Random(int64_t rows, int64_t cols, double density, uint64_t seed) {
  Compressed c = RandomCompressed(rows, cols, density, seed, true, "CSC matrix");
  return CscMatrix(rows, cols, std::move(c.ptr), std::move(c.idx), std::move(c.val));  // valid by construction
}

CscMatrix CscMatrix::FromParts(int64_t rows, int64_t cols, std::vector<int32_t> col_ptr,
                               std::vector<int32_t> row_idx, std::vector<float> values) {
  CheckShape("CSC matrix", rows, cols);
  CscMatrix m(rows, cols, std::move(col_ptr), std::move(row_idx), std::move(values));
  m.Validate();
  return m;
}

CscMatrix CscMatrix::FromCsr(const CsrMatrix& csr) {
  Compressed t = Transpose(csr.rows(), csr.cols(), csr.row_ptr(), csr.col_idx(), csr.values());
  return CscMatrix(csr.rows(), csr.cols(), std::move(t.ptr), std::move(t.idx), std::move(t.val));
}

std::vector<float> CscMatrix::ToDense() const {
  std::vector<float> d(static_cast<std::size_t>(rows_ * cols_), 0.0f);
  for (int64_t j = 0; j < cols_; ++j)
    for (int32_t e = col_ptr_[j]; e < col_ptr_[j + 1]; ++e) d[row_idx_[e] * cols_ + j] = values_[e];
  return d;
}

void CscMatrix::Validate() const {
  ValidateCompressed("CSC matrix", rows_, cols_, true, col_ptr_, row_idx_, values_);
}

// ---- CSR --------------------------------------------------------------------

CsrMatrix CsrMatrix::FromDense(std::span<const float> dense, int64_t rows, int64_t cols) {
  Compressed c = CompressDense(dense, rows, cols, false, "CSR matrix");
  return FromParts(rows, cols, std::move(c.ptr), std::move(c.idx), std::move(c.val));
}

CsrMatrix CsrMatrix::Random(int64_t rows, int64_t cols, double density, uint64_t seed) {
  Compressed c = RandomCompressed(rows, cols, density, seed, false, "CSR matrix");
  return CsrMatrix(rows, cols, std::move(c.ptr), std::move(c.idx), std::move(c.val));
}

CsrMatrix CsrMatrix::FromParts(int64_t rows, int64_t cols, std::vector<int32_t> row_ptr,
                               std::vector<int32_t> col_idx, std::vector<float> values) {
  CheckShape("CSR matrix", rows, cols);
  CsrMatrix m(rows, cols, std::move(row_ptr), std::move(col_idx), std::move(values));
  m.Validate();
  return m;
}

CsrMatrix CsrMatrix::FromCsc(const CscMatrix& csc) {
  Compressed t = Transpose(csc.cols(), csc.rows(), csc.col_ptr(), csc.row_idx(), csc.values());
  return CsrMatrix(csc.rows(), csc.cols(), std::move(t.ptr), std::move(t.idx), std::move(t.val));
}

std::vector<float> CsrMatrix::ToDense() const {
  std::vector<float> d(static_cast<std::size_t>(rows_ * cols_), 0.0f);
  for (int64_t i = 0; i < rows_; ++i)
    for (int32_t e = row_ptr_[i]; e < row_ptr_[i + 1]; ++e) d[i * cols_ + col_idx_[e]] = values_[e];
  return d;
}

void CsrMatrix::Validate() const {
  ValidateCompressed("CSR matrix", rows_, cols_, false, row_ptr_, col_idx_, values_);
}

// ---- EIE codebook and packed columns -----------------------------------------

EieCodebook EieCodebook::Linear(double max_abs) {
  PERMDNN_CHECK(max_abs > 0 && std::isfinite(max_abs), "EIE codebook: max |w| must be finite and > 0, got {}",
                max_abs);
  EieCodebook cb;
  cb.weights[0] = 0.0f;
  // 15 levels: -max, ..., +max evenly spaced (level 8 of 1..15 is 0 only if
  // symmetric; shift by half a step so no shared weight is exactly 0).
  for (int i = 1; i < kSize; ++i) {
    double t = (i - 1) / 14.0;  // 0..1
    double w = -max_abs + 2.0 * max_abs * t;
    if (i == 8) w = max_abs / 14.0;  // the middle level would be 0: nudge it
    cb.weights[i] = static_cast<float>(w);
  }
  return cb;
}

int EieCodebook::Encode(float w) const {
  // Binary search over the ascending shared weights 1..15, then the nearer
  // neighbour (ties go to the lower index).
  int lo = 1, hi = kSize - 1;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (weights[mid] < w)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo > 1 && std::fabs(w - weights[lo - 1]) <= std::fabs(weights[lo] - w)) return lo - 1;
  return lo;
}

EiePackedMatrix EiePackedMatrix::Build(const CscMatrix& w, int num_pe, const EieCodebook& codebook) {
  PERMDNN_CHECK(num_pe >= 1, "EIE packing: number of PEs must be >= 1, got {}", num_pe);
  PERMDNN_CHECK(w.rows() >= 1 && w.cols() >= 1, "EIE packing: empty matrix {}x{}", w.rows(), w.cols());
  PERMDNN_CHECK(codebook.weights[0] == 0.0f, "EIE packing: codebook entry 0 must be 0 (padding), got {}",
                codebook.weights[0]);
  for (int i = 2; i < EieCodebook::kSize; ++i)
    PERMDNN_CHECK(codebook.weights[i - 1] < codebook.weights[i],
                  "EIE packing: codebook weights 1..15 must be strictly ascending (entry {} = {} after {})", i,
                  codebook.weights[i], codebook.weights[i - 1]);
  EiePackedMatrix m;
  m.rows_ = w.rows();
  m.cols_ = w.cols();
  m.num_pe_ = num_pe;
  m.codebook_ = codebook;
  m.col_ptr_.assign(num_pe, std::vector<int32_t>(static_cast<std::size_t>(w.cols() + 1), 0));
  m.entries_.assign(num_pe, {});
  const int64_t per_pe_estimate = w.nnz() / num_pe + 16;
  for (auto& e : m.entries_) e.reserve(static_cast<std::size_t>(per_pe_estimate * 5 / 4));
  // last[pe] = local row of the previous entry of this column on this PE.
  std::vector<int64_t> last(num_pe);
  auto col_ptr = w.col_ptr();
  auto row_idx = w.row_idx();
  auto values = w.values();
  for (int64_t j = 0; j < w.cols(); ++j) {
    std::fill(last.begin(), last.end(), -1);
    for (int32_t e = col_ptr[j]; e < col_ptr[j + 1]; ++e) {
      // 32-bit division: rows are below 2^31 and it is much cheaper.
      const uint32_t r = static_cast<uint32_t>(row_idx[e]);
      const int pe = static_cast<int>(r % static_cast<uint32_t>(num_pe));
      const int64_t local = r / static_cast<uint32_t>(num_pe);
      int64_t gap = local - last[pe] - 1;  // zeros skipped on this PE
      auto& out = m.entries_[pe];
      while (gap > kMaxRelativeRow) {
        // A padding zero at relative position 15 covers 15 zeros + itself.
        out.push_back(EieEntry::Make(0, kMaxRelativeRow));
        gap -= kMaxRelativeRow + 1;
        ++m.padding_entries_;
      }
      out.push_back(EieEntry::Make(codebook.Encode(values[e]), static_cast<int>(gap)));
      last[pe] = local;
      ++m.real_entries_;
    }
    for (int pe = 0; pe < num_pe; ++pe) {
      PERMDNN_CHECK(static_cast<int64_t>(m.entries_[pe].size()) < kIndexMax,
                    "EIE packing {}x{}: PE {} holds more than 2^31 entries", w.rows(), w.cols(), pe);
      m.col_ptr_[pe][j + 1] = static_cast<int32_t>(m.entries_[pe].size());
    }
  }
  return m;
}

int64_t EiePackedMatrix::max_entries_per_pe() const {
  int64_t best = 0;
  for (const auto& e : entries_) best = std::max<int64_t>(best, static_cast<int64_t>(e.size()));
  return best;
}

int64_t EiePackedMatrix::bytes(int pointer_bits) const {
  PERMDNN_CHECK(pointer_bits >= 1 && pointer_bits <= 64, "EIE packing: pointer bits must be in [1, 64], got {}",
                pointer_bits);
  const int64_t pointer_bytes = (static_cast<int64_t>(num_pe_) * (cols_ + 1) * pointer_bits + 7) / 8;
  return total_entries() * static_cast<int64_t>(sizeof(EieEntry)) + pointer_bytes;
}

CscMatrix EiePackedMatrix::ToCsc() const {
  std::vector<int32_t> ptr(static_cast<std::size_t>(cols_ + 1), 0);
  std::vector<int32_t> idx;
  std::vector<float> val;
  idx.reserve(static_cast<std::size_t>(real_entries_));
  val.reserve(static_cast<std::size_t>(real_entries_));
  std::vector<std::pair<int32_t, float>> column;
  for (int64_t j = 0; j < cols_; ++j) {
    column.clear();
    for (int pe = 0; pe < num_pe_; ++pe) {
      int64_t local = -1;
      for (int32_t e = col_ptr_[pe][j]; e < col_ptr_[pe][j + 1]; ++e) {
        EieEntry en = entries_[pe][e];
        local += en.relative_row() + 1;
        if (!en.is_padding())
          column.emplace_back(static_cast<int32_t>(local * num_pe_ + pe), codebook_.weights[en.code()]);
      }
    }
    std::sort(column.begin(), column.end());
    for (auto& [r, v] : column) {
      idx.push_back(r);
      val.push_back(v);
    }
    ptr[j + 1] = static_cast<int32_t>(idx.size());
  }
  return CscMatrix::FromParts(rows_, cols_, std::move(ptr), std::move(idx), std::move(val));
}


int CodeBits(int64_t k) {
  PERMDNN_CHECK(k >= 1, "CodeBits: a codebook of {} entries", k);
  return std::max(1, static_cast<int>(std::bit_width(static_cast<uint64_t>(k - 1))));
}

int RowLengthBits(int64_t cols) {
  PERMDNN_CHECK(cols >= 1 && cols <= kIndexMax, "RowLengthBits: cols = {} out of range", cols);
  return static_cast<int>(std::bit_width(static_cast<uint64_t>(cols)));
}

std::vector<uint8_t> PackBits(std::span<const uint32_t> v, int bits) {
  PERMDNN_CHECK(bits >= 1 && bits <= 32, "PackBits: bits = {} must be in [1, 32]", bits);
  std::vector<uint8_t> out(static_cast<std::size_t>(PackedBytes(static_cast<int64_t>(v.size()), bits)), 0);
  for (std::size_t i = 0; i < v.size(); ++i) {
    PERMDNN_CHECK(bits == 32 || v[i] < (uint64_t{1} << bits), "PackBits: value {} at {} does not fit {} bits", v[i],
                  i, bits);
    const uint64_t bit = static_cast<uint64_t>(i) * static_cast<uint64_t>(bits);
    for (int j = 0; j < bits; ++j)
      if ((v[i] >> j) & 1u) out[(bit + j) / 8] |= static_cast<uint8_t>(1u << ((bit + j) % 8));
  }
  return out;
}

uint32_t UnpackBits(std::span<const uint8_t> packed, int64_t i, int bits) {
  const uint64_t bit = static_cast<uint64_t>(i) * static_cast<uint64_t>(bits);
  uint32_t v = 0;
  for (int j = 0; j < bits; ++j) v |= static_cast<uint32_t>((packed[(bit + j) / 8] >> ((bit + j) % 8)) & 1u) << j;
  return v;
}

RelativeIndex EncodeRelative(std::span<const int32_t> row_ptr, std::span<const int32_t> col_idx, int index_bits) {
  PERMDNN_CHECK(index_bits >= kMinIndexBits && index_bits <= kMaxIndexBits,
                "relative indices: index_bits = {} must be in [{}, {}]", index_bits, kMinIndexBits, kMaxIndexBits);
  PERMDNN_CHECK(!row_ptr.empty() && static_cast<std::size_t>(row_ptr.back()) == col_idx.size(),
                "relative indices: row_ptr ends at {} but there are {} column indices",
                row_ptr.empty() ? -1 : row_ptr.back(), col_idx.size());
  const uint32_t pad = (1u << index_bits) - 1;
  RelativeIndex r;
  r.row_len.reserve(row_ptr.size() - 1);
  r.gaps.reserve(col_idx.size());
  for (std::size_t row = 0; row + 1 < row_ptr.size(); ++row) {
    const std::size_t first = r.gaps.size();
    int64_t next = 0;  // the first column not yet covered
    for (int64_t e = row_ptr[row]; e < row_ptr[row + 1]; ++e) {
      int64_t d = col_idx[e] - next;
      PERMDNN_CHECK(d >= 0, "relative indices: row {} is not strictly increasing at entry {}", row, e);
      for (; d >= pad; d -= pad) r.gaps.push_back(pad);
      r.gaps.push_back(static_cast<uint32_t>(d));
      next = col_idx[e] + 1;
    }
    r.row_len.push_back(static_cast<uint32_t>(r.gaps.size() - first));
  }
  return r;
}


CsrPattern DecodeRelative(std::span<const uint8_t> row_len, std::span<const uint8_t> gaps, int64_t rows, int64_t cols,
                          int index_bits, const std::string& where) {
  PERMDNN_CHECK(index_bits >= kMinIndexBits && index_bits <= kMaxIndexBits, "{}: index_bits = {} must be in [{}, {}]",
                where, index_bits, kMinIndexBits, kMaxIndexBits);
  const int len_bits = RowLengthBits(cols);
  PERMDNN_CHECK(static_cast<int64_t>(row_len.size()) == PackedBytes(rows, len_bits),
                "{}: row_len has {} bytes, expected {} ({} rows of {} bits)", where, row_len.size(),
                PackedBytes(rows, len_bits), rows, len_bits);
  int64_t entries = 0;
  for (int64_t r = 0; r < rows; ++r) entries += UnpackBits(row_len, r, len_bits);
  PERMDNN_CHECK(static_cast<int64_t>(gaps.size()) == PackedBytes(entries, index_bits),
                "{}: gaps has {} bytes, expected {} (the {} entries that row_len counts, {} bits each)", where,
                gaps.size(), PackedBytes(entries, index_bits), entries, index_bits);
  const uint32_t pad = (1u << index_bits) - 1;
  CsrPattern p;
  p.row_ptr.reserve(static_cast<std::size_t>(rows + 1));
  p.row_ptr.push_back(0);
  int64_t e = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t end = e + UnpackBits(row_len, r, len_bits);
    int64_t next = 0;  // the first column not yet covered
    for (; e < end; ++e) {
      const uint32_t gap = UnpackBits(gaps, e, index_bits);
      if (gap == pad) {
        PERMDNN_CHECK(e + 1 < end, "{}: gaps: row {} ends with a padding entry (entry {}); a row's last entry is a "
                      "kept weight", where, r, e);
        next += pad;
        continue;
      }
      next += gap;
      PERMDNN_CHECK(next < cols, "{}: gaps: row {} entry {} reaches column {}, past the {} columns", where, r, e, next,
                    cols);
      p.col_idx.push_back(static_cast<int32_t>(next++));
    }
    p.row_ptr.push_back(static_cast<int32_t>(p.col_idx.size()));
  }
  return p;
}

}  // namespace permdnn
