// permdnn run: one ONNX model on one input file (.npy, or raw float32), the
// output to .npy (or raw float32 for other extensions); --bench times
// inference at given batch sizes with random inputs. See docs/runtime.md.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/bench_runner.h"
#include "cli/commands.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/core/timing.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "permdnn/runtime/simd_target.h"

namespace permdnn::cli {

namespace {

using runtime::Model;

bool EndsWith(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// Reads the input and works out its full shape (batch first).
std::vector<float> ReadInput(const std::string& path, const Model& model, std::vector<int64_t>* shape) {
  const auto& info = model.inputs()[0];
  const std::vector<int64_t>& ms = info.shape;
  std::string bytes = runtime::ReadFileBytes(path);
  if (bytes.size() >= 6 && bytes.compare(0, 6, "\x93NUMPY") == 0) {
    NpyArray a = ParseNpy(bytes, path);
    *shape = a.shape;
    if (!ms.empty() && shape->size() + 1 == ms.size()) shape->insert(shape->begin(), 1);
    return a.ToFloat(path);
  }
  // Raw float32: the batch is what the size implies.
  PERMDNN_CHECK(!ms.empty(), "{}: raw input needs a model input with a known shape", path);
  int64_t per = 1;
  for (std::size_t d = 1; d < ms.size(); ++d) {
    PERMDNN_CHECK(ms[d] >= 0, "{}: raw input needs fixed non-batch dimensions, the model has {}", path,
                  runtime::ShapeString(ms));
    per *= ms[d];
  }
  PERMDNN_CHECK(bytes.size() % 4 == 0, "{}: raw float32 input has {} bytes, not a multiple of 4", path, bytes.size());
  const int64_t n = static_cast<int64_t>(bytes.size() / 4);
  PERMDNN_CHECK(n > 0 && per > 0 && n % per == 0,
                "{}: wrong input size: {} floats is not a whole number of samples of {} ({} per sample)", path, n,
                runtime::ShapeString(ms), per);
  *shape = ms;
  (*shape)[0] = n / per;
  std::vector<float> x(static_cast<std::size_t>(n));
  std::memcpy(x.data(), bytes.data(), bytes.size());
  return x;
}

// .npy, or raw float32 for any other extension (atomically).
void WriteOutput(const std::string& path, const std::vector<float>& y, const std::vector<int64_t>& shape) {
  if (EndsWith(path, ".npy")) {
    WriteNpy<float>(path, y, shape);
  } else {
    WriteFileAtomic(path, std::string_view(reinterpret_cast<const char*>(y.data()), y.size() * sizeof(float)));
  }
  std::printf("wrote %s\n", path.c_str());
}

std::vector<int64_t> ParseInts(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out = ParseNumberList<int64_t>(flag, text);
  for (int64_t v : out) PERMDNN_CHECK(v >= 1, "{}: '{}' is not a positive integer", flag, v);
  return out;
}


// --simd-target: this process under one SIMD target, OpenBLAS included.
// OpenBLAS chose its kernels when it loaded, from OPENBLAS_CORETYPE; where
// the target has a core of its own (AVX2: Haswell) and the variable does
// not name it, the command starts again (this binary, the arguments of
// /proc/self/cmdline: so `run` must be this process's own command, not one
// run through RunCommandLine) with it set, so that the dense FC layers'
// sgemm runs the same vectors as the rest. Returns what runs, for the
// header line and the JSON.
nlohmann::json RestrictSimd(const std::string& name) {
  int64_t bit = 0;
  try {
    bit = kernels::RequireSimdTarget(name);
  } catch (const Error& e) {
    Fail("--simd-target: {}", e.what());
  }
  const std::string core = OpenBlasCoreForTarget(kernels::SimdTargetName(bit));
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  if (!core.empty() && (!set || core != set)) {
    std::vector<std::string> args = OwnCommandLine(), env = EnvironmentForOpenBlasCore(core);
    std::vector<char*> av = CStrings(args), ev = CStrings(env);
    std::fflush(stdout);
    std::fflush(stderr);
    execve("/proc/self/exe", av.data(), ev.data());
    Fail("--simd-target {}: cannot start this command again with OPENBLAS_CORETYPE={}: {}", name, core,
         std::strerror(errno));
  }
  const runtime::SimdRestriction r = runtime::RestrictSimdTarget(name);
  const std::string blas = OpenBlasCoreName();
  std::printf("SIMD target %s (--simd-target): oneDNN ISA %s, OpenBLAS core %s\n", r.target.c_str(),
              r.onednn_isa.c_str(), blas.c_str());
  return {{"simd_target", r.target}, {"onednn_isa", r.onednn_isa}, {"openblas_core", blas}};
}

// `permdnn run` on a model whose one input is an integer tensor: the .npy
// must hold integers (any width, converted to int64); prints the output
// shape and writes --output as float32.
template <typename Args>
void RunIntegerInput(Model& model, const Args& args) {
  PERMDNN_CHECK(!args.input.empty(), "{}: give --input FILE (an integer .npy)", args.model);
  const runtime::ValueInfo& info = model.inputs()[0];
  const std::string bytes = runtime::ReadFileBytes(args.input);
  PERMDNN_CHECK(bytes.size() >= 6 && bytes.compare(0, 6, "\x93NUMPY") == 0,
                "{}: model input '{}' is {}: give an integer .npy file", args.input, info.name,
                runtime::DTypeName(info.dtype));
  NpyArray a = ParseNpy(bytes, args.input);
  PERMDNN_CHECK(!a.descr.empty() && (a.descr[1] == 'i' || a.descr[1] == 'u'),
                "{}: dtype is {}, but model input '{}' is {} (integers expected)", args.input, a.descr, info.name,
                runtime::DTypeName(info.dtype));
  std::vector<int64_t> shape = a.shape;
  if (!info.shape.empty() && shape.size() + 1 == info.shape.size()) shape.insert(shape.begin(), 1);
  std::vector<int64_t> ids;
  if (a.is<int64_t>()) {
    ids = a.as<int64_t>(args.input);
  } else {  // narrower integers are exact in float
    const std::vector<float> narrow = a.ToFloat(args.input);
    ids.assign(narrow.begin(), narrow.end());
  }
  std::vector<runtime::Tensor> out = model.Run({runtime::Tensor::Int64(shape, ids, info.dtype)});
  PERMDNN_CHECK(!out.empty() && runtime::IsFloat(out[0].dtype()), "{}: the first output is not float32", args.model);
  std::printf("%s: input %s (%s) -> output %s\n", args.model.c_str(), runtime::ShapeString(shape).c_str(),
              runtime::DTypeName(info.dtype), runtime::ShapeString(out[0].shape()).c_str());
  if (!args.output.empty()) {
    const std::span<const float> y = std::as_const(out[0]).floats();
    WriteOutput(args.output, std::vector<float>(y.begin(), y.end()), out[0].shape());
  }
}
}  // namespace

void AddRunCommand(CLI::App& app) {
  struct Args {
    std::string model, input, output, batches = "1,64", json, zero_skip = "auto", micro_batch = "auto",
                batch_parallel = "auto", split_check = "auto", simd_target;
    int threads = 1;
    bool profile = false, bench = false, cpu_time = false, int16 = false, int8 = false;
    double min_time = 0.3;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("run", "run an ONNX model on an input file (.npy or raw float32)");
  cmd->add_option("model", args->model, "model.onnx")->required();
  cmd->add_option("--input", args->input, "input .npy (or raw float32; batch inferred from the size)");
  cmd->add_option("--output", args->output, "output file: .npy, else raw float32 (written atomically)");
  cmd->add_option("--threads", args->threads, "threads for kernels and OpenBLAS")->capture_default_str();
  cmd->add_flag("--profile", args->profile,
                "print per-node time and fast-kernel vs dense-fallback (with --input: means over warm runs, at least "
                "5 and 0.2 s after 3 warm-up runs)");
  cmd->add_flag("--bench", args->bench, "time inference (median of runs): on --input if given, else on random inputs at --batch sizes");
  cmd->add_option("--batch", args->batches, "batch sizes for --bench (without --input)")->capture_default_str();
  cmd->add_option("--min-time", args->min_time, "seconds per --bench measurement")->capture_default_str();
  cmd->add_option("--json", args->json, "write --bench results to this JSON file");
  cmd->add_flag("--cpu-time", args->cpu_time,
                "--bench: rank runs by process CPU time (one thread only: keeps time lost to other processes out)");
  cmd->add_flag("--int16", args->int16,
                "run the layers that have an int16 path (permdiag FC, compressed recurrent, ternary conv) in fixed "
                "point, calibrated on the input that is run (--input, or each --bench batch)");
  cmd->add_flag("--int8", args->int8,
                "as --int16, with the ternary convs on 8-bit inputs (kernels::TernaryMatMulU8; the CPU's 8-bit dot "
                "product where it has one)");
  cmd->add_option("--zero-skip", args->zero_skip,
                  "batch-1 permdiag products on inputs with zeros: auto (skip zero inputs below the crossover density "
                  "measured per layer), never, always; --profile shows the path and density")
      ->check(CLI::IsMember({"auto", "never", "always"}))
      ->capture_default_str();
  cmd->add_option("--micro-batch", args->micro_batch,
                  "run a batch of a per-sample graph in passes of fewer samples, so that one pass's activations stay "
                  "in cache: auto (the planner's choice), off, or N (at most N samples per pass)")
      ->capture_default_str();
  cmd->add_option("--batch-parallel", args->batch_parallel,
                  "with --threads > 1, run a batch of a per-sample graph as one share of the samples per thread, each "
                  "on its own single-threaded replica of the model (sharing its weights): auto (where the graph allows and, "
                  "with --split-check auto, where the shares time faster than split operators), or off (the threads "
                  "split each operator)")
      ->capture_default_str();
  cmd->add_option("--split-check", args->split_check,
                  "with --threads > 1, where the threads would split each operator (batch 1, or a batch not run as "
                  "shares): auto (time the first run of each input shape split and on one thread, keep the faster; also "
                  "times a batch's shares against split operators) or off (always split; shares by the reuse rule)")
      ->capture_default_str();
  cmd->add_option("--simd-target", args->simd_target,
                  "run as a CPU whose best SIMD target is this one would (e.g. avx2 on an AVX-512 machine): "
                  "permdnn's kernels, oneDNN and OpenBLAS on its vectors");
  cmd->callback([args] {
    PERMDNN_CHECK(args->threads >= 1, "--threads must be >= 1");
    PERMDNN_CHECK(args->bench || !args->input.empty(), "run: give --input FILE (or --bench)");
    PERMDNN_CHECK(!args->cpu_time || args->threads == 1, "--cpu-time needs --threads 1 (CPU time adds up threads)");
    runtime::Options opt;
    opt.threads = args->threads;
    opt.profile = args->profile;
    opt.int16 = args->int16;
    opt.int8 = args->int8;
    const bool fixed = args->int16 || args->int8;
    opt.zero_skip = args->zero_skip == "never"    ? runtime::ZeroSkip::kNever
                    : args->zero_skip == "always" ? runtime::ZeroSkip::kAlways
                                                  : runtime::ZeroSkip::kAuto;
    if (args->micro_batch == "off") {
      opt.micro_batch = 0;
    } else if (args->micro_batch != "auto") {
      const std::string& t = args->micro_batch;
      const bool digits = !t.empty() && t.size() <= 9 && std::all_of(t.begin(), t.end(), [](char c) {
        return c >= '0' && c <= '9';
      });
      PERMDNN_CHECK(digits && std::stoll(t) >= 1, "--micro-batch must be auto, off or a positive sample count, got '{}'",
                    t);
      opt.micro_batch = std::stoll(t);
      PERMDNN_CHECK(!fixed, "--micro-batch {} does not apply with --{}: a fixed-point run is never split", t,
                    args->int8 ? "int8" : "int16");
    }
    PERMDNN_CHECK(args->batch_parallel == "auto" || args->batch_parallel == "off",
                  "--batch-parallel must be auto or off, got '{}'", args->batch_parallel);
    opt.batch_parallel = args->batch_parallel == "auto";
    PERMDNN_CHECK(args->split_check == "auto" || args->split_check == "off",
                  "--split-check must be auto or off, got '{}'", args->split_check);
    opt.split_check = args->split_check == "auto";
    nlohmann::json simd;
    if (!args->simd_target.empty()) simd = RestrictSimd(args->simd_target);
    Model model = Model::Load(args->model, opt);
    PERMDNN_CHECK(model.inputs().size() == 1, "{}: `permdnn run` handles models with one input (this one has {})",
                  args->model, model.inputs().size());
    if (!runtime::IsFloat(model.inputs()[0].dtype)) {
      // Token ids (e.g. a charlm export, docs/run-format.md): an integer .npy.
      PERMDNN_CHECK(!args->bench, "{}: --bench times float inputs only; this model's input '{}' is {}", args->model,
                    model.inputs()[0].name, runtime::DTypeName(model.inputs()[0].dtype));
      PERMDNN_CHECK(!fixed, "{}: --{} calibrates on float inputs only; this model's input '{}' is {}", args->model,
                    args->int8 ? "int8" : "int16", model.inputs()[0].name, runtime::DTypeName(model.inputs()[0].dtype));
      RunIntegerInput(model, *args);
      return;
    }
    if (args->bench) {
      // With --input the file's batch is timed on its own values (and --output
      // gets the result), so another engine can be timed on the same input.
      std::vector<int64_t> file_shape;
      std::vector<float> file_x;
      if (!args->input.empty()) file_x = ReadInput(args->input, model, &file_shape);
      const std::vector<int64_t> batches =
          args->input.empty() ? ParseInts("--batch", args->batches) : std::vector<int64_t>{file_shape.at(0)};
      nlohmann::json records = nlohmann::json::array();
      std::printf("%-8s %12s %12s %14s %9s %8s %8s\n", "batch", "median ms", "min ms", "samples/s", "per pass", "workers",
                  "threads");
      for (int64_t batch : batches) {
        std::vector<int64_t> shape = model.inputs()[0].shape;
        std::vector<float> x;
        if (!args->input.empty()) {
          shape = file_shape;
          x = std::move(file_x);
        } else {
          PERMDNN_CHECK(!shape.empty(), "{}: the input shape is unknown", args->model);
          shape[0] = batch;
          for (std::size_t d = 1; d < shape.size(); ++d)
            PERMDNN_CHECK(shape[d] >= 0, "{}: --bench needs fixed non-batch input dims", args->model);
          x.resize(static_cast<std::size_t>(runtime::NumElements(shape)));
          std::mt19937 rng(42);
          std::normal_distribution<float> nd(0.0f, 1.0f);
          for (float& v : x) v = nd(rng);
        }
        std::vector<int64_t> oshape = model.OutputShape(shape);
        std::vector<float> y(static_cast<std::size_t>(runtime::NumElements(oshape)));
        if (fixed) model.Calibrate(x, shape);
        for (int w = 0; w < 3; ++w) model.Run(x, shape, y);  // warm-up (plan, caches)
        model.ResetProfile();
        const Timing t = TimeRuns([&] { model.Run(x, shape, y); },
                                  {.warmup = 0, .min_reps = 5, .min_time_s = args->min_time, .max_reps = 100000,
                                   .cpu_time = args->cpu_time});
        const double med = t.median_ms * 1e-3, best = t.min_ms * 1e-3;
        std::printf("%-8lld %12.4f %12.4f %14.0f %9lld %8d %8d\n", static_cast<long long>(batch), med * 1e3,
                    best * 1e3, batch / med, static_cast<long long>(model.SamplesPerPass()), model.BatchWorkers(),
                    model.RunThreads());
        const auto [shares_ms, whole_ms] = model.SharesCheckMs(shape);
        if (shares_ms > 0)
          std::printf("  shares check: %d shares %.4f ms, split operators %.4f ms (best blocks of its rounds): %s\n",
                      static_cast<int>(std::min<int64_t>(args->threads, batch)), shares_ms, whole_ms,
                      model.BatchWorkers() > 1 ? "runs in shares" : "runs split");
        const auto [split_ms, solo_ms] = model.SplitCheckMs(shape);
        if (solo_ms > 0)
          std::printf("  split check: %d threads %.4f ms, one thread %.4f ms (best blocks of its rounds): %s\n",
                      args->threads, split_ms, solo_ms, model.RunThreads() == 1 ? "runs on one thread" : "runs split");
        nlohmann::json rec = {{"model", args->model}, {"batch", batch}, {"threads", args->threads},
                              {"median_s", med}, {"min_s", best}, {"wall_median_s", t.wall_median_ms * 1e-3},
                              {"runs", t.reps}, {"timer", args->cpu_time ? "cpu" : "wall"},
                              {"samples_per_pass", model.SamplesPerPass()}, {"batch_workers", model.BatchWorkers()},
                              {"run_threads", model.RunThreads()}};
        if (shares_ms > 0) rec["shares_check_ms"] = {{"shares", shares_ms}, {"split", whole_ms}};
        if (solo_ms > 0) rec["split_check_ms"] = {{"split", split_ms}, {"one_thread", solo_ms}};
        if (!simd.is_null()) rec.update(simd);
        records.push_back(std::move(rec));
        if (args->profile) std::printf("%s", runtime::FormatProfile(model.Profile()).c_str());
        if (!args->output.empty()) WriteOutput(args->output, y, oshape);
      }
      if (!args->json.empty()) WriteFileAtomic(args->json, records.dump(2) + "\n");
      return;
    }
    std::vector<int64_t> shape;
    std::vector<float> x = ReadInput(args->input, model, &shape);
    std::vector<int64_t> oshape = model.OutputShape(shape);
    std::vector<float> y(static_cast<std::size_t>(runtime::NumElements(oshape)));
    if (fixed) model.Calibrate(x, shape);
    model.Run(x, shape, y);
    std::printf("%s: input %s -> output %s", args->model.c_str(), runtime::ShapeString(shape).c_str(),
                runtime::ShapeString(oshape).c_str());
    if (model.BatchWorkers() > 1)
      std::printf(" (the batch split over %d threads)", model.BatchWorkers());
    if (args->threads > 1 && model.BatchWorkers() == 1 && model.RunThreads() == 1)
      std::printf(" (on one thread, the split check's choice over %d)", args->threads);
    if (model.SamplesPerPass() < shape.at(0) / model.BatchWorkers())
      std::printf(" (%lld samples per pass)", static_cast<long long>(model.SamplesPerPass()));
    std::printf("\n");
    if (!args->output.empty()) {
      WriteOutput(args->output, y, oshape);
    } else if (oshape.size() == 2) {
      for (int64_t r = 0; r < std::min<int64_t>(oshape[0], 10); ++r) {
        const float* row = y.data() + r * oshape[1];
        std::printf("  sample %lld: argmax %lld\n", static_cast<long long>(r),
                    static_cast<long long>(std::max_element(row, row + oshape[1]) - row));
      }
    }
    if (args->profile) {
      // The first run plans the model and fills the caches (OpenBLAS and
      // oneDNN set-up, first-touch pages, cold weights): its per-node times
      // overstate the steady state several-fold (resnet18 p = 8's FC layer
      // 0.2-0.4 ms against 0.10). Profile warm runs instead: two more warm-up
      // runs, then the means of at least 5 runs and 0.2 s (so --profile costs
      // at least 7 more runs of the input).
      for (int w = 0; w < 2; ++w) model.Run(x, shape, y);
      model.ResetProfile();
      const Timing t = TimeRuns([&] { model.Run(x, shape, y); },
                                {.warmup = 0, .min_reps = 5, .min_time_s = 0.2, .max_reps = 1000});
      std::printf("profile: per-call means over %d runs after 3 warm-up runs\n", t.reps);
      std::printf("%s", runtime::FormatProfile(model.Profile()).c_str());
    }
  });
}

PERMDNN_REGISTER_COMMAND(AddRunCommand);

}  // namespace permdnn::cli
