// PE-wise structured pruning with ternary weights and Weight Penalty
// Clipping (Yang, He and Fan, "Harmonious Coexistence of Structured Weight
// Pruning and Ternarization for Deep Neural Networks", AAAI 2020; issue 18)
// as a LibTorch module: TernaryLayer is a Linear or Conv2d trained through
// the staged schedule below into the registry's `ternary` format
// (formats/ternary_matrix.h), whose math (group selection by L2 norm, Δ and
// α per output row) it calls rather than copies.
//
// Groups: the weight lifted to [out, in·taps] (column = in channel · taps +
// tap, taps = k·k; 1 for a linear layer) is cut into groups of group_len =
// group_ch · taps consecutive columns: group_ch consecutive input channels ×
// the whole kernel of one output filter (a linear layer: group_ch
// consecutive inputs of one output row), what one PE handles.
//
// Loss term (stage 0 only): λ·Σ_g min(‖W_g‖₂, θ), summed over the layer's
// groups. θ adapts every step from the current norms (no gradient through
// θ): θ = wpc × mean group norm, or the wpcq quantile of the sorted norms;
// plain group lasso (neither rule) is θ = ∞. A group above θ gets no
// penalty gradient, a group below gets λ·W_g/‖W_g‖₂ (pushed to zero).
//
// Schedule (TernarySchedule, on the global batch step s of S):
//   stage 0, s < P = max(1, ⌊2S/5⌋): structured sparse training with the
//            penalty (dense weights);
//   at P:    the round(density·out·G) groups with the largest norms are kept
//            (formats::KeepLargestGroups), the others zeroed and masked for
//            good (stage 1: masked float training, no penalty);
//   at Q = max(P, ⌊S/2⌋): ternarized (stage 2): the forward uses
//            α_r·t_rc from formats::TernarizeRows on the masked latent
//            weights (Δ = t·max|w| and α = mean |w| over |w| > Δ per output
//            row, recomputed every step), the backward is the straight-
//            through estimator: the gradient of the ternary weight passed to
//            the latent weight, zeroed where |w| ≥ 1 and on pruned groups;
//            the rest of the steps fine-tune. With ternarize=0 (ablation)
//            stage 2 keeps the masked float weights.
// α per output row, not per layer: the format stores one scale per output
// channel at 4 bytes each, so the finer α costs nothing extra in the
// kernels and keeps more energy where filters' magnitudes differ.
//
// State (buffers, so checkpoints carry them and --resume continues bit for
// bit): group_mask float [out, G] (1 kept), stage int64 [1], theta float [1]
// (the last θ, 0 before the first penalty; +inf for plain lasso).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "permdnn/formats/spec.h"
#include "permdnn/formats/ternary_matrix.h"

namespace permdnn::train {

struct TernarySchedule {
  int64_t total_steps = 1;  // S
  int64_t prune_step() const { return std::max<int64_t>(1, total_steps * 2 / 5); }                 // P
  int64_t ternarize_step() const { return std::max<int64_t>(prune_step(), total_steps / 2); }      // Q
  // True when `step` (the next to run) comes after the last change.
  bool Done(int64_t step) const { return step > ternarize_step(); }
};

// θ of Weight Penalty Clipping from a layer's group norms (any shape):
// ratio > 0 → ratio × mean; else quantile q in (0, 1) → the element at
// index ⌊q·(n−1)⌋ of the ascending sorted norms; neither → +inf (plain
// group lasso).
double WpcThreshold(const torch::Tensor& norms, double ratio, double quantile);

class TernaryLayerImpl : public torch::nn::Module {
 public:
  // Linear (kernel == 0) or Conv2d (kernel ≥ 1) with the SPEC's method `c`
  // (c.p = group_ch). Throws naming `name` when group_ch does not divide in.
  // Weights like torch's Linear/Conv2d (Kaiming-uniform), bias like torch's.
  TernaryLayerImpl(const std::string& name, int64_t in, int64_t out, int kernel, int stride, int padding,
                   const formats::LayerCompression& c);

  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor EffectiveWeight();  // differentiable, per the stage

  torch::Tensor GroupNorms() const;  // [out, G], differentiable
  // λ·Σ_g min(‖W_g‖, θ) in stage 0 with λ > 0, else an undefined tensor;
  // records θ in `theta`.
  torch::Tensor Penalty();
  // Stage 0 → 1: keeps the largest groups at c.density, zeroes the rest.
  void Prune();
  // Stage 1 → 2.
  void StartTernary();
  // weight ·= mask (after an optimizer step; from stage 1 on).
  void ApplyMask();
  // Copies a dense weight (same shape) and bias (--from).
  void SetDense(const torch::Tensor& w, const torch::Tensor& b);

  int64_t current_stage() const { return stage.item<int64_t>(); }
  int64_t groups_per_row() const { return in / compress.p; }
  int64_t group_len() const { return static_cast<int64_t>(compress.p) * taps(); }
  int64_t taps() const { return kernel > 0 ? int64_t{kernel} * kernel : 1; }
  int64_t kept_mask_groups() const;
  // The layer in the registry's format: the ternarization of the masked
  // latent weights (whatever the stage; groups whose codes are all zero
  // are pruned too).
  TernaryMatrix Ternary() const;
  // Nonzero weights of the masked float weight (ternarize=0's CSR count).
  int64_t masked_nnz() const;

  std::string name;
  int64_t in, out;
  int kernel, stride, padding;
  formats::LayerCompression compress;
  torch::Tensor weight, bias, group_mask, stage, theta;

  torch::Tensor MaskedWeight() const;  // weight · mask expanded to the weight's shape
};
TORCH_MODULE(TernaryLayer);

// The ternarizer with its straight-through gradient, on a weight [out,
// in, (k, k)] whose rows are cut into groups of group_len (kept_groups
// float [out, G]; per_layer: one Δ and α for the layer, alpha=layer).
// Exposed for the tests.
torch::Tensor TernarizeWithSte(const torch::Tensor& w, const torch::Tensor& kept_groups, int64_t group_len,
                               double threshold, bool per_layer = false);

}  // namespace permdnn::train
