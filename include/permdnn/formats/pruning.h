// Unstructured magnitude pruning and weight sharing (Deep Compression, Han et
// al., ICLR 2016): the two steps that turn a dense layer into what EIE runs.
// One place for both, used by the trainer (masked retraining, codebook
// fine-tuning) and by `permdnn compress` (projection without data).
//
// * MagnitudeMask keeps the round(density·size) entries of largest |w|
//   (ties: the lower index wins, so the count is exact and deterministic).
// * KMeansCodebook clusters the kept weights into 2^bits shared values with
//   Lloyd's algorithm in one dimension, started from Deep Compression's
//   linear initialisation (centroids spread evenly over [min w, max w], the
//   initialisation the paper found best because it keeps the rare large
//   weights). In 1-D the nearest centroid is found by binary search over the
//   midpoints of the sorted centroids, so one iteration costs O(n log k).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace permdnn {

// 1 for kept, 0 for pruned. density in [0, 1]; Error on NaN/inf weights or a
// density outside [0, 1].
std::vector<uint8_t> MagnitudeMask(std::span<const float> weights, double density);

struct SharedWeights {
  std::vector<float> centroids;  // 2^bits, ascending (unused ones repeat a neighbour)
  std::vector<uint8_t> codes;    // one per weight, index into centroids
  double mse = 0;                // mean squared quantization error
  int iterations = 0;            // Lloyd iterations run
};

// bits in [1, 8]; weights non-empty and finite. Deterministic.
SharedWeights KMeansCodebook(std::span<const float> weights, int bits, int max_iterations = 100);

// ADMM-NN's quantization levels (Ren et al., ASPLOS 2019): the 2^bits values
// ±i·q, i = 1..M, M = 2^(bits−1), ascending in `centroids` (−M·q … −q, q … M·q),
// and each weight's nearest level (i = clamp(round(|w|/q), 1, M) with w's sign).
// Zero weights are not quantized (zeros stay zero: they are the pruned ones);
// their code is 0 and they count in neither the fit nor `mse` (the mean over
// the nonzero weights). q is the minimiser of the squared error over a scan of
// `steps` + 1 evenly spaced values in [0.9, 1.1]·max|w|/M. bits in [1, 8];
// finite weights; all-zero weights give an all-zero codebook.
SharedWeights FitLevels(std::span<const float> weights, int bits, int steps = 200);
// The squared error Σ (w − level(w))² over the nonzero weights for step q > 0.
double LevelError(std::span<const float> weights, int bits, double q);

}  // namespace permdnn
