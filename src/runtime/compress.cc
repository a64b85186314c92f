// `permdnn compress`: an ONNX model's dense Gemm / MatMul / Conv weights
// projected onto a compressed format of the registry (no data needed).
//
// Named steps: FindCandidates (the layers with a constant float weight),
// then per layer LogicalWeight (the weight as [out][in][taps]),
// formats::Project (the format's projection, kept energy), and
// EmitCompressed (the format's op, formats::WriteNode) or EmitPortable (the
// projection as a dense standard op); Finalize swaps the node list, drops
// the replaced weights, checks that the runtime loads the result and
// writes it atomically.
#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/ranges.h>

#include "permdnn/core/error.h"
#include "permdnn/formats/registry.h"
#include "permdnn/formats/spec.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "runtime/graph.h"
#include "runtime/onnx_util.h"

namespace permdnn::runtime {

namespace {

struct Candidate {
  int node = -1;
  std::string layer, op;
  int weight_init = -1;
  bool transposed = false;       // weight stored [in, out] (MatMul, Gemm transB=0)
  formats::Attributes attrs;     // the node's, for Conv's window
};

std::string LayerName(const onnx::NodeProto& n, const std::string& weight) {
  const std::string suffix = ".weight";
  if (weight.size() > suffix.size() && weight.compare(weight.size() - suffix.size(), suffix.size(), suffix) == 0)
    return weight.substr(0, weight.size() - suffix.size());
  return n.name().empty() ? weight : n.name();
}

// The Gemm / MatMul / Conv nodes with a constant float weight this command
// can replace: Gemm without transA, alpha or beta scaling (bias 1-D and
// constant); MatMul with a 2-D weight; Conv 2-D with group 1.
std::vector<Candidate> FindCandidates(const onnx::GraphProto& g, const std::map<std::string, int>& inits,
                                      const std::string& path) {
  std::vector<Candidate> cands;
  for (int k = 0; k < g.node_size(); ++k) {
    const onnx::NodeProto& n = g.node(k);
    if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
    if (n.input_size() < 2 || !inits.count(n.input(1))) continue;
    // A node whose output the file leaves out (no output, or an empty name)
    // computes nothing anyone reads: nothing to compress, and the rewrite
    // below reads output 0.
    if (n.output_size() < 1 || n.output(0).empty()) continue;
    const onnx::TensorProto& w = g.initializer(inits.at(n.input(1)));
    if (w.data_type() != onnx::TensorProto::FLOAT) continue;
    Candidate c;
    c.node = k;
    c.op = n.op_type();
    c.weight_init = inits.at(n.input(1));
    c.layer = LayerName(n, n.input(1));
    const std::string where = fmt::format("{}: node '{}' ({}, #{})", path, n.name(), n.op_type(), k);
    detail::ReadAttributes(n, where, &c.attrs);
    if (n.op_type() == "Gemm") {
      if (w.dims_size() != 2 || c.attrs.Int("transA", 0, where) != 0 || c.attrs.Float("alpha", 1, where) != 1.0f)
        continue;
      if (n.input_size() >= 3 && !n.input(2).empty()) {
        if (!inits.count(n.input(2)) || c.attrs.Float("beta", 1, where) != 1.0f) continue;
        if (g.initializer(inits.at(n.input(2))).dims_size() != 1) continue;
      }
      c.transposed = c.attrs.Int("transB", 0, where) == 0;
    } else if (n.op_type() == "MatMul") {
      if (w.dims_size() != 2) continue;
      c.transposed = true;
    } else if (n.op_type() == "Conv") {
      if (w.dims_size() != 4 || c.attrs.Int("group", 1, where) != 1) continue;
    } else {
      continue;
    }
    cands.push_back(std::move(c));
  }
  return cands;
}

// The method of every candidate under the SPEC (names checked; the default
// rule: a first Conv and the last layer stay dense unless named).
std::vector<formats::LayerCompression> ResolveMethods(const std::vector<Candidate>& cands,
                                                      const formats::CompressSpec& spec) {
  std::vector<std::string> names;
  for (const auto& c : cands) names.push_back(c.layer);
  spec.CheckLayerNames(names);
  std::vector<formats::LayerCompression> methods;
  for (std::size_t ci = 0; ci < cands.size(); ++ci) {
    const bool edge = (ci == 0 && cands[ci].op == "Conv") || ci + 1 == cands.size();
    methods.push_back(spec.Resolve(cands[ci].layer, edge));
  }
  return methods;
}

// The candidate's weight as [out][in][taps] with its geometry.
std::vector<float> LogicalWeight(const Candidate& c, const Tensor& w, formats::Geometry* g) {
  std::vector<float> wt(w.floats().begin(), w.floats().end());
  if (c.op == "Conv") {
    g->out = w.shape()[0];
    g->in = w.shape()[1];
    g->kernel = {w.shape()[2], w.shape()[3]};
  } else if (c.transposed) {
    g->out = w.shape()[1];
    g->in = w.shape()[0];
    for (int64_t i = 0; i < g->in; ++i)
      for (int64_t o = 0; o < g->out; ++o) wt[o * g->in + i] = w.f()[i * g->out + o];
  } else {
    g->out = w.shape()[0];
    g->in = w.shape()[1];
  }
  return wt;
}

// The projection as the same kind of dense op: Gemm [out, in] with
// transB=1, MatMul [in, out] (it may have rank > 2 inputs), or Conv.
// `computed_weight`: the name of a weight another node computes in that
// layout (ternary's dequantized codes); empty: the dense projection is
// written as an initializer.
onnx::NodeProto EmitPortable(const Candidate& c, const onnx::NodeProto& n, const formats::Weights& w,
                             const std::string& base, onnx::GraphProto* g, const std::string& computed_weight = "") {
  onnx::NodeProto pn;
  pn.set_name(n.name());
  pn.add_input(n.input(0));
  pn.add_input(computed_weight.empty() ? base + ".projected_weight" : computed_weight);
  pn.add_output(n.output(0));
  if (computed_weight.empty()) {
    const std::vector<float> dense = formats::ToDense(w);
    onnx::TensorProto* t = g->add_initializer();
    if (c.op == "MatMul") {
      std::vector<float> io(dense.size());
      for (int64_t o = 0; o < w.g.out; ++o)
        for (int64_t i = 0; i < w.g.in; ++i) io[i * w.g.out + o] = dense[o * w.g.in + i];
      detail::SetFloatTensor(t, base + ".projected_weight", io, {w.g.in, w.g.out});
    } else {
      std::vector<int64_t> shape = {w.g.out, w.g.in};
      shape.insert(shape.end(), w.g.kernel.begin(), w.g.kernel.end());
      detail::SetFloatTensor(t, base + ".projected_weight", dense, shape);
    }
  }
  if (c.op == "MatMul") {
    pn.set_op_type("MatMul");
    return pn;
  }
  if (n.input_size() >= 3 && !n.input(2).empty()) pn.add_input(n.input(2));
  if (c.op == "Conv") {
    pn.set_op_type("Conv");
    for (const auto& a : n.attribute()) *pn.add_attribute() = a;
  } else {
    pn.set_op_type("Gemm");
    detail::AddAttr(&pn, "transB", int64_t{1});
  }
  return pn;
}

// Ternary weights as standard ONNX: int8 codes in {-1, 0, +1} (the layout
// of the dense weight: [out, in, k...], or [in, out] for MatMul) and a float
// scale per output channel, dequantized by DequantizeLinear (per-axis, so
// opset >= 13) or, in older models, by Cast + Mul (scale shaped to
// broadcast); `weight` names the float result the op reads. Returns the
// dequantizing nodes; their stored bytes are added to *bytes.
std::vector<onnx::NodeProto> EmitTernaryDequantize(const Candidate& c, const formats::Weights& w,
                                                   const std::string& base, int64_t opset, onnx::GraphProto* g,
                                                   std::string* weight, int64_t* bytes) {
  const TernaryMatrix m = *formats::Lift(w).ternary;
  const std::vector<int8_t> codes = m.Codes();  // [out][in·taps]
  const int64_t out = w.g.out, in = w.g.in;
  std::vector<int8_t> stored = codes;
  std::vector<int64_t> shape = {out, in};
  shape.insert(shape.end(), w.g.kernel.begin(), w.g.kernel.end());
  const bool io = c.op == "MatMul";  // [in, out]: the channel axis is 1
  if (io) {
    shape = {in, out};
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) stored[i * out + o] = codes[o * in + i];
  }
  const std::string codes_name = base + ".ternary_codes", scale_name = base + ".ternary_scale";
  *weight = base + ".ternary_weight";
  detail::SetInt8Tensor(g->add_initializer(), codes_name, stored, shape);
  std::vector<int64_t> scale_shape = {out};
  if (opset < 13) {  // broadcast along the channel axis
    scale_shape.assign(shape.size(), 1);
    scale_shape[io ? 1 : 0] = out;
  }
  detail::SetFloatTensor(g->add_initializer(), scale_name, w.scale, scale_shape);
  *bytes = static_cast<int64_t>(stored.size()) + out * 4;
  std::vector<onnx::NodeProto> nodes;
  if (opset >= 13) {
    const std::string zp_name = base + ".ternary_zero_point";
    detail::SetInt8Tensor(g->add_initializer(), zp_name, std::vector<int8_t>(static_cast<std::size_t>(out), 0), {out});
    *bytes += out;
    onnx::NodeProto& dq = nodes.emplace_back();
    dq.set_name(base + ".dequantize");
    dq.set_op_type("DequantizeLinear");
    dq.add_input(codes_name);
    dq.add_input(scale_name);
    dq.add_input(zp_name);
    dq.add_output(*weight);
    detail::AddAttr(&dq, "axis", int64_t{io ? 1 : 0});
    return nodes;
  }
  onnx::NodeProto& cast = nodes.emplace_back();
  cast.set_name(base + ".cast");
  cast.set_op_type("Cast");
  cast.add_input(codes_name);
  cast.add_output(base + ".ternary_codes_f");
  detail::AddAttr(&cast, "to", int64_t{onnx::TensorProto::FLOAT});
  onnx::NodeProto& mul = nodes.emplace_back();
  mul.set_name(base + ".scale");
  mul.set_op_type("Mul");
  mul.add_input(base + ".ternary_codes_f");
  mul.add_input(scale_name);
  mul.add_output(*weight);
  return nodes;
}

// The projection as its format's op; the bias stays the node's initializer.
onnx::NodeProto EmitCompressed(const Candidate& c, const onnx::NodeProto& n, const formats::Weights& w,
                               onnx::GraphProto* g) {
  formats::Attributes window = c.op == "Conv" ? c.attrs : formats::Attributes{};
  onnx::NodeProto nn;
  nn.set_name(n.name().empty() ? c.layer : n.name());
  const std::string bias = n.input_size() >= 3 ? n.input(2) : std::string();
  detail::EmitNode(formats::WriteNode(w, window), c.layer, n.input(0), n.output(0), g, &nn, bias);
  return nn;
}

// The new node list; replaced weights dropped unless still used; the
// The model's default-domain opset (1 when it declares none).
int64_t DefaultOpset(const onnx::ModelProto& m) {
  for (const auto& o : m.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") return o.version();
  return 1;
}

// ai.permdnn opset declared; the result must load in the runtime.
std::string Finalize(onnx::ModelProto& m, std::vector<onnx::NodeProto> nodes, std::vector<int> drop_inits,
                     bool portable, const std::string& in_path, const std::string& out_path) {
  onnx::GraphProto* g = m.mutable_graph();
  g->clear_node();
  for (auto& n : nodes) *g->add_node() = std::move(n);
  std::sort(drop_inits.rbegin(), drop_inits.rend());
  for (int idx : drop_inits) {
    const std::string nm = g->initializer(idx).name();
    bool used = false;
    for (const auto& n : g->node())
      for (const auto& i : n.input()) used = used || i == nm;
    if (used) continue;
    g->mutable_initializer()->DeleteSubrange(idx, 1);
    for (int k = 0; k < g->input_size(); ++k)
      if (g->input(k).name() == nm) {
        g->mutable_input()->DeleteSubrange(k, 1);
        break;
      }
  }
  bool has_domain = false;
  for (const auto& o : m.opset_import()) has_domain = has_domain || formats::IsPermDnnDomain(o.domain());
  if (!has_domain && !portable) {
    auto* o = m.add_opset_import();
    o->set_domain(formats::kDomain);
    o->set_version(formats::kDomainVersion);
  }
  return detail::WriteLoadableModel(m, out_path, in_path, "compressed");
}

}  // namespace

ExportReport CompressOnnx(const std::string& in_path, const std::string& out_path, const CompressOptions& options) {
  const std::string bytes = ReadFileBytes(in_path);
  Model::FromBytes(bytes, in_path);  // validate the input with the runtime first (clear errors for bad files)
  onnx::ModelProto m = detail::ParseModelProto(bytes, in_path);
  onnx::GraphProto* g = m.mutable_graph();
  std::map<std::string, int> inits;
  for (int k = 0; k < g->initializer_size(); ++k) inits[g->initializer(k).name()] = k;
  const std::vector<Candidate> cands = FindCandidates(*g, inits, in_path);
  PERMDNN_CHECK(!cands.empty(), "{}: no Gemm / MatMul / Conv with a constant float weight to compress", in_path);
  std::vector<std::string> names;
  for (const auto& c : cands) names.push_back(c.layer);
  const std::vector<formats::LayerCompression> methods =
      ResolveMethods(cands, formats::CompressSpec::Parse(options.spec));

  ExportReport report;
  report.path = out_path;
  bool any = false;
  std::vector<onnx::NodeProto> nodes(g->node().begin(), g->node().end());  // replaced nodes keep their position
  std::vector<int> drop_inits;
  std::map<int, std::vector<onnx::NodeProto>> prelude;  // nodes to insert before a replaced node
  for (std::size_t ci = 0; ci < cands.size(); ++ci) {
    const Candidate& c = cands[ci];
    const formats::LayerCompression& method = methods[ci];
    const formats::FormatTraits& format = formats::FormatOf(method);
    const onnx::TensorProto& wp = g->initializer(c.weight_init);
    const Tensor w = detail::TensorFromProto(wp, in_path + ": initializer '" + wp.name() + "'");
    LayerReport lr;
    lr.name = c.layer;
    lr.dense_bytes = w.size() * 4;
    lr.stored_bytes = lr.dense_bytes;
    lr.op = c.op;
    if (format.kind == formats::Kind::kDense) {
      report.layers.push_back(lr);
      continue;
    }
    any = true;
    formats::Geometry geometry;
    geometry.p = format.blocked ? method.p : 1;
    const std::vector<float> dense = LogicalWeight(c, w, &geometry);
    const formats::Projection pr = formats::Project(format, dense, geometry, method);
    lr.kept_energy = pr.kept_energy;
    lr.method = formats::DescribeMethod(pr.weights);
    onnx::NodeProto& n = nodes[c.node];
    if (options.portable && pr.weights.kind == formats::Kind::kTernary) {
      std::string weight;
      prelude[c.node] = EmitTernaryDequantize(c, pr.weights, c.layer, DefaultOpset(m), g, &weight, &lr.stored_bytes);
      n = EmitPortable(c, n, pr.weights, c.layer, g, weight);
    } else if (options.portable) {
      n = EmitPortable(c, n, pr.weights, c.layer, g);
      lr.stored_bytes = formats::StoredSize(formats::Kind::kDense, geometry, 0, 0, false).bytes;
    } else {
      n = EmitCompressed(c, n, pr.weights, g);
      lr.stored_bytes = formats::StoredSize(pr.weights, {}, /*with_bias=*/false).bytes;
    }
    lr.op = n.op_type();
    drop_inits.push_back(c.weight_init);
    report.layers.push_back(lr);
  }
  PERMDNN_CHECK(any, "--compress '{}': no layer of {} was selected for compression (layers: {}; the first conv and "
                     "the last layer stay dense unless named)",
                options.spec, in_path, fmt::format("{}", fmt::join(names, ", ")));
  if (!prelude.empty()) {
    std::vector<onnx::NodeProto> ordered;
    for (int k = 0; k < static_cast<int>(nodes.size()); ++k) {
      if (auto it = prelude.find(k); it != prelude.end())
        for (auto& p : it->second) ordered.push_back(std::move(p));
      ordered.push_back(std::move(nodes[k]));
    }
    nodes = std::move(ordered);
  }
  report.file_bytes =
      static_cast<int64_t>(Finalize(m, std::move(nodes), std::move(drop_inits), options.portable, in_path, out_path)
                               .size());
  return report;
}

std::vector<CompressTarget> PlanCompression(const std::string& in_path, const std::string& spec) {
  const std::string bytes = ReadFileBytes(in_path);
  Model::FromBytes(bytes, in_path);
  const onnx::ModelProto m = detail::ParseModelProto(bytes, in_path);
  const onnx::GraphProto& g = m.graph();
  std::map<std::string, int> inits;
  for (int k = 0; k < g.initializer_size(); ++k) inits[g.initializer(k).name()] = k;
  const std::vector<Candidate> cands = FindCandidates(g, inits, in_path);
  PERMDNN_CHECK(!cands.empty(), "{}: no Gemm / MatMul / Conv with a constant float weight to compress", in_path);
  const std::vector<formats::LayerCompression> methods = ResolveMethods(cands, formats::CompressSpec::Parse(spec));
  std::vector<CompressTarget> out;
  for (std::size_t ci = 0; ci < cands.size(); ++ci) {
    const Candidate& c = cands[ci];
    const onnx::TensorProto& w = g.initializer(c.weight_init);
    CompressTarget t;
    t.layer = c.layer;
    t.op = c.op;
    t.weight = w.name();
    t.transposed = c.transposed;
    t.out = c.transposed ? w.dims(1) : w.dims(0);
    t.in = c.transposed ? w.dims(0) : w.dims(1);
    for (int d = 2; d < w.dims_size(); ++d) t.kernel.push_back(w.dims(d));
    t.method = methods[ci];
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace permdnn::runtime
