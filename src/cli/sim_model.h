// `permdnn sim --model` glue (src/cli only): reads an ONNX model's
// compressed FC layers with runtime/inspect.h and captures the activations
// entering them on Fashion-MNIST test images, for sim::RunModelComparison.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "permdnn/sim/model.h"

namespace permdnn::cli {

// Prints the layers found (and the skipped ones with the reason); throws
// Error when the model has none or an activation has the wrong shape.
std::vector<sim::ModelLayer> LoadModelLayers(const std::string& path, const std::string& data_dir, int64_t samples);

}  // namespace permdnn::cli
