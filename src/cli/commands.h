// Each permdnn subcommand lives in its own file and registers itself here
// with PERMDNN_REGISTER_COMMAND(AddXxxCommand); main.cc only wires the
// registered functions into the app. Command files are compiled straight
// into the permdnn executable (target_sources), so their static registrars
// always run; a component that is not built (e.g. training without
// LibTorch) simply contributes no command.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace permdnn::cli {

using AddCommandFn = void (*)(CLI::App& app);

// The registered commands in registration order.
std::vector<AddCommandFn>& CommandRegistry();

// Runs one permdnn command line (without the program name) in-process, as
// if typed: `permdnn demo` chains the pipeline's commands this way, so every
// step prints exactly what the stand-alone command prints. Errors propagate
// as exceptions (permdnn::Error, CLI::ParseError).
void RunCommandLine(const std::vector<std::string>& args);

struct CommandRegistrar {
  explicit CommandRegistrar(AddCommandFn fn) { CommandRegistry().push_back(fn); }
};

}  // namespace permdnn::cli

#define PERMDNN_REGISTER_COMMAND(fn) \
  static ::permdnn::cli::CommandRegistrar permdnn_registrar_##fn(&fn)
