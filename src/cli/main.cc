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
}  // namespace permdnn::cli

int main(int argc, char** argv) {
  CLI::App app{"permdnn: hardware-friendly structured compression of neural networks"};
  app.require_subcommand(1);
  bool reference = false;
  app.add_flag("--reference-kernels", reference,
               "run the reference kernels instead of SIMD (debugging; same as PERMDNN_KERNELS=reference)");
  app.parse_complete_callback([&] {
    if (reference) permdnn::kernels::SetPath(permdnn::kernels::KernelPath::kReference);
  });
  for (auto add : permdnn::cli::CommandRegistry()) add(app);
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
