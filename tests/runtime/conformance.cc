// ONNX backend conformance: runs every test case under the given
// directories (Debian's libonnx-testdata: data/node, data/pytorch-converted)
// through permdnn::runtime and compares with the expected outputs at the
// backend tests' default tolerance (|got − want| <= atol + rtol·|want|,
// rtol = 1e-3, atol = 1e-7). A case whose model uses an unsupported
// operator, dtype or attribute is skipped with the reason; any other error
// or mismatch is a failure. Prints "N passed, M failed" and exits non-zero
// on a failure or when fewer than --min-supported cases ran.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"

namespace fs = std::filesystem;
using namespace permdnn::runtime;

namespace {

std::string Compare(const Tensor& want, const Tensor& got, double rtol, double atol) {
  if (want.shape() != got.shape())
    return "shape " + ShapeString(got.shape()) + ", expected " + ShapeString(want.shape());
  if (IsFloat(want.dtype()) != IsFloat(got.dtype())) return "dtype differs";
  for (int64_t i = 0; i < want.size(); ++i) {
    if (IsFloat(want.dtype())) {
      const double w = want.f()[i], g = got.f()[i];
      if (std::isnan(w) && std::isnan(g)) continue;
      if (std::isinf(w) && w == g) continue;
      if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w)))
        return fmt::format("element {}: got {}, expected {}", i, g, w);
    } else if (want.i()[i] != got.i()[i]) {
      return fmt::format("element {}: got {}, expected {}", i, got.i()[i], want.i()[i]);
    }
  }
  return "";
}

std::vector<fs::path> Sorted(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path());
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) {
    auto num = [](const fs::path& p) {
      std::string s = p.stem().string();
      auto k = s.find_last_of('_');
      return std::atoi(s.c_str() + k + 1);
    };
    return num(a) < num(b);
  });
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int min_supported = 0;
  bool verbose = false;
  double perturb = 0;  // self-check: add this to every float output (expect failures)
  std::vector<fs::path> roots;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    if (a == "--min-supported" && k + 1 < argc) min_supported = std::atoi(argv[++k]);
    else if (a == "-v") verbose = true;
    else if (a == "--perturb" && k + 1 < argc) perturb = std::atof(argv[++k]);
    else roots.emplace_back(a);
  }
  int passed = 0, failed = 0;
  std::vector<std::string> skipped, failures;
  for (const fs::path& root : roots) {
    if (!fs::is_directory(root)) {
      std::fprintf(stderr, "conformance: %s is not a directory (install libonnx-testdata)\n", root.c_str());
      return 1;
    }
    std::vector<fs::path> cases;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory() && fs::exists(e.path() / "model.onnx")) cases.push_back(e.path());
    std::sort(cases.begin(), cases.end());
    for (const fs::path& dir : cases) {
      const std::string name = root.filename().string() + "/" + dir.filename().string();
      try {
        Model model = Model::Load((dir / "model.onnx").string());
        std::string problem;
        int sets = 0;
        for (const fs::path& set : Sorted(dir, "test_data_set_")) {
          std::vector<Tensor> inputs, want;
          for (const fs::path& f : Sorted(set, "input_")) inputs.push_back(ReadTensorProtoFile(f.string()));
          for (const fs::path& f : Sorted(set, "output_")) want.push_back(ReadTensorProtoFile(f.string()));
          std::vector<Tensor> got = model.Run(inputs);
          for (Tensor& t : got)
            if (perturb != 0 && IsFloat(t.dtype()))
              for (float& v : t.floats()) v += static_cast<float>(perturb * (1 + std::fabs(v)));
          if (got.size() != want.size()) problem = fmt::format("{} outputs, expected {}", got.size(), want.size());
          for (std::size_t o = 0; problem.empty() && o < want.size(); ++o) {
            problem = Compare(want[o], got[o], 1e-3, 1e-7);
            if (!problem.empty()) problem = fmt::format("{}: output {}: {}", set.filename().string(), o, problem);
          }
          ++sets;
          if (!problem.empty()) break;
        }
        if (problem.empty() && sets == 0) problem = "no test_data_set";
        if (problem.empty()) {
          ++passed;
          if (verbose) std::printf("PASS %s\n", name.c_str());
        } else {
          ++failed;
          failures.push_back(name + ": " + problem);
        }
      } catch (const UnsupportedError& e) {
        std::string why = e.what();
        auto k = why.find(": node '");
        if (k == std::string::npos) k = why.find(": graph input");
        skipped.push_back(name + ": " + (k == std::string::npos ? why : why.substr(k + 2)));
      } catch (const std::exception& e) {
        ++failed;
        failures.push_back(name + ": error: " + e.what());
      }
    }
  }
  std::printf("skipped (unsupported) %zu:\n", skipped.size());
  for (const auto& s : skipped) std::printf("  SKIP %s\n", s.c_str());
  for (const auto& f : failures) std::printf("  FAIL %s\n", f.c_str());
  std::printf("%d passed, %d failed (%zu skipped as unsupported)\n", passed, failed, skipped.size());
  if (passed + failed < min_supported) {
    std::printf("only %d supported cases, expected at least %d\n", passed + failed, min_supported);
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
