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

// FitLevels's q is the minimiser of the squared error over its scan: recompute
// the error on the same grid independently and on a 10x finer one.
TEST(FitLevels, PicksTheErrorMinimisingStep) {
  for (int bits : {1, 2, 3, 4, 8}) {
    std::vector<float> w = Gaussian(3000, 20 + bits);
    for (std::size_t i = 0; i < w.size(); i += 7) w[i] = 0.0f;  // pruned weights
    const SharedWeights sw = FitLevels(w, bits);
    const int64_t m = int64_t{1} << (bits - 1);
    ASSERT_EQ(sw.centroids.size(), static_cast<std::size_t>(2 * m));
    const double q = sw.centroids[static_cast<std::size_t>(m)];
    ASSERT_GT(q, 0);
    for (int64_t i = 0; i < m; ++i) {  // ±i·q, ascending
      EXPECT_NEAR(sw.centroids[static_cast<std::size_t>(m + i)], q * static_cast<double>(i + 1), 1e-5 * q * m);
      EXPECT_EQ(sw.centroids[static_cast<std::size_t>(m - 1 - i)], -sw.centroids[static_cast<std::size_t>(m + i)]);
    }
    const float max_abs = std::fabs(*std::max_element(w.begin(), w.end(), [](float a, float b) {
      return std::fabs(a) < std::fabs(b);
    }));
    const double q0 = max_abs / static_cast<double>(m), err = LevelError(w, bits, q);
    double grid_min = std::numeric_limits<double>::infinity(), fine_min = grid_min;
    for (int s = 0; s <= 2000; ++s) {
      const double e = LevelError(w, bits, q0 * (0.9 + 0.2 * s / 2000.0));
      fine_min = std::min(fine_min, e);
      if (s % 10 == 0) grid_min = std::min(grid_min, e);
    }
    // (q is read back from the float codebook: a relative 1e-6.)
    EXPECT_NEAR(err, grid_min, 1e-6 * grid_min) << "bits " << bits;
    EXPECT_LE(err, fine_min * 1.01) << "bits " << bits;
    EXPECT_LE(err, LevelError(w, bits, q0 * 0.9) * (1 + 1e-6)) << "bits " << bits;
    EXPECT_LE(err, LevelError(w, bits, q0 * 1.1) * (1 + 1e-6)) << "bits " << bits;
    if (bits >= 3) EXPECT_LT(err, LevelError(w, bits, q0) * 0.999) << "bits " << bits;  // the scan pays
    // Each nonzero weight on its nearest level; zeros stay zero (code 0, not in the mse).
    double sum = 0;
    int64_t nonzero = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      if (w[i] == 0.0f) {
        EXPECT_EQ(sw.codes[i], 0);
        continue;
      }
      const double d = w[i] - sw.centroids[sw.codes[i]];
      for (float c : sw.centroids) ASSERT_LE(std::fabs(d), std::fabs(w[i] - c) + 1e-6) << "weight " << i;
      sum += d * d;
      ++nonzero;
    }
    EXPECT_NEAR(sw.mse, sum / static_cast<double>(nonzero), 1e-6 * sw.mse);
  }
}

TEST(FitLevels, AllZeroAndBadInput) {
  const SharedWeights zero = FitLevels(std::vector<float>(5, 0.0f), 3);
  EXPECT_EQ(zero.centroids, std::vector<float>(8, 0.0f));
  EXPECT_THROW(FitLevels(std::vector<float>{1.0f}, 0), Error);
  EXPECT_THROW(FitLevels(std::vector<float>{1.0f}, 9), Error);
  EXPECT_THROW(FitLevels(std::vector<float>{std::numeric_limits<float>::quiet_NaN()}, 4), Error);
  EXPECT_THROW(LevelError(std::vector<float>{1.0f}, 4, 0.0), Error);
}

}  // namespace
}  // namespace permdnn
