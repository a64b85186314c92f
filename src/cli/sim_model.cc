// `permdnn sim --model`: the glue between the runtime (reads the model's
// compressed FC and conv layers and captures their input activations on Fashion-MNIST
// test images, preprocessed as `permdnn eval` does) and the simulator
// (sim/model.h), which never depends on the runtime.
#include "cli/sim_model.h"

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/formats/registry.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/inspect.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"

namespace permdnn::cli {

namespace {

// The simulated inputs of a conv layer: the im2col columns of the chosen
// output positions of every sample, each with its sample's scale.
void AddConvColumns(const runtime::CompressedFcLayer& l, const runtime::Tensor& a, int64_t n, int64_t max_positions,
                    sim::ModelLayer* m) {
  const int64_t per_sample = a.size() / n;
  std::vector<int64_t> chosen;
  for (int64_t s = 0; s < n; ++s) {
    const std::span<const float> sample(a.f() + s * per_sample, static_cast<std::size_t>(per_sample));
    const runtime::ConvColumns cols = runtime::ConvIm2Col(l, a.shape(), sample);
    const int64_t P = cols.positions;
    if (s == 0) {
      m->positions = P;
      const int64_t k = max_positions > 0 ? std::min(max_positions, P) : P;
      for (int64_t i = 0; i < k; ++i) chosen.push_back((2 * i + 1) * P / (2 * k));
      m->note = fmt::format("conv {}: sum over {} output positions{}", l.conv->Describe(), P,
                            k == P ? "" : fmt::format(" ({} simulated per sample, spread evenly, scaled by {:.3g})", k,
                                                      static_cast<double>(P) / static_cast<double>(k)));
    }
    const float max_abs = static_cast<float>(MaxAbs(sample));
    for (int64_t q : chosen) {
      const std::span<const float> c = cols.column(q);
      m->inputs.emplace_back(c.begin(), c.end());
      m->scale_max.push_back(max_abs);
    }
  }
  m->samples = static_cast<int>(n);
}

}  // namespace

std::vector<sim::ModelLayer> LoadModelLayers(const std::string& path, const std::string& data_dir, int64_t samples,
                                             int64_t max_conv_positions) {
  PERMDNN_CHECK(samples >= 1, "--samples must be >= 1, got {}", samples);
  PERMDNN_CHECK(max_conv_positions >= 0, "conv positions per sample must be >= 0 (0: all), got {}",
                max_conv_positions);
  const std::string bytes = runtime::ReadFileBytes(path);
  runtime::ModelInspection ins = runtime::InspectCompressedLayers(bytes, path);
  for (const auto& s : ins.skipped)
    std::printf("skipped %s (%s): %s\n", s.node.c_str(), s.op_type.c_str(), s.reason.c_str());
  if (ins.layers.empty()) {
    std::string ops;  // the compressed ops, from the format registry
    for (const formats::FormatTraits& f : formats::Formats())
      for (const formats::OpSchema* op : {f.linear, f.conv})
        if (formats::IsPermDnnDomain(op->domain) && ops.find(op->name) == std::string::npos)
          ops += (ops.empty() ? "" : ", ") + std::string(op->name);
    Fail("{}: no compressed layers ({}) to simulate", path, ops);
  }

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
  std::printf("%s: %zu compressed layer(s); activations of %lld test image(s), preprocessing (x*%.6g - %.4f)/%.4f, "
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
    const int64_t per_sample = l.conv ? l.conv->in_channels : l.in_features;
    PERMDNN_CHECK(runtime::IsFloat(a.dtype()) && !a.shape().empty() && a.shape()[0] == n &&
                      (l.conv ? a.shape().size() >= 3 && a.shape()[1] == per_sample : a.size() == n * per_sample),
                  "{}: layer {}: the value '{}' entering it has shape {} ({}), expected {} samples x {} {}", path,
                  l.node, l.input, runtime::ShapeString(a.shape()), runtime::DTypeName(a.dtype()), n, per_sample,
                  l.conv ? "channels x spatial" : "features");
    sim::ModelLayer m;
    m.name = l.node;
    m.permdiag = std::move(l.permdiag);
    m.circulant = std::move(l.circulant);
    m.sparse = std::move(l.sparse);
    if (l.ternary) {  // the adder array runs the ternary matrix itself
      m.ternary = std::move(l.ternary);
      m.sparse.reset();
    }
    if (l.conv) {
      AddConvColumns(l, a, n, max_conv_positions, &m);
    } else {
      const float* f = a.f();
      for (int64_t s = 0; s < n; ++s) m.inputs.emplace_back(f + s * l.in_features, f + (s + 1) * l.in_features);
    }
    const std::string what = m.ternary.has_value()
                                 ? fmt::format("ternary group_len={} ({:.0f}% of the groups kept)", m.ternary->group_len(),
                                               100.0 * m.ternary->group_density())
                             : m.sparse.has_value()
                                 ? fmt::format("density {:.4f}{}", m.sparse->density(),
                                               l.codebook_size ? fmt::format(", {}-entry codebook", l.codebook_size) : "")
                                 : fmt::format("p={}", l.p);
    std::printf("  %-10s %-21s %5lld x %-5lld %s%s\n", l.node.c_str(), l.op_type.c_str(),
                static_cast<long long>(l.out_features), static_cast<long long>(l.in_features), what.c_str(),
                l.conv ? ("  (im2col; " + m.note + ")").c_str() : "");
    out.push_back(std::move(m));
  }
  std::printf("\n");
  return out;
}

}  // namespace permdnn::cli
