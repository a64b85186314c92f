// The simulator held to the published chips, and how far its conclusions
// move with the technology table.
//
// Validate() takes one comparison run of the three engines on EIE's nine
// layers and lists every published figure the models are held to — the
// PermDNN chip's area, power and peak rate, its ratio ranges against EIE and
// CirCNN, EIE's area, power and per-layer times — with the modeled value,
// the error and the tolerance. A row whose target the model does not meet
// for a reason docs/simulator.md explains carries that documented deviation;
// it is then held to the documented value (so the table still fails when the
// model drifts) and shows as a gap, never as met. `permdnn sim --validate`
// prints the table and exits 1 when a row fails; `--strict` fails on the
// documented gaps too.
//
// Sensitivity() moves each technology-table entry by ±step (one at a time),
// re-prices the action counts of the same run (timing does not depend on
// the table; Engine::Account) and reports how far each published quantity
// moves: which entries the conclusions rest on.
#pragma once

#include <string>
#include <vector>

#include "permdnn/sim/report.h"

namespace permdnn::sim {

struct ValidationRow {
  std::string key;     // short name, e.g. "permdnn.power_mw", "vs_eie.energy_eff.min"
  std::string group;   // "PermDNN chip", "PermDNN vs EIE", ...
  std::string what;
  double published = 0, modeled = 0;
  double tolerance = 0;         // relative, on the error
  double documented_error = 0;  // 0: the target is met; else the deviation the docs explain
  double drift = 0.05;          // how far a documented deviation may move before the row fails
  std::string source;           // where the published figure comes from
  std::string reason;           // for a documented deviation: why, in short (docs/simulator.md has the numbers)

  double error() const { return published != 0 ? modeled / published - 1.0 : 0.0; }
  bool meets_target() const;  // |error| <= tolerance
  bool passes() const;        // target rows: meets_target(); documented gaps: within `drift` of it
  bool gap() const { return documented_error != 0; }
};

struct ValidationReport {
  std::vector<ValidationRow> rows;
  bool Passed(bool strict) const;
};

// `run` must hold the permdnn, eie and circnn records of EIE's nine layers
// (Error otherwise, naming what is missing).
ValidationReport Validate(const ComparisonResult& run);
std::string RenderValidation(const ValidationReport& report);
nlohmann::json ValidationToJson(const ValidationReport& report);

struct SensitivityOptions {
  double step = 0.2;  // ±20 %
};

// One technology-table entry moved down and up by `step`: the relative
// change of each quantity (same order as SensitivityReport::quantities).
struct SensitivityRow {
  std::string entry;  // e.g. "energy_pj.int_mult_8b"
  std::vector<double> down, up;
};

struct SensitivityReport {
  double step = 0.2;
  std::vector<std::string> quantities;  // e.g. "vs EIE energy_eff min"
  std::vector<double> base;             // their values in the unperturbed run
  std::vector<SensitivityRow> rows;     // every entry of energy_pj and area_um2
};

// `run` is a comparison of the three engines on EIE's nine layers with the
// table at `run.tech_path`; `config` the configuration it ran with.
SensitivityReport Sensitivity(const ComparisonResult& run, const nlohmann::json& config,
                              const SensitivityOptions& options = {});
// Markdown table (docs/simulator.md embeds it).
std::string RenderSensitivity(const SensitivityReport& report);

}  // namespace permdnn::sim
