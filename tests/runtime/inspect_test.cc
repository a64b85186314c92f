// runtime/inspect.h and `permdnn sim --model`: the compressed FC layers of a
// model come back as the core matrices they were built from (PermDiagMatMul
// through the export path; BlockCirculantMatMul and SparseMatMul as nodes
// built here per the docs/runtime.md contract), bad weights give errors
// naming the node, the activation capture returns the values entering the
// layers, and the simulator runs the layers on them with the PermDNN
// engine's int16 output equal to the int16 kernel.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <onnx/onnx_pb.h>

#include "permdnn/core/dataset.h"
#include "permdnn/core/npy.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/inspect.h"
#include "permdnn/runtime/onnx_io.h"
#include "permdnn/sim/engine.h"
#include "permdnn/sim/model.h"
#include "permdnn/sim/tech.h"
#include "support/installed.h"

namespace permdnn::runtime {
namespace {

namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("permdnn_inspect_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d / "tensors");
  return d;
}

std::vector<float> Randn(std::size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A Fashion-MNIST sized mlp run directory: 784 -> fc1 (permdiag p) -> relu
// -> fc2 (dense, 10), exported with the real export path.
struct Mlp {
  PermDiagMatrix w1;
  std::vector<float> b1;
  int64_t in = 784, hidden = 48, out = 10;
};

Mlp WriteMlpRun(const fs::path& dir, int p) {
  Mlp m;
  m.w1 = PermDiagMatrix::Random(m.hidden, m.in, p, 11);
  m.b1 = Randn(m.hidden, 12, 0.1f);
  WriteNpy<float>((dir / "tensors/fc1.values.npy").string(), m.w1.values(), {m.w1.row_blocks(), m.w1.col_blocks(), p});
  WriteNpy<uint16_t>((dir / "tensors/fc1.offsets.npy").string(), m.w1.offsets(),
                     {m.w1.row_blocks(), m.w1.col_blocks()});
  WriteNpy<float>((dir / "tensors/fc1.bias.npy").string(), m.b1, {m.hidden});
  WriteNpy<float>((dir / "tensors/fc2.weight.npy").string(), Randn(m.out * m.hidden, 13, 0.3f), {m.out, m.hidden});
  WriteNpy<float>((dir / "tensors/fc2.bias.npy").string(), Randn(m.out, 14, 0.1f), {m.out});
  std::ofstream(dir / "model.json") << fmt::format(R"({{
  "format": "permdnn-run/1", "model": "mlp",
  "input": {{"shape": [1, 28, 28], "layout": "NCHW", "scale": 0.00392156862745098, "mean": 0.286, "std": 0.353}},
  "num_classes": 10,
  "layers": [
    {{"name": "flatten", "type": "flatten"}},
    {{"name": "fc1", "type": "linear", "in": 784, "out": {0}, "compress": {{"kind": "permdiag", "p": {1}}},
     "tensors": {{"values": "tensors/fc1.values.npy", "offsets": "tensors/fc1.offsets.npy", "bias": "tensors/fc1.bias.npy"}}}},
    {{"name": "relu1", "type": "relu"}},
    {{"name": "fc2", "type": "linear", "in": {0}, "out": 10, "compress": {{"kind": "dense"}},
     "tensors": {{"weight": "tensors/fc2.weight.npy", "bias": "tensors/fc2.bias.npy"}}}}
  ]}})",
                                                   m.hidden, p);
  return m;
}

// ---- Hand-built graph with the three compressed operators -----------------

void FloatInit(onnx::GraphProto* g, const std::string& name, const std::vector<float>& v, std::vector<int64_t> dims) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float x : v) t->add_float_data(x);
}
void IntInit(onnx::GraphProto* g, const std::string& name, int type, const std::vector<int64_t>& v) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  t->add_dims(static_cast<int64_t>(v.size()));
  for (int64_t x : v) {
    if (type == onnx::TensorProto::INT64)
      t->add_int64_data(x);
    else
      t->add_int32_data(static_cast<int32_t>(x));
  }
}
void Attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
onnx::NodeProto* Node(onnx::GraphProto* g, const std::string& name, const std::string& op,
                      std::vector<std::string> in, const std::string& out, bool custom) {
  auto* n = g->add_node();
  n->set_name(name);
  n->set_op_type(op);
  if (custom) n->set_domain("ai.permdnn");
  for (const auto& i : in) n->add_input(i);
  n->add_output(out);
  return n;
}

// Opsets 13 and ai.permdnn 1, one float graph input "x" of `shape`.
onnx::GraphProto* StartModel(onnx::ModelProto& m, const std::vector<int64_t>& shape) {
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  auto* custom = m.add_opset_import();
  custom->set_domain("ai.permdnn");
  custom->set_version(1);
  auto* g = m.mutable_graph();
  auto* in = g->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(1);
  for (int64_t d : shape) tt->mutable_shape()->add_dim()->set_dim_value(d);
  return g;
}

// x [batch, 12] -> fc1 PermDiagMatMul (p=4, 12 -> 8, bias) -> relu -> sp
// SparseMatMul (8 -> 6, 4-entry codebook, uint8 codes, no bias) -> relu -> bc
// BlockCirculantMatMul (p=3, 6 -> 5, bias) -> y.
struct ThreeOps {
  PermDiagMatrix w1;
  std::vector<float> b1, sparse_dense, codebook = {-0.5f, -0.25f, 0.25f, 0.75f};
  std::vector<int64_t> row_ptr, col_idx, codes;
  BlockCirculantMatrix w3;
  std::vector<float> b3;
  onnx::ModelProto model;
};

ThreeOps MakeThreeOps(int64_t batch) {
  ThreeOps t;
  t.w1 = PermDiagMatrix::Random(8, 12, 4, 21);
  t.b1 = Randn(8, 22, 0.1f);
  // 6 x 8 sparse: entry (r, c) present when (r + 2c) % 3 == 0.
  t.sparse_dense.assign(48, 0.0f);
  t.row_ptr.push_back(0);
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t c = 0; c < 8; ++c)
      if ((r + 2 * c) % 3 == 0) {
        const int64_t code = (r + c) % 4;
        t.col_idx.push_back(c);
        t.codes.push_back(code);
        t.sparse_dense[r * 8 + c] = t.codebook[code];
      }
    t.row_ptr.push_back(static_cast<int64_t>(t.col_idx.size()));
  }
  t.w3 = BlockCirculantMatrix::Random(5, 6, 3, 23);
  t.b3 = Randn(5, 24, 0.1f);

  auto* g = StartModel(t.model, {batch, 12});
  FloatInit(g, "fc1.values", {t.w1.values().begin(), t.w1.values().end()}, {2, 3, 4});
  IntInit(g, "fc1.offsets", onnx::TensorProto::INT64, {t.w1.offsets().begin(), t.w1.offsets().end()});
  FloatInit(g, "fc1.bias", t.b1, {8});
  IntInit(g, "sp.row_ptr", onnx::TensorProto::INT32, t.row_ptr);
  IntInit(g, "sp.col_idx", onnx::TensorProto::INT32, t.col_idx);
  IntInit(g, "sp.codes", onnx::TensorProto::UINT8, t.codes);
  FloatInit(g, "sp.codebook", t.codebook, {4});
  FloatInit(g, "bc.values", {t.w3.values().begin(), t.w3.values().end()}, {2, 2, 3});
  FloatInit(g, "bc.bias", t.b3, {5});
  auto* n1 = Node(g, "fc1", "PermDiagMatMul", {"x", "fc1.values", "fc1.offsets", "fc1.bias"}, "h1", true);
  Attr(n1, "p", 4);
  Attr(n1, "in_features", 12);
  Attr(n1, "out_features", 8);
  Node(g, "relu1", "Relu", {"h1"}, "r1", false);
  auto* n2 = Node(g, "sp", "SparseMatMul", {"r1", "sp.row_ptr", "sp.col_idx", "sp.codes", "", "sp.codebook"}, "h2",
                  true);
  Attr(n2, "in_features", 8);
  Attr(n2, "out_features", 6);
  Node(g, "relu2", "Relu", {"h2"}, "r2", false);
  auto* n3 = Node(g, "bc", "BlockCirculantMatMul", {"r2", "bc.values", "bc.bias"}, "y", true);
  Attr(n3, "p", 3);
  Attr(n3, "in_features", 6);
  Attr(n3, "out_features", 5);
  g->add_output()->set_name("y");
  return t;
}

std::string Bytes(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  return s;
}

void IntsAttr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

// x [batch, 6, 5, 6] -> c1 PermDiagConv (p=4, 6 -> 5 channels: both padded,
// 3x3, pads 1, bias) -> relu -> c2 SparseConv (5 -> 4, 2x2 stride 2, no
// bias) -> relu -> c3 BlockCirculantConv (p=2, 4 -> 3, 1x3 with dilation
// 2, pads 0,1,0,1, bias) -> y [batch, 3, 2, 1]. Every stored value is
// nonzero, including the padded channels the runtime never reads.
onnx::ModelProto MakeThreeConvs(int64_t batch) {
  onnx::ModelProto m;
  auto* g = StartModel(m, {batch, 6, 5, 6});
  FloatInit(g, "c1.values", Randn(2 * 2 * 4 * 9, 51, 0.3f), {2, 2, 4, 3, 3});
  IntInit(g, "c1.offsets", onnx::TensorProto::INT64, {1, 3, 0, 2});
  FloatInit(g, "c1.bias", Randn(5, 52, 0.1f), {5});
  auto* n1 = Node(g, "c1", "PermDiagConv", {"x", "c1.values", "c1.offsets", "c1.bias"}, "h1", true);
  Attr(n1, "p", 4);
  Attr(n1, "in_channels", 6);
  Attr(n1, "out_channels", 5);
  IntsAttr(n1, "kernel_shape", {3, 3});
  IntsAttr(n1, "pads", {1, 1, 1, 1});
  Node(g, "relu1", "Relu", {"h1"}, "r1", false);
  // 4 x 20 CSR: entry (r, c) present when (3r + c) % 4 == 1.
  std::vector<int64_t> row_ptr = {0}, col_idx;
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 20; ++c)
      if ((3 * r + c) % 4 == 1) col_idx.push_back(c);
    row_ptr.push_back(static_cast<int64_t>(col_idx.size()));
  }
  IntInit(g, "c2.row_ptr", onnx::TensorProto::INT32, row_ptr);
  IntInit(g, "c2.col_idx", onnx::TensorProto::INT32, col_idx);
  FloatInit(g, "c2.values", Randn(col_idx.size(), 53, 0.5f), {static_cast<int64_t>(col_idx.size())});
  auto* n2 = Node(g, "c2", "SparseConv", {"r1", "c2.row_ptr", "c2.col_idx", "c2.values"}, "h2", true);
  Attr(n2, "in_channels", 5);
  Attr(n2, "out_channels", 4);
  IntsAttr(n2, "kernel_shape", {2, 2});
  IntsAttr(n2, "strides", {2, 2});
  Node(g, "relu2", "Relu", {"h2"}, "r2", false);
  FloatInit(g, "c3.values", Randn(2 * 2 * 2 * 3, 54, 0.5f), {2, 2, 2, 1, 3});
  FloatInit(g, "c3.bias", Randn(3, 55, 0.1f), {3});
  auto* n3 = Node(g, "c3", "BlockCirculantConv", {"r2", "c3.values", "c3.bias"}, "y", true);
  Attr(n3, "p", 2);
  Attr(n3, "in_channels", 4);
  Attr(n3, "out_channels", 3);
  IntsAttr(n3, "dilations", {1, 2});
  IntsAttr(n3, "pads", {0, 1, 0, 1});
  g->add_output()->set_name("y");
  return m;
}

TEST(Inspect, PermDiagLayerFromExport) {
  const fs::path dir = TempDir("export");
  const Mlp m = WriteMlpRun(dir, 8);
  ExportRun(dir.string(), (dir / "m.onnx").string());
  const ModelInspection ins = InspectCompressedLayers(ReadFileBytes((dir / "m.onnx").string()), "m.onnx");
  ASSERT_EQ(ins.layers.size(), 1u);
  const CompressedFcLayer& l = ins.layers[0];
  EXPECT_EQ(l.node, "fc1");
  EXPECT_EQ(l.op_type, "PermDiagMatMul");
  EXPECT_EQ(l.kind, formats::Kind::kPermDiag);
  EXPECT_EQ(l.in_features, 784);
  EXPECT_EQ(l.out_features, m.hidden);
  EXPECT_EQ(l.p, 8);
  ASSERT_TRUE(l.permdiag.has_value());
  EXPECT_TRUE(std::equal(l.permdiag->values().begin(), l.permdiag->values().end(), m.w1.values().begin()));
  EXPECT_TRUE(std::equal(l.permdiag->offsets().begin(), l.permdiag->offsets().end(), m.w1.offsets().begin()));
  EXPECT_EQ(l.bias, m.b1);
  EXPECT_FALSE(l.input.empty());
  ASSERT_EQ(ins.skipped.size(), 1u);
  EXPECT_EQ(ins.skipped[0].node, "fc2");
  EXPECT_NE(ins.skipped[0].reason.find("dense"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Inspect, ThreeOperatorsFromTheContract) {
  const ThreeOps t = MakeThreeOps(2);
  const ModelInspection ins = InspectCompressedLayers(Bytes(t.model), "three");
  ASSERT_EQ(ins.layers.size(), 3u);
  EXPECT_EQ(ins.graph_inputs, std::vector<std::string>{"x"});
  EXPECT_EQ(ins.layers[0].node, "fc1");
  EXPECT_EQ(ins.layers[0].input, "x");
  EXPECT_EQ(ins.layers[0].ToDense(), t.w1.ToDense());
  EXPECT_EQ(ins.layers[0].bias, t.b1);
  EXPECT_EQ(ins.layers[1].node, "sp");
  EXPECT_EQ(ins.layers[1].kind, formats::Kind::kCsrCodebook);
  EXPECT_EQ(ins.layers[1].input, "r1");
  EXPECT_EQ(ins.layers[1].codebook_size, 4);
  EXPECT_EQ(ins.layers[1].ToDense(), t.sparse_dense);  // codebook decoded
  EXPECT_TRUE(ins.layers[1].bias.empty());
  EXPECT_EQ(ins.layers[2].node, "bc");
  EXPECT_EQ(ins.layers[2].kind, formats::Kind::kCirculant);
  EXPECT_EQ(ins.layers[2].p, 3);
  EXPECT_EQ(ins.layers[2].ToDense(), t.w3.ToDense());
  EXPECT_EQ(ins.layers[2].bias, t.b3);
}

TEST(Inspect, CaptureRunsOnlyTheNodesTheValuesNeed) {
  const int64_t batch = 3;
  const ThreeOps t = MakeThreeOps(batch);
  const std::string bytes = Bytes(t.model);
  // r1 needs fc1 and relu1 only: the sparse and circulant nodes are dropped,
  // so the capture does not depend on the runtime executing them.
  onnx::ModelProto pruned;
  ASSERT_TRUE(pruned.ParseFromString(WithCapturedOutputs(bytes, "three", {"r1"})));
  ASSERT_EQ(pruned.graph().node_size(), 2);
  EXPECT_EQ(pruned.graph().node(1).name(), "relu1");
  ASSERT_EQ(pruned.graph().output_size(), 1);
  EXPECT_EQ(pruned.graph().output(0).name(), "r1");

  const std::vector<float> x = Randn(batch * 12, 31);
  const std::vector<Tensor> got =
      CaptureValues(bytes, "three", {Tensor::Float({batch, 12}, x)}, {"x", "r1"});
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(std::vector<float>(got[0].floats().begin(), got[0].floats().end()), x);
  ASSERT_EQ(got[1].shape(), (std::vector<int64_t>{batch, 8}));
  const std::vector<float> w1 = t.w1.ToDense();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < 8; ++r) {
      double s = t.b1[r];
      for (int64_t c = 0; c < 12; ++c) s += double(w1[r * 12 + c]) * x[b * 12 + c];
      ASSERT_NEAR(got[1].f()[b * 8 + r], std::max(0.0, s), 1e-5) << "sample " << b << " row " << r;
    }
  EXPECT_NE(ErrorOf([&] { WithCapturedOutputs(bytes, "three", {"nope"}); }).find("'nope'"), std::string::npos);
}

TEST(Inspect, BadWeightsNameTheNode) {
  {
    ThreeOps t = MakeThreeOps(1);
    auto* codes = t.model.mutable_graph()->mutable_initializer(5);
    ASSERT_EQ(codes->name(), "sp.codes");
    codes->set_int32_data(0, 4);  // K = 4
    const std::string e = ErrorOf([&] { InspectCompressedLayers(Bytes(t.model), "bad"); });
    EXPECT_NE(e.find("'sp'"), std::string::npos) << e;
    EXPECT_NE(e.find("codebook"), std::string::npos) << e;
  }
  {
    ThreeOps t = MakeThreeOps(1);
    auto* col = t.model.mutable_graph()->mutable_initializer(4);
    ASSERT_EQ(col->name(), "sp.col_idx");
    // Row 0 holds columns 0 and 3 (and 6): swap the first two -> unsorted.
    const int32_t a = col->int32_data(0), b = col->int32_data(1);
    col->set_int32_data(0, b);
    col->set_int32_data(1, a);
    const std::string e = ErrorOf([&] { InspectCompressedLayers(Bytes(t.model), "bad"); });
    EXPECT_NE(e.find("'sp'"), std::string::npos) << e;
  }
  {
    ThreeOps t = MakeThreeOps(1);
    t.model.mutable_graph()->mutable_initializer(1)->set_int64_data(0, 4);  // offset == p
    const std::string e = ErrorOf([&] { InspectCompressedLayers(Bytes(t.model), "bad"); });
    EXPECT_NE(e.find("'fc1'"), std::string::npos) << e;
    EXPECT_NE(e.find("offset"), std::string::npos) << e;
  }
  {
    ThreeOps t = MakeThreeOps(1);
    t.model.mutable_graph()->mutable_node(4)->set_input(1, "r2");  // circulant values not an initializer
    const std::string e = ErrorOf([&] { InspectCompressedLayers(Bytes(t.model), "bad"); });
    EXPECT_NE(e.find("'bc'"), std::string::npos) << e;
    EXPECT_NE(e.find("not an initializer"), std::string::npos) << e;
  }
  EXPECT_NE(ErrorOf([] { InspectCompressedLayers("not a model", "junk"); }), "");
}

// The im2col matrices of the three conv operators times the im2col columns
// of the captured inputs reproduce the runtime's conv outputs.
TEST(Inspect, ConvLayersAreTheirIm2ColMatrices) {
  const int64_t batch = 2;
  const std::string bytes = Bytes(MakeThreeConvs(batch));
  const ModelInspection ins = InspectCompressedLayers(bytes, "convs");
  EXPECT_TRUE(ins.skipped.empty());
  ASSERT_EQ(ins.layers.size(), 3u);
  const CompressedFcLayer &c1 = ins.layers[0], &c2 = ins.layers[1], &c3 = ins.layers[2];
  ASSERT_TRUE(c1.conv && c2.conv && c3.conv);
  EXPECT_EQ(c1.kind, formats::Kind::kPermDiag);
  EXPECT_EQ(c1.out_features, 5);
  EXPECT_EQ(c1.in_features, 9 * 2 * 4);  // taps x nb x p
  ASSERT_TRUE(c1.permdiag.has_value());
  EXPECT_EQ(c1.permdiag->p(), 4);
  EXPECT_EQ(c1.conv->Describe(), "3x3 pads 1,1,1,1");
  EXPECT_EQ(c2.kind, formats::Kind::kCsr);
  EXPECT_EQ(c2.in_features, 5 * 4);  // in x taps, as stored
  EXPECT_EQ(c2.out_features, 4);
  EXPECT_EQ(c3.kind, formats::Kind::kCirculant);
  EXPECT_EQ(c3.in_features, 3 * 2 * 2);
  EXPECT_EQ(c3.conv->kernel_shape, (std::vector<int64_t>{1, 3}));

  const std::vector<float> x = Randn(batch * 6 * 5 * 6, 56);
  const std::vector<Tensor> got =
      CaptureValues(bytes, "convs", {Tensor::Float({batch, 6, 5, 6}, x)}, {"x", "h1", "r1", "h2", "r2", "y"});
  ASSERT_EQ(got[5].shape(), (std::vector<int64_t>{batch, 3, 2, 1}));
  for (int k = 0; k < 3; ++k) {
    const CompressedFcLayer& l = ins.layers[k];
    const Tensor &in = got[2 * k], &out = got[2 * k + 1];
    const std::vector<float> w = l.ToDense();
    const int64_t m = l.out_features, n = l.in_features, per_sample = in.size() / batch;
    for (int64_t s = 0; s < batch; ++s) {
      const ConvColumns cols = ConvIm2Col(l, in.shape(), {in.f() + s * per_sample, static_cast<std::size_t>(per_sample)});
      ASSERT_EQ(cols.out_spatial, std::vector<int64_t>(out.shape().begin() + 2, out.shape().end())) << l.node;
      ASSERT_EQ(cols.length, n);
      for (int64_t q = 0; q < cols.positions; ++q)
        for (int64_t o = 0; o < m; ++o) {
          double acc = l.bias.empty() ? 0.0 : l.bias[o];
          double mag = std::fabs(acc);
          for (int64_t j = 0; j < n; ++j) {
            acc += double(w[o * n + j]) * cols.column(q)[j];
            mag += std::fabs(double(w[o * n + j]) * cols.column(q)[j]);
          }
          const float want = out.f()[(s * m + o) * cols.positions + q];
          ASSERT_NEAR(acc, want, 1e-5 * (1.0 + mag)) << l.node << " sample " << s << " out " << o << " position " << q;
        }
    }
  }
  // Padding positions are zero activations: c1's corner position reads
  // 5 of its 9 taps from the padding.
  const ConvColumns cols = ConvIm2Col(c1, got[0].shape(), {got[0].f(), static_cast<std::size_t>(6 * 5 * 6)});
  int64_t zeros = 0;
  for (float v : cols.column(0)) zeros += v == 0.0f;
  EXPECT_EQ(zeros, 5 * 8 + 4 * 2);  // 5 padded taps x 8 channels + 4 taps x 2 padded channels
  EXPECT_NE(ErrorOf([&] { ConvIm2Col(c1, {batch, 5, 5, 6}, cols.data); }).find("'c1'"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { ConvIm2Col(ins.layers[0], {batch, 6, 5}, cols.data); }).find("expected"), std::string::npos);
}

TEST(Inspect, BadConvNodesNameTheNode) {
  {
    onnx::ModelProto m = MakeThreeConvs(1);
    IntsAttr(m.mutable_graph()->mutable_node(0), "kernel_shape", {2, 2});  // a second, different kernel_shape
    m.mutable_graph()->mutable_node(0)->mutable_attribute()->DeleteSubrange(3, 1);
    const std::string e = ErrorOf([&] { InspectCompressedLayers(Bytes(m), "bad"); });
    EXPECT_NE(e.find("'c1'"), std::string::npos) << e;
    EXPECT_NE(e.find("kernel_shape"), std::string::npos) << e;
  }
  {
    onnx::ModelProto m = MakeThreeConvs(1);
    m.mutable_graph()->mutable_node(2)->mutable_attribute()->DeleteSubrange(2, 1);  // c2 kernel_shape
    const std::string e = ErrorOf([&] { InspectCompressedLayers(Bytes(m), "bad"); });
    EXPECT_NE(e.find("'c2'"), std::string::npos) << e;
    EXPECT_NE(e.find("kernel_shape"), std::string::npos) << e;
  }
  {
    onnx::ModelProto m = MakeThreeConvs(1);
    m.mutable_graph()->mutable_initializer(0)->mutable_dims()->Set(2, 2);  // values [2, 2, 2, 3, 3]
    const std::string e = ErrorOf([&] { InspectCompressedLayers(Bytes(m), "bad"); });
    EXPECT_NE(e.find("'c1'"), std::string::npos) << e;
    EXPECT_NE(e.find("values"), std::string::npos) << e;
  }
}

// The simulator on the inspected layers: every engine on every format, the
// PermDNN engine's int16 output equal to kernels::PermDiagMatVecI16 on
// every sample, and the measured activation density in the records.
TEST(SimModel, ThreeFormatsOnCapturedActivations) {
  const int64_t batch = 4;
  const ThreeOps t = MakeThreeOps(batch);
  ModelInspection ins = InspectCompressedLayers(Bytes(t.model), "three");
  std::vector<float> x = Randn(batch * 12, 41);
  for (std::size_t k = 0; k < x.size(); k += 3) x[k] = 0.0f;  // a third of the inputs are zero
  const std::vector<Tensor> acts = CaptureValues(Bytes(t.model), "three", {Tensor::Float({batch, 12}, x)}, {"x", "r1"});
  std::vector<sim::ModelLayer> layers;
  for (int k = 0; k < 3; ++k) {
    sim::ModelLayer m;
    m.name = ins.layers[k].node;
    m.permdiag = ins.layers[k].permdiag;
    m.circulant = ins.layers[k].circulant;
    m.sparse = ins.layers[k].sparse;
    const int64_t n = ins.layers[k].in_features;
    for (int64_t s = 0; s < batch; ++s) {
      std::vector<float> v(static_cast<std::size_t>(n), 0.0f);
      if (k < 2)
        std::copy(acts[k].f() + s * n, acts[k].f() + (s + 1) * n, v.begin());
      else
        for (int64_t j = 0; j < n; ++j) v[j] = (s + j) % 2 ? 0.5f + 0.1f * j : 0.0f;  // circulant input
      m.inputs.push_back(v);
    }
    layers.push_back(std::move(m));
  }
  const sim::ComparisonResult res = sim::RunModelComparison(layers, {});
  EXPECT_EQ(res.functional_checks, 3);
  EXPECT_EQ(res.functional_mismatches, 0);
  ASSERT_EQ(res.records.size(), 9u);
  EXPECT_EQ(res.samples, batch);
  EXPECT_FALSE(res.compare_to_published);
  for (const auto& r : res.records) {
    EXPECT_FALSE(r.source.empty()) << r.layer << " " << r.arch;
    EXPECT_EQ(r.samples, batch);
    EXPECT_GT(r.cycles, 0);
  }
  // fc1's input density is measured: 2/3 of x is nonzero (values ~N(0,1)
  // quantized to int16 are never 0 at the chosen scale).
  int64_t nz = 0;
  for (float v : x) nz += v != 0.0f;
  EXPECT_NEAR(res.records[0].act_density, static_cast<double>(nz) / x.size(), 1e-9);
  EXPECT_EQ(res.records[0].arch, "permdnn");
  EXPECT_NE(res.records[0].source.find("its permdiag"), std::string::npos);
  EXPECT_NE(res.records[4].source.find("its sparse"), std::string::npos);  // sp on eie
  EXPECT_NE(res.records[3].source.find("projection"), std::string::npos);  // sp on permdnn
  EXPECT_NE(res.records[8].source.find("its circulant"), std::string::npos);
  // Wrong activation length: an error naming the layer.
  layers[1].inputs[0].pop_back();
  EXPECT_NE(ErrorOf([&] { sim::RunModelComparison(layers, {}); }).find("layer sp"), std::string::npos);
}

// The conv layers on the engines: one product per im2col column, records
// per inference (the per-column mean times the positions), and the PermDNN
// engine's int16 output on a conv matrix equal to the int16 kernel.
TEST(SimModel, ConvLayersOnTheirIm2ColColumns) {
  const int64_t batch = 2;
  const std::string bytes = Bytes(MakeThreeConvs(batch));
  ModelInspection ins = InspectCompressedLayers(bytes, "convs");
  const std::vector<float> x = Randn(batch * 6 * 5 * 6, 61);
  const std::vector<Tensor> acts = CaptureValues(bytes, "convs", {Tensor::Float({batch, 6, 5, 6}, x)}, {"x", "r1", "r2"});
  std::vector<sim::ModelLayer> layers;
  for (int k = 0; k < 3; ++k) {
    const CompressedFcLayer& l = ins.layers[k];
    sim::ModelLayer m;
    m.name = l.node;
    m.permdiag = l.permdiag;
    m.circulant = l.circulant;
    m.sparse = l.sparse;
    const int64_t per_sample = acts[k].size() / batch;
    for (int64_t s = 0; s < batch; ++s) {
      const ConvColumns cols =
          ConvIm2Col(l, acts[k].shape(), {acts[k].f() + s * per_sample, static_cast<std::size_t>(per_sample)});
      m.positions = cols.positions;
      for (int64_t q = 0; q < cols.positions; ++q) m.inputs.emplace_back(cols.column(q).begin(), cols.column(q).end());
    }
    m.samples = static_cast<int>(batch);
    m.note = "conv test";
    layers.push_back(std::move(m));
  }
  const sim::ComparisonResult res = sim::RunModelComparison(layers, {});
  EXPECT_EQ(res.functional_checks, 3);
  EXPECT_EQ(res.functional_mismatches, 0);
  EXPECT_EQ(res.samples, batch);
  ASSERT_EQ(res.records.size(), 9u);
  for (const auto& r : res.records) {
    EXPECT_EQ(r.samples, batch) << r.layer << " " << r.arch;
    EXPECT_NE(r.source.find("conv test"), std::string::npos) << r.source;
  }
  // Per inference = the sum over the positions: the same columns as FC
  // "samples" (positions 1) give 1/positions of the cycles and energy.
  sim::ModelLayer one = layers[0];
  one.positions = 1;
  one.samples = 0;
  one.note.clear();
  const sim::ComparisonResult per_column = sim::RunModelComparison({one}, {});
  const double P = static_cast<double>(layers[0].positions);
  ASSERT_EQ(P, 30.0);  // 5 x 6 output positions
  for (int e = 0; e < 3; ++e) {
    const auto &conv = res.records[e], &fc = per_column.records[e];
    EXPECT_NEAR(static_cast<double>(conv.cycles), P * fc.cycles, P) << conv.arch;
    EXPECT_NEAR(conv.energy_uj, P * fc.energy_uj, 1e-6 * P * fc.energy_uj) << conv.arch;
    EXPECT_NEAR(conv.dense_equiv_gops, fc.dense_equiv_gops, 0.05 * fc.dense_equiv_gops) << conv.arch;
    EXPECT_NEAR(conv.act_density, fc.act_density, 1e-12) << conv.arch;
  }
  // Bit-exact int16 on c1's matrix and a column with padding zeros: the
  // PermDNN engine against kernels::PermDiagMatVecI16 (padding zeros are
  // skipped, not multiplied, and the output is still exact).
  std::map<std::string, std::string> sources;
  sim::LayerWorkload w = sim::BuildModelWorkload(layers[0], false, &sources);
  sim::SetModelInput(w, layers[0].inputs[0]);
  EXPECT_LT(w.act_density(), 0.75);  // the corner column reads padding
  const auto engine = sim::MakeEngine("permdnn", nlohmann::json::object(), sim::TechTable::Load(sim::TechTable::DefaultPath()));
  const sim::LayerResult r = engine->Run(w, nullptr);
  std::vector<int16_t> want(static_cast<std::size_t>(w.m()));
  kernels::PermDiagMatVecI16(*w.weights, w.x, {}, w.output_shift, want);
  ASSERT_EQ(r.output.size(), want.size());
  EXPECT_EQ(r.output, want);
  int64_t nonzero = 0;
  for (int16_t v : want) nonzero += v != 0;
  EXPECT_GT(nonzero, 0);
  EXPECT_EQ(r.useful_macs, [&] {  // nonzero weight x nonzero input only
    int64_t macs = 0;
    const std::vector<float> d = layers[0].permdiag->ToDense();
    for (int64_t o = 0; o < w.m(); ++o)
      for (int64_t j = 0; j < w.n(); ++j) macs += d[o * w.n() + j] != 0.0f && w.x[j] != 0;
    return macs;
  }());
}

// Exports the run directory `dir` to dir/m.onnx and runs `permdnn sim
// --model dir/m.onnx --samples N --json dir/sim.json`; true when it exits
// 0, with its output in *text.
bool ExportAndSimulate(const fs::path& dir, int samples, std::string* text) {
  ExportRun(dir.string(), (dir / "m.onnx").string());
  const fs::path log = dir / "log.txt";
  const std::string cmd = std::string(PERMDNN_BIN) + " sim --model " + (dir / "m.onnx").string() + " --samples " +
                          std::to_string(samples) + " --json " + (dir / "sim.json").string() + " > " + log.string() +
                          " 2>&1";
  const int st = std::system(cmd.c_str());
  std::stringstream out;
  out << std::ifstream(log).rdbuf();
  *text = out.str();
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

// `permdnn sim --model` end to end on Fashion-MNIST test images.
TEST(SimModel, CliOnExportedModel) {
  ASSERT_TRUE(permdnn::testing::Installed(fs::path(kDefaultFashionMnistDir) / "t10k-images-idx3-ubyte.gz",
                                          permdnn::testing::kFashionMnistPackage));
  const fs::path dir = TempDir("cli");
  WriteMlpRun(dir, 8);
  const fs::path json = dir / "sim.json";
  std::string text;
  ASSERT_TRUE(ExportAndSimulate(dir, 3, &text)) << text;
  EXPECT_NE(text.find("Functional: PermDNN engine int16 output == kernels::PermDiagMatVecI16 on 1/1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("skipped fc2 (Gemm)"), std::string::npos) << text;
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(json));
  ASSERT_EQ(j["records"].size(), 3u);
  EXPECT_EQ(j["records"][0]["layer"], "fc1");
  EXPECT_EQ(j["records"][0]["samples"], 3);
  // The first layer sees the normalized image: (0 - mean)/std != 0, dense.
  EXPECT_GT(j["records"][0]["act_density"].get<double>(), 0.9);
  EXPECT_EQ(j["model"]["samples"], 3);
  fs::remove_all(dir);
}

// `permdnn sim --model` on an exported cnn whose conv layers are
// compressed: conv1 permdiag (p=4, 1 -> 8 channels, so 3 of 4 channels of
// each block are padding; 784 output positions, more than the default 256
// simulated per image) and conv2 circulant (p=4, 8 -> 8, 196 positions).
// A ternary layer (permdnn compress ... ternary) runs on the adder array and
// its 16-bit MAC twin, added to the default architectures, with the PermDNN
// engine at equal weight bytes (issue 18, point 4).
TEST(SimModel, CliSimulatesTernaryLayersOnTheAdderArray) {
  ASSERT_TRUE(permdnn::testing::Installed(fs::path(kDefaultFashionMnistDir) / "t10k-images-idx3-ubyte.gz",
                                          permdnn::testing::kFashionMnistPackage));
  const fs::path dir = TempDir("cliternary");
  WriteMlpRun(dir, 8);
  ExportRun(dir.string(), (dir / "m.onnx").string());
  const fs::path t = dir / "t.onnx", log = dir / "log.txt", json = dir / "sim.json";
  const std::string cmd = std::string(PERMDNN_BIN) + " compress " + (dir / "m.onnx").string() +
                          " --compress fc2=ternary:group=16:density=0.5 --out " + t.string() + " > " + log.string() +
                          " 2>&1 && " + PERMDNN_BIN + " sim --model " + t.string() + " --samples 2 --json " +
                          json.string() + " >> " + log.string() + " 2>&1";
  const int st = std::system(cmd.c_str());
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << text.str();
  EXPECT_NE(text.str().find("ternary group_len=16 (50% of the groups kept)"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("Adder array (ternary) vs the same array with 16-bit MACs"), std::string::npos)
      << text.str();
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(json));
  std::set<std::string> archs;
  for (const auto& r : j["records"]) {
    archs.insert(r["arch"].get<std::string>());
    if (r["arch"] == "adder") {
      EXPECT_EQ(r["counters"]["groups_streamed"].get<int64_t>() * 2, r["counters"]["groups_total"].get<int64_t>());
      EXPECT_GT(r["energy_uj"].get<double>(), 0);
    }
    if (r["arch"] == "permdnn" && r["layer"] == "fc2")
      EXPECT_NE(r["source"].get<std::string>().find("at equal weight bytes"), std::string::npos) << r["source"];
  }
  EXPECT_EQ(archs, (std::set<std::string>{"permdnn", "eie", "circnn", "adder", "mac16"}));
}

TEST(SimModel, CliSimulatesConvLayers) {
  ASSERT_TRUE(permdnn::testing::Installed(fs::path(kDefaultFashionMnistDir) / "t10k-images-idx3-ubyte.gz",
                                          permdnn::testing::kFashionMnistPackage));
  const fs::path dir = TempDir("cliconv");
  const int64_t p = 4;
  std::vector<float> v1 = Randn(2 * 1 * p * 9, 71, 0.5f);
  const std::vector<uint16_t> off1 = {1, 3};
  for (int64_t I = 0; I < 2; ++I)
    for (int64_t c = 0; c < p; ++c)
      if ((c + off1[I]) % p != 0) std::fill_n(v1.begin() + (I * p + c) * 9, 9, 0.0f);  // in channel >= 1
  WriteNpy<float>((dir / "tensors/conv1.values.npy").string(), v1, {2, 1, p, 3, 3});
  WriteNpy<uint16_t>((dir / "tensors/conv1.offsets.npy").string(), off1, {2, 1});
  WriteNpy<float>((dir / "tensors/conv2.values.npy").string(), Randn(2 * 2 * p * 9, 72, 0.2f), {2, 2, p, 3, 3});
  WriteNpy<float>((dir / "tensors/conv2.bias.npy").string(), Randn(8, 73, 0.1f), {8});
  WriteNpy<float>((dir / "tensors/fc.weight.npy").string(), Randn(10 * 8 * 14 * 14, 74, 0.05f), {10, 8 * 14 * 14});
  std::ofstream(dir / "model.json") << R"({
  "format": "permdnn-run/1", "model": "cnn",
  "input": {"shape": [1, 28, 28], "layout": "NCHW", "scale": 0.00392156862745098, "mean": 0.286, "std": 0.353},
  "num_classes": 10,
  "layers": [
    {"name": "conv1", "type": "conv2d", "in": 1, "out": 8, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
     "compress": {"kind": "permdiag", "p": 4},
     "tensors": {"values": "tensors/conv1.values.npy", "offsets": "tensors/conv1.offsets.npy"}},
    {"name": "relu1", "type": "relu"},
    {"name": "pool1", "type": "maxpool2d", "kernel": [2, 2], "stride": [2, 2]},
    {"name": "conv2", "type": "conv2d", "in": 8, "out": 8, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
     "compress": {"kind": "circulant", "p": 4},
     "tensors": {"values": "tensors/conv2.values.npy", "bias": "tensors/conv2.bias.npy"}},
    {"name": "relu2", "type": "relu"},
    {"name": "flatten", "type": "flatten"},
    {"name": "fc", "type": "linear", "in": 1568, "out": 10, "compress": {"kind": "dense"},
     "tensors": {"weight": "tensors/fc.weight.npy"}}
  ]})";
  const fs::path json = dir / "sim.json";
  std::string text;
  ASSERT_TRUE(ExportAndSimulate(dir, 2, &text)) << text;
  EXPECT_EQ(text.find("skipped conv"), std::string::npos) << text;
  EXPECT_NE(text.find("conv 3x3 stride 1,1 pads 1,1,1,1: sum over 784 output positions (256 simulated per sample"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sum over 196 output positions\n"), std::string::npos) << text;  // all simulated
  EXPECT_NE(text.find("Functional: PermDNN engine int16 output == kernels::PermDiagMatVecI16 on 2/2"),
            std::string::npos)
      << text;
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(json));
  ASSERT_EQ(j["records"].size(), 6u);
  const auto& c1 = j["records"][0];
  EXPECT_EQ(c1["layer"], "conv1");
  EXPECT_EQ(c1["arch"], "permdnn");
  EXPECT_EQ(c1["m"], 8);
  EXPECT_EQ(c1["n"], 9 * p);  // taps x one padded channel block
  EXPECT_EQ(c1["samples"], 2);
  // conv1's columns: 1 real channel of 4 per tap, and the image's border
  // windows read padding: density below 1/4.
  EXPECT_LT(c1["act_density"].get<double>(), 0.25);
  EXPECT_GT(c1["act_density"].get<double>(), 0.2);
  // Per inference: hundreds of products, not one.
  EXPECT_GT(c1["cycles"].get<int64_t>(), 784);
  EXPECT_EQ(j["records"][3]["layer"], "conv2");
  EXPECT_EQ(j["records"][3]["n"], 9 * 8);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace permdnn::runtime
