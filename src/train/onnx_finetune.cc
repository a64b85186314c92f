// Fine-tuning an ONNX model through LibTorch: see permdnn/train/finetune.h.
#include "permdnn/train/finetune.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include <fmt/format.h>
#include <torch/torch.h>

#include "permdnn/core/dataset.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/formats/registry.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_graph.h"
#include "permdnn/runtime/onnx_io.h"
#include "src/train/admm.h"
#include "src/train/circulant_layers.h"
#include "src/train/permdiag_layers.h"

namespace permdnn::train {
namespace {

namespace F = torch::nn::functional;
using runtime::UnsupportedError;

// One ONNX node as the LibTorch graph runs it; attributes through the
// runtime's reader (formats::Attributes), errors naming the node.
struct TorchNode {
  const runtime::GraphNode* node = nullptr;
  std::string where;  // "<file>: node 'fc1' (Gemm, #3)"
  std::string op;
  int opset = 13;
  // ai.permdnn layers: their registry row, form and geometry.
  const formats::FormatTraits* format = nullptr;
  bool conv = false;
  formats::Geometry geometry;

  int64_t Int(const std::string& a, int64_t dflt) const { return node->attrs.Int(a, dflt, where); }
  float Float(const std::string& a, float dflt) const { return node->attrs.Float(a, dflt, where); }
  std::vector<int64_t> Ints(const std::string& a, std::vector<int64_t> dflt) const {
    return node->attrs.Ints(a, std::move(dflt), where);
  }
  std::string String(const std::string& a, const std::string& dflt) const { return node->attrs.String(a, dflt, where); }
  // Input k's name ("" when omitted or absent); the input of a stored array.
  std::string In(int k) const { return node->In(k); }
  std::string In(const char* array) const { return In(formats::FindArray(*format, array)->slot); }
  const std::string& Out() const { return node->outputs.at(0); }
  [[noreturn]] void Unsupported(const std::string& what) const { throw UnsupportedError(where + ": " + what); }
};

// The float initializer slots that train: a format's trainable arrays
// (formats/registry.h), else per standard op (input indices).
std::vector<int> TrainableInputs(const TorchNode& n) {
  if (n.format) {
    std::vector<int> slots;
    for (const formats::ArraySpec& a : n.format->arrays)
      if (a.trainable) slots.push_back(a.slot);
    return slots;
  }
  const std::string& op = n.op;
  if (op == "Gemm" || op == "Conv") return {1, 2};
  if (op == "MatMul" || op == "Add" || op == "Sub" || op == "Mul") return {0, 1};
  if (op == "BatchNormalization") return {1, 2};
  return {};
}

// ONNX Conv semantics (N-d, symmetric pads, group) over torch::convolution.
torch::Tensor ConvForward(const TorchNode& n, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t sd = w.dim() - 2;
  if (n.String("auto_pad", "NOTSET") != "NOTSET") n.Unsupported("auto_pad other than NOTSET");
  std::vector<int64_t> strides = n.Ints("strides", std::vector<int64_t>(sd, 1));
  std::vector<int64_t> dil = n.Ints("dilations", std::vector<int64_t>(sd, 1));
  std::vector<int64_t> pads = n.Ints("pads", std::vector<int64_t>(2 * sd, 0));
  std::vector<int64_t> pad(sd);
  for (int64_t d = 0; d < sd; ++d) {
    if (pads[d] != pads[d + sd]) n.Unsupported("asymmetric pads");
    pad[d] = pads[d];
  }
  std::vector<int64_t> out_pad(sd, 0);
  return torch::convolution(x, w, b, strides, pad, dil, false, out_pad, n.Int("group", 1));
}

torch::Tensor PoolForward(const TorchNode& n, const torch::Tensor& x, bool max) {
  if (x.dim() != 4) n.Unsupported(fmt::format("{}-d pooling (only 2-d)", x.dim() - 2));
  if (n.String("auto_pad", "NOTSET") != "NOTSET") n.Unsupported("auto_pad other than NOTSET");
  std::vector<int64_t> k = n.Ints("kernel_shape", {});
  if (k.size() != 2) n.Unsupported("kernel_shape must have 2 entries");
  std::vector<int64_t> s = n.Ints("strides", {1, 1}), pads = n.Ints("pads", {0, 0, 0, 0});
  if (pads[0] != pads[2] || pads[1] != pads[3]) n.Unsupported("asymmetric pads");
  const bool ceil = n.Int("ceil_mode", 0) != 0;
  if (max)
    return torch::max_pool2d(x, k, s, {pads[0], pads[1]}, n.Ints("dilations", {1, 1}), ceil);
  return torch::avg_pool2d(x, k, s, {pads[0], pads[1]}, ceil, n.Int("count_include_pad", 0) != 0);
}

// ONNX (Log)Softmax: opset < 13 coerces to 2-d at `axis` (default 1).
torch::Tensor SoftmaxForward(const TorchNode& n, const torch::Tensor& x, bool log) {
  auto f = [&](const torch::Tensor& t, int64_t d) { return log ? torch::log_softmax(t, d) : torch::softmax(t, d); };
  int64_t axis = n.Int("axis", n.opset >= 13 ? -1 : 1);
  if (axis < 0) axis += x.dim();
  if (n.opset >= 13 || axis == x.dim() - 1) return f(x, axis);
  int64_t lead = 1;
  for (int64_t d = 0; d < axis; ++d) lead *= x.size(d);
  return f(x.reshape({lead, -1}), 1).view(x.sizes());
}

// y = x·Wᵀ + b over the last dimension of x (any leading dims).
template <typename Fn>
torch::Tensor OverLastDim(const torch::Tensor& x, int64_t in, Fn&& fn) {
  std::vector<int64_t> lead(x.sizes().begin(), x.sizes().end() - 1);
  torch::Tensor y = fn(x.reshape({-1, in}));
  lead.push_back(y.size(1));
  return y.reshape(lead);
}

torch::Tensor ToTorch(runtime::Tensor& v) {
  if (runtime::IsFloat(v.dtype())) return torch::from_blob(v.f(), v.shape(), torch::kFloat).clone();
  return torch::from_blob(v.i(), v.shape(), torch::kLong).clone();  // every integer dtype is held as int64
}

// Axes from the attribute (opset < 13) or input 1 (opset >= 13), normalized to `rank`.
std::vector<int64_t> Axes(const TorchNode& n, const torch::Tensor& axes_input, int64_t rank) {
  std::vector<int64_t> axes = n.Ints("axes", {});
  if (axes_input.defined()) axes.assign(axes_input.data_ptr<int64_t>(), axes_input.data_ptr<int64_t>() + axes_input.numel());
  for (int64_t& a : axes)
    if (a < 0) a += rank;
  std::sort(axes.begin(), axes.end());
  return axes;
}

// The graph as LibTorch operations; owns the parsed file.
class TorchGraph {
 public:
  TorchGraph(const std::string& path) : path_(path) {
    bytes_ = runtime::ReadFileBytes(path);
    runtime::Model::FromBytes(bytes_, path);  // the runtime validates the file (one validator)
    graph_ = runtime::OnnxGraph::Parse(bytes_, path);
    for (const std::string& name : graph_.initializers) {
      runtime::Tensor v = *graph_.Initializer(name);
      values_[name] = ToTorch(v);
      float_init_[name] = runtime::IsFloat(v.dtype());
    }
    input_names_ = graph_.inputs;
    PERMDNN_CHECK(input_names_.size() == 1, "{}: fine-tuning needs exactly one (image) input, the graph has {}", path,
                  input_names_.size());
    PERMDNN_CHECK(!graph_.outputs.empty(), "{}: the graph has no outputs", path);
    output_ = graph_.outputs[0];
    for (const runtime::GraphNode& gn : graph_.nodes) nodes_.push_back(MakeNode(gn));
    // Train on logits: a final Softmax is skipped, a final LogSoftmax kept.
    for (const auto& n : nodes_)
      if (!n.node->outputs.empty() && n.Out() == output_) {
        if (n.op == "Softmax") logits_ = n.In(0);
        if (n.op == "LogSoftmax") log_probs_ = true;
      }
    if (logits_.empty()) logits_ = output_;
  }

  std::vector<torch::Tensor> Parameters() const {
    std::vector<torch::Tensor> ps;
    for (const auto& name : trainable_) ps.push_back(values_.at(name));
    return ps;
  }
  const std::set<std::string>& trainable() const { return trainable_; }
  // An initializer's tensor (shares storage with the graph's).
  torch::Tensor Value(const std::string& name) const { return values_.at(name); }
  std::size_t running_stats() const { return running_.size(); }
  bool log_probs() const { return log_probs_; }

  // Runs the graph up to `want` (logits_ for training, output_ for tests).
  // training: BatchNormalization normalizes with the batch statistics and
  // updates its stored mean / variance (ONNX momentum), as torch's BatchNorm
  // in train mode; otherwise the stored statistics are used.
  // conv_pixels: when given, every Conv's output pixels (H·W) per image,
  // keyed by its weight's name (the columns its im2col matrix multiplies).
  torch::Tensor Forward(const torch::Tensor& x, bool logits, bool training = false,
                        std::map<std::string, int64_t>* conv_pixels = nullptr) const {
    training_ = training;
    const std::string& want = logits ? logits_ : output_;
    std::map<std::string, torch::Tensor> v;
    v[input_names_[0]] = x;
    auto get = [&](const TorchNode& n, int k) -> torch::Tensor {
      const std::string name = n.In(k);
      if (name.empty()) return {};
      auto it = v.find(name);
      if (it != v.end()) return it->second;
      return values_.at(name);  // an initializer (the runtime checked that it exists)
    };
    for (const TorchNode& n : nodes_) {
      v[n.Out()] = Run(n, [&](int k) { return get(n, k); });
      if (conv_pixels && n.op == "Conv" && v[n.Out()].dim() == 4)
        (*conv_pixels)[n.In(1)] = v[n.Out()].size(2) * v[n.Out()].size(3);
      if (n.Out() == want) return v[want];
    }
    auto it = v.find(want);
    PERMDNN_CHECK(it != v.end(), "{}: graph output '{}' is not computed", path_, want);
    return it->second;
  }

  // Writes the trained initializers back (same names, shapes, dtype) and
  // the model to `out` atomically.
  void Write(const std::string& out) {
    std::map<std::string, runtime::Tensor> replace;
    for (const std::set<std::string>* names : {&trainable_, &running_})
      for (const std::string& name : *names) {
        torch::Tensor w = values_.at(name).detach().contiguous();
        replace[name] = runtime::Tensor::Float(std::vector<int64_t>(w.sizes().begin(), w.sizes().end()),
                                               {w.data_ptr<float>(), static_cast<std::size_t>(w.numel())});
      }
    runtime::WriteWithInitializers(bytes_, path_, replace, out);
  }

 private:
  // A node of the graph, checked: a standard op this file runs, or an op of
  // a registry format; its trainable float initializers marked.
  TorchNode MakeNode(const runtime::GraphNode& gn) {
    TorchNode n;
    n.node = &gn;
    n.op = gn.op_type;
    n.where = path_ + ": " + gn.Where();
    n.opset = graph_.opset;
    if (!gn.domain.empty()) {
      if (!formats::IsPermDnnDomain(gn.domain)) n.Unsupported("domain '" + gn.domain + "'");
      n.format =
          formats::FindFormat(gn.domain, gn.op_type, [&](int k) { return !gn.In(k).empty(); }, false, &gn.attrs);
      if (n.format == nullptr) n.Unsupported("operator not supported by compress fine-tuning");
      n.conv = n.format->conv->name == gn.op_type;
      n.geometry = formats::ReadGeometry(*n.format, n.conv, gn.attrs, n.where);
    } else if (!Supported(n.op)) {
      n.Unsupported("operator not supported by compress fine-tuning (see include/permdnn/train/finetune.h for the list)");
    }
    for (int s : TrainableInputs(n)) {
      const std::string name = n.In(s);
      if (name.empty() || !float_init_.count(name) || !float_init_[name]) continue;
      if ((n.op == "Add" || n.op == "Sub" || n.op == "Mul") && float_init_.count(n.In(1 - s))) continue;
      if (trainable_.insert(name).second) values_[name].requires_grad_(true);
    }
    if (n.op == "BatchNormalization")
      for (int s : {3, 4})
        if (float_init_.count(n.In(s)) && float_init_[n.In(s)]) running_.insert(n.In(s));
    return n;
  }

  static bool Supported(const std::string& op) {
    static const std::set<std::string> kStd = {
        "Gemm", "MatMul", "Conv", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal",
        "Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
        "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat",
        "Constant", "Cast", "BatchNormalization", "Softmax", "LogSoftmax", "Identity", "Dropout"};
    return kStd.count(op) != 0;
  }

  // The int16 offsets PermDiagLinearKernel takes, converted once per initializer.
  // offsets as int16 [mb, nb]; the column layout's [nb] is broadcast over
  // the mb row blocks (the registry validated it).
  const torch::Tensor& Offsets16(const std::string& name, int64_t mb) const {
    auto it = offsets16_.find(name);
    if (it == offsets16_.end()) {
      torch::Tensor o = values_.at(name).to(torch::kInt16);
      if (o.dim() == 1) o = o.view({1, o.size(0)}).expand({mb, o.size(0)});
      it = offsets16_.emplace(name, o.contiguous()).first;
    }
    return it->second;
  }

  // A csr-relative node's packed streams (formats/sparse_matrix.h) as
  // int64 row_ptr, col_idx and codes, decoded once per node: they are
  // constants, only the codebook trains.
  struct RelativeCsr {
    torch::Tensor row_ptr, col, codes;
  };
  template <typename Array>
  const RelativeCsr& Relative(const TorchNode& n, Array&& array) const {
    auto it = relative_.find(n.where);
    if (it != relative_.end()) return it->second;
    auto bytes = [&](const char* name) {
      const torch::Tensor t = array(name).to(torch::kLong).contiguous();
      return std::vector<uint8_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    };
    const formats::Geometry& g = n.geometry;
    const CsrPattern pat = DecodeRelative(bytes("row_len"), bytes("gaps"), g.out, g.in * g.taps(),
                                          static_cast<int>(n.Int("index_bits", 0)), n.where);
    const std::vector<uint8_t> packed = bytes("codes");
    const int code_bits = CodeBits(array("codebook").numel());
    std::vector<int64_t> codes(pat.col_idx.size());
    for (std::size_t e = 0; e < codes.size(); ++e) codes[e] = UnpackBits(packed, static_cast<int64_t>(e), code_bits);
    RelativeCsr r{torch::tensor(std::vector<int64_t>(pat.row_ptr.begin(), pat.row_ptr.end()), torch::kLong),
                  torch::tensor(std::vector<int64_t>(pat.col_idx.begin(), pat.col_idx.end()), torch::kLong),
                  torch::tensor(codes, torch::kLong)};
    return relative_.emplace(n.where, std::move(r)).first->second;
  }

  template <typename Get>
  torch::Tensor Run(const TorchNode& n, Get&& in) const {
    const std::string& op = n.op;
    if (op == "Relu") return torch::relu(in(0));
    if (op == "Sigmoid") return torch::sigmoid(in(0));
    if (op == "Tanh") return torch::tanh(in(0));
    if (op == "LeakyRelu") return torch::leaky_relu(in(0), n.Float("alpha", 0.01f));
    if (op == "Elu") return torch::elu(in(0), n.Float("alpha", 1.0f));
    if (op == "Neg") return -in(0);
    if (op == "Abs") return in(0).abs();
    if (op == "Exp") return in(0).exp();
    if (op == "Log") return in(0).log();
    if (op == "Sqrt") return in(0).sqrt();
    if (op == "Reciprocal") return in(0).reciprocal();
    if (op == "Identity" || op == "Dropout") return in(0);
    if (op == "Add") return in(0) + in(1);
    if (op == "Sub") return in(0) - in(1);
    if (op == "Mul") return in(0) * in(1);
    if (op == "Div") return in(0) / in(1);
    if (op == "Clip") {
      torch::Tensor x = in(0), lo = in(1), hi = in(2);
      if (n.opset < 11) return x.clamp(n.Float("min", -3.402823e38f), n.Float("max", 3.402823e38f));
      if (lo.defined()) x = torch::max(x, lo);
      return hi.defined() ? torch::min(x, hi) : x;
    }
    if (op == "Cast") {
      const int64_t to = n.Int("to", 1);
      return to == static_cast<int64_t>(runtime::DType::kFloat32) ? in(0).to(torch::kFloat) : in(0).to(torch::kLong);
    }
    if (op == "Constant") {
      auto it = n.node->tensor_attrs.find("value");
      PERMDNN_CHECK(it != n.node->tensor_attrs.end() && it->second, "{}: only Constant with a 'value' tensor", n.where);
      runtime::Tensor t = *it->second;
      return ToTorch(t);
    }
    // Shape arithmetic that exporters put before Reshape (int64 tensors).
    if (op == "Shape") {
      auto sizes = in(0).sizes();
      return torch::tensor(std::vector<int64_t>(sizes.begin(), sizes.end()), torch::kLong);
    }
    if (op == "Gather") {
      torch::Tensor x = in(0), idx = in(1);
      int64_t axis = n.Int("axis", 0);
      if (axis < 0) axis += x.dim();
      idx = torch::where(idx < 0, idx + x.size(axis), idx);
      torch::Tensor y = x.index_select(axis, idx.reshape({-1}));
      std::vector<int64_t> shape(x.sizes().begin(), x.sizes().begin() + axis);
      for (int64_t d : idx.sizes()) shape.push_back(d);
      shape.insert(shape.end(), x.sizes().begin() + axis + 1, x.sizes().end());
      return y.reshape(shape);
    }
    if (op == "Concat") {
      std::vector<torch::Tensor> parts;
      for (int k = 0; k < static_cast<int>(n.node->inputs.size()); ++k) parts.push_back(in(k));
      return torch::cat(parts, n.Int("axis", 0));
    }
    if (op == "Unsqueeze") {
      torch::Tensor x = in(0);
      const int64_t rank = x.dim() + static_cast<int64_t>(n.opset >= 13 ? in(1).numel() : n.Ints("axes", {}).size());
      for (int64_t a : Axes(n, n.opset >= 13 ? in(1) : torch::Tensor(), rank)) x = x.unsqueeze(a);
      return x;
    }
    if (op == "Squeeze") {
      torch::Tensor x = in(0);
      std::vector<int64_t> axes = Axes(n, n.opset >= 13 ? in(1) : torch::Tensor(), x.dim());
      if (axes.empty())
        for (int64_t d = 0; d < x.dim(); ++d)
          if (x.size(d) == 1) axes.push_back(d);
      for (auto it = axes.rbegin(); it != axes.rend(); ++it) x = x.squeeze(*it);
      return x;
    }
    if (op == "MatMul") return torch::matmul(in(0), in(1));
    if (op == "Gemm") {
      torch::Tensor a = in(0), b = in(1), c = in(2);
      if (n.Int("transA", 0)) a = a.t();
      if (n.Int("transB", 0)) b = b.t();
      const float alpha = n.Float("alpha", 1.0f), beta = n.Float("beta", 1.0f);
      if (c.defined() && alpha == 1.0f && beta == 1.0f && a.dim() == 2) return torch::addmm(c, a, b);
      torch::Tensor y = alpha == 1.0f ? torch::matmul(a, b) : torch::matmul(a, b) * alpha;
      return c.defined() ? y + (beta == 1.0f ? c : c * beta) : y;
    }
    if (op == "Conv") return ConvForward(n, in(0), in(1), in(2));
    if (op == "MaxPool" || op == "AveragePool") return PoolForward(n, in(0), op == "MaxPool");
    if (op == "GlobalAveragePool" || op == "GlobalMaxPool") {
      torch::Tensor x = in(0);
      std::vector<int64_t> dims;
      for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
      return op == "GlobalMaxPool" ? x.amax(dims, true) : x.mean(dims, true);
    }
    if (op == "Flatten") {
      torch::Tensor x = in(0);
      int64_t axis = n.Int("axis", 1);
      if (axis < 0) axis += x.dim();
      int64_t lead = 1;
      for (int64_t d = 0; d < axis; ++d) lead *= x.size(d);
      return x.reshape({lead, -1});
    }
    if (op == "Reshape") {
      torch::Tensor x = in(0), s = in(1);
      PERMDNN_CHECK(s.defined() && s.scalar_type() == torch::kLong, "{}: the shape must be a constant int64 tensor",
                    n.where);
      std::vector<int64_t> shape(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
      for (std::size_t d = 0; d < shape.size(); ++d)
        if (shape[d] == 0 && !n.Int("allowzero", 0)) shape[d] = x.size(static_cast<int64_t>(d));
      return x.reshape(shape);
    }
    if (op == "Transpose") {
      torch::Tensor x = in(0);
      std::vector<int64_t> perm;
      for (int64_t d = x.dim() - 1; d >= 0; --d) perm.push_back(d);
      return x.permute(n.Ints("perm", perm));
    }
    if (op == "Softmax" || op == "LogSoftmax") return SoftmaxForward(n, in(0), op == "LogSoftmax");
    if (op == "BatchNormalization")
      return torch::batch_norm(in(0), in(1), in(2), in(3), in(4), training_ && running_.count(n.In(3)) &&
                                   running_.count(n.In(4)), 1.0 - n.Float("momentum", 0.9f),
                               n.Float("epsilon", 1e-5f), false);
    if (n.format) return Compressed(n, in);
    n.Unsupported("operator not supported by compress fine-tuning");
  }

  // ai.permdnn compressed layers, by their registry row: the structure
  // (offsets, row_ptr / col_idx, codes) is a constant, only the stored
  // float values train.
  template <typename Get>
  torch::Tensor Compressed(const TorchNode& n, Get&& in) const {
    const formats::Geometry& g = n.geometry;
    auto array = [&](const char* name) { return in(formats::FindArray(*n.format, name)->slot); };
    switch (n.format->kind) {
      case formats::Kind::kPermDiag:
      case formats::Kind::kPermDiagColumn: {  // the same layer; column offsets fixed and shared
        const torch::Tensor& offsets = Offsets16(n.In("offsets"), g.row_blocks());
        if (n.conv) return ConvForward(n, in(0), PermDiagToDense(array("values"), offsets, g.out, g.in), array("bias"));
        return OverLastDim(in(0), g.in, [&](const torch::Tensor& x) {
          return PermDiagLinearKernel(x.contiguous(), array("values"), offsets, array("bias"), g.out, g.in);
        });
      }
      case formats::Kind::kCirculant:
        if (n.conv) return ConvForward(n, in(0), CirculantToDense(array("values"), g.out, g.in), array("bias"));
        return OverLastDim(in(0), g.in, [&](const torch::Tensor& x) {
          return CirculantLinearFft(x, array("values"), array("bias"), g.out, g.in);
        });
      case formats::Kind::kCsr:
      case formats::Kind::kCsrCodebook:
      case formats::Kind::kCsrRelative: {
        const bool shared = n.format->kind != formats::Kind::kCsr;
        torch::Tensor row_ptr, col, codes;
        if (n.format->kind == formats::Kind::kCsrRelative) {
          const RelativeCsr& r = Relative(n, array);
          row_ptr = r.row_ptr;
          col = r.col;
          codes = r.codes;
        } else {
          row_ptr = array("row_ptr");
          col = array("col_idx");
          if (shared) codes = array("codes").to(torch::kLong);
        }
        torch::Tensor vals = shared ? array("codebook").index_select(0, codes) : array("values");
        // Row index of every nonzero from row_ptr (fixed).
        torch::Tensor counts = row_ptr.slice(0, 1) - row_ptr.slice(0, 0, g.out);
        torch::Tensor row = torch::repeat_interleave(torch::arange(g.out, torch::kLong), counts);
        const int64_t cols = g.in * g.taps();
        torch::Tensor w = torch::zeros({g.out, cols}).index_put({row, col}, vals);
        const torch::Tensor bias = array("bias");
        if (!n.conv)
          return OverLastDim(in(0), cols, [&](const torch::Tensor& x) {
            torch::Tensor y = torch::matmul(x, w.t());
            return bias.defined() ? y + bias : y;
          });
        std::vector<int64_t> shape = {g.out, g.in};
        shape.insert(shape.end(), g.kernel.begin(), g.kernel.end());
        return ConvForward(n, in(0), w.view(shape), bias);
      }
      case formats::Kind::kTernary:  // the straight-through ternary forward comes with issue 18's training
      case formats::Kind::kDense: break;
    }
    n.Unsupported("format not supported by compress fine-tuning");
  }

  std::string path_;
  std::string bytes_;
  runtime::OnnxGraph graph_;
  std::vector<TorchNode> nodes_;
  std::map<std::string, torch::Tensor> values_;  // initializers (float or int64)
  std::map<std::string, bool> float_init_;
  mutable std::map<std::string, torch::Tensor> offsets16_;
  mutable std::map<std::string, RelativeCsr> relative_;  // by node (Relative)
  std::set<std::string> trainable_;
  std::set<std::string> running_;  // BatchNormalization mean / var, updated in training mode
  mutable bool training_ = false;
  std::vector<std::string> input_names_;
  std::string output_, logits_;
  bool log_probs_ = false;
};

struct Data {
  torch::Tensor images, labels;
};

// Images [begin, begin + n) of ds, preprocessed as eval does, in the model's layout.
Data Load(const ImageDataset& ds, int64_t begin, int64_t n, const Preprocess& pre, runtime::Layout layout) {
  Data d;
  d.images = torch::empty(runtime::BatchShape(ds, layout, n));
  ds.Batch(begin, n, pre, std::span<float>(d.images.data_ptr<float>(), d.images.numel()));
  d.labels = torch::from_blob(const_cast<uint8_t*>(ds.labels.data() + begin), {n}, torch::kUInt8).to(torch::kLong);
  return d;
}

torch::Tensor Loss(const TorchGraph& g, const torch::Tensor& out, const torch::Tensor& labels) {
  PERMDNN_CHECK(out.dim() == 2, "the model's output must be [batch, classes], got {} dims", out.dim());
  return g.log_probs() ? torch::nll_loss(out, labels) : torch::nn::functional::cross_entropy(out, labels);
}

// Test loss and accuracy of the LibTorch graph (no gradients).
std::pair<double, double> Test(const TorchGraph& g, const Data& test, int64_t batch) {
  torch::NoGradGuard no_grad;
  double loss = 0;
  int64_t correct = 0, n = test.images.size(0);
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t e = std::min(n, b + batch);
    torch::Tensor out = g.Forward(test.images.slice(0, b, e), true), y = test.labels.slice(0, b, e);
    loss += Loss(g, out, y).item<double>() * static_cast<double>(e - b);
    correct += out.argmax(1).eq(y).sum().item<int64_t>();
  }
  return {loss / static_cast<double>(std::max<int64_t>(n, 1)),
          static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(n, 1))};
}

// The training and test images of a fine-tuning job, preprocessed as
// `permdnn eval` does for the model.
struct JobData {
  runtime::EvalOptions eo;
  ImageDataset test_set;
  Data train, test;
  int64_t n_train = 0;
};

JobData LoadJobData(const runtime::Model& model, const FineTuneOptions& o) {
  JobData d;
  runtime::DefaultPreprocess(model, &d.eo.pre, &d.eo.layout);
  ImageDataset train_set;
  if (o.synthetic_train > 0) {
    ImageDataset all = SyntheticDataset(o.synthetic_train + o.synthetic_test, o.synthetic_side, o.synthetic_side,
                                        o.synthetic_classes, 12345);
    auto split = [&](int64_t begin, int64_t n) {
      ImageDataset s = all;
      s.count = n;
      s.pixels.assign(all.pixels.begin() + begin * all.image_size(), all.pixels.begin() + (begin + n) * all.image_size());
      s.labels.assign(all.labels.begin() + begin, all.labels.begin() + begin + n);
      return s;
    };
    train_set = split(0, o.synthetic_train);
    d.test_set = split(o.synthetic_train, o.synthetic_test);
  } else {
    const std::string dir = o.data_dir.empty() ? kDefaultFashionMnistDir : o.data_dir;
    train_set = LoadFashionMnist(dir, "train");
    d.test_set = LoadFashionMnist(dir, "test");
  }
  d.n_train = o.limit_train > 0 ? std::min(o.limit_train, train_set.count) : train_set.count;
  d.train = Load(train_set, 0, d.n_train, d.eo.pre, d.eo.layout);
  d.test = Load(d.test_set, 0, d.test_set.count, d.eo.pre, d.eo.layout);
  return d;
}

// What a training method adds to the plain loop: a penalty on the loss and
// work after every optimizer step (ADMM).
struct StepHooks {
  std::function<torch::Tensor()> penalty;                   // undefined tensor: none
  std::function<void(int64_t step, double loss)> after_step;  // step: 0-based over all epochs
};

// One epoch of Adam over d.train (the learning rate of `epoch` under o's
// schedule), then the test metrics; `step` counts the batch steps.
EpochMetrics TrainEpoch(const TorchGraph& g, torch::optim::Adam& opt, const JobData& d, const FineTuneOptions& o,
                        int epoch, int64_t* step, const StepHooks* hooks, std::ostream& log) {
  const auto t0 = std::chrono::steady_clock::now();
  const double lr = LearningRate(o, epoch);
  for (auto& group : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  std::vector<int64_t> order = EpochPermutation(d.n_train, o.seed, epoch);
  torch::Tensor perm = torch::tensor(order, torch::kLong);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t b = 0; b < d.n_train; b += o.batch) {
    torch::Tensor idx = perm.slice(0, b, std::min(d.n_train, b + o.batch));
    torch::Tensor x = d.train.images.index_select(0, idx), y = d.train.labels.index_select(0, idx);
    opt.zero_grad();
    torch::Tensor out = g.Forward(x, true, true);
    torch::Tensor loss = Loss(g, out, y);
    torch::Tensor total = loss;
    if (hooks && hooks->penalty)
      if (torch::Tensor p = hooks->penalty(); p.defined()) total = loss + p;
    total.backward();
    opt.step();
    const double l = loss.item<double>();
    loss_sum += l * static_cast<double>(idx.size(0));
    correct += out.argmax(1).eq(y).sum().item<int64_t>();
    if (hooks && hooks->after_step) hooks->after_step(*step, l);
    ++*step;
  }
  EpochMetrics m;
  m.epoch = epoch + 1;
  m.lr = lr;
  m.train_loss = loss_sum / static_cast<double>(d.n_train);
  m.train_accuracy = static_cast<double>(correct) / static_cast<double>(d.n_train);
  std::tie(m.test_loss, m.test_accuracy) = Test(g, d.test, 256);
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log << fmt::format("epoch {}/{}: lr {:g}, train loss {:.4f} acc {:.2f}%, test loss {:.4f} acc {:.2f}%, {:.1f} s\n",
                     m.epoch, o.epochs, lr, m.train_loss, 100 * m.train_accuracy, m.test_loss, 100 * m.test_accuracy,
                     m.seconds);
  return m;
}

void CheckOptimizerOptions(const FineTuneOptions& o) {
  PERMDNN_CHECK(o.epochs >= 1, "--epochs must be >= 1, got {}", o.epochs);
  PERMDNN_CHECK(o.batch >= 1, "--batch must be >= 1, got {}", o.batch);
  PERMDNN_CHECK(o.lr > 0, "--lr must be > 0, got {}", o.lr);
}

// Removes a temporary file when it goes out of scope.
struct TempFile {
  std::string path;
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

FineTuneResult FineTuneOnnx(const std::string& in_path, const std::string& out_path, const FineTuneOptions& o,
                            std::ostream& log) {
  CheckOptimizerOptions(o);
  ConfigureTrainingThreads(o.threads);  // see permdiag_layers.h

  runtime::Model before = runtime::Model::Load(in_path);
  const JobData d = LoadJobData(before, o);
  FineTuneResult r;
  r.accuracy_before = runtime::Evaluate(before, d.test_set, d.eo).accuracy;

  torch::manual_seed(o.seed);
  TorchGraph g(in_path);
  PERMDNN_CHECK(!g.trainable().empty(), "{}: no float weight initializer to fine-tune", in_path);
  r.trained_initializers.assign(g.trainable().begin(), g.trainable().end());
  for (const auto& p : g.Parameters()) r.trainable_values += p.numel();
  log << fmt::format("fine-tuning {} values in {} initializers ({} BatchNormalization statistics updated) on {} "
                     "images, {} epochs (Adam, lr {}, batch {})\n",
                     r.trainable_values, r.trained_initializers.size(), g.running_stats(), d.n_train, o.epochs, o.lr,
                     o.batch);
  auto [l0, a0] = Test(g, d.test, 256);
  r.test_loss_before = l0;
  log << fmt::format("before: test loss {:.4f}, accuracy {:.2f}% (LibTorch), {:.2f}% (runtime)\n", l0, 100 * a0,
                     100 * r.accuracy_before);

  torch::optim::Adam opt(g.Parameters(), torch::optim::AdamOptions(o.lr));
  int64_t step = 0;
  for (int epoch = 0; epoch < o.epochs; ++epoch) r.history.push_back(TrainEpoch(g, opt, d, o, epoch, &step, nullptr, log));
  g.Write(out_path);
  runtime::Model after = runtime::Model::Load(out_path);  // the written file must load unchanged
  r.accuracy_after = runtime::Evaluate(after, d.test_set, d.eo).accuracy;
  log << fmt::format("after: test accuracy {:.2f}% (runtime, {}), was {:.2f}%\n", 100 * r.accuracy_after, out_path,
                     100 * r.accuracy_before);
  return r;
}

AdmmCompressResult AdmmCompressOnnx(const std::string& in_path, const std::string& out_path,
                                    const FineTuneOptions& o, const std::string& rounds_csv, std::ostream& log) {
  const int admm_epochs = CheckAdmmOptions(o);
  CheckOptimizerOptions(o);
  const std::vector<runtime::CompressTarget> plan = runtime::PlanCompression(in_path, o.compress);
  ConfigureTrainingThreads(o.threads);

  torch::manual_seed(o.seed);
  TorchGraph g(in_path);
  std::vector<AdmmTerm> terms;
  std::vector<std::string> weights;  // each term's initializer
  AdmmCompressResult r;
  for (const runtime::CompressTarget& t : plan) {
    if (t.method.is_dense()) continue;
    PERMDNN_CHECK(g.trainable().count(t.weight), "{}: layer '{}': weight '{}' is not a trainable initializer", in_path,
                  t.layer, t.weight);
    torch::Tensor param = g.Value(t.weight);
    torch::Tensor w = t.transposed ? param.t() : param;  // the logical [out, in(, kh, kw)] view
    formats::Geometry geometry{t.out, t.in, t.kernel, 1};
    terms.push_back({t.layer, t.method, geometry, w, torch::zeros(w.sizes()), torch::zeros(w.sizes())});
    weights.push_back(t.weight);
    r.layers.push_back(t.layer);
  }
  PERMDNN_CHECK(!terms.empty(), "--compress {} compresses no layer of {} (the first conv and the last layer stay "
                "dense unless named)", o.compress, in_path);

  runtime::Model before = runtime::Model::Load(in_path);
  const JobData d = LoadJobData(before, o);
  {
    // A conv's break-even is asked at its own output size (one test image).
    torch::NoGradGuard no_grad;
    std::map<std::string, int64_t> pixels;
    g.Forward(d.test.images.slice(0, 0, 1), false, false, &pixels);
    for (std::size_t k = 0; k < terms.size(); ++k)
      if (terms[k].geometry.conv() && pixels.count(weights[k])) terms[k].columns = pixels.at(weights[k]);
  }
  CheckBreakEven(terms, o, log);
  r.accuracy_dense = runtime::Evaluate(before, d.test_set, d.eo).accuracy;
  const int64_t batches = (d.n_train + o.batch - 1) / o.batch;
  const int64_t iter = o.admm_iter > 0 ? o.admm_iter : batches;
  log << fmt::format("ADMM phase: {} epochs of {} batches, rho {} (x{} per round), a round every {} steps, "
                     "constraints {}; dense model {:.2f}% (runtime)\n",
                     admm_epochs, batches, o.rho, o.rho_mult, iter, o.compress, 100 * r.accuracy_dense);

  AdmmStart(terms);
  double rho = o.rho, loss_sum = 0;
  int64_t loss_count = 0;
  FineTuneOptions p1 = o;
  p1.epochs = admm_epochs;  // the learning-rate schedule of the ADMM phase
  const bool decoupled = o.admm_penalty == "decoupled";
  StepHooks hooks;
  hooks.penalty = [&] { return decoupled ? torch::Tensor() : AdmmPenalty(terms, rho); };
  hooks.after_step = [&](int64_t step, double loss) {
    if (decoupled) AdmmProximalStep(terms, LearningRate(p1, static_cast<int>(step / batches)) * rho);
    loss_sum += loss;
    ++loss_count;
    if ((step + 1) % iter != 0) return;
    AdmmRound row;
    row.round = static_cast<int64_t>(r.rounds.size()) + 1;
    row.step = step + 1;
    row.rho = rho;
    AdmmUpdate(terms, &row);
    row.train_loss = loss_sum / static_cast<double>(std::max<int64_t>(1, loss_count));
    row.test_accuracy = Test(g, d.test, 256).second;
    r.rounds.push_back(row);
    if (!rounds_csv.empty()) WriteFileAtomic(rounds_csv, AdmmRoundsCsv(terms, r.rounds));
    log << AdmmRoundLine(terms, row);
    rho = AdmmNextRho(terms, rho, o);
    loss_sum = 0;
    loss_count = 0;
  };
  torch::optim::Adam opt(g.Parameters(), torch::optim::AdamOptions(o.lr));
  int64_t step = 0;
  for (int epoch = 0; epoch < admm_epochs; ++epoch) TrainEpoch(g, opt, d, p1, epoch, &step, &hooks, log);
  r.accuracy_admm_end = Test(g, d.test, 256).second;

  // Hard projection: W <- Π(W), written as the dense file, then compressed
  // with the SPEC (the same layers, the format's ops).
  // 1 − ‖W − Π(W)‖²/‖W‖² of the hard projection, per layer (= ‖Π(W)‖²/‖W‖²
  // for pruning and permdiag, which keep entries; quantization moves them).
  std::map<std::string, double> kept;
  {
    torch::NoGradGuard no_grad;
    for (AdmmTerm& t : terms) {
      torch::Tensor z = AdmmProject(t.layer, t.compress, t.geometry, t.w);
      const double n2 = t.w.pow(2).sum().item<double>();
      kept[t.layer] = n2 > 0 ? 1.0 - (t.w - z).pow(2).sum().item<double>() / n2 : 1.0;
      t.w.copy_(z);
    }
  }
  const TempFile dense{out_path + ".admm-dense.tmp"}, projected{out_path + ".admm-projected.tmp"};
  g.Write(dense.path);
  runtime::CompressOptions co;
  co.spec = o.compress;
  r.projection = runtime::CompressOnnx(dense.path, projected.path, co);
  for (runtime::LayerReport& l : r.projection.layers)
    if (auto it = kept.find(l.name); it != kept.end()) l.kept_energy = it->second;
  log << fmt::format("hard projection onto {} (ADMM phase end {:.2f}%), then {} epochs of retraining with the "
                     "structure fixed\n",
                     o.compress, 100 * r.accuracy_admm_end, o.epochs - admm_epochs);
  FineTuneOptions p2 = o;
  p2.epochs = o.epochs - admm_epochs;
  r.retrain = FineTuneOnnx(projected.path, out_path, p2, log);
  r.projection.path = out_path;
  r.projection.file_bytes = static_cast<int64_t>(std::filesystem::file_size(out_path));
  return r;
}

std::vector<float> TorchForwardOnnx(const std::string& path, std::span<const float> input,
                                    std::span<const int64_t> input_shape) {
  TorchGraph g(path);
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::from_blob(const_cast<float*>(input.data()),
                                     std::vector<int64_t>(input_shape.begin(), input_shape.end()), torch::kFloat);
  torch::Tensor y = g.Forward(x, false).contiguous();
  return {y.data_ptr<float>(), y.data_ptr<float>() + y.numel()};
}

}  // namespace permdnn::train
