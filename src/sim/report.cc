// Comparison runs, tables, JSON and plots (see report.h).
#include "permdnn/sim/report.h"

#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/sim/engines.h"
#include "comparison.h"

namespace permdnn::sim {

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Published PermDNN-vs-X claims (DESIGN.md).
struct Published {
  double lo, hi;
};
const std::map<std::string, std::map<std::string, Published>>& PublishedRatios() {
  static const std::map<std::string, std::map<std::string, Published>> r = {
      {"eie", {{"throughput", {3.3, 4.8}}, {"area_efficiency", {5.9, 8.5}}, {"energy_efficiency", {2.8, 4.0}}}},
      {"circnn", {{"throughput", {11.51, 11.51}}, {"energy_efficiency", {3.89, 3.89}}}},
  };
  return r;
}

struct WorkloadParams {
  int64_t seed;
  int p;
  double weight_density, act_density;
};

const ParamTable<WorkloadParams>& WorkloadParamTable() {
  using P = WorkloadParams;
  static const auto t =
      ParamTable<P>()
          .Int("seed", &P::seed, -1, -1, 9.0e15, "seed of matrices and activations (-1: the --seed option)")
          .Int("p", &P::p, 0, 0, 1 << 16, "PermDNN/CirCNN block size; 0 = matched to each layer's density")
          .Real("weight_density", &P::weight_density, -1, -1e300, 1e300,
                "weight density of every layer (EIE's CSC, and PermDNN's matched p); -1 = the layer's own "
                "(published for the EIE layers, 1 for MxN shapes)")
          .Real("act_density", &P::act_density, -1, -1e300, 1e300,
                "activation density of every layer; -1 = the layer's own");
  return t;
}

}  // namespace

const std::vector<ParamDef>& WorkloadParamDefs() { return WorkloadParamTable().defs(); }

namespace {

WorkloadParams ParseWorkload(const nlohmann::json& config, ParamSpec* spec) {
  return WorkloadParamTable().Parse("workload", config.contains("workload") ? config["workload"] : nlohmann::json(),
                                    spec);
}

// Applies the [workload] density overrides to the layer list.
std::vector<FcLayerSpec> ApplyDensities(std::vector<FcLayerSpec> layers, const WorkloadParams& wl) {
  for (const auto& [key, v] : {std::pair{"weight_density", wl.weight_density}, {"act_density", wl.act_density}}) {
    if (v == -1) continue;
    PERMDNN_CHECK(v >= 0 && v <= 1, "config workload.{}: {} is not a density in [0, 1] (or -1 for each layer's own)",
                  key, v);
    for (auto& l : layers) (std::string(key) == "weight_density" ? l.weight_density : l.act_density) = v;
  }
  return layers;
}

void CheckSections(const nlohmann::json& config) {
  PERMDNN_CHECK(config.is_object(), "config: the top level must be a table of sections");
  for (auto it = config.begin(); it != config.end(); ++it) {
    if (it.key() == "workload") continue;
    bool known = false;
    for (const auto& e : Engines()) known = known || e.name == it.key();
    PERMDNN_CHECK(known, "config: unknown section '{}' (known: permdnn, eie, circnn, workload)", it.key());
  }
}

RatioRow Ratio(const LayerResult& perm, const LayerResult& other, double perm_pub_mw, double other_pub_mw,
               double perm_pub_mm2, double other_pub_mm2) {
  RatioRow row;
  row.layer = perm.layer;
  row.throughput = perm.frames_per_s / other.frames_per_s;
  row.area_efficiency = perm.frames_per_s_per_mm2 / other.frames_per_s_per_mm2;
  row.energy_efficiency = perm.frames_per_j / other.frames_per_j;
  if (perm_pub_mw > 0 && other_pub_mw > 0)
    row.energy_efficiency_published_power = (other_pub_mw * other.latency_us) / (perm_pub_mw * perm.latency_us);
  if (perm_pub_mm2 > 0 && other_pub_mm2 > 0)
    row.area_efficiency_published_area = row.throughput * other_pub_mm2 / perm_pub_mm2;
  return row;
}

void Summarize(RatioSummary& s) {
  if (s.rows.empty()) return;
  auto fields = [](RatioRow& r) {
    return std::vector<double*>{&r.throughput, &r.area_efficiency, &r.energy_efficiency,
                                &r.energy_efficiency_published_power, &r.area_efficiency_published_area};
  };
  s.min = s.rows[0];
  s.max = s.rows[0];
  s.min.layer = "min";
  s.max.layer = "max";
  s.geomean.layer = "geomean";
  auto gm = fields(s.geomean);
  for (double* g : gm) *g = 0;
  std::vector<bool> positive(gm.size(), true);
  for (auto& row : s.rows) {
    auto v = fields(row), lo = fields(s.min), hi = fields(s.max);
    for (std::size_t i = 0; i < v.size(); ++i) {
      *lo[i] = std::min(*lo[i], *v[i]);
      *hi[i] = std::max(*hi[i], *v[i]);
      positive[i] = positive[i] && *v[i] > 0;
      *gm[i] += std::log(std::max(*v[i], 1e-300)) / static_cast<double>(s.rows.size());
    }
  }
  // A ratio that is not defined for some layer (0) has no geomean either.
  for (std::size_t i = 0; i < gm.size(); ++i) *gm[i] = positive[i] ? std::exp(*gm[i]) : 0.0;
}

std::string Verdict(double ours, double published) {
  const double rel = ours / published - 1.0;
  return fmt::format("{:+.0f}% {}", 100 * rel, std::fabs(rel) <= 0.15 ? "within 15%" : "OUTSIDE 15%");
}

int RunShell(const std::string& command) {
  int rc = std::system(command.c_str());
  if (rc == -1) return -1;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

std::vector<std::unique_ptr<Engine>> MakeEngines(const std::vector<std::string>& archs, const nlohmann::json& config,
                                                 const TechTable& tech, nlohmann::json* resolved) {
  PERMDNN_CHECK(!archs.empty(), "sim: no architectures to simulate");
  CheckSections(config);
  std::vector<std::unique_ptr<Engine>> engines;
  for (const auto& a : archs) {
    for (const auto& e : engines) PERMDNN_CHECK(e->name() != a, "sim: architecture '{}' listed twice", a);
    engines.push_back(MakeEngine(a, config, tech));
    (*resolved)[a] = engines.back()->params().ToJson();
  }
  return engines;
}

ComparisonResult RunComparison(const ComparisonOptions& o) {
  PERMDNN_CHECK(!o.layers.empty(), "sim: no layers to simulate");
  ComparisonResult out;
  out.tech_path = o.tech_path.empty() ? TechTable::DefaultPath() : o.tech_path;
  const TechTable tech = TechTable::Load(out.tech_path);
  std::vector<std::unique_ptr<Engine>> engines = MakeEngines(o.archs, o.config, tech, &out.resolved_config);
  ParamSpec wl_spec;
  const WorkloadParams wl = ParseWorkload(o.config, &wl_spec);
  const std::vector<FcLayerSpec> layers = ApplyDensities(o.layers, wl);
  bool needs_csc = false, has_permdnn = false;
  for (const auto& e : engines) {
    needs_csc = needs_csc || e->needs_csc();
    has_permdnn = has_permdnn || e->name() == "permdnn";
  }
  out.resolved_config["workload"] = wl_spec.ToJson();
  WorkloadOptions wo;
  wo.seed = wl.seed >= 0 ? static_cast<uint64_t>(wl.seed) : o.seed;
  wo.p = wl.p;
  wo.build_csc = needs_csc;
  wo.functional = has_permdnn && o.check_functional;
  out.resolved_config["workload"]["seed"] = wo.seed;

  std::unique_ptr<TraceSink> trace;
  if (!o.trace_path.empty()) trace = std::make_unique<TraceSink>(o.trace_path);

  // Layers are independent (each has its own seed), so they run on all
  // hardware threads, pulling layer indices from a shared counter; results
  // land in layer order, so the output does not depend on the thread count.
  // A trace forces one thread so that its lines stay in cycle order.
  const int64_t L = static_cast<int64_t>(layers.size());
  std::vector<std::vector<LayerResult>> per_layer(static_cast<std::size_t>(L));
  std::vector<double> build_s(static_cast<std::size_t>(L)), sim_s(static_cast<std::size_t>(L));
  std::vector<int> checked(static_cast<std::size_t>(L), 0), mismatched(static_cast<std::size_t>(L), 0);
  // Largest layers first, so that the last layer to start is a small one.
  std::vector<int64_t> order(static_cast<std::size_t>(L));
  for (int64_t i = 0; i < L; ++i) order[i] = i;
  auto cost = [&](int64_t i) {
    return static_cast<double>(layers[i].inputs) * static_cast<double>(layers[i].outputs) * layers[i].weight_density;
  };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cost(a) > cost(b); });
  std::atomic<int64_t> next{0};
  const int threads = trace ? 1 : static_cast<int>(std::min<int64_t>(HardwareThreads(), L));
  const auto wall0 = Clock::now();
  ParallelFor(threads, threads, [&](int64_t, int64_t, int) {
    for (int64_t k = next++; k < L; k = next++) {
      const int64_t i = order[k];
      const auto t0 = Clock::now();
      LayerWorkload w = BuildWorkload(layers[i], wo);
      const auto t1 = Clock::now();
      for (const auto& e : engines) per_layer[i].push_back(e->Run(w, trace.get()));
      const auto t2 = Clock::now();
      build_s[i] = Seconds(t0, t1);
      sim_s[i] = Seconds(t1, t2);
      for (const auto& r : per_layer[i]) {
        if (r.arch != "permdnn" || r.output.empty() || !w.weights) continue;
        std::vector<int16_t> y(static_cast<std::size_t>(w.m()));
        kernels::PermDiagMatVecI16(*w.weights, w.x, {}, w.output_shift, y);
        checked[i] = 1;
        mismatched[i] = y != r.output ? 1 : 0;
      }
    }
  });
  out.wall_seconds = Seconds(wall0, Clock::now());
  out.threads = threads;
  for (int64_t i = 0; i < L; ++i) {
    for (auto& r : per_layer[i]) out.records.push_back(std::move(r));
    out.build_seconds += build_s[i];
    out.simulate_seconds += sim_s[i];
    out.functional_checks += checked[i];
    out.functional_mismatches += mismatched[i];
  }

  std::vector<std::string> names;
  for (const auto& l : layers) names.push_back(l.name);
  FinishComparison(out, names, engines, o.archs, tech);
  return out;
}

void FinishComparison(ComparisonResult& out, const std::vector<std::string>& layer_names,
                      const std::vector<std::unique_ptr<Engine>>& engines, const std::vector<std::string>& archs,
                      const TechTable& tech) {
  const bool has_permdnn = std::find(archs.begin(), archs.end(), "permdnn") != archs.end();
  // Ratios per layer.
  auto find = [&](const std::string& arch, const std::string& layer) -> const LayerResult* {
    for (const auto& r : out.records)
      if (r.arch == arch && r.layer == layer) return &r;
    return nullptr;
  };
  const double eie_nm = out.resolved_config.contains("eie") ? out.resolved_config["eie"]["node_nm"].get<double>() : 28;
  for (const std::string other : {"eie", "circnn"}) {
    if (!has_permdnn || std::find(archs.begin(), archs.end(), other) == archs.end()) continue;
    RatioSummary s;
    s.against = other;
    double perm_pub = tech.Published("permdnn", "power_mw");
    double other_pub = 0;
    const double perm_pub_mm2 = tech.Published("permdnn", "area_mm2");
    double other_pub_mm2 = 0;
    if (other == "eie") {
      // Published EIE power brought to the comparison node and clock: energy
      // per action × L_t/L_s, actions per second × f_eff/f_pub.
      const auto* any = find("eie", layer_names[0]);
      other_pub = tech.Published("eie", "power_mw") * TechTable::EnergyScale(tech.Published("eie", "node_nm"), eie_nm) *
                  any->frequency_mhz / tech.Published("eie", "frequency_mhz");
      // Published EIE area brought to the comparison node like the model's.
      other_pub_mm2 = tech.Published("eie", "area_mm2") * TechTable::AreaScale(tech.Published("eie", "node_nm"), eie_nm);
    }
    for (const auto& layer : layer_names) {
      const auto* a = find("permdnn", layer);
      const auto* b = find(other, layer);
      if (a && b) s.rows.push_back(Ratio(*a, *b, perm_pub, other_pub, perm_pub_mm2, other_pub_mm2));
    }
    Summarize(s);
    out.ratios.push_back(std::move(s));
  }

  // Modeled chips against the published ones: area, and power averaged over
  // the layers (total energy / total time).
  for (const auto& e : engines) {
    double energy = 0, network = 0, time = 0;
    for (const auto& r : out.records)
      if (r.arch == e->name()) {
        energy += r.energy_uj;
        network += r.energy.network * 1e-6;
        time += r.latency_us;
      }
    const double area = e->Area().total();
    const double power = time > 0 ? energy / time * 1e3 : 0;
    // EIE's published chip is 64 x its PE (Table II): no global broadcast.
    const double power_pes = time > 0 ? (energy - network) / time * 1e3 : 0;
    if (e->name() == "permdnn") {
      out.chip_checks.push_back({"permdnn", "area (mm2)", area, tech.Published("permdnn", "area_mm2"),
                                 "28 nm, as configured"});
      out.chip_checks.push_back({"permdnn", "power (mW), mean over layers", power,
                                 tech.Published("permdnn", "power_mw"), "28 nm, 1.2 GHz"});
    } else if (e->name() == "eie") {
      const auto* eie = dynamic_cast<const EieEngine*>(e.get());
      const double src = eie->p().source_node_nm, nm = eie->p().node_nm;
      const double area45 = area * TechTable::AreaScale(nm, src);
      const double power45 = power_pes * TechTable::EnergyScale(nm, src) * eie->p().frequency_mhz /
                             eie->p().effective_frequency_mhz();
      out.chip_checks.push_back({"eie", fmt::format("area (mm2) at {:.0f} nm", src), area45,
                                 tech.Published("eie", "area_mm2"), "area model built from EIE Table II"});
      out.chip_checks.push_back({"eie", fmt::format("power (mW) of the PEs at {:.0f} nm", src), power45,
                                 tech.Published("eie", "power_mw"),
                                 "mean over layers; per-action energies + EIE clock, no broadcast wires (Table II)"});
      out.chip_checks.push_back({"eie", fmt::format("area (mm2) at {:.0f} nm", nm), area,
                                 tech.Published("eie", "area_mm2") * TechTable::AreaScale(src, nm),
                                 "published scaled by (28/45)^2"});
    }
  }
  for (const auto& r : out.records)
    if (!r.weights_fit) {
      std::string note = r.capacity_note;
      while (!note.empty() && (note.back() == ' ' || note.back() == '.')) note.pop_back();
      out.notes.push_back(fmt::format("{} {}: {}; simulated as if resident (both papers assume on-chip weights)",
                                      r.arch, r.layer, note));
    }
  }

namespace {

// The ternary layers (records of the "adder" engine) against the MAC array
// and the PermDNN engine at equal weight bytes: energy per inference,
// cycles, area, the adder array's load balance, and the sum over the
// ternary layers.
std::string RenderAdderArraySummary(const ComparisonResult& res) {
  auto find = [&](const std::string& arch, const std::string& layer) -> const LayerResult* {
    for (const auto& r : res.records)
      if (r.arch == arch && r.layer == layer) return &r;
    return nullptr;
  };
  std::vector<const LayerResult*> adders;
  for (const auto& r : res.records)
    if (r.arch == "adder") adders.push_back(&r);
  if (adders.empty()) return "";
  std::string out =
      "\nAdder array (ternary) vs the same array with 16-bit MACs (mac16) and the PermDNN engine at equal weight "
      "bytes:\n";
  out += fmt::format("{:<8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>9} {:>11}\n", "layer",
                     "E_adder", "E_mac16", "E_permdnn", "cyc_add", "cyc_mac", "cyc_perm", "mac/add", "perm/add",
                     "imbal", "idle_cyc", "groups");
  double e[3] = {0, 0, 0};
  int64_t c[3] = {0, 0, 0};
  bool all[3] = {true, true, true};
  for (const LayerResult* a : adders) {
    const LayerResult* m = find("mac16", a->layer);
    const LayerResult* p = find("permdnn", a->layer);
    const LayerResult* rs[3] = {a, m, p};
    for (int i = 0; i < 3; ++i) {
      if (rs[i]) {
        e[i] += rs[i]->energy_uj;
        c[i] += rs[i]->cycles;
      } else {
        all[i] = false;
      }
    }
    auto uj = [](const LayerResult* r) { return r ? fmt::format("{:.3f}", r->energy_uj) : std::string("-"); };
    auto cyc = [](const LayerResult* r) { return r ? fmt::format("{}", r->cycles) : std::string("-"); };
    auto ratio = [&](const LayerResult* r) {
      return r && a->energy_uj > 0 ? fmt::format("{:.2f}x", r->energy_uj / a->energy_uj) : std::string("-");
    };
    out += fmt::format("{:<8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6.2f} {:>9} {:>11}\n", a->layer,
                       uj(a), uj(m), uj(p), cyc(a), cyc(m), cyc(p), ratio(m), ratio(p), a->load_imbalance,
                       a->counters.count("idle_pe_cycles") ? a->counters.at("idle_pe_cycles") : 0,
                       fmt::format("{}/{}", a->counters.count("groups_streamed") ? a->counters.at("groups_streamed") : 0,
                                   a->counters.count("groups_total") ? a->counters.at("groups_total") : 0));
  }
  auto total = [&](int i) { return all[i] ? fmt::format("{:.3f}", e[i]) : std::string("-"); };
  auto total_c = [&](int i) { return all[i] ? fmt::format("{}", c[i]) : std::string("-"); };
  auto total_r = [&](int i) { return all[i] && e[0] > 0 ? fmt::format("{:.2f}x", e[i] / e[0]) : std::string("-"); };
  out += fmt::format("{:<8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7}\n", "total", total(0), total(1), total(2),
                     total_c(0), total_c(1), total_c(2), total_r(1), total_r(2));
  out += "E in uJ per inference (the ternary layers only), cycles per inference; imbal = busiest PE / mean PE busy "
         "cycles, idle_cyc = PE cycles spent waiting for the busiest PE; groups = streamed / all\n";
  std::string areas;
  for (const char* arch : {"adder", "mac16", "permdnn"})
    if (const LayerResult* r = find(arch, adders.front()->layer))
      areas += fmt::format("{}{} {:.2f} mm2", areas.empty() ? "" : ", ", arch, r->area_mm2);
  out += "area: " + areas + "\n";
  return out;
}

// Recurrent nodes: their products summed per time step and over the
// sequence, per engine (one step = W x_t and R h_(t-1) of every direction,
// run one after the other on the engine).
std::string RenderRecurrentSummary(const ComparisonResult& res) {
  if (res.recurrent.empty()) return "";
  std::string out =
      "\nRecurrent layers: per time step (W x_t + R h_(t-1) of every direction, one after the other) and the whole "
      "sequence; gate nonlinearities, element-wise products and biases are not simulated:\n";
  out += fmt::format("{:<10} {:<8} {:>5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>6} {:>6}\n", "node", "arch",
                     "steps", "cyc/step", "us/step", "uJ/step", "cyc/seq", "us/seq", "uJ/seq", "act_x", "act_h");
  std::vector<std::string> archs;
  for (const auto& r : res.records)
    if (std::find(archs.begin(), archs.end(), r.arch) == archs.end()) archs.push_back(r.arch);
  for (const auto& g : res.recurrent)
    for (const auto& arch : archs) {
      double cycles = 0, us = 0, uj = 0, act_x = 0, act_h = 0;
      int nx = 0, nh = 0, found = 0;
      for (const auto& r : res.records) {
        if (r.arch != arch || std::find(g.layers.begin(), g.layers.end(), r.layer) == g.layers.end()) continue;
        ++found;
        cycles += static_cast<double>(r.cycles);
        us += r.latency_us;
        uj += r.energy_uj;
        const bool is_r = r.layer.find(".R") != std::string::npos;
        (is_r ? act_h : act_x) += r.act_density;
        ++(is_r ? nh : nx);
      }
      if (found == 0) continue;
      const double T = static_cast<double>(g.steps);
      out += fmt::format("{:<10} {:<8} {:>5} {:>9.0f} {:>9.3f} {:>9.4f} {:>10.0f} {:>10.2f} {:>10.3f} {:>6.3f} {:>6.3f}\n",
                         g.node, arch, g.steps, cycles / T, us / T, uj / T, cycles, us, uj, nx ? act_x / nx : 0.0,
                         nh ? act_h / nh : 0.0);
    }
  out += "act_x / act_h: measured density of the int16 x_t / h_(t-1) vectors (nonzeros after quantization; h_(-1) = 0 "
         "counts as one all-zero step)\n";
  return out;
}

}  // namespace

std::string RenderComparison(const ComparisonResult& res) {
  std::string out;
  bool any_source = false;
  for (const auto& r : res.records) any_source = any_source || !r.source.empty();
  if (any_source) {
    out += fmt::format("Model layers: the matrix each engine ran; numbers are means over {} input sample(s), "
                       "act = measured activation density\n",
                       res.samples);
    out += fmt::format("{:<8} {:<8} {:>11} {:>7} {:>6}  {}\n", "layer", "arch", "m x n", "w_dens", "act", "source");
    for (const auto& r : res.records)
      out += fmt::format("{:<8} {:<8} {:>11} {:>7.4f} {:>6.3f}  {}\n", r.layer, r.arch,
                         fmt::format("{}x{}", r.m, r.n), r.weight_density, r.act_density, r.source);
    out += "\n";
  }
  out += fmt::format("{:<8} {:<8} {:>3} {:>8} {:>8} {:>8} {:>9} {:>5} {:>6} {:>8} {:>7} {:>6} {:>9} {:>9}\n", "layer",
                     "arch", "p", "cycles", "lat_us", "GOP/s", "dense_GOP", "util", "imbal", "E_uJ", "P_mW", "mm2",
                     "fps/mm2", "frames/J");
  for (const auto& r : res.records)
    out += fmt::format("{:<8} {:<8} {:>3} {:>8} {:>8.2f} {:>8.1f} {:>9.0f} {:>4.0f}% {:>6.2f} {:>8.3f} {:>7.1f} {:>6.2f} "
                       "{:>9.0f} {:>9.0f}\n",
                       r.layer, r.arch, r.p == 0 ? std::string("-") : std::to_string(r.p), r.cycles, r.latency_us,
                       r.throughput_gops, r.dense_equiv_gops, 100 * r.pe_utilization, r.load_imbalance, r.energy_uj,
                       r.power_mw, r.area_mm2, r.frames_per_s_per_mm2, r.frames_per_j);
  out += "\nEnergy breakdown (% of energy per inference):\n";
  out += fmt::format("{:<8} {:<8} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}\n", "layer", "arch", "mac", "weights",
                     "index", "act", "accum", "net", "clock");
  for (const auto& r : res.records) {
    const double t = r.energy.total() > 0 ? r.energy.total() / 100 : 1;
    out += fmt::format("{:<8} {:<8} {:>6.1f} {:>7.1f} {:>6.1f} {:>6.1f} {:>6.1f} {:>6.1f} {:>6.1f}\n", r.layer, r.arch,
                       r.energy.mac / t, r.energy.weight_mem / t, r.energy.index_mem / t, r.energy.act_mem / t,
                       r.energy.accumulate / t, r.energy.network / t, r.energy.clock / t);
  }
  for (const auto& s : res.ratios) {
    out += fmt::format("\nPermDNN vs {} (ratios of frames/s, frames/s/mm2, frames/J):\n",
                       s.against == "eie" ? "EIE" : "CirCNN");
    out += fmt::format("{:<8} {:>10} {:>9} {:>9} {:>16} {:>15}\n", "layer", "throughput", "area_eff", "energy_eff",
                       "energy_eff(pub P)", "area_eff(pub A)");
    auto line = [&](const RatioRow& r) {
      auto opt = [](double v) { return v > 0 ? fmt::format("{:.2f}x", v) : std::string("-"); };
      return fmt::format("{:<8} {:>9.2f}x {:>8.2f}x {:>8.2f}x {:>16} {:>15}\n", r.layer, r.throughput,
                         r.area_efficiency, r.energy_efficiency, opt(r.energy_efficiency_published_power),
                         opt(r.area_efficiency_published_area));
    };
    for (const auto& r : s.rows) out += line(r);
    out += line(s.min) + line(s.max) + line(s.geomean);
    if (!res.compare_to_published) continue;
    const auto& pub = PublishedRatios().at(s.against);
    out += "published:";
    for (const auto& [what, range] : pub) {
      const double lo = what == "throughput" ? s.min.throughput
                        : what == "area_efficiency" ? s.min.area_efficiency
                                                    : s.min.energy_efficiency;
      const double hi = what == "throughput" ? s.max.throughput
                        : what == "area_efficiency" ? s.max.area_efficiency
                                                    : s.max.energy_efficiency;
      if (range.lo == range.hi)
        out += fmt::format("\n  {:<17} {:.2f}x   ours (geomean) {:.2f}x", what, range.lo,
                           what == "throughput" ? s.geomean.throughput : s.geomean.energy_efficiency);
      else
        out += fmt::format("\n  {:<17} {:.1f}-{:.1f}x  ours {:.2f}-{:.2f}x  (min {}, max {})", what, range.lo,
                           range.hi, lo, hi, Verdict(lo, range.lo), Verdict(hi, range.hi));
    }
    if (s.against == "eie")
      out += fmt::format("\n  {:<17} 2.8-4.0x  ours {:.2f}-{:.2f}x with the published chip powers (min {}, max {})",
                         "energy_eff(pub P)", s.min.energy_efficiency_published_power,
                         s.max.energy_efficiency_published_power,
                         Verdict(s.min.energy_efficiency_published_power, 2.8),
                         Verdict(s.max.energy_efficiency_published_power, 4.0));
    if (s.against == "eie")
      out += fmt::format("\n  {:<17} 5.9-8.5x  ours {:.2f}-{:.2f}x with the published chip areas (min {}, max {})",
                         "area_eff(pub A)", s.min.area_efficiency_published_area,
                         s.max.area_efficiency_published_area, Verdict(s.min.area_efficiency_published_area, 5.9),
                         Verdict(s.max.area_efficiency_published_area, 8.5));
    out += "\n";
  }
  out += RenderAdderArraySummary(res);
  out += RenderRecurrentSummary(res);
  if (!res.chip_checks.empty()) {
    out += "\nModeled engines against the published chips:\n";
    for (const auto& c : res.chip_checks)
      out += fmt::format("  {:<8} {:<38} model {:>8.2f}  published {:>8.2f}  ({:+.0f}%; {})\n", c.arch, c.what,
                         c.modeled, c.published, 100 * (c.modeled / c.published - 1), c.note);
  }
  if (res.functional_checks > 0)
    out += fmt::format("\nFunctional: PermDNN engine int16 output {} kernels::PermDiagMatVecI16 on {}/{} layers\n",
                       res.functional_mismatches == 0 ? "==" : "!=", res.functional_checks - res.functional_mismatches,
                       res.functional_checks);
  for (const auto& n : res.notes) out += "note: " + n + "\n";
  out += fmt::format("tech table: {}\nworkloads {:.3f} s + simulation {:.3f} s of CPU time; {:.3f} s wall on {} "
                     "thread(s)\n",
                     res.tech_path, res.build_seconds, res.simulate_seconds, res.wall_seconds, res.threads);
  return out;
}

nlohmann::json ComparisonToJson(const ComparisonResult& res) {
  nlohmann::json j;
  j["command"] = "sim";
  j["tech_table"] = res.tech_path;
  j["config"] = res.resolved_config;
  j["records"] = nlohmann::json::array();
  for (const auto& r : res.records) j["records"].push_back(r.ToJson());
  for (const auto& g : res.recurrent)
    j["recurrent"].push_back({{"node", g.node}, {"cell", g.cell}, {"steps", g.steps}, {"layers", g.layers}});
  j["ratios"] = nlohmann::json::array();
  for (const auto& s : res.ratios) {
    nlohmann::json rows = nlohmann::json::array();
    auto row = [](const RatioRow& r) {
      return nlohmann::json{{"layer", r.layer},
                            {"throughput", r.throughput},
                            {"area_efficiency", r.area_efficiency},
                            {"energy_efficiency", r.energy_efficiency},
                            {"energy_efficiency_published_power", r.energy_efficiency_published_power},
                            {"area_efficiency_published_area", r.area_efficiency_published_area}};
    };
    for (const auto& r : s.rows) rows.push_back(row(r));
    nlohmann::json pub;
    for (const auto& [what, range] : PublishedRatios().at(s.against)) pub[what] = {range.lo, range.hi};
    j["ratios"].push_back({{"against", s.against}, {"layers", rows}, {"min", row(s.min)}, {"max", row(s.max)},
                           {"geomean", row(s.geomean)}, {"published", pub}});
  }
  j["chip_checks"] = nlohmann::json::array();
  for (const auto& c : res.chip_checks)
    j["chip_checks"].push_back({{"arch", c.arch}, {"what", c.what}, {"modeled", c.modeled}, {"published", c.published}});
  j["notes"] = res.notes;
  j["functional"] = {{"checked_layers", res.functional_checks}, {"mismatches", res.functional_mismatches}};
  j["seconds"] = {{"build_cpu", res.build_seconds}, {"simulate_cpu", res.simulate_seconds},
                  {"wall", res.wall_seconds}, {"threads", res.threads}};
  return j;
}

std::vector<std::string> WriteComparisonPlots(const ComparisonResult& res, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  PERMDNN_CHECK(!ec, "--plot {}: cannot create the directory: {}", dir, ec.message());
  std::vector<std::string> svgs;
  for (const auto& s : res.ratios) {
    const std::string base = dir + "/permdnn_vs_" + s.against;
    std::string dat = "# layer throughput area_efficiency energy_efficiency\n";
    for (const auto& r : s.rows)
      // Quoted: model layer names may hold spaces or slashes ("/fc1/Gemm").
      dat += fmt::format("\"{}\" {:.4f} {:.4f} {:.4f}\n", r.layer, r.throughput, r.area_efficiency, r.energy_efficiency);
    WriteFileAtomic(base + ".dat", dat);
    const std::string title = s.against == "eie" ? "PermDNN vs EIE (published: 3.3-4.8x, 5.9-8.5x, 2.8-4.0x)"
                                                 : "PermDNN vs CirCNN (published: 11.51x throughput, 3.89x energy)";
    std::string gp = fmt::format(
        "set terminal svg size 900,480 dynamic font 'sans,11'\n"
        "set output '{0}.svg'\n"
        "set title \"{1}\"\n"
        "set ylabel 'ratio (x)'\n"
        "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
        "set boxwidth 0.9\nset grid ytics\nset key top left\nset yrange [0:*]\nset xtics rotate by -30\n"
        "plot '{0}.dat' using 2:xtic(1) title 'throughput', '' using 3 title 'area efficiency', "
        "'' using 4 title 'energy efficiency'\n",
        base, title);
    WriteFileAtomic(base + ".gp", gp);
    const int rc = RunShell(fmt::format("gnuplot '{}.gp' 2>/dev/null", base));
    PERMDNN_CHECK(rc == 0, "--plot: gnuplot failed on {}.gp (exit {}); is gnuplot installed (gnuplot-nox)?", base, rc);
    svgs.push_back(base + ".svg");
  }
  return svgs;
}

// ---- Sweep --------------------------------------------------------------------

std::vector<SweepPoint> RunSweep(const SweepOptions& o) {
  PERMDNN_CHECK(!o.layers.empty(), "sim sweep: no layers");
  for (int v : o.num_pe) PERMDNN_CHECK(v >= 1, "sim sweep: PEs must be >= 1, got {}", v);
  for (int v : o.mults_per_pe) PERMDNN_CHECK(v >= 1, "sim sweep: multipliers per PE must be >= 1, got {}", v);
  for (int v : o.ps) PERMDNN_CHECK(v >= 0, "sim sweep: p must be >= 1 (or 0 = matched), got {}", v);
  for (int v : o.bits) PERMDNN_CHECK(v >= 2 && v <= 32, "sim sweep: bits must be in [2, 32], got {}", v);
  CheckSections(o.config);
  const TechTable tech = TechTable::Load(o.tech_path.empty() ? TechTable::DefaultPath() : o.tech_path);
  const WorkloadParams wl = ParseWorkload(o.config, nullptr);
  PERMDNN_CHECK(wl.p == 0, "sim sweep: set block sizes with --p, not workload.p");
  const std::vector<FcLayerSpec> layers = ApplyDensities(o.layers, wl);
  const uint64_t seed = wl.seed >= 0 ? static_cast<uint64_t>(wl.seed) : o.seed;
  std::vector<SweepPoint> points;
  for (int p : o.ps) {
    std::vector<LayerWorkload> workloads;
    WorkloadOptions wo;
    wo.seed = seed;
    wo.p = p;
    wo.functional = false;
    wo.build_csc = false;
    for (const auto& spec : layers) workloads.push_back(BuildWorkload(spec, wo));
    for (int bits : o.bits)
      for (int N : o.num_pe)
        for (int M : o.mults_per_pe) {
          nlohmann::json cfg = o.config;
          cfg.erase("workload");
          cfg["permdnn"]["num_pe"] = N;
          cfg["permdnn"]["mults_per_pe"] = M;
          cfg["permdnn"]["bits"] = bits;
          auto engine = MakeEngine("permdnn", cfg, tech);
          SweepPoint pt{N, M, p, bits};
          for (const auto& w : workloads) {
            LayerResult r = engine->Run(w, nullptr);
            pt.latency_us += r.latency_us;
            pt.energy_uj += r.energy_uj;
          }
          pt.area_mm2 = engine->Area().total();
          pt.frames_per_s_per_mm2 = 1e6 / pt.latency_us / pt.area_mm2;
          points.push_back(pt);
        }
  }
  for (auto& a : points) {
    a.pareto = true;
    for (const auto& b : points) {
      const bool no_worse = b.frames_per_s_per_mm2 >= a.frames_per_s_per_mm2 && b.energy_uj <= a.energy_uj;
      const bool better = b.frames_per_s_per_mm2 > a.frames_per_s_per_mm2 || b.energy_uj < a.energy_uj;
      if (no_worse && better) {
        a.pareto = false;
        break;
      }
    }
  }
  return points;
}

std::string SweepCsv(const std::vector<SweepPoint>& points) {
  std::string out = "num_pe,mults_per_pe,p,bits,latency_us,energy_uj,area_mm2,frames_per_s_per_mm2,pareto\n";
  for (const auto& p : points)
    out += fmt::format("{},{},{},{},{:.4f},{:.4f},{:.4f},{:.2f},{}\n", p.num_pe, p.mults_per_pe,
                       p.p == 0 ? std::string("matched") : std::to_string(p.p), p.bits, p.latency_us, p.energy_uj,
                       p.area_mm2, p.frames_per_s_per_mm2, p.pareto ? 1 : 0);
  return out;
}

std::string RenderSweep(const std::vector<SweepPoint>& points) {
  std::vector<SweepPoint> front;
  for (const auto& p : points)
    if (p.pareto) front.push_back(p);
  std::sort(front.begin(), front.end(), [](const auto& a, const auto& b) { return a.energy_uj < b.energy_uj; });
  std::string out = fmt::format("{} design points, {} on the Pareto front (frames/s/mm2 up, uJ/inference down):\n",
                                points.size(), front.size());
  out += fmt::format("{:>5} {:>5} {:>8} {:>4} {:>10} {:>10} {:>8} {:>10}\n", "PEs", "mults", "p", "bits", "lat_us",
                     "E_uJ", "mm2", "fps/mm2");
  for (const auto& p : front)
    out += fmt::format("{:>5} {:>5} {:>8} {:>4} {:>10.2f} {:>10.3f} {:>8.2f} {:>10.0f}\n", p.num_pe, p.mults_per_pe,
                       p.p == 0 ? std::string("matched") : std::to_string(p.p), p.bits, p.latency_us, p.energy_uj,
                       p.area_mm2, p.frames_per_s_per_mm2);
  return out;
}

std::vector<std::string> WriteSweep(const std::vector<SweepPoint>& points, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  PERMDNN_CHECK(!ec, "sim sweep --out {}: cannot create the directory: {}", dir, ec.message());
  const std::string csv = dir + "/sweep.csv", base = dir + "/pareto";
  WriteFileAtomic(csv, SweepCsv(points));
  std::string all, front;
  std::vector<SweepPoint> sorted = points;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.energy_uj < b.energy_uj; });
  for (const auto& p : sorted) {
    std::string line = fmt::format("{:.4f} {:.2f}\n", p.energy_uj, p.frames_per_s_per_mm2);
    all += line;
    if (p.pareto) front += line;
  }
  WriteFileAtomic(base + "_all.dat", all);
  WriteFileAtomic(base + "_front.dat", front);
  WriteFileAtomic(base + ".gp",
                  fmt::format("set terminal svg size 800,520 dynamic font 'sans,11'\nset output '{0}.svg'\n"
                              "set title 'PermDNN design space: throughput/area vs energy per inference'\n"
                              "set xlabel 'energy per inference, all layers (uJ)'\nset ylabel 'frames/s/mm2'\n"
                              "set logscale xy\nset grid\nset key bottom right\n"
                              "plot '{0}_all.dat' using 1:2 with points pt 7 ps 0.6 title 'design points', "
                              "'{0}_front.dat' using 1:2 with linespoints lw 2 pt 5 title 'Pareto front'\n",
                              base));
  const int rc = RunShell(fmt::format("gnuplot '{}.gp' 2>/dev/null", base));
  PERMDNN_CHECK(rc == 0, "sim sweep: gnuplot failed on {}.gp (exit {}); is gnuplot installed (gnuplot-nox)?", base, rc);
  return {csv, base + ".svg"};
}

}  // namespace permdnn::sim
