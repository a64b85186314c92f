// permdnn bench: kernel speed of permdiag against dense OpenBLAS and CSR
// (Eigen) on the EIE layers or given shapes. See bench_runner.h.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include <fmt/format.h>

#include "cli/args.h"
#include "cli/bench_runner.h"
#include "cli/commands.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"

namespace permdnn::cli {


void AddBenchCommand(CLI::App& app) {
  struct Args {
    std::string layers = "eie", formats = "permdiag,dense,csr", ps = "4,8,16", batches = "1,64",
                acts = "1,0.35", threads = "1,2", json, markdown, simd_targets;
    double min_time = 0.2;
    int reps = 5;
    bool cpu_time = false;
    int rounds = 1;
    double group_density = 0.5, ternary_t = 0.05;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("bench", "time permdiag kernels against dense OpenBLAS and CSR (Eigen)");
  cmd->add_option("--layers", args->layers, "eie | layer names | MxN shapes (m outputs x n inputs), comma separated")
      ->capture_default_str();
  cmd->add_option("--format", args->formats, "formats: permdiag,dense,csr,circulant,read,permdiag-column,ternary (ternary: p is the group length, group_ch x taps for a conv given as its im2col matrix MxN with the output positions x batch as --batch; read: a bare SIMD read of permdiag's values at batch 1, one thread: the read bound; permdiag-column: shared offsets, its dense-input / zero-skipping / grouped-GEMM products)")->capture_default_str();
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
    o.ternary_group_density = args->group_density;
    o.ternary_threshold = args->ternary_t;
    nlohmann::json env = BenchEnvironment();
    env["rounds"] = o.rounds;
    env["timer"] = o.cpu_time ? "process CPU time (one-thread rows), wall clock (more threads)" : "wall clock";
    std::printf("permdnn bench: %s, SIMD %s, kernels %s, OpenBLAS core %s, %s\n", env["cpu"].get<std::string>().c_str(),
                env["simd_target"].get<std::string>().c_str(), env["kernel_path"].get<std::string>().c_str(),
                env["openblas_corename"].get<std::string>().c_str(), env["timer"].get<std::string>().c_str());
    if (!env["OPENBLAS_CORETYPE"].is_null())
      std::printf("note: OPENBLAS_CORETYPE=%s is set; OpenBLAS may not run its best kernels "
                  "(run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` for fair numbers)\n",
                  env["OPENBLAS_CORETYPE"].get<std::string>().c_str());
    std::fflush(stdout);
    std::vector<BenchRecord> records = RunBench(o);
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
