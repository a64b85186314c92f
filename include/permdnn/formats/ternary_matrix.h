// Ternary weights with PE-wise group sparsity (Yang, He and Fan, "Harmonious
// Coexistence of Structured Weight Pruning and Ternarization for Deep Neural
// Networks", AAAI 2020; issue 18).
//
// A matrix is rows (outputs) × cols (inputs). Each row is cut into groups of
// group_len consecutive columns: a linear layer's group is `group_ch`
// consecutive inputs of one output row; a convolution, lifted to
// [out, in·taps] with column = in channel · taps + tap, has group_len =
// group_ch · taps: group_ch consecutive input channels × the whole kernel of
// one output filter, what one processing element of the authors' FPGA
// accelerator handles. Weight (r, c) = scale[r] · t(r, c) with t in
// {-1, 0, +1}.
//
// Storage (every byte is counted by formats::StoredSize):
//   group_mask  ceil(rows·G / 8) bytes (G = cols / group_len groups per
//               row): bit r·G + j (LSB first) is set when group (r, j) is
//               kept; a pruned group stores nothing else;
//   plus, minus kept × ceil(group_len / 8) bytes, the kept groups in
//               (row, group) order: bit e of a group's plus (minus) plane is
//               set when its e-th weight is +1 (−1); never both; the bits
//               past group_len are zero;
//   scale       rows floats: one α per output row.
// Two bit planes rather than 2-bit codes: the same 2 bits per weight, but
// each plane is already the lane mask the addition-only kernels select with
// (add where plus, subtract where minus), so no decoding compare; the fourth
// state (both set) is the one invalid value and is rejected.
// One α per output row rather than per layer: the kernels multiply once per
// output anyway, a row's α costs 4 bytes against group_len·G/4 bytes of
// codes (16 × 3×3 × 16 in channels: 4 vs 36 bytes), and it keeps more
// energy on rows whose magnitudes differ (a per-layer α is the special case
// of equal entries, which a trainer with the paper's per-layer α writes).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace permdnn {

class TernaryMatrix {
 public:
  TernaryMatrix() = default;

  // From the stored arrays; validates sizes, the mask's padding bits,
  // planes that overlap (a weight that would be both +1 and −1) and plane
  // padding; Error messages start with `where`.
  static TernaryMatrix FromParts(int64_t rows, int64_t cols, int64_t group_len, std::vector<uint8_t> group_mask,
                                 std::vector<uint8_t> plus, std::vector<uint8_t> minus, std::vector<float> scale,
                                 const std::string& where = "TernaryMatrix");
  // From codes [rows][cols] in {-1, 0, +1} (Error naming `where` and the
  // first other value) and scale [rows]; groups whose codes are all zero
  // are pruned (stored as nothing).
  static TernaryMatrix FromCodes(int64_t rows, int64_t cols, int64_t group_len, std::span<const int8_t> codes,
                                 std::vector<float> scale, const std::string& where = "TernaryMatrix");

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t group_len() const { return group_len_; }
  int64_t groups_per_row() const { return group_len_ > 0 ? cols_ / group_len_ : 0; }
  int64_t group_bytes() const { return (group_len_ + 7) / 8; }  // bytes of one plane of one group
  int64_t kept_groups() const { return static_cast<int64_t>(group_col_.size()); }
  double group_density() const;  // kept / (rows · G)
  bool Kept(int64_t r, int64_t j) const { return (group_mask_[(r * groups_per_row() + j) / 8] >> ((r * groups_per_row() + j) % 8)) & 1; }

  std::span<const uint8_t> group_mask() const { return group_mask_; }
  std::span<const uint8_t> plus() const { return plus_; }
  std::span<const uint8_t> minus() const { return minus_; }
  std::span<const float> scale() const { return scale_; }
  // Derived from group_mask (not stored): row r's kept groups are
  // k in [row_start(r), row_start(r + 1)), group k covers columns
  // [group_col(k)·group_len, +group_len).
  int64_t row_start(int64_t r) const { return row_start_[r]; }
  int64_t group_col(int64_t k) const { return group_col_[k]; }
  // The code of the e-th weight of kept group k: -1, 0 or +1.
  int Code(int64_t k, int64_t e) const {
    const int64_t b = k * group_bytes() + e / 8;
    return ((plus_[b] >> (e % 8)) & 1) - ((minus_[b] >> (e % 8)) & 1);
  }
  // Nonzero codes over the whole matrix.
  int64_t nonzeros() const;

  std::vector<int8_t> Codes() const;    // [rows][cols] in {-1, 0, +1}
  std::vector<float> ToDense() const;   // scale[r] · t(r, c), row-major
  // Bytes of the stored arrays: mask + both planes + scale (float32).
  int64_t bytes() const;

 private:
  void Index();  // row_start_, group_col_ from the mask
  int64_t rows_ = 0, cols_ = 0, group_len_ = 1;
  std::vector<uint8_t> group_mask_, plus_, minus_;
  std::vector<float> scale_;
  std::vector<int64_t> row_start_{0}, group_col_;
};

// The projection of a dense [rows][cols] weight (issue 18's ternarizer, per
// row): the round(group_density · rows · G) groups with the largest L2
// norms are kept (ties: the lower index), the others zeroed; then per row Δ = t · max|w| over the row and
// α = mean |w| over |w| > Δ, t(r, c) = sign(w) where |w| > Δ; groups whose
// codes come out all zero are pruned too. kept_energy = 1 − ‖W − Ŵ‖²/‖W‖².
// The two steps of the projection, also what the trainer's ternarizer calls
// (src/train/ternary_layers.h), so the math lives here once:
// KeepLargestGroups: 1 for the round(group_density · rows · G) groups (row
// r's group j at r·G + j) with the largest L2 norms (ties: the lower
// index); Error naming `where` when group_len does not divide cols.
std::vector<uint8_t> KeepLargestGroups(std::span<const float> dense, int64_t rows, int64_t cols, int64_t group_len,
                                       double group_density, const std::string& where);
// TernarizeRows: per row over the kept groups Δ = t · max|w|, α = mean |w|
// over |w| > Δ (0 when none), codes sign(w) where |w| > Δ, else 0 (pruned
// groups 0). codes [rows·cols], scale [rows] are written. per_layer: one Δ
// (t · max|w| over all kept weights) and one α (over all of them) for the
// whole matrix, written to every scale entry.
void TernarizeRows(std::span<const float> dense, int64_t rows, int64_t cols, int64_t group_len,
                   std::span<const uint8_t> kept, double threshold, std::span<int8_t> codes, std::span<float> scale,
                   bool per_layer = false);

struct TernaryProjection {
  TernaryMatrix matrix;
  double kept_energy = 1.0;
};
TernaryProjection Ternarize(std::span<const float> dense, int64_t rows, int64_t cols, int64_t group_len,
                            double threshold, double group_density, bool per_layer = false);

}  // namespace permdnn
