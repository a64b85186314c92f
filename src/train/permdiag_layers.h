// LibTorch modules for permuted-diagonal layers (DESIGN.md, "The
// permuted-diagonal format"). Only the m·n/p values are parameters; the
// block offsets are a buffer (int16 in LibTorch, < p) and the bias is dense.
//
// PermDiagLinear: y = x·Wᵀ + b with W never formed. Forward and backward run
// in a custom torch::autograd::Function over permdnn's kernels: the input
// [B, n] is transposed once to the kernels' feature-major layout (n × B),
// forward is kernels PermDiagMatMul, ∂L/∂x is PermDiagMatMulT and ∂L/∂q is
// PermDiagWeightGrad (permdiag_grad.h). A second implementation with LibTorch
// gather ops (index_select + mul + sum, autograd for free) is kept for the
// benchmark and as a test oracle; it materializes a [B, m·n/p] intermediate
// and was measured slower (docs in src/train/README.md), so it is not the
// default.
//
// PermDiagConv2d: the structure is on the (out-channel, in-channel) pair, so
// block (I, J) keeps p whole kh×kw kernels; values are [mb, nb, p, kh, kw].
// Forward scatters the values into the dense [out, in, kh, kw] conv weight
// inside autograd (index_add, whose backward is a gather), then calls
// torch::conv2d. Conv weights are small (≤ 128·64·9 here), so building that
// weight is cheap next to the convolution itself; the "never build the dense
// matrix" rule is kept for linear layers, where it matters.
//
// Padding (m or n not a multiple of p): padded values are 0 at
// initialization and get exactly zero gradient, so they stay 0 under Adam.
//
// column_offsets (SPEC permdiag:p=8,offsets=column, the permdiag-column
// format): every block of a block column gets the same seeded offset (row
// block 0's draw), k_IJ = k_J. The offsets are fixed during training, so the
// layer, its kernels and gradients are the general ones on a matrix that
// happens to share its offsets; only the initialization and the run
// directory's offsets ([nb]) differ.
#pragma once

#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "permdnn/formats/permdiag_matrix.h"

namespace permdnn::train {

// Threads the permdiag kernels use inside autograd (default 2).
int TrainThreads();
void SetTrainThreads(int threads);

// The thread set-up of a training job (train, compress fine-tuning):
// `threads` for the permdiag kernels and for OpenBLAS (LibTorch's dense
// Linear/matmul), one thread for LibTorch's own OpenMP ops. LibTorch's
// OpenMP workers spin-wait after every parallel region and starve the other
// pools: a 10k-image mlp epoch at 2 threads took 9.6 s (permdiag p=8) and
// 26 s (dense) with them, 3.6 s / 6.6 s with OMP_WAIT_POLICY=PASSIVE
// (loaded 2-core machine).
void ConfigureTrainingThreads(int threads);

// y = x·Wᵀ + bias for W = (values [mb, nb, p], offsets int16 [mb, nb]) of
// shape rows × cols; x [B, cols]. bias may be undefined. Custom autograd
// over the kernels (differentiable in x, values, bias).
torch::Tensor PermDiagLinearKernel(const torch::Tensor& x, const torch::Tensor& values,
                                   const torch::Tensor& offsets, const torch::Tensor& bias, int64_t rows,
                                   int64_t cols);
// Same result with LibTorch gather ops (autograd by LibTorch).
torch::Tensor PermDiagLinearGather(const torch::Tensor& x, const torch::Tensor& values,
                                   const torch::Tensor& offsets, const torch::Tensor& bias, int64_t rows,
                                   int64_t cols);
// The dense reconstruction, differentiable in values: values [mb, nb, p, ...]
// → [rows, cols, ...] (trailing kernel dims kept). For tests and conv.
torch::Tensor PermDiagToDense(const torch::Tensor& values, const torch::Tensor& offsets, int64_t rows,
                              int64_t cols);

class PermDiagLinearImpl : public torch::nn::Module {
 public:
  // Seeded random offsets, values He-normal on the real fan-in ceil(in/p)
  // (PermDiagMatrix::Random), zero bias.
  PermDiagLinearImpl(int64_t in_features, int64_t out_features, int p, bool bias = true, uint64_t seed = 1,
                     bool column_offsets = false);

  torch::Tensor forward(const torch::Tensor& x);

  // Copies values and offsets from a matrix of the same shape and p.
  void SetMatrix(const PermDiagMatrix& m);
  PermDiagMatrix Matrix() const;
  torch::Tensor DenseWeight() const { return PermDiagToDense(values, offsets, out_features, in_features); }

  int64_t in_features, out_features;
  int p;
  bool use_gather = false;  // benchmark / oracle switch
  torch::Tensor values, offsets, bias;
};
TORCH_MODULE(PermDiagLinear);

class PermDiagConv2dImpl : public torch::nn::Module {
 public:
  PermDiagConv2dImpl(int64_t in_channels, int64_t out_channels, int kernel, int stride, int padding, int p,
                     bool bias = true, uint64_t seed = 1, bool column_offsets = false);

  torch::Tensor forward(const torch::Tensor& x);
  // [out, in, kh, kw], differentiable in values.
  torch::Tensor DenseWeight() const { return PermDiagToDense(values, offsets, out_channels, in_channels); }

  int64_t in_channels, out_channels;
  int kernel, stride, padding, p;
  torch::Tensor values, offsets, bias;  // values [mb, nb, p, k, k]
};
TORCH_MODULE(PermDiagConv2d);

}  // namespace permdnn::train
