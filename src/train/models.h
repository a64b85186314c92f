// The models `permdnn train --model NAME` builds, each with per-layer
// compression from a CompressSpec (compress_spec.h), and their two LibTorch-
// free hand-offs: the run description (model.json + tensors/*.npy, see
// docs/run-format.md) and the conversion of a trained dense run into a
// compressed model (per-layer energy-maximizing projection).
//
// All models are sequential; layer names are stable (fc1, conv2, bn2, ...)
// because SPEC items, checkpoints and model.json all refer to them.
//   mlp      784-1024-1024-10                  (fc1 fc2 fc3)
//   lenet300 784-300-100-10                    (fc1 fc2 fc3)
//   lenet5   conv 6@5x5, pool, conv 16@5x5, pool, fc 120, 84, 10
//   cnn      VGG-style: [conv3x3, batchnorm, relu, maxpool] with 32, 64, 128
//            channels, then fc1 256 and fc2 10
//   tiny     in-64-32-classes MLP        (fast tests)
//   tinycnn  conv 4, conv 8 (+bn, pool), fc 16, classes (fast tests)
// Compressible layers are the linear and conv layers. The default rule of
// CompressSpec::Resolve keeps the first layer (when it is a convolution) and
// the last layer dense unless the SPEC names them.
#pragma once

#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "permdnn/core/dataset.h"
#include "permdnn/train/compress_spec.h"
#include "src/train/permdiag_layers.h"

namespace permdnn::train {

std::vector<std::string> ModelNames();

struct ModelInput {
  int channels = 1, rows = 28, cols = 28, classes = 10;
};

// One layer of the sequential model, in run-format.md terms.
struct LayerInfo {
  std::string name, type;  // flatten, linear, conv2d, batchnorm2d, relu, maxpool2d
  int64_t in = 0, out = 0;  // features or channels
  int kernel = 0, stride = 1, padding = 0;
  LayerCompression compress;
  bool is_weight_layer() const { return type == "linear" || type == "conv2d"; }
};

// Storage of one layer or of the whole model.
struct StorageStats {
  std::string name, compress;
  int64_t dense_params = 0;   // floats if every weight layer were dense
  int64_t stored_params = 0;  // floats stored (values incl. padding, bias, batchnorm)
  int64_t bytes = 0;          // stored_params·4 + offset bytes
  int64_t dense_bytes = 0;    // dense_params·4
  double compression() const { return bytes ? static_cast<double>(dense_bytes) / bytes : 1.0; }
};

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
  void WriteRunDescription(const std::string& dir, const Preprocess& pre, double test_accuracy) const;

  // Loads a trained run's weights (its model.json + npy files): dense source
  // layers are copied or projected onto this model's compression; returns
  // what was kept per weight layer. Throws naming the file/layer on mismatch.
  std::vector<ConversionReport> LoadFromRun(const std::string& run_dir);

 private:
  struct Layer {
    LayerInfo info;
    torch::nn::Linear linear{nullptr};
    PermDiagLinear pd_linear{nullptr};
    torch::nn::Conv2d conv{nullptr};
    PermDiagConv2d pd_conv{nullptr};
    torch::nn::BatchNorm2d bn{nullptr};
  };
  std::string model_;
  ModelInput input_;
  std::vector<Layer> layers_;
};
TORCH_MODULE(Net);

}  // namespace permdnn::train
