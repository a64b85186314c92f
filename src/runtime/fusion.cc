// The load-time fusion pass (see fusion.h).
#include "runtime/fusion.h"

#include <algorithm>
#include <limits>
#include <optional>

namespace permdnn::runtime::detail {

namespace {

// A float scalar known at load: an initializer or the output of a Constant node.
std::optional<float> LoadTimeScalar(int id, const std::vector<NodeDef>& nodes, const std::vector<Value>& values,
                                    const std::vector<int>& producer) {
  const Value& v = values[id];
  const Tensor* t = nullptr;
  if (v.initializer) {
    t = v.constant_data.get();
  } else if (producer[id] >= 0) {
    const NodeDef& p = nodes[producer[id]];
    if (p.op_type != "Constant" || !p.domain.empty()) return std::nullopt;
    auto a = p.tensor_attrs.find("value");
    if (a == p.tensor_attrs.end() || !a->second) return std::nullopt;
    t = a->second.get();
  }
  if (!t || !IsFloat(t->dtype()) || NumElements(t->shape()) != 1) return std::nullopt;
  return t->f()[0];
}

// The ops whose kernels apply NodeDef::post_ops (ops_cnn.cc ConvOp,
// ops_permdiag.cc PermDiagConvOp, ops_circulant.cc BlockCirculantConvOp,
// ops_ternary.cc TernaryConvOp).
bool IsConvLike(const NodeDef& n) {
  if (n.op_type == "Conv" && n.domain.empty()) return true;
  if (!IsPermDnnDomain(n.domain)) return false;
  for (formats::Kind k : {formats::Kind::kPermDiag, formats::Kind::kCirculant, formats::Kind::kTernary})
    if (n.op_type == formats::Format(k).conv->name) return true;
  return false;
}

// The inputs a conv-like node has before any post-op's: X, W, B for Conv;
// X and the format's array slots (formats/registry.h) for a compressed conv.
std::size_t FixedInputs(const NodeDef& n) {
  if (!IsPermDnnDomain(n.domain)) return 3;
  const formats::FormatTraits* f = formats::FindFormat(n.domain, n.op_type, [](int) { return true; }, false, &n.attrs);
  int last = 0;
  if (f)
    for (const formats::ArraySpec& a : f->arrays) last = std::max(last, a.slot);
  return static_cast<std::size_t>(last) + 1;
}

// Output channels of a conv-like node when known at load, else -1.
int64_t ConvOutChannels(const NodeDef& n, const std::vector<Value>& values) {
  if (IsPermDnnDomain(n.domain)) {  // a compressed conv of the format registry
    const formats::FormatTraits* f = formats::FindFormat(n.domain, n.op_type, [](int) { return true; }, false, &n.attrs);
    return f && f->conv->name == n.op_type && n.Has("out_channels") ? n.Int("out_channels", -1) : -1;
  }
  if (n.inputs.size() < 2 || n.inputs[1] < 0) return -1;
  const Value& w = values[n.inputs[1]];
  return w.initializer && !w.shape.empty() ? w.shape[0] : -1;
}

}  // namespace

int FuseForInference(std::vector<NodeDef>& nodes, std::vector<Value>& values) {
  const int nv = static_cast<int>(values.size());
  std::vector<int> producer(nv, -1), consumers(nv, 0);
  auto recount = [&] {
    std::fill(producer.begin(), producer.end(), -1);
    std::fill(consumers.begin(), consumers.end(), 0);
    for (std::size_t k = 0; k < nodes.size(); ++k) {
      for (int id : nodes[k].inputs)
        if (id >= 0) consumers[id]++;
      for (int id : nodes[k].outputs)
        if (id >= 0) producer[id] = static_cast<int>(k);
    }
  };
  recount();
  std::vector<bool> removed(nodes.size(), false);
  int removed_count = 0;
  // A fused node runs where its last absorbed node ran: an Add's other
  // operand may be computed between the conv and the Add.
  std::vector<std::size_t> emit_at(nodes.size());
  for (std::size_t k = 0; k < nodes.size(); ++k) emit_at[k] = k;

  // Identity / inference Dropout: consumers read the input instead.
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    NodeDef& n = nodes[k];
    const bool identity = n.domain.empty() && (n.op_type == "Identity" || n.op_type == "Dropout");
    if (!identity || n.inputs.empty() || n.inputs[0] < 0 || n.outputs.empty() || n.outputs[0] < 0) continue;
    if (n.op_type == "Dropout") {
      if (n.outputs.size() > 1 && n.outputs[1] >= 0) continue;           // mask output: the op refuses it
      if (n.inputs.size() > 2 && n.inputs[2] >= 0) continue;             // training_mode input: let it check
      if (n.opset < 7 && n.Int("is_test", 0) == 0) continue;
    }
    const int in = n.inputs[0], out = n.outputs[0];
    if (values[out].graph_output) continue;
    for (NodeDef& m : nodes)
      for (int& id : m.inputs)
        if (id == out) id = in;
    removed[k] = true;
    ++removed_count;
  }
  recount();

  auto sole_consumer = [&](int value) -> int {
    if (value < 0 || values[value].graph_output || consumers[value] != 1) return -1;
    for (std::size_t k = 0; k < nodes.size(); ++k) {
      if (removed[k]) continue;
      for (int id : nodes[k].inputs)
        if (id == value) return static_cast<int>(k);
    }
    return -1;
  };

  for (std::size_t k = 0; k < nodes.size(); ++k) {
    if (removed[k] || !IsConvLike(nodes[k]) || nodes[k].outputs.size() != 1 || nodes[k].outputs[0] < 0) continue;
    NodeDef& conv = nodes[k];
    const int64_t channels = ConvOutChannels(conv, values);
    enum Stage { kBn, kAdd, kAct, kDone } stage = kBn;
    while (stage != kDone) {
      const int tail = conv.outputs[0];
      const int next = sole_consumer(tail);
      if (next < 0) break;
      NodeDef& m = nodes[next];
      if (!m.domain.empty() || m.outputs.empty() || m.outputs[0] < 0) break;
      bool extra_outputs = false;
      for (std::size_t o = 1; o < m.outputs.size(); ++o) extra_outputs = extra_outputs || m.outputs[o] >= 0;
      if (extra_outputs) break;
      PostOp post;
      post.op_type = m.op_type;
      post.name = m.name;
      if (m.op_type == "BatchNormalization" && stage == kBn) {
        if (channels < 0 || m.inputs.size() != 5 || m.inputs[0] != tail || m.Int("training_mode", 0) != 0 ||
            (m.opset < 9 && m.Int("spatial", 1) == 0))
          break;
        bool ok = true;
        for (int i = 1; i < 5; ++i) {
          const int id = m.inputs[i];
          ok = ok && id >= 0 && values[id].initializer && IsFloat(values[id].dtype) && values[id].size() == channels;
        }
        if (!ok) break;
        post.inputs.assign(m.inputs.begin() + 1, m.inputs.end());  // value ids; made positions below
        post.epsilon = m.Float("epsilon", 1e-5f);
        stage = kAdd;
      } else if (m.op_type == "Add" && stage <= kAdd) {
        if (m.inputs.size() != 2 || m.inputs[0] < 0 || m.inputs[1] < 0 || m.inputs[0] == m.inputs[1]) break;
        post.inputs = {m.inputs[0] == tail ? m.inputs[1] : m.inputs[0]};
        stage = kAct;
      } else if ((m.op_type == "Relu" || m.op_type == "Clip") && stage <= kAct) {
        if (m.inputs.empty() || m.inputs[0] != tail) break;
        if (m.op_type == "Clip") {
          post.lo = -std::numeric_limits<float>::infinity();
          post.hi = std::numeric_limits<float>::infinity();
          if (m.opset < 11) {
            post.lo = m.Float("min", post.lo);
            post.hi = m.Float("max", post.hi);
          } else {
            bool ok = true;
            if (m.inputs.size() > 1 && m.inputs[1] >= 0) {
              auto v = LoadTimeScalar(m.inputs[1], nodes, values, producer);
              ok = ok && v.has_value();
              if (v) post.lo = *v;
            }
            if (m.inputs.size() > 2 && m.inputs[2] >= 0) {
              auto v = LoadTimeScalar(m.inputs[2], nodes, values, producer);
              ok = ok && v.has_value();
              if (v) post.hi = *v;
            }
            if (!ok) break;
          }
        }
        stage = kDone;
      } else {
        break;
      }
      // The post-op's inputs become inputs of the fused node (after X, W, B /
      // X, values, offsets, bias), so planning sees them; PostOp::inputs
      // holds their positions.
      const std::size_t fixed = FixedInputs(conv);
      if (conv.inputs.size() < fixed) conv.inputs.resize(fixed, -1);
      for (int& id : post.inputs) {
        conv.inputs.push_back(id);
        id = static_cast<int>(conv.inputs.size()) - 1;
      }
      conv.post_ops.push_back(std::move(post));
      conv.outputs[0] = m.outputs[0];
      emit_at[k] = static_cast<std::size_t>(next);
      removed[next] = true;
      ++removed_count;
    }
  }

  std::vector<std::size_t> order;
  for (std::size_t k = 0; k < nodes.size(); ++k)
    if (!removed[k]) order.push_back(k);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return emit_at[a] < emit_at[b]; });
  std::vector<NodeDef> kept;
  kept.reserve(order.size());
  for (std::size_t k : order) kept.push_back(std::move(nodes[k]));
  nodes = std::move(kept);
  for (Value& v : values) v.producer = -1;
  for (std::size_t k = 0; k < nodes.size(); ++k)
    for (int id : nodes[k].outputs)
      if (id >= 0) values[id].producer = static_cast<int>(k);
  return removed_count;
}

std::string FusedOpType(const NodeDef& node) {
  std::string s = node.op_type;
  for (const PostOp& p : node.post_ops) s += "+" + p.op_type;
  return s;
}

}  // namespace permdnn::runtime::detail
