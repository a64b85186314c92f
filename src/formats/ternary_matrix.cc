// Ternary weights with PE-wise group sparsity (see ternary_matrix.h).
#include "permdnn/formats/ternary_matrix.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

#include "permdnn/core/error.h"

namespace permdnn {

namespace {

int64_t MaskBytes(int64_t groups) { return (groups + 7) / 8; }

}  // namespace

TernaryMatrix TernaryMatrix::FromParts(int64_t rows, int64_t cols, int64_t group_len, std::vector<uint8_t> group_mask,
                                       std::vector<uint8_t> plus, std::vector<uint8_t> minus,
                                       std::vector<float> scale, const std::string& where) {
  PERMDNN_CHECK(rows >= 1 && cols >= 1 && group_len >= 1, "{}: {}x{} with group length {}: all must be >= 1", where,
                rows, cols, group_len);
  PERMDNN_CHECK(cols % group_len == 0, "{}: group length {} does not divide the {} columns", where, group_len, cols);
  TernaryMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.group_len_ = group_len;
  const int64_t groups = rows * m.groups_per_row();
  PERMDNN_CHECK(static_cast<int64_t>(group_mask.size()) == MaskBytes(groups),
                "{}: group_mask has {} bytes, expected ceil({} rows x {} groups / 8) = {}", where, group_mask.size(),
                rows, m.groups_per_row(), MaskBytes(groups));
  if (groups % 8 != 0)
    PERMDNN_CHECK((group_mask.back() >> (groups % 8)) == 0, "{}: group_mask sets bits past the {} groups", where,
                  groups);
  m.group_mask_ = std::move(group_mask);
  m.Index();
  const int64_t gb = m.group_bytes(), kept = m.kept_groups();
  for (const auto* plane : {&plus, &minus})
    PERMDNN_CHECK(static_cast<int64_t>(plane->size()) == kept * gb,
                  "{}: {} plane has {} bytes, expected {} kept groups x {} bytes = {}", where,
                  plane == &plus ? "plus" : "minus", plane->size(), kept, gb, kept * gb);
  const int tail = static_cast<int>(group_len % 8);
  for (int64_t k = 0; k < kept; ++k)
    for (int64_t b = 0; b < gb; ++b) {
      const uint8_t both = plus[k * gb + b] & minus[k * gb + b];
      if (both != 0) {
        const int64_t e = b * 8 + std::countr_zero(both);
        const int64_t r = std::upper_bound(m.row_start_.begin(), m.row_start_.end(), k) - m.row_start_.begin() - 1;
        Fail("{}: weight {} of group {} of row {} is both +1 and -1 (plus and minus bits set): ternary weights must "
             "be -1, 0 or +1", where, e, m.group_col_[k], r);
      }
      if (b == gb - 1 && tail != 0)
        PERMDNN_CHECK(((plus[k * gb + b] | minus[k * gb + b]) >> tail) == 0,
                      "{}: kept group {} sets plane bits past its {} weights", where, k, group_len);
    }
  PERMDNN_CHECK(static_cast<int64_t>(scale.size()) == rows, "{}: scale has {} entries, expected one per row ({})",
                where, scale.size(), rows);
  for (std::size_t r = 0; r < scale.size(); ++r)
    PERMDNN_CHECK(std::isfinite(scale[r]), "{}: scale[{}] = {} is not finite", where, r, scale[r]);
  m.plus_ = std::move(plus);
  m.minus_ = std::move(minus);
  m.scale_ = std::move(scale);
  return m;
}

TernaryMatrix TernaryMatrix::FromCodes(int64_t rows, int64_t cols, int64_t group_len, std::span<const int8_t> codes,
                                       std::vector<float> scale, const std::string& where) {
  PERMDNN_CHECK(rows >= 1 && cols >= 1 && group_len >= 1 && cols % group_len == 0,
                "{}: group length {} must divide the {} columns", where, group_len, cols);
  PERMDNN_CHECK(static_cast<int64_t>(codes.size()) == rows * cols, "{}: {} codes for a {}x{} matrix", where,
                codes.size(), rows, cols);
  const int64_t G = cols / group_len, gb = (group_len + 7) / 8;
  std::vector<uint8_t> mask(static_cast<std::size_t>(MaskBytes(rows * G)), 0), plus, minus;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < G; ++j) {
      const int8_t* t = codes.data() + r * cols + j * group_len;
      bool any = false;
      for (int64_t e = 0; e < group_len; ++e) {
        PERMDNN_CHECK(t[e] >= -1 && t[e] <= 1, "{}: code ({}, {}) = {} is not a ternary value (-1, 0 or +1)", where,
                      r, j * group_len + e, int{t[e]});
        any = any || t[e] != 0;
      }
      if (!any) continue;
      mask[(r * G + j) / 8] |= static_cast<uint8_t>(1u << ((r * G + j) % 8));
      const std::size_t at = plus.size();
      plus.resize(at + gb, 0);
      minus.resize(at + gb, 0);
      for (int64_t e = 0; e < group_len; ++e) {
        if (t[e] > 0) plus[at + e / 8] |= static_cast<uint8_t>(1u << (e % 8));
        if (t[e] < 0) minus[at + e / 8] |= static_cast<uint8_t>(1u << (e % 8));
      }
    }
  return FromParts(rows, cols, group_len, std::move(mask), std::move(plus), std::move(minus), std::move(scale), where);
}

void TernaryMatrix::Index() {
  const int64_t G = groups_per_row();
  row_start_.assign(static_cast<std::size_t>(rows_ + 1), 0);
  group_col_.clear();
  for (int64_t r = 0; r < rows_; ++r) {
    for (int64_t j = 0; j < G; ++j)
      if (Kept(r, j)) group_col_.push_back(j);
    row_start_[r + 1] = static_cast<int64_t>(group_col_.size());
  }
}

double TernaryMatrix::group_density() const {
  const int64_t groups = rows_ * groups_per_row();
  return groups > 0 ? static_cast<double>(kept_groups()) / static_cast<double>(groups) : 0.0;
}

int64_t TernaryMatrix::nonzeros() const {
  int64_t n = 0;
  for (std::size_t b = 0; b < plus_.size(); ++b) n += std::popcount(plus_[b]) + std::popcount(minus_[b]);
  return n;
}

std::vector<int8_t> TernaryMatrix::Codes() const {
  std::vector<int8_t> t(static_cast<std::size_t>(rows_ * cols_), 0);
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t k = row_start_[r]; k < row_start_[r + 1]; ++k)
      for (int64_t e = 0; e < group_len_; ++e)
        t[r * cols_ + group_col_[k] * group_len_ + e] = static_cast<int8_t>(Code(k, e));
  return t;
}

std::vector<float> TernaryMatrix::ToDense() const {
  const std::vector<int8_t> t = Codes();
  std::vector<float> d(t.size());
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t c = 0; c < cols_; ++c) d[r * cols_ + c] = scale_[r] * static_cast<float>(t[r * cols_ + c]);
  return d;
}

int64_t TernaryMatrix::bytes() const {
  return static_cast<int64_t>(group_mask_.size() + plus_.size() + minus_.size() + scale_.size() * sizeof(float));
}

std::vector<uint8_t> KeepLargestGroups(std::span<const float> dense, int64_t rows, int64_t cols, int64_t group_len,
                                       double group_density, const std::string& where) {
  PERMDNN_CHECK(rows >= 1 && cols >= 1 && group_len >= 1 && cols % group_len == 0,
                "{}: group length {} must divide the {} columns", where, group_len, cols);
  PERMDNN_CHECK(static_cast<int64_t>(dense.size()) == rows * cols, "{}: {} values for {}x{}", where, dense.size(),
                rows, cols);
  PERMDNN_CHECK(group_density > 0 && group_density <= 1, "{}: group density {} must be in (0, 1]", where,
                group_density);
  const int64_t groups = rows * (cols / group_len);
  std::vector<double> norm(static_cast<std::size_t>(groups), 0.0);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t e = 0; e < group_len; ++e) {
      const double w = dense[g * group_len + e];  // group g = (r, j) starts at r·cols + j·group_len = g·group_len
      norm[g] += w * w;
    }
  std::vector<int64_t> order(static_cast<std::size_t>(groups));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return norm[a] > norm[b]; });
  const auto keep = static_cast<int64_t>(std::llround(group_density * static_cast<double>(groups)));
  std::vector<uint8_t> kept(static_cast<std::size_t>(groups), 0);
  for (int64_t i = 0; i < keep; ++i) kept[order[i]] = 1;
  return kept;
}

void TernarizeRows(std::span<const float> dense, int64_t rows, int64_t cols, int64_t group_len,
                   std::span<const uint8_t> kept, double threshold, std::span<int8_t> codes, std::span<float> scale,
                   bool per_layer) {
  const int64_t G = cols / group_len;
  PERMDNN_CHECK(static_cast<int64_t>(dense.size()) == rows * cols && static_cast<int64_t>(codes.size()) == rows * cols &&
                    static_cast<int64_t>(kept.size()) == rows * G && static_cast<int64_t>(scale.size()) == rows,
                "TernarizeRows: array sizes disagree with {}x{} (group length {})", rows, cols, group_len);
  PERMDNN_CHECK(threshold >= 0 && threshold < 1, "Ternarize: threshold t = {} must be in [0, 1)", threshold);
  // Rows [r0, r1) share one Δ = t · max|w| over their kept weights and one
  // α = mean |w| over |w| > Δ, written to their scale entries: one row at a
  // time, or all rows at once (per_layer).
  const auto ternarize = [&](int64_t r0, int64_t r1) {
    double max_abs = 0;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c)
        if (kept[r * G + c / group_len]) max_abs = std::max(max_abs, std::fabs(double(dense[r * cols + c])));
    const double delta = threshold * max_abs;
    double sum = 0;
    int64_t n = 0;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float w = dense[r * cols + c];
        codes[r * cols + c] = 0;
        if (!kept[r * G + c / group_len] || std::fabs(double(w)) <= delta || w == 0.0f) continue;
        sum += std::fabs(double(w));
        ++n;
        codes[r * cols + c] = w > 0 ? 1 : -1;
      }
    std::fill(scale.begin() + r0, scale.begin() + r1, n > 0 ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f);
  };
  if (per_layer) return ternarize(0, rows);
  for (int64_t r = 0; r < rows; ++r) ternarize(r, r + 1);
}

TernaryProjection Ternarize(std::span<const float> dense, int64_t rows, int64_t cols, int64_t group_len,
                            double threshold, double group_density, bool per_layer) {
  PERMDNN_CHECK(threshold >= 0 && threshold < 1, "Ternarize: threshold t = {} must be in [0, 1)", threshold);
  // 1. Group pruning: keep the largest group norms.
  const std::vector<uint8_t> kept = KeepLargestGroups(dense, rows, cols, group_len, group_density, "Ternarize");
  // 2. Ternarization per row (or per layer) over the kept groups.
  std::vector<int8_t> codes(dense.size(), 0);
  std::vector<float> scale(static_cast<std::size_t>(rows), 0.0f);
  TernarizeRows(dense, rows, cols, group_len, kept, threshold, codes, scale, per_layer);
  TernaryProjection pr;
  pr.matrix = TernaryMatrix::FromCodes(rows, cols, group_len, codes, std::move(scale), "Ternarize");
  const std::vector<float> approx = pr.matrix.ToDense();
  double total = 0, err = 0;
  for (std::size_t k = 0; k < dense.size(); ++k) {
    total += double(dense[k]) * dense[k];
    err += (double(dense[k]) - approx[k]) * (double(dense[k]) - approx[k]);
  }
  pr.kept_energy = total > 0 ? 1.0 - err / total : 1.0;
  return pr;
}

}  // namespace permdnn
