// Validation against the published chips and sensitivity to the technology
// table (see validate.h).
#include "permdnn/sim/validate.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "comparison.h"
#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

namespace {

constexpr const char* kPermDnnPaper = "Deng et al., PermDNN, MICRO 2018 (DESIGN.md)";
constexpr const char* kEiePaper = "Han et al., EIE, ISCA 2016 (DESIGN.md)";
// EIE's Table IV, 'EIE actual time' (64 PEs, 800 MHz, batch 1), in µs.
constexpr const char* kEieTable4 = "Han et al., EIE, ISCA 2016, Table IV (EIE actual time, 64 PEs, 800 MHz)";
const std::map<std::string, double>& EieLayerMicroseconds() {
  static const std::map<std::string, double> t = {{"Alex-6", 30.3}, {"Alex-7", 12.2}, {"Alex-8", 9.9},
                                                  {"VGG-6", 34.4},  {"VGG-7", 8.7},   {"VGG-8", 8.4},
                                                  {"NT-We", 8.0},   {"NT-Wd", 13.9},  {"NT-LSTM", 7.5}};
  return t;
}

// Deviations the model does not close, each explained with its numbers in
// docs/simulator.md ("Where the model lands"). A row listed here is held to
// this value instead of 0; update it deliberately when the model changes.
struct Documented {
  double error;
  const char* reason;
};
const std::map<std::string, Documented>& DocumentedDeviations() {
  static const std::map<std::string, Documented> d = {
      {"permdnn.power_mw",
       {+0.619,
        "bottom-up from Horowitz/EIE per-action energies; 57% is the 16-bit weight read per MAC from a 16 KB bank "
        "(2.20 pJ at 28 nm): the weight reads alone draw ~650 mW; EIE's measured SRAM power is consistent with that curve"}},
      {"vs_eie.energy_eff.min", {-0.232, "follows from the PermDNN power gap (the published ratios are throughput "
                                         "x 590 / 703.4 mW)"}},
      {"vs_eie.energy_eff.max", {-0.165, "follows from the PermDNN power gap"}},
      {"vs_circnn.throughput",
       {-0.535, "the model's CirCNN has PermDNN's 256 multipliers at 1.2 GHz; the published 11.51x compares with "
                "CirCNN's own chip, whose configuration is not in the public material available here"}},
      {"eie.time_us.VGG-6",
       {-0.279, "random matrix at the published 4% density, not EIE's pruned one (padding and balance differ); "
                "its 25,089 column pointers (49 KB) overflow the 32 KB pointer SRAM, whose handling is not modeled"}},
  };
  return d;
}

const LayerResult* Find(const ComparisonResult& run, const std::string& arch, const std::string& layer) {
  for (const auto& r : run.records)
    if (r.arch == arch && r.layer == layer) return &r;
  return nullptr;
}

const RatioSummary* FindRatios(const ComparisonResult& run, const std::string& against) {
  for (const auto& s : run.ratios)
    if (s.against == against) return &s;
  return nullptr;
}

// Mean power over the layers (total energy / total time), in mW; without
// the broadcast wires if `pes_only`.
double MeanPowerMw(const ComparisonResult& run, const std::string& arch, bool pes_only) {
  double energy = 0, time = 0;
  for (const auto& r : run.records) {
    if (r.arch != arch) continue;
    energy += r.energy_uj - (pes_only ? r.energy.network * 1e-6 : 0.0);
    time += r.latency_us;
  }
  return time > 0 ? energy / time * 1e3 : 0;
}

double Number(const nlohmann::json& config, const char* arch, const char* key) {
  PERMDNN_CHECK(config.contains(arch) && config[arch].contains(key), "sim --validate: the run has no {}.{}", arch,
                key);
  return config[arch][key].get<double>();
}

}  // namespace

bool ValidationRow::meets_target() const { return std::fabs(error()) <= tolerance; }
bool ValidationRow::passes() const {
  return gap() ? std::fabs(error() - documented_error) <= drift : meets_target();
}

bool ValidationReport::Passed(bool strict) const {
  return std::all_of(rows.begin(), rows.end(),
                     [&](const ValidationRow& r) { return r.passes() && (!strict || r.meets_target()); });
}

ValidationReport Validate(const ComparisonResult& run) {
  for (const auto& l : EieLayers())
    for (const char* arch : {"permdnn", "eie", "circnn"})
      PERMDNN_CHECK(Find(run, arch, l.name), "sim --validate: the run has no {} record for EIE layer {}", arch,
                    l.name);
  const RatioSummary* eie = FindRatios(run, "eie");
  const RatioSummary* circnn = FindRatios(run, "circnn");
  PERMDNN_CHECK(eie && circnn, "sim --validate: the run has no PermDNN-vs-EIE or PermDNN-vs-CirCNN ratios");
  const LayerResult& perm = *Find(run, "permdnn", "Alex-6");
  const LayerResult& eie6 = *Find(run, "eie", "Alex-6");

  ValidationReport rep;
  auto add = [&](std::string key, std::string group, std::string what, double published, double modeled,
                 double tolerance, std::string source) {
    ValidationRow row;
    row.key = std::move(key);
    row.group = std::move(group);
    row.what = std::move(what);
    row.published = published;
    row.modeled = modeled;
    row.tolerance = tolerance;
    row.source = std::move(source);
    if (auto it = DocumentedDeviations().find(row.key); it != DocumentedDeviations().end()) {
      row.documented_error = it->second.error;
      row.reason = it->second.reason;
    }
    rep.rows.push_back(std::move(row));
  };

  // The PermDNN chip (28 nm, 1.2 GHz): area, power averaged over EIE's nine
  // layers, and the peak rate 2 · PEs · multipliers · clock.
  add("permdnn.area_mm2", "PermDNN chip", "area (mm2)", 8.85, perm.area_mm2, 0.10, kPermDnnPaper);
  add("permdnn.power_mw", "PermDNN chip", "power (mW), mean over the nine layers", 703.4,
      MeanPowerMw(run, "permdnn", false), 0.15, kPermDnnPaper);
  add("permdnn.peak_gops", "PermDNN chip", "peak GOP/s on the compressed model (2 N M f)", 614.4,
      2.0 * perm.num_pe * perm.mults_per_pe * perm.frequency_mhz * 1e-3, 0.001, kPermDnnPaper);

  // Ratio ranges against EIE over the nine layers.
  const std::pair<const char*, double RatioRow::*> kinds[] = {{"throughput", &RatioRow::throughput},
                                                               {"area_eff", &RatioRow::area_efficiency},
                                                               {"energy_eff", &RatioRow::energy_efficiency}};
  const std::map<std::string, std::pair<double, double>> eie_ranges = {
      {"throughput", {3.3, 4.8}}, {"area_eff", {5.9, 8.5}}, {"energy_eff", {2.8, 4.0}}};
  for (const auto& [kind, field] : kinds) {
    const auto [lo, hi] = eie_ranges.at(kind);
    add(fmt::format("vs_eie.{}.min", kind), "PermDNN vs EIE", fmt::format("{}, lowest layer (x)", kind), lo,
        eie->min.*field, 0.15, kPermDnnPaper);
    add(fmt::format("vs_eie.{}.max", kind), "PermDNN vs EIE", fmt::format("{}, highest layer (x)", kind), hi,
        eie->max.*field, 0.15, kPermDnnPaper);
  }
  // Against CirCNN: one figure each; the model's geometric mean over the
  // nine layers stands for it.
  add("vs_circnn.throughput", "PermDNN vs CirCNN", "throughput, geomean of the nine layers (x)", 11.51,
      circnn->geomean.throughput, 0.25, kPermDnnPaper);
  add("vs_circnn.energy_eff", "PermDNN vs CirCNN", "energy_eff, geomean of the nine layers (x)", 3.89,
      circnn->geomean.energy_efficiency, 0.25, kPermDnnPaper);

  // EIE at its own node and clock: area, power of its 64 PEs (Table II has
  // no global broadcast), per-layer times.
  const double src = Number(run.resolved_config, "eie", "source_node_nm");
  const double nm = Number(run.resolved_config, "eie", "node_nm");
  const double f_pub = Number(run.resolved_config, "eie", "frequency_mhz");
  add("eie.area_mm2", "EIE chip", fmt::format("area (mm2) at {:.0f} nm", src), 40.8,
      eie6.area_mm2 * TechTable::AreaScale(nm, src), 0.10, kEiePaper);
  add("eie.power_mw", "EIE chip", fmt::format("power (mW) of the PEs at {:.0f} nm, {:.0f} MHz", src, f_pub), 590.0,
      MeanPowerMw(run, "eie", true) * TechTable::EnergyScale(nm, src) * f_pub / eie6.frequency_mhz, 0.15, kEiePaper);
  for (const auto& l : EieLayers()) {
    const LayerResult& r = *Find(run, "eie", l.name);
    add("eie.time_us." + l.name, "EIE per layer", fmt::format("{} time (us) at {:.0f} MHz", l.name, f_pub),
        EieLayerMicroseconds().at(l.name), static_cast<double>(r.cycles) / f_pub, 0.25, kEieTable4);
  }
  return rep;
}

std::string RenderValidation(const ValidationReport& rep) {
  std::string out = "Published figures the models are held to (error = model / published - 1):\n";
  out += fmt::format("{:<18} {:<44} {:>9} {:>9} {:>7} {:>5}  {}\n", "group", "figure", "published", "model", "error",
                     "tol", "status");
  std::string reasons;
  int k = 0;
  for (const auto& r : rep.rows) {
    std::string status;
    if (!r.gap())
      status = r.meets_target() ? "ok" : "FAIL: outside the tolerance";
    else {
      ++k;
      status = r.passes() ? fmt::format("documented gap [{}] ({:+.0f}% expected)", k, 100 * r.documented_error)
                          : fmt::format("FAIL: drifted from the documented {:+.0f}% [{}]", 100 * r.documented_error, k);
      if (r.meets_target()) status += ", now within the tolerance: update the documented value";
      reasons += fmt::format("  [{}] {}: {}\n", k, r.key, r.reason);
    }
    out += fmt::format("{:<18} {:<44} {:>9.4g} {:>9.4g} {:>+6.1f}% {:>4.0f}%  {}\n", r.group, r.what, r.published,
                       r.modeled, 100 * r.error(), 100 * r.tolerance, status);
  }
  int met = 0;
  for (const auto& r : rep.rows) met += r.meets_target();
  out += fmt::format("{} of {} figures within their tolerance; {} documented gap(s) (docs/simulator.md)\n", met,
                     rep.rows.size(), k);
  if (!reasons.empty()) out += "documented gaps:\n" + reasons;
  out += "sources: PermDNN figures " + std::string(kPermDnnPaper) + "; EIE chip " + kEiePaper + "; EIE per layer " +
         kEieTable4 + "\n";
  return out;
}

nlohmann::json ValidationToJson(const ValidationReport& rep) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : rep.rows)
    rows.push_back({{"key", r.key},
                    {"group", r.group},
                    {"what", r.what},
                    {"published", r.published},
                    {"modeled", r.modeled},
                    {"error", r.error()},
                    {"tolerance", r.tolerance},
                    {"meets_target", r.meets_target()},
                    {"documented_error", r.documented_error},
                    {"passes", r.passes()},
                    {"source", r.source},
                    {"reason", r.reason}});
  return {{"rows", rows}, {"passed", rep.Passed(false)}, {"passed_strict", rep.Passed(true)}};
}

// ---- Sensitivity ------------------------------------------------------------------

namespace {

// The quantities a technology entry can move (timing, hence the throughput
// ratios and EIE's per-layer times, does not depend on the table).
const std::vector<std::pair<std::string, std::string>>& SensitivityQuantities() {
  static const std::vector<std::pair<std::string, std::string>> q = {
      {"permdnn.power_mw", "PermDNN power"},          {"permdnn.area_mm2", "PermDNN area"},
      {"eie.power_mw", "EIE power"},                  {"vs_eie.area_eff.min", "vs EIE area eff min"},
      {"vs_eie.area_eff.max", "vs EIE area eff max"}, {"vs_eie.energy_eff.min", "vs EIE energy eff min"},
      {"vs_eie.energy_eff.max", "vs EIE energy eff max"}, {"vs_circnn.energy_eff", "vs CirCNN energy eff"}};
  return q;
}

std::vector<double> Measure(const ComparisonResult& run) {
  const ValidationReport rep = Validate(run);
  std::vector<double> v;
  for (const auto& quantity : SensitivityQuantities()) {
    // (not a structured binding: clang 14, the fuzz build, cannot capture one)
    const std::string& key = quantity.first;
    auto it = std::find_if(rep.rows.begin(), rep.rows.end(), [&](const ValidationRow& r) { return r.key == key; });
    v.push_back(it->modeled);
  }
  return v;
}

// The same run re-priced with `tech`: engines rebuilt from the same
// configuration, every record's action counts accounted again, ratios and
// chip checks recomputed.
ComparisonResult Reprice(const ComparisonResult& run, const nlohmann::json& config, const TechTable& tech) {
  std::vector<std::string> archs, layers;
  for (const auto& r : run.records) {
    if (std::find(archs.begin(), archs.end(), r.arch) == archs.end()) archs.push_back(r.arch);
    if (std::find(layers.begin(), layers.end(), r.layer) == layers.end()) layers.push_back(r.layer);
  }
  ComparisonResult out;
  out.records = run.records;
  for (auto& r : out.records) r.output.clear();
  out.compare_to_published = run.compare_to_published;
  auto engines = MakeEngines(archs, config, tech, &out.resolved_config);
  for (auto& r : out.records)
    for (const auto& e : engines)
      if (e->name() == r.arch) e->Account(r);
  FinishComparison(out, layers, engines, archs, tech);
  return out;
}

}  // namespace

SensitivityReport Sensitivity(const ComparisonResult& run, const nlohmann::json& config,
                              const SensitivityOptions& options) {
  PERMDNN_CHECK(options.step > 0 && options.step < 1, "sim --sensitivity: step {} is not in (0, 1)", options.step);
  const TechTable base = TechTable::Load(run.tech_path);
  SensitivityReport rep;
  rep.step = options.step;
  for (const auto& [key, label] : SensitivityQuantities()) rep.quantities.push_back(label);
  rep.base = Measure(Reprice(run, config, base));
  for (const char* group : {"energy_pj", "area_um2"}) {
    for (const auto& [name, entry] : base.json().at(group).items()) {
      SensitivityRow row;
      row.entry = fmt::format("{}.{}", group, name);
      for (double sign : {-1.0, 1.0}) {
        nlohmann::json table = base.json();
        table[group][name]["value"] = entry.at("value").get<double>() * (1.0 + sign * options.step);
        const std::vector<double> v = Measure(Reprice(run, config, TechTable::FromJson(table, row.entry)));
        std::vector<double>& dst = sign < 0 ? row.down : row.up;
        for (std::size_t i = 0; i < v.size(); ++i) dst.push_back(rep.base[i] != 0 ? v[i] / rep.base[i] - 1.0 : 0.0);
      }
      rep.rows.push_back(std::move(row));
    }
  }
  return rep;
}

std::string RenderSensitivity(const SensitivityReport& rep) {
  std::string out = fmt::format("| entry (−{0:.0f}% / +{0:.0f}%) |", 100 * rep.step);
  for (const auto& q : rep.quantities) out += " " + q + " |";
  out += "\n|---|";
  for (std::size_t i = 0; i < rep.quantities.size(); ++i) out += "---|";
  out += "\n| *value in the run* |";
  for (double b : rep.base) out += fmt::format(" {:.4g} |", b);
  out += "\n";
  for (const auto& r : rep.rows) {
    out += "| " + r.entry + " |";
    for (std::size_t i = 0; i < r.down.size(); ++i) {
      if (std::fabs(r.down[i]) < 0.0005 && std::fabs(r.up[i]) < 0.0005)
        out += " 0 |";
      else
        out += fmt::format(" {:+.1f} / {:+.1f} |", 100 * r.down[i], 100 * r.up[i]);
    }
    out += "\n";
  }
  return out;
}

}  // namespace permdnn::sim
