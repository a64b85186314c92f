// permdnn demo: the main job on the default data set. Until the training,
// runtime and simulator stages exist it is the kernel benchmark on the nine
// EIE layers at p = 8.
#include <cstdio>

#include "cli/bench_runner.h"
#include "cli/commands.h"

namespace permdnn::cli {

void AddDemoCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("demo", "the whole pipeline (for now: permdiag p=8 kernel speed on the EIE layers)");
  auto quick = std::make_shared<bool>(false);
  cmd->add_flag("--quick", *quick, "shorter measurements");
  cmd->callback([quick] {
    BenchOptions o;
    o.layers = EieLayers();
    o.ps = {8};
    o.min_time_s = *quick ? 0.05 : 0.15;
    o.min_reps = *quick ? 3 : 5;
    nlohmann::json env = BenchEnvironment();
    std::printf("permdnn demo: permuted-diagonal (p=8) vs dense OpenBLAS vs CSR (Eigen) on the EIE layers\n");
    std::printf("CPU %s, SIMD %s, OpenBLAS core %s\n\n", env["cpu"].get<std::string>().c_str(),
                env["simd_target"].get<std::string>().c_str(), env["openblas_corename"].get<std::string>().c_str());
    std::fflush(stdout);
    std::vector<BenchRecord> records = RunBench(o);
    std::printf("%s", BenchTable(records).c_str());
    std::string t = BenchTargets(records);
    if (!t.empty()) std::printf("\nTargets at p=8:\n%s", t.c_str());
  });
}

PERMDNN_REGISTER_COMMAND(AddDemoCommand);

}  // namespace permdnn::cli
