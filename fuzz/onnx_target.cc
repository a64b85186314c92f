// Fuzz target "onnx" (and "onnx_struct"): any byte string either loads as a
// model (then its eval metadata is read, and it plans and runs on small
// inputs) or throws permdnn::Error.
// Bounds keep one input cheap: a 64 MiB arena, inputs of at most 2^20
// elements; open dimensions are taken as 1, then as 2 (a second plan).
#include <cstring>
#include <string_view>
#include <vector>

#include "fuzz/targets.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/model.h"

namespace permdnn::fuzz {

namespace {

using runtime::DType;
using runtime::Model;
using runtime::Tensor;
using runtime::ValueInfo;

constexpr int64_t kMaxInputElements = int64_t{1} << 20;

// The inputs of `m` with open dims set to `open`, filled with small values
// (floats in [-1, 1], integers in [0, 3)); empty when too large.
std::vector<Tensor> MakeInputs(const Model& m, int64_t open) {
  std::vector<Tensor> inputs;
  for (const ValueInfo& v : m.inputs()) {
    std::vector<int64_t> shape = v.shape;
    int64_t n = 1;
    for (int64_t& d : shape) {
      d = d < 0 ? open : d;
      if (d > kMaxInputElements || (d != 0 && n > kMaxInputElements / d)) return {};
      n *= d;
    }
    Tensor t(v.dtype, shape);
    if (runtime::IsFloat(v.dtype)) {
      for (int64_t i = 0; i < n; ++i) t.f()[i] = static_cast<float>(i % 9) * 0.25f - 1.0f;
    } else {
      for (int64_t i = 0; i < n; ++i) t.i()[i] = i % 3;
    }
    inputs.push_back(std::move(t));
  }
  return inputs;
}

void Exercise(Model& m) {
  // `permdnn eval` reads the preprocessing from the file's metadata.
  Preprocess pre;
  runtime::Layout layout = runtime::Layout::kNchw;
  runtime::DefaultPreprocess(m, &pre, &layout);
  bool open = false;
  for (const ValueInfo& v : m.inputs())
    for (int64_t d : v.shape) open = open || d < 0;
  for (int64_t batch : {int64_t{1}, int64_t{2}}) {
    if (batch == 2 && !open) break;
    std::vector<Tensor> in = MakeInputs(m, batch);
    if (in.size() != m.inputs().size()) return;
    m.Run(in);
    // The span API of `permdnn run`, and int16 (PermDiagMatMul's fixed
    // point) when the model qualifies.
    if (in.size() == 1 && runtime::IsFloat(in[0].dtype())) {
      std::vector<int64_t> oshape = m.OutputShape(in[0].shape());
      const int64_t on = runtime::NumElements(oshape);
      if (on > kMaxInputElements) return;
      std::vector<float> y(static_cast<std::size_t>(on));
      m.Run(in[0].floats(), in[0].shape(), y);
      m.EnableInt16(true);
      m.Calibrate(in[0].floats(), in[0].shape());
      m.Run(in[0].floats(), in[0].shape(), y);
      m.EnableInt16(false);
    }
  }
}

}  // namespace

int FuzzOnnx(const uint8_t* data, std::size_t size) {
  runtime::Options opt;
  opt.max_arena_bytes = int64_t{64} << 20;
  try {
    Model m = Model::FromBytes(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.onnx", opt);
    Exercise(m);
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace permdnn::fuzz
