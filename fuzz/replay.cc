// permdnn_fuzz_replay: runs saved fuzz inputs through their targets without
// libFuzzer, so that `make test` (a plain build, no sanitizer needed) proves
// every crash ever found stays fixed. A crash here is the test failing: the
// line naming the file is printed before the file runs.
//
//   permdnn_fuzz_replay [--target NAME] PATH...
//
// A file runs through --target, else through the target its directory is
// named after (fuzz/regressions/<target>/<file>); a directory is walked.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/targets.h"

namespace fs = std::filesystem;
using permdnn::fuzz::FindTarget;
using permdnn::fuzz::Target;

namespace {

int Usage() {
  std::fprintf(stderr, "usage: permdnn_fuzz_replay [--target NAME] PATH...\ntargets:");
  for (const Target& t : permdnn::fuzz::Targets()) std::fprintf(stderr, " %s", t.name);
  std::fprintf(stderr, "\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const Target* forced = nullptr;
  std::vector<fs::path> roots;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--target" && i + 1 < argc) {
      forced = FindTarget(argv[++i]);
      if (!forced) return Usage();
    } else if (!a.empty() && a[0] == '-') {
      return Usage();
    } else {
      roots.emplace_back(a);
    }
  }
  if (roots.empty()) return Usage();
  std::vector<fs::path> files;
  for (const fs::path& r : roots) {
    if (fs::is_directory(r)) {
      for (const auto& e : fs::recursive_directory_iterator(r))
        if (e.is_regular_file() && e.path().filename().string()[0] != '.') files.push_back(e.path());
    } else if (fs::is_regular_file(r)) {
      files.push_back(r);
    } else {
      std::fprintf(stderr, "permdnn_fuzz_replay: %s: no such file or directory\n", r.c_str());
      return 1;
    }
  }
  std::sort(files.begin(), files.end());
  int replayed = 0;
  double slowest = 0;
  fs::path slowest_file;
  for (const fs::path& f : files) {
    const Target* t = forced ? forced : FindTarget(f.parent_path().filename().string());
    if (!t) {
      std::fprintf(stderr, "permdnn_fuzz_replay: %s: its directory names no target (use --target)\n", f.c_str());
      return 1;
    }
    std::ifstream in(f, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::printf("replay %-12s %s\n", t->name, f.c_str());
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    t->fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > slowest) slowest = s, slowest_file = f;
    ++replayed;
  }
  std::printf("%d inputs replayed without a crash; slowest %.3f s (%s)\n", replayed, slowest, slowest_file.c_str());
  return replayed > 0 ? 0 : 1;
}
