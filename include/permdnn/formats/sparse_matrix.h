// Unstructured sparse formats: CSC, CSR and EIE's packed columns.
//
// These are the formats of Deep Compression and EIE (Han et al., ISCA 2016),
// the unstructured baseline that the permuted-diagonal format is compared
// with. A matrix is m rows (outputs) × n columns (inputs), like PermDiagMatrix.
//
//   * CscMatrix: col_ptr[n+1], row_idx[nnz], values[nnz]; rows strictly
//     increasing inside a column. Column-wise (activation-sparse) products
//     and EIE read this layout.
//   * CsrMatrix: the same by rows (row_ptr[m+1], col_idx[nnz], values[nnz]).
//   * EiePackedMatrix: EIE's storage. Rows are interleaved over num_pe
//     processing elements (row r lives on PE r mod num_pe as local row
//     r / num_pe). Each PE stores its part of every column as one byte per
//     entry: the low nibble is a 4-bit index into a 16-entry shared-weight
//     codebook, the high nibble the number of zeros skipped since the previous
//     entry of that column (4-bit relative row index). A gap of more than 15
//     zeros cannot be encoded, so a padding entry (codebook index 0, weight 0,
//     relative index 15) is inserted, once per 16 skipped positions. Each PE
//     also stores n+1 column pointers into its entry array.
//
// Indices are int32 (nnz and dimensions must stay below 2^31; checked).
// All builders validate their arguments and throw permdnn::Error naming the
// matrix shape and what was wrong.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace permdnn {

class CsrMatrix;

class CscMatrix {
 public:
  CscMatrix() = default;

  // Keeps the nonzeros of a dense row-major rows×cols matrix.
  static CscMatrix FromDense(std::span<const float> dense, int64_t rows, int64_t cols);
  // Every entry independently nonzero with probability `density` (seeded,
  // generated column by column with geometric gaps, so the cost is O(nnz)).
  // Values He-uniform: U(-a, a), a = sqrt(6 / fan_in), fan_in = density · cols
  // (variance 2 / fan_in). Seeded SplitMix64: same seed, same matrix.
  static CscMatrix Random(int64_t rows, int64_t cols, double density, uint64_t seed);
  // From raw arrays; validates sizes, bounds and ordering.
  static CscMatrix FromParts(int64_t rows, int64_t cols, std::vector<int32_t> col_ptr,
                             std::vector<int32_t> row_idx, std::vector<float> values);
  static CscMatrix FromCsr(const CsrMatrix& csr);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t nnz() const { return static_cast<int64_t>(row_idx_.size()); }
  double density() const { return static_cast<double>(nnz()) / static_cast<double>(rows_ * cols_); }
  // Bytes of values + indices + pointers at the given widths (defaults:
  // fp32 values, int32 indices and pointers).
  int64_t bytes(int value_bytes = 4, int index_bytes = 4) const {
    return nnz() * (value_bytes + index_bytes) + (cols_ + 1) * index_bytes;
  }

  std::span<const int32_t> col_ptr() const { return col_ptr_; }
  std::span<const int32_t> row_idx() const { return row_idx_; }
  std::span<const float> values() const { return values_; }
  std::span<float> values() { return values_; }

  std::vector<float> ToDense() const;  // row-major rows×cols
  // Throws Error naming the first bad column / entry.
  void Validate() const;

 private:
  // The arrays as given (callers that build them valid; FromParts validates).
  CscMatrix(int64_t rows, int64_t cols, std::vector<int32_t> col_ptr, std::vector<int32_t> row_idx,
            std::vector<float> values)
      : rows_(rows), cols_(cols), col_ptr_(std::move(col_ptr)), row_idx_(std::move(row_idx)),
        values_(std::move(values)) {}
  int64_t rows_ = 0, cols_ = 0;
  std::vector<int32_t> col_ptr_{0};
  std::vector<int32_t> row_idx_;
  std::vector<float> values_;
};

class CsrMatrix {
 public:
  CsrMatrix() = default;
  static CsrMatrix FromDense(std::span<const float> dense, int64_t rows, int64_t cols);
  static CsrMatrix Random(int64_t rows, int64_t cols, double density, uint64_t seed);
  static CsrMatrix FromParts(int64_t rows, int64_t cols, std::vector<int32_t> row_ptr,
                             std::vector<int32_t> col_idx, std::vector<float> values);
  static CsrMatrix FromCsc(const CscMatrix& csc);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t nnz() const { return static_cast<int64_t>(col_idx_.size()); }
  double density() const { return static_cast<double>(nnz()) / static_cast<double>(rows_ * cols_); }
  int64_t bytes(int value_bytes = 4, int index_bytes = 4) const {
    return nnz() * (value_bytes + index_bytes) + (rows_ + 1) * index_bytes;
  }

  std::span<const int32_t> row_ptr() const { return row_ptr_; }
  std::span<const int32_t> col_idx() const { return col_idx_; }
  std::span<const float> values() const { return values_; }
  std::span<float> values() { return values_; }

  std::vector<float> ToDense() const;
  void Validate() const;

 private:
  CsrMatrix(int64_t rows, int64_t cols, std::vector<int32_t> row_ptr, std::vector<int32_t> col_idx,
            std::vector<float> values)
      : rows_(rows), cols_(cols), row_ptr_(std::move(row_ptr)), col_idx_(std::move(col_idx)),
        values_(std::move(values)) {}
  int64_t rows_ = 0, cols_ = 0;
  std::vector<int32_t> row_ptr_{0};
  std::vector<int32_t> col_idx_;
  std::vector<float> values_;
};

// EIE's 16-entry shared-weight codebook. Index 0 is reserved for the weight
// 0 (padding entries); indices 1..15 hold the shared weights in strictly
// ascending order (EiePackedMatrix::Build checks it).
struct EieCodebook {
  static constexpr int kSize = 16;
  std::array<float, kSize> weights{};

  // 15 levels spread linearly over [-max_abs, max_abs] (Deep Compression
  // uses k-means; linear initialisation is its documented starting point and
  // is enough for storage and timing). Throws Error if max_abs is not > 0.
  static EieCodebook Linear(double max_abs);
  // Nearest nonzero code (1..15) for w (binary search); never 0.
  int Encode(float w) const;
};

// One stored entry: 4 bits of codebook index + 4 bits of relative row index
// = 8 bits per weight.
struct EieEntry {
  uint8_t packed = 0;  // (relative_row << 4) | code

  static EieEntry Make(int code, int relative_row) {
    return {static_cast<uint8_t>((relative_row << 4) | code)};
  }
  int code() const { return packed & 0xF; }
  int relative_row() const { return packed >> 4; }
  bool is_padding() const { return code() == 0; }
};
static_assert(sizeof(EieEntry) == 1, "EIE stores one byte per entry");

class EiePackedMatrix {
 public:
  static constexpr int kMaxRelativeRow = 15;  // 4-bit field

  // Packs `w` for num_pe PEs with the given codebook. Throws Error on
  // num_pe < 1 or an empty matrix.
  static EiePackedMatrix Build(const CscMatrix& w, int num_pe, const EieCodebook& codebook);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int num_pe() const { return num_pe_; }
  const EieCodebook& codebook() const { return codebook_; }

  // PE `pe`'s entries of column j: entries(pe)[col_ptr(pe)[j] .. col_ptr(pe)[j+1]).
  std::span<const int32_t> col_ptr(int pe) const { return col_ptr_[pe]; }
  std::span<const EieEntry> entries(int pe) const { return entries_[pe]; }
  int64_t entries_in(int pe, int64_t j) const { return col_ptr_[pe][j + 1] - col_ptr_[pe][j]; }

  int64_t real_entries() const { return real_entries_; }      // nnz of the source matrix
  int64_t padding_entries() const { return padding_entries_; }  // inserted zeros
  int64_t total_entries() const { return real_entries_ + padding_entries_; }
  int64_t max_entries_per_pe() const;
  // Exact storage: one byte per entry (padding included) plus, per PE,
  // cols+1 pointers of pointer_bits bits (EIE: 16) rounded up to bytes.
  int64_t bytes(int pointer_bits = 16) const;

  // Decodes back to CSC with the codebook weights (padding dropped).
  CscMatrix ToCsc() const;

 private:
  int64_t rows_ = 0, cols_ = 0;
  int num_pe_ = 1;
  EieCodebook codebook_;
  std::vector<std::vector<int32_t>> col_ptr_;   // [pe][cols + 1]
  std::vector<std::vector<EieEntry>> entries_;  // [pe][...]
  int64_t real_entries_ = 0, padding_entries_ = 0;
};

// Deep Compression's relative column indices (Han et al., ICLR 2016, §2),
// the stored form of the registry's csr-relative format. Inside each row
// the kept columns are coded by the zeros skipped since the previous kept
// column (the first by the zeros since column 0), in index_bits bits. The
// largest value, M = 2^index_bits − 1, marks a padding entry: skip M columns
// and store no weight; a kept weight's gap is 0..M−1, so a run of d zeros
// costs floor(d / M) padding entries. Padding entries have no code: the
// codes stream holds one code per kept weight. Unlike EiePackedMatrix (a
// fixed 4-bit index over interleaved PEs, padding = code 0), the index width
// is a parameter and rows are whole.
//
// Arrays (all bit-packed, LSB first, the unused high bits of the last byte
// zero: PackBits):
//   row_len  entries per row (padding included), RowLengthBits(cols) bits each
//   gaps     the entries' gap fields, index_bits each
inline constexpr int kMinIndexBits = 2, kMaxIndexBits = 8;
// Bits of one row length: enough for cols (a row never has more entries
// than columns: every entry advances at least one column).
int RowLengthBits(int64_t cols);
// v[i] < 2^bits in `bits` bits each (1..32), LSB first: ceil(n·bits/8) bytes.
std::vector<uint8_t> PackBits(std::span<const uint32_t> v, int bits);
// Field i of a PackBits stream (no bounds check beyond the caller's).
uint32_t UnpackBits(std::span<const uint8_t> packed, int64_t i, int bits);
inline int64_t PackedBytes(int64_t n, int bits) { return (n * bits + 7) / 8; }
// Bits of one packed code into a codebook of k >= 1 entries (at least 1).
int CodeBits(int64_t k);

struct RelativeIndex {
  std::vector<uint32_t> row_len;  // [rows], entries per row
  std::vector<uint32_t> gaps;     // [entries], padding = 2^index_bits − 1
  int64_t entries() const { return static_cast<int64_t>(gaps.size()); }
};
// The relative form of a valid CSR pattern (row_ptr [rows+1], col_idx
// sorted per row). Throws Error for index_bits outside [kMinIndexBits,
// kMaxIndexBits].
RelativeIndex EncodeRelative(std::span<const int32_t> row_ptr, std::span<const int32_t> col_idx, int index_bits);
// The CSR pattern (row_ptr [rows+1], col_idx) of packed row_len and gaps
// streams. Throws Error prefixed by `where` naming the array and the bad
// row or entry: streams of the wrong length, a column past cols, a row
// that ends with a padding entry (the encoder never writes one).
struct CsrPattern {
  std::vector<int32_t> row_ptr, col_idx;
};
CsrPattern DecodeRelative(std::span<const uint8_t> row_len, std::span<const uint8_t> gaps, int64_t rows, int64_t cols,
                          int index_bits, const std::string& where);

}  // namespace permdnn
