// The block geometry the structured formats share (PermDiagMatrix,
// BlockCirculantMatrix): an m×n matrix cut into p×p blocks, zero-padded to
// the next multiple of p in both directions, blocks stored row-block major
// with p values each.
#pragma once

#include <cstdint>

namespace permdnn {

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

class BlockGrid {
 public:
  BlockGrid() = default;
  // Throws Error on p < 1 or rows/cols < 1; `format` names the matrix kind
  // in the message ("permuted-diagonal matrix", ...).
  BlockGrid(int64_t rows, int64_t cols, int p, const char* format);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int p() const { return p_; }
  int64_t row_blocks() const { return row_blocks_; }
  int64_t col_blocks() const { return col_blocks_; }
  int64_t num_blocks() const { return row_blocks_ * col_blocks_; }
  int64_t padded_rows() const { return row_blocks_ * p_; }
  int64_t padded_cols() const { return col_blocks_ * p_; }
  // Stored values, padding included: row_blocks·col_blocks·p.
  int64_t stored_values() const { return num_blocks() * p_; }
  // Where block (I, J)'s p values start in the row-block-major value array.
  int64_t block_start(int64_t I, int64_t J) const { return (I * col_blocks_ + J) * p_; }

 protected:
  int64_t rows_ = 0, cols_ = 0;
  int p_ = 1;
  int64_t row_blocks_ = 0, col_blocks_ = 0;
};

}  // namespace permdnn
