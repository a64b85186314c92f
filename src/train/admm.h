// ADMM-NN (Ren et al., ASPLOS 2019): training onto a constraint set S per
// layer — unstructured sparsity, quantization levels ±i·q, both, permdiag,
// block-circulant — with the alternating direction method of multipliers,
// then a hard projection and retraining with the structure fixed.
//
// `permdnn train --method admm --compress SPEC` (TrainOptions::method):
//   1. ADMM phase, DIR/admm/ (a dense run of the same model, resumable on its
//      own): minimise loss + (ρ/2)·Σ_layers ‖W − Z + U‖² with Adam; Z₀ = Π_S(W),
//      U₀ = 0; every admm_iter batch steps a round: Z = Π_S(W + U),
//      U ← U + W − Z, ρ ← ρ·rho_mult, and a row of DIR/admm/admm_rounds.csv
//      (round, step, ρ, ‖W − Z‖/‖W‖ over all constrained layers and per layer,
//      mean train loss of the round, test accuracy). Z, U, ρ and the round
//      count are buffers of the model, so checkpoint_last.pt carries them.
//   2. Retraining, DIR/ (a `--from DIR/admm` run of the target SPEC): the
//      conversion projects permdiag and circulant layers (the registry's
//      projection, as any --from), and pruned layers are pruned to Z's
//      support at once (magnitude, exact density), with bits quantized onto
//      the fitted levels (FitLevels, the codebook then fine-tuned as in Deep
//      Compression); the gradual schedule of prune_layers.h is off, the
//      masks stay fixed (gradients of pruned weights are zero through the
//      mask, and they are re-zeroed after every step).
// Π_S is one function, AdmmProject, built from the one projection of each
// structure: MagnitudeMask and FitLevels (formats/pruning.h), and the format
// registry's Project + ToDense for permdiag and circulant.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <torch/types.h>

#include "permdnn/formats/registry.h"
#include "permdnn/train/trainer.h"
#include "src/train/models.h"

namespace permdnn::train {

// Π_S(w) for the layer's target compression (w: the dense weight, [out, in]
// or [out, in, kh, kw], geometry g); a dense target returns w. Errors name
// the layer.
torch::Tensor AdmmProject(const std::string& layer, const LayerCompression& c, const formats::Geometry& g,
                          const torch::Tensor& w);
torch::Tensor AdmmProject(const LayerInfo& target, const torch::Tensor& w);

// The ADMM core shared by `train --method admm` and `compress --admm`
// (onnx_finetune.cc): one term per constrained weight. w is the model's
// weight in the logical [out, in(, kh, kw)] layout (the parameter or a view
// of it, so the penalty's gradient reaches the parameter); z and u have its
// shape.
struct AdmmTerm {
  std::string layer;
  LayerCompression compress;
  formats::Geometry geometry;
  torch::Tensor w, z, u;
  // Input vectors the layer's matrix multiplies per image (a conv: its
  // output pixels; 1 for a linear layer): the break-even query's columns.
  int64_t columns = 1;
};

// Z = Π(W), U = 0.
void AdmmStart(std::vector<AdmmTerm>& terms);
// (ρ/2)·Σ‖W − Z + U‖² (differentiable in W).
torch::Tensor AdmmPenalty(const std::vector<AdmmTerm>& terms, double rho);
// The decoupled form of the penalty (`--admm-penalty decoupled`): after the
// optimizer's step, the exact proximal step of (ρ/2)‖W − Z + U‖² with step
// size lr, W ← (W + c·(Z − U)) / (1 + c), c = lr·ρ. Adam never sees the
// penalty's gradient (as AdamW's weight decay), so ρ is the pull's real
// strength instead of being divided by each weight's gradient scale.
void AdmmProximalStep(std::vector<AdmmTerm>& terms, double c);
// After a round: ρ·rho_mult, and with o.rescale_dual U ← U / rho_mult (U is
// the scaled dual y/ρ; keeping y when ρ changes divides U).
double AdmmNextRho(std::vector<AdmmTerm>& terms, double rho, const TrainOptions& o);
// A round: Z = Π(W + U), U ← U + W − Z; fills row->residual (‖W − Z‖/‖W‖
// over all terms) and row->layer_residual.
void AdmmUpdate(std::vector<AdmmTerm>& terms, AdmmRound* row);
// admm_rounds.csv (header round,step,rho,residual,residual_<layer>...,
// train_loss,test_accuracy) and the printed line of one round.
std::string AdmmRoundsCsv(const std::vector<AdmmTerm>& terms, const std::vector<AdmmRound>& rows);
std::string AdmmRoundLine(const std::vector<AdmmTerm>& terms, const AdmmRound& row);

// Validates the ADMM options of `o` (ρ > 0, ρ multiplier > 0, admm_iter ≥ 0,
// break-even in [0, 1], epochs ≥ 2, 1 ≤ admm_epochs < epochs) and returns
// the ADMM epochs (admm_epochs, or half of the epochs when 0).
int CheckAdmmOptions(const TrainOptions& o);
// The break-even report of every pruned term against its break-even
// density: o.break_even_for's answer for the term's shape when set (the
// CLI's measured platforms), else o.break_even_density; with
// o.refuse_break_even a layer at or above it is an error.
void CheckBreakEven(const std::vector<AdmmTerm>& terms, const TrainOptions& o, std::ostream& log);

// Output pixels per image of every conv2d layer of a model (its name →
// H·W), from the layer list and the input size: conv (kernel, stride,
// padding), 2×2 max pooling, average pooling (kernel, stride); a layer that
// reads an earlier one (LayerInfo::input) starts from that one's size.
std::map<std::string, int64_t> ConvOutputPixels(const std::vector<LayerInfo>& layers, const ModelInput& input);

// The two phases above; validates the ADMM options (ρ > 0, ρ multiplier > 0,
// 1 ≤ admm_epochs < epochs, a SPEC that compresses some layer).
TrainResult TrainAdmm(const TrainOptions& options, std::ostream& log);

}  // namespace permdnn::train
