// Addition-only products with ternary, group-pruned weights (issue 18;
// formats/ternary_matrix.h): W = diag(scale) · T, T in {-1, 0, +1}, whole
// groups of group_len consecutive columns of a row pruned.
//
// No multiply in an inner loop of the fp32 and int16 kernels: they add the
// inputs where T is +1 and subtract them where it is −1, and multiply once
// per output by the row's scale (the 8-bit path below uses the CPU's 8-bit
// dot product instead, which does 64 such products per instruction).
// Pruned groups are never visited (the pack lists only the kept ones).
//
//   * y = W·x (TernaryMatVec, batch 1): per kept group, the input run of
//     the group is loaded a vector at a time and selected by the plus and
//     minus lane masks, which are the stored bit planes themselves (a
//     broadcast, an AND with the lane bits and a compare; kernel
//     `ternary.matvec.masks`). Weights stream at 2 bits each.
//   * Y = W·X, X feature-major cols × batch (TernaryMatMul: batched linear
//     layers and convolutions, whose im2col columns are the batch): per row
//     the column indices of its +1 and of its −1 weights (the pack's index
//     lists), each a contiguous row of X added to or subtracted from up to
//     four vectors of outputs (`ternary.matmul.lists`).
// Each op has a second SIMD row built on subset-sum tables (the lookup-table
// rows, `ternary.*.lut`): four consecutive columns of a row are one code,
// their plus bits and minus bits (two 4-bit indices), and the 16 sums of
// every subset of the four matching inputs are built once and shared by
// all rows, so a row adds T[plus] and subtracts T[minus]: two additions per
// four weights instead of up to four.
//   * matvec (`ternary.matvec.lut`, AVX2 and AVX-512): the table of a chunk
//     of four inputs is one 16-float vector (two on AVX2), the lanes are 16
//     rows and a table lookup (vpermps) picks each row's sums; every chunk
//     of every row is visited (a pruned group is code 0, T[0] = 0) except
//     the chunks whose four inputs are all zero.
//   * matmul (`ternary.matmul.lut`, every target): per tile of up to 4N
//     batch columns and group column, the tables of S chunks at a time
//     (16 sums x the tile); each row that kept the group then does two
//     loads and two adds per chunk and vector. Pruned groups are skipped.
// Each op has a reference kernel (plain loops, double accumulation) that
// the tests hold the SIMD rows to; PERMDNN_KERNELS=reference and
// --reference-kernels run it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "permdnn/formats/ternary_matrix.h"

namespace permdnn::kernels {

// The kernel layout of a TernaryMatrix (packing kept apart from compute),
// built once per layer: the matrix itself (scale, kept groups), each kept
// group's planes as 64-bit words (words[k][0..W) plus, [W..2W) minus,
// W = ceil(group_len / 64), bits past group_len zero), per row the column
// indices of its +1 weights then its −1 weights, and the lookup-table
// rows' 4-column codes.
struct TernaryPack {
  TernaryMatrix matrix;
  int64_t words_per_plane = 1;
  std::vector<uint64_t> words;
  std::vector<int32_t> index;          // plus columns of row r, then minus columns
  std::vector<int64_t> plus_begin;     // [rows + 1]: row r's plus run starts here
  std::vector<int64_t> minus_begin;    // [rows]: row r's minus run starts here (ends at plus_begin[r + 1])
  // The lookup-table rows' codes: a chunk c of four columns (bit j = column
  // 4c + j) as one byte, plus bits | minus bits << 4; columns past the end
  // are zero bits (the matvec's chunks run to a multiple of four).
  std::vector<uint8_t> block_codes;  // matvec: [ceil(rows / 16)][4 · ceil(cols / 16)][16 rows of the block]
  std::vector<uint8_t> group_codes;  // matmul: [kept group][ceil(group_len / 4)], columns of the group
  // The kept groups by group column j (the matmul's loop order): the
  // indices k of kept groups with group_col(k) == j are
  // col_kept[col_begin[j] .. col_begin[j + 1]), in row order; col_row their rows.
  std::vector<int64_t> col_begin;
  std::vector<int32_t> col_kept, col_row;
  // The 8-bit product's weights (TernaryMatMulU8): columns in quads of
  // four, in the order u8_taps sets (Build): with u8_taps = T > 1 (a conv's
  // kernel taps; column c·T + t = input channel c at tap t) tap-major,
  // column c·T + t at t·C4 + c (C = cols / T, C4 = C rounded up to 4), so
  // that a quad is four channels at one tap; with T = 1 the columns' own
  // order (C4 = cols rounded up to 4). Quad q = columns 4q .. 4q + 3 of that
  // order, padding zero; u8_quads = T · C4 / 4. Per row the runs
  // of quads that touch a kept group, u8_runs[2·i] .. u8_runs[2·i + 1]
  // (half-open) for i in [u8_run_begin[r], u8_run_begin[r + 1]), and the
  // row's four codes of each such quad as int8 bytes of one int32
  // (u8_codes, the runs' quads in order from u8_code_begin[r]); u8_sum[r]
  // = the row's sum of codes (the zero point's correction).
  std::vector<int32_t> u8_runs, u8_codes, u8_sum;
  std::vector<int64_t> u8_run_begin, u8_code_begin;
  int64_t u8_taps = 1, u8_quads = 0;

  // u8_taps: see above (cols must be a multiple of it); 0 builds no 8-bit
  // tables (a layer that never runs TernaryMatMulU8: the runtime's linear op).
  static TernaryPack Build(TernaryMatrix m, int64_t u8_taps = 1);
  int64_t rows() const { return matrix.rows(); }
  int64_t cols() const { return matrix.cols(); }
};

// y = W·x + bias (bias empty or [rows]).
void TernaryMatVec(const TernaryPack& w, std::span<const float> x, std::span<const float> bias, std::span<float> y,
                   int threads = 1);
// Y = W·X + bias, X cols × batch, Y rows × batch (feature-major).
void TernaryMatMul(const TernaryPack& w, std::span<const float> x, int64_t batch, std::span<const float> bias,
                   std::span<float> y, int threads = 1);

// int16 inputs (the batched product's 16-bit path, `ternary.matmul_i16.*`):
// X quantized symmetrically with one scale per call, x ≈ x_scale · xq, |xq|
// <= kTernaryI16Bound. The SIMD rows add at most kTernaryI16Run inputs in
// 16-bit lanes (twice the columns per instruction of fp32) before widening
// to 32-bit sums, and 32 · 1023 fits int16, so every sum is exact: the
// result differs from the fp32 product only by the quantization of X
// (relative error <= 0.5 / 1023 per input).
inline constexpr int kTernaryI16Bound = 1023;
inline constexpr int kTernaryI16Run = 32;
// xq = round(x / s) with s = max|x| / kTernaryI16Bound; returns s (1 where x
// is all zero). Error on NaN or inf.
float QuantizeTernaryInput(std::span<const float> x, std::span<int16_t> xq);
// xq = round(x / scale) clamped to ±kTernaryI16Bound (a calibrated scale:
// values past its range saturate; NaN gives 0); scale a positive normal float.
void QuantizeTernaryInputAt(std::span<const float> x, float scale, std::span<int16_t> xq);
// Y = x_scale · diag(scale) · T · Xq + bias, Xq cols × batch (feature-major),
// every |xq| <= kTernaryI16Bound (the caller's promise: QuantizeTernaryInput's output).
void TernaryMatMulI16(const TernaryPack& w, std::span<const int16_t> x, int64_t batch, float x_scale,
                      std::span<const float> bias, std::span<float> y, int threads = 1);

// 8-bit inputs (`ternary.matmul_u8.*`): X quantized to unsigned bytes with
// a zero point, x ≈ x_scale · (xq − zero), and laid out in quads: the four
// values of columns 4q .. 4q + 3 of X's row b are four consecutive bytes,
// element (k, b) at xq[(k / 4) · TernaryU8RowBytes(batch) + b · 4 + k % 4]
// (a quad row padded to whole 64-byte lines; rows past cols and the
// padding: the zero point). One 32-bit lane then holds a quad of one batch
// column, the operand of the CPU's 8-bit dot product (AVX-512 VNNI
// `vpdpbusd`: 64 products of a byte and a ternary code per instruction,
// four times an fp32 FMA's), or of `vpmaddubsw` without VNNI. The sums are
// exact (int32); the result differs from fp32 by the rounding of X to 255
// levels. Non-negative X (ReLU outputs) uses zero point 0 and all 255
// levels; X with negative values zero point 128 and ±127 levels.
struct TernaryU8Scale {
  float scale = 1.0f;
  int zero = 0;
};
// Quads of a column count: ceil(cols / 4).
inline int64_t TernaryU8Quads(int64_t cols) { return (cols + 3) / 4; }
// Bytes of one quad row: the batch padded to a multiple of 16 columns.
inline int64_t TernaryU8RowBytes(int64_t batch) { return (batch + 15) / 16 * 64; }
// X (cols × batch, feature-major) → xq (TernaryU8Quads(cols) ·
// TernaryU8RowBytes(batch) bytes), the scale from max|x| (1 where x is all
// zero). Error on NaN or inf.
TernaryU8Scale QuantizeTernaryInputU8(std::span<const float> x, int64_t batch, std::span<uint8_t> xq);
// The same at a given (calibrated) scale and zero point (0 or 128): values
// past the range saturate, NaN gives the zero point; scale a positive
// normal float.
void QuantizeTernaryInputU8At(std::span<const float> x, int64_t batch, TernaryU8Scale q, std::span<uint8_t> xq);
// Y = x_scale · diag(scale) · T · (Xq − zero) + bias, Xq as above with
// w.u8_quads quad rows (in the pack's column order; TernaryU8Quads(cols)
// when u8_taps is 1).
void TernaryMatMulU8(const TernaryPack& w, std::span<const uint8_t> xq, int64_t batch, TernaryU8Scale q,
                     std::span<const float> bias, std::span<float> y, int threads = 1);

namespace ref {
void TernaryMatVec(const TernaryMatrix& w, const float* x, const float* bias, float* y);
void TernaryMatMul(const TernaryMatrix& w, const float* x, int64_t batch, const float* bias, float* y);
// Exact integer sums (int64), then x_scale · scale · sum + bias in double.
void TernaryMatMulI16(const TernaryMatrix& w, const int16_t* x, int64_t batch, float x_scale, const float* bias,
                      float* y);
// Exact integer sums (int64) over the quad layout in the column order of
// `taps` (TernaryPack::u8_taps), then as above.
void TernaryMatMulU8(const TernaryMatrix& w, int64_t taps, const uint8_t* xq, int64_t batch, TernaryU8Scale q,
                     const float* bias, float* y);
}  // namespace ref

}  // namespace permdnn::kernels
