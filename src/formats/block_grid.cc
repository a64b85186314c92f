#include "permdnn/formats/block_grid.h"

#include "permdnn/core/error.h"

namespace permdnn {

BlockGrid::BlockGrid(int64_t rows, int64_t cols, int p, const char* format) {
  PERMDNN_CHECK(p >= 1, "{}: block size p must be >= 1, got p = {}", format, p);
  PERMDNN_CHECK(rows >= 1 && cols >= 1, "{}: shape must be at least 1x1, got {}x{}", format, rows, cols);
  rows_ = rows;
  cols_ = cols;
  p_ = p;
  row_blocks_ = CeilDiv(rows, p);
  col_blocks_ = CeilDiv(cols, p);
}

}  // namespace permdnn
