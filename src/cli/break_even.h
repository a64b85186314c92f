// The break-even density of a pruned layer (ADMM-NN's hardware-aware view;
// issue 19 point 3, docs/admm.md): the weight density below which the
// sparse form of a layer of this shape beats its dense form on a platform,
// in time or energy, with every index byte the sparse form needs counted.
//
// Platforms:
//   cpu         permdnn's CSR kernels (what the runtime runs for a pruned
//               layer: kernels::CsrMatVec at one input vector, CsrMatMul
//               over a conv's output pixels) against OpenBLAS sgemv / sgemm
//               on the same shape, one thread, process CPU time, medians;
//               random CSR matrices (Bernoulli entries) at each density.
//   eie-cycles  the simulator's EIE engine (CSC, 4-bit codes, 4-bit
//   eie-energy  relative row indices, padding zeros, column pointers) against
//               a dense twin: the PermDNN engine at p = 1 configured with
//               EIE's multipliers (num_pe PEs × 1 multiplier, EIE's clock,
//               node, queue depth and per-PE SRAM), i.e. the same datapath
//               without indices; both skip zero inputs. Cycles or energy per
//               inference.
// The break-even is where sparse / dense crosses 1, interpolated in log
// density between the two measured densities around it.
//
// `permdnn break-even` prints the curves; `permdnn train --method admm` and
// `permdnn compress --admm` take `--break-even cpu|eie-cycles|eie-energy`
// (or a number) and report every pruned layer against its own break-even
// (train::TrainOptions::break_even_for: train never links the simulator).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "permdnn/train/trainer.h"

namespace permdnn::cli {

struct BreakEvenPoint {
  double density = 0;            // nnz / (rows · cols) of the sparse form
  double sparse = 0, dense = 0;  // ms, cycles or µJ per inference
  int64_t sparse_bytes = 0, dense_bytes = 0;
};

struct BreakEvenCurve {
  std::string platform;  // cpu | eie-cycles | eie-energy
  train::BreakEvenQuery layer;
  std::string sparse_name, dense_name, unit;
  std::vector<BreakEvenPoint> points;  // increasing density
  // The crossing; `bound` "" when interpolated, "<" when the sparse form
  // loses at every measured density (break_even = the lowest one), ">="
  // when it wins at every one (break_even = the highest one).
  double break_even = 0;
  std::string bound;
};

struct BreakEvenOptions {
  std::vector<double> densities = {1.0 / 64, 1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0 / 2, 3.0 / 4, 1.0};
  double min_time_s = 0.05;  // cpu: per timed point, after a warm-up
  int rounds = 3;            // cpu: median of this many rounds' medians
  double act_density = 1.0;  // eie: input density of the simulated vector
  uint64_t seed = 1;
  std::string tech_path;  // eie: technology table (empty: the default)
  nlohmann::json sim_config = nlohmann::json::object();  // eie: engine sections ("eie": {...})
};

// The names --break-even accepts besides a number.
const std::vector<std::string>& BreakEvenPlatforms();

// One platform's curve for one layer shape. Errors: unknown platform, empty
// shape, a density outside (0, 1].
BreakEvenCurve MeasureBreakEven(const std::string& platform, const train::BreakEvenQuery& layer,
                                const BreakEvenOptions& options);

// Where sparse / dense crosses 1 (the rule above); fills curve.break_even and
// curve.bound.
void FindBreakEven(BreakEvenCurve& curve);

// A table per curve (density, sparse, dense, ratio, bytes) and a summary
// line; as Markdown for docs/admm.md.
std::string BreakEvenTable(const std::vector<BreakEvenCurve>& curves);
std::string BreakEvenMarkdown(const std::vector<BreakEvenCurve>& curves);
nlohmann::json BreakEvenToJson(const std::vector<BreakEvenCurve>& curves);

// train / compress: `--break-even D|cpu|eie-cycles|eie-energy` and
// `--refuse-break-even`, one definition for both commands; ApplyBreakEven
// turns the value into TrainOptions (a number: break_even_density; a
// platform: break_even_for, measuring each layer on first use).
void AddBreakEvenOptions(CLI::App* cmd, std::string* value, bool* refuse);
// train / compress: the ADMM phase's options (--admm-epochs, --rho,
// --rho-mult, --admm-penalty, --rescale-dual, --admm-iter), one definition.
void AddAdmmOptions(CLI::App* cmd, train::TrainOptions* o);
void ApplyBreakEven(const std::string& value, train::TrainOptions* options);

}  // namespace permdnn::cli
