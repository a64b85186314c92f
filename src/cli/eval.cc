// permdnn eval: accuracy of an ONNX model on the Fashion-MNIST test split in
// the runtime (fp32, or the compressed layers in int16 with --int16); for a
// token model (integer input: the charlm), held-out bits per character on a
// text corpus.
#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/model.h"

namespace permdnn::cli {

namespace {

// `permdnn eval` of a token model: held-out bits per character on a corpus.
template <typename Args>
void EvalText(runtime::Model& model, const Args& args, const std::string& corpus_path) {
  PERMDNN_CHECK(!args.int16 && !args.int8, "{}: --{} is not available for token models (input '{}' is {})",
                args.model, args.int8 ? "int8" : "int16", model.inputs()[0].name,
                runtime::DTypeName(model.inputs()[0].dtype));
  runtime::TextInput text;
  PERMDNN_CHECK(runtime::ModelTextInput(model, &text),
                "{}: input '{}' is {} (token ids), but the model has no permdnn.text metadata (alphabet, window "
                "length): eval reads corpora for models exported by `permdnn export` from a charlm run",
                args.model, model.inputs()[0].name, runtime::DTypeName(model.inputs()[0].dtype));
  runtime::TextEvalOptions to;
  to.seq_len = args.seq_len > 0 ? args.seq_len : text.seq_len;
  to.batch = args.batch;
  to.limit = args.limit;
  const TextCorpus corpus = LoadTextCorpus(corpus_path);
  const runtime::TextEvalResult r = runtime::EvaluateText(model, corpus, text.alphabet, to);
  std::printf("%s: %s, held-out split of %zu bytes (the last 10%% of every file), %lld windows of %lld, threads %d\n",
              args.model.c_str(), corpus_path.c_str(), corpus.test_ids.size(), static_cast<long long>(r.windows),
              static_cast<long long>(to.seq_len), args.threads);
  std::printf("fp32  held-out bits per character %.4f, next-byte accuracy %.4f (%lld/%lld), %.0f bytes/s\n", r.bpc,
              r.accuracy, static_cast<long long>(r.correct), static_cast<long long>(r.tokens),
              r.tokens / std::max(r.seconds, 1e-12));
  if (args.profile) std::printf("%s", runtime::FormatProfile(model.Profile()).c_str());
  if (!args.json.empty()) {
    const nlohmann::json j = {{"model", args.model}, {"corpus", corpus_path}, {"windows", r.windows},
                              {"seq_len", to.seq_len}, {"tokens", r.tokens}, {"fp32_bpc", r.bpc},
                              {"fp32_accuracy", r.accuracy}, {"fp32_bytes_per_s", r.tokens / std::max(r.seconds, 1e-12)},
                              {"threads", args.threads}};
    WriteFileAtomic(args.json, j.dump(2) + "\n");
  }
}

}  // namespace

void AddEvalCommand(CLI::App& app) {
  struct Args {
    std::string model, data = kDefaultFashionMnistDir, layout, json;
    double scale = 0, mean = 0, std = 0;
    int threads = 1;
    int64_t batch = 256, limit = 0, calib = 512, seq_len = 0;
    bool int16 = false, int8 = false, profile = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("eval", "accuracy of an ONNX model on Fashion-MNIST (test split) in the runtime");
  cmd->add_option("model", args->model, "model.onnx")->required();
  cmd->add_option("--data", args->data,
                  "directory with the Fashion-MNIST IDX files (token models: a text file or directory, default "
                  "/usr/share/games/fortunes)")
      ->capture_default_str();
  cmd->add_flag("--int16", args->int16, "run the compressed FC layers in int16 fixed point (also reports fp32)");
  cmd->add_flag("--int8", args->int8,
                "as --int16 with the ternary convs on 8-bit inputs (also reports fp32, and int16 with --int16)");
  cmd->add_option("--threads", args->threads, "threads")->capture_default_str();
  cmd->add_flag("--profile", args->profile, "print per-node time and fast-kernel vs dense-fallback");
  auto* o_data = cmd->get_option("--data");
  cmd->add_option("--seq-len", args->seq_len,
                  "token models: window length (default: the model's metadata, i.e. the training --seq-len)");
  auto* o_scale = cmd->add_option("--scale", args->scale, "pixel scale (default: the model's metadata, else 1/255)");
  auto* o_mean = cmd->add_option("--mean", args->mean, "mean (default: metadata, else 0.2860)");
  auto* o_std = cmd->add_option("--std", args->std, "std (default: metadata, else 0.3530)");
  cmd->add_option("--layout", args->layout, "nchw | flat | rows (default: metadata, else from the model's input rank)")
      ->check(CLI::IsMember({"nchw", "flat", "rows"}));
  cmd->add_option("--batch", args->batch, "images per run")->capture_default_str();
  cmd->add_option("--limit", args->limit,
                  "evaluate only the first N test images (token models: N held-out windows, spread as the trainer's "
                  "--limit-test)");
  cmd->add_option("--calibration", args->calib, "training images for int16 calibration")->capture_default_str();
  cmd->add_option("--json", args->json, "write the result to this JSON file");
  cmd->callback([=] {
    PERMDNN_CHECK(args->threads >= 1, "--threads must be >= 1");
    PERMDNN_CHECK(args->batch >= 1, "--batch must be >= 1");
    runtime::Options opt;
    opt.threads = args->threads;
    opt.profile = args->profile;
    runtime::Model model = runtime::Model::Load(args->model, opt);
    if (model.inputs().size() == 1 && !runtime::IsFloat(model.inputs()[0].dtype)) {
      EvalText(model, *args, *o_data ? args->data : std::string(kDefaultTextCorpusDir));
      return;
    }
    runtime::EvalOptions eo;
    eo.batch = args->batch;
    eo.limit = args->limit;
    const bool meta = runtime::DefaultPreprocess(model, &eo.pre, &eo.layout);
    if (*o_scale) eo.pre.scale = static_cast<float>(args->scale);
    if (*o_mean) eo.pre.mean = static_cast<float>(args->mean);
    if (*o_std) {
      PERMDNN_CHECK(args->std > 0, "--std must be > 0");
      eo.pre.std = static_cast<float>(args->std);
    }
    if (!args->layout.empty())
      eo.layout = args->layout == "flat"   ? runtime::Layout::kFlat
                  : args->layout == "rows" ? runtime::Layout::kRows
                                           : runtime::Layout::kNchw;
    const ImageDataset test = LoadFashionMnist(args->data, "test");
    std::printf("%s: %lld test images, preprocessing (x*%.6g - %.4f)/%.4f, layout %s%s, threads %d\n",
                args->model.c_str(), static_cast<long long>(args->limit > 0 ? std::min(args->limit, test.count) : test.count),
                eo.pre.scale, eo.pre.mean, eo.pre.std, eo.layout == runtime::Layout::kFlat ? "flat" : eo.layout == runtime::Layout::kRows ? "rows" : "NCHW",
                meta ? " (from the model's metadata)" : "", args->threads);
    runtime::EvalResult fp = runtime::Evaluate(model, test, eo);
    std::printf("fp32  accuracy %.4f (%lld/%lld), %.0f images/s\n", fp.accuracy, static_cast<long long>(fp.correct),
                static_cast<long long>(fp.count), fp.count / std::max(fp.seconds, 1e-12));
    nlohmann::json j = {{"model", args->model}, {"count", fp.count}, {"fp32_accuracy", fp.accuracy},
                        {"fp32_images_per_s", fp.count / std::max(fp.seconds, 1e-12)}, {"threads", args->threads}};
    // Fixed point, calibrated on training images: int16, then int8.
    for (const char* mode : {"int16", "int8"}) {
      const bool int8 = mode[3] == '8';
      if (!(int8 ? args->int8 : args->int16)) continue;
      const ImageDataset train = LoadFashionMnist(args->data, "train");
      model.EnableInt8(int8);
      runtime::CalibrateInt16(model, train, eo, args->calib);
      model.ResetProfile();
      runtime::EvalResult q = runtime::Evaluate(model, test, eo);
      int64_t same = 0;
      for (std::size_t k = 0; k < q.predictions.size(); ++k) same += q.predictions[k] == fp.predictions[k];
      std::printf("%-5s accuracy %.4f (%lld/%lld), %.0f images/s, %+.2f points vs fp32, %.2f%% same predictions\n",
                  mode, q.accuracy, static_cast<long long>(q.correct), static_cast<long long>(q.count),
                  q.count / std::max(q.seconds, 1e-12), 100.0 * (q.accuracy - fp.accuracy),
                  100.0 * static_cast<double>(same) / static_cast<double>(std::max<int64_t>(1, q.count)));
      if (model.Summary().compressed_nodes == 0)
        std::printf("note: the model has no ai.permdnn layers; %s changed nothing\n", mode);
      j[std::string(mode) + "_accuracy"] = q.accuracy;
      j[std::string(mode) + "_images_per_s"] = q.count / std::max(q.seconds, 1e-12);
      j[std::string(mode) + "_calibration_images"] = args->calib;
    }
    if (args->profile) std::printf("%s", runtime::FormatProfile(model.Profile()).c_str());
    if (!args->json.empty()) WriteFileAtomic(args->json, j.dump(2) + "\n");
  });
}

PERMDNN_REGISTER_COMMAND(AddEvalCommand);

}  // namespace permdnn::cli
