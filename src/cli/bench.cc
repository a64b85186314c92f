// permdnn bench: kernel speed of permdiag against dense OpenBLAS and CSR
// (Eigen) on the EIE layers or given shapes. See bench_runner.h.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>

#include "cli/args.h"
#include "cli/bench_runner.h"
#include "cli/commands.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/kernels/dispatch.h"

namespace permdnn::cli {
namespace {

// This process's command line (/proc/self/cmdline), without argv[0] and
// without the options the parent replaces in its children: --simd-target,
// --json and --markdown with their values, and --blas-per-target. Global
// options before `bench` (--reference-kernels) and flag values stay.
std::vector<std::string> ChildArguments() {
  const std::vector<std::string> args = OwnCommandLine();
  std::vector<std::string> out;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool valued = a == "--simd-target" || a == "--json" || a == "--markdown";
    if (valued) {
      ++i;  // its value
      continue;
    }
    if (a == "--blas-per-target" || a.rfind("--blas-per-target=", 0) == 0 || a.rfind("--simd-target=", 0) == 0 ||
        a.rfind("--json=", 0) == 0 || a.rfind("--markdown=", 0) == 0)
      continue;
    out.push_back(a);
  }
  return out;
}

// --blas-per-target: the grid under each SIMD target in a child process of
// its own (this command line with that one target and a temporary --json),
// with OPENBLAS_CORETYPE set to the OpenBLAS kernels of a CPU whose best
// target it is (OpenBLAS picks its core once, at load). So the AVX2 pass
// compares permdnn's AVX2 code with OpenBLAS's AVX2 sgemm, as on an
// AVX2-only machine, instead of with this CPU's AVX-512 sgemm. The
// children's stdout goes to stderr; `cores` gets target -> OpenBLAS core.
std::vector<BenchRecord> RunTargetsInChildren(const std::vector<std::string>& names, nlohmann::json* cores) {
  namespace fs = std::filesystem;
  std::vector<std::string> targets;
  for (const std::string& name : names) targets.push_back(kernels::SimdTargetName(ResolveSimdTarget(name)));
  const char* self = "/proc/self/exe";  // this binary, even if its file was replaced meanwhile
  const std::vector<std::string> common = ChildArguments();
  std::vector<BenchRecord> all;
  *cores = nlohmann::json::object();
  for (const std::string& target : targets) {
    const std::string json = (fs::temp_directory_path() /
                              fmt::format("permdnn-bench-{}-{}.json", static_cast<long>(getpid()), target))
                                 .string();
    struct RemoveAtExit {
      const std::string& path;
      ~RemoveAtExit() {
        std::error_code ec;
        fs::remove(path, ec);
      }
    } remove_json{json};
    std::vector<std::string> argv = {"permdnn"};
    argv.insert(argv.end(), common.begin(), common.end());
    for (const char* a : {"--simd-target", target.c_str(), "--json", json.c_str()}) argv.emplace_back(a);
    const std::string core = OpenBlasCoreForTarget(target);
    std::vector<std::string> env = EnvironmentForOpenBlasCore(core);
    std::vector<char*> av = CStrings(argv), ev = CStrings(env);
    std::fprintf(stderr, "SIMD target %s in a child process (OpenBLAS core %s)\n", target.c_str(),
                 core.empty() ? "of its own choice" : core.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
    pid_t pid = 0;
    const int err = posix_spawn(&pid, self, &actions, nullptr, av.data(), ev.data());
    posix_spawn_file_actions_destroy(&actions);
    PERMDNN_CHECK(err == 0, "--blas-per-target: cannot start {} for SIMD target {}: {}", self, target,
                  std::strerror(err));
    int status = 0;
    pid_t waited;
    while ((waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    PERMDNN_CHECK(waited == pid, "--blas-per-target: waiting for the bench of SIMD target {}: {}", target,
                  std::strerror(errno));
    PERMDNN_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "--blas-per-target: the bench for SIMD target {} failed ({} {})", target,
                  WIFEXITED(status) ? "exit status" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    nlohmann::json j;
    {
      std::ifstream in(json);
      PERMDNN_CHECK(in.good(), "--blas-per-target: the bench for SIMD target {} wrote no {}", target, json);
      j = nlohmann::json::parse(in);
    }
    std::vector<BenchRecord> records = BenchRecordsFromJson(j.at("records"));
    all.insert(all.end(), records.begin(), records.end());
    (*cores)[target] = j.at("environment").at("openblas_corename");
  }
  return all;
}

}  // namespace


void AddBenchCommand(CLI::App& app) {
  struct Args {
    std::string layers = "eie", formats = "permdiag,dense,csr", ps = "4,8,16", batches = "1,64",
                acts = "1,0.35", threads = "1,2", json, markdown, simd_targets, kernel;
    double min_time = 0.2;
    int reps = 5;
    bool cpu_time = false, blas_per_target = false;
    int rounds = 1;
    double group_density = 0.5, ternary_t = 0.05;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("bench", "time permdiag kernels against dense OpenBLAS and CSR (Eigen)");
  cmd->add_option("--layers", args->layers, "eie | layer names | MxN shapes (m outputs x n inputs), comma separated")
      ->capture_default_str();
  cmd->add_option("--format", args->formats, "formats: permdiag,dense,csr,circulant,read,permdiag-column,ternary,ternary-i16,ternary-u8 (ternary: p is the group length; ternary-i16 / ternary-u8: the same matrix on int16 / 8-bit inputs at batch > 1, the product on X quantized before the timing; group_ch x taps for a conv given as its im2col matrix MxN with the output positions x batch as --batch; read: a bare SIMD read of permdiag's values at batch 1, one thread: the read bound; permdiag-column: shared offsets, its dense-input / zero-skipping / grouped-GEMM products)")->capture_default_str();
  cmd->add_option("--p", args->ps, "block sizes")->capture_default_str();
  cmd->add_option("--batch", args->batches, "batch sizes")->capture_default_str();
  cmd->add_option("--act-density", args->acts, "fractions of nonzero inputs")->capture_default_str();
  cmd->add_option("--threads", args->threads, "thread counts")->capture_default_str();
  cmd->add_option("--min-time", args->min_time, "seconds per measurement (after a warm-up)")->capture_default_str();
  cmd->add_option("--reps", args->reps, "minimum repetitions per measurement")->capture_default_str();
  cmd->add_flag("--cpu-time", args->cpu_time,
                "time one-thread runs by process CPU time instead of wall time (shared machine); "
                "runs on more threads stay wall clock");
  cmd->add_option("--rounds", args->rounds,
                  "run the grid this many times, --min-time split over them; each record is the median of "
                  "its round medians")
      ->capture_default_str();
  cmd->add_option("--simd-target", args->simd_targets,
                  "run the grid under each of these Highway targets in turn, e.g. avx2,avx3 (default: the best "
                  "this CPU runs)");
  cmd->add_option("--kernel", args->kernel,
                  "force this row of the kernel table for its op (e.g. ternary.matmul_u8.madd: the row a CPU "
                  "without VNNI runs); an unknown name lists the rows of the SIMD target in force");
  cmd->add_flag("--blas-per-target", args->blas_per_target,
                "with --simd-target: run each target in a process of its own, OpenBLAS on the kernels of a CPU "
                "whose best target it is (AVX2: Haswell, SSE4: Nehalem; AVX-512: its own choice), so every "
                "target meets the sgemm it would meet on such a machine");
  cmd->add_option("--group-density", args->group_density, "ternary: fraction of PE-wise groups kept")
      ->capture_default_str();
  cmd->add_option("--ternary-t", args->ternary_t, "ternary: threshold t of delta = t * max|w| per output row")
      ->capture_default_str();
  cmd->add_option("--json", args->json, "write records to this JSON file");
  cmd->add_option("--markdown", args->markdown, "write the tables as Markdown to this file (docs/benchmarks.md)");
  cmd->callback([args, cmd] {
    BenchOptions o;
    o.layers = ParseLayerList(args->layers);
    o.formats = SplitList(args->formats);
    o.ps = ParseNumberList<int>("--p", args->ps);
    o.batches = ParseNumberList<int64_t>("--batch", args->batches);
    o.act_densities = ParseNumberList<double>("--act-density", args->acts);
    o.threads = ParseNumberList<int>("--threads", args->threads);
    o.min_time_s = args->min_time;
    o.min_reps = args->reps;
    o.cpu_time = args->cpu_time;
    o.rounds = args->rounds;
    o.simd_targets = SplitList(args->simd_targets);
    o.kernel = args->kernel;
    o.ternary_group_density = args->group_density;
    o.ternary_threshold = args->ternary_t;
    nlohmann::json env = BenchEnvironment();
    env["rounds"] = o.rounds;
    env["timer"] = o.cpu_time ? "process CPU time (one-thread rows), wall clock (more threads)" : "wall clock";
    const std::string core = args->blas_per_target ? std::string("per SIMD target (--blas-per-target)")
                                                   : env["openblas_corename"].get<std::string>();
    std::printf("permdnn bench: %s, SIMD %s, kernels %s, OpenBLAS core %s, %s\n", env["cpu"].get<std::string>().c_str(),
                env["simd_target"].get<std::string>().c_str(), env["kernel_path"].get<std::string>().c_str(),
                core.c_str(), env["timer"].get<std::string>().c_str());
    if (!env["OPENBLAS_CORETYPE"].is_null() && !args->blas_per_target)
      std::printf("note: OPENBLAS_CORETYPE=%s is set; OpenBLAS may not run its best kernels "
                  "(run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` for fair numbers)\n",
                  env["OPENBLAS_CORETYPE"].get<std::string>().c_str());
    std::fflush(stdout);
    PERMDNN_CHECK(!args->blas_per_target || !o.simd_targets.empty(),
                  "--blas-per-target needs --simd-target (the targets to run in processes of their own)");
    std::vector<BenchRecord> records;
    if (args->blas_per_target) {
      CheckKernelRow(o);
      nlohmann::json cores;
      records = RunTargetsInChildren(o.simd_targets, &cores);
      env["openblas_per_target"] = cores;
    } else {
      records = RunBench(o);
    }
    std::printf("\n%s", BenchTable(records).c_str());
    nlohmann::json targets;
    std::string t = BenchTargets(records, &targets);
    if (!t.empty()) std::printf("\nTargets (one thread unless stated, fp32):\n%s", t.c_str());
    const std::string skips = SkipCrossovers(records);
    if (!skips.empty())
      std::printf("\nZero-skipping crossover (batch 1; measured as the runtime does at load):\n%s", skips.c_str());
    nlohmann::json best;
    const std::string b = BestTargets(records, &best);
    if (!b.empty()) std::printf("\nFastest SIMD target per kernel and p (one thread, dense inputs):\n%s", b.c_str());
    if (!args->json.empty()) {
      nlohmann::json out = {{"command", "bench"}, {"environment", env}, {"records", BenchToJson(records)},
                            {"targets", targets}};
      if (!best.is_null()) out["best_simd_target"] = best;
      WriteFileAtomic(args->json, out.dump(2) + "\n");
      std::printf("wrote %s\n", args->json.c_str());
    }
    if (!args->markdown.empty()) {
      std::string command = "permdnn bench";
      for (const auto& opt : cmd->get_options())
        if (opt->count() > 0 && opt->get_name() != "--markdown" && opt->get_name() != "--json")
          command += " " + opt->get_name() + (opt->get_expected_min() == 0 ? "" : " " + opt->as<std::string>());
      WriteFileAtomic(args->markdown, BenchMarkdown(records, env, command));
      std::printf("wrote %s\n", args->markdown.c_str());
    }
  });
}

PERMDNN_REGISTER_COMMAND(AddBenchCommand);

}  // namespace permdnn::cli
