// `permdnn export`: a training run directory (docs/run-format.md) to ONNX.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/core/permdiag_matrix.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
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

std::string CompressKind(const LayerCtx& c, int* p) {
  *p = 1;
  if (!c.layer->contains("compress")) return "dense";
  const json& cj = (*c.layer)["compress"];
  const std::string kind = cj.value("kind", "dense");
  if (kind == "dense") return kind;
  if (kind == "permdiag") {
    PERMDNN_CHECK(cj.contains("p") && cj["p"].is_number_integer() && cj["p"].get<int64_t>() >= 1 &&
                      cj["p"].get<int64_t>() <= 65535,
                  "{}: compress.p must be an integer in [1, 65535]", c.Where());
    *p = cj["p"].get<int>();
    return kind;
  }
  throw UnsupportedError(fmt::format("{}: compression '{}' cannot be exported (only dense and permdiag)", c.Where(), kind));
}

}  // namespace

ExportReport ExportRun(const std::string& run_dir, const std::string& out_path, const ExportOptions& options) {
  const std::string mj = (fs::path(run_dir) / "model.json").string();
  PERMDNN_CHECK(fs::is_directory(run_dir), "{}: not a directory (expected a training run directory)", run_dir);
  PERMDNN_CHECK(fs::exists(mj), "{}: no model.json (is this a `permdnn train --out` directory?)", run_dir);
  json spec;
  try {
    spec = json::parse(ReadFileBytes(mj));
  } catch (const json::exception& e) {
    Fail("{}: invalid JSON: {}", mj, e.what());
  }
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
      int p = 1;
      const std::string kind = CompressKind(c, &p);
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
          if (conv) {
            const auto s = c.Pair("stride", 1), pad = c.Pair("padding", 0);
            detail::AddAttr(n, "kernel_shape", k);
            detail::AddAttr(n, "strides", s);
            detail::AddAttr(n, "pads", std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]});
          }
        }
      } else {
        dense = c.Floats("weight", wshape);
      }
      if (!dense.empty()) {
        std::vector<std::string> ins = {b.AddInit(c.name + ".weight", dense, wshape)};
        if (!bias.empty()) ins.push_back(b.AddInit(c.name + ".bias", bias, {out}));
        lr.op = conv ? "Conv" : "Gemm";
        onnx::NodeProto* n = b.Node(c.name, lr.op, ins);
        if (conv) {
          const auto s = c.Pair("stride", 1), pad = c.Pair("padding", 0);
          detail::AddAttr(n, "kernel_shape", k);
          detail::AddAttr(n, "strides", s);
          detail::AddAttr(n, "pads", std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]});
        } else {
          detail::AddAttr(n, "transB", int64_t{1});
        }
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

}  // namespace permdnn::runtime
