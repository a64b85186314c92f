// The break-even density engine and `permdnn break-even`. See break_even.h.
#include "cli/break_even.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/args.h"
#include "cli/bench_runner.h"
#include "cli/commands.h"
#include "permdnn/core/aligned_buffer.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/core/progress.h"
#include "permdnn/core/timing.h"
#include "permdnn/core/workloads.h"
#include "permdnn/formats/sparse_matrix.h"
#include "permdnn/kernels/sparse.h"
#include "permdnn/kernels/table.h"
#include "permdnn/sim/engine.h"
#include "permdnn/sim/tech.h"
#include "permdnn/sim/workload.h"

extern "C" void openblas_set_num_threads(int);

namespace permdnn::cli {

namespace {

void CheckLayer(const train::BreakEvenQuery& q, const BreakEvenOptions& o) {
  PERMDNN_CHECK(q.rows >= 1 && q.cols >= 1 && q.columns >= 1,
                "break-even: layer '{}' has shape {}x{} over {} columns (all must be >= 1)", q.layer, q.rows, q.cols,
                q.columns);
  PERMDNN_CHECK(!o.densities.empty(), "break-even: no densities to measure");
  for (double d : o.densities)
    PERMDNN_CHECK(std::isfinite(d) && d > 0 && d <= 1, "break-even: density {} is outside (0, 1]", d);
  PERMDNN_CHECK(std::isfinite(o.act_density) && o.act_density > 0 && o.act_density <= 1,
                "break-even: --act-density {} is outside (0, 1]", o.act_density);
  PERMDNN_CHECK(o.rounds >= 1, "break-even: --rounds must be >= 1, got {}", o.rounds);
  PERMDNN_CHECK(std::isfinite(o.min_time_s) && o.min_time_s >= 0, "break-even: --min-time must be >= 0, got {}",
                o.min_time_s);
}

std::vector<double> SortedDensities(const BreakEvenOptions& o) {
  std::vector<double> d = o.densities;
  std::sort(d.begin(), d.end());
  d.erase(std::unique(d.begin(), d.end()), d.end());
  return d;
}

// CPU: permdnn's CSR kernels against OpenBLAS on one thread, process CPU
// time. Every round times the dense product and each density once; a point
// is the median of its round medians (a burst of load hits one round of
// every density, not all rounds of one).
BreakEvenCurve MeasureCpu(const train::BreakEvenQuery& q, const BreakEvenOptions& o) {
  BreakEvenCurve c;
  c.platform = "cpu";
  c.layer = q;
  c.unit = "ms";
  const int64_t m = q.rows, n = q.cols, b = q.columns;
  const bool vec = b == 1;
  c.sparse_name = "permdnn " + kernels::SelectedKernel({vec ? kernels::KernelOp::kCsrMatVec : kernels::KernelOp::kCsrMatMul,
                                                        1, m, n, b, false});
  c.dense_name = vec ? "OpenBLAS sgemv" : "OpenBLAS sgemm";
  openblas_set_num_threads(1);
  AlignedBuffer<float> w(static_cast<std::size_t>(m * n)), x(static_cast<std::size_t>(n * b)),
      y(static_cast<std::size_t>(m * b));
  FillNormal(w.span(), o.seed);
  FillNormal(x.span(), o.seed + 1);
  const std::vector<double> densities = SortedDensities(o);
  std::vector<CsrMatrix> sparse;
  for (std::size_t k = 0; k < densities.size(); ++k)
    sparse.push_back(CsrMatrix::Random(m, n, densities[k], o.seed + 10 + k));
  const TimingOptions to{.warmup = 1, .min_reps = 3, .min_time_s = o.min_time_s, .max_reps = 2000, .cpu_time = true};
  auto dense_run = [&] {
    if (vec)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(m), static_cast<int>(n), 1.0f, w.data(),
                  static_cast<int>(n), x.data(), 1, 0.0f, y.data(), 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(b),
                  static_cast<int>(n), 1.0f, w.data(), static_cast<int>(n), x.data(), static_cast<int>(b), 0.0f,
                  y.data(), static_cast<int>(b));
  };
  std::vector<double> dense_rounds;
  std::vector<std::vector<double>> sparse_rounds(densities.size());
  Progress progress(o.rounds * static_cast<int64_t>(densities.size() + 1), "points");
  for (int r = 0; r < o.rounds; ++r) {
    dense_rounds.push_back(TimeRuns(dense_run, to).median_ms);
    for (std::size_t k = 0; k < densities.size(); ++k) {
      const CsrMatrix& a = sparse[k];
      sparse_rounds[k].push_back(TimeRuns(
                                     [&] {
                                       if (vec)
                                         kernels::CsrMatVec(a, x.span(), {}, y.span(), 1);
                                       else
                                         kernels::CsrMatMul(a, x.span(), b, {}, y.span(), 1);
                                     },
                                     to)
                                     .median_ms);
      progress.Update(r * static_cast<int64_t>(densities.size() + 1) + static_cast<int64_t>(k) + 2,
                      fmt::format("{} {}x{} at {:.4g}", q.layer, m, n, densities[k]));
    }
  }
  progress.Finish();
  const double dense = MedianOf(dense_rounds);
  for (std::size_t k = 0; k < densities.size(); ++k) {
    const CsrMatrix& a = sparse[k];
    c.points.push_back({densities[k], MedianOf(sparse_rounds[k]), dense, a.bytes(), m * n * 4});
  }
  return c;
}

// EIE against its dense twin (break_even.h), cycles and energy of one
// inference (a conv's columns run one after another: both scale alike).
std::vector<BreakEvenCurve> SimulateEie(const train::BreakEvenQuery& q, const BreakEvenOptions& o) {
  const sim::TechTable tech = sim::TechTable::Load(o.tech_path.empty() ? sim::TechTable::DefaultPath() : o.tech_path);
  const auto eie = sim::MakeEngine("eie", o.sim_config, tech);
  const sim::ParamSpec& ep = eie->params();
  const std::vector<double> densities = SortedDensities(o);
  std::vector<sim::LayerResult> sparse;
  for (std::size_t k = 0; k < densities.size(); ++k) {
    const FcLayerSpec spec{q.layer, q.cols, q.rows, densities[k], o.act_density};
    sim::WorkloadOptions wo;
    wo.seed = o.seed + k;
    // (the permdiag offsets the builder always makes: any valid p)
    wo.p = static_cast<int>(std::min<int64_t>(sim::MatchBlockSize(densities[k]), std::min(q.rows, q.cols)));
    wo.functional = false;
    wo.build_csc = true;
    sparse.push_back(eie->Run(sim::BuildWorkload(spec, wo), nullptr));
  }
  // The dense twin: EIE's datapath and memories, no indices (PermDNN at
  // p = 1 is a dense matrix whose only "offset" is 0).
  nlohmann::json cfg = o.sim_config.is_object() ? o.sim_config : nlohmann::json::object();
  const sim::LayerResult& e0 = sparse.front();
  cfg["permdnn"] = {{"num_pe", ep.Int("num_pe")},
                    {"mults_per_pe", 1},
                    {"broadcast_width", 1},
                    {"bits", ep.Int("bits")},
                    {"frequency_mhz", e0.frequency_mhz},
                    {"node_nm", e0.node_nm},
                    {"queue_depth", ep.Int("queue_depth")},
                    {"pipeline_depth", ep.Int("pipeline_depth")},
                    {"weight_sram_kb", ep.Number("spmat_sram_kb")}};
  const auto twin = sim::MakeEngine("permdnn", cfg, tech);
  sim::WorkloadOptions wo;
  wo.seed = o.seed;
  wo.p = 1;
  wo.functional = false;
  wo.build_csc = false;
  const sim::LayerResult dense =
      twin->Run(sim::BuildWorkload(FcLayerSpec{q.layer, q.cols, q.rows, 1.0, o.act_density}, wo), nullptr);
  std::vector<BreakEvenCurve> out(2);
  for (int k = 0; k < 2; ++k) {
    BreakEvenCurve& c = out[k];
    c.platform = k == 0 ? "eie-cycles" : "eie-energy";
    c.layer = q;
    c.unit = k == 0 ? "cycles" : "uJ";
    c.sparse_name = fmt::format("EIE ({} PEs, {:.0f} MHz, {:.0f} nm)", ep.Int("num_pe"), e0.frequency_mhz, e0.node_nm);
    c.dense_name = "dense twin (PermDNN engine p=1, EIE's multipliers)";
    const double cols = static_cast<double>(q.columns);
    for (std::size_t d = 0; d < densities.size(); ++d) {
      const sim::LayerResult& s = sparse[d];
      c.points.push_back({densities[d], (k == 0 ? static_cast<double>(s.cycles) : s.energy_uj) * cols,
                          (k == 0 ? static_cast<double>(dense.cycles) : dense.energy_uj) * cols, s.weight_bytes,
                          dense.weight_bytes});
    }
  }
  return out;
}

std::string Fraction(double d) {
  const double inv = 1.0 / d;
  if (std::abs(inv - std::round(inv)) < 1e-9 && inv >= 2) return fmt::format("1/{:.0f}", inv);
  return fmt::format("{:.4g}", d);
}

std::string BreakEvenText(const BreakEvenCurve& c) {
  if (c.bound == "<") return fmt::format("< {:.4g} (sparse loses at every density measured)", c.break_even);
  if (c.bound == ">=") return fmt::format(">= {:.4g} (sparse wins at every density measured)", c.break_even);
  return fmt::format("{:.4g}", c.break_even);
}

std::string ShapeText(const train::BreakEvenQuery& q) {
  return q.columns > 1 ? fmt::format("{}x{} over {} columns", q.rows, q.cols, q.columns)
                       : fmt::format("{}x{}", q.rows, q.cols);
}

// "fc1 500x800", or the shape alone when it is the layer's name.
std::string LayerText(const train::BreakEvenQuery& q) {
  return q.layer == fmt::format("{}x{}", q.rows, q.cols) || q.layer.empty() ? ShapeText(q)
                                                                             : q.layer + " " + ShapeText(q);
}

}  // namespace

const std::vector<std::string>& BreakEvenPlatforms() {
  static const std::vector<std::string> p = {"cpu", "eie-cycles", "eie-energy"};
  return p;
}

void FindBreakEven(BreakEvenCurve& c) {
  PERMDNN_CHECK(!c.points.empty(), "break-even: no points for layer '{}'", c.layer.layer);
  auto ratio = [](const BreakEvenPoint& p) { return p.dense > 0 ? p.sparse / p.dense : HUGE_VAL; };
  std::size_t k = 0;
  while (k < c.points.size() && ratio(c.points[k]) < 1) ++k;
  c.bound.clear();
  if (k == 0) {
    c.bound = "<";
    c.break_even = c.points.front().density;
  } else if (k == c.points.size()) {
    c.bound = ">=";
    c.break_even = c.points.back().density;
  } else {
    const BreakEvenPoint &lo = c.points[k - 1], &hi = c.points[k];
    const double rl = ratio(lo), rh = ratio(hi);
    const double t = rh > rl ? (1 - rl) / (rh - rl) : 0.5;
    c.break_even = std::exp(std::log(lo.density) + t * (std::log(hi.density) - std::log(lo.density)));
  }
}

BreakEvenCurve MeasureBreakEven(const std::string& platform, const train::BreakEvenQuery& layer,
                                const BreakEvenOptions& options) {
  CheckLayer(layer, options);
  BreakEvenCurve c;
  if (platform == "cpu") {
    c = MeasureCpu(layer, options);
  } else if (platform == "eie-cycles" || platform == "eie-energy") {
    std::vector<BreakEvenCurve> both = SimulateEie(layer, options);
    c = platform == "eie-cycles" ? both[0] : both[1];
  } else {
    Fail("break-even: unknown platform '{}' (known: {})", platform, fmt::join(BreakEvenPlatforms(), ", "));
  }
  FindBreakEven(c);
  return c;
}

std::string BreakEvenTable(const std::vector<BreakEvenCurve>& curves) {
  std::string s;
  for (const BreakEvenCurve& c : curves) {
    s += fmt::format("{} [{}]: {} vs {}\n", LayerText(c.layer), c.platform, c.sparse_name, c.dense_name);
    s += fmt::format("  {:>8}  {:>12}  {:>12}  {:>7}  {:>12}  {:>12}\n", "density", "sparse " + c.unit,
                     "dense " + c.unit, "ratio", "sparse bytes", "dense bytes");
    for (const BreakEvenPoint& p : c.points)
      s += fmt::format("  {:>8}  {:>12.5g}  {:>12.5g}  {:>7.3f}  {:>12}  {:>12}\n", Fraction(p.density), p.sparse,
                       p.dense, p.sparse / p.dense, p.sparse_bytes, p.dense_bytes);
    s += fmt::format("  break-even density: {}\n", BreakEvenText(c));
  }
  return s;
}

std::string BreakEvenMarkdown(const std::vector<BreakEvenCurve>& curves) {
  // One row per (layer, platform): sparse / dense at every density, then
  // the crossing.
  std::vector<double> ds;
  for (const auto& c : curves)
    for (const auto& p : c.points) ds.push_back(p.density);
  std::sort(ds.begin(), ds.end());
  ds.erase(std::unique(ds.begin(), ds.end()), ds.end());
  std::string s = "sparse / dense (time, cycles or energy per inference) at each weight density:\n\n"
                  "| layer | platform |";
  for (double d : ds) s += " " + Fraction(d) + " |";
  s += " break-even density |\n|---|---|";
  for (std::size_t k = 0; k < ds.size(); ++k) s += "---|";
  s += "---|\n";
  for (const auto& c : curves) {
    s += fmt::format("| {} | {} |", LayerText(c.layer), c.platform);
    for (double d : ds) {
      auto it = std::find_if(c.points.begin(), c.points.end(), [&](const BreakEvenPoint& p) { return p.density == d; });
      s += it == c.points.end() ? " |" : fmt::format(" {:.2f} |", it->sparse / it->dense);
    }
    s += fmt::format(" {}{:.3g} |\n", c.bound.empty() ? "" : c.bound + " ", c.break_even);
  }
  return s;
}

nlohmann::json BreakEvenToJson(const std::vector<BreakEvenCurve>& curves) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& c : curves) {
    nlohmann::json pts = nlohmann::json::array();
    for (const auto& p : c.points)
      pts.push_back({{"density", p.density}, {"sparse", p.sparse}, {"dense", p.dense}, {"ratio", p.sparse / p.dense},
                     {"sparse_bytes", p.sparse_bytes}, {"dense_bytes", p.dense_bytes}});
    out.push_back({{"layer", c.layer.layer}, {"rows", c.layer.rows}, {"cols", c.layer.cols},
                   {"columns", c.layer.columns}, {"platform", c.platform}, {"sparse", c.sparse_name},
                   {"dense", c.dense_name}, {"unit", c.unit}, {"points", pts}, {"break_even", c.break_even},
                   {"bound", c.bound}});
  }
  return out;
}

void AddBreakEvenOptions(CLI::App* cmd, std::string* value, bool* refuse) {
  cmd->add_option("--break-even", *value,
                  "admm: a weight density D, or a platform (cpu | eie-cycles | eie-energy) whose break-even density "
                  "is measured for each pruned layer's own shape (permdnn break-even, docs/admm.md); every pruned "
                  "layer is reported against it");
  cmd->add_flag("--refuse-break-even", *refuse,
                "admm: fail when a pruned layer's density is at or above its break-even density (it buys nothing)");
}

void AddAdmmOptions(CLI::App* cmd, train::TrainOptions* o) {
  cmd->add_option("--admm-epochs", o->admm_epochs, "admm: epochs of the ADMM phase (0: half of --epochs)")
      ->capture_default_str();
  cmd->add_option("--rho", o->rho, "admm: penalty rho of (rho/2)||W - Z + U||^2")->capture_default_str();
  cmd->add_option("--rho-mult", o->rho_mult, "admm: rho is multiplied by this after every round")
      ->capture_default_str();
  cmd->add_option("--admm-penalty", o->admm_penalty,
                  "admm: gradient (the penalty's gradient goes through Adam) | decoupled (after each step "
                  "W <- (W + c(Z - U))/(1 + c), c = lr*rho; rho is then the pull's own strength)")
      ->capture_default_str();
  cmd->add_flag("--rescale-dual", o->rescale_dual,
                "admm: divide U by --rho-mult when rho grows (U is the scaled dual y/rho)");
  cmd->add_option("--admm-iter", o->admm_iter, "admm: batch steps per round (Z and U update; 0: one epoch)")
      ->capture_default_str();
}

void ApplyBreakEven(const std::string& value, train::TrainOptions* o) {
  if (value.empty()) return;
  const auto& platforms = BreakEvenPlatforms();
  if (std::find(platforms.begin(), platforms.end(), value) == platforms.end()) {
    std::istringstream is(value);
    double d = 0;
    PERMDNN_CHECK((is >> d) && is.eof(), "--break-even '{}' is neither a density nor one of {}", value,
                  fmt::join(platforms, ", "));
    o->break_even_density = d;  // range: CheckAdmmOptions
    return;
  }
  // Measured once per shape: layers of one shape share the answer.
  struct Cache {
    std::mutex mu;
    std::map<std::tuple<int64_t, int64_t, int64_t>, BreakEvenCurve> curves;
  };
  auto cache = std::make_shared<Cache>();
  const std::string platform = value;
  o->break_even_platform = platform;
  o->break_even_for = [cache, platform](const train::BreakEvenQuery& q) {
    std::lock_guard<std::mutex> lock(cache->mu);
    const auto key = std::make_tuple(q.rows, q.cols, q.columns);
    auto it = cache->curves.find(key);
    if (it == cache->curves.end()) it = cache->curves.emplace(key, MeasureBreakEven(platform, q, {})).first;
    const BreakEvenCurve& c = it->second;
    std::string detail = fmt::format("{}, {}: {} vs {}; sparse/dense", platform, ShapeText(q), c.sparse_name,
                                     c.dense_name);
    for (const BreakEvenPoint& p : c.points) detail += fmt::format(" {:.2f}@{}", p.sparse / p.dense, Fraction(p.density));
    return train::BreakEvenAnswer{c.break_even, detail};
  };
}

void AddBreakEvenCommand(CLI::App& app) {
  struct Args {
    std::string layers = "1024x784,500x800,256x2048", platforms = "cpu,eie-cycles,eie-energy", densities, json,
                markdown;
    int64_t columns = 1;
    BreakEvenOptions o;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "break-even", "the weight density below which a pruned (CSR / EIE) layer beats its dense form, per layer shape "
                    "and platform (ADMM-NN's break-even; docs/admm.md)");
  cmd->add_option("--layers", args->layers, "eie | layer names | MxN shapes (m outputs x n inputs), comma separated")
      ->capture_default_str();
  cmd->add_option("--columns", args->columns,
                  "input vectors per inference (a conv: its output pixels, the layer given as its im2col matrix "
                  "out x in*kh*kw)")
      ->capture_default_str();
  cmd->add_option("--platform", args->platforms, "cpu, eie-cycles, eie-energy (comma separated)")
      ->capture_default_str();
  cmd->add_option("--densities", args->densities, "weight densities in (0, 1] (default 1/64, 1/32, ..., 1/2, 3/4, 1)");
  cmd->add_option("--act-density", args->o.act_density, "eie: fraction of nonzero inputs")->capture_default_str();
  cmd->add_option("--min-time", args->o.min_time_s, "cpu: seconds per timed point per round")->capture_default_str();
  cmd->add_option("--rounds", args->o.rounds, "cpu: rounds (a point is the median of its round medians)")
      ->capture_default_str();
  cmd->add_option("--seed", args->o.seed, "seed of the random matrices and inputs")->capture_default_str();
  cmd->add_option("--tech", args->o.tech_path, "eie: technology table (default: data/sim/tech_28nm.json)");
  cmd->add_option("--json", args->json, "write the curves to this JSON file");
  cmd->add_option("--markdown", args->markdown, "write the summary table as Markdown to this file");
  cmd->callback([args] {
    BreakEvenOptions o = args->o;
    if (!args->densities.empty()) o.densities = ParseNumberList<double>("--densities", args->densities);
    const std::vector<std::string> platforms = SplitList(args->platforms);
    PERMDNN_CHECK(!platforms.empty(), "break-even: --platform is empty (use cpu, eie-cycles, eie-energy)");
    nlohmann::json env = BenchEnvironment();
    std::printf("permdnn break-even: %s, SIMD %s, OpenBLAS core %s, cpu rows: one thread, process CPU time\n",
                env["cpu"].get<std::string>().c_str(), env["simd_target"].get<std::string>().c_str(),
                env["openblas_corename"].get<std::string>().c_str());
    std::fflush(stdout);
    std::vector<BreakEvenCurve> curves;
    for (const FcLayerSpec& l : ParseLayerList(args->layers))
      for (const std::string& p : platforms)
        curves.push_back(MeasureBreakEven(p, {l.name, l.outputs, l.inputs, args->columns}, o));
    std::printf("%s", BreakEvenTable(curves).c_str());
    if (!args->json.empty()) {
      WriteFileAtomic(args->json,
                      nlohmann::json{{"command", "break-even"}, {"environment", env}, {"curves", BreakEvenToJson(curves)}}
                              .dump(2) +
                          "\n");
      std::printf("wrote %s\n", args->json.c_str());
    }
    if (!args->markdown.empty()) {
      WriteFileAtomic(args->markdown, BreakEvenMarkdown(curves));
      std::printf("wrote %s\n", args->markdown.c_str());
    }
  });
}

PERMDNN_REGISTER_COMMAND(AddBreakEvenCommand);

}  // namespace permdnn::cli
