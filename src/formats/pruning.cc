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

}  // namespace permdnn
