// Fuzz target "onnx_tools": the ONNX readers besides the runtime's loader,
// on the same model bytes. `permdnn sim --model`
// (runtime::InspectCompressedLayers: every compressed layer's stored arrays
// and attributes, each reconstructed densely; WithCapturedOutputs, the
// capture model sim builds to get each layer's input) and `permdnn compress`
// (runtime::CompressOnnx with a SPEC and `portable` picked from the input's
// size; a failed compress must leave no output file). The corpus seeds are
// those of "onnx"; the binary uses the structure-aware mutator
// (onnx_mutator.cc). ONNX fine-tuning (`permdnn compress --epochs`) is
// LibTorch code and not built here; its graph walk is runtime::OnnxGraph,
// which the capture model reaches. The same bytes also go through
// runtime::ParseTensorProto (the .pb tensor files of the ONNX backend tests).
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/targets.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/inspect.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"

namespace permdnn::fuzz {

namespace {

constexpr int64_t kMaxDense = int64_t{1} << 20;

void Inspect(std::string_view bytes) {
  const runtime::ModelInspection ins = runtime::InspectCompressedLayers(bytes, "fuzz.onnx");
  std::vector<std::string> capture;
  for (const runtime::CompressedFcLayer& l : ins.layers) {
    if (l.conv) (void)l.conv->Describe();
    if (l.in_features > 0 && l.out_features > 0 && l.in_features <= kMaxDense / l.out_features) (void)l.ToDense();
    bool is_input = false;
    for (const std::string& in : ins.graph_inputs) is_input = is_input || in == l.input;
    if (!is_input) capture.push_back(l.input);
  }
  if (capture.empty()) return;
  const std::string probe = runtime::WithCapturedOutputs(bytes, "fuzz.onnx", capture);
  runtime::Options opt;
  opt.max_arena_bytes = int64_t{64} << 20;
  (void)runtime::Model::FromBytes(probe, "capture.onnx", opt);
}

void Compress(const uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  static constexpr const char* kSpecs[] = {"permdiag:p=2", "circulant:p=2", "prune:density=0.5",
                                           "prune:density=0.5,bits=2"};
  const fs::path in = fs::path(ScratchDir()) / "compress-in.onnx";
  const fs::path out = fs::path(ScratchDir()) / "compress-out.onnx";
  std::error_code ec;
  fs::remove(out, ec);
  WriteInputFiles("onnx", data, size, ScratchDir());
  fs::rename(fs::path(ScratchDir()) / "model.onnx", in);
  runtime::CompressOptions o;
  o.spec = kSpecs[size % 4];
  o.portable = (size / 4) % 2 == 1;
  try {
    runtime::CompressOnnx(in.string(), out.string(), o);
  } catch (const Error&) {
    // A failed compress must not leave a file behind (core/atomic_file.h).
    if (fs::exists(out)) __builtin_trap();
  }
}

}  // namespace

int FuzzOnnxTools(const uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    Inspect(bytes);
  } catch (const Error&) {
  }
  try {
    (void)runtime::ParseTensorProto(bytes, "fuzz.pb");
  } catch (const Error&) {
  }
  Compress(data, size);
  return 0;
}

}  // namespace permdnn::fuzz
