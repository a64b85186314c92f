// The protobuf-free graph view (include/permdnn/runtime/onnx_graph.h).
#include "permdnn/runtime/onnx_graph.h"

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "runtime/onnx_util.h"

namespace permdnn::runtime {

std::string GraphNode::Where() const {
  return fmt::format("node '{}' ({}{}, #{})", name, domain.empty() ? "" : domain + ".", op_type, position);
}

struct OnnxGraph::Raw {
  onnx::ModelProto model;
  std::map<std::string, int> index;       // initializer name -> position
  std::map<std::string, Tensor> tensors;  // converted so far
};

const Tensor* OnnxGraph::Initializer(const std::string& value) const {
  auto it = raw_->index.find(value);
  if (it == raw_->index.end()) return nullptr;
  auto t = raw_->tensors.find(value);
  if (t == raw_->tensors.end())
    t = raw_->tensors
            .emplace(value, detail::TensorFromProto(raw_->model.graph().initializer(it->second),
                                                    fmt::format("{}: initializer '{}'", name, value)))
            .first;
  return &t->second;
}

OnnxGraph OnnxGraph::Parse(std::string_view bytes, const std::string& name) {
  OnnxGraph g;
  g.raw_ = std::make_shared<Raw>();
  g.raw_->model = detail::ParseModelProto(bytes, name);
  const onnx::ModelProto& m = g.raw_->model;
  g.name = name;
  std::map<std::string, int> opsets;
  for (const auto& o : m.opset_import())
    opsets[o.domain() == "ai.onnx" ? "" : o.domain()] = static_cast<int>(o.version());
  g.opset = opsets.count("") ? opsets[""] : 1;
  for (const auto& p : m.metadata_props()) g.metadata[p.key()] = p.value();
  const onnx::GraphProto& gp = m.graph();
  for (int k = 0; k < gp.initializer_size(); ++k) {
    g.raw_->index[gp.initializer(k).name()] = k;
    g.initializers.push_back(gp.initializer(k).name());
  }
  for (const auto& in : gp.input())
    if (!g.raw_->index.count(in.name())) g.inputs.push_back(in.name());
  for (const auto& o : gp.output()) g.outputs.push_back(o.name());
  for (int k = 0; k < gp.node_size(); ++k) {
    const onnx::NodeProto& pn = gp.node(k);
    GraphNode n;
    n.name = pn.name().empty() ? fmt::format("#{}", k) : pn.name();
    n.op_type = pn.op_type();
    n.domain = pn.domain() == "ai.onnx" ? "" : pn.domain();
    n.position = k;
    n.opset = opsets.count(n.domain) ? opsets[n.domain] : 1;
    n.inputs.assign(pn.input().begin(), pn.input().end());
    n.outputs.assign(pn.output().begin(), pn.output().end());
    detail::ReadAttributes(pn, name + ": " + n.Where(), &n.attrs, &n.tensor_attrs);
    g.nodes.push_back(std::move(n));
  }
  return g;
}

void WriteWithInitializers(std::string_view model_bytes, const std::string& name,
                           const std::map<std::string, Tensor>& replace, const std::string& out_path) {
  onnx::ModelProto m = detail::ParseModelProto(model_bytes, name);
  for (auto& t : *m.mutable_graph()->mutable_initializer()) {
    auto it = replace.find(t.name());
    if (it == replace.end()) continue;
    const std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
    PERMDNN_CHECK(IsFloat(it->second.dtype()) && it->second.shape() == dims,
                  "{}: initializer '{}' is {} {}; its replacement must be float32 of that shape, got {} {}", name,
                  t.name(), t.data_type(), ShapeString(dims), DTypeName(it->second.dtype()),
                  ShapeString(it->second.shape()));
    const std::string tname = t.name();
    t.Clear();
    detail::SetFloatTensor(&t, tname, it->second.floats(), dims);
  }
  detail::WriteModelProto(m, out_path);
}

}  // namespace permdnn::runtime
