// Inspection of a model's compressed layers and activation capture
// (include/permdnn/runtime/inspect.h). Reads the protobuf directly: no
// kernels are built, so the inspection does not depend on which ai.permdnn
// operators this runtime executes.
#include "permdnn/runtime/inspect.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <onnx/onnx_pb.h>

#include "permdnn/core/error.h"
#include "permdnn/formats/registry.h"
#include "permdnn/runtime/onnx_graph.h"
#include "runtime/conv_util.h"
#include "runtime/graph.h"
#include "runtime/onnx_util.h"

namespace permdnn::runtime {

int64_t ConvAttributes::kernel_size() const { return NumElements(kernel_shape); }

std::string ConvAttributes::Describe() const {
  auto list = [](const std::vector<int64_t>& v, const char* sep) { return fmt::format("{}", fmt::join(v, sep)); };
  std::string s = list(kernel_shape, "x");
  if (!strides.empty()) s += " stride " + list(strides, ",");
  if (!pads.empty()) s += " pads " + list(pads, ",");
  if (!dilations.empty()) s += " dilation " + list(dilations, ",");
  if (auto_pad != "NOTSET" && !auto_pad.empty()) s += " auto_pad " + auto_pad;
  return s;
}

std::vector<float> CompressedFcLayer::ToDense() const {
  if (permdiag) return permdiag->ToDense();
  if (circulant) return circulant->ToDense();
  if (sparse) return sparse->ToDense();
  Fail("layer {}: no matrix", node);
}

namespace {

// A node's weights as the file stores them: they must be initializers.
class InitializerSource : public formats::NodeSource {
 public:
  InitializerSource(const OnnxGraph& g, const GraphNode& n) : g_(g), n_(n), where_(g.name + ": " + n.Where()) {}
  std::string Where() const override { return where_; }
  const formats::Attributes& attributes() const override { return n_.attrs; }
  bool HasInput(int slot, const char*) const override { return !n_.In(slot).empty(); }
  formats::ArrayRef Input(int slot, const char* what) const override {
    const std::string value = n_.In(slot);
    PERMDNN_CHECK(!value.empty(), "{}: missing input {} ({})", where_, slot, what);
    const Tensor* t = nullptr;
    try {
      t = g_.Initializer(value);
    } catch (const Error& e) {
      Fail("{}: input {} ({}): {}", where_, slot, what, e.what());
    }
    PERMDNN_CHECK(t != nullptr, "{}: input {} '{}' ({}) is not an initializer; only weights stored in the file can "
                  "be inspected", where_, slot, value, what);
    formats::ArrayRef a;
    a.name = value;
    a.dtype = static_cast<formats::ElemType>(static_cast<int>(t->dtype()));  // both are ONNX codes
    a.shape = t->shape();
    if (IsFloat(t->dtype())) a.f = t->floats();
    else a.i = t->ints();
    return a;
  }

 private:
  const OnnxGraph& g_;
  const GraphNode& n_;
  std::string where_;
};

// The window attributes of a compressed conv node, the kernel from its weights.
ConvAttributes ReadConvAttributes(const GraphNode& n, const formats::Geometry& g, const std::string& where) {
  ConvAttributes c;
  c.in_channels = g.in;
  c.out_channels = g.out;
  c.kernel_shape = g.kernel;
  c.strides = n.attrs.Ints("strides", {}, where);
  c.pads = n.attrs.Ints("pads", {}, where);
  c.dilations = n.attrs.Ints("dilations", {}, where);
  c.auto_pad = n.attrs.String("auto_pad", "NOTSET", where);
  return c;
}

// A compressed recurrent node: attributes and the lifted W, R per direction.
RecurrentLayerInfo ReadRecurrentLayer(const OnnxGraph& g, const GraphNode& n, const formats::FormatTraits& f,
                                      formats::RecurrentCell cell) {
  const InitializerSource src(g, n);
  const std::string where = src.Where();
  RecurrentLayerInfo L;
  L.node = n.name;
  L.op_type = n.op_type;
  L.position = n.position;
  L.cell = cell == formats::RecurrentCell::kLstm ? "LSTM" : cell == formats::RecurrentCell::kGru ? "GRU" : "RNN";
  L.gates = cell == formats::RecurrentCell::kLstm ? 4 : cell == formats::RecurrentCell::kGru ? 3 : 1;
  L.input = n.In(0);
  L.output_y = n.outputs.empty() ? std::string() : n.outputs[0];
  PERMDNN_CHECK(!L.input.empty(), "{}: missing input X", where);
  L.hidden = n.attrs.Int("hidden_size", 0, where);
  L.input_size = n.attrs.Int("input_size", 0, where);
  PERMDNN_CHECK(L.hidden >= 1 && L.input_size >= 1, "{}: hidden_size = {} and input_size = {} must be >= 1", where,
                L.hidden, L.input_size);
  L.layout = n.attrs.Int("layout", 0, where);
  L.direction = n.attrs.String("direction", "forward", where);
  PERMDNN_CHECK(L.direction == "forward" || L.direction == "reverse" || L.direction == "bidirectional",
                "{}: attribute direction = '{}', expected forward, reverse or bidirectional", where, L.direction);
  L.linear_before_reset = n.attrs.Int("linear_before_reset", 0, where) != 0;
  L.has_sequence_lens = !n.In(4).empty();
  L.has_initial_h = !n.In(5).empty();
  const int64_t D = L.direction == "bidirectional" ? 2 : 1;
  for (int64_t d = 0; d < D; ++d)
    for (const bool r_matrix : {false, true}) {
      const formats::Weights w = formats::ReadRecurrentMatrix(f, src, r_matrix, d, D, L.gates * L.hidden,
                                                              r_matrix ? L.hidden : L.input_size);
      formats::LiftedMatrix m = formats::Lift(w);
      PERMDNN_CHECK(m.permdiag.has_value(), "{}: {} is not a permuted-diagonal matrix (format {})", where,
                    r_matrix ? "R" : "W", f.name);
      L.p = w.g.p;
      (r_matrix ? L.r : L.w).push_back(std::move(*m.permdiag));
    }
  return L;
}

}  // namespace

ModelInspection InspectCompressedLayers(std::string_view model_bytes, const std::string& name) {
  const OnnxGraph g = OnnxGraph::Parse(model_bytes, name);
  ModelInspection out;
  out.graph_inputs = g.inputs;
  for (const GraphNode& n : g.nodes) {
    const formats::FormatTraits* f =
        formats::FindFormat(n.domain, n.op_type, [&](int slot) { return !n.In(slot).empty(); }, false, &n.attrs);
    if (f == nullptr) {
      if (n.domain.empty() && (n.op_type == "Gemm" || n.op_type == "MatMul" || n.op_type == "Conv"))
        out.skipped.push_back({n.name, n.op_type, "dense (not compressed)"});
      if (n.domain.empty() && (n.op_type == "LSTM" || n.op_type == "GRU" || n.op_type == "RNN"))
        out.skipped.push_back({n.name, n.op_type, "recurrent, dense (not compressed)"});
      formats::RecurrentCell cell{};
      if (const formats::FormatTraits* rf = formats::FindRecurrentFormat(n.domain, n.op_type, &cell))
        out.recurrent.push_back(ReadRecurrentLayer(g, n, *rf, cell));
      continue;
    }
    const InitializerSource src(g, n);
    const bool conv = f->conv->name == n.op_type;
    const formats::Weights w = formats::ReadNode(*f, conv, src);
    PERMDNN_CHECK(!n.In(0).empty(), "{}: missing input X", src.Where());
    PERMDNN_CHECK(!n.outputs.empty() && !n.outputs[0].empty(), "{}: missing output", src.Where());
    formats::LiftedMatrix m = formats::Lift(w);
    CompressedFcLayer L;
    L.node = n.name;
    L.op_type = n.op_type;
    L.position = n.position;
    L.input = n.In(0);
    L.output = n.outputs[0];
    L.kind = f->kind;
    L.p = f->blocked ? w.g.p : 0;
    L.codebook_size = static_cast<int64_t>(w.codebook.size());
    L.permdiag = std::move(m.permdiag);
    L.circulant = std::move(m.circulant);
    L.sparse = std::move(m.sparse);
    // Ternary layers: the matrix itself (the simulator's adder array) and its
    // sparse form α·t (the pruned groups absent) for the CSR consumers.
    if (m.ternary) {
      L.sparse = CsrMatrix::FromDense(m.ternary->ToDense(), m.ternary->rows(), m.ternary->cols());
      L.ternary = std::move(m.ternary);
    }
    L.out_features = w.g.out;
    L.in_features = L.permdiag ? L.permdiag->cols() : L.circulant ? L.circulant->cols() : L.sparse->cols();
    L.bias = w.bias;
    if (conv) L.conv = ReadConvAttributes(n, w.g, src.Where());
    out.layers.push_back(std::move(L));
  }
  return out;
}

ConvColumns ConvIm2Col(const CompressedFcLayer& layer, const std::vector<int64_t>& x_shape,
                       std::span<const float> sample) {
  PERMDNN_CHECK(layer.conv.has_value(), "layer '{}' ({}) is not a convolution", layer.node, layer.op_type);
  const ConvAttributes& c = *layer.conv;
  // The runtime's own geometry (conv_util.h) from the node's attributes.
  detail::NodeDef nd;
  nd.name = layer.node;
  nd.op_type = layer.op_type;
  nd.domain = formats::kDomain;
  nd.position = static_cast<int>(layer.position);
  auto set_ints = [&](const char* name, const std::vector<int64_t>& v) {
    if (!v.empty()) nd.attrs.SetInts(name, v);
  };
  set_ints("strides", c.strides);
  set_ints("pads", c.pads);
  set_ints("dilations", c.dilations);
  nd.attrs.SetString("auto_pad", c.auto_pad);
  detail::OpContext ctx;
  ctx.node = &nd;
  if (x_shape.size() != c.kernel_shape.size() + 2 || x_shape[1] != c.in_channels)
    ctx.Fail("input has shape {}, expected [N, in_channels={}, {} spatial dims]", ShapeString(x_shape), c.in_channels,
             c.kernel_shape.size());
  const detail::WindowGeometry g = detail::MakeWindowGeometry(ctx, x_shape, c.kernel_shape, nd, true);
  const int64_t C = c.in_channels, K = g.kernel_size(), osz = g.out_size();
  if (static_cast<int64_t>(sample.size()) != C * g.in_size())
    ctx.Fail("a sample has {} floats, expected {} channels x {}", sample.size(), C, g.in_size());
  std::vector<float> cols(static_cast<std::size_t>(C * K * osz));
  detail::Im2Col(g, sample.data(), C, cols.data());
  ConvColumns out;
  out.out_spatial = g.out_spatial;
  out.positions = osz;
  out.length = layer.in_features;
  out.data.assign(static_cast<std::size_t>(osz * out.length), 0.0f);
  // Row ic·K + t of Im2Col is column ic·K + t of a sparse conv's matrix and
  // column t·nb·p + ic of the tap-major permdiag / circulant matrices.
  const bool tap_major = layer.kind != formats::Kind::kCsr && layer.kind != formats::Kind::kCsrCodebook &&
                         layer.kind != formats::Kind::kCsrRelative && layer.kind != formats::Kind::kTernary;
  const int64_t ic_step = tap_major ? 1 : K, t_step = tap_major ? layer.in_features / K : 1;
  for (int64_t ic = 0; ic < C; ++ic)
    for (int64_t t = 0; t < K; ++t) {
      const float* row = cols.data() + (ic * K + t) * osz;
      float* dst = out.data.data() + ic * ic_step + t * t_step;
      for (int64_t q = 0; q < osz; ++q) dst[q * out.length] = row[q];
    }
  return out;
}

std::string WithCapturedOutputs(std::string_view model_bytes, const std::string& name,
                                const std::vector<std::string>& values) {
  onnx::ModelProto m = detail::ParseModelProto(model_bytes, name);
  auto* g = m.mutable_graph();
  PERMDNN_CHECK(!values.empty(), "{}: no values to capture", name);
  // Producer of every value.
  std::map<std::string, int> producer;
  for (int k = 0; k < g->node_size(); ++k)
    for (const auto& o : g->node(k).output())
      if (!o.empty()) producer[o] = k;
  // Backward slice from the requested values.
  std::set<int> keep;
  std::vector<int> stack;
  for (const auto& v : values) {
    auto it = producer.find(v);
    PERMDNN_CHECK(it != producer.end(), "{}: value '{}' is not produced by any node (a graph input or an "
                  "initializer needs no capture)", name, v);
    stack.push_back(it->second);
  }
  while (!stack.empty()) {
    const int k = stack.back();
    stack.pop_back();
    if (!keep.insert(k).second) continue;
    for (const auto& in : g->node(k).input()) {
      auto it = producer.find(in);
      if (it != producer.end() && !keep.count(it->second)) stack.push_back(it->second);
    }
  }
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  for (int k = 0; k < g->node_size(); ++k)
    if (keep.count(k)) *nodes.Add() = g->node(k);
  g->mutable_node()->Swap(&nodes);
  g->clear_output();
  for (const auto& v : values) g->add_output()->set_name(v);
  std::string bytes;
  PERMDNN_CHECK(m.SerializeToString(&bytes), "{}: cannot serialize the capture model", name);
  return bytes;
}

std::vector<Tensor> CaptureValues(std::string_view model_bytes, const std::string& name,
                                  const std::vector<Tensor>& inputs, const std::vector<std::string>& values,
                                  const Options& options) {
  const onnx::ModelProto m = detail::ParseModelProto(model_bytes, name);
  std::map<std::string, int> graph_inputs;
  {
    std::set<std::string> inits;
    for (const auto& t : m.graph().initializer()) inits.insert(t.name());
    int k = 0;
    for (const auto& in : m.graph().input())
      if (!inits.count(in.name())) graph_inputs[in.name()] = k++;
  }
  std::vector<std::string> computed;
  for (const auto& v : values)
    if (!graph_inputs.count(v) && std::find(computed.begin(), computed.end(), v) == computed.end())
      computed.push_back(v);
  std::vector<Tensor> got;
  if (!computed.empty()) {
    Model model = Model::FromBytes(WithCapturedOutputs(model_bytes, name, computed), name + " (capture)", options);
    PERMDNN_CHECK(model.inputs().size() == inputs.size(), "{}: the model has {} graph inputs, {} given", name,
                  model.inputs().size(), inputs.size());
    got = model.Run(inputs);
  }
  std::vector<Tensor> out;
  for (const auto& v : values) {
    auto gi = graph_inputs.find(v);
    if (gi != graph_inputs.end()) {
      PERMDNN_CHECK(gi->second < static_cast<int>(inputs.size()), "{}: graph input '{}' was not given", name, v);
      out.push_back(inputs[gi->second]);
    } else {
      const auto idx = std::find(computed.begin(), computed.end(), v) - computed.begin();
      out.push_back(got[idx]);
    }
  }
  return out;
}

}  // namespace permdnn::runtime
