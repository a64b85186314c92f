// Embedding permdnn::runtime: load a model, inspect it, run a batch.
// Build: link permdnn::runtime (see src/runtime/CMakeLists.txt).
#include <cstdio>
#include <vector>

#include "permdnn/runtime/model.h"

int main(int argc, char** argv) {
  if (argc < 2) return std::fprintf(stderr, "usage: %s model.onnx\n", argv[0]), 2;
  try {
    permdnn::runtime::Model model = permdnn::runtime::Model::Load(argv[1], {.threads = 2});
    for (const auto& in : model.inputs())
      std::printf("input %s %s\n", in.name.c_str(), permdnn::runtime::ShapeString(in.shape).c_str());
    std::vector<int64_t> shape = model.inputs()[0].shape;
    shape[0] = 4;                                           // batch of 4 (any size works)
    std::vector<float> x(permdnn::runtime::NumElements(shape), 0.5f);
    std::vector<float> y(permdnn::runtime::NumElements(model.OutputShape(shape)));
    std::vector<int64_t> out = model.Run(x, shape, y);     // spans in, spans out
    std::printf("output %s, y[0] = %g\n", permdnn::runtime::ShapeString(out).c_str(), y[0]);
  } catch (const permdnn::Error& e) {
    return std::fprintf(stderr, "error: %s\n", e.what()), 1;
  }
  return 0;
}
