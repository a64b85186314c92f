// Internal: the block-circulant and pruned (CSR, optionally codebook-shared)
// weight formats of the ai.permdnn operators, validated and converted in one
// place for the runtime ops (ops_circulant.cc, ops_sparse.cc), `permdnn
// export` (run directories) and `permdnn compress`.
//
// Every check throws permdnn::Error prefixed with `where` (a node or a layer)
// and names the array and the first bad position, so a broken model file
// says which node and which entry is wrong.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "permdnn/formats/sparse_matrix.h"

namespace permdnn::runtime::detail {

// Largest codebook an ai.permdnn sparse node may carry (codes are uint8).
inline constexpr int64_t kMaxCodebookSize = 256;

// row_ptr [rows+1] / col_idx [nnz] (any integer width, given as int64) of a
// rows x cols CSR matrix: row_ptr starts at 0, never decreases, ends at nnz;
// col_idx in [0, cols) and strictly increasing inside a row ("unsorted CSR
// rows" otherwise). Throws Error naming where, the array and the entry.
void ValidateCsr(const std::string& where, int64_t rows, int64_t cols, std::span<const int64_t> row_ptr,
                 std::span<const int64_t> col_idx);

// codes [nnz] into a codebook of K entries (1 <= K <= 256, every code < K)
// -> the decoded weights. `expected_k` > 0 additionally requires K ==
// expected_k (the run format's 2^bits).
std::vector<float> DecodeCodebook(const std::string& where, std::span<const int64_t> codes,
                                  std::span<const float> codebook, int64_t expected_k = 0);

// Validated arrays -> a core CsrMatrix (int32 indices).
CsrMatrix MakeCsr(const std::string& where, int64_t rows, int64_t cols, std::span<const int64_t> row_ptr,
                  std::span<const int64_t> col_idx, std::vector<float> values);

// Bytes a pruned layer stores: row_ptr and col_idx as int32, values as
// float32 or codes as uint8 plus a float32 codebook of K entries (K = 0: no
// sharing).
inline int64_t SparseStoredBytes(int64_t rows, int64_t nnz, int64_t codebook_size) {
  return (rows + 1) * 4 + nnz * 4 + (codebook_size > 0 ? nnz * 1 + codebook_size * 4 : nnz * 4);
}

// Block-circulant conv weight values [mb][nb][p][ksz] -> dense
// [out][in][ksz] (out channel I·p + c, in channel J·p + d: kernel
// w_IJ[(c − d) mod p]).
std::vector<float> CirculantConvToDense(std::span<const float> values, int64_t out, int64_t in, int p, int64_t ksz);

// Least-squares projection of a dense conv weight [out][in][ksz] onto the
// block-circulant conv format (per kernel tap, BlockCirculantMatrix::FromDense
// of the [out, in] slice). kept_energy over the whole weight.
struct CirculantConvProjection {
  std::vector<float> values;  // [mb][nb][p][ksz]
  double kept_energy = 1.0;
};
CirculantConvProjection ProjectCirculantConv(std::span<const float> dense, int64_t out, int64_t in, int p,
                                             int64_t ksz);

}  // namespace permdnn::runtime::detail
