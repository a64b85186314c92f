// permdnn: the command-line entry point. Subcommands register themselves
// (commands.h); errors from the library become one message and exit code 1.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "permdnn/core/error.h"
#include "permdnn/kernels/dispatch.h"

namespace permdnn::cli {
std::vector<AddCommandFn>& CommandRegistry() {
  static std::vector<AddCommandFn> registry;
  return registry;
}

namespace {
void AddCommon(CLI::App& app, bool* reference) {
  app.require_subcommand(1);
  app.add_flag("--reference-kernels", *reference,
               "run the reference kernels instead of SIMD (debugging; same as PERMDNN_KERNELS=reference)");
  app.parse_complete_callback([reference] {
    if (*reference) permdnn::kernels::SetPath(permdnn::kernels::KernelPath::kReference);
  });
  for (auto add : CommandRegistry()) add(app);
}
}  // namespace

void RunCommandLine(const std::vector<std::string>& args) {
  CLI::App app{"permdnn"};
  bool reference = false;
  AddCommon(app, &reference);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them reversed
  app.parse(reversed);
}

}  // namespace permdnn::cli

int main(int argc, char** argv) {
  CLI::App app{"permdnn: hardware-friendly structured compression of neural networks"};
  bool reference = false;
  permdnn::cli::AddCommon(app, &reference);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const permdnn::Error& e) {
    std::fprintf(stderr, "permdnn: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "permdnn: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
