// libFuzzer target for the ONNX loader: any byte string must either load
// (and then plan and run once on zeros, with a small arena limit) or throw
// permdnn::Error — never crash, hang or leak. Build (clang):
//   CXX=clang++ cmake -S . -B build/fuzz -DPERMDNN_FUZZ=ON -DPERMDNN_BUILD_TESTS=OFF \
//       -DPERMDNN_BUILD_BENCHMARKS=OFF -DPERMDNN_BUILD_TRAINING=OFF
//   cmake --build build/fuzz --target permdnn_onnx_fuzz
//   build/fuzz/fuzz/permdnn_onnx_fuzz fuzz/corpus -max_total_time=600
#include <cstdint>
#include <string_view>
#include <vector>

#include "permdnn/core/error.h"
#include "permdnn/runtime/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace permdnn::runtime;
  Options opt;
  opt.max_arena_bytes = int64_t{64} << 20;
  try {
    Model m = Model::FromBytes(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz", opt);
    std::vector<Tensor> inputs;
    for (const ValueInfo& v : m.inputs()) {
      std::vector<int64_t> shape = v.shape;
      int64_t n = 1;
      for (int64_t& d : shape) {
        d = d < 0 ? 1 : d;
        n = (d != 0 && n > (int64_t{1} << 24) / d) ? (int64_t{1} << 25) : n * d;
      }
      if (n > (int64_t{1} << 22)) return 0;
      inputs.emplace_back(v.dtype, shape);
    }
    m.Run(inputs);
  } catch (const permdnn::Error&) {
  }
  return 0;
}
