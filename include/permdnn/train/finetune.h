// Fine-tuning of any ONNX model the runtime runs (`permdnn compress --data
// DIR --epochs N`), LibTorch-free interface; the LibTorch code lives in
// onnx_finetune.cc.
//
// The file is first loaded by runtime::Model (the one validator: every node,
// input and compressed format is checked there), then its graph is turned
// node by node into LibTorch operations over the initializers:
//   * dense Gemm / MatMul / Conv / Add: their float initializers become
//     parameters (requires_grad);
//   * ai.permdnn PermDiagMatMul / PermDiagConv: values train, offsets stay
//     (PermDiagLinearKernel / PermDiagToDense of permdiag_layers.h);
//   * BlockCirculantMatMul / BlockCirculantConv: values train
//     (CirculantLinearFft / CirculantToDense of circulant_layers.h);
//   * SparseMatMul / SparseConv: the stored nonzeros (or, with a codebook,
//     the centroids) train; row_ptr / col_idx / codes stay, so the mask is
//     fixed, as in PrunedLayer after pruning (prune_layers.h);
//   * elementwise, activation, pooling and shape ops are applied as they
//     are: Div, Neg, Abs, Exp, Log, Sqrt, Reciprocal, Relu, LeakyRelu, Elu,
//     Sigmoid, Tanh, Clip, Identity, Dropout (inference: identity), MaxPool,
//     AveragePool, GlobalAveragePool, GlobalMaxPool (2-d, symmetric pads),
//     Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Softmax, LogSoftmax,
//     and the int64 shape arithmetic exporters put before Reshape (Shape,
//     Gather, Concat, Constant, Cast);
//   * BatchNormalization: scale and B train; while training it normalizes
//     with the batch statistics and updates the stored mean / variance
//     (ONNX momentum, torch's train mode), so a projection that shifted the
//     activations is recalibrated; evaluation uses the stored statistics.
// An operator outside this list is an UnsupportedError naming the node, its
// op type and its position. The loss is cross-entropy on the graph's first
// output (on the input of a final Softmax, which is then the logits).
//
// Training follows `permdnn train`'s conventions (trainer.h): Adam, batch
// 128, learning rate dropped ×0.1 for the last third of the epochs, seeded
// shuffling; images come through the same IDX reader and are preprocessed
// as `permdnn eval` does for this file (runtime::DefaultPreprocess: the
// model's metadata, else the defaults with the layout from its input rank).
// The trained values are written back into the same initializers (same
// names, shapes and dtypes, same node list), atomically, so run / eval /
// sim --model read the result unchanged.
#pragma once

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "permdnn/runtime/export.h"
#include "permdnn/train/trainer.h"

namespace permdnn::train {

// Options: the data and optimizer fields of TrainOptions (data_dir, epochs,
// batch, lr, seed, threads, limit_train, synthetic_*); the model, compress,
// out_dir, from_dir and resume fields do not apply and are ignored.
using FineTuneOptions = TrainOptions;

struct FineTuneResult {
  // Test accuracy of the runtime (permdnn eval) on the input file and on the
  // written file.
  double accuracy_before = 0, accuracy_after = 0;
  double test_loss_before = 0;    // LibTorch, before the first step
  int64_t trainable_values = 0;   // float values that were trained
  std::vector<std::string> trained_initializers;
  std::vector<EpochMetrics> history;  // train/test loss and accuracy per epoch
};

// Fine-tunes the model in in_path and writes it to out_path (which may be
// in_path; written via a temporary name). Per-epoch lines go to `log`.
// Throws permdnn::Error for bad options or data, UnsupportedError for an
// operator it cannot train.
FineTuneResult FineTuneOnnx(const std::string& in_path, const std::string& out_path, const FineTuneOptions& options,
                            std::ostream& log);

// `permdnn compress --admm`: ADMM-NN (src/train/admm.h) from a dense ONNX
// model to the compressed one. options.compress is the SPEC (CompressOnnx's
// layers, names and default rule: runtime::PlanCompression); the ADMM
// options are TrainOptions' (rho, rho_mult, admm_iter, admm_epochs, epochs
// = ADMM epochs + retraining epochs, break_even_density, refuse_break_even).
//   1. ADMM: the dense graph of in_path trains on loss + (ρ/2)Σ‖W − Z + U‖²
//      (Adam, the learning-rate schedule over the ADMM epochs); every
//      admm_iter batch steps a round (Z = Π(W + U), U ← U + W − Z,
//      ρ ← ρ·rho_mult), printed and recorded (rounds, and rounds_csv when
//      not empty, the format of train's admm_rounds.csv).
//   2. Hard projection: W ← Π(W), then CompressOnnx with the SPEC (the
//      format's ops: CSR with the fitted levels as the codebook, permdiag,
//      circulant).
//   3. Retraining of the compressed file with the structure fixed
//      (FineTuneOnnx, the remaining epochs), written to out_path.
// The intermediate files are temporaries next to out_path (removed); out_path
// appears only when everything succeeded. Not resumable (train --method
// admm is). Errors: bad options (ρ ≤ 0, epochs, a SPEC density outside
// (0, 1] or bits outside 1-8, a SPEC that compresses nothing) before any
// data is read.
struct AdmmCompressResult {
  double accuracy_dense = 0;          // runtime, in_path
  double accuracy_admm_end = 0;       // LibTorch, the dense weights after the ADMM epochs
  std::vector<std::string> layers;    // the constrained layers (order of AdmmRound::layer_residual)
  std::vector<AdmmRound> rounds;
  // The hard projection's per-layer report (kept_energy: 1 − ‖W − Π(W)‖²/‖W‖²
  // of the ADMM-trained weights; path and file_bytes: out_path).
  runtime::ExportReport projection;
  FineTuneResult retrain;             // accuracy_before: right after the projection; accuracy_after: final
};
AdmmCompressResult AdmmCompressOnnx(const std::string& in_path, const std::string& out_path,
                                    const FineTuneOptions& options, const std::string& rounds_csv, std::ostream& log);

// The LibTorch forward pass of the model in `path` on a float input (tests:
// it must equal runtime::Model::Run). Returns the first output, flattened.
std::vector<float> TorchForwardOnnx(const std::string& path, std::span<const float> input,
                                    std::span<const int64_t> input_shape);

}  // namespace permdnn::train
