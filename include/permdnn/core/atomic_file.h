// Writing output files so that a crash or Ctrl-C never leaves a half-written
// file behind: write to "<path>.tmp.<pid>", flush, then rename over <path>
// (atomic on POSIX within one file system).
#pragma once

#include <string>
#include <string_view>

namespace permdnn {

// Writes `contents` to `path` atomically; throws Error naming the path and
// the system error on failure (the temporary is removed).
void WriteFileAtomic(const std::string& path, std::string_view contents);

}  // namespace permdnn
