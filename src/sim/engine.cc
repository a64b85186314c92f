// Engine registry, results and traces (see engine.h).
#include "permdnn/sim/engine.h"

#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

TraceSink::TraceSink(const std::string& path) : out_(path), path_(path) {
  PERMDNN_CHECK(out_.good(), "trace file '{}': cannot open it for writing", path);
  out_ << "# arch layer cycle state\n";
}

void TraceSink::Line(const std::string& arch, const std::string& layer, int64_t cycle, const std::string& text) {
  out_ << arch << ' ' << layer << ' ' << cycle << ' ' << text << '\n';
  ++lines_;
}

EnergyBreakdown& EnergyBreakdown::operator+=(const EnergyBreakdown& o) {
  mac += o.mac;
  weight_mem += o.weight_mem;
  index_mem += o.index_mem;
  act_mem += o.act_mem;
  accumulate += o.accumulate;
  network += o.network;
  clock += o.clock;
  return *this;
}

EnergyBreakdown EnergyBreakdown::Scaled(double k) const {
  return {mac * k, weight_mem * k, index_mem * k, act_mem * k, accumulate * k, network * k, clock * k};
}

nlohmann::json EnergyBreakdown::ToJson() const {
  return {{"mac_pj", mac},         {"weight_mem_pj", weight_mem}, {"index_mem_pj", index_mem},
          {"act_mem_pj", act_mem}, {"accumulate_pj", accumulate}, {"network_pj", network},
          {"clock_pj", clock},     {"total_pj", total()}};
}

nlohmann::json AreaBreakdown::ToJson() const {
  return {{"datapath_mm2", datapath}, {"weight_mem_mm2", weight_mem}, {"index_mem_mm2", index_mem},
          {"act_mem_mm2", act_mem},   {"accumulate_mm2", accumulate}, {"other_mm2", other},
          {"total_mm2", total()}};
}

void LayerResult::Finish() {
  latency_us = static_cast<double>(cycles) / frequency_mhz;
  const double seconds = latency_us * 1e-6;
  throughput_gops = seconds > 0 ? 2.0 * static_cast<double>(useful_macs) / seconds * 1e-9 : 0;
  dense_equiv_gops = seconds > 0 ? 2.0 * static_cast<double>(m) * static_cast<double>(n) / seconds * 1e-9 : 0;
  const double slots = static_cast<double>(cycles) * num_pe * mults_per_pe;
  pe_utilization = slots > 0 ? static_cast<double>(useful_macs) / slots : 0;
  energy_uj = energy.total() * 1e-6;
  area_mm2 = area.total();
  power_mw = latency_us > 0 ? energy_uj / latency_us * 1e3 : 0;
  frames_per_s = seconds > 0 ? 1.0 / seconds : 0;
  frames_per_s_per_mm2 = area_mm2 > 0 ? frames_per_s / area_mm2 : 0;
  frames_per_j = energy_uj > 0 ? 1e6 / energy_uj : 0;
}

nlohmann::json LayerResult::ToJson() const {
  nlohmann::json j = {{"arch", arch},
                      {"layer", layer},
                      {"m", m},
                      {"n", n},
                      {"p", p},
                      {"weight_density", weight_density},
                      {"act_density", act_density},
                      {"num_pe", num_pe},
                      {"mults_per_pe", mults_per_pe},
                      {"frequency_mhz", frequency_mhz},
                      {"node_nm", node_nm},
                      {"cycles", cycles},
                      {"latency_us", latency_us},
                      {"useful_macs", useful_macs},
                      {"issued_macs", issued_macs},
                      {"throughput_gops", throughput_gops},
                      {"dense_equiv_gops", dense_equiv_gops},
                      {"pe_utilization", pe_utilization},
                      {"load_imbalance", load_imbalance},
                      {"energy_uj", energy_uj},
                      {"energy_breakdown", energy.ToJson()},
                      {"area_mm2", area_mm2},
                      {"area_breakdown", area.ToJson()},
                      {"power_mw", power_mw},
                      {"frames_per_s", frames_per_s},
                      {"frames_per_s_per_mm2", frames_per_s_per_mm2},
                      {"frames_per_j", frames_per_j},
                      {"weight_bytes", weight_bytes},
                      {"weight_capacity_bytes", weight_capacity_bytes},
                      {"weights_fit", weights_fit},
                      {"capacity_note", capacity_note}};
  j["counters"] = counters;
  if (!source.empty()) {
    j["source"] = source;
    j["samples"] = samples;
  }
  return j;
}

const std::vector<EngineInfo>& Engines() {
  static const std::vector<EngineInfo> engines = {
      {"permdnn", "PermDNN engine: permuted-diagonal weights, column-wise dataflow, zero-skipping",
       PermDnnParamDefs(),
       [](const nlohmann::json& s, const TechTable& t) -> std::unique_ptr<Engine> {
         return std::make_unique<PermDnnEngine>(s, t);
       }},
      {"eie", "EIE: CSC with 4-bit codebook and relative indices, interleaved rows, activation queues",
       EieParamDefs(),
       [](const nlohmann::json& s, const TechTable& t) -> std::unique_ptr<Engine> {
         return std::make_unique<EieEngine>(s, t);
       }},
      {"circnn", "CirCNN: block-circulant weights, FFT / spectral MAC / IFFT, same multiplier budget",
       CirCnnParamDefs(),
       [](const nlohmann::json& s, const TechTable& t) -> std::unique_ptr<Engine> {
         return std::make_unique<CirCnnEngine>(s, t);
       }},
      {"adder", "adder array: PE-wise ternary weights, add/subtract lanes, pruned groups skipped (ternary layers)",
       AdderArrayParamDefs(true),
       [](const nlohmann::json& s, const TechTable& t) -> std::unique_ptr<Engine> {
         return std::make_unique<AdderArrayEngine>(s, t, true);
       }},
      {"mac16", "the adder array's twin with 16-bit MAC lanes on dense weights (ternary layers)",
       AdderArrayParamDefs(false),
       [](const nlohmann::json& s, const TechTable& t) -> std::unique_ptr<Engine> {
         return std::make_unique<AdderArrayEngine>(s, t, false);
       }},
  };
  return engines;
}

const EngineInfo& FindEngine(const std::string& name) {
  std::string known;
  for (const auto& e : Engines()) {
    if (e.name == name) return e;
    known += (known.empty() ? "" : ", ") + e.name;
  }
  Fail("unknown architecture '{}' (known: {})", name, known);
}

std::unique_ptr<Engine> MakeEngine(const std::string& name, const nlohmann::json& config, const TechTable& tech) {
  const EngineInfo& info = FindEngine(name);
  nlohmann::json section = config.is_object() && config.contains(name) ? config.at(name) : nlohmann::json();
  return info.make(section, tech);
}

}  // namespace permdnn::sim
