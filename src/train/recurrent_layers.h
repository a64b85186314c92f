// LSTM and GRU layers whose two weight matrices are compressed (issue #17):
// W_ih [G·H, in] and W_hh [G·H, H] (G = 4 gates i, f, g, o for the LSTM, 3
// gates r, z, n for the GRU, PyTorch's order and equations; see
// docs/run-format.md "Recurrent models") are each one dense, permuted-
// diagonal, block-circulant or pruned matrix with all gates stacked.
//
// There is no second implementation of any format here: a CompressedLinear
// is a bias-less PermDiagLinear (the custom autograd function over the
// permdiag kernels), BlockCirculantLinear (FFT path), PrunedLayer (mask,
// PruneSchedule driven by the trainer) or torch::nn::Linear. The recurrence
// calls them: the input product for all T steps at once ([B·T, in] → one
// call, the large product), then per step the hidden product of h_{t−1}
// [B, H] (skipped at t = 0, where h = 0) and the gate nonlinearities with
// LibTorch ops, so autograd runs back through time.
//
// H must be a multiple of p for permdiag and circulant (a p×p block then
// never straddles two gates); a violation throws naming the layer. Init:
// every form is scaled so a gate's pre-activation has the variance of
// PyTorch's default LSTM (weights U(±1/√H)): per element variance
// 1/(3H) · n / (inputs an output actually reads), so the structured matrix
// starts at the same operating point of the sigmoids as the dense one.
// Biases U(±1/√H), both b_ih and b_hh as in PyTorch.
#pragma once

#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "permdnn/formats/spec.h"
#include "src/train/circulant_layers.h"
#include "src/train/permdiag_layers.h"
#include "src/train/prune_layers.h"

namespace permdnn::train {

// One bias-less weight matrix y = x·Wᵀ (x [N, in]) in one of the four
// forms; exactly one member is non-null.
class CompressedLinearImpl : public torch::nn::Module {
 public:
  CompressedLinearImpl(int64_t in, int64_t out, const formats::LayerCompression& compress, uint64_t seed);

  torch::Tensor forward(const torch::Tensor& x);
  // The dense [out, in] matrix (differentiable), for tests and conversion checks.
  torch::Tensor DenseWeight() const;
  // Scales the initial weights to per-element standard deviation `std` (zero
  // padding stays zero).
  void ScaleInit(double std);
  // Inputs each output reads: in (dense, circulant, pruned at init), ceil(in/p) (permdiag).
  int64_t FanIn() const;

  int64_t in, out;
  formats::LayerCompression compress;
  torch::nn::Linear dense{nullptr};
  PermDiagLinear permdiag{nullptr};
  BlockCirculantLinear circulant{nullptr};
  PrunedLayer pruned{nullptr};
};
TORCH_MODULE(CompressedLinear);

enum class RecurrentCell { kLstm, kGru };
RecurrentCell ParseCell(const std::string& name);  // "lstm" | "gru", else a clear error
const char* CellName(RecurrentCell cell);
inline int64_t GateCount(RecurrentCell cell) { return cell == RecurrentCell::kLstm ? 4 : 3; }

class RecurrentLayerImpl : public torch::nn::Module {
 public:
  // `name` is the model's layer name, used in errors. sequence_output: the
  // forward returns all h_t [B, T, H], else h_T [B, H].
  RecurrentLayerImpl(const std::string& name, RecurrentCell cell, int64_t in, int64_t hidden,
                     const formats::LayerCompression& compress, bool sequence_output, uint64_t seed);

  // x [B, T, in] → [B, T, H] or [B, H]; zero initial state.
  torch::Tensor forward(const torch::Tensor& x);

  std::string name;
  RecurrentCell cell;
  int64_t in, hidden;
  bool sequence_output;
  CompressedLinear ih{nullptr}, hh{nullptr};
  torch::Tensor bias_ih, bias_hh;  // [G·H] each
  // The per-step hidden product: false (default) reconstructs W_hh once per
  // forward with the format's own differentiable expansion (DenseWeight():
  // PermDiagToDense, CirculantToDense, the pruned mask) and runs T small
  // GEMMs; true calls the format's layer (permdiag kernels, FFT) every step.
  // Same values and gradients (tests); the default was measured faster at
  // the models' shapes (src/train/README.md, "Recurrent layers").
  bool step_kernels = false;
};
TORCH_MODULE(RecurrentLayer);

}  // namespace permdnn::train
