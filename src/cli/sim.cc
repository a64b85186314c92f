// permdnn sim: the accelerator simulator (PermDNN engine vs EIE vs CirCNN)
// on the EIE layers or given shapes; `permdnn sim sweep` explores PermDNN
// design points. The work is in permdnn::sim (include/permdnn/sim/report.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>

#include <fmt/format.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/sim_model.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/core/workloads.h"
#include "permdnn/sim/engine.h"
#include "permdnn/sim/model.h"
#include "permdnn/sim/report.h"
#include "permdnn/sim/validate.h"

namespace permdnn::cli {

namespace {


std::vector<int> SplitInts(const std::string& flag, const std::string& text, bool allow_matched) {
  std::vector<int> out;
  for (const auto& item : SplitList(text)) {
    if (allow_matched && (item == "matched" || item == "auto")) {
      out.push_back(0);
      continue;
    }
    std::size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (...) {
      used = 0;
    }
    PERMDNN_CHECK(used == item.size() && used > 0, "{}: '{}' is not an integer (in '{}')", flag, item, text);
    out.push_back(v);
  }
  PERMDNN_CHECK(!out.empty(), "{}: empty list", flag);
  return out;
}

}  // namespace

void AddSimCommand(CLI::App& app) {
  struct Args {
    std::string archs = "permdnn,eie,circnn", layers = "eie", config, json, plot, trace, tech, model;
    std::string data = kDefaultFashionMnistDir, input;
    int64_t samples = 16;
    std::vector<std::string> sets;
    uint64_t seed = 1;
    bool no_check = false, list_params = false, validate = false, strict = false, sensitivity = false;
    double step = 0.2;
    // sweep
    std::string pes = "8,16,32,64", mults = "4,8,16", ps = "matched,4,8,16", bits = "8,16", out = "sim_sweep";
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "sim", "cycle-level accelerator simulator: PermDNN engine vs EIE vs CirCNN (energy, area, throughput)");
  cmd->add_option("--arch", a->archs,
                  "architectures: permdnn,eie,circnn (and adder,mac16 for ternary layers; added by default when "
                  "--model has ternary layers)")
      ->capture_default_str();
  cmd->add_option("--layers", a->layers, "eie | layer names | MxN shapes (m outputs x n inputs; densities 1)")
      ->capture_default_str();
  cmd->add_option("--config", a->config, "architecture parameters: JSON or TOML file with [permdnn] [eie] [circnn] "
                                        "[workload] sections");
  cmd->add_option("--set", a->sets, "override one parameter: section.key=value (repeatable), e.g. permdnn.num_pe=64");
  cmd->add_option("--tech", a->tech, "energy/area table (default data/sim/tech_28nm.json)");
  cmd->add_option("--seed", a->seed, "seed of matrices and activations")->capture_default_str();
  cmd->add_option("--json", a->json, "write records to this JSON file");
  cmd->add_option("--plot", a->plot, "write SVG bar charts of the ratios (gnuplot) into this directory");
  cmd->add_option("--trace", a->trace, "stream a per-cycle trace to this file (large)");
  cmd->add_option("--model", a->model,
                  "simulate the compressed layers of an ONNX model (PermDiag/BlockCirculant/Sparse MatMul and "
                  "Conv; conv layers as im2col products) on the activations of real test images");
  cmd->add_option("--data", a->data, "--model: directory with the Fashion-MNIST IDX files")->capture_default_str();
  cmd->add_option("--input", a->input,
                  "--model: a float .npy [N, ...] fed to the model's input as is (no preprocessing), instead of "
                  "Fashion-MNIST test images; --samples of its N entries");
  cmd->add_option("--samples", a->samples, "--model: test images whose activations drive the engines (mean over "
                                           "them)")
      ->capture_default_str();
  cmd->add_flag("--no-check", a->no_check, "skip the functional check against the int16 kernel");
  cmd->add_flag("--list-params", a->list_params, "print every architecture parameter with its default and reason");
  cmd->add_flag("--validate", a->validate,
                "run EIE's nine layers on the three engines and hold the models to every published figure; exit 1 "
                "when a figure is outside its tolerance or a documented gap has drifted");
  cmd->add_flag("--strict", a->strict, "--validate: also fail on the documented gaps (the published targets only)");
  cmd->add_flag("--sensitivity", a->sensitivity,
                "move each technology-table entry by -/+ --step, one at a time, and print how far the published "
                "comparisons move (markdown)");
  cmd->add_option("--step", a->step, "--sensitivity: relative step")->capture_default_str();
  cmd->callback([a, cmd] {
    if (cmd->got_subcommand("sweep")) return;
    if (a->list_params) {
      for (const auto& e : sim::Engines()) std::printf("%s\n", sim::DescribeParams(e.name, e.params).c_str());
      std::printf("%s", sim::DescribeParams("workload", sim::WorkloadParamDefs()).c_str());
      return;
    }
    nlohmann::json config = nlohmann::json::object();
    if (!a->config.empty()) config = sim::LoadConfigFile(a->config);
    for (const auto& s : a->sets) sim::ApplyOverride(config, s);
    if (a->validate || a->sensitivity) {
      PERMDNN_CHECK(a->model.empty() && a->layers == "eie" && a->archs == "permdnn,eie,circnn",
                    "--validate and --sensitivity run EIE's nine layers on permdnn,eie,circnn; drop --model, "
                    "--layers and --arch");
      sim::ComparisonOptions o;
      o.config = config;
      o.tech_path = a->tech;
      o.seed = a->seed;
      o.check_functional = a->validate && !a->no_check;
      const auto t0 = std::chrono::steady_clock::now();
      const sim::ComparisonResult res = sim::RunComparison(o);
      nlohmann::json j = {{"command", a->validate ? "sim --validate" : "sim --sensitivity"},
                          {"tech_table", res.tech_path}};
      bool ok = true;
      if (a->validate) {
        const sim::ValidationReport rep = sim::Validate(res);
        std::printf("%s", sim::RenderValidation(rep).c_str());
        if (res.functional_checks > 0)
          std::printf("functional: PermDNN engine int16 output %s kernels::PermDiagMatVecI16 on %d/%d layers\n",
                      res.functional_mismatches == 0 ? "==" : "!=", res.functional_checks - res.functional_mismatches,
                      res.functional_checks);
        j["validation"] = sim::ValidationToJson(rep);
        ok = rep.Passed(a->strict) && res.functional_mismatches == 0;
      }
      if (a->sensitivity) {
        sim::SensitivityOptions so;
        so.step = a->step;
        const sim::SensitivityReport rep = sim::Sensitivity(res, config, so);
        std::printf("%s", sim::RenderSensitivity(rep).c_str());
        j["sensitivity"] = {{"step", rep.step}, {"quantities", rep.quantities}, {"base", rep.base}};
        for (const auto& r : rep.rows) j["sensitivity"]["rows"].push_back({{"entry", r.entry}, {"down", r.down}, {"up", r.up}});
      }
      const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("tech table: %s; %.2f s\n", res.tech_path.c_str(), total);
      if (!a->json.empty()) {
        WriteFileAtomic(a->json, j.dump(2) + "\n");
        std::printf("wrote %s\n", a->json.c_str());
      }
      if (!ok)
        Fail("sim --validate: {} (see the table above)",
             res.functional_mismatches > 0 ? "the functional check failed"
                                           : (a->strict ? "published targets are not met"
                                                        : "a figure is outside its tolerance or drifted from its "
                                                          "documented gap"));
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    sim::ComparisonResult res;
    if (!a->model.empty()) {
      std::vector<sim::ModelLayer> layers =
          LoadModelLayers(a->model, a->data, a->samples, kDefaultMaxConvPositions, a->input);
      sim::ModelComparisonOptions o;
      o.archs = SplitList(a->archs);
      // Ternary layers: by default also the adder array and its 16-bit MAC
      // twin (issue 18), which run the ternary layers only.
      const bool any_ternary =
          std::any_of(layers.begin(), layers.end(), [](const sim::ModelLayer& l) { return l.ternary.has_value(); });
      if (any_ternary && cmd->count("--arch") == 0) o.archs.insert(o.archs.end(), {"adder", "mac16"});
      o.config = config;
      o.tech_path = a->tech;
      o.check_functional = !a->no_check;
      PERMDNN_CHECK(a->trace.empty(), "--trace is not available with --model (one trace per sample would be "
                                      "written); use --layers MxN for a trace");
      res = sim::RunModelComparison(layers, o);
      std::printf("permdnn sim --model %s: %zu layers x %zu architectures\n\n", a->model.c_str(), layers.size(),
                  o.archs.size());
    } else {
      sim::ComparisonOptions o;
      o.layers = ParseLayerList(a->layers);
      o.archs = SplitList(a->archs);
      o.config = config;
      o.tech_path = a->tech;
      o.seed = a->seed;
      o.check_functional = !a->no_check;
      o.trace_path = a->trace;
      res = sim::RunComparison(o);
      std::printf("permdnn sim: %zu layers x %zu architectures\n\n", o.layers.size(), o.archs.size());
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s", sim::RenderComparison(res).c_str());
    std::printf("total %.3f s (workloads, simulation and checks)\n", total);
    if (!a->json.empty()) {
      nlohmann::json j = sim::ComparisonToJson(res);
      j["seconds"]["total"] = total;
      if (!a->model.empty()) j["model"] = {{"path", a->model}, {"samples", res.samples}, {"data", a->data}};
      WriteFileAtomic(a->json, j.dump(2) + "\n");
      std::printf("wrote %s\n", a->json.c_str());
    }
    if (!a->plot.empty())
      for (const auto& path : sim::WriteComparisonPlots(res, a->plot)) std::printf("wrote %s\n", path.c_str());
    if (res.functional_mismatches > 0)
      Fail("functional check failed: the PermDNN engine's int16 output differs from the kernel on {} layer(s)",
           res.functional_mismatches);
  });

  CLI::App* sweep = cmd->add_subcommand("sweep", "explore PermDNN design points; write the Pareto front as CSV + SVG");
  sweep->fallthrough();  // --layers, --config, --set, --tech, --seed come from `sim`
  sweep->add_option("--pe", a->pes, "PE counts")->capture_default_str();
  sweep->add_option("--mults", a->mults, "multipliers per PE")->capture_default_str();
  sweep->add_option("--p", a->ps, "block sizes (matched = per-layer density match)")->capture_default_str();
  sweep->add_option("--bits", a->bits, "bit widths")->capture_default_str();
  sweep->add_option("--out", a->out, "output directory for sweep.csv and pareto.svg")->capture_default_str();
  sweep->callback([a] {
    sim::SweepOptions o;
    o.layers = ParseLayerList(a->layers);
    o.num_pe = SplitInts("--pe", a->pes, false);
    o.mults_per_pe = SplitInts("--mults", a->mults, false);
    o.ps = SplitInts("--p", a->ps, true);
    o.bits = SplitInts("--bits", a->bits, false);
    if (!a->config.empty()) o.config = sim::LoadConfigFile(a->config);
    for (const auto& s : a->sets) sim::ApplyOverride(o.config, s);
    o.tech_path = a->tech;
    o.seed = a->seed;
    const auto t0 = std::chrono::steady_clock::now();
    auto points = sim::RunSweep(o);
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s", sim::RenderSweep(points).c_str());
    for (const auto& path : sim::WriteSweep(points, a->out)) std::printf("wrote %s\n", path.c_str());
    std::printf("sweep took %.2f s\n", total);
  });
}

PERMDNN_REGISTER_COMMAND(AddSimCommand);

}  // namespace permdnn::cli
