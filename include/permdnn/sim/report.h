// Running the architectures on a set of layers and reporting the results:
// the library behind `permdnn sim`, `permdnn sim sweep` and the simulator
// part of `permdnn demo`.
//
// RunComparison builds each layer's workload once (seeded), runs every
// requested engine on it, and derives the PermDNN-vs-EIE and
// PermDNN-vs-CirCNN ratios per layer, their min/max against the published
// ranges, and a check of the engines' modeled power and area against the
// published chips. RenderComparison turns that into the human tables;
// ComparisonToJson into the --json records; WriteComparisonPlots into SVG
// bar charts (gnuplot). RunSweep explores PermDNN design points and marks
// the Pareto front (throughput per area vs energy per inference).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "permdnn/core/workloads.h"
#include "permdnn/sim/engine.h"

namespace permdnn::sim {

struct ComparisonOptions {
  std::vector<FcLayerSpec> layers = EieLayers();
  std::vector<std::string> archs = {"permdnn", "eie", "circnn"};
  nlohmann::json config = nlohmann::json::object();  // sections per arch + "workload"
  std::string tech_path;                              // empty: TechTable::DefaultPath()
  uint64_t seed = 1;
  bool check_functional = true;  // PermDNN int16 output == kernels int16 output
  std::string trace_path;        // empty: no trace
};

struct RatioRow {
  std::string layer;
  double throughput = 0, area_efficiency = 0, energy_efficiency = 0;
  // Energy efficiency with the published chip powers instead of the modeled
  // energy (P_other · t_other / (P_permdnn · t_permdnn)).
  double energy_efficiency_published_power = 0;
  // Area efficiency with the published chip areas instead of the modeled
  // ones (throughput ratio × A_other / A_permdnn, EIE's area scaled to the
  // comparison node): the basis of the published 5.9–8.5× (docs/simulator.md).
  double area_efficiency_published_area = 0;
};

struct RatioSummary {
  std::string against;  // "eie" | "circnn"
  std::vector<RatioRow> rows;
  RatioRow min, max, geomean;
};

struct ChipCheck {
  std::string arch, what;
  double modeled = 0, published = 0;
  std::string note;
};

// The products of one recurrent node (sim/model.h): its layers' records sum
// to one inference of the whole sequence of `steps` time steps.
struct RecurrentGroup {
  std::string node, cell;
  int64_t steps = 0;
  std::vector<std::string> layers;  // e.g. rnn1.W, rnn1.R (and rnn1.W_b, rnn1.R_b)
};

struct ComparisonResult {
  std::vector<LayerResult> records;
  std::vector<RatioSummary> ratios;
  std::vector<ChipCheck> chip_checks;
  std::vector<std::string> notes;  // e.g. layers whose weights do not fit
  nlohmann::json resolved_config;
  std::string tech_path;
  double build_seconds = 0, simulate_seconds = 0;  // CPU time summed over layers
  double wall_seconds = 0;
  int threads = 1;
  int functional_checks = 0, functional_mismatches = 0;
  // False for the layers of a model (sim/model.h): the published ratio
  // ranges belong to EIE's nine layers and are not verdicts on other layers.
  bool compare_to_published = true;
  int samples = 0;  // model runs: input samples per layer
  std::vector<RecurrentGroup> recurrent;  // model runs with recurrent layers
};

// The [workload] section's parameters (seed, p, densities), declared once
// like the engines' (`permdnn sim --list-params` prints them).
const std::vector<ParamDef>& WorkloadParamDefs();

// Validates options (unknown arch names, bad config values) and runs.
ComparisonResult RunComparison(const ComparisonOptions& options);
// The demo's entry point: all nine EIE layers, the three architectures.
inline ComparisonResult RunEieComparison(uint64_t seed = 1) {
  ComparisonOptions o;
  o.seed = seed;
  return RunComparison(o);
}

std::string RenderComparison(const ComparisonResult& result);
nlohmann::json ComparisonToJson(const ComparisonResult& result);
// Writes <dir>/permdnn_vs_eie.svg and permdnn_vs_circnn.svg (plus their
// .dat and .gp sources); returns the SVG paths. Throws Error if gnuplot is
// missing or fails.
std::vector<std::string> WriteComparisonPlots(const ComparisonResult& result, const std::string& dir);

struct SweepOptions {
  std::vector<FcLayerSpec> layers = EieLayers();
  std::vector<int> num_pe = {8, 16, 32, 64};
  std::vector<int> mults_per_pe = {4, 8, 16};
  std::vector<int> ps = {0, 4, 8, 16};  // 0: matched to each layer's density
  std::vector<int> bits = {8, 16};
  nlohmann::json config = nlohmann::json::object();  // base "permdnn" section etc.
  std::string tech_path;
  uint64_t seed = 1;
};

struct SweepPoint {
  int num_pe = 0, mults_per_pe = 0, p = 0, bits = 0;
  double latency_us = 0;         // all layers once
  double energy_uj = 0;          // all layers once
  double area_mm2 = 0;
  double frames_per_s_per_mm2 = 0;
  bool pareto = false;
};

std::vector<SweepPoint> RunSweep(const SweepOptions& options);
std::string SweepCsv(const std::vector<SweepPoint>& points);
std::string RenderSweep(const std::vector<SweepPoint>& points);
// Writes <dir>/sweep.csv and <dir>/pareto.svg; returns their paths.
std::vector<std::string> WriteSweep(const std::vector<SweepPoint>& points, const std::string& dir);

}  // namespace permdnn::sim
