// permdnn compress: project the Gemm / MatMul / Conv weights of an ONNX
// model onto the permuted-diagonal, block-circulant or pruned format (no
// data needed); with --data/--epochs, in builds with the training component,
// then fine-tunes the result (permdnn/train/finetune.h).
#include <cstdio>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/break_even.h"
#include "cli/commands.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/export.h"
#ifdef PERMDNN_HAVE_TRAINING
#include "permdnn/train/finetune.h"
#endif

namespace permdnn::cli {

void PrintLayerReport(const runtime::ExportReport& r, bool energy);
nlohmann::json ReportJson(const runtime::ExportReport& r);

void AddCompressCommand(CLI::App& app) {
  struct Args {
    std::string in, out, spec, data, json, rounds_csv, break_even;
    int epochs = 1;
    bool portable = false, admm = false;
#ifdef PERMDNN_HAVE_TRAINING
    train::FineTuneOptions ft;
#endif
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("compress", "replace an ONNX model's dense weights by their permdiag / circulant / pruned projection");
  cmd->add_option("model", args->in, "input model.onnx")->required();
  cmd->add_option("--compress", args->spec, "SPEC, e.g. permdiag:p=8, circulant:p=8, prune:density=0.1,bits=4 or fc1=permdiag:p=4,fc3=dense")->required();
  cmd->add_option("--out", args->out, "output model.onnx")->required();
  cmd->add_flag("--portable", args->portable, "write the projected weights as dense standard ops");
  auto* o_data = cmd->add_option("--data", args->data,
                                  "fine-tune on this Fashion-MNIST/MNIST directory after the projection (needs the "
                                  "training component)");
  auto* o_epochs = cmd->add_option("--epochs", args->epochs,
                                   "fine-tuning epochs (default 1; needs the training component; --data defaults to "
                                   "/usr/share/datasets/fashion-mnist)");
  cmd->add_option("--json", args->json, "write the per-layer report to this JSON file");
  cmd->add_flag("--admm", args->admm,
                "ADMM-NN instead of one projection: ADMM epochs on the dense model toward --compress, then the hard "
                "projection and retraining with the structure fixed (--epochs = both; needs the training component; "
                "docs/admm.md)");
#ifdef PERMDNN_HAVE_TRAINING
  cmd->add_option("--lr", args->ft.lr, "fine-tuning Adam learning rate (x0.1 for the last third of the epochs)")
      ->capture_default_str();
  cmd->add_option("--batch", args->ft.batch, "fine-tuning batch size")->capture_default_str();
  cmd->add_option("--threads", args->ft.threads, "fine-tuning threads")->capture_default_str();
  cmd->add_option("--seed", args->ft.seed, "fine-tuning shuffling seed")->capture_default_str();
  cmd->add_option("--limit-train", args->ft.limit_train, "fine-tune on the first N training images only");
  AddAdmmOptions(cmd, &args->ft);
  cmd->add_option("--rounds-csv", args->rounds_csv,
                  "admm: write the rounds (rho, ||W-Z||/||W|| overall and per layer, loss, accuracy) to this CSV "
                  "(default: OUT without .onnx + .admm_rounds.csv)");
  AddBreakEvenOptions(cmd, &args->break_even, &args->ft.refuse_break_even);
#endif
  cmd->callback([=] {
    const bool finetune = *o_data || *o_epochs;
#ifdef PERMDNN_HAVE_TRAINING
    if (args->admm) {
      PERMDNN_CHECK(!args->portable, "compress: --portable (dense standard ops) and --admm (which retrains the "
                                     "compressed ai.permdnn layers) do not combine; drop one");
      args->ft.data_dir = args->data;
      args->ft.epochs = args->epochs;
      ApplyBreakEven(args->break_even, &args->ft);
      args->ft.compress = args->spec;
      std::string csv = args->rounds_csv;
      if (csv.empty()) {
        csv = args->out;
        if (csv.size() > 5 && csv.compare(csv.size() - 5, 5, ".onnx") == 0) csv.resize(csv.size() - 5);
        csv += ".admm_rounds.csv";
      }
      train::AdmmCompressResult a = train::AdmmCompressOnnx(args->in, args->out, args->ft, csv, std::cout);
      std::cout << "\n";
      PrintLayerReport(a.projection, true);
      std::cout << fmt::format("\ntest accuracy: dense {:.2f}%, ADMM phase end {:.2f}%, after the hard projection "
                               "{:.2f}%, retrained {:.2f}% (runtime); {} rounds in {}\n",
                               100 * a.accuracy_dense, 100 * a.accuracy_admm_end, 100 * a.retrain.accuracy_before,
                               100 * a.retrain.accuracy_after, a.rounds.size(), csv);
      nlohmann::json j = ReportJson(a.projection);
      nlohmann::json rounds = nlohmann::json::array();
      for (const train::AdmmRound& r : a.rounds) {
        nlohmann::json layers;
        for (std::size_t k = 0; k < a.layers.size() && k < r.layer_residual.size(); ++k)
          layers[a.layers[k]] = r.layer_residual[k];
        rounds.push_back({{"round", r.round}, {"step", r.step}, {"rho", r.rho}, {"residual", r.residual},
                          {"layer_residual", layers}, {"train_loss", r.train_loss},
                          {"test_accuracy", r.test_accuracy}});
      }
      j["admm"] = {{"epochs", args->epochs}, {"admm_epochs", args->ft.admm_epochs}, {"rho", args->ft.rho},
                   {"rho_mult", args->ft.rho_mult}, {"admm_iter", args->ft.admm_iter},
                   {"accuracy_dense", a.accuracy_dense}, {"accuracy_admm_end", a.accuracy_admm_end},
                   {"accuracy_projected", a.retrain.accuracy_before}, {"accuracy_retrained", a.retrain.accuracy_after},
                   {"rounds_csv", csv}, {"rounds", rounds}};
      if (!args->json.empty()) WriteFileAtomic(args->json, j.dump(2) + "\n");
      return;
    }
    if (finetune) {
      PERMDNN_CHECK(args->epochs >= 1, "compress: --epochs must be >= 1, got {}", args->epochs);
      PERMDNN_CHECK(!args->portable, "compress: --portable (dense standard ops) and fine-tuning (which "
                                     "trains the compressed ai.permdnn layers) do not combine; drop one");
    }
#else
    if (args->admm)
      Fail("compress: --admm trains through the training component, which is not available in this build of "
           "`permdnn compress`");
    if (finetune)
      Fail("compress: fine-tuning (--data/--epochs) runs through the training component, which is not available "
           "in this build of `permdnn compress`; run without --data/--epochs for projection only");
#endif
    runtime::CompressOptions o;
    o.spec = args->spec;
    o.portable = args->portable;
    runtime::ExportReport r = runtime::CompressOnnx(args->in, args->out, o);
    PrintLayerReport(r, true);
    nlohmann::json j = ReportJson(r);
#ifdef PERMDNN_HAVE_TRAINING
    if (finetune) {
      args->ft.data_dir = args->data;
      args->ft.epochs = args->epochs;
      std::cout << "\n";
      train::FineTuneResult f = train::FineTuneOnnx(args->out, args->out, args->ft, std::cout);
      j["finetune"] = {{"epochs", args->epochs},
                       {"accuracy_projected", f.accuracy_before},
                       {"accuracy_finetuned", f.accuracy_after},
                       {"trainable_values", f.trainable_values}};
    }
#endif
    if (!args->json.empty()) WriteFileAtomic(args->json, j.dump(2) + "\n");
  });
}

PERMDNN_REGISTER_COMMAND(AddCompressCommand);

}  // namespace permdnn::cli
