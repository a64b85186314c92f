// permdnn compress: project the Gemm / MatMul / Conv weights of an ONNX
// model onto the permuted-diagonal, block-circulant or pruned format (no
// data needed).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/export.h"

namespace permdnn::cli {

void PrintLayerReport(const runtime::ExportReport& r, bool energy);
nlohmann::json ReportJson(const runtime::ExportReport& r);

void AddCompressCommand(CLI::App& app) {
  struct Args {
    std::string in, out, spec, data, json;
    int epochs = 0;
    bool portable = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("compress", "replace an ONNX model's dense weights by their permdiag / circulant / pruned projection");
  cmd->add_option("model", args->in, "input model.onnx")->required();
  cmd->add_option("--compress", args->spec, "SPEC, e.g. permdiag:p=8, circulant:p=8, prune:density=0.1,bits=4 or fc1=permdiag:p=4,fc3=dense")->required();
  cmd->add_option("--out", args->out, "output model.onnx")->required();
  cmd->add_flag("--portable", args->portable, "write the projected weights as dense standard ops");
  auto* o_data = cmd->add_option("--data", args->data, "fine-tuning data (needs the training component)");
  auto* o_epochs = cmd->add_option("--epochs", args->epochs, "fine-tuning epochs (needs the training component)");
  cmd->add_option("--json", args->json, "write the per-layer report to this JSON file");
  cmd->callback([=] {
    if (*o_data || *o_epochs)
      Fail("compress: fine-tuning (--data/--epochs) runs through the training component, which is not available "
           "in this build of `permdnn compress`; run without --data/--epochs for projection only");
    runtime::CompressOptions o;
    o.spec = args->spec;
    o.portable = args->portable;
    runtime::ExportReport r = runtime::CompressOnnx(args->in, args->out, o);
    PrintLayerReport(r, true);
    if (!args->json.empty()) WriteFileAtomic(args->json, ReportJson(r).dump(2) + "\n");
  });
}

PERMDNN_REGISTER_COMMAND(AddCompressCommand);

}  // namespace permdnn::cli
