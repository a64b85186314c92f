// `permdnn sim --model` glue (src/cli only): reads an ONNX model's
// compressed FC, conv and recurrent layers with runtime/inspect.h and captures the
// activations entering them on Fashion-MNIST test images (or a given .npy
// input), for sim::RunModelComparison.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "permdnn/sim/model.h"

namespace permdnn::cli {

// Output positions of a conv layer simulated per sample by default: every
// one up to this many, else this many spread evenly (see LoadModelLayers).
inline constexpr int64_t kDefaultMaxConvPositions = 256;

// Prints the layers found (and the skipped ones with the reason); throws
// Error when the model has none or an activation has the wrong shape.
// Conv layers (runtime/inspect.h: their im2col matrix) get one input per
// sample and simulated output position: all positions when there are at
// most `max_conv_positions` (0: no limit), else positions
// floor((i + 1/2)·P / max) for i < max, the same for every sample, and the
// records are scaled to all P positions (ModelLayer::positions).
// input_npy (optional): a float .npy [N, ...] fed to the model's one input
// as is (no preprocessing), its first min(samples, N) entries, instead of
// Fashion-MNIST test images; for models whose input is not an image (e.g.
// the NT-LSTM shape of scripts/make-lstm-bench-runs.py).
std::vector<sim::ModelLayer> LoadModelLayers(const std::string& path, const std::string& data_dir, int64_t samples,
                                             int64_t max_conv_positions = kDefaultMaxConvPositions,
                                             const std::string& input_npy = "");

}  // namespace permdnn::cli
