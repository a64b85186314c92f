// Internal (src/sim only): the parts of a comparison run shared by the
// synthetic workloads (report.cc, RunComparison) and the layers of a model
// (model.cc, RunModelComparison).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "permdnn/sim/engine.h"
#include "permdnn/sim/report.h"
#include "permdnn/sim/tech.h"

namespace permdnn::sim {

// Validates the config sections and builds the engines by name (Error on an
// unknown or repeated name); records each engine's resolved parameters.
std::vector<std::unique_ptr<Engine>> MakeEngines(const std::vector<std::string>& archs, const nlohmann::json& config,
                                                 const TechTable& tech, nlohmann::json* resolved);

// From out.records (one per layer and engine): the PermDNN-vs-X ratios per
// layer with min/max/geomean, the modeled-vs-published chip checks, and the
// notes on layers whose weights do not fit on chip.
void FinishComparison(ComparisonResult& out, const std::vector<std::string>& layer_names,
                      const std::vector<std::unique_ptr<Engine>>& engines, const std::vector<std::string>& archs,
                      const TechTable& tech);

}  // namespace permdnn::sim
