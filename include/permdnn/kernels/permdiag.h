// Products with a permuted-diagonal matrix W (rows m × cols n, block size p).
//
// Every op has a reference kernel (plain loops, double accumulation for
// floats, exact int64 for fixed point; the oracle) and a fast kernel
// (Highway SIMD with runtime dispatch, multi-threaded over row or column
// blocks). The public functions below route to the path chosen once per
// process (see dispatch.h); the `ref::` and `simd::` namespaces expose each
// path directly for tests and benchmarks.
//
// Layouts:
//   * x, y, g are dense vectors of length cols / rows.
//   * Batched operands are feature-major: X is cols × B row-major, i.e.
//     X[j * B + b] is input feature j of sample b, and Y is rows × B. This
//     puts the B samples of one feature side by side so one weight is
//     broadcast over a SIMD vector of samples.
//   * The "Rows" products are batch-major instead (the layout of the runtime
//     and of LibTorch): X is batch × cols row-major, X[b * cols + j], and Y
//     is batch × rows; each sample is one contiguous row.
//   * bias may be empty (no bias) or have `rows` entries.
// Shapes are validated by the public functions (permdnn::Error on mismatch);
// ref:: and simd:: only debug-assert.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/formats/permdiag_matrix.h"

namespace permdnn::kernels {

// Column-major repack of a float permuted-diagonal matrix for the
// column-wise (activation-sparse) product: for input column j = J·p + d the
// row_blocks weights it touches, one per row block I, are contiguous:
//     col_values[j · row_blocks + I] = q_IJ[(d − k_IJ) mod p]
// and the row each one lands on is I·p + (d − k_IJ) mod p, recomputed from
// the column-major offsets col_offsets[J · row_blocks + I] = k_IJ (one byte
// each for p ≤ 256): no per-weight index is stored, as in the PermDNN engine.
struct PermDiagColumnPack {
  int64_t rows = 0, cols = 0;
  int p = 1;
  int64_t row_blocks = 0, col_blocks = 0;
  AlignedBuffer<float> col_values;     // [padded_cols][row_blocks]
  AlignedBuffer<uint8_t> col_offsets;  // [col_blocks][row_blocks] (p <= 256)
  AlignedBuffer<uint16_t> col_offsets16;  // same, used only when p > 256

  static PermDiagColumnPack Build(const PermDiagMatrix& w);
};

// The batch-1 product's own copy of a float permuted-diagonal matrix, in
// the layout fastest for its size.
//
// Cache-resident matrices (values <= chunked_max_bytes) with p dividing 64
// (1, 2, 4, ..., 64: the SIMD shapes) are stored chunk-major. The row-major matrix makes the matvec read each row
// block's weights over all n columns while the doubled input (2n floats)
// falls out of L1 between row blocks. Here the columns are cut into chunks
// of `chunk` column blocks (4 KiB of doubled input, which stays in L1) and
// row blocks are interleaved in groups of `group` = 64/p (64 floats per
// step), so one chunk of the whole matrix is one contiguous run:
//     values[c][g][j][r][0..p) = q_IJ,   I = g·group + r,  J = c·chunk + j
//     offsets[c][g][j][r]      = k_IJ    (one byte each)
// The last chunk holds the remaining column blocks; row blocks past
// row_blocks (up to groups·group) are zero with offset 0. At p = 4
// (LaneMajor) a step's 64 values are stored element-major instead,
//     values[c][g][j][e][r] = q_IJ[e]   (e in [0, 4), r in [0, 16))
// so a vector holds one output element of consecutive row blocks and the
// kernel's lane permutation is the offsets themselves (ValueIndex maps
// both layouts).
//
// Other matrices (UsesChunks below) keep the matrix's row-major layout
// (values and two-byte offsets copied as they are; chunked = false):
// streamed from DRAM, the four row streams of the row-major kernel
// measured faster than chunk streams (src/kernels/README.md).
struct PermDiagRowPack {
  int64_t rows = 0, cols = 0;
  int p = 1;
  int64_t row_blocks = 0, col_blocks = 0;
  bool chunked = false;
  int64_t group = 1, groups = 0;  // row blocks per group, number of groups
  int64_t chunk = 1;              // column blocks per chunk
  AlignedBuffer<float> values;
  AlignedBuffer<uint8_t> offsets;     // chunked
  AlignedBuffer<uint16_t> offsets16;  // row-major

  // 3/4 of a 32 MiB L3 (Zen 3): above it the weights come from DRAM.
  static constexpr int64_t kChunkedMaxBytes = int64_t{24} << 20;
  static PermDiagRowPack Build(const PermDiagMatrix& w, int64_t chunked_max_bytes = kChunkedMaxBytes);
  // Whether Build stores w chunk-major: p divides 64, the values with the
  // padding to whole groups fit in chunked_max_bytes, and that padding adds
  // at most a quarter (a 10-output layer at p = 8 would be 4x its weights).
  static bool UsesChunks(const PermDiagMatrix& w, int64_t chunked_max_bytes = kChunkedMaxBytes);
  // The matrix back (Build's inverse), for holders that keep one copy.
  PermDiagMatrix Unpack() const;

  // Whether a chunked pack of block size p stores its steps element-major
  // (the layout above): p = 4, where the element-major kernel's lane
  // indices are the offsets plus the element, with no permutation to spread
  // each offset over its block's lanes (src/kernels/permdiag_simd.cc,
  // lanes<4>).
  static constexpr bool LaneMajor(int p) { return p == 4; }
  // Where element e of the block in `slot` is in values (chunked layout;
  // a row-major pack's slot is its block's index I·col_blocks + J).
  int64_t ValueIndex(int64_t slot, int e) const {
    if (!chunked || !LaneMajor(p)) return slot * p + e;
    const int64_t r = slot % group;
    return (slot - r) * p + e * group + r;
  }
  // Chunked layout: start of chunk c (its groups follow each other, each
  // holding ChunkBlocks(c) · group blocks).
  int64_t ChunkStart(int64_t c) const { return c * chunk * groups * group; }
  int64_t ChunkBlocks(int64_t c) const { return std::min(chunk, col_blocks - c * chunk); }
  int64_t chunks() const { return (col_blocks + chunk - 1) / chunk; }
  // Chunked layout: f(slot, I, J) for every block (I, J) of the matrix, in
  // slot order (padding rows skipped). Build, Unpack and the reference
  // kernel map slots to blocks through this one loop.
  template <class F>
  void ForEachBlock(F&& f) const {
    for (int64_t c = 0; c < chunks(); ++c) {
      const int64_t jn = ChunkBlocks(c);
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t j = 0; j < jn; ++j)
          for (int64_t r = 0; r < group; ++r) {
            const int64_t I = g * group + r;
            if (I < row_blocks) f(ChunkStart(c) + (g * jn + j) * group + r, I, c * chunk + j);
          }
    }
  }
  // Row-major layout: the matrix view over the copy.
  PermDiagView<float> RowMajorView() const {
    return {rows, cols, p, row_blocks, col_blocks, values.data(), offsets16.data()};
  }
  int64_t bytes() const {
    return static_cast<int64_t>(values.size() * sizeof(float) + offsets.size() + offsets16.size() * 2);
  }
};

// The weights of the batched product Y = X·Wᵀ in the order its `lanes`
// row reads them (kernel table row permdiag.matmul_rows.lanes: the batch
// in the vector lanes, B a multiple of 64; src/kernels/permdiag_simd.cc).
// That row walks the matrix in I-chunks of chunk_rows row blocks (their
// accumulators stay in L2) and, inside one, J-chunks of chunk_cols column
// blocks (their transposed inputs stay in L1), every row block of the
// I-chunk reading its piece of the J-chunk: chunk_cols·p floats. In the
// matrix's row-major layout those pieces are chunk_rows short streams
// col_blocks·p floats apart, which the hardware prefetcher does not follow;
// the row prefetches them in software either way. On the Intel Xeon of
// docs/benchmarks.md (B = 64, one thread, alternating rounds) the matrix ran
// 1.00-1.14x this layout's time (AVX3 Alex-6 / VGG-6 p = 4 16.8-18.1 /
// 46.8-48.0 against 16.7-16.8 / 43.2-44.9 ms, AVX2 4096x4096 p = 4 12.0
// against 10.5). (Stop 53 had measured 41-57 against 67-71 GF/s per stored
// weight, but its binary had lost the software prefetches: permdiag_simd.cc,
// PrefetchLine.) Here each I-chunk keeps its row-major region of values, stored J-chunk by J-chunk and, inside one,
// row block by row block, so the row reads one sequential stream:
//     values[Ic·nb·p + J0·nI·p + (I − Ic)·nJ·p + (J − J0)·p + e] = q_IJ[e]
// for block (I, J) in I-chunk [Ic, Ic + nI) and J-chunk [J0, J0 + nJ)
// (nb = col_blocks; the last chunks may be shorter), and block (I, J)'s
// offset at the same place divided by p. The chunk sizes are the row's
// for the SIMD target active at Build (ChunkRows / ChunkCols of its
// samples per transposed row); the kernel reads them from the pack, so a
// pack runs on any target (where the table picks another row for the
// problem, that row runs on the matrix unpacked for the call).
struct PermDiagLanesPack {
  int64_t rows = 0, cols = 0;
  int p = 1;
  int64_t row_blocks = 0, col_blocks = 0;
  int64_t chunk_rows = 1, chunk_cols = 1;
  AlignedBuffer<float> values;
  AlignedBuffer<uint16_t> offsets;  // BlockStart(I, J) / p

  // The lanes row's chunks for `samples` samples per transposed row (4
  // vectors: 64 on AVX-512, 32 on AVX2): 128 KiB of accumulators per
  // I-chunk, 32 KiB of transposed input per J-chunk.
  static int64_t ChunkRows(int p, int64_t samples) {
    return std::max<int64_t>(1, (int64_t{128} << 10) / (p * samples * int64_t{sizeof(float)}));
  }
  static int64_t ChunkCols(int p, int64_t samples) {
    return std::max<int64_t>(1, (int64_t{32} << 10) / (p * samples * int64_t{sizeof(float)}));
  }
  static PermDiagLanesPack Build(const PermDiagMatrix& w);
  // The matrix back (Build's inverse), for holders that keep one copy.
  PermDiagMatrix Unpack() const;
  // Where block (I, J)'s p values start in values.
  int64_t BlockStart(int64_t I, int64_t J) const {
    const int64_t Ic = I / chunk_rows * chunk_rows, J0 = J / chunk_cols * chunk_cols;
    const int64_t nI = std::min(chunk_rows, row_blocks - Ic), nJ = std::min(chunk_cols, col_blocks - J0);
    return (Ic * col_blocks + J0 * nI + (I - Ic) * nJ + (J - J0)) * p;
  }
  int64_t bytes() const {
    return static_cast<int64_t>(values.size() * sizeof(float) + offsets.size() * sizeof(uint16_t));
  }
};

// ---- Public entry points (validate, then dispatch) -------------------------

// y = W·x + bias.
void PermDiagMatVec(const PermDiagMatrix& w, std::span<const float> x,
                    std::span<const float> bias, std::span<float> y, int threads = 1);
// The same product on the row pack (the batch-1 kernel of permdnn bench and
// of the runtime).
void PermDiagMatVec(const PermDiagRowPack& w, std::span<const float> x, std::span<const float> bias,
                    std::span<float> y, int threads = 1);
// Y = W·X + bias (bias broadcast over the batch). X: cols × batch, Y: rows × batch.
void PermDiagMatMul(const PermDiagMatrix& w, std::span<const float> x, int64_t batch,
                    std::span<const float> bias, std::span<float> y, int threads = 1);
// Y = X·Wᵀ + bias, batch-major: X is batch × cols, Y is batch × rows (row b
// of Y is W·x_b + bias). Register-blocked over tiles of samples.
void PermDiagMatMulRows(const PermDiagMatrix& w, std::span<const float> x, int64_t batch,
                        std::span<const float> bias, std::span<float> y, int threads = 1);
// The same product on the lanes pack (the runtime's layout where the lanes
// row runs: PermDiagUsesLanesPack).
void PermDiagMatMulRows(const PermDiagLanesPack& w, std::span<const float> x, int64_t batch,
                        std::span<const float> bias, std::span<float> y, int threads = 1);
// Whether PermDiagMatMulRows of this problem runs the lanes row on the
// active SIMD target (so a holder of the weights keeps a PermDiagLanesPack).
bool PermDiagUsesLanesPack(int p, int64_t rows, int64_t cols, int64_t batch);
// x = Wᵀ·g (the input gradient of y = W·x).
void PermDiagMatVecT(const PermDiagMatrix& w, std::span<const float> g, std::span<float> x,
                     int threads = 1);
// X = Wᵀ·G. G: rows × batch, X: cols × batch.
void PermDiagMatMulT(const PermDiagMatrix& w, std::span<const float> g, int64_t batch,
                     std::span<float> x, int threads = 1);
// y = W·x + bias, column by column, touching only the columns whose x_j != 0.
void PermDiagMatVecSparseInput(const PermDiagColumnPack& w, std::span<const float> x,
                               std::span<const float> bias, std::span<float> y, int threads = 1);
// The input density below which a zero-skipping product beats the
// dense-input one, on this machine and SIMD target: measured, not set by
// hand. Times `dense` and `skipping` on random inputs of `cols` floats at
// densities 1 and 1/4 (each timing the median of runs of at least
// min_seconds / 8, by the calling thread's CPU time when the products run
// on `threads` = 1, so a loaded machine's lost time slices do not count;
// else the wall clock), fits the skipping time as a line in the density and
// returns where it meets the dense-input time, clamped to [0, 1] (0:
// skipping never wins; 1: it always does). The runtime measures it once per
// layer (ops_permdiag.cc); the overloads below measure the general format
// (row pack against column pack) and permdiag_column.h's.
double MeasureSkipCrossover(const std::function<void(std::span<const float>)>& dense,
                            const std::function<void(std::span<const float>)>& skipping, int64_t cols,
                            int threads, double min_seconds = 4e-3);
double MeasureSkipCrossover(const PermDiagRowPack& rows, const PermDiagColumnPack& columns, int threads,
                            double min_seconds = 4e-3);
// Fixed point: acc[r] = bias[r] + Σ q·x exactly (int64, scale 2^-(fw+fx)),
// y[r] = RequantizeShift<int16_t>(acc[r], shift). bias is at accumulator
// scale and may be empty.
void PermDiagMatVecI16(const PermDiagMatrixI16& w, std::span<const int16_t> x,
                       std::span<const int64_t> bias, int shift, std::span<int16_t> y,
                       int threads = 1);
// The exact accumulators only (no bias, no requantization).
void PermDiagMatVecI16Acc(const PermDiagMatrixI16& w, std::span<const int16_t> x,
                          std::span<int64_t> acc, int threads = 1);

// ---- Reference kernels (the oracle) ----------------------------------------
namespace ref {
void MatVec(const PermDiagView<float>& w, const float* x, const float* bias, float* y);
void MatMul(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias, float* y);
void MatMulRows(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias, float* y);
void MatVecT(const PermDiagView<float>& w, const float* g, float* x);
void MatMulT(const PermDiagView<float>& w, const float* g, int64_t batch, float* x);
void MatVecSparseInput(const PermDiagColumnPack& w, const float* x, const float* bias, float* y);
void MatVecPacked(const PermDiagRowPack& w, const float* x, const float* bias, float* y);
void MatMulRowsLanes(const PermDiagLanesPack& w, const float* x, int64_t batch, const float* bias, float* y);
void MatVecI16Acc(const PermDiagView<int16_t>& w, const int16_t* x, int64_t* acc);
}  // namespace ref

// ---- SIMD kernels (Highway, dispatched to the best target) -----------------
namespace simd {
void MatVec(const PermDiagView<float>& w, const float* x, const float* bias, float* y, int threads);
void MatMul(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias, float* y,
            int threads);
void MatMulRows(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias, float* y,
                int threads);
void MatVecT(const PermDiagView<float>& w, const float* g, float* x, int threads);
void MatMulT(const PermDiagView<float>& w, const float* g, int64_t batch, float* x, int threads);
void MatVecSparseInput(const PermDiagColumnPack& w, const float* x, const float* bias, float* y,
                       int threads);
void MatVecPacked(const PermDiagRowPack& w, const float* x, const float* bias, float* y, int threads);
// Where the lanes row does not admit the pack's problem on the active
// target: ref::MatMulRowsLanes.
void MatMulRowsLanes(const PermDiagLanesPack& w, const float* x, int64_t batch, const float* bias, float* y,
                     int threads);
// Samples per transposed row of the active target's lanes row (4 vectors),
// 0 where it has none.
int64_t LanesRowSamples();
void MatVecI16Acc(const PermDiagView<int16_t>& w, const int16_t* x, int64_t* acc, int threads);
}  // namespace simd

}  // namespace permdnn::kernels
