// `permdnn compress`: projection of an ONNX model's dense weights onto the
// permuted-diagonal format (no data needed), and the conv weight helpers.
#include <algorithm>
#include <cmath>
#include <map>

#include "permdnn/core/error.h"
#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/formats/pruning.h"
#include "permdnn/formats/spec.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "runtime/compressed_formats.h"
#include "runtime/graph.h"
#include "runtime/lowering.h"
#include "runtime/onnx_util.h"

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

// The method for one layer.
struct Method {
  enum Kind { kDense, kPermDiag, kCirculant, kPrune } kind = kDense;
  int p = 1;
  double density = 1.0;
  int bits = 0;
};

Method ResolveMethod(const std::string& spec_text, const std::string& layer, bool edge,
                     const std::vector<std::string>& all) {
  const formats::CompressSpec spec = formats::CompressSpec::Parse(spec_text);
  spec.CheckLayerNames(all);
  const formats::LayerCompression lc = spec.Resolve(layer, edge);
  Method m;
  m.p = lc.p;
  m.density = lc.density;
  m.bits = lc.bits;
  switch (lc.kind) {
    case formats::CompressKind::kDense: m.kind = Method::kDense; break;
    case formats::CompressKind::kPermDiag: m.kind = lc.p > 1 ? Method::kPermDiag : Method::kDense; break;
    case formats::CompressKind::kCirculant: m.kind = lc.p > 1 ? Method::kCirculant : Method::kDense; break;
    case formats::CompressKind::kPrune: m.kind = Method::kPrune; break;
  }
  return m;
}

// Magnitude pruning (and k-means sharing) of a dense rows x cols weight, as
// CSR arrays plus the weights it stands for.
struct PrunedWeight {
  std::vector<int32_t> row_ptr, col_idx;
  std::vector<float> values;    // no sharing
  std::vector<uint8_t> codes;   // sharing
  std::vector<float> codebook;  // sharing: 2^bits
  std::vector<float> dense;     // the reconstruction, rows x cols
  double kept_energy = 1.0;     // 1 − ‖W − Ŵ‖² / ‖W‖²
};

PrunedWeight Prune(std::span<const float> w, int64_t rows, int64_t cols, double density, int bits) {
  PrunedWeight r;
  const std::vector<uint8_t> mask = MagnitudeMask(w, density);
  std::vector<float> kept;
  r.row_ptr.push_back(0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j)
      if (mask[i * cols + j]) {
        r.col_idx.push_back(static_cast<int32_t>(j));
        kept.push_back(w[i * cols + j]);
      }
    r.row_ptr.push_back(static_cast<int32_t>(r.col_idx.size()));
  }
  if (bits > 0 && !kept.empty()) {
    SharedWeights sw = KMeansCodebook(kept, bits);
    r.codes = std::move(sw.codes);
    r.codebook = std::move(sw.centroids);
    for (std::size_t e = 0; e < kept.size(); ++e) kept[e] = r.codebook[r.codes[e]];
  } else if (bits > 0) {
    r.codebook.assign(std::size_t{1} << bits, 0.0f);
  } else {
    r.values = kept;
  }
  r.dense.assign(w.size(), 0.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int32_t e = r.row_ptr[i]; e < r.row_ptr[i + 1]; ++e) r.dense[i * cols + r.col_idx[e]] = kept[e];
  double total = 0, err = 0;
  for (std::size_t k = 0; k < w.size(); ++k) {
    total += double(w[k]) * w[k];
    err += (double(w[k]) - r.dense[k]) * (double(w[k]) - r.dense[k]);
  }
  r.kept_energy = total > 0 ? 1.0 - err / total : 1.0;
  return r;
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
    if (method.kind == Method::kDense) {
      report.layers.push_back(lr);
      continue;
    }
    any = true;
    const int p = method.p;
    onnx::NodeProto nn;
    nn.set_name(n.name().empty() ? c.layer : n.name());
    nn.set_domain(detail::kPermDnnDomain);
    nn.add_input(n.input(0));
    nn.add_output(n.output(0));
    std::vector<float> values, dense_out;
    std::vector<uint16_t> offsets;
    int64_t out = 0, in = 0, ksz = 1;
    std::vector<int64_t> vshape;
    // The logical weight: [out, in·ksz] (Conv: [out, in, k...] flattened).
    std::vector<float> wt(w.floats().begin(), w.floats().end());
    if (c.op == "Conv") {
      out = w.shape()[0];
      in = w.shape()[1];
      ksz = w.shape()[2] * w.shape()[3];
    } else if (c.transposed) {
      out = w.shape()[1];
      in = w.shape()[0];
      for (int64_t i = 0; i < in; ++i)
        for (int64_t o = 0; o < out; ++o) wt[o * in + i] = w.f()[i * out + o];
    } else {
      out = w.shape()[0];
      in = w.shape()[1];
    }
    const bool conv = c.op == "Conv";
    std::vector<int64_t> kdims;
    if (conv) kdims = {w.shape()[2], w.shape()[3]};
    PrunedWeight pruned;
    if (method.kind == Method::kPermDiag) {
      lr.method = fmt::format("permdiag:p={}", p);
      if (conv) {
        detail::ConvProjection pr = detail::ProjectConv(wt, out, in, p, ksz);
        lr.kept_energy = pr.kept_energy;
        values = std::move(pr.values);
        offsets = std::move(pr.offsets);
        if (options.portable) dense_out = detail::PermDiagConvToDense(values, offsets, out, in, p, ksz);
      } else {
        PermDiagProjection pr = PermDiagMatrix::FromDense(wt, out, in, p);
        lr.kept_energy = pr.kept_energy;
        values.assign(pr.matrix.values().begin(), pr.matrix.values().end());
        offsets.assign(pr.matrix.offsets().begin(), pr.matrix.offsets().end());
        if (options.portable) dense_out = pr.matrix.ToDense();
      }
      vshape = {CeilDiv(out, p), CeilDiv(in, p), p};
      vshape.insert(vshape.end(), kdims.begin(), kdims.end());
    } else if (method.kind == Method::kCirculant) {
      lr.method = fmt::format("circulant:p={}", p);
      if (conv) {
        detail::CirculantConvProjection pr = detail::ProjectCirculantConv(wt, out, in, p, ksz);
        lr.kept_energy = pr.kept_energy;
        values = std::move(pr.values);
        if (options.portable) dense_out = detail::CirculantConvToDense(values, out, in, p, ksz);
      } else {
        CirculantProjection pr = BlockCirculantMatrix::FromDense(wt, out, in, p);
        lr.kept_energy = pr.kept_energy;
        values.assign(pr.matrix.values().begin(), pr.matrix.values().end());
        if (options.portable) dense_out = pr.matrix.ToDense();
      }
      vshape = {CeilDiv(out, p), CeilDiv(in, p), p};
      vshape.insert(vshape.end(), kdims.begin(), kdims.end());
    } else {
      pruned = Prune(wt, out, in * ksz, method.density, method.bits);
      lr.kept_energy = pruned.kept_energy;
      lr.method = fmt::format("prune:density={:.3g}", static_cast<double>(pruned.col_idx.size()) /
                                                          static_cast<double>(out * in * ksz));
      if (method.bits) lr.method += fmt::format(":bits={}", method.bits);
      if (options.portable) dense_out = pruned.dense;
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
      const std::string bias = n.input_size() >= 3 ? n.input(2) : std::string();
      if (method.kind == Method::kPrune) {
        const int64_t nnz = static_cast<int64_t>(pruned.col_idx.size());
        detail::SetInt32Tensor(g->add_initializer(), base + ".row_ptr", pruned.row_ptr, {out + 1});
        detail::SetInt32Tensor(g->add_initializer(), base + ".col_idx", pruned.col_idx, {nnz});
        nn.add_input(base + ".row_ptr");
        nn.add_input(base + ".col_idx");
        if (method.bits) {
          detail::SetUInt8Tensor(g->add_initializer(), base + ".codes", pruned.codes, {nnz});
          nn.add_input(base + ".codes");
        } else {
          detail::SetFloatTensor(g->add_initializer(), base + ".values", pruned.values, {nnz});
          nn.add_input(base + ".values");
        }
        nn.add_input(bias);
        if (method.bits) {
          detail::SetFloatTensor(g->add_initializer(), base + ".codebook", pruned.codebook,
                                 {static_cast<int64_t>(pruned.codebook.size())});
          nn.add_input(base + ".codebook");
        } else if (bias.empty()) {
          nn.mutable_input()->RemoveLast();
        }
        nn.set_op_type(conv ? "SparseConv" : "SparseMatMul");
        lr.stored_bytes = detail::SparseStoredBytes(out, nnz, static_cast<int64_t>(pruned.codebook.size()));
      } else {
        detail::SetFloatTensor(g->add_initializer(), base + ".values", values, vshape);
        nn.add_input(base + ".values");
        lr.stored_bytes = static_cast<int64_t>(values.size() * 4);
        if (method.kind == Method::kPermDiag) {
          detail::SetUInt16Tensor(g->add_initializer(), base + ".offsets", offsets, {vshape[0], vshape[1]});
          nn.add_input(base + ".offsets");
          lr.stored_bytes += static_cast<int64_t>(offsets.size() * 2);
          nn.set_op_type(conv ? "PermDiagConv" : "PermDiagMatMul");
        } else {
          nn.set_op_type(conv ? "BlockCirculantConv" : "BlockCirculantMatMul");
        }
        if (!bias.empty()) nn.add_input(bias);
        detail::AddAttr(&nn, "p", int64_t{p});
      }
      if (conv) {
        detail::AddAttr(&nn, "in_channels", in);
        detail::AddAttr(&nn, "out_channels", out);
        for (const auto& a : n.attribute())
          if (a.name() != "group") *nn.add_attribute() = a;
        bool has_kernel_shape = false;
        for (const auto& a : n.attribute()) has_kernel_shape = has_kernel_shape || a.name() == "kernel_shape";
        if (!has_kernel_shape) detail::AddAttr(&nn, "kernel_shape", kdims);
      } else {
        detail::AddAttr(&nn, "in_features", in);
        detail::AddAttr(&nn, "out_features", out);
      }
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
