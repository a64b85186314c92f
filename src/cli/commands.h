// Each permdnn subcommand lives in its own file and adds itself to the app
// through one of these functions; main.cc only wires them together.
#pragma once

#include <CLI/CLI.hpp>

namespace permdnn::cli {

void AddBenchCommand(CLI::App& app);
void AddDemoCommand(CLI::App& app);

}  // namespace permdnn::cli
