// The permuted-diagonal weight format of PermDNN.
//
// An m×n matrix (m outputs, n inputs) is cut into p×p blocks; block (I, J)
// holds one offset k_IJ in [0, p) and p values q_IJ[0..p), and its only
// nonzeros are
//
//     W[I·p + c, J·p + (c + k_IJ) mod p] = q_IJ[c],    c = 0..p-1.
//
// Storage is m·n/p values plus one small offset per block and no per-weight
// index, so the compression ratio is p. When m or n is not a multiple of p the
// matrix is zero-padded to the next multiple; the padded positions hold 0 and
// are never trained (Random and FromDense write 0 there).
//
// Canonical layout (what files store and what the reference kernels read):
//     values [row_blocks][col_blocks][p]   (row-block major)
//     offsets[row_blocks][col_blocks]      (uint16 in memory; 1 byte on disk
//                                           when p <= 256, see OffsetBytes)
// SIMD kernels repack this into their own layouts (kernels/permdiag_pack.h);
// the canonical object stays the single source of truth.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/formats/block_grid.h"

namespace permdnn {

// Bytes one block offset needs in a file: ceil(log2 p) bits rounded to bytes
// (1 for p <= 256, else 2).
inline int OffsetBytes(int p) { return p <= 256 ? 1 : 2; }

// A non-owning view of a permuted-diagonal matrix for kernels.
template <typename T>
struct PermDiagView {
  int64_t rows = 0, cols = 0;
  int p = 1;
  int64_t row_blocks = 0, col_blocks = 0;
  const T* values = nullptr;        // [row_blocks][col_blocks][p]
  const uint16_t* offsets = nullptr;  // [row_blocks][col_blocks]

  int64_t padded_rows() const { return row_blocks * p; }
  int64_t padded_cols() const { return col_blocks * p; }
  const T* block(int64_t I, int64_t J) const { return values + (I * col_blocks + J) * p; }
  int offset(int64_t I, int64_t J) const { return offsets[I * col_blocks + J]; }
};

// Shared storage and geometry of the float and fixed-point variants.
template <typename T>
class BasicPermDiag : public BlockGrid {
 public:
  BasicPermDiag() = default;
  // All-zero matrix, all offsets 0. Throws Error on rows/cols < 1, p < 1 or
  // p > 65535.
  BasicPermDiag(int64_t rows, int64_t cols, int p);

  // Structural nonzeros inside the logical m×n shape.
  int64_t nnz() const;
  // Bytes a file needs for this matrix: values + offsets at OffsetBytes(p)
  // (no other index); formats::StoredSize with packed offsets.
  int64_t bytes() const;
  // Dense bytes over stored bytes, both at this element type.
  double compression_ratio() const {
    return static_cast<double>(rows_ * cols_ * int64_t{sizeof(T)}) / static_cast<double>(bytes());
  }

  std::span<T> values() { return values_.span(); }
  std::span<const T> values() const { return values_.span(); }
  std::span<uint16_t> offsets() { return offsets_.span(); }
  std::span<const uint16_t> offsets() const { return offsets_.span(); }
  T* block(int64_t I, int64_t J) { return values_.data() + block_start(I, J); }
  const T* block(int64_t I, int64_t J) const { return values_.data() + block_start(I, J); }
  int offset(int64_t I, int64_t J) const { return offsets_[I * col_blocks_ + J]; }

  // W[r, c] of the logical matrix (0 off the structure). For tests and tools.
  T At(int64_t r, int64_t c) const;

  // Throws Error naming the first bad block if an offset is >= p, or naming
  // the first padded position that holds a nonzero value.
  void Validate() const;

  PermDiagView<T> view() const {
    return {rows_, cols_, p_, row_blocks_, col_blocks_, values_.data(), offsets_.data()};
  }

 protected:
  AlignedBuffer<T> values_;
  AlignedBuffer<uint16_t> offsets_;
};

class PermDiagMatrix;

struct PermDiagProjection;

// Float permuted-diagonal matrix.
class PermDiagMatrix : public BasicPermDiag<float> {
 public:
  using BasicPermDiag<float>::BasicPermDiag;

  // Seeded random: offsets uniform in [0, p); values He-normal scaled to the
  // real fan-in (the nonzeros per row, ceil(n/p)): N(0, 2 / fan_in).
  static PermDiagMatrix Random(int64_t rows, int64_t cols, int p, uint64_t seed);

  // Seeded random offsets with the given values distribution scale:
  // values ~ N(0, stddev^2). Used by tests and benchmarks.
  static PermDiagMatrix RandomWithStddev(int64_t rows, int64_t cols, int p, uint64_t seed,
                                         double stddev);

  // The shared-offset form of this matrix: every block of a block column
  // takes row block 0's offset (values kept; those that fall on padding
  // under the shared offsets zeroed). Seeds shared-offset layers, tests and
  // benchmarks from a random matrix.
  PermDiagMatrix WithColumnOffsets() const;

  // Builds from canonical arrays, validating sizes and offsets.
  static PermDiagMatrix FromParts(int64_t rows, int64_t cols, int p, std::span<const float> values,
                                  std::span<const uint16_t> offsets);

  // Projection of a dense row-major rows×cols matrix: per block the offset
  // that keeps the most energy, values copied from that diagonal.
  static PermDiagProjection FromDense(std::span<const float> dense, int64_t rows, int64_t cols,
                                      int p);

  // Dense row-major rows×cols reconstruction.
  std::vector<float> ToDense() const;
};

struct PermDiagProjection {
  PermDiagMatrix matrix;
  // Σ kept W² / Σ W² over the whole matrix (1 for an all-zero matrix).
  double kept_energy = 1.0;
};

// int16 fixed-point permuted-diagonal matrix: value = q · 2^-frac_bits.
class PermDiagMatrixI16 : public BasicPermDiag<int16_t> {
 public:
  using BasicPermDiag<int16_t>::BasicPermDiag;
  // Quantizes with the given fractional bits, or (frac_bits < -100) with the
  // largest that does not saturate (ChooseFracBits of max |q|).
  static PermDiagMatrixI16 Quantize(const PermDiagMatrix& m, int frac_bits = -1000);
  PermDiagMatrix Dequantize() const;
  int frac_bits() const { return frac_bits_; }
  void set_frac_bits(int f) { frac_bits_ = f; }

 private:
  int frac_bits_ = 0;
};

extern template class BasicPermDiag<float>;
extern template class BasicPermDiag<int16_t>;

}  // namespace permdnn
