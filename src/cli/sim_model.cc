// `permdnn sim --model`: the glue between the runtime (reads the model's
// compressed FC and conv layers and captures their input activations on Fashion-MNIST
// test images, preprocessed as `permdnn eval` does) and the simulator
// (sim/model.h), which never depends on the runtime.
#include "cli/sim_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/formats/registry.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/core/npy.h"
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

// The simulated products of a compressed recurrent node, per direction: W
// on x_t and R on h_{t-1} of every sample and time step (`positions` = T,
// so a record is the whole sequence), h_{t-1} read from the captured Y (the
// previous step in the direction's order; the zero state before the first
// step). Every vector of one sample shares the sample's int16 scale (its
// maximum over the sequence). Errors name the node for what the step model
// does not cover.
void CheckSimulatable(const std::string& path, const runtime::RecurrentLayerInfo& l) {
  const std::string where = fmt::format("{}: recurrent node '{}' ({})", path, l.node, l.op_type);
  PERMDNN_CHECK(!l.has_sequence_lens,
                "{}: sequence_lens is not simulated (each sequence would run its own number of steps); export the "
                "model without it", where);
  PERMDNN_CHECK(!l.has_initial_h,
                "{}: initial_h is not simulated (the first step's h_(-1) would be the given state, not zero); export "
                "the model without it", where);
  PERMDNN_CHECK(l.cell != "GRU" || l.linear_before_reset,
                "{}: GRU with linear_before_reset = 0 multiplies the h gate's rows of R with r * h_(t-1), not "
                "h_(t-1), so R is not one product per step; only linear_before_reset = 1 (PyTorch's GRU) is "
                "simulated", where);
  PERMDNN_CHECK(!l.output_y.empty(), "{}: the node has no Y output, from which the simulator reads h_t", where);
}

void AddRecurrentLayers(const std::string& path, runtime::RecurrentLayerInfo& l, const runtime::Tensor& x,
                        const runtime::Tensor& y, int64_t n, std::vector<sim::ModelLayer>* out) {
  const std::string where = fmt::format("{}: recurrent node '{}' ({})", path, l.node, l.op_type);
  const int64_t D = static_cast<int64_t>(l.w.size()), H = l.hidden, I = l.input_size;
  const auto& xs = x.shape();
  const auto& ys = y.shape();
  PERMDNN_CHECK(runtime::IsFloat(x.dtype()) && xs.size() == 3 && xs[l.layout == 0 ? 1 : 0] == n && xs[2] == I,
                "{}: X '{}' has shape {}, expected {} with batch {} and input_size {}", where, l.input,
                runtime::ShapeString(xs), l.layout == 0 ? "[T, batch, input]" : "[batch, T, input]", n, I);
  const int64_t T = xs[l.layout == 0 ? 0 : 1];
  PERMDNN_CHECK(T >= 1, "{}: the sequence has no time steps", where);
  const std::vector<int64_t> want_y =
      l.layout == 0 ? std::vector<int64_t>{T, D, n, H} : std::vector<int64_t>{n, T, D, H};
  PERMDNN_CHECK(runtime::IsFloat(y.dtype()) && ys == want_y, "{}: Y '{}' has shape {}, expected {}", where,
                l.output_y, runtime::ShapeString(ys), runtime::ShapeString(want_y));
  const float* xp = x.f();
  const float* yp = y.f();
  auto x_at = [&](int64_t t, int64_t s) {
    return xp + (l.layout == 0 ? (t * n + s) : (s * T + t)) * I;
  };
  auto y_at = [&](int64_t t, int64_t d, int64_t s) {
    return yp + (l.layout == 0 ? ((t * D + d) * n + s) : ((s * T + t) * D + d)) * H;
  };
  for (int64_t d = 0; d < D; ++d) {
    const bool reverse = l.direction == "reverse" || d == 1;
    const std::string dir = reverse ? "reverse" : "forward";
    const std::string sfx = D == 2 && d == 1 ? "_b" : "";
    sim::ModelLayer w, r;
    w.name = l.node + ".W" + sfx;
    r.name = l.node + ".R" + sfx;
    w.permdiag = std::move(l.w[d]);
    r.permdiag = std::move(l.r[d]);
    for (sim::ModelLayer* m : {&w, &r}) {
      m->positions = T;
      m->samples = static_cast<int>(n);
      m->recurrent_node = l.node;
      m->recurrent_cell = l.cell;
    }
    w.note = fmt::format("{} {}, W x_t ({} gate(s) in one product): the sum over {} time steps", l.cell, dir, l.gates,
                         T);
    r.note = fmt::format("{} {}, R h_(t-1) ({} gate(s) in one product, h_(-1) = 0): the sum over {} time steps", l.cell,
                         dir, l.gates, T);
    for (int64_t s = 0; s < n; ++s) {
      float x_max = 0, h_max = 0;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < I; ++i) x_max = std::max(x_max, std::fabs(x_at(t, s)[i]));
        for (int64_t i = 0; i < H; ++i) h_max = std::max(h_max, std::fabs(y_at(t, d, s)[i]));
      }
      // Steps in the direction's order: h_(t-1) is the state the previous
      // step left (t - 1 forward, t + 1 reverse).
      for (int64_t k = 0; k < T; ++k) {
        const int64_t t = reverse ? T - 1 - k : k;
        w.inputs.emplace_back(x_at(t, s), x_at(t, s) + I);
        w.scale_max.push_back(x_max);
        if (k == 0) {
          r.inputs.emplace_back(static_cast<std::size_t>(H), 0.0f);
        } else {
          const float* h = y_at(reverse ? t + 1 : t - 1, d, s);
          r.inputs.emplace_back(h, h + H);
        }
        r.scale_max.push_back(h_max);
      }
    }
    for (const sim::ModelLayer* m : {&w, &r})
      std::printf("  %-10s %-21s %5lld x %-5lld p=%d  (%s)\n", m->name.c_str(), l.op_type.c_str(),
                  static_cast<long long>(m->rows()), static_cast<long long>(m->cols()), l.p, m->note.c_str());
    out->push_back(std::move(w));
    out->push_back(std::move(r));
  }
}

}  // namespace

std::vector<sim::ModelLayer> LoadModelLayers(const std::string& path, const std::string& data_dir, int64_t samples,
                                             int64_t max_conv_positions, const std::string& input_npy) {
  PERMDNN_CHECK(samples >= 1, "--samples must be >= 1, got {}", samples);
  PERMDNN_CHECK(max_conv_positions >= 0, "conv positions per sample must be >= 0 (0: all), got {}",
                max_conv_positions);
  const std::string bytes = runtime::ReadFileBytes(path);
  runtime::ModelInspection ins = runtime::InspectCompressedLayers(bytes, path);
  for (const auto& s : ins.skipped)
    std::printf("skipped %s (%s): %s\n", s.node.c_str(), s.op_type.c_str(), s.reason.c_str());
  if (ins.layers.empty() && ins.recurrent.empty()) {
    std::string ops;  // the compressed ops, from the format registry
    for (const formats::FormatTraits& f : formats::Formats()) {
      std::vector<const formats::OpSchema*> schemas = {f.linear, f.conv};
      for (auto cell : {formats::RecurrentCell::kLstm, formats::RecurrentCell::kGru, formats::RecurrentCell::kRnn})
        if (const formats::OpSchema* op = formats::RecurrentOp(f, cell)) schemas.push_back(op);
      for (const formats::OpSchema* op : schemas)
        if (formats::IsPermDnnDomain(op->domain) && ops.find(op->name) == std::string::npos)
          ops += (ops.empty() ? "" : ", ") + std::string(op->name);
    }
    Fail("{}: no compressed layers ({}) to simulate", path, ops);
  }

  // One model that outputs the value entering every layer; nodes after the
  // last of them are dropped.
  std::vector<std::string> values;
  for (const auto& l : ins.layers) values.push_back(l.input);
  for (const auto& l : ins.recurrent) {  // X and Y (h_t of every step)
    CheckSimulatable(path, l);
    values.push_back(l.input);
    values.push_back(l.output_y);
  }
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
  for (const auto& in : probe.inputs())
    PERMDNN_CHECK(runtime::IsFloat(in.dtype),
                  "{}: the model's input '{}' is {}; sim --model drives the layers with Fashion-MNIST test images "
                  "or a float --input .npy, so models of other data (e.g. charlm's int64 characters) are not "
                  "simulated",
                  path, in.name, runtime::DTypeName(in.dtype));
  std::vector<runtime::Tensor> inputs;
  int64_t n = 0;
  const std::string rec =
      ins.recurrent.empty() ? std::string() : fmt::format(" and {} recurrent node(s)", ins.recurrent.size());
  if (!input_npy.empty()) {
    PERMDNN_CHECK(probe.inputs().size() == 1, "{}: --input feeds one tensor, the model has {} inputs", path,
                  probe.inputs().size());
    const NpyArray a = ReadNpy(input_npy);
    PERMDNN_CHECK(a.shape.size() >= 2 && a.shape[0] >= 1, "--input {}: shape {} needs a leading sample dimension",
                  input_npy, runtime::ShapeString(a.shape));
    const std::vector<float> all = a.ToFloat("--input " + input_npy);
    n = std::min(samples, a.shape[0]);
    std::vector<int64_t> shape = a.shape;
    shape[0] = n;
    const int64_t per = static_cast<int64_t>(all.size()) / a.shape[0];
    inputs.push_back(runtime::Tensor::Float(shape, std::vector<float>(all.begin(), all.begin() + n * per)));
    std::printf("%s: %zu compressed layer(s)%s; activations of %lld sample(s) of %s %s (no preprocessing)\n",
                path.c_str(), ins.layers.size(), rec.c_str(), static_cast<long long>(n), input_npy.c_str(),
                runtime::ShapeString(shape).c_str());
  } else {
    Preprocess pre;
    runtime::Layout layout = runtime::Layout::kNchw;
    const bool meta = runtime::DefaultPreprocess(probe, &pre, &layout);
    const ImageDataset test = LoadFashionMnist(data_dir, "test");
    n = std::min(samples, test.count);
    std::vector<float> x(static_cast<std::size_t>(n * test.image_size()));
    test.Batch(0, n, pre, x);
    std::vector<int64_t> shape = runtime::BatchShape(test, layout, n);
    std::printf("%s: %zu compressed layer(s)%s; activations of %lld test image(s), preprocessing (x*%.6g - %.4f)/%.4f, "
                "layout %s%s\n",
                path.c_str(), ins.layers.size(), rec.c_str(), static_cast<long long>(n), pre.scale, pre.mean, pre.std,
                layout == runtime::Layout::kFlat ? "flat" : "NCHW", meta ? " (from the model's metadata)" : "");
    inputs.push_back(runtime::Tensor::Float(shape, x));
  }
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
  std::size_t k = ins.layers.size();
  for (auto& l : ins.recurrent) {
    AddRecurrentLayers(path, l, acts[k], acts[k + 1], n, &out);
    k += 2;
  }
  std::printf("\n");
  return out;
}

}  // namespace permdnn::cli
