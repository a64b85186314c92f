#include "permdnn/formats/pruning.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "permdnn/core/error.h"

namespace permdnn {
namespace {

std::vector<float> Gaussian(std::size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> w(n);
  for (auto& v : w) v = dist(gen);
  return w;
}

TEST(MagnitudeMask, KeepsExactlyTheLargest) {
  for (double density : {0.0, 0.013, 0.1, 0.5, 1.0}) {
    const auto w = Gaussian(1001, 3);
    const auto mask = MagnitudeMask(w, density);
    const auto kept = std::accumulate(mask.begin(), mask.end(), int64_t{0});
    EXPECT_EQ(kept, std::llround(density * 1001)) << "density " << density;
    float min_kept = std::numeric_limits<float>::infinity(), max_pruned = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      if (mask[i])
        min_kept = std::min(min_kept, std::fabs(w[i]));
      else
        max_pruned = std::max(max_pruned, std::fabs(w[i]));
    }
    if (kept > 0 && kept < 1001) EXPECT_GE(min_kept, max_pruned) << "density " << density;
  }
}

TEST(MagnitudeMask, TiesGoToTheLowerIndex) {
  const std::vector<float> w = {1, -1, 1, 0.5f, -1};
  const auto mask = MagnitudeMask(w, 0.4);  // keep 2 of 5
  EXPECT_EQ(mask, (std::vector<uint8_t>{1, 1, 0, 0, 0}));
}

TEST(MagnitudeMask, RejectsBadInput) {
  const std::vector<float> w = {1, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW(MagnitudeMask(w, 0.5), Error);
  EXPECT_THROW(MagnitudeMask(std::vector<float>{1, 2}, 1.5), Error);
  EXPECT_THROW(MagnitudeMask(std::vector<float>{1, 2}, -0.1), Error);
}

TEST(KMeansCodebook, RecoversWellSeparatedClusters) {
  // Four tight clusters, 2 bits: the centroids must land on the cluster means.
  const float centers[4] = {-3.0f, -0.5f, 0.7f, 2.5f};
  std::vector<float> w;
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> jitter(-0.01f, 0.01f);
  for (int i = 0; i < 400; ++i) w.push_back(centers[i % 4] + jitter(gen));
  const auto sw = KMeansCodebook(w, 2);
  ASSERT_EQ(sw.centroids.size(), 4u);
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(sw.centroids[c], centers[c], 0.01f) << "centroid " << c;
  for (std::size_t i = 0; i < w.size(); ++i) EXPECT_EQ(sw.codes[i], i % 4) << "weight " << i;
  EXPECT_LT(sw.mse, 1e-4);
}

TEST(KMeansCodebook, FourBitsBeatsLinearQuantizationAndIsSorted) {
  const auto w = Gaussian(5000, 11);
  const auto sw = KMeansCodebook(w, 4);
  ASSERT_EQ(sw.centroids.size(), 16u);
  EXPECT_TRUE(std::is_sorted(sw.centroids.begin(), sw.centroids.end()));
  // Error of the linear grid (the initialisation) for comparison.
  const auto [lo, hi] = std::minmax_element(w.begin(), w.end());
  const double step = (*hi - *lo) / 15.0;
  double linear = 0;
  for (float v : w) {
    const double q = *lo + step * std::round((v - *lo) / step);
    linear += (v - q) * (v - q);
  }
  linear /= static_cast<double>(w.size());
  EXPECT_LT(sw.mse, linear);
  double recomputed = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double d = w[i] - sw.centroids[sw.codes[i]];
    recomputed += d * d;
  }
  EXPECT_NEAR(sw.mse, recomputed / static_cast<double>(w.size()), 1e-9);
}

TEST(KMeansCodebook, RejectsBadInput) {
  EXPECT_THROW(KMeansCodebook(std::vector<float>{}, 4), Error);
  EXPECT_THROW(KMeansCodebook(std::vector<float>{1.0f}, 0), Error);
  EXPECT_THROW(KMeansCodebook(std::vector<float>{1.0f}, 9), Error);
  EXPECT_THROW(KMeansCodebook(std::vector<float>{std::numeric_limits<float>::infinity()}, 4), Error);
}

}  // namespace
}  // namespace permdnn
