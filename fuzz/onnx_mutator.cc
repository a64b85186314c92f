// Structure-aware mutation for the "onnx_struct" fuzz target: byte flips
// rarely survive protobuf parsing and the loader's checks to reach the
// planner and the kernels, so this mutator parses the input as an
// onnx::ModelProto, changes what a model author (or a broken exporter)
// could get wrong, and serializes it again:
//   shapes      graph input/output dims (0, 1, odd sizes, open, huge), ranks,
//               element types; initializer dims, data types and data length
//   attributes  values of ints / floats / lists, their types, removal, and
//               new attributes from the names the runtime's ops read
//   edges       a node input or output renamed to another value, to "" or to
//               a new name; inputs and outputs added or dropped; graph
//               outputs pointed at inputs, initializers or any value
//   op types    any operator the runtime implements (and ai.permdnn's), or
//               an unknown one; nodes swapped, dropped, duplicated or added
//   opset       the default domain's version
// Inputs that do not parse, and one mutation in eight, go to libFuzzer's
// byte mutator. libprotobuf-mutator does the general version of this; the
// runtime needs only these few moves.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "permdnn/formats/registry.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

using Rng = std::mt19937;

const char* const kOps[] = {
    "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal",
    "Floor", "Ceil", "LeakyRelu", "Elu", "Clip", "Identity", "Dropout", "Flatten", "Reshape", "Squeeze",
    "Unsqueeze", "Cast", "Shape", "Constant", "ConstantOfShape", "Gather", "Concat", "Slice", "Transpose",
    "Softmax", "LogSoftmax", "Gemm", "MatMul", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "BatchNormalization", "Pad", "Expand", "DequantizeLinear", "LSTM", "GRU", "RNN", "NoSuchOp"};
const char* const kAttrNames[] = {
    "axis", "axes", "perm", "kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", "ceil_mode",
    "count_include_pad", "transA", "transB", "alpha", "beta", "epsilon", "momentum", "to", "value", "min", "max",
    "starts", "ends", "shape", "allowzero", "keepdims", "start", "end", "p", "in_features", "out_features",
    "in_channels", "out_channels", "is_test", "ratio", "storage_order", "hidden_size", "direction", "layout",
    "activations", "activation_alpha", "activation_beta", "clip", "input_forget", "linear_before_reset",
    "input_size", "group_ch"};
const int64_t kInts[] = {0, 1, 2, 3, 4, 5, 7, 8, 16, 31, 64, -1, -2, -3, 255, 256, 65535, 65536,
                         int64_t{1} << 31, int64_t{1} << 40, INT64_MAX, INT64_MIN};
const float kFloats[] = {0.0f, 1.0f, -1.0f, 0.5f, 1e-5f, 1e30f, -1e30f, 3.0f};
const int kElemTypes[] = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 0, 8, 16, 99};

template <typename T, std::size_t N>
const T& Pick(Rng& rng, const T (&a)[N]) {
  return a[rng() % N];
}
int Below(Rng& rng, int n) { return n <= 0 ? 0 : static_cast<int>(rng() % static_cast<unsigned>(n)); }
// An ai.permdnn op name, from the format registry's op schemas (linear,
// conv and recurrent forms).
const char* PickPermDnnOp(Rng& rng) {
  static const std::vector<const char*> ops = [] {
    std::vector<const char*> v;
    for (const permdnn::formats::FormatTraits& f : permdnn::formats::Formats())
      for (const permdnn::formats::OpSchema* op :
           {f.linear, f.conv, permdnn::formats::RecurrentOp(f, permdnn::formats::RecurrentCell::kLstm),
            permdnn::formats::RecurrentOp(f, permdnn::formats::RecurrentCell::kGru),
            permdnn::formats::RecurrentOp(f, permdnn::formats::RecurrentCell::kRnn)})
        if (op != nullptr && permdnn::formats::IsPermDnnDomain(op->domain) &&
            std::find_if(v.begin(), v.end(), [&](const char* n) { return std::strcmp(n, op->name) == 0; }) == v.end())
          v.push_back(op->name);
    return v;
  }();
  return ops[rng() % ops.size()];
}
int64_t SmallOrInteresting(Rng& rng) { return rng() % 2 ? static_cast<int64_t>(rng() % 10) : Pick(rng, kInts); }

// Every value name a node could refer to.
std::vector<std::string> ValueNames(const onnx::GraphProto& g) {
  std::vector<std::string> names;
  for (const auto& v : g.input()) names.push_back(v.name());
  for (const auto& t : g.initializer()) names.push_back(t.name());
  for (const auto& n : g.node())
    for (const auto& o : n.output()) names.push_back(o);
  return names;
}

std::string AnyName(Rng& rng, const onnx::GraphProto& g) {
  std::vector<std::string> names = ValueNames(g);
  if (names.empty() || rng() % 8 == 0) return rng() % 2 ? "" : "v" + std::to_string(rng() % 100);
  return names[rng() % names.size()];
}

void MutateShape(Rng& rng, onnx::TensorShapeProto* s) {
  const int r = s->dim_size();
  switch (rng() % 5) {
    case 0:
      if (r < 6) s->add_dim()->set_dim_value(SmallOrInteresting(rng));
      break;
    case 1:
      if (r > 0) s->mutable_dim()->DeleteSubrange(Below(rng, r), 1);
      break;
    case 2:
      if (r > 0) s->mutable_dim(Below(rng, r))->set_dim_param("N");
      break;
    default:
      if (r > 0) s->mutable_dim(Below(rng, r))->set_dim_value(SmallOrInteresting(rng));
      break;
  }
}

void MutateValueInfo(Rng& rng, onnx::GraphProto& g) {
  const int n = g.input_size() + g.output_size();
  if (n == 0) return;
  const int k = Below(rng, n);
  onnx::ValueInfoProto* v = k < g.input_size() ? g.mutable_input(k) : g.mutable_output(k - g.input_size());
  auto* tt = v->mutable_type()->mutable_tensor_type();
  switch (rng() % 4) {
    case 0: tt->set_elem_type(Pick(rng, kElemTypes)); break;
    case 1: tt->clear_shape(); break;
    default: MutateShape(rng, tt->mutable_shape()); break;
  }
}

void MutateInitializer(Rng& rng, onnx::GraphProto& g) {
  if (g.initializer_size() == 0) return;
  onnx::TensorProto* t = g.mutable_initializer(Below(rng, g.initializer_size()));
  switch (rng() % 7) {
    case 0:
      if (t->dims_size() > 0) t->set_dims(Below(rng, t->dims_size()), SmallOrInteresting(rng));
      break;
    case 1:
      if (rng() % 2 && t->dims_size() > 0) t->mutable_dims()->RemoveLast();
      else t->add_dims(SmallOrInteresting(rng));
      break;
    case 2: t->set_data_type(Pick(rng, kElemTypes)); break;
    case 3:
      if (t->float_data_size() > 0 && rng() % 2) t->mutable_float_data()->RemoveLast();
      else t->add_float_data(Pick(rng, kFloats));
      break;
    case 4:
      if (t->int64_data_size() > 0 && rng() % 2) t->mutable_int64_data()->RemoveLast();
      else t->add_int64_data(SmallOrInteresting(rng));
      break;
    case 5: {  // raw bytes through libFuzzer's own mutator
      std::string raw = t->raw_data();
      if (raw.empty()) raw.push_back('\0');
      const std::size_t len = raw.size(), cap = len + 64;
      raw.resize(cap);
      const std::size_t used = LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(raw.data()), len, cap);
      raw.resize(used);
      t->set_raw_data(raw);
      break;
    }
    default: t->set_name(AnyName(rng, g)); break;
  }
}

void SetRandomAttr(Rng& rng, onnx::AttributeProto* a) {
  a->clear_ints();
  a->clear_floats();
  switch (rng() % 5) {
    case 0:
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(SmallOrInteresting(rng));
      break;
    case 1:
      a->set_type(onnx::AttributeProto::FLOAT);
      a->set_f(Pick(rng, kFloats));
      break;
    case 2:
      a->set_type(onnx::AttributeProto::FLOATS);
      for (int k = 0, n = Below(rng, 5); k < n; ++k) a->add_floats(Pick(rng, kFloats));
      break;
    case 3:
      a->set_type(onnx::AttributeProto::STRING);
      a->set_s(rng() % 2 ? "SAME_UPPER" : "NOTSET");
      break;
    default:
      a->set_type(onnx::AttributeProto::INTS);
      for (int k = 0, n = Below(rng, 6); k < n; ++k) a->add_ints(SmallOrInteresting(rng));
      break;
  }
}

void MutateAttribute(Rng& rng, onnx::NodeProto* n) {
  const int na = n->attribute_size();
  if (na == 0 || rng() % 4 == 0) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(Pick(rng, kAttrNames));
    SetRandomAttr(rng, a);
    return;
  }
  onnx::AttributeProto* a = n->mutable_attribute(Below(rng, na));
  switch (rng() % 6) {
    case 0: n->mutable_attribute()->DeleteSubrange(Below(rng, na), 1); break;
    case 1: SetRandomAttr(rng, a); break;
    case 2: a->set_i(SmallOrInteresting(rng)); break;
    case 3: a->set_f(Pick(rng, kFloats)); break;
    default:
      if (a->ints_size() > 0 && rng() % 3) a->set_ints(Below(rng, a->ints_size()), SmallOrInteresting(rng));
      else if (a->ints_size() > 0 && rng() % 2) a->mutable_ints()->RemoveLast();
      else a->add_ints(SmallOrInteresting(rng));
      break;
  }
}

void MutateEdges(Rng& rng, onnx::GraphProto& g, onnx::NodeProto* n) {
  switch (rng() % 6) {
    case 0:
      if (n->input_size() > 0) n->set_input(Below(rng, n->input_size()), AnyName(rng, g));
      break;
    case 1: n->add_input(AnyName(rng, g)); break;
    case 2:
      if (n->input_size() > 0) n->mutable_input()->RemoveLast();
      break;
    case 3:
      if (n->output_size() > 0) n->set_output(Below(rng, n->output_size()), AnyName(rng, g));
      break;
    case 4:
      if (n->output_size() > 0 && rng() % 2) n->mutable_output()->RemoveLast();
      else n->add_output(rng() % 2 ? std::string() : "o" + std::to_string(rng() % 100));
      break;
    default:
      if (n->output_size() == 0) n->add_output();
      n->set_output(0, "o" + std::to_string(rng() % 100));
      break;
  }
}

void MutateNodes(Rng& rng, onnx::GraphProto& g) {
  const int nn = g.node_size();
  switch (rng() % 5) {
    case 0:  // a new node reading existing values
    {
      onnx::NodeProto* n = g.add_node();
      const bool custom = rng() % 4 == 0;
      n->set_op_type(custom ? PickPermDnnOp(rng) : Pick(rng, kOps));
      if (custom) n->set_domain(permdnn::formats::kDomain);
      for (int k = 0, ni = 1 + Below(rng, 3); k < ni; ++k) n->add_input(AnyName(rng, g));
      const std::string out = "n" + std::to_string(rng() % 1000);
      n->add_output(out);
      if (rng() % 2 && g.output_size() > 0) g.mutable_output(Below(rng, g.output_size()))->set_name(out);
      break;
    }
    case 1:
      if (nn > 1) g.mutable_node()->SwapElements(Below(rng, nn), Below(rng, nn));
      break;
    case 2:
      if (nn > 0) g.mutable_node()->DeleteSubrange(Below(rng, nn), 1);
      break;
    case 3:
      if (nn > 0) {
        onnx::NodeProto copy = g.node(Below(rng, nn));
        for (int k = 0; k < copy.output_size(); ++k) copy.set_output(k, copy.output(k) + "_d");
        *g.add_node() = copy;
      }
      break;
    default:
      if (nn > 0) {
        onnx::NodeProto* n = g.mutable_node(Below(rng, nn));
        if (rng() % 4 == 0) {
          n->set_domain(permdnn::formats::kDomain);
          n->set_op_type(PickPermDnnOp(rng));
        } else {
          n->clear_domain();
          n->set_op_type(Pick(rng, kOps));
        }
      }
      break;
  }
}

void MutateGraphOutputs(Rng& rng, onnx::GraphProto& g) {
  const int no = g.output_size();
  switch (rng() % 3) {
    case 0:
      if (no > 0) g.mutable_output(Below(rng, no))->set_name(AnyName(rng, g));
      break;
    case 1: g.add_output()->set_name(AnyName(rng, g)); break;
    default:
      if (no > 1) g.mutable_output()->DeleteSubrange(Below(rng, no), 1);
      break;
  }
}

void MutateOnce(Rng& rng, onnx::ModelProto& m) {
  onnx::GraphProto& g = *m.mutable_graph();
  switch (rng() % 10) {
    case 0:
    case 1: MutateValueInfo(rng, g); break;
    case 2: MutateInitializer(rng, g); break;
    case 3:
    case 4:
      if (g.node_size() > 0) MutateAttribute(rng, g.mutable_node(Below(rng, g.node_size())));
      break;
    case 5:
    case 6:
      if (g.node_size() > 0) MutateEdges(rng, g, g.mutable_node(Below(rng, g.node_size())));
      break;
    case 7: MutateNodes(rng, g); break;
    case 8: MutateGraphOutputs(rng, g); break;
    default: {
      const int versions[] = {1, 6, 7, 9, 11, 12, 13, 15, 18};
      onnx::OperatorSetIdProto* o = m.opset_import_size() > 0 ? m.mutable_opset_import(0) : m.add_opset_import();
      o->set_version(Pick(rng, versions));
      break;
    }
  }
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng rng(seed);
  onnx::ModelProto m;
  if (rng() % 8 == 0 || !m.ParseFromArray(data, static_cast<int>(size)))
    return LLVMFuzzerMutate(data, size, max_size);
  for (int k = 0, n = 1 + Below(rng, 3); k < n; ++k) MutateOnce(rng, m);
  std::string out;
  if (!m.SerializeToString(&out) || out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
}
