// Unstructured magnitude pruning with optional k-means weight sharing (Deep
// Compression, Han et al. ICLR 2016; the format EIE runs) as a LibTorch
// module: PrunedLayer is a Linear or Conv2d whose weight is multiplied by a
// 0/1 mask, and, once shared, is codebook[codes] on the mask.
//
// State (all in the checkpoint, so --resume continues bit for bit):
//   weight    parameter [out, in] or [out, in, k, k] (the free weights)
//   bias      parameter [out]
//   mask      buffer, float 0/1, shape of weight
//   codes     buffer, int64, shape of weight (index into codebook; 0 off the mask)
//   codebook  parameter [2^bits] (only with bits > 0)
//   shared    buffer, int64 [1]: 1 once the codebook has replaced the weights
// Effective weight: weight·mask before sharing, codebook[codes]·mask after.
// The gradient of a centroid is the sum of the gradients of the weights that
// use it (Deep Compression's codebook fine-tuning): exactly the backward of
// the index_select gather. Pruned weights get zero gradient through the mask;
// ApplyMask() after every optimizer step also zeroes them in `weight`, since
// Adam's momentum would otherwise move them (they stay 0 in storage too).
//
// Schedule (PruneSchedule, driven by the trainer per batch step s of S total):
//   * pruning phase, steps [0, T] with T = max(1, ⌊S/2⌋) (the first half of the
//     epochs): at N = min(16, T) evenly spaced points s_k = ⌊k·T/N⌋, k = 1..N,
//     the mask is recomputed with MagnitudeMask (core/pruning.h) per layer at
//     the density d(s) = D + (1 − D)·(1 − s/T)³ (the gradual cubic schedule
//     of Zhu & Gupta 2017: prune fast while there is redundancy, slowly near
//     the target), so step T reaches exactly D (round(D·size) weights kept);
//   * masked retraining from T on;
//   * with bits: at Q = max(T, ⌊3S/4⌋) each layer's kept weights are
//     clustered with KMeansCodebook (2^bits centroids, linear init), and the
//     last quarter of the steps fine-tunes the codebook only (the mask and
//     codes stay fixed).
// The same schedule runs from scratch and from a converted dense run (--from,
// where the dense weights are copied and the mask starts full).
#pragma once

#include <cstdint>
#include <optional>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace permdnn::train {

struct PruneSchedule {
  int64_t total_steps = 1;  // S = epochs · batches per epoch

  int64_t prune_end() const;    // T
  int64_t share_step() const;   // Q
  // The target density when step s is a pruning point, else nullopt.
  std::optional<double> DensityAt(int64_t step, double final_density) const;
  // True when `step` (the next step to run) comes after the schedule's last
  // change (the final prune at T, or the sharing at Q when bits > 0).
  bool Done(int64_t step, int bits) const { return step > (bits > 0 ? share_step() : prune_end()); }
};

class PrunedLayerImpl : public torch::nn::Module {
 public:
  // Linear (kernel == 0) or Conv2d (kernel ≥ 1). Weights like torch's
  // Linear/Conv2d (Kaiming-uniform on the real fan-in in·k·k; the mask starts
  // full, so the fan-in is the dense one), zero bias, full mask.
  PrunedLayerImpl(int64_t in, int64_t out, int kernel, int stride, int padding, int bits, bool bias = true);

  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor EffectiveWeight() const;  // differentiable

  // Recomputes the mask from the current effective weights (MagnitudeMask at
  // `density`) and zeroes the pruned weights. Only before sharing.
  void Prune(double density);
  // weight ·= mask (after an optimizer step; no-op once shared).
  void ApplyMask();
  // k-means codebook over the kept weights (KMeansCodebook), or with
  // `fitted_levels` ADMM-NN's levels ±i·q (FitLevels); from now on the
  // codebook is trained instead of the weights. Requires bits > 0.
  void Share(bool fitted_levels = false);
  bool is_shared() const { return shared.item<int64_t>() != 0; }
  int64_t nnz() const;
  double density() const;
  // Copies a dense weight (same shape) and bias; resets the mask to full.
  void SetDense(const torch::Tensor& w, const torch::Tensor& b);

  int64_t in, out;
  int kernel, stride, padding, bits;
  torch::Tensor weight, bias, mask, codes, codebook, shared;
};
TORCH_MODULE(PrunedLayer);

}  // namespace permdnn::train
