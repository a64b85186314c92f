// The models `permdnn train --model NAME` builds, each with per-layer
// compression from a CompressSpec (formats/spec.h), and their two LibTorch-
// free hand-offs: the run description (model.json + tensors/*.npy, see
// docs/run-format.md) and the conversion of a trained dense run into a
// compressed model (per-layer energy-maximizing projection).
//
// All models are sequential; layer names are stable (fc1, conv2, bn2, ...)
// because SPEC items, checkpoints and model.json all refer to them.
//   mlp      784-1024-1024-10                  (fc1 fc2 fc3)
//   lenet300 784-300-100-10                    (fc1 fc2 fc3)
//   lenet5   conv 6@5x5, pool, conv 16@5x5, pool, fc 120, 84, 10
//   lenet5caffe  Caffe's LeNet: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, 10
//   cnn      VGG-style: [conv3x3, batchnorm, relu, maxpool] with 32, 64, 128
//            channels, then fc1 256 and fc2 10
//   tiny     in-64-32-classes MLP        (fast tests)
//   tinycnn  conv 4, conv 8 (+bn, pool), fc 16, classes (fast tests)
//   resnet   ResNet-20-style for 28×28: conv1 3×3 w + bn + relu, three stages
//            of three basic blocks (w, 2w, 4w channels; the first block of
//            stages 2 and 3 has stride 2 and a 1×1 stride-2 conv + bn
//            shortcut), global average pooling (7×7), fc classes; w = --width
//            (16 as ResNet-20). A block: sSbB_conv1 bn1 relu1 conv2 bn2,
//            [sSbB_sc + sSbB_scbn reading the block input], sSbB_add, sSbB_relu.
//   tinyres  resnet at w = 2, one block per stage (fast tests)
//   lstm     Fashion-MNIST row by row: rnn1 (lstm or gru, 28 → hidden, last
//            h_T), fc hidden → classes (recurrent_layers.h)
//   charlm   character LM: embed (vocab → E, E = --embed, 64 by default),
//            rnn1 (E → hidden, every h_t), fc hidden → vocab per time step
// Compressible layers are the linear and conv layers, each dense, permdiag
// (PermDiagLinear/Conv2d), circulant (BlockCirculantLinear/Conv2d) or prune
// (PrunedLayer, with the pruning schedule of prune_layers.h driven by the
// trainer through CompressionStep/AfterOptimizerStep). The default rule of
// CompressSpec::Resolve keeps the first layer (when it is a convolution) and
// the last layer dense unless the SPEC names them.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "permdnn/core/dataset.h"
#include "permdnn/formats/spec.h"
#include "src/train/circulant_layers.h"
#include "src/train/permdiag_layers.h"
#include "src/train/prune_layers.h"
#include "src/train/recurrent_layers.h"
#include "src/train/ternary_layers.h"

namespace permdnn::train {

// The SPEC vocabulary of the format registry (permdnn/formats/spec.h).
using formats::CompressKind;
using formats::CompressSpec;
using formats::LayerCompression;

std::vector<std::string> ModelNames();

struct ModelInput {
  int channels = 1, rows = 28, cols = 28, classes = 10;
  // Recurrent models: the hidden size and cell of rnn1 (`--hidden`,
  // `--cell`); charlm: sequence length T and the corpus alphabet (classes =
  // its size, the vocabulary).
  int64_t hidden = 256;
  int64_t width = 16;  // resnet: first stage's channels (`--width`)
  int64_t embed = 64;  // charlm: embedding width (`--embed`)
  std::string cell = "lstm";
  int64_t seq_len = 0;
  std::vector<uint8_t> alphabet;
};

// True for the models whose input is a token-id sequence (charlm).
bool IsTokenModel(const std::string& model);

// One layer of the sequential model, in run-format.md terms.
struct LayerInfo {
  std::string name, type;  // flatten, linear, conv2d, batchnorm2d, relu, maxpool2d, avgpool2d, add, embedding, lstm, gru
  int64_t in = 0, out = 0;  // features or channels (embedding: vocab, dim; lstm/gru: in, hidden)
  int kernel = 0, stride = 1, padding = 0;
  LayerCompression compress;
  bool sequence_output = false;  // lstm/gru: every h_t, else h_T
  // Branches (residual models): the earlier layer this one reads ("" = the
  // previous layer); add: the earlier layer whose output it adds.
  std::string input = "", from = "";
  bool is_recurrent() const { return type == "lstm" || type == "gru"; }
  bool is_weight_layer() const { return type == "linear" || type == "conv2d" || is_recurrent(); }
};

// Storage of one layer or of the whole model.
struct StorageStats {
  std::string name, compress;
  int64_t dense_params = 0;   // floats if every weight layer were dense
  int64_t stored_params = 0;  // numbers stored (values incl. padding, bias, batchnorm,
                              // codebook entries; not indices or codes)
  int64_t bytes = 0;          // every stored byte: values, offsets, CSR indices
                              // (row_ptr, col_idx), codes, codebooks, bias
  int64_t dense_bytes = 0;    // dense_params·4
  double compression() const { return bytes ? static_cast<double>(dense_bytes) / bytes : 1.0; }
};

// The one place that counts a layer's bytes (the arrays of docs/run-format.md):
//   dense      out·in·kk·4 + bias
//   permdiag   mb·nb·p·kk·4 + offsets mb·nb·OffsetBytes(p) + bias
//   circulant  mb·nb·p·kk·4 + bias
//   prune      row_ptr (out+1)·4 + col_idx nnz·4 + values nnz·4, or with bits
//              codes nnz·1 (uint8) + codebook 2^bits·4; with index (csr-relative,
//              the file form export writes): the packed row lengths, gaps and
//              codes of formats::StoredSize, counted from the mask's pattern
//              (`mask`, the weight's shape, rows = dim 0); + bias
// nnz is used by prune only (the mask's count); bias is 4·out when present.
StorageStats WeightLayerStorage(const LayerInfo& layer, int64_t nnz, bool has_bias = true,
                                const torch::Tensor& mask = {});

struct ConversionReport {
  std::string layer, compress;
  double kept_energy = 1.0;  // Σ kept w² / Σ w² (1 for copied layers)
};

class NetImpl : public torch::nn::Module {
 public:
  // Throws permdnn::Error for an unknown model or a SPEC naming an unknown
  // layer. seed drives the permdiag offsets (torch::manual_seed the rest).
  NetImpl(const std::string& model, const CompressSpec& spec, const ModelInput& input, uint64_t seed);

  torch::Tensor forward(torch::Tensor x);  // [B, C, H, W] → logits [B, classes]

  const std::string& model_name() const { return model_; }
  const ModelInput& input() const { return input_; }
  std::vector<LayerInfo> layers() const;
  // Per weight layer (BatchNorm counted in its own row), then use Total().
  std::vector<StorageStats> Storage() const;
  static StorageStats Total(const std::vector<StorageStats>& layers);

  // Writes dir/tensors/<layer>.<name>.npy, then dir/model.json (atomically,
  // last), per docs/run-format.md.
  // test_loss (mean cross-entropy, nats) gives charlm's "test_bpc".
  void WriteRunDescription(const std::string& dir, const Preprocess& pre, double test_accuracy,
                           double test_loss = 0) const;

  // Loads a trained run's weights (its model.json + npy files): dense source
  // layers are copied or projected onto this model's compression; returns
  // what was kept per weight layer. Throws naming the file/layer on mismatch.
  std::vector<ConversionReport> LoadFromRun(const std::string& run_dir);

  // The compression schedule of pruned layers (prune_layers.h); no-ops when
  // the model has none. CompressionStep runs before the batch of global step
  // `step` (0-based, of `total_steps`): pruning points recompute masks, the
  // sharing step builds codebooks; returns a line for the log when something
  // final happened ("" otherwise). AfterOptimizerStep re-applies the masks.
  // CompressionDone: the schedule has reached its final state at `step`.
  std::string CompressionStep(int64_t step, int64_t total_steps);
  void AfterOptimizerStep();
  bool CompressionDone(int64_t step, int64_t total_steps) const;
  // The ternary layers' group-lasso / WPC term (ternary_layers.h), added to
  // the loss by the trainer; undefined when no layer has one now.
  torch::Tensor CompressionPenalty();
  // The ternary layers (the tests drive them directly).
  std::vector<TernaryLayerImpl*> TernaryLayers() const;

 private:
  struct Layer {
    LayerInfo info;
    int input_index = -1, from_index = -1;  // resolved LayerInfo::input / from
    bool keep_output = false;               // another layer reads its output
    torch::nn::Linear linear{nullptr};
    PermDiagLinear pd_linear{nullptr};
    torch::nn::Conv2d conv{nullptr};
    PermDiagConv2d pd_conv{nullptr};
    BlockCirculantLinear circ_linear{nullptr};
    BlockCirculantConv2d circ_conv{nullptr};
    PrunedLayer pruned{nullptr};  // linear or conv
    TernaryLayer ternary{nullptr};  // linear or conv
    torch::nn::BatchNorm2d bn{nullptr};
    RecurrentLayer rnn{nullptr};
    torch::nn::Embedding embed{nullptr};
  };
  // Every PrunedLayer of the model (a pruned linear/conv layer, or the two
  // matrices of a pruned recurrent layer), with its layer's target density.
  std::vector<std::pair<PrunedLayerImpl*, const LayerInfo*>> PrunedLayers() const;
  std::string model_;
  ModelInput input_;
  std::vector<Layer> layers_;
};
TORCH_MODULE(Net);

}  // namespace permdnn::train
