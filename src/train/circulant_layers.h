// LibTorch modules for block-circulant layers (CirCNN, Ding et al. MICRO
// 2017; the format is permdnn's BlockCirculantMatrix, core/circulant_matrix.h).
// Only the m·n/p defining values are parameters: values [mb, nb, p] with
// W[I·p + c, J·p + d] = w_IJ[(c − d) mod p] (docs/run-format.md), + bias.
//
// BlockCirculantLinear: y_I = Σ_J w_IJ ⊛ x_J computed in the frequency
// domain with LibTorch's FFT ops: rfft of the input blocks [B, nb, p] and of
// the weights [mb, nb, p] (p/2+1 frequencies), one complex batched matmul
// per frequency ([F, B, nb] × [F, nb, mb]), irfft back to [B, mb, p].
// LibTorch's autograd differentiates it (the backward is the same three
// steps transposed), so the dense m×n matrix is never formed. Measured
// against the dense reconstruction (gather + matmul) and torch::nn::Linear:
// see src/train/README.md and permdnn_circulant_bench.
//
// BlockCirculantConv2d: the structure is on the (out-channel, in-channel)
// pair like PermDiagConv2d: values [mb, nb, p, kh, kw]; out channel I·p+c
// reads in channel J·p+d through kernel w_IJ[(c−d) mod p]. Forward expands
// the dense [out, in, kh, kw] kernel tensor from the values with one index
// gather (index_select; its backward sums the gradients of all positions
// sharing a value), then calls torch::conv2d. Conv weights are tiny next to
// the activations, so the expansion is cheap.
//
// Padding (m or n not a multiple of p): inputs ≥ n are zero and outputs ≥ m
// are dropped, so every value is used by at least one real position.
#pragma once

#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "permdnn/formats/circulant_matrix.h"

namespace permdnn::train {

// y = x·Wᵀ + bias, x [B, cols], values [mb, nb, p] (FFT path). bias may be
// undefined. The per-frequency product is a complex matmul, or (real_gemm)
// the equivalent real batched GEMM on [Re | Im] blocks.
torch::Tensor CirculantLinearFft(const torch::Tensor& x, const torch::Tensor& values, const torch::Tensor& bias,
                                 int64_t rows, int64_t cols, bool real_gemm = false);
// The dense reconstruction, differentiable in values: [mb, nb, p, ...] →
// [rows, cols, ...] (trailing kernel dims kept). Conv forward, tests, and the
// "gather + matmul" alternative of the benchmark.
// `index` (optional) is CirculantDenseIndex(rows, cols, p), to reuse.
torch::Tensor CirculantToDense(const torch::Tensor& values, int64_t rows, int64_t cols,
                               const torch::Tensor& index = {});
torch::Tensor CirculantDenseIndex(int64_t rows, int64_t cols, int p);

class BlockCirculantLinearImpl : public torch::nn::Module {
 public:
  // Values N(0, 2/in): every output reads all `in` inputs (real fan-in n;
  // torch's global generator, seeded by the trainer); zero bias.
  BlockCirculantLinearImpl(int64_t in_features, int64_t out_features, int p, bool bias = true);

  torch::Tensor forward(const torch::Tensor& x);

  void SetMatrix(const BlockCirculantMatrix& m);
  BlockCirculantMatrix Matrix() const;
  torch::Tensor DenseWeight() const { return CirculantToDense(values, out_features, in_features); }

  int64_t in_features, out_features;
  int p;
  bool use_dense = false;  // benchmark switch: gather the dense W, then matmul
  bool real_gemm = false;  // benchmark switch: real batched GEMM instead of complex matmul
  torch::Tensor values, bias;

 private:
  torch::Tensor dense_index_;  // use_dense only
};
TORCH_MODULE(BlockCirculantLinear);

class BlockCirculantConv2dImpl : public torch::nn::Module {
 public:
  // Values N(0, 2/(in·k·k)); zero bias.
  BlockCirculantConv2dImpl(int64_t in_channels, int64_t out_channels, int kernel, int stride, int padding, int p,
                           bool bias = true);

  torch::Tensor forward(const torch::Tensor& x);
  // [out, in, k, k], differentiable in values.
  torch::Tensor DenseWeight() const { return CirculantToDense(values, out_channels, in_channels); }

  int64_t in_channels, out_channels;
  int kernel, stride, padding, p;
  torch::Tensor values, bias;  // values [mb, nb, p, k, k]
};
TORCH_MODULE(BlockCirculantConv2d);

}  // namespace permdnn::train
