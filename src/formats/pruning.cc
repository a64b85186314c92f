#include "permdnn/formats/pruning.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "permdnn/core/error.h"

namespace permdnn {
namespace {

void CheckFinite(std::span<const float> w, const char* what) {
  for (std::size_t i = 0; i < w.size(); ++i)
    PERMDNN_CHECK(std::isfinite(w[i]), "{}: weight {} is not finite ({})", what, i, w[i]);
}

// Index of the nearest centroid: the first midpoint above w, by binary search.
int Nearest(const std::vector<float>& mid, float w) {
  return static_cast<int>(std::upper_bound(mid.begin(), mid.end(), w) - mid.begin());
}

}  // namespace

std::vector<uint8_t> MagnitudeMask(std::span<const float> weights, double density) {
  PERMDNN_CHECK(density >= 0.0 && density <= 1.0, "magnitude pruning: density must be in [0, 1], got {}", density);
  CheckFinite(weights, "magnitude pruning");
  const auto n = static_cast<int64_t>(weights.size());
  const auto keep = static_cast<int64_t>(std::llround(density * static_cast<double>(n)));
  std::vector<uint8_t> mask(weights.size(), 0);
  if (keep <= 0) return mask;
  std::vector<int64_t> order(weights.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  // Partial selection of the `keep` largest |w|; equal magnitudes: lower index first.
  auto larger = [&](int64_t a, int64_t b) {
    const float fa = std::fabs(weights[a]), fb = std::fabs(weights[b]);
    return fa != fb ? fa > fb : a < b;
  };
  std::nth_element(order.begin(), order.begin() + (keep - 1), order.end(), larger);
  for (int64_t i = 0; i < keep; ++i) mask[order[i]] = 1;
  return mask;
}

SharedWeights KMeansCodebook(std::span<const float> weights, int bits, int max_iterations) {
  PERMDNN_CHECK(bits >= 1 && bits <= 8, "weight sharing: bits must be in [1, 8], got {}", bits);
  PERMDNN_CHECK(!weights.empty(), "weight sharing: no weights to cluster");
  PERMDNN_CHECK(max_iterations >= 0, "weight sharing: max_iterations must be >= 0, got {}", max_iterations);
  CheckFinite(weights, "weight sharing");
  const int k = 1 << bits;
  const auto [lo_it, hi_it] = std::minmax_element(weights.begin(), weights.end());
  const double lo = *lo_it, hi = *hi_it;
  SharedWeights out;
  out.centroids.resize(k);
  for (int c = 0; c < k; ++c)  // linear initialisation
    out.centroids[c] = static_cast<float>(k == 1 ? lo : lo + (hi - lo) * c / (k - 1));
  out.codes.assign(weights.size(), 0);
  std::vector<float> mid(k - 1);
  std::vector<double> sum(k);
  std::vector<int64_t> count(k);
  auto assign = [&]() {
    for (int c = 0; c + 1 < k; ++c) mid[c] = 0.5f * (out.centroids[c] + out.centroids[c + 1]);
    bool changed = false;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      const auto code = static_cast<uint8_t>(Nearest(mid, weights[i]));
      changed |= code != out.codes[i];
      out.codes[i] = code;
    }
    return changed;
  };
  assign();
  for (int it = 0; it < max_iterations; ++it) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (std::size_t i = 0; i < weights.size(); ++i) {
      sum[out.codes[i]] += weights[i];
      ++count[out.codes[i]];
    }
    // An empty cluster keeps its centroid; sorting keeps the midpoint search
    // valid should a neighbour have moved past it.
    for (int c = 0; c < k; ++c)
      if (count[c] > 0) out.centroids[c] = static_cast<float>(sum[c] / static_cast<double>(count[c]));
    std::sort(out.centroids.begin(), out.centroids.end());
    out.iterations = it + 1;
    if (!assign()) break;
  }
  double se = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const double d = weights[i] - out.centroids[out.codes[i]];
    se += d * d;
  }
  out.mse = se / static_cast<double>(weights.size());
  return out;
}

namespace {

// The level index i in [1, M] nearest to |w| for step q.
int64_t LevelIndex(float w, double q, int64_t m) {
  return std::clamp<int64_t>(std::llround(std::fabs(static_cast<double>(w)) / q), 1, m);
}

void CheckBits(int bits, const char* what) {
  PERMDNN_CHECK(bits >= 1 && bits <= 8, "{}: bits must be in [1, 8], got {}", what, bits);
}

}  // namespace

double LevelError(std::span<const float> weights, int bits, double q) {
  CheckBits(bits, "quantization levels");
  PERMDNN_CHECK(q > 0 && std::isfinite(q), "quantization levels: step q must be > 0, got {}", q);
  const int64_t m = int64_t{1} << (bits - 1);
  double err = 0;
  for (float w : weights) {
    if (w == 0.0f) continue;
    const double level = q * static_cast<double>(LevelIndex(w, q, m)), d = std::fabs(double{w}) - level;
    err += d * d;
  }
  return err;
}

SharedWeights FitLevels(std::span<const float> weights, int bits, int steps) {
  CheckBits(bits, "quantization levels");
  PERMDNN_CHECK(steps >= 1, "quantization levels: steps must be >= 1, got {}", steps);
  CheckFinite(weights, "quantization levels");
  const int64_t m = int64_t{1} << (bits - 1);
  SharedWeights out;
  out.centroids.assign(static_cast<std::size_t>(2 * m), 0.0f);
  out.codes.assign(weights.size(), 0);
  float max_abs = 0;
  int64_t nonzero = 0;
  for (float w : weights) {
    max_abs = std::max(max_abs, std::fabs(w));
    nonzero += w != 0.0f;
  }
  if (max_abs == 0.0f) return out;
  // The scan of ADMM-NN's code: q around max|w|/M (the top level at the
  // largest weight), ±10 %; the error is piecewise quadratic in q, so a scan
  // is simpler than a closed form and as good at 200 steps.
  const double q0 = static_cast<double>(max_abs) / static_cast<double>(m);
  double best_q = q0, best_err = LevelError(weights, bits, q0);
  for (int s = 0; s <= steps; ++s) {
    const double q = q0 * (0.9 + 0.2 * static_cast<double>(s) / steps);
    const double err = LevelError(weights, bits, q);
    if (err < best_err) {
      best_err = err;
      best_q = q;
    }
  }
  for (int64_t i = 0; i < m; ++i) {
    out.centroids[static_cast<std::size_t>(m - 1 - i)] = static_cast<float>(-best_q * static_cast<double>(i + 1));
    out.centroids[static_cast<std::size_t>(m + i)] = static_cast<float>(best_q * static_cast<double>(i + 1));
  }
  for (std::size_t k = 0; k < weights.size(); ++k) {
    if (weights[k] == 0.0f) continue;
    const int64_t i = LevelIndex(weights[k], best_q, m);
    out.codes[k] = static_cast<uint8_t>(weights[k] < 0 ? m - i : m - 1 + i);
  }
  out.mse = best_err / static_cast<double>(std::max<int64_t>(1, nonzero));
  return out;
}

}  // namespace permdnn
