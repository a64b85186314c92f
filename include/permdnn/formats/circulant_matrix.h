// The block-circulant weight format of CirCNN (Ding et al., MICRO 2017).
//
// An m×n matrix is cut into p×p blocks (zero-padded to multiples of p like
// PermDiagMatrix); block (I, J) is circulant, defined by one vector w_IJ of
// length p:
//
//     W[I·p + c, J·p + d] = w_IJ[(c − d) mod p]
//
// so y_I = Σ_J w_IJ ⊛ x_J (circular convolution) = Σ_J IFFT(FFT(w_IJ) ∘ FFT(x_J)).
// Storage is m·n/p values and no index at all: compression ratio p, like
// PermDNN, but every weight of a block is used by every input of the block,
// so a product costs FFTs (or p² MACs per block directly) rather than p MACs.
//
// Layout: values[row_blocks][col_blocks][p], w_IJ contiguous.
// Padding: rows ≥ m are never read and inputs ≥ n are zero, so the parts of
// the circulant blocks that fall into the padding have no effect; ToDense
// returns the logical m×n matrix and FromDense projects only onto it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/formats/block_grid.h"

namespace permdnn {

template <typename T>
struct CirculantView {
  int64_t rows = 0, cols = 0;
  int p = 1;
  int64_t row_blocks = 0, col_blocks = 0;
  const T* values = nullptr;  // [row_blocks][col_blocks][p]
  const T* block(int64_t I, int64_t J) const { return values + (I * col_blocks + J) * p; }
};

struct CirculantProjection;

class BlockCirculantMatrix : public BlockGrid {
 public:
  BlockCirculantMatrix() = default;
  // All-zero matrix. Throws Error on rows/cols < 1 or p < 1.
  BlockCirculantMatrix(int64_t rows, int64_t cols, int p);

  // Seeded random, He-normal scaled to the fan-in n (every input reaches
  // every output through a circulant block): N(0, 2/n).
  static BlockCirculantMatrix Random(int64_t rows, int64_t cols, int p, uint64_t seed);
  static BlockCirculantMatrix FromParts(int64_t rows, int64_t cols, int p, std::span<const float> values);
  // Least-squares projection of a dense row-major matrix: w_IJ[t] is the
  // mean of the block's wrapped diagonal t over the positions inside m×n.
  static CirculantProjection FromDense(std::span<const float> dense, int64_t rows, int64_t cols, int p);
  std::vector<float> ToDense() const;

  int64_t bytes() const;  // the values (formats::StoredSize)
  double compression_ratio() const {
    return static_cast<double>(rows_ * cols_ * int64_t{sizeof(float)}) / static_cast<double>(bytes());
  }
  std::span<float> values() { return values_.span(); }
  std::span<const float> values() const { return values_.span(); }
  float* block(int64_t I, int64_t J) { return values_.data() + block_start(I, J); }
  const float* block(int64_t I, int64_t J) const { return values_.data() + block_start(I, J); }
  CirculantView<float> view() const { return {rows_, cols_, p_, row_blocks_, col_blocks_, values_.data()}; }

 private:
  AlignedBuffer<float> values_;
};

struct CirculantProjection {
  BlockCirculantMatrix matrix;
  double kept_energy = 1.0;  // ‖projection‖² / ‖W‖² (1 for an all-zero W)
};

}  // namespace permdnn
