// permdnn demo: the whole pipeline on Fashion-MNIST, each stage a real
// component on the same weights:
//   1. train `mlp` dense and with permdiag:p=8 (LibTorch; skipped with a note
//      when this build has no training),
//   2. export both runs to ONNX and evaluate them in the LibTorch-free runtime,
//      fp32 and int16, with file sizes, speed and agreement with LibTorch,
//   3. the kernel speed table at p=8 on the nine EIE layers,
//   4. the accelerator simulator: PermDNN vs EIE vs CirCNN, with plots.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/bench_runner.h"
#include "cli/commands.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/sim/report.h"

namespace permdnn::cli {

namespace {

namespace fs = std::filesystem;

bool HasCommand(const std::string& name) {
  CLI::App app;
  for (auto add : CommandRegistry()) add(app);
  try {
    app.get_subcommand(name);
    return true;
  } catch (const CLI::OptionNotFound&) {
    return false;
  }
}

void Banner(const std::string& title) {
  std::printf("\n==== %s %s\n", title.c_str(), std::string(title.size() < 70 ? 70 - title.size() : 0, '=').c_str());
  std::fflush(stdout);
}

struct DemoArgs {
  std::string data = kDefaultFashionMnistDir;
  std::string out = "runs/demo";
  int epochs = 2;
  int threads = 2;
  bool quick = false;
};

struct ModelRow {
  std::string name, compress;
  double train_acc = -1;  // LibTorch test accuracy of the exported weights
  int64_t onnx_bytes = 0;
  double compression = 0;
  double fp32_acc = 0, int16_acc = 0, same_as_torch = -1;
  double ips_b1 = 0, ips_b64 = 0;
};

ModelRow EvaluateRun(const std::string& name, const std::string& run_dir, const std::string& onnx,
                     const ImageDataset& test, const ImageDataset& train, int threads, bool quick) {
  ModelRow row;
  row.name = name;
  runtime::ExportReport rep = runtime::ExportRun(run_dir, onnx);
  row.onnx_bytes = rep.file_bytes;
  int64_t dense = 0, stored = 0;
  for (const auto& l : rep.layers) {
    dense += l.dense_bytes;
    stored += l.stored_bytes;
  }
  row.compression = stored > 0 ? static_cast<double>(dense) / stored : 0;
  nlohmann::json model = nlohmann::json::parse(std::ifstream(run_dir + "/model.json"));
  if (model.contains("test_accuracy")) row.train_acc = model["test_accuracy"].get<double>();
  row.compress = model.value("compress", std::string());

  runtime::Model m = runtime::Model::Load(onnx, {.threads = threads});
  runtime::EvalOptions eo;
  runtime::ModelPreprocess(m, &eo.pre, &eo.layout);
  runtime::EvalResult fp = runtime::Evaluate(m, test, eo);
  row.fp32_acc = fp.accuracy;
  if (fs::exists(run_dir + "/test_predictions.npy")) {
    std::vector<int32_t> torch = ReadNpy(run_dir + "/test_predictions.npy").as<int32_t>("test_predictions.npy");
    if (torch.size() == fp.predictions.size()) {
      int64_t same = 0;
      for (std::size_t i = 0; i < torch.size(); ++i) same += torch[i] == fp.predictions[i];
      row.same_as_torch = static_cast<double>(same) / torch.size();
    }
  }
  // Speed: batch 1 and batch 64, one pass each over (part of) the test set.
  runtime::EvalOptions one = eo;
  one.batch = 1;
  one.limit = quick ? 500 : 2000;
  runtime::EvalResult r1 = runtime::Evaluate(m, test, one);
  row.ips_b1 = r1.count / r1.seconds;
  runtime::EvalOptions big = eo;
  big.batch = 64;
  runtime::EvalResult r64 = runtime::Evaluate(m, test, big);
  row.ips_b64 = r64.count / r64.seconds;
  runtime::CalibrateInt16(m, train, eo, 512);
  row.int16_acc = runtime::Evaluate(m, test, eo).accuracy;
  return row;
}

void RunDemo(const DemoArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  fs::create_directories(a.out);
  std::vector<std::pair<std::string, std::string>> runs = {{"mlp dense", "dense"}, {"mlp permdiag p=8", "permdiag:p=8"}};

  Banner("1. Training (LibTorch): mlp 784-1024-1024-10, dense and permdiag p=8");
  std::vector<std::string> run_dirs;
  const bool can_train = HasCommand("train");
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const std::string dir = fmt::format("{}/mlp-{}", a.out, i == 0 ? "dense" : "p8");
    run_dirs.push_back(dir);
    if (!can_train) continue;
    fs::remove_all(dir);  // the demo's own run: start fresh every time
    std::printf("\n$ permdnn train --model mlp --compress %s --epochs %d --out %s\n", runs[i].second.c_str(),
                a.epochs, dir.c_str());
    std::fflush(stdout);
    RunCommandLine({"train", "--model", "mlp", "--compress", runs[i].second, "--epochs", std::to_string(a.epochs),
                    "--out", dir, "--data", a.data, "--threads", std::to_string(a.threads)});
  }
  if (!can_train)
    std::printf("this build has no training (LibTorch not found or PERMDNN_BUILD_TRAINING=OFF): "
                "stages 1-2 are skipped\n");

  if (can_train) {
    Banner("2. Deployment: ONNX export, LibTorch-free runtime (fp32 and int16)");
    const ImageDataset test = LoadFashionMnist(a.data, "test");
    const ImageDataset train = LoadFashionMnist(a.data, "train");
    std::vector<ModelRow> rows;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const std::string onnx = run_dirs[i] + ".onnx";
      rows.push_back(EvaluateRun(runs[i].first, run_dirs[i], onnx, test, train, 1, a.quick));
      std::printf("exported %s (%lld bytes)\n", onnx.c_str(), static_cast<long long>(rows.back().onnx_bytes));
    }
    std::printf("\n%-18s %9s %9s %9s %10s %12s %7s %11s %11s\n", "model", "LibTorch", "runtime", "int16",
                "=LibTorch", "ONNX bytes", "ratio", "img/s B=1", "img/s B=64");
    for (const auto& r : rows)
      std::printf("%-18s %8.2f%% %8.2f%% %8.2f%% %9.2f%% %12lld %6.2fx %11.0f %11.0f\n", r.name.c_str(),
                  100 * r.train_acc, 100 * r.fp32_acc, 100 * r.int16_acc, 100 * r.same_as_torch,
                  static_cast<long long>(r.onnx_bytes), static_cast<double>(rows[0].onnx_bytes) / r.onnx_bytes,
                  r.ips_b1, r.ips_b64);
    std::printf("(accuracy on the 10000 Fashion-MNIST test images after %d epochs; =LibTorch: share of identical "
                "predictions; ratio: dense file / this file; speed: runtime, 1 thread)\n",
                a.epochs);
    if (rows.size() == 2)
      std::printf("permdiag p=8 vs dense in the runtime: %.1fx faster at batch 1, %.1fx at batch 64\n",
                  rows[1].ips_b1 / rows[0].ips_b1, rows[1].ips_b64 / rows[0].ips_b64);
  }

  Banner("3. Kernels: permdiag p=8 vs OpenBLAS dense vs CSR (Eigen), EIE layers, 1 thread");
  BenchOptions o;
  o.layers = EieLayers();
  o.ps = {8};
  o.threads = {1};
  o.batches = {1, 64};
  o.min_time_s = a.quick ? 0.03 : 0.1;
  o.min_reps = 3;
  nlohmann::json env = BenchEnvironment();
  std::printf("CPU %s, SIMD %s, OpenBLAS core %s\n", env["cpu"].get<std::string>().c_str(),
              env["simd_target"].get<std::string>().c_str(), env["openblas_corename"].get<std::string>().c_str());
  std::fflush(stdout);
  std::vector<BenchRecord> records = RunBench(o);
  std::printf("%s", BenchTable(records).c_str());
  std::string t = BenchTargets(records);
  if (!t.empty()) std::printf("\n%s", t.c_str());

  Banner("4. Accelerator simulator: PermDNN (32 PEs) vs EIE (64 PEs) vs CirCNN, nine EIE layers");
  sim::ComparisonResult result = sim::RunEieComparison(1);
  std::printf("%s", sim::RenderComparison(result).c_str());
  for (const auto& svg : sim::WriteComparisonPlots(result, a.out + "/sim_plots")) std::printf("plot: %s\n", svg.c_str());

  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\ndemo finished in %.0f s; runs, ONNX files and plots are in %s/\n", s, a.out.c_str());
}

}  // namespace

void AddDemoCommand(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand("demo", "the whole pipeline on Fashion-MNIST: train, export, run, kernels, simulator");
  cmd->add_option("--data", a->data, "Fashion-MNIST directory")->capture_default_str();
  cmd->add_option("--out", a->out, "directory for runs, models and plots")->capture_default_str();
  cmd->add_option("--epochs", a->epochs, "training epochs per model")->capture_default_str();
  cmd->add_option("--threads", a->threads, "training threads")->capture_default_str();
  cmd->add_flag("--quick", a->quick, "shorter measurements");
  cmd->callback([a] { RunDemo(*a); });
}

PERMDNN_REGISTER_COMMAND(AddDemoCommand);

}  // namespace permdnn::cli
