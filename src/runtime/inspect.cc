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
#include "runtime/compressed_formats.h"
#include "runtime/conv_util.h"
#include "runtime/graph.h"
#include "runtime/onnx_util.h"

namespace permdnn::runtime {

const char* CompressedFormatName(CompressedFormat f) {
  switch (f) {
    case CompressedFormat::kPermDiag: return "permdiag";
    case CompressedFormat::kCirculant: return "circulant";
    case CompressedFormat::kSparse: return "sparse";
  }
  return "?";
}

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

using Initializers = std::map<std::string, const onnx::TensorProto*>;

struct NodeReader {
  const onnx::NodeProto& n;
  const Initializers& init;
  std::string where;  // "<model>: node 'fc1' (PermDiagMatMul, #3)"

  int64_t Attr(const char* a) const {
    for (const auto& at : n.attribute())
      if (at.name() == a) {
        PERMDNN_CHECK(at.type() == onnx::AttributeProto::INT, "{}: attribute {} must be an integer", where, a);
        PERMDNN_CHECK(at.i() >= 1 && at.i() <= (int64_t{1} << 31), "{}: attribute {} = {} must be in [1, 2^31]",
                      where, a, at.i());
        return at.i();
      }
    Fail("{}: missing attribute '{}'", where, a);
  }
  const onnx::AttributeProto* Find(const char* a) const {
    for (const auto& at : n.attribute())
      if (at.name() == a) return &at;
    return nullptr;
  }
  // An optional list-of-ints attribute (empty when absent), each in [lo, 2^31].
  std::vector<int64_t> IntsAttr(const char* a, int64_t lo) const {
    const onnx::AttributeProto* at = Find(a);
    if (!at) return {};
    PERMDNN_CHECK(at->type() == onnx::AttributeProto::INTS, "{}: attribute {} must be a list of integers", where, a);
    std::vector<int64_t> v(at->ints().begin(), at->ints().end());
    for (int64_t x : v)
      PERMDNN_CHECK(x >= lo && x <= (int64_t{1} << 31), "{}: attribute {} = [{}] must hold values in [{}, 2^31]",
                    where, a, fmt::join(v, ", "), lo);
    return v;
  }
  bool HasInput(int k) const { return n.input_size() > k && !n.input(k).empty(); }
  // Input k as a tensor; it must be an initializer.
  Tensor Const(int k, const char* what) const {
    PERMDNN_CHECK(HasInput(k), "{}: missing input {} ({})", where, k, what);
    auto it = init.find(n.input(k));
    PERMDNN_CHECK(it != init.end(), "{}: input {} '{}' ({}) is not an initializer; only weights stored in the file "
                  "can be inspected", where, k, n.input(k), what);
    return detail::TensorFromProto(*it->second, fmt::format("{}: {}", where, what));
  }
  std::vector<float> Floats(int k, const char* what, int64_t expected) const {
    Tensor t = Const(k, what);
    PERMDNN_CHECK(IsFloat(t.dtype()), "{}: {} '{}' must be float32, got {}", where, what, n.input(k),
                  DTypeName(t.dtype()));
    PERMDNN_CHECK(expected < 0 || t.size() == expected, "{}: {} '{}' has shape {} ({} elements), expected {}",
                  where, what, n.input(k), ShapeString(t.shape()), t.size(), expected);
    auto f = t.floats();
    return {f.begin(), f.end()};
  }
  std::vector<int64_t> Ints(int k, const char* what) const {
    Tensor t = Const(k, what);
    PERMDNN_CHECK(!IsFloat(t.dtype()), "{}: {} '{}' must be an integer tensor, got float32", where, what,
                  n.input(k));
    auto v = t.ints();
    return {v.begin(), v.end()};
  }
  std::vector<float> Bias(int k, int64_t out) const {
    if (!HasInput(k)) return {};
    return Floats(k, "bias", out);
  }
};

template <typename F>
auto Wrap(const std::string& where, F&& make) {
  try {
    return make();
  } catch (const Error& e) {
    // Core builders name the matrix, not the node: prefix the node.
    const std::string what = e.what();
    if (what.rfind(where, 0) == 0) throw;
    throw Error(where + ": " + what);
  }
}

// The attributes of a compressed conv node. `kernel` comes from the values'
// shape (permdiag, circulant; the kernel_shape attribute must agree) or,
// when empty, from the required kernel_shape attribute (sparse).
ConvAttributes ReadConvAttributes(const NodeReader& r, std::vector<int64_t> kernel) {
  ConvAttributes c;
  if (r.Find("group")) PERMDNN_CHECK(r.Attr("group") == 1, "{}: group != 1 is not supported", r.where);
  c.in_channels = r.Attr("in_channels");
  c.out_channels = r.Attr("out_channels");
  const std::vector<int64_t> attr = r.IntsAttr("kernel_shape", 1);
  if (kernel.empty()) {
    PERMDNN_CHECK(!attr.empty(), "{}: missing attribute 'kernel_shape' (the CSR does not carry it)", r.where);
    kernel = attr;
  }
  PERMDNN_CHECK(attr.empty() || attr == kernel, "{}: kernel_shape [{}] differs from the values' kernel dims [{}]",
                r.where, fmt::join(attr, ", "), fmt::join(kernel, ", "));
  PERMDNN_CHECK(!kernel.empty() && kernel.size() <= 3, "{}: kernel [{}] must have 1 to 3 dims", r.where,
                fmt::join(kernel, ", "));
  for (int64_t k : kernel)
    PERMDNN_CHECK(k >= 1 && k <= 4096, "{}: kernel [{}] must hold sizes in [1, 4096]", r.where, fmt::join(kernel, ", "));
  c.kernel_shape = std::move(kernel);
  c.strides = r.IntsAttr("strides", 1);
  c.pads = r.IntsAttr("pads", 0);
  c.dilations = r.IntsAttr("dilations", 1);
  if (const onnx::AttributeProto* at = r.Find("auto_pad")) {
    PERMDNN_CHECK(at->type() == onnx::AttributeProto::STRING, "{}: attribute auto_pad must be a string", r.where);
    c.auto_pad = at->s();
  }
  return c;
}

// Conv values [mb, nb, p, kernel...] (float32): the tensor and its kernel dims.
std::pair<std::vector<float>, std::vector<int64_t>> ConvValues(const NodeReader& r, int64_t mb, int64_t nb,
                                                               int64_t p) {
  const Tensor t = r.Const(1, "values");
  const auto& sh = t.shape();
  PERMDNN_CHECK(IsFloat(t.dtype()) && sh.size() >= 4 && sh.size() <= 6 && sh[0] == mb && sh[1] == nb && sh[2] == p,
                "{}: values '{}' is {} {}, expected float32 [mb={}, nb={}, p={}, kernel...]", r.where, r.n.input(1),
                DTypeName(t.dtype()), ShapeString(sh), mb, nb, p);
  auto f = t.floats();
  return {{f.begin(), f.end()}, {sh.begin() + 3, sh.end()}};
}

// What the permuted-diagonal and block-circulant readers share: format,
// p, the shape (FC: in/out_features; conv: in/out_channels and the
// attributes, kernel from the values' shape) and the values, as stored:
// [mb, nb, p] (FC) or [mb, nb, p, kernel...] (conv).
struct BlockLayer {
  CompressedFcLayer L;
  int64_t p = 1, in = 0, out = 0, mb = 0, nb = 0, K = 1;
  std::vector<float> values;
};
BlockLayer ReadBlockLayer(const NodeReader& r, CompressedFormat format, bool conv) {
  BlockLayer b;
  b.L.format = format;
  b.p = r.Attr("p");
  PERMDNN_CHECK(b.p <= 65535, "{}: p = {} exceeds 65535", r.where, b.p);
  b.L.p = static_cast<int>(b.p);
  b.in = r.Attr(conv ? "in_channels" : "in_features");
  b.out = r.Attr(conv ? "out_channels" : "out_features");
  b.mb = CeilDiv(b.out, b.p);
  b.nb = CeilDiv(b.in, b.p);
  if (conv) {
    auto [vals, kernel] = ConvValues(r, b.mb, b.nb, b.p);
    b.values = std::move(vals);
    b.L.conv = ReadConvAttributes(r, kernel);
    b.K = b.L.conv->kernel_size();
  } else {
    b.values = r.Floats(1, "values", b.mb * b.nb * b.p);
  }
  // Conv: the im2col matrix has K·nb column blocks (tap-major).
  b.L.out_features = b.out;
  b.L.in_features = conv ? b.K * b.nb * b.p : b.in;
  return b;
}

// PermDiagMatMul, or PermDiagConv -> the im2col matrix [out, K·nb·p]: block
// (I, t·nb + J) is tap t of block (I, J), same offset (for a fixed tap the
// out × in matrix is permuted-diagonal). Conv values the runtime op never
// reads (out channel >= out_channels or in channel >= in_channels) are
// zeroed.
CompressedFcLayer ReadPermDiag(const NodeReader& r, bool conv) {
  BlockLayer b = ReadBlockLayer(r, CompressedFormat::kPermDiag, conv);
  const int64_t p = b.p, nb = b.nb, K = b.K, wide = K * nb;
  std::vector<int64_t> off = r.Ints(2, "offsets");
  PERMDNN_CHECK(static_cast<int64_t>(off.size()) == b.mb * nb, "{}: offsets has {} elements, expected [{}, {}]",
                r.where, off.size(), b.mb, nb);
  std::vector<float> values(conv ? static_cast<std::size_t>(b.mb * wide * p) : 0);
  std::vector<uint16_t> offsets(static_cast<std::size_t>(b.mb * wide));
  for (int64_t I = 0; I < b.mb; ++I)
    for (int64_t J = 0; J < nb; ++J) {
      const int64_t k = off[I * nb + J];
      PERMDNN_CHECK(k >= 0 && k < p, "{}: offsets: block ({}, {}) has offset {}, must be in [0, p={})", r.where, I, J,
                    k, p);
      for (int64_t t = 0; t < K; ++t) {
        const int64_t blk = I * wide + t * nb + J;
        offsets[blk] = static_cast<uint16_t>(k);
        for (int64_t c = 0; conv && c < p; ++c) {
          const bool used = I * p + c < b.out && J * p + (c + k) % p < b.in;
          values[blk * p + c] = used ? b.values[((I * nb + J) * p + c) * K + t] : 0.0f;
        }
      }
    }
  if (!conv) values = std::move(b.values);
  CompressedFcLayer& L = b.L;
  L.permdiag = Wrap(r.where, [&] {
    return PermDiagMatrix::FromParts(L.out_features, L.in_features, L.p, values, offsets);
  });
  L.bias = r.Bias(3, L.out_features);
  return std::move(L);
}

// BlockCirculantMatMul, or BlockCirculantConv -> the im2col matrix [out,
// K·nb·p], block (I, t·nb + J) = w_IJ at tap t (the layout
// ops_circulant.cc multiplies).
CompressedFcLayer ReadCirculant(const NodeReader& r, bool conv) {
  BlockLayer b = ReadBlockLayer(r, CompressedFormat::kCirculant, conv);
  std::vector<float> values(b.values.size());
  const int64_t p = b.p, nb = b.nb, K = b.K;
  for (std::size_t src = 0; src < values.size(); ++src) {
    // src = ((I·nb + J)·p + s)·K + t  ->  ((I·K·nb + t·nb + J)·p + s)
    const int64_t t = static_cast<int64_t>(src) % K, rest = static_cast<int64_t>(src) / K;
    const int64_t s = rest % p, IJ = rest / p, I = IJ / nb, J = IJ % nb;
    values[static_cast<std::size_t>((I * K * nb + t * nb + J) * p + s)] = b.values[src];
  }
  CompressedFcLayer& L = b.L;
  L.circulant = Wrap(r.where, [&] {
    return BlockCirculantMatrix::FromParts(L.out_features, L.in_features, L.p, values);
  });
  L.bias = r.Bias(2, L.out_features);
  return std::move(L);
}

// SparseMatMul, or SparseConv (conv: the CSR is the [out, in·K] im2col
// matrix as stored, column in_channel·K + tap).
CompressedFcLayer ReadSparse(const NodeReader& r, bool conv) {
  CompressedFcLayer L;
  L.format = CompressedFormat::kSparse;
  if (conv) {
    L.conv = ReadConvAttributes(r, {});
    L.in_features = L.conv->in_channels * L.conv->kernel_size();
    L.out_features = L.conv->out_channels;
  } else {
    L.in_features = r.Attr("in_features");
    L.out_features = r.Attr("out_features");
  }
  const std::vector<int64_t> row_ptr = r.Ints(1, "row_ptr"), col_idx = r.Ints(2, "col_idx");
  // Inputs: X, row_ptr, col_idx, values | codes, bias ("" when absent),
  // codebook. Validation and decoding are the runtime op's
  // (compressed_formats.h), so a file the runtime refuses is refused here
  // with the same message.
  std::vector<float> values;
  if (r.HasInput(5)) {
    const std::vector<float> codebook = r.Floats(5, "codebook", -1);
    const std::vector<int64_t> codes = r.Ints(3, "codes");
    PERMDNN_CHECK(codes.size() == col_idx.size(), "{}: {} codes for {} col_idx entries", r.where, codes.size(),
                  col_idx.size());
    values = detail::DecodeCodebook(r.where, codes, codebook);
    L.codebook_size = static_cast<int64_t>(codebook.size());
  } else {
    values = r.Floats(3, "values", static_cast<int64_t>(col_idx.size()));
  }
  L.sparse = detail::MakeCsr(r.where, L.out_features, L.in_features, row_ptr, col_idx, std::move(values));
  L.bias = r.Bias(4, L.out_features);
  return L;
}

onnx::ModelProto Parse(std::string_view bytes, const std::string& name) {
  return detail::ParseModelProto(bytes, name);
}

}  // namespace

ModelInspection InspectCompressedLayers(std::string_view model_bytes, const std::string& name) {
  const onnx::ModelProto m = Parse(model_bytes, name);
  const auto& g = m.graph();
  Initializers init;
  for (const auto& t : g.initializer()) init[t.name()] = &t;
  ModelInspection out;
  for (const auto& in : g.input())
    if (!init.count(in.name())) out.graph_inputs.push_back(in.name());
  for (int k = 0; k < g.node_size(); ++k) {
    const auto& n = g.node(k);
    const std::string node = n.name().empty() ? fmt::format("#{}", k) : n.name();
    const std::string& op = n.op_type();
    const bool custom = detail::IsPermDnnDomain(n.domain());
    NodeReader r{n, init, fmt::format("{}: node '{}' ({}, #{})", name, node, op, k)};
    std::optional<CompressedFcLayer> layer;
    if (custom && (op == "PermDiagMatMul" || op == "PermDiagConv")) {
      layer = ReadPermDiag(r, op == "PermDiagConv");
    } else if (custom && (op == "BlockCirculantMatMul" || op == "BlockCirculantConv")) {
      layer = ReadCirculant(r, op == "BlockCirculantConv");
    } else if (custom && (op == "SparseMatMul" || op == "SparseConv")) {
      layer = ReadSparse(r, op == "SparseConv");
    } else if (op == "Gemm" || op == "MatMul" || op == "Conv") {
      out.skipped.push_back({node, op, "dense (not compressed)"});
    }
    if (!layer) continue;
    PERMDNN_CHECK(n.input_size() >= 1 && !n.input(0).empty(), "{}: missing input X", r.where);
    PERMDNN_CHECK(n.output_size() >= 1 && !n.output(0).empty(), "{}: missing output", r.where);
    layer->node = node;
    layer->op_type = op;
    layer->position = k;
    layer->input = n.input(0);
    layer->output = n.output(0);
    out.layers.push_back(std::move(*layer));
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
  nd.domain = "ai.permdnn";
  nd.position = static_cast<int>(layer.position);
  auto set_ints = [&](const char* name, const std::vector<int64_t>& v) {
    if (v.empty()) return;
    detail::Attr a;
    a.kind = detail::Attr::kInts;
    a.ints = v;
    nd.attrs[name] = std::move(a);
  };
  set_ints("strides", c.strides);
  set_ints("pads", c.pads);
  set_ints("dilations", c.dilations);
  detail::Attr pad;
  pad.kind = detail::Attr::kString;
  pad.s = c.auto_pad;
  nd.attrs["auto_pad"] = std::move(pad);
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
  const bool tap_major = layer.format != CompressedFormat::kSparse;
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
  onnx::ModelProto m = Parse(model_bytes, name);
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
  const onnx::ModelProto m = Parse(model_bytes, name);
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
