// `permdnn compress`: projection of an ONNX model's dense weights onto the
// permuted-diagonal format (no data needed), and the conv weight helpers.
#include <algorithm>
#include <cmath>
#include <map>

#include "permdnn/core/error.h"
#include "permdnn/core/permdiag_matrix.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "runtime/graph.h"
#include "runtime/lowering.h"
#include "runtime/onnx_util.h"

#ifdef PERMDNN_HAVE_SPEC
#include "permdnn/train/compress_spec.h"
#endif

namespace permdnn::runtime {

namespace detail {

std::vector<float> PermDiagConvToDense(std::span<const float> values, std::span<const uint16_t> offsets, int64_t out,
                                       int64_t in, int p, int64_t ksz) {
  const int64_t mb = CeilDiv(out, p), nb = CeilDiv(in, p);
  PERMDNN_CHECK(static_cast<int64_t>(values.size()) == mb * nb * p * ksz && static_cast<int64_t>(offsets.size()) == mb * nb,
                "permdiag conv: {} values / {} offsets, expected {} / {}", values.size(), offsets.size(),
                mb * nb * p * ksz, mb * nb);
  std::vector<float> dense(static_cast<std::size_t>(out * in * ksz), 0.0f);
  for (int64_t I = 0; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J) {
      const int64_t k = offsets[I * nb + J];
      PERMDNN_CHECK(k < p, "block ({}, {}): offset {} >= p = {}", I, J, k, p);
      for (int64_t c = 0; c < p; ++c) {
        const int64_t o = I * p + c, ic = J * p + (c + k) % p;
        const float* w = values.data() + ((I * nb + J) * p + c) * ksz;
        if (o >= out || ic >= in) {
          for (int64_t t = 0; t < ksz; ++t)
            PERMDNN_CHECK(w[t] == 0.0f, "block ({}, {}): padded position (out {}, in {}) holds {}, must be 0", I, J, o,
                          ic, w[t]);
          continue;
        }
        std::copy(w, w + ksz, dense.begin() + (o * in + ic) * ksz);
      }
    }
  return dense;
}

ConvProjection ProjectConv(std::span<const float> dense, int64_t out, int64_t in, int p, int64_t ksz) {
  std::vector<float> norms(static_cast<std::size_t>(out * in));
  double total = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double e = 0;
      for (int64_t t = 0; t < ksz; ++t) e += double(dense[(o * in + i) * ksz + t]) * dense[(o * in + i) * ksz + t];
      norms[o * in + i] = static_cast<float>(std::sqrt(e));
      total += e;
    }
  PermDiagProjection pr = PermDiagMatrix::FromDense(norms, out, in, p);
  const int64_t mb = CeilDiv(out, p), nb = CeilDiv(in, p);
  ConvProjection r;
  r.offsets.assign(pr.matrix.offsets().begin(), pr.matrix.offsets().end());
  r.values.assign(static_cast<std::size_t>(mb * nb * p * ksz), 0.0f);
  double kept = 0;
  for (int64_t I = 0; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J)
      for (int64_t c = 0; c < p; ++c) {
        const int64_t o = I * p + c, ic = J * p + (c + r.offsets[I * nb + J]) % p;
        if (o >= out || ic >= in) continue;
        for (int64_t t = 0; t < ksz; ++t) {
          const float w = dense[(o * in + ic) * ksz + t];
          r.values[((I * nb + J) * p + c) * ksz + t] = w;
          kept += double(w) * w;
        }
      }
  r.kept_energy = total > 0 ? kept / total : 1.0;
  return r;
}

}  // namespace detail

namespace {

struct Candidate {
  int node = -1;
  std::string layer, op;
  int weight_init = -1;
  bool transposed = false;  // weight stored [in, out] (MatMul, Gemm transB=0)
};

std::string LayerName(const onnx::NodeProto& n, const std::string& weight) {
  const std::string suffix = ".weight";
  if (weight.size() > suffix.size() && weight.compare(weight.size() - suffix.size(), suffix.size(), suffix) == 0)
    return weight.substr(0, weight.size() - suffix.size());
  return n.name().empty() ? weight : n.name();
}

int64_t IntAttr(const onnx::NodeProto& n, const std::string& name, int64_t dflt) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return dflt;
}
float FloatAttr(const onnx::NodeProto& n, const std::string& name, float dflt) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.f();
  return dflt;
}

// The method for one layer: "dense" or p (> 1) for permdiag.
struct Method {
  bool permdiag = false;
  int p = 1;
};

Method ResolveMethod(const std::string& spec_text, const std::string& layer, bool edge,
                     const std::vector<std::string>& all) {
#ifdef PERMDNN_HAVE_SPEC
  const train::CompressSpec spec = train::CompressSpec::Parse(spec_text);
  spec.CheckLayerNames(all);
  const train::LayerCompression lc = spec.Resolve(layer, edge);
  if (lc.kind == train::CompressKind::kDense) return {};
  if (lc.kind != train::CompressKind::kPermDiag)
    throw UnsupportedError(fmt::format("--compress: layer '{}': {} is not available in compress (permdiag or dense)",
                                       layer, lc.ToString()));
  return {true, lc.p};
#else
  (void)all;
  (void)edge;
  (void)layer;
  Fail("--compress '{}': the SPEC parser (permdnn::spec) is not part of this build", spec_text);
#endif
}

}  // namespace

ExportReport CompressOnnx(const std::string& in_path, const std::string& out_path, const CompressOptions& options) {
  const std::string bytes = ReadFileBytes(in_path);
  // Validate the input with the runtime first (clear errors for bad files).
  Model::FromBytes(bytes, in_path);
  onnx::ModelProto m = detail::ParseModelProto(bytes, in_path);
  onnx::GraphProto* g = m.mutable_graph();
  std::map<std::string, int> inits;
  for (int k = 0; k < g->initializer_size(); ++k) inits[g->initializer(k).name()] = k;

  std::vector<Candidate> cands;
  for (int k = 0; k < g->node_size(); ++k) {
    const onnx::NodeProto& n = g->node(k);
    if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
    if (n.input_size() < 2 || !inits.count(n.input(1))) continue;
    const onnx::TensorProto& w = g->initializer(inits[n.input(1)]);
    if (w.data_type() != onnx::TensorProto::FLOAT) continue;
    Candidate c;
    c.node = k;
    c.op = n.op_type();
    c.weight_init = inits[n.input(1)];
    c.layer = LayerName(n, n.input(1));
    if (n.op_type() == "Gemm") {
      if (w.dims_size() != 2 || IntAttr(n, "transA", 0) != 0 || FloatAttr(n, "alpha", 1) != 1.0f) continue;
      if (n.input_size() >= 3 && !n.input(2).empty()) {
        if (!inits.count(n.input(2)) || FloatAttr(n, "beta", 1) != 1.0f) continue;
        if (g->initializer(inits[n.input(2)]).dims_size() != 1) continue;
      }
      c.transposed = IntAttr(n, "transB", 0) == 0;
    } else if (n.op_type() == "MatMul") {
      if (w.dims_size() != 2) continue;
      c.transposed = true;
    } else if (n.op_type() == "Conv") {
      if (w.dims_size() != 4 || IntAttr(n, "group", 1) != 1) continue;
    } else {
      continue;
    }
    cands.push_back(c);
  }
  PERMDNN_CHECK(!cands.empty(), "{}: no Gemm / MatMul / Conv with a constant float weight to compress", in_path);
  std::vector<std::string> names;
  for (const auto& c : cands) names.push_back(c.layer);

  ExportReport report;
  report.path = out_path;
  bool any = false;
  // Rebuild the node list: replaced nodes keep their position.
  std::vector<onnx::NodeProto> nodes(g->node().begin(), g->node().end());
  std::vector<int> drop_inits;
  for (std::size_t ci = 0; ci < cands.size(); ++ci) {
    const Candidate& c = cands[ci];
    const bool edge = (ci == 0 && c.op == "Conv") || ci + 1 == cands.size();
    const Method method = ResolveMethod(options.spec, c.layer, edge, names);
    onnx::NodeProto& n = nodes[c.node];
    const onnx::TensorProto& wp = g->initializer(c.weight_init);
    Tensor w = detail::TensorFromProto(wp, in_path + ": initializer '" + wp.name() + "'");
    LayerReport lr;
    lr.name = c.layer;
    lr.dense_bytes = w.size() * 4;
    lr.stored_bytes = lr.dense_bytes;
    lr.op = c.op;
    if (!method.permdiag || method.p <= 1) {
      report.layers.push_back(lr);
      continue;
    }
    any = true;
    const int p = method.p;
    lr.method = fmt::format("permdiag:p={}", p);
    onnx::NodeProto nn;
    nn.set_name(n.name().empty() ? c.layer : n.name());
    nn.set_domain(detail::kPermDnnDomain);
    nn.add_input(n.input(0));
    nn.add_output(n.output(0));
    std::vector<float> values, dense_out;
    std::vector<uint16_t> offsets;
    int64_t out = 0, in = 0, ksz = 1;
    std::vector<int64_t> vshape;
    if (c.op == "Conv") {
      out = w.shape()[0];
      in = w.shape()[1];
      ksz = w.shape()[2] * w.shape()[3];
      detail::ConvProjection pr = detail::ProjectConv(w.floats(), out, in, p, ksz);
      lr.kept_energy = pr.kept_energy;
      values = std::move(pr.values);
      offsets = std::move(pr.offsets);
      vshape = {CeilDiv(out, p), CeilDiv(in, p), p, w.shape()[2], w.shape()[3]};
      if (options.portable) dense_out = detail::PermDiagConvToDense(values, offsets, out, in, p, ksz);
    } else {
      // Logical W is [out, in].
      const int64_t r0 = w.shape()[0], r1 = w.shape()[1];
      std::vector<float> wt(w.floats().begin(), w.floats().end());
      if (c.transposed) {
        out = r1;
        in = r0;
        for (int64_t i = 0; i < r0; ++i)
          for (int64_t o = 0; o < r1; ++o) wt[o * in + i] = w.f()[i * r1 + o];
      } else {
        out = r0;
        in = r1;
      }
      PermDiagProjection pr = PermDiagMatrix::FromDense(wt, out, in, p);
      lr.kept_energy = pr.kept_energy;
      values.assign(pr.matrix.values().begin(), pr.matrix.values().end());
      offsets.assign(pr.matrix.offsets().begin(), pr.matrix.offsets().end());
      vshape = {pr.matrix.row_blocks(), pr.matrix.col_blocks(), p};
      if (options.portable) dense_out = pr.matrix.ToDense();
    }
    const std::string base = c.layer;
    if (options.portable) {
      // Same op, projected dense weight (Gemm: [out, in] with transB=1).
      onnx::TensorProto* t = g->add_initializer();
      std::vector<int64_t> shape(wp.dims().begin(), wp.dims().end());
      if (c.op != "Conv") shape = {out, in};
      detail::SetFloatTensor(t, base + ".projected_weight", dense_out, shape);
      onnx::NodeProto pn;
      pn.set_name(n.name());
      pn.set_op_type(c.op == "Conv" ? "Conv" : "Gemm");
      pn.add_input(n.input(0));
      pn.add_input(base + ".projected_weight");
      if (c.op == "Gemm" && n.input_size() >= 3 && !n.input(2).empty()) pn.add_input(n.input(2));
      if (c.op == "Conv" && n.input_size() >= 3) pn.add_input(n.input(2));
      pn.add_output(n.output(0));
      if (c.op == "Conv") {
        for (const auto& a : n.attribute()) *pn.add_attribute() = a;
      } else {
        detail::AddAttr(&pn, "transB", int64_t{1});
      }
      if (c.op == "MatMul") {
        // MatMul may have rank > 2 inputs; keep it as MatMul with [in, out].
        pn.set_op_type("MatMul");
        pn.clear_attribute();
        std::vector<float> io(static_cast<std::size_t>(in * out));
        for (int64_t o = 0; o < out; ++o)
          for (int64_t i = 0; i < in; ++i) io[i * out + o] = dense_out[o * in + i];
        t->Clear();
        detail::SetFloatTensor(t, base + ".projected_weight", io, {in, out});
      }
      lr.stored_bytes = out * in * ksz * 4;
      lr.op = pn.op_type();
      n = pn;
    } else {
      detail::SetFloatTensor(g->add_initializer(), base + ".values", values, vshape);
      detail::SetUInt16Tensor(g->add_initializer(), base + ".offsets", offsets, {vshape[0], vshape[1]});
      nn.add_input(base + ".values");
      nn.add_input(base + ".offsets");
      if (n.input_size() >= 3 && !n.input(2).empty()) nn.add_input(n.input(2));
      detail::AddAttr(&nn, "p", int64_t{p});
      if (c.op == "Conv") {
        nn.set_op_type("PermDiagConv");
        detail::AddAttr(&nn, "in_channels", in);
        detail::AddAttr(&nn, "out_channels", out);
        for (const auto& a : n.attribute())
          if (a.name() != "group") *nn.add_attribute() = a;
      } else {
        nn.set_op_type("PermDiagMatMul");
        detail::AddAttr(&nn, "in_features", in);
        detail::AddAttr(&nn, "out_features", out);
      }
      lr.stored_bytes = static_cast<int64_t>(values.size() * 4 + offsets.size() * 2);
      lr.op = nn.op_type();
      n = nn;
    }
    drop_inits.push_back(c.weight_init);
    report.layers.push_back(lr);
  }
  PERMDNN_CHECK(any, "--compress '{}': no layer of {} was selected for compression (layers: {}; the first conv and "
                     "the last layer stay dense unless named)",
                options.spec, in_path, fmt::format("{}", fmt::join(names, ", ")));
  g->clear_node();
  for (auto& n : nodes) *g->add_node() = n;
  // Drop replaced weights unless still used elsewhere.
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
  for (const auto& o : m.opset_import()) has_domain = has_domain || o.domain() == detail::kPermDnnDomain;
  if (!has_domain && !options.portable) {
    auto* o = m.add_opset_import();
    o->set_domain(detail::kPermDnnDomain);
    o->set_version(1);
  }
  std::string out_bytes;
  PERMDNN_CHECK(m.SerializeToString(&out_bytes), "{}: cannot serialize", out_path);
  try {
    Model::FromBytes(out_bytes, out_path);
  } catch (const Error& e) {
    Fail("{}: the compressed model does not load: {}", in_path, e.what());
  }
  detail::WriteModelProto(m, out_path);
  report.file_bytes = static_cast<int64_t>(out_bytes.size());
  return report;
}

}  // namespace permdnn::runtime
