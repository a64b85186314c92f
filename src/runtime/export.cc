// `permdnn export`: a training run directory (docs/run-format.md) to ONNX.
//
// Named steps: ReadRunSpec (model.json), NewModel (opsets, metadata, graph
// input), one ExportLayer per layer (the weight layers through the format
// registry: the run's tensors are read and validated by formats::ReadNode,
// written by formats::WriteNode), FinishGraph (the logits output), then
// the self-check (the runtime must load it) and the atomic write.
#include <cmath>
#include <filesystem>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/formats/registry.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "runtime/graph.h"
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
  // The tensor's path relative to the run directory.
  std::string TensorPath(const char* t) const {
    PERMDNN_CHECK(HasTensor(t), "{}: missing tensor '{}' in \"tensors\"", Where(), t);
    return (*layer)["tensors"][t].get<std::string>();
  }
  std::vector<float> Floats(const char* t, const std::vector<int64_t>& shape) const {
    const std::string rel = TensorPath(t);
    NpyArray a = ReadNpy((fs::path(run_dir) / rel).string());
    PERMDNN_CHECK(a.shape == shape, "{}: tensor '{}' ({}) has shape {}, expected {}", Where(), t, rel,
                  ShapeString(a.shape), ShapeString(shape));
    return a.as<float>(Where() + ": " + t);
  }
};

// A weight layer's tensors as the format registry reads them: attributes
// from model.json (p, in/out, kernel), arrays from the .npy files, integer
// ones widened to int64.
class RunLayerSource : public formats::NodeSource {
 public:
  RunLayerSource(const LayerCtx& c, const formats::FormatTraits& f, bool conv, int p,
                 const std::vector<int64_t>& kernel)
      : RunLayerSource(c, f, conv, p, kernel, c.Int("in"), c.Int("out"), "") {}
  // One matrix of a recurrent layer: its arrays are "<prefix><name>" ("ih.",
  // "hh_reverse.", ...), its biases are the layer's bias_ih / bias_hh.
  RunLayerSource(const LayerCtx& c, const formats::FormatTraits& f, bool conv, int p,
                 const std::vector<int64_t>& kernel, int64_t in, int64_t out, std::string prefix)
      : c_(c), prefix_(std::move(prefix)) {
    if (f.blocked) attrs_.SetInt("p", p);
    if (f.kind == formats::Kind::kTernary) attrs_.SetInt("group_ch", p);  // compress.group
    attrs_.SetInt(conv ? "in_channels" : "in_features", in);
    attrs_.SetInt(conv ? "out_channels" : "out_features", out);
    if (conv) attrs_.SetInts("kernel_shape", kernel);
  }
  std::string Where() const override { return c_.Where() + (prefix_.empty() ? "" : " (" + prefix_ + "*)"); }
  const formats::Attributes& attributes() const override { return attrs_; }
  bool HasInput(int, const char* name) const override {
    if (!prefix_.empty() && std::string_view(name) == "bias") return false;
    return c_.HasTensor((prefix_ + name).c_str());
  }
  formats::ArrayRef Input(int, const char* bare) const override {
    const std::string full = prefix_ + bare;
    const char* name = full.c_str();
    const std::string rel = c_.TensorPath(name);
    Loaded& l = loaded_[name];
    const NpyArray a = ReadNpy((fs::path(c_.run_dir) / rel).string());
    formats::ArrayRef r;
    r.name = rel;
    r.shape = a.shape;
    auto widen = [&](auto tag, formats::ElemType t) {
      using T = decltype(tag);
      if (!a.is<T>()) return false;
      const std::vector<T> v = a.as<T>();
      l.i.assign(v.begin(), v.end());
      r.dtype = t;
      r.i = l.i;
      return true;
    };
    if (a.is<float>()) {
      l.f = a.as<float>();
      r.f = l.f;
    } else if (!widen(int32_t{}, formats::ElemType::kInt32) && !widen(int64_t{}, formats::ElemType::kInt64) &&
               !widen(uint16_t{}, formats::ElemType::kUInt16) && !widen(uint8_t{}, formats::ElemType::kUInt8) &&
               !widen(int16_t{}, formats::ElemType::kInt16) && !widen(int8_t{}, formats::ElemType::kInt8)) {
      Fail("{}: tensor '{}' ({}) has dtype {}, which a permdnn run does not store", Where(), name, rel, a.descr);
    }
    return r;
  }

 private:
  struct Loaded {
    std::vector<float> f;
    std::vector<int64_t> i;
  };
  const LayerCtx& c_;
  std::string prefix_;
  formats::Attributes attrs_;
  mutable std::map<std::string, Loaded> loaded_;
};

class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}
  std::string current = "input";
  int64_t rank = 2;  // of `current`, batch included
  onnx::GraphProto* graph() { return g_; }

  std::string AddInit(const std::string& name, std::span<const float> v, const std::vector<int64_t>& shape) {
    detail::SetFloatTensor(g_->add_initializer(), name, v, shape);
    return name;
  }
  onnx::NodeProto* Node(const std::string& name, const std::string& op, std::vector<std::string> inputs) {
    onnx::NodeProto* n = g_->add_node();
    n->set_name(name);
    n->set_op_type(op);
    n->add_input(current);
    for (const auto& i : inputs) n->add_input(i);
    current = name + ":out";
    n->add_output(current);
    return n;
  }
  // A layer of a format (formats::WriteNode), its arrays as initializers.
  void Emit(const std::string& name, const formats::NodeSpec& spec) {
    onnx::NodeProto* n = g_->add_node();
    n->set_name(name);
    detail::EmitNode(spec, name, current, name + ":out", g_, n);
    current = name + ":out";
  }

 private:
  onnx::GraphProto* g_;
};

void SetValueInfo(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& shape,
                  int elem_type = onnx::TensorProto::FLOAT) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem_type);
  auto* s = tt->mutable_shape();
  for (std::size_t k = 0; k < shape.size(); ++k) {
    auto* d = s->add_dim();
    if (shape[k] < 0) d->set_dim_param("batch");
    else d->set_dim_value(shape[k]);
  }
}

// The run's model.json: format, layers, input shape (batch dim -1 first).
struct RunSpec {
  std::string model_json;
  json doc;
  std::vector<int64_t> input_shape;
};

RunSpec ReadRunSpec(const std::string& run_dir) {
  RunSpec r;
  r.model_json = (fs::path(run_dir) / "model.json").string();
  const std::string& mj = r.model_json;
  PERMDNN_CHECK(fs::is_directory(run_dir), "{}: not a directory (expected a training run directory)", run_dir);
  PERMDNN_CHECK(fs::exists(mj), "{}: no model.json (is this a `permdnn train --out` directory?)", run_dir);
  try {
    r.doc = json::parse(ReadFileBytes(mj));
  } catch (const json::exception& e) {
    Fail("{}: invalid JSON: {}", mj, e.what());
  }
  PERMDNN_CHECK(r.doc.is_object(), "{}: the top level must be an object, got {}", mj, r.doc.type_name());
  const json& spec = r.doc;
  PERMDNN_CHECK(spec.value("format", "") == "permdnn-run/1", "{}: format is '{}', expected 'permdnn-run/1'", mj,
                spec.value("format", ""));
  PERMDNN_CHECK(spec.contains("layers") && spec["layers"].is_array() && !spec["layers"].empty(),
                "{}: no \"layers\" array", mj);
  PERMDNN_CHECK(spec.contains("input") && spec["input"].contains("shape") && spec["input"]["shape"].is_array(),
                "{}: missing input.shape", mj);
  r.input_shape = {-1};
  for (const auto& d : spec["input"]["shape"]) {
    PERMDNN_CHECK(d.is_number_integer() && d.get<int64_t>() >= 1, "{}: input.shape must hold positive ints", mj);
    r.input_shape.push_back(d.get<int64_t>());
  }
  return r;
}

// The model's header: opsets, the preprocessing metadata, the graph input.
onnx::ModelProto NewModel(const RunSpec& r, const std::string& run_dir) {
  const json& spec = r.doc;
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("permdnn");
  m.set_producer_version("0.1.0");
  m.set_doc_string("exported by permdnn export from " + run_dir);
  // Opset 14 (the LSTM / GRU layout attribute) only when the run has
  // recurrent layers, so other exports stay as they were.
  bool recurrent = false;
  for (const json& l : spec["layers"])
    recurrent = recurrent || (l.is_object() && (l.value("type", "") == "lstm" || l.value("type", "") == "gru"));
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(recurrent ? 14 : 13);
  auto* op2 = m.add_opset_import();
  op2->set_domain(formats::kDomain);
  op2->set_version(formats::kDomainVersion);
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
  const std::string dtype = inp.value("dtype", "float32");
  PERMDNN_CHECK(dtype == "float32" || dtype == "int64", "{}: input.dtype is '{}', expected float32 or int64",
                r.model_json, dtype);
  // Token models: what `permdnn eval` needs to read a corpus the way the
  // trainer did (runtime/eval.h ModelTextInput).
  if (dtype == "int64" && inp.contains("alphabet"))
    meta("permdnn.text", json({{"seq_len", r.input_shape.empty() ? 0 : r.input_shape.back()},
                               {"alphabet", inp["alphabet"]}}).dump());
  SetValueInfo(g->add_input(), "input", r.input_shape,
               dtype == "int64" ? onnx::TensorProto::INT64 : onnx::TensorProto::FLOAT);
  return m;
}

// The registry row of a weight layer's "compress" entry, and its p / bits.
struct LayerMethod {
  const formats::FormatTraits* format = nullptr;
  int p = 1;
  int bits = 0;  // prune: codebook of 2^bits entries, 0 = none
  int index_bits = 0;  // prune with bits: written as csr-relative with this index width, 0 = int32 indices
};

LayerMethod ReadLayerMethod(const LayerCtx& c) {
  LayerMethod m;
  const json cj = c.layer->contains("compress") ? (*c.layer)["compress"] : json::object();
  const std::string kind = cj.value("kind", "dense");
  if (cj.contains("bits")) {
    PERMDNN_CHECK(cj["bits"].is_number_integer() && cj["bits"].get<int64_t>() >= 1 && cj["bits"].get<int64_t>() <= 8,
                  "{}: compress.bits must be an integer in [1, 8]", c.Where());
    m.bits = cj["bits"].get<int>();
  }
  if (cj.contains("index")) {  // a run directory keeps csr-codebook arrays; the file gets relative indices
    PERMDNN_CHECK(kind == "prune" && m.bits > 0 && cj["index"].is_number_integer() &&
                      cj["index"].get<int64_t>() >= kMinIndexBits && cj["index"].get<int64_t>() <= kMaxIndexBits,
                  "{}: compress.index must be an integer in [{}, {}] on a prune layer with bits, got {}", c.Where(),
                  kMinIndexBits, kMaxIndexBits, cj["index"].dump());
    m.index_bits = cj["index"].get<int>();
  }
  bool column_offsets = false;
  if (cj.contains("offsets")) {  // permdiag: "block" (default) or "column"
    PERMDNN_CHECK(kind == "permdiag" && cj["offsets"].is_string() &&
                      (cj["offsets"] == "block" || cj["offsets"] == "column"),
                  "{}: compress.offsets must be \"block\" or \"column\" (permdiag only), got {} for kind '{}'",
                  c.Where(), cj["offsets"].dump(), kind);
    column_offsets = cj["offsets"] == "column";
  }
  m.format = formats::FindBySpecKind(kind, m.bits > 0, column_offsets);
  if (m.format == nullptr) {
    std::string kinds;
    for (const formats::FormatTraits& f : formats::Formats())
      if (kinds.find(f.spec_kind) == std::string::npos) kinds += (kinds.empty() ? "" : ", ") + std::string(f.spec_kind);
    throw UnsupportedError(fmt::format("{}: compression '{}' cannot be exported ({})", c.Where(), kind, kinds));
  }
  if (m.format->kind == formats::Kind::kTernary) {
    PERMDNN_CHECK(cj.contains("group") && cj["group"].is_number_integer() && cj["group"].get<int64_t>() >= 1 &&
                      cj["group"].get<int64_t>() <= 4096,
                  "{}: compress.group must be an integer in [1, 4096] (input channels per ternary group)", c.Where());
    m.p = cj["group"].get<int>();
  }
  if (m.format->blocked) {
    PERMDNN_CHECK(cj.contains("p") && cj["p"].is_number_integer() && cj["p"].get<int64_t>() >= 1 &&
                      cj["p"].get<int64_t>() <= m.format->max_p,
                  "{}: compress.p must be an integer in [1, {}]", c.Where(), m.format->max_p);
    m.p = cj["p"].get<int>();
  }
  return m;
}

// A linear or conv2d layer: its tensors through the registry, written as
// its format's op or (portable, dense) as Gemm / Conv.
LayerReport ExportWeightLayer(const LayerCtx& c, bool conv, bool portable, GraphBuilder& b) {
  const int64_t in = c.Int("in"), out = c.Int("out");
  PERMDNN_CHECK(in >= 1 && out >= 1, "{}: in/out must be >= 1", c.Where());
  const std::vector<int64_t> k = conv ? c.Pair("kernel", 0) : std::vector<int64_t>{};
  PERMDNN_CHECK(!conv || (k[0] >= 1 && k[1] >= 1), "{}: kernel must be >= 1", c.Where());
  const LayerMethod method = ReadLayerMethod(c);
  const RunLayerSource src(c, *method.format, conv, method.p, k);
  formats::Weights w = formats::ReadNode(*method.format, conv, src, method.bits ? int64_t{1} << method.bits : 0);
  formats::CheckPaddingIsZero(w, c.Where());  // the run format keeps the padding zero
  if (method.index_bits > 0) {  // csr-codebook arrays -> the csr-relative file form
    w.kind = formats::Kind::kCsrRelative;
    w.index_bits = method.index_bits;
  }
  LayerReport lr;
  lr.name = c.name;
  lr.method = formats::DescribeMethod(w);
  lr.dense_bytes = formats::StoredSize(formats::Kind::kDense, w.g, 0, 0, !w.bias.empty()).bytes;
  formats::Attributes window;
  if (conv) {
    const auto s = c.Pair("stride", 1), pad = c.Pair("padding", 0);
    window.SetInts("strides", s);
    window.SetInts("pads", {pad[0], pad[1], pad[0], pad[1]});
  }
  if (portable && w.kind != formats::Kind::kDense) {
    formats::Weights dense;
    dense.kind = formats::Kind::kDense;
    dense.g = w.g;
    dense.g.p = 1;
    dense.values = formats::ToDense(w);
    dense.bias = w.bias;
    w = std::move(dense);
  }
  lr.stored_bytes = formats::StoredSize(w).bytes;
  if (!conv && b.rank > 2 && w.kind == formats::Kind::kDense) {
    // Gemm is 2-D only: per time step [B, T, in] · Wᵀ is MatMul + Add.
    std::vector<float> wt(static_cast<std::size_t>(in * out));
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) wt[static_cast<std::size_t>(i * out + o)] = w.values[static_cast<std::size_t>(o * in + i)];
    b.Node(c.name, "MatMul", {b.AddInit(c.name + ".weight_t", wt, {in, out})});
    lr.op = "MatMul";
    if (!w.bias.empty()) {
      b.Node(c.name + ".bias_add", "Add", {b.AddInit(c.name + ".bias", w.bias, {out})});
      lr.op = "MatMul+Add";
    }
    return lr;
  }
  const formats::NodeSpec spec = formats::WriteNode(w, window);
  b.Emit(c.name, spec);
  lr.op = spec.op->name;
  return lr;
}

// ---- Recurrent layers (docs/run-format.md "Recurrent models") ---------------

// ONNX gate order from PyTorch's: ONNX gate k is PyTorch gate kOnnxFrom[k].
constexpr int kLstmFromTorch[] = {0, 3, 1, 2};  // i, o, f, c  <-  i, f, g, o
constexpr int kGruFromTorch[] = {1, 0, 2};      // z, r, h     <-  r, z, n

// Rows [G·H, ...] of `row_len` floats each: gate blocks reordered to ONNX.
std::vector<float> ReorderGateRows(std::span<const float> v, int gates, int64_t hidden, int64_t row_len) {
  const int* from = gates == 4 ? kLstmFromTorch : kGruFromTorch;
  std::vector<float> out(v.size());
  const int64_t block = hidden * row_len;
  for (int k = 0; k < gates; ++k)
    std::copy_n(v.begin() + from[k] * block, block, out.begin() + k * block);
  return out;
}

// An lstm / gru layer: the standard ONNX op (dense W, R; layout 0 between
// two Transposes, as PyTorch exports it) or, for permdiag and not portable, the registry's PermDiagLSTM /
// PermDiagGRU with the block rows reordered to ONNX's gate order (H is a
// multiple of p, so a gate is whole block rows). "last" takes Y_h
// ([B, D, H] → [B, D·H]), "sequence" Y ([B, T, D, H] → [B, T, D·H]).
LayerReport ExportRecurrentLayer(const LayerCtx& c, bool gru, bool portable, GraphBuilder& b) {
  const int64_t in = c.Int("in"), H = c.Int("hidden");
  PERMDNN_CHECK(in >= 1 && H >= 1, "{}: in and hidden must be >= 1", c.Where());
  PERMDNN_CHECK(b.rank == 3, "{}: a {} layer reads [batch, time, features], its input has rank {}", c.Where(),
                gru ? "gru" : "lstm", b.rank);
  const bool bidir = c.layer->value("bidirectional", false);
  const std::string output = c.layer->value("output", "sequence");
  PERMDNN_CHECK(output == "last" || output == "sequence", "{}: output is '{}', expected \"last\" or \"sequence\"",
                c.Where(), output);
  const int G = gru ? 3 : 4;
  const int64_t GH = G * H, D = bidir ? 2 : 1;
  const LayerMethod method = ReadLayerMethod(c);
  if (method.format->blocked)
    PERMDNN_CHECK(H % method.p == 0, "{}: hidden = {} must be a multiple of p = {} (a block would straddle two gates)",
                  c.Where(), H, method.p);
  LayerReport lr;
  lr.name = c.name;
  // Per direction and matrix: the weights as stored, validated by the registry.
  std::vector<formats::Weights> mats;  // d0 ih, d0 hh, d1 ih, d1 hh
  for (int64_t d = 0; d < D; ++d)
    for (const char* m : {"ih", "hh"}) {
      const std::string prefix = std::string(m) + (d == 1 ? "_reverse." : ".");
      const int64_t cols = std::string_view(m) == "ih" ? in : H;
      const RunLayerSource src(c, *method.format, false, method.p, {}, cols, GH, prefix);
      formats::Weights w = formats::ReadNode(*method.format, false, src, method.bits ? int64_t{1} << method.bits : 0);
      formats::CheckPaddingIsZero(w, src.Where());
      mats.push_back(std::move(w));
    }
  const bool has_bias = c.HasTensor("bias_ih") || c.HasTensor("bias_hh");
  std::vector<float> bias;  // [D, 2·GH]: Wb then Rb, ONNX order
  for (int64_t d = 0; d < D; ++d)
    for (const char* t : {"bias_ih", "bias_hh"}) {
      if (!has_bias) continue;
      const std::string name = std::string(t) + (d == 1 ? "_reverse" : "");
      const std::vector<float> v = c.Floats(name.c_str(), {GH});
      const std::vector<float> r = ReorderGateRows(v, G, H, 1);
      bias.insert(bias.end(), r.begin(), r.end());
    }
  lr.method = formats::DescribeMethod(mats[0]);
  lr.dense_bytes = D * (GH * (in + H) + (has_bias ? 2 * GH : 0)) * 4;
  const bool compressed_op = !portable && formats::RecurrentOp(*method.format, gru ? formats::RecurrentCell::kGru
                                                                                   : formats::RecurrentCell::kLstm);
  onnx::GraphProto* g = b.graph();
  // Layout 0 ([T, B, ...]; ONNX Runtime refuses layout 1): [B, T, in] is
  // transposed in, Y / Y_h transposed back to batch first below.
  detail::AddAttr(b.Node(c.name + ".to_time_major", "Transpose", {}), "perm", std::vector<int64_t>{1, 0, 2});
  onnx::NodeProto* n = g->add_node();
  n->set_name(c.name);
  n->add_input(b.current);
  const std::string y = c.name + ":Y", yh = c.name + ":Y_h";
  n->add_output(y);
  n->add_output(yh);
  std::vector<std::string> extra;  // the format's arrays, from slot 8
  if (compressed_op) {
    const formats::OpSchema* op = formats::RecurrentOp(*method.format, gru ? formats::RecurrentCell::kGru
                                                                          : formats::RecurrentCell::kLstm);
    n->set_op_type(op->name);
    n->set_domain(op->domain);
    detail::AddAttr(n, "p", static_cast<int64_t>(method.p));
    detail::AddAttr(n, "input_size", in);
    // values [D, mb, nb, p] and offsets [D, mb, nb] of W, then of R, block
    // rows reordered by gate (a gate is H/p block rows).
    for (int m = 0; m < 2; ++m) {
      std::vector<float> values;
      std::vector<uint16_t> offsets;
      int64_t mb = 0, nb = 0;
      for (int64_t d = 0; d < D; ++d) {
        const formats::Weights& w = mats[static_cast<std::size_t>(d * 2 + m)];
        mb = w.g.row_blocks(), nb = w.g.col_blocks();
        const std::vector<float> v = ReorderGateRows(w.values, G, H / method.p, nb * method.p);
        std::vector<float> offs(w.offsets.begin(), w.offsets.end());
        const std::vector<float> o = ReorderGateRows(offs, G, H / method.p, nb);
        values.insert(values.end(), v.begin(), v.end());
        for (float x : o) offsets.push_back(static_cast<uint16_t>(x));
      }
      const std::string base = c.name + (m == 0 ? ".W" : ".R");
      detail::SetFloatTensor(g->add_initializer(), base + ".values", values, {D, mb, nb, method.p});
      detail::SetUInt16Tensor(g->add_initializer(), base + ".offsets", offsets, {D, mb, nb});
      extra.push_back(base + ".values");
      extra.push_back(base + ".offsets");
      lr.stored_bytes += static_cast<int64_t>(values.size() * 4 + offsets.size() * 2);
    }
    n->add_input("");
    n->add_input("");
  } else {
    n->set_op_type(gru ? "GRU" : "LSTM");
    std::vector<float> w, r;
    for (int64_t d = 0; d < D; ++d) {
      const std::vector<float> wd = ReorderGateRows(formats::ToDense(mats[static_cast<std::size_t>(d * 2)]), G, H, in);
      const std::vector<float> rd = ReorderGateRows(formats::ToDense(mats[static_cast<std::size_t>(d * 2 + 1)]), G, H, H);
      w.insert(w.end(), wd.begin(), wd.end());
      r.insert(r.end(), rd.begin(), rd.end());
    }
    n->add_input(b.AddInit(c.name + ".W", w, {D, GH, in}));
    n->add_input(b.AddInit(c.name + ".R", r, {D, GH, H}));
    lr.stored_bytes += static_cast<int64_t>((w.size() + r.size()) * 4);
  }
  if (has_bias) {
    n->add_input(b.AddInit(c.name + ".B", bias, {D, 2 * GH}));
    lr.stored_bytes += static_cast<int64_t>(bias.size() * 4);
  } else if (!extra.empty()) {
    n->add_input("");
  }
  if (!extra.empty()) {
    while (n->input_size() < formats::kRecurrentArraySlot) n->add_input("");
    for (const auto& e : extra) n->add_input(e);
  }
  detail::AddAttr(n, "hidden_size", H);
  if (gru) detail::AddAttr(n, "linear_before_reset", int64_t{1});  // PyTorch's GRU
  if (bidir) {
    auto* a = n->add_attribute();
    a->set_name("direction");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s("bidirectional");
  }
  lr.op = n->op_type();
  // Y_h [D, B, H] / Y [T, D, B, H] -> [B, D, H] / [B, T, D, H] -> [B, D·H] / [B, T, D·H].
  const std::vector<int64_t> shape = output == "last" ? std::vector<int64_t>{0, -1} : std::vector<int64_t>{0, 0, -1};
  detail::SetInt64Tensor(g->add_initializer(), c.name + ".shape", shape, {static_cast<int64_t>(shape.size())});
  b.current = output == "last" ? yh : y;
  detail::AddAttr(b.Node(c.name + ".to_batch_major", "Transpose", {}), "perm",
                  output == "last" ? std::vector<int64_t>{1, 0, 2} : std::vector<int64_t>{2, 0, 1, 3});
  b.Node(c.name + ".flatten", "Reshape", {c.name + ".shape"});
  b.rank = output == "last" ? 2 : 3;
  return lr;
}

// An embedding: Gather(weight, ids) [B, T] -> [B, T, dim].
LayerReport ExportEmbedding(const LayerCtx& c, GraphBuilder& b) {
  const int64_t vocab = c.Int("vocab"), dim = c.Int("dim");
  PERMDNN_CHECK(vocab >= 1 && dim >= 1, "{}: vocab and dim must be >= 1", c.Where());
  LayerReport lr;
  lr.name = c.name;
  lr.op = "Gather";
  lr.method = "dense";
  const std::string w = b.AddInit(c.name + ".weight", c.Floats("weight", {vocab, dim}), {vocab, dim});
  lr.stored_bytes = lr.dense_bytes = vocab * dim * 4;
  onnx::NodeProto* n = b.graph()->add_node();
  n->set_name(c.name);
  n->set_op_type("Gather");
  n->add_input(w);
  n->add_input(b.current);
  b.current = c.name + ":out";
  n->add_output(b.current);
  b.rank += 1;
  return lr;
}

// One layer of model.json.
LayerReport ExportLayer(const LayerCtx& c, const ExportOptions& options, GraphBuilder& b) {
  const std::string type = c.layer->value("type", "");
  LayerReport lr;
  lr.name = c.name;
  if (type == "flatten") {
    detail::AddAttr(b.Node(c.name, "Flatten", {}), "axis", int64_t{1});
    b.rank = 2;
    lr.op = "Flatten";
  } else if (type == "relu") {
    b.Node(c.name, "Relu", {});
    lr.op = "Relu";
  } else if (type == "dropout") {
    b.Node(c.name, "Identity", {});
    lr.op = "Identity";
  } else if (type == "maxpool2d" || type == "avgpool2d") {
    lr.op = type == "maxpool2d" ? "MaxPool" : "AveragePool";
    const auto k = c.Pair("kernel", 0), s = c.layer->contains("stride") ? c.Pair("stride", 1) : k,
               pad = c.Pair("padding", 0);
    PERMDNN_CHECK(k[0] >= 1 && k[1] >= 1, "{}: kernel must be >= 1", c.Where());
    auto* n = b.Node(c.name, lr.op, {});
    detail::AddAttr(n, "kernel_shape", k);
    detail::AddAttr(n, "strides", s);
    detail::AddAttr(n, "pads", std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]});
  } else if (type == "batchnorm2d") {
    const int64_t ch = c.Int("channels");
    std::vector<std::string> ins;
    for (const char* t : {"weight", "bias", "running_mean", "running_var"}) {
      ins.push_back(b.AddInit(c.name + "." + t, c.Floats(t, {ch}), {ch}));
      lr.stored_bytes += ch * 4;
    }
    detail::AddAttr(b.Node(c.name, "BatchNormalization", ins), "epsilon",
                    static_cast<float>(c.layer->value("eps", 1e-5)));
    lr.op = "BatchNormalization";
  } else if (type == "linear" || type == "conv2d") {
    lr = ExportWeightLayer(c, type == "conv2d", options.portable, b);
  } else if (type == "lstm" || type == "gru") {
    lr = ExportRecurrentLayer(c, type == "gru", options.portable, b);
  } else if (type == "embedding") {
    lr = ExportEmbedding(c, b);
  } else {
    Fail("{}: unknown layer type '{}' (expected flatten, linear, conv2d, relu, maxpool2d, avgpool2d, "
         "batchnorm2d, dropout, add, embedding, lstm, gru)",
         c.Where(), type);
  }
  return lr;
}

// The last layer's output is the graph output "logits".
void FinishGraph(const RunSpec& r, int64_t rank, onnx::GraphProto* g) {
  onnx::NodeProto* last = g->mutable_node(g->node_size() - 1);
  last->set_output(0, "logits");
  // [batch, classes], or [batch, T, classes] for a per-step output.
  std::vector<int64_t> shape{-1, r.doc.value("num_classes", int64_t{-1})};
  if (rank == 3) shape.insert(shape.begin() + 1, r.input_shape.size() > 1 ? r.input_shape[1] : -1);
  SetValueInfo(g->add_output(), "logits", shape);
  auto* dims = g->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
  if (dims->dim(dims->dim_size() - 1).dim_value() < 0) dims->mutable_dim(dims->dim_size() - 1)->set_dim_param("classes");
}

}  // namespace

ExportReport ExportRun(const std::string& run_dir, const std::string& out_path, const ExportOptions& options) {
  RunSpec spec;
  onnx::ModelProto m;
  ExportReport report;
  report.path = out_path;
  // A field of model.json of another JSON type than the one read (the
  // checks name the common cases) is still an error naming the file.
  try {
    spec = ReadRunSpec(run_dir);
    m = NewModel(spec, run_dir);
    GraphBuilder b(m.mutable_graph());
    b.rank = static_cast<int64_t>(spec.input_shape.size());
    // Residual models (docs/run-format.md "Branches"): a layer's "input"
    // names the earlier layer it reads, an "add" layer's "from" the earlier
    // layer whose output it adds; every layer's output is remembered.
    std::map<std::string, std::pair<std::string, int64_t>> outputs;  // name -> (tensor, rank)
    auto earlier = [&](const LayerCtx& c, const char* key) {
      PERMDNN_CHECK((*c.layer)[key].is_string(), "{}: field '{}' must be a layer name", c.Where(), key);
      const std::string ref = (*c.layer)[key].get<std::string>();
      auto it = outputs.find(ref);
      PERMDNN_CHECK(it != outputs.end(), "{}: {} '{}' is no earlier layer", c.Where(), key, ref);
      return it->second;
    };
    for (const json& layer : spec.doc["layers"]) {
      const LayerCtx c{run_dir, spec.model_json, layer.value("name", ""), &layer};
      PERMDNN_CHECK(!c.name.empty(), "{}: a layer has no name", spec.model_json);
      PERMDNN_CHECK(!outputs.count(c.name), "{}: a second layer is named '{}'", spec.model_json, c.name);
      if (layer.contains("input")) std::tie(b.current, b.rank) = earlier(c, "input");
      if (layer.value("type", "") == "add") {
        const auto [other, other_rank] = earlier(c, "from");
        PERMDNN_CHECK(other_rank == b.rank, "{}: adds a rank-{} tensor to a rank-{} one", c.Where(), other_rank,
                      b.rank);
        b.Node(c.name, "Add", {other});
        LayerReport lr;
        lr.name = c.name;
        lr.op = "Add";
        report.layers.push_back(lr);
      } else {
        report.layers.push_back(ExportLayer(c, options, b));
      }
      outputs[c.name] = {b.current, b.rank};
    }
    FinishGraph(spec, b.rank, m.mutable_graph());
  } catch (const json::exception& e) {
    Fail("{}: unexpected content: {}", (fs::path(run_dir) / "model.json").string(), e.what());
  }
  report.file_bytes = static_cast<int64_t>(detail::WriteLoadableModel(m, out_path, run_dir, "exported").size());
  return report;
}

}  // namespace permdnn::runtime
