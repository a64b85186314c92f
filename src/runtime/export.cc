// `permdnn export`: a training run directory (docs/run-format.md) to ONNX.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "runtime/compressed_formats.h"
#include "runtime/graph.h"
#include "runtime/lowering.h"
#include "runtime/onnx_util.h"

namespace permdnn::runtime {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct LayerCtx {
  std::string run_dir, model_json, name;
  const json* layer = nullptr;

  std::string Where() const { return fmt::format("{}: layer '{}'", model_json, name); }
  int64_t Int(const char* key) const {
    PERMDNN_CHECK(layer->contains(key) && (*layer)[key].is_number_integer(), "{}: missing integer field '{}'",
                  Where(), key);
    return (*layer)[key].get<int64_t>();
  }
  std::vector<int64_t> Pair(const char* key, int64_t dflt) const {
    if (!layer->contains(key)) return {dflt, dflt};
    const json& v = (*layer)[key];
    if (v.is_number_integer()) return {v.get<int64_t>(), v.get<int64_t>()};
    PERMDNN_CHECK(v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer(),
                  "{}: field '{}' should be an int or [h, w]", Where(), key);
    return {v[0].get<int64_t>(), v[1].get<int64_t>()};
  }
  bool HasTensor(const char* t) const { return layer->contains("tensors") && (*layer)["tensors"].contains(t); }
  NpyArray Tensor(const char* t, const std::vector<int64_t>& shape) const {
    PERMDNN_CHECK(HasTensor(t), "{}: missing tensor '{}' in \"tensors\"", Where(), t);
    const std::string rel = (*layer)["tensors"][t].get<std::string>();
    NpyArray a = ReadNpy((fs::path(run_dir) / rel).string());
    PERMDNN_CHECK(a.shape == shape, "{}: tensor '{}' ({}) has shape {}, expected {}", Where(), t, rel,
                  ShapeString(a.shape), ShapeString(shape));
    return a;
  }
  // A 1-D tensor of any length (len < 0) or of length len.
  NpyArray Vector(const char* t, int64_t len) const {
    PERMDNN_CHECK(HasTensor(t), "{}: missing tensor '{}' in \"tensors\"", Where(), t);
    const std::string rel = (*layer)["tensors"][t].get<std::string>();
    NpyArray a = ReadNpy((fs::path(run_dir) / rel).string());
    PERMDNN_CHECK(a.shape.size() == 1 && (len < 0 || a.shape[0] == len), "{}: tensor '{}' ({}) has shape {}, expected {}",
                  Where(), t, rel, ShapeString(a.shape), len < 0 ? std::string("1-D") : fmt::format("[{}]", len));
    return a;
  }
  // int32 (int64 accepted) 1-D index array.
  std::vector<int64_t> Indices(const char* t, int64_t len) const {
    NpyArray a = Vector(t, len);
    if (a.is<int32_t>()) {
      std::vector<int32_t> v = a.as<int32_t>();
      return {v.begin(), v.end()};
    }
    PERMDNN_CHECK(a.is<int64_t>(), "{}: tensor '{}' has dtype {}, expected int32 ({})", Where(), t, a.descr,
                  NpyDescr<int32_t>());
    return a.as<int64_t>();
  }
  std::vector<float> Floats(const char* t, const std::vector<int64_t>& shape) const {
    return Tensor(t, shape).as<float>(Where() + ": " + t);
  }
  std::vector<uint16_t> Offsets(const std::vector<int64_t>& shape, int p) const {
    NpyArray a = Tensor("offsets", shape);
    std::vector<float> f = a.ToFloat(Where() + ": offsets");
    std::vector<uint16_t> out(f.size());
    for (std::size_t k = 0; k < f.size(); ++k) {
      PERMDNN_CHECK(f[k] >= 0 && f[k] < p && f[k] == std::floor(f[k]),
                    "{}: offsets[{}] = {} is not an integer in [0, p={})", Where(), k, f[k], p);
      out[k] = static_cast<uint16_t>(f[k]);
    }
    return out;
  }
};

class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}
  std::string current = "input";
  int64_t weight_bytes = 0;

  std::string AddInit(const std::string& name, std::span<const float> v, const std::vector<int64_t>& shape) {
    detail::SetFloatTensor(g_->add_initializer(), name, v, shape);
    weight_bytes += static_cast<int64_t>(v.size_bytes());
    return name;
  }
  std::string AddInitI32(const std::string& name, std::span<const int32_t> v) {
    detail::SetInt32Tensor(g_->add_initializer(), name, v, {static_cast<int64_t>(v.size())});
    weight_bytes += static_cast<int64_t>(v.size_bytes());
    return name;
  }
  std::string AddInitU8(const std::string& name, std::span<const uint8_t> v) {
    detail::SetUInt8Tensor(g_->add_initializer(), name, v, {static_cast<int64_t>(v.size())});
    weight_bytes += static_cast<int64_t>(v.size_bytes());
    return name;
  }
  std::string AddInitU16(const std::string& name, std::span<const uint16_t> v, const std::vector<int64_t>& shape) {
    detail::SetUInt16Tensor(g_->add_initializer(), name, v, shape);
    weight_bytes += static_cast<int64_t>(v.size_bytes());
    return name;
  }
  onnx::NodeProto* Node(const std::string& name, const std::string& op, std::vector<std::string> inputs,
                        const std::string& domain = "") {
    onnx::NodeProto* n = g_->add_node();
    n->set_name(name);
    n->set_op_type(op);
    if (!domain.empty()) n->set_domain(domain);
    n->add_input(current);
    for (const auto& i : inputs) n->add_input(i);
    current = name + ":out";
    n->add_output(current);
    return n;
  }

 private:
  onnx::GraphProto* g_;
};

void SetValueInfo(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& shape) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* s = tt->mutable_shape();
  for (std::size_t k = 0; k < shape.size(); ++k) {
    auto* d = s->add_dim();
    if (shape[k] < 0) d->set_dim_param("batch");
    else d->set_dim_value(shape[k]);
  }
}

struct LayerMethod {
  std::string kind = "dense";  // dense, permdiag, circulant, prune
  int p = 1;
  int bits = 0;  // prune: codebook of 2^bits entries, 0 = none
};

LayerMethod CompressKind(const LayerCtx& c) {
  LayerMethod m;
  if (!c.layer->contains("compress")) return m;
  const json& cj = (*c.layer)["compress"];
  m.kind = cj.value("kind", "dense");
  if (m.kind == "dense") return m;
  if (m.kind == "permdiag" || m.kind == "circulant") {
    const int64_t max_p = m.kind == "permdiag" ? 65535 : 4096;
    PERMDNN_CHECK(cj.contains("p") && cj["p"].is_number_integer() && cj["p"].get<int64_t>() >= 1 &&
                      cj["p"].get<int64_t>() <= max_p,
                  "{}: compress.p must be an integer in [1, {}]", c.Where(), max_p);
    m.p = cj["p"].get<int>();
    return m;
  }
  if (m.kind == "prune") {
    if (cj.contains("bits")) {
      PERMDNN_CHECK(cj["bits"].is_number_integer() && cj["bits"].get<int64_t>() >= 1 && cj["bits"].get<int64_t>() <= 8,
                    "{}: compress.bits must be an integer in [1, 8]", c.Where());
      m.bits = cj["bits"].get<int>();
    }
    return m;
  }
  throw UnsupportedError(fmt::format(
      "{}: compression '{}' cannot be exported (dense, permdiag, circulant, prune)", c.Where(), m.kind));
}

// The CSR arrays of a pruned layer (docs/run-format.md), validated.
struct SparseLayer {
  std::vector<int32_t> row_ptr, col_idx;
  std::vector<float> values;    // without sharing
  std::vector<uint8_t> codes;   // with sharing
  std::vector<float> codebook;  // 2^bits
  CsrMatrix csr;                // decoded
};

SparseLayer ReadSparseLayer(const LayerCtx& c, int64_t rows, int64_t cols, int bits) {
  SparseLayer s;
  const std::vector<int64_t> rp = c.Indices("row_ptr", rows + 1);
  const std::vector<int64_t> ci = c.Indices("col_idx", -1);
  const int64_t nnz = static_cast<int64_t>(ci.size());
  std::vector<float> w;
  if (bits > 0) {
    PERMDNN_CHECK(!c.HasTensor("values"), "{}: compress.bits = {} stores 'codes' and 'codebook', not 'values'",
                  c.Where(), bits);
    NpyArray codes = c.Vector("codes", nnz);
    s.codes = codes.as<uint8_t>(c.Where() + ": codes");
    s.codebook = c.Vector("codebook", -1).as<float>(c.Where() + ": codebook");
    std::vector<int64_t> wide(s.codes.begin(), s.codes.end());
    w = detail::DecodeCodebook(c.Where(), wide, s.codebook, int64_t{1} << bits);
  } else {
    PERMDNN_CHECK(!c.HasTensor("codes"), "{}: tensor 'codes' without compress.bits", c.Where());
    s.values = c.Vector("values", nnz).as<float>(c.Where() + ": values");
    w = s.values;
  }
  s.csr = detail::MakeCsr(c.Where(), rows, cols, rp, ci, std::move(w));
  s.row_ptr.assign(s.csr.row_ptr().begin(), s.csr.row_ptr().end());
  s.col_idx.assign(s.csr.col_idx().begin(), s.csr.col_idx().end());
  return s;
}

void AddConvAttrs(onnx::NodeProto* n, const LayerCtx& c, const std::vector<int64_t>& k) {
  const auto s = c.Pair("stride", 1), pad = c.Pair("padding", 0);
  detail::AddAttr(n, "kernel_shape", k);
  detail::AddAttr(n, "strides", s);
  detail::AddAttr(n, "pads", std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]});
}

}  // namespace

namespace {
ExportReport ExportRunUnchecked(const std::string& run_dir, const std::string& out_path,
                                const ExportOptions& options);
}  // namespace

// A field of model.json of another JSON type than the one read (the checks
// below name the common cases) is still an error naming the file.
ExportReport ExportRun(const std::string& run_dir, const std::string& out_path, const ExportOptions& options) {
  try {
    return ExportRunUnchecked(run_dir, out_path, options);
  } catch (const json::exception& e) {
    Fail("{}: unexpected content: {}", (fs::path(run_dir) / "model.json").string(), e.what());
  }
}

namespace {
ExportReport ExportRunUnchecked(const std::string& run_dir, const std::string& out_path,
                                const ExportOptions& options) {
  const std::string mj = (fs::path(run_dir) / "model.json").string();
  PERMDNN_CHECK(fs::is_directory(run_dir), "{}: not a directory (expected a training run directory)", run_dir);
  PERMDNN_CHECK(fs::exists(mj), "{}: no model.json (is this a `permdnn train --out` directory?)", run_dir);
  json spec;
  try {
    spec = json::parse(ReadFileBytes(mj));
  } catch (const json::exception& e) {
    Fail("{}: invalid JSON: {}", mj, e.what());
  }
  PERMDNN_CHECK(spec.is_object(), "{}: the top level must be an object, got {}", mj, spec.type_name());
  PERMDNN_CHECK(spec.value("format", "") == "permdnn-run/1", "{}: format is '{}', expected 'permdnn-run/1'", mj,
                spec.value("format", ""));
  PERMDNN_CHECK(spec.contains("layers") && spec["layers"].is_array() && !spec["layers"].empty(),
                "{}: no \"layers\" array", mj);
  PERMDNN_CHECK(spec.contains("input") && spec["input"].contains("shape") && spec["input"]["shape"].is_array(),
                "{}: missing input.shape", mj);
  std::vector<int64_t> in_shape = {-1};
  for (const auto& d : spec["input"]["shape"]) {
    PERMDNN_CHECK(d.is_number_integer() && d.get<int64_t>() >= 1, "{}: input.shape must hold positive ints", mj);
    in_shape.push_back(d.get<int64_t>());
  }

  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("permdnn");
  m.set_producer_version("0.1.0");
  m.set_doc_string("exported by permdnn export from " + run_dir);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  auto* op2 = m.add_opset_import();
  op2->set_domain(detail::kPermDnnDomain);
  op2->set_version(1);
  auto meta = [&](const std::string& k, const std::string& v) {
    auto* p = m.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  };
  const json& inp = spec["input"];
  json pre = {{"scale", inp.value("scale", 1.0 / 255.0)}, {"mean", inp.value("mean", 0.2860)},
              {"std", inp.value("std", 0.3530)}, {"layout", inp.value("layout", "NCHW")}};
  meta("permdnn.preprocess", pre.dump());
  meta("permdnn.model", spec.value("model", ""));
  if (spec.contains("test_accuracy")) meta("permdnn.test_accuracy", spec["test_accuracy"].dump());

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name(spec.value("model", "permdnn"));
  SetValueInfo(g->add_input(), "input", in_shape);
  GraphBuilder b(g);
  ExportReport report;
  report.path = out_path;
  for (const json& layer : spec["layers"]) {
    LayerCtx c{run_dir, mj, layer.value("name", ""), &layer};
    PERMDNN_CHECK(!c.name.empty(), "{}: a layer has no name", mj);
    const std::string type = layer.value("type", "");
    LayerReport lr;
    lr.name = c.name;
    const int64_t before = b.weight_bytes;
    if (type == "flatten") {
      detail::AddAttr(b.Node(c.name, "Flatten", {}), "axis", int64_t{1});
      lr.op = "Flatten";
    } else if (type == "relu") {
      b.Node(c.name, "Relu", {});
      lr.op = "Relu";
    } else if (type == "dropout") {
      b.Node(c.name, "Identity", {});
      lr.op = "Identity";
    } else if (type == "maxpool2d" || type == "avgpool2d") {
      lr.op = type == "maxpool2d" ? "MaxPool" : "AveragePool";
      const auto k = c.Pair("kernel", 0), s = layer.contains("stride") ? c.Pair("stride", 1) : k,
                 pad = c.Pair("padding", 0);
      PERMDNN_CHECK(k[0] >= 1 && k[1] >= 1, "{}: kernel must be >= 1", c.Where());
      auto* n = b.Node(c.name, lr.op, {});
      detail::AddAttr(n, "kernel_shape", k);
      detail::AddAttr(n, "strides", s);
      detail::AddAttr(n, "pads", std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]});
    } else if (type == "batchnorm2d") {
      const int64_t ch = c.Int("channels");
      std::vector<std::string> ins;
      for (const char* t : {"weight", "bias", "running_mean", "running_var"})
        ins.push_back(b.AddInit(c.name + "." + t, c.Floats(t, {ch}), {ch}));
      detail::AddAttr(b.Node(c.name, "BatchNormalization", ins), "epsilon",
                      static_cast<float>(layer.value("eps", 1e-5)));
      lr.op = "BatchNormalization";
    } else if (type == "linear" || type == "conv2d") {
      const bool conv = type == "conv2d";
      const int64_t in = c.Int("in"), out = c.Int("out");
      PERMDNN_CHECK(in >= 1 && out >= 1, "{}: in/out must be >= 1", c.Where());
      std::vector<int64_t> k = conv ? c.Pair("kernel", 0) : std::vector<int64_t>{1, 1};
      PERMDNN_CHECK(k[0] >= 1 && k[1] >= 1, "{}: kernel must be >= 1", c.Where());
      const int64_t ksz = k[0] * k[1];
      const LayerMethod method = CompressKind(c);
      const std::string& kind = method.kind;
      const int p = method.p;
      lr.dense_bytes = out * in * ksz * 4;
      std::vector<float> bias;
      if (c.HasTensor("bias")) {
        bias = c.Floats("bias", {out});
        lr.dense_bytes += out * 4;
      }
      std::vector<float> dense;
      std::vector<int64_t> wshape = conv ? std::vector<int64_t>{out, in, k[0], k[1]} : std::vector<int64_t>{out, in};
      if (kind == "permdiag") {
        lr.method = fmt::format("permdiag:p={}", p);
        const int64_t mb = CeilDiv(out, p), nb = CeilDiv(in, p);
        std::vector<int64_t> vshape = {mb, nb, p};
        if (conv) vshape.insert(vshape.end(), k.begin(), k.end());
        std::vector<float> values = c.Floats("values", vshape);
        std::vector<uint16_t> offsets = c.Offsets({mb, nb}, p);
        if (conv) {
          // Also checks that padded positions hold 0 (the format's invariant).
          std::vector<float> d;
          try {
            d = detail::PermDiagConvToDense(values, offsets, out, in, p, ksz);
          } catch (const Error& e) {
            Fail("{}: {}", c.Where(), e.what());
          }
          if (options.portable) dense = std::move(d);
        } else {
          try {
            PermDiagMatrix w = PermDiagMatrix::FromParts(out, in, p, values, offsets);
            w.Validate();
            if (options.portable) dense = w.ToDense();
          } catch (const Error& e) {
            Fail("{}: {}", c.Where(), e.what());
          }
        }
        if (!options.portable) {
          std::vector<std::string> ins = {b.AddInit(c.name + ".values", values, vshape),
                                          b.AddInitU16(c.name + ".offsets", offsets, {mb, nb})};
          if (!bias.empty()) ins.push_back(b.AddInit(c.name + ".bias", bias, {out}));
          lr.op = conv ? "PermDiagConv" : "PermDiagMatMul";
          onnx::NodeProto* n = b.Node(c.name, lr.op, ins, detail::kPermDnnDomain);
          detail::AddAttr(n, "p", int64_t{p});
          detail::AddAttr(n, conv ? "in_channels" : "in_features", in);
          detail::AddAttr(n, conv ? "out_channels" : "out_features", out);
          if (conv) AddConvAttrs(n, c, k);
        }
      } else if (kind == "circulant") {
        lr.method = fmt::format("circulant:p={}", p);
        const int64_t mb = CeilDiv(out, p), nb = CeilDiv(in, p);
        std::vector<int64_t> vshape = {mb, nb, p};
        if (conv) vshape.insert(vshape.end(), k.begin(), k.end());
        std::vector<float> values = c.Floats("values", vshape);
        for (std::size_t e = 0; e < values.size(); ++e)
          PERMDNN_CHECK(std::isfinite(values[e]), "{}: values[{}] = {} is not finite", c.Where(), e, values[e]);
        if (options.portable) {
          dense = conv ? detail::CirculantConvToDense(values, out, in, p, ksz)
                       : BlockCirculantMatrix::FromParts(out, in, p, values).ToDense();
        } else {
          std::vector<std::string> ins = {b.AddInit(c.name + ".values", values, vshape)};
          if (!bias.empty()) ins.push_back(b.AddInit(c.name + ".bias", bias, {out}));
          lr.op = conv ? "BlockCirculantConv" : "BlockCirculantMatMul";
          onnx::NodeProto* n = b.Node(c.name, lr.op, ins, detail::kPermDnnDomain);
          detail::AddAttr(n, "p", int64_t{p});
          detail::AddAttr(n, conv ? "in_channels" : "in_features", in);
          detail::AddAttr(n, conv ? "out_channels" : "out_features", out);
          if (conv) AddConvAttrs(n, c, k);
        }
      } else if (kind == "prune") {
        SparseLayer s = ReadSparseLayer(c, out, in * ksz, method.bits);
        lr.method = fmt::format("prune:density={:.3g}", s.csr.density());
        if (method.bits) lr.method += fmt::format(":bits={}", method.bits);
        if (options.portable) {
          dense = s.csr.ToDense();  // [out, in·ksz] = [out, in, kh, kw]
        } else {
          std::vector<std::string> ins = {b.AddInitI32(c.name + ".row_ptr", s.row_ptr),
                                          b.AddInitI32(c.name + ".col_idx", s.col_idx)};
          ins.push_back(method.bits ? b.AddInitU8(c.name + ".codes", s.codes)
                                    : b.AddInit(c.name + ".values", s.values, {s.csr.nnz()}));
          ins.push_back(bias.empty() ? std::string() : b.AddInit(c.name + ".bias", bias, {out}));
          if (method.bits)
            ins.push_back(b.AddInit(c.name + ".codebook", s.codebook, {static_cast<int64_t>(s.codebook.size())}));
          else if (bias.empty())
            ins.pop_back();
          lr.op = conv ? "SparseConv" : "SparseMatMul";
          onnx::NodeProto* n = b.Node(c.name, lr.op, ins, detail::kPermDnnDomain);
          detail::AddAttr(n, conv ? "in_channels" : "in_features", in);
          detail::AddAttr(n, conv ? "out_channels" : "out_features", out);
          if (conv) AddConvAttrs(n, c, k);
        }
      } else {
        dense = c.Floats("weight", wshape);
      }
      if (!dense.empty()) {
        std::vector<std::string> ins = {b.AddInit(c.name + ".weight", dense, wshape)};
        if (!bias.empty()) ins.push_back(b.AddInit(c.name + ".bias", bias, {out}));
        lr.op = conv ? "Conv" : "Gemm";
        onnx::NodeProto* n = b.Node(c.name, lr.op, ins);
        if (conv) AddConvAttrs(n, c, k);
        else detail::AddAttr(n, "transB", int64_t{1});
      }
    } else {
      Fail("{}: unknown layer type '{}' (expected flatten, linear, conv2d, relu, maxpool2d, avgpool2d, "
           "batchnorm2d, dropout)",
           c.Where(), type);
    }
    lr.stored_bytes = b.weight_bytes - before;
    report.layers.push_back(lr);
  }
  // The last layer's output is the graph output "logits".
  onnx::NodeProto* last = g->mutable_node(g->node_size() - 1);
  last->set_output(0, "logits");
  SetValueInfo(g->add_output(), "logits", {-1, spec.value("num_classes", int64_t{-1})});
  if (g->output(0).type().tensor_type().shape().dim(1).dim_value() < 0)
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_param("classes");

  std::string bytes;
  PERMDNN_CHECK(m.SerializeToString(&bytes), "{}: cannot serialize the model", out_path);
  // Self-check: the runtime must load and plan what we write.
  try {
    Model::FromBytes(bytes, out_path);
  } catch (const Error& e) {
    Fail("{}: the exported model does not load: {}", run_dir, e.what());
  }
  detail::WriteModelProto(m, out_path);
  report.file_bytes = static_cast<int64_t>(bytes.size());
  return report;
}
}  // namespace

}  // namespace permdnn::runtime
