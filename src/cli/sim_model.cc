// `permdnn sim --model`: the glue between the runtime (reads the model's
// compressed layers and captures their input activations on Fashion-MNIST
// test images, preprocessed as `permdnn eval` does) and the simulator
// (sim/model.h), which never depends on the runtime.
#include "cli/sim_model.h"

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/inspect.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"

namespace permdnn::cli {

std::vector<sim::ModelLayer> LoadModelLayers(const std::string& path, const std::string& data_dir, int64_t samples) {
  PERMDNN_CHECK(samples >= 1, "--samples must be >= 1, got {}", samples);
  const std::string bytes = runtime::ReadFileBytes(path);
  runtime::ModelInspection ins = runtime::InspectCompressedLayers(bytes, path);
  for (const auto& s : ins.skipped)
    std::printf("skipped %s (%s): %s\n", s.node.c_str(), s.op_type.c_str(), s.reason.c_str());
  PERMDNN_CHECK(!ins.layers.empty(),
                "{}: no compressed fully connected layers (PermDiagMatMul, BlockCirculantMatMul, SparseMatMul) to "
                "simulate",
                path);

  // One model that outputs the value entering every layer; nodes after the
  // last of them are dropped.
  std::vector<std::string> values;
  for (const auto& l : ins.layers) values.push_back(l.input);
  std::vector<std::string> computed;
  for (const auto& v : values)
    if (std::find(ins.graph_inputs.begin(), ins.graph_inputs.end(), v) == ins.graph_inputs.end() &&
        std::find(computed.begin(), computed.end(), v) == computed.end())
      computed.push_back(v);
  // The capture model keeps the file's metadata and inputs, so it gives the
  // preprocessing and layout exactly as `permdnn eval` would pick them, and
  // loading it does not need the layers after the last captured value.
  const runtime::Model probe = runtime::Model::FromBytes(
      computed.empty() ? bytes : runtime::WithCapturedOutputs(bytes, path, computed), path);
  Preprocess pre;
  runtime::Layout layout = runtime::Layout::kNchw;
  const bool meta = runtime::DefaultPreprocess(probe, &pre, &layout);
  const ImageDataset test = LoadFashionMnist(data_dir, "test");
  const int64_t n = std::min(samples, test.count);
  std::vector<float> x(static_cast<std::size_t>(n * test.image_size()));
  test.Batch(0, n, pre, x);
  std::vector<int64_t> shape = runtime::BatchShape(test, layout, n);
  std::printf("%s: %zu compressed FC layer(s); activations of %lld test image(s), preprocessing (x*%.6g - %.4f)/%.4f, "
              "layout %s%s\n",
              path.c_str(), ins.layers.size(), static_cast<long long>(n), pre.scale, pre.mean, pre.std,
              layout == runtime::Layout::kFlat ? "flat" : "NCHW", meta ? " (from the model's metadata)" : "");
  std::vector<runtime::Tensor> inputs;
  inputs.push_back(runtime::Tensor::Float(shape, x));
  const std::vector<runtime::Tensor> acts = runtime::CaptureValues(bytes, path, inputs, values);

  std::vector<sim::ModelLayer> out;
  for (std::size_t k = 0; k < ins.layers.size(); ++k) {
    auto& l = ins.layers[k];
    const runtime::Tensor& a = acts[k];
    PERMDNN_CHECK(runtime::IsFloat(a.dtype()) && a.size() == n * l.in_features,
                  "{}: layer {}: the value '{}' entering it has shape {} ({}), expected {} samples x {} features",
                  path, l.node, l.input, runtime::ShapeString(a.shape()), runtime::DTypeName(a.dtype()), n,
                  l.in_features);
    sim::ModelLayer m;
    m.name = l.node;
    m.permdiag = std::move(l.permdiag);
    m.circulant = std::move(l.circulant);
    m.sparse = std::move(l.sparse);
    const float* f = a.f();
    for (int64_t s = 0; s < n; ++s) m.inputs.emplace_back(f + s * l.in_features, f + (s + 1) * l.in_features);
    std::printf("  %-10s %-21s %5lld x %-5lld %s\n", l.node.c_str(), l.op_type.c_str(),
                static_cast<long long>(l.out_features), static_cast<long long>(l.in_features),
                l.format == runtime::CompressedFormat::kSparse
                    ? fmt::format("density {:.4f}{}", m.sparse->density(),
                                  l.codebook_size ? fmt::format(", {}-entry codebook", l.codebook_size) : "")
                          .c_str()
                    : fmt::format("p={}", l.p).c_str());
    out.push_back(std::move(m));
  }
  std::printf("\n");
  return out;
}

}  // namespace permdnn::cli
