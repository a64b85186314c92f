// Accelerator engines: the small interface every architecture model
// implements, the statistics one layer run produces, and the factory that
// builds engines by name from a configuration (ramulator2-style registry).
//
// An engine is constructed from a ParamSpec (config.h) and a TechTable
// (tech.h), validates its parameters once, and then runs layers: Run() is a
// deterministic cycle-level simulation driven by the real compressed matrix
// and input vector of a LayerWorkload. It returns counts of every action,
// the energy those actions cost, the area of the configured engine, and
// (where the engine computes the layer) the int16 output. Per-cycle state is
// never kept: an optional TraceSink streams one line per cycle to a file.
#pragma once

#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "permdnn/sim/config.h"
#include "permdnn/sim/tech.h"
#include "permdnn/sim/workload.h"

namespace permdnn::sim {

// Bits of an index that tells `values` entries apart (at least 1).
inline int IndexBits(int64_t values) {
  int b = 1;
  while (b < 62 && (int64_t{1} << b) < values) ++b;
  return b;
}

// Streams a per-cycle trace (opt-in). Lines: "<arch> <layer> <cycle> <text>".
class TraceSink {
 public:
  // Throws Error naming the path if it cannot be opened.
  explicit TraceSink(const std::string& path);
  void Line(const std::string& arch, const std::string& layer, int64_t cycle, const std::string& text);
  int64_t lines() const { return lines_; }

 private:
  std::ofstream out_;
  std::string path_;
  int64_t lines_ = 0;
};

// Energy per inference by component, in pJ.
struct EnergyBreakdown {
  double mac = 0;          // multipliers + adders (incl. FFT butterflies)
  double weight_mem = 0;   // weight SRAM reads
  double index_mem = 0;    // offsets + their decode (PermDNN), pointers + codebook (EIE), twiddles (CirCNN)
  double act_mem = 0;      // activation buffer, zero detection, queues
  double accumulate = 0;   // accumulator registers / destination register file
  double network = 0;      // broadcast wires from the detector to the PEs
  double clock = 0;        // clock tree and pipeline registers, every cycle
  double total() const { return mac + weight_mem + index_mem + act_mem + accumulate + network + clock; }
  EnergyBreakdown& operator+=(const EnergyBreakdown& o);
  EnergyBreakdown Scaled(double k) const;
  nlohmann::json ToJson() const;
};

// Area by component, in mm².
struct AreaBreakdown {
  double datapath = 0, weight_mem = 0, index_mem = 0, act_mem = 0, accumulate = 0, other = 0;
  double total() const { return datapath + weight_mem + index_mem + act_mem + accumulate + other; }
  nlohmann::json ToJson() const;
};

struct LayerResult {
  std::string arch, layer;
  int64_t m = 0, n = 0;
  int p = 0;  // block size (0 for EIE)
  double weight_density = 0, act_density = 0;
  int num_pe = 0, mults_per_pe = 0;
  double frequency_mhz = 0, node_nm = 0;

  int64_t cycles = 0;
  double latency_us = 0;
  int64_t useful_macs = 0;  // nonzero weight × nonzero input products
  int64_t issued_macs = 0;  // multiplier operations actually performed
  double throughput_gops = 0;         // 2·useful_macs / latency
  double dense_equiv_gops = 0;        // 2·m·n / latency
  double pe_utilization = 0;          // useful MACs / (cycles · PEs · multipliers)
  double load_imbalance = 1;          // max PE busy cycles / mean PE busy cycles
  EnergyBreakdown energy;             // pJ
  double energy_uj = 0;
  AreaBreakdown area;                 // mm²
  double area_mm2 = 0;
  double power_mw = 0;                // energy / latency
  double frames_per_s = 0, frames_per_s_per_mm2 = 0, frames_per_j = 0;
  int64_t weight_bytes = 0;           // storage this layer needs on chip
  int64_t weight_capacity_bytes = 0;  // what the engine holds
  bool weights_fit = true;
  std::string capacity_note;          // why they do not fit
  std::map<std::string, int64_t> counters;  // actions, for the JSON report
  std::vector<int16_t> output;              // functional int16 output (if computed)
  // Model runs (sim/model.h): the matrix this engine ran, and over how many
  // input samples the record is the mean. Empty / 1 for synthetic layers.
  std::string source;
  int samples = 1;

  // Fills latency, rates, power and efficiency from cycles, MACs, energy and
  // area.
  void Finish();
  nlohmann::json ToJson() const;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string name() const = 0;
  // Simulates the layer: action counts (LayerResult::counters), cycles, the
  // functional output where computed, then Account().
  virtual LayerResult Run(const LayerWorkload& workload, TraceSink* trace) const = 0;
  // The energy-accounting phase on its own: prices the action counts in
  // `r.counters` (and r.cycles) with this engine's technology table, sets
  // r.energy and r.area, and derives the rates (LayerResult::Finish). Run()
  // ends with it; the sensitivity analysis calls it again on engines built
  // with a perturbed table, since timing does not depend on the table.
  virtual void Account(LayerResult& r) const = 0;
  // Area of the engine as configured (independent of the layer).
  virtual AreaBreakdown Area() const = 0;
  virtual const ParamSpec& params() const = 0;
  // What the workload builder must materialize for this engine.
  virtual bool needs_csc() const { return false; }
  // Whether the engine runs this layer at all (the adder array runs ternary
  // layers only; a model run leaves the other layers out of its records,
  // and Run() on them is an Error naming the layer).
  virtual bool Supports(const LayerWorkload&) const { return true; }
};

using EngineFactory = std::function<std::unique_ptr<Engine>(const nlohmann::json& section, const TechTable& tech)>;

struct EngineInfo {
  std::string name, description;
  std::vector<ParamDef> params;
  EngineFactory make;
};

// Registry of engines by name ("permdnn", "eie", "circnn", "adder", "mac16").
const std::vector<EngineInfo>& Engines();
const EngineInfo& FindEngine(const std::string& name);  // Error lists the known names
std::unique_ptr<Engine> MakeEngine(const std::string& name, const nlohmann::json& config, const TechTable& tech);

}  // namespace permdnn::sim
