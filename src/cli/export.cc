// permdnn export: a training run directory (docs/run-format.md) to ONNX.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/runtime/export.h"

namespace permdnn::cli {

void PrintLayerReport(const runtime::ExportReport& r, bool energy) {
  std::printf("%-14s %-20s %-26s %12s %12s %8s%s\n", "layer", "op", "method", "dense B", "stored B", "ratio",
              energy ? "  kept energy" : "");
  int64_t dense = 0, stored = 0;
  for (const auto& l : r.layers) {
    if (l.dense_bytes == 0 && l.stored_bytes == 0) continue;
    dense += l.dense_bytes;
    stored += l.stored_bytes;
    std::printf("%-14s %-20s %-26s %12lld %12lld %7.2fx", l.name.c_str(), l.op.c_str(), l.method.c_str(),
                static_cast<long long>(l.dense_bytes), static_cast<long long>(l.stored_bytes),
                l.stored_bytes ? static_cast<double>(l.dense_bytes) / static_cast<double>(l.stored_bytes) : 0.0);
    if (energy) std::printf("  %11.4f", l.kept_energy);
    std::printf("\n");
  }
  std::printf("weights: %lld dense bytes -> %lld stored (%.2fx); file %s: %lld bytes\n", static_cast<long long>(dense),
              static_cast<long long>(stored), stored ? static_cast<double>(dense) / static_cast<double>(stored) : 0.0,
              r.path.c_str(), static_cast<long long>(r.file_bytes));
}

nlohmann::json ReportJson(const runtime::ExportReport& r) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers)
    layers.push_back({{"name", l.name}, {"op", l.op}, {"method", l.method}, {"dense_bytes", l.dense_bytes},
                      {"stored_bytes", l.stored_bytes}, {"kept_energy", l.kept_energy}});
  return {{"path", r.path}, {"file_bytes", r.file_bytes}, {"layers", layers}};
}

void AddExportCommand(CLI::App& app) {
  struct Args {
    std::string run_dir, out, json;
    bool portable = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("export", "export a training run directory to ONNX");
  cmd->add_option("run_dir", args->run_dir, "RUN_DIR written by `permdnn train --out`")->required();
  cmd->add_option("--out", args->out, "model.onnx")->required();
  cmd->add_flag("--portable", args->portable,
                "lower compressed layers to standard ONNX (Gemm/Conv with the dense reconstruction)");
  cmd->add_option("--json", args->json, "write the per-layer report to this JSON file");
  cmd->callback([args] {
    runtime::ExportOptions o;
    o.portable = args->portable;
    runtime::ExportReport r = runtime::ExportRun(args->run_dir, args->out, o);
    PrintLayerReport(r, false);
    if (!args->json.empty()) WriteFileAtomic(args->json, ReportJson(r).dump(2) + "\n");
  });
}

PERMDNN_REGISTER_COMMAND(AddExportCommand);

}  // namespace permdnn::cli
