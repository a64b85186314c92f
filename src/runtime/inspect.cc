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
#include <onnx/onnx_pb.h>

#include "permdnn/core/error.h"
#include "runtime/compressed_formats.h"
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

CompressedFcLayer ReadPermDiag(const NodeReader& r) {
  CompressedFcLayer L;
  L.format = CompressedFormat::kPermDiag;
  const int64_t p = r.Attr("p");
  PERMDNN_CHECK(p <= 65535, "{}: p = {} exceeds 65535", r.where, p);
  L.p = static_cast<int>(p);
  L.in_features = r.Attr("in_features");
  L.out_features = r.Attr("out_features");
  const int64_t mb = CeilDiv(L.out_features, p), nb = CeilDiv(L.in_features, p);
  std::vector<float> values = r.Floats(1, "values", mb * nb * p);
  std::vector<int64_t> off = r.Ints(2, "offsets");
  PERMDNN_CHECK(static_cast<int64_t>(off.size()) == mb * nb, "{}: offsets has {} elements, expected [{}, {}]",
                r.where, off.size(), mb, nb);
  std::vector<uint16_t> offsets(off.size());
  for (std::size_t b = 0; b < off.size(); ++b) {
    PERMDNN_CHECK(off[b] >= 0 && off[b] < p, "{}: offsets: block ({}, {}) has offset {}, must be in [0, p={})",
                  r.where, static_cast<int64_t>(b) / nb, static_cast<int64_t>(b) % nb, off[b], p);
    offsets[b] = static_cast<uint16_t>(off[b]);
  }
  L.permdiag = Wrap(r.where, [&] {
    return PermDiagMatrix::FromParts(L.out_features, L.in_features, L.p, values, offsets);
  });
  L.bias = r.Bias(3, L.out_features);
  return L;
}

CompressedFcLayer ReadCirculant(const NodeReader& r) {
  CompressedFcLayer L;
  L.format = CompressedFormat::kCirculant;
  const int64_t p = r.Attr("p");
  PERMDNN_CHECK(p <= 65535, "{}: p = {} exceeds 65535", r.where, p);
  L.p = static_cast<int>(p);
  L.in_features = r.Attr("in_features");
  L.out_features = r.Attr("out_features");
  const int64_t mb = CeilDiv(L.out_features, p), nb = CeilDiv(L.in_features, p);
  std::vector<float> values = r.Floats(1, "values", mb * nb * p);
  L.circulant = Wrap(r.where, [&] {
    return BlockCirculantMatrix::FromParts(L.out_features, L.in_features, L.p, values);
  });
  L.bias = r.Bias(2, L.out_features);
  return L;
}

CompressedFcLayer ReadSparse(const NodeReader& r) {
  CompressedFcLayer L;
  L.format = CompressedFormat::kSparse;
  L.in_features = r.Attr("in_features");
  L.out_features = r.Attr("out_features");
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
    if (custom && op == "PermDiagMatMul") {
      layer = ReadPermDiag(r);
    } else if (custom && op == "BlockCirculantMatMul") {
      layer = ReadCirculant(r);
    } else if (custom && op == "SparseMatMul") {
      layer = ReadSparse(r);
    } else if (custom && (op == "PermDiagConv" || op == "BlockCirculantConv" || op == "SparseConv")) {
      out.skipped.push_back({node, op, "convolution: the accelerator models simulate fully connected layers "
                                       "(matrix x vector); a conv layer would need its im2col schedule"});
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
