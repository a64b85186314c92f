// The dense CNN path: load-time fusion (Conv + BatchNormalization + Add +
// Relu / Clip, Identity / Dropout removed), oneDNN in each activation layout
// (channels-last, blocked, plain) against the reference path
// (Options::reference: the file's graph node for node on im2col + OpenBLAS
// and plain loops), at several batch sizes.
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "permdnn/core/error.h"
#include "permdnn/kernels/permdiag_conv.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "tests/support/compare.h"

namespace permdnn::runtime {
namespace {

std::vector<float> Randn(std::size_t n, uint64_t seed, float scale = 1.0f, float mean = 0.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// A small ModelProto builder: one float input [N, C, H, W...] with an open batch.
class Builder {
 public:
  Builder(std::vector<int64_t> in_shape, int opset = 13) {
    m_.set_ir_version(8);
    m_.add_opset_import()->set_version(opset);
    auto* pd = m_.add_opset_import();
    pd->set_domain("ai.permdnn");
    pd->set_version(1);
    g_ = m_.mutable_graph();
    g_->set_name("cnn");
    auto* in = g_->add_input();
    in->set_name("x");
    auto* tt = in->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    for (std::size_t d = 1; d < in_shape.size(); ++d) tt->mutable_shape()->add_dim()->set_dim_value(in_shape[d]);
  }
  std::string Init(const std::string& name, std::vector<int64_t> dims, std::vector<float> v) {
    auto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float f : v) t->add_float_data(f);
    return name;
  }
  onnx::NodeProto& Node(const std::string& op, std::vector<std::string> ins, const std::string& out) {
    onnx::NodeProto& n = *g_->add_node();
    n.set_op_type(op);
    n.set_name(out);
    for (const auto& i : ins) n.add_input(i);
    n.add_output(out);
    return n;
  }
  static void Ints(onnx::NodeProto& n, const std::string& name, std::vector<int64_t> v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void Int(onnx::NodeProto& n, const std::string& name, int64_t v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  // Conv with random weights (and bias unless no_bias); k x k, same padding.
  std::string Conv(const std::string& x, const std::string& out, int64_t cin, int64_t cout, int64_t k,
                   int64_t stride = 1, int64_t group = 1, bool bias = true, uint64_t seed = 1) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(cin / group * k * k));
    std::vector<std::string> ins = {x, Init(out + ".w", {cout, cin / group, k, k}, Randn(cout * cin / group * k * k, seed, scale))};
    if (bias) ins.push_back(Init(out + ".b", {cout}, Randn(cout, seed + 1, 0.1f)));
    onnx::NodeProto& n = Node("Conv", ins, out);
    Ints(n, "kernel_shape", {k, k});
    Ints(n, "pads", {k / 2, k / 2, k / 2, k / 2});
    Ints(n, "strides", {stride, stride});
    if (group != 1) Int(n, "group", group);
    return out;
  }
  // PermDiagConv with random values, seeded offsets and a bias; k x k, same padding.
  // column: shared offsets (offset_layout "column", one offset per block column).
  std::string PermDiagConv(const std::string& x, const std::string& out, int64_t cin, int64_t cout, int64_t k,
                           int64_t p, int64_t stride, uint64_t seed, bool column = false) {
    const int64_t mb = (cout + p - 1) / p, nb = (cin + p - 1) / p;
    std::vector<float> values = Randn(mb * nb * p * k * k, seed, 1.0f / std::sqrt(static_cast<float>(nb * k * k)));
    // Padded positions (out or in channel beyond the layer) must hold zeros.
    std::vector<int64_t> offsets(mb * nb);
    for (int64_t b = 0; b < mb * nb; ++b) offsets[b] = static_cast<int64_t>(((column ? b % nb : b) * 5 + seed) % p);
    for (int64_t I = 0; I < mb; ++I)
      for (int64_t J = 0; J < nb; ++J)
        for (int64_t c = 0; c < p; ++c)
          if (I * p + c >= cout || J * p + (c + offsets[I * nb + J]) % p >= cin)
            for (int64_t t = 0; t < k * k; ++t) values[((I * nb + J) * p + c) * k * k + t] = 0.0f;
    auto* o = g_->add_initializer();
    o->set_name(out + ".offsets");
    o->set_data_type(onnx::TensorProto::INT64);
    if (!column) o->add_dims(mb);
    o->add_dims(nb);
    for (int64_t b = 0; b < (column ? nb : mb * nb); ++b) o->add_int64_data(offsets[b]);
    onnx::NodeProto& n = Node("PermDiagConv",
                              {x, Init(out + ".values", {mb, nb, p, k, k}, values), out + ".offsets",
                               Init(out + ".b", {cout}, Randn(cout, seed + 1, 0.1f))},
                              out);
    n.set_domain("ai.permdnn");
    Int(n, "p", p);
    Int(n, "in_channels", cin);
    Int(n, "out_channels", cout);
    Ints(n, "kernel_shape", {k, k});
    Ints(n, "pads", {k / 2, k / 2, k / 2, k / 2});
    Ints(n, "strides", {stride, stride});
    if (column) {
      onnx::AttributeProto* a = n.add_attribute();
      a->set_name("offset_layout");
      a->set_type(onnx::AttributeProto::STRING);
      a->set_s("column");
    }
    return out;
  }
  std::string Bn(const std::string& x, const std::string& out, int64_t c, uint64_t seed) {
    return Node("BatchNormalization",
                {x, Init(out + ".s", {c}, Randn(c, seed, 0.3f, 1.0f)), Init(out + ".b", {c}, Randn(c, seed + 1, 0.2f)),
                 Init(out + ".m", {c}, Randn(c, seed + 2, 0.2f)), Init(out + ".v", {c}, Randn(c, seed + 3, 0.1f, 1.0f))},
                out)
        .output(0);
  }
  void Output(const std::string& name) { g_->add_output()->set_name(name); }
  std::string Bytes() const {
    std::string s;
    m_.SerializeToString(&s);
    return s;
  }

 private:
  onnx::ModelProto m_;
  onnx::GraphProto* g_ = nullptr;
};

// Every pattern the fusion pass and the oneDNN path handle, in one graph:
// stem conv (3 -> 16, stride 2) + BN + Relu, max pool with ceil_mode, a
// residual block whose Add operand (a 1x1 conv) is computed after the conv it
// is fused into, Clip from Constant nodes (ReLU6), a depthwise and a grouped
// conv, Identity and Dropout, a channel Concat, a conv read by two nodes and
// a conv whose output is also a graph output, average pools and a Gemm head.
// group_mode: 0 plain convs only, 1 depthwise, 2 grouped (4 groups).
std::string TestCnn(int group_mode) {
  Builder b({1, 3, 19, 19});
  std::string t = b.Conv("x", "stem", 3, 16, 3, 2, 1, false, 10);        // 10x10
  t = b.Node("Relu", {b.Bn(t, "stem_bn", 16, 20)}, "stem_relu").output(0);
  auto& mp = b.Node("MaxPool", {t}, "pool");                              // ceil(9/2)+1 = 6
  Builder::Ints(mp, "kernel_shape", {3, 3});
  Builder::Ints(mp, "strides", {2, 2});
  Builder::Int(mp, "ceil_mode", 1);
  t = mp.output(0);
  // Residual: conv -> bn -> (+ 1x1 projection computed later) -> relu.
  std::string c1 = b.Bn(b.Conv(t, "c1", 16, 32, 3, 1, 1, true, 30), "c1_bn", 32, 40);
  std::string proj = b.Conv(t, "proj", 16, 32, 1, 1, 1, true, 50);
  t = b.Node("Relu", {b.Node("Add", {c1, proj}, "res").output(0)}, "res_relu").output(0);
  // ReLU6 with Constant bounds, then a depthwise (or grouped) conv.
  b.Node("Constant", {}, "zero").add_attribute()->CopyFrom([] {
    onnx::AttributeProto a;
    a.set_name("value");
    a.set_type(onnx::AttributeProto::TENSOR);
    a.mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
    a.mutable_t()->add_float_data(0.0f);
    return a;
  }());
  std::string six = b.Init("six", {}, {6.0f});
  t = b.Node("Clip", {b.Conv(t, "expand", 32, 48, 1, 1, 1, true, 60), "zero", six}, "expand_clip").output(0);
  t = b.Conv(t, "dw", 48, 48, 3, 1, group_mode == 1 ? 48 : group_mode == 2 ? 4 : 1, true, 70);
  t = b.Node("Identity", {t}, "id").output(0);
  t = b.Node("Dropout", {t}, "drop").output(0);
  // Two branches concatenated along channels; one conv also a graph output.
  std::string left = b.Node("Relu", {b.Conv(t, "left", 48, 16, 1, 1, 1, true, 80)}, "left_relu").output(0);
  std::string right = b.Conv(t, "right", 48, 32, 3, 1, 1, true, 90);
  b.Output(right);
  auto& cat = b.Node("Concat", {left, right}, "cat");
  Builder::Int(cat, "axis", 1);
  auto& ap = b.Node("AveragePool", {cat.output(0)}, "avg");
  Builder::Ints(ap, "kernel_shape", {3, 3});
  Builder::Ints(ap, "pads", {1, 1, 1, 1});
  Builder::Int(ap, "count_include_pad", 1);
  t = b.Node("GlobalAveragePool", {ap.output(0)}, "gap").output(0);
  t = b.Node("Flatten", {t}, "flat").output(0);
  auto& fc = b.Node("Gemm", {t, b.Init("fc.w", {5, 48}, Randn(5 * 48, 100, 0.2f)), b.Init("fc.b", {5}, Randn(5, 101))}, "y");
  Builder::Int(fc, "transB", 1);
  b.Output(fc.output(0));
  return b.Bytes();
}

struct LayoutEnv {
  explicit LayoutEnv(const char* layout) {
    if (layout) setenv("PERMDNN_LAYOUT", layout, 1);
    else unsetenv("PERMDNN_LAYOUT");
  }
  ~LayoutEnv() { unsetenv("PERMDNN_LAYOUT"); }
};

class RuntimeCnn : public ::testing::TestWithParam<std::tuple<const char*, int>> {};

TEST_P(RuntimeCnn, FastPathMatchesReference) {
  const auto [layout, group_mode] = GetParam();
  LayoutEnv env(layout);
  const std::string bytes = TestCnn(group_mode);
  Model fast = Model::FromBytes(bytes, "cnn.onnx");
  Model ref = Model::FromBytes(bytes, "cnn.onnx", {.reference = true});
  for (int64_t batch : {1, 3, 2}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    Tensor x = Tensor::Float({batch, 3, 19, 19}, Randn(batch * 3 * 19 * 19, 7 + batch));
    std::vector<Tensor> want = ref.Run({x}), got = fast.Run({x});
    ASSERT_EQ(want.size(), 2u);
    ASSERT_EQ(got.size(), 2u);
    for (std::size_t o = 0; o < 2; ++o) {
      ASSERT_EQ(want[o].shape(), got[o].shape());
      float scale = 0;
      for (int64_t i = 0; i < want[o].size(); ++i) scale = std::max(scale, std::fabs(want[o].f()[i]));
      // Depth of the longest dot product chain ~ 48 channels x 9 taps, several layers deep.
      const double tol = permdnn::testing::Tolerance(48 * 9 * 4, scale);
      EXPECT_TRUE(permdnn::testing::AllNear<float>({want[o].f(), static_cast<std::size_t>(want[o].size())},
                                                   {got[o].f(), static_cast<std::size_t>(got[o].size())}, tol))
          << "output " << o;
    }
  }
}

std::string CnnCaseName(const ::testing::TestParamInfo<std::tuple<const char*, int>>& info) {
  static const char* const kGroups[] = {"_dense", "_depthwise", "_grouped"};
  const char* l = std::get<0>(info.param);
  return std::string(l ? l : "auto") + kGroups[std::get<1>(info.param)];
}

INSTANTIATE_TEST_SUITE_P(Layouts, RuntimeCnn,
                         ::testing::Combine(::testing::Values(nullptr, "nhwc", "blocked", "plain"),
                                            ::testing::Values(0, 1, 2)),
                         CnnCaseName);

TEST(RuntimeCnn, FusionFoldsTheChainsAndRunsOnOneDnn) {
  LayoutEnv env(nullptr);
  Model fast = Model::FromBytes(TestCnn(1), "cnn.onnx", {.profile = true});
  Model ref = Model::FromBytes(TestCnn(1), "cnn.onnx", {.profile = true, .reference = true});
  Tensor x = Tensor::Float({2, 3, 19, 19}, Randn(2 * 3 * 19 * 19, 3));
  fast.Run({x});
  ref.Run({x});
  std::map<std::string, NodeProfile> by_name;
  for (const NodeProfile& p : fast.Profile()) by_name[p.name] = p;
  // The stem's BN and Relu, the residual's BN, Add and Relu, and the Clip are folded.
  EXPECT_EQ(by_name.at("stem").op_type, "Conv+BatchNormalization+Relu");
  EXPECT_EQ(by_name.at("c1").op_type, "Conv+BatchNormalization+Add+Relu");
  EXPECT_EQ(by_name.at("expand").op_type, "Conv+Clip");
  EXPECT_EQ(by_name.at("left").op_type, "Conv+Relu");
  // `right` is a graph output: nothing after it is folded into it.
  EXPECT_EQ(by_name.at("right").op_type, "Conv");
  EXPECT_FALSE(by_name.count("stem_bn") || by_name.count("res") || by_name.count("id") || by_name.count("drop"));
  for (const char* conv : {"stem", "c1", "proj", "expand", "dw", "left", "right"})
    EXPECT_EQ(by_name.at(conv).kernel, "dense-onednn") << conv;
  EXPECT_EQ(by_name.at("pool").kernel, "pool-onednn");
  // The reference keeps every node of the file.
  EXPECT_EQ(ref.Profile().size(), fast.Profile().size() + 9);
  for (const NodeProfile& p : ref.Profile())
    if (p.op_type == "Conv") EXPECT_EQ(p.kernel, "dense-blas");
}

// Big enough nodes split the batch over the threads (one single-threaded
// oneDNN primitive per chunk, chunks of 2 and 1 samples at batch 3):
// the result equals the reference's.
TEST(RuntimeCnn, BatchChunksOnTwoThreads) {
  Builder b({1, 64, 48, 48});
  std::string t = b.Node("Relu", {b.Conv("x", "c1", 64, 64, 3, 1, 1, true, 3)}, "r1").output(0);
  auto& mp = b.Node("MaxPool", {t}, "pool");
  Builder::Ints(mp, "kernel_shape", {5, 5});
  Builder::Ints(mp, "pads", {2, 2, 2, 2});
  std::string u = b.Conv(mp.output(0), "c2", 64, 64, 3, 1, 1, true, 4);
  b.Output(b.Node("Relu", {b.Node("Add", {u, t}, "add").output(0)}, "y").output(0));
  Model fast = Model::FromBytes(b.Bytes(), "big.onnx", {.threads = 2, .profile = true});
  Model ref = Model::FromBytes(b.Bytes(), "big.onnx", {.reference = true});
  for (int64_t batch : {3, 1}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    Tensor x = Tensor::Float({batch, 64, 48, 48}, Randn(batch * 64 * 48 * 48, 11));
    const Tensor want = ref.Run({x})[0], got = fast.Run({x})[0];
    float scale = 0;
    for (int64_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want.f()[i]));
    EXPECT_TRUE(permdnn::testing::AllNear<float>({want.f(), static_cast<std::size_t>(want.size())},
                                                 {got.f(), static_cast<std::size_t>(got.size())},
                                                 permdnn::testing::Tolerance(64 * 9 * 2, scale)));
  }
  for (const NodeProfile& p : fast.Profile())
    if (p.op_type.rfind("Conv", 0) == 0) EXPECT_EQ(p.kernel, "dense-onednn") << p.name;
}

// Batch 1 on two threads: a convolution whose output is in the plan's
// blocked layout and which reorders nothing inside the node runs as one
// primitive per range of output channels (PlanChannelParts), and a pooling
// as one per run of channel blocks. Channel counts 36 and 68 leave the last
// block padded on 16 and on 8 lanes (AVX-512, AVX2). c1 (a folded
// BatchNormalization) and c2 (a residual Add): group 1. g4: 4 groups of 16
// (oneDNN has no jit kernel for groups narrower than a block, which then run
// the reference path, whole); dw: depthwise, 68 channels. mp, ap: pools. c0 reads the plain graph input with more
// channels than a block (a reorder) and c3 writes the plain graph output, so
// they stay whole. All equal the reference's outputs on two threads, on one,
// and on two again after replanning (SetThreads).
TEST(RuntimeCnn, BatchOneSplitsOutputChannelsOnTwoThreads) {
  LayoutEnv env("blocked");
  Builder b({1, 24, 48, 48});
  std::string t = b.Node("Relu", {b.Conv("x", "c0", 24, 32, 3, 1, 1, true, 4)}, "r0").output(0);
  t = b.Node("Relu", {b.Bn(b.Conv(t, "c1", 32, 36, 3, 1, 1, true, 5), "c1_bn", 36, 6)}, "r1").output(0);
  std::string u = b.Conv(t, "c2", 36, 36, 3, 1, 1, true, 7);
  u = b.Node("Relu", {b.Node("Add", {u, t}, "add").output(0)}, "r2").output(0);
  u = b.Node("Relu", {b.Conv(u, "e", 36, 64, 1, 1, 1, true, 8)}, "r3").output(0);
  u = b.Conv(u, "g4", 64, 64, 3, 1, 4, true, 9);
  u = b.Node("Relu", {b.Conv(u, "e2", 64, 68, 1, 1, 1, true, 11)}, "r4").output(0);
  u = b.Node("Relu", {b.Conv(u, "dw", 68, 68, 3, 1, 68, true, 12)}, "r5").output(0);
  auto& mp = b.Node("MaxPool", {u}, "mp");  // 48x48 -> 24x24
  Builder::Ints(mp, "kernel_shape", {3, 3});
  Builder::Ints(mp, "strides", {2, 2});
  Builder::Ints(mp, "pads", {1, 1, 1, 1});
  auto& ap = b.Node("AveragePool", {mp.output(0)}, "ap");
  Builder::Ints(ap, "kernel_shape", {3, 3});
  Builder::Ints(ap, "pads", {1, 1, 1, 1});
  Builder::Int(ap, "count_include_pad", 1);
  b.Output(b.Conv(ap.output(0), "c3", 68, 40, 3, 1, 1, true, 13));
  Model two = Model::FromBytes(b.Bytes(), "oc.onnx", {.threads = 2, .profile = true});
  Model one = Model::FromBytes(b.Bytes(), "oc.onnx", {.threads = 1, .profile = true});
  Model ref = Model::FromBytes(b.Bytes(), "oc.onnx", {.reference = true});
  Tensor x = Tensor::Float({1, 24, 48, 48}, Randn(24 * 48 * 48, 12));
  const Tensor want = ref.Run({x})[0];
  float scale = 0;
  for (int64_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want.f()[i]));
  auto check = [&](Model& m, const char* what) {
    const Tensor got = m.Run({x})[0];
    EXPECT_TRUE(permdnn::testing::AllNear<float>({want.f(), static_cast<std::size_t>(want.size())},
                                                 {got.f(), static_cast<std::size_t>(got.size())},
                                                 permdnn::testing::Tolerance(68 * 9 * 9, scale)))
        << what;
  };
  check(two, "two threads");
  check(one, "one thread");
  std::map<std::string, std::string> kernel;
  for (const NodeProfile& p : two.Profile()) kernel[p.name] = p.kernel;
  for (const char* whole : {"c0", "c3"}) EXPECT_EQ(kernel.at(whole), "dense-onednn") << whole;
  for (const char* cut : {"c1", "c2", "e", "g4", "e2", "dw"}) EXPECT_EQ(kernel.at(cut), "dense-onednn/oc2") << cut;
  for (const char* pool : {"mp", "ap"}) EXPECT_EQ(kernel.at(pool), "pool-onednn/c2") << pool;
  for (const NodeProfile& p : one.Profile()) EXPECT_EQ(p.kernel.find('/'), std::string::npos) << p.name;
  // Replanned on one thread, then on two again.
  two.SetThreads(1);
  check(two, "two, replanned on one thread");
  two.SetThreads(2);
  check(two, "two, replanned on two threads");
}

// A Concat of more than 2 × 256 KB is copied on both threads, in equal
// ranges of its output that start and end inside the inputs' chunks; one
// input (the graph input) is converted to the concat's layout first.
TEST(RuntimeCnn, LargeConcatOnTwoThreads) {
  for (const char* layout : {static_cast<const char*>(nullptr), "nhwc", "blocked", "plain"}) {
    SCOPED_TRACE(layout ? layout : "auto");
    LayoutEnv env(layout);
    Builder b({1, 16, 40, 40});
    std::string left = b.Node("Relu", {b.Conv("x", "left", 16, 16, 1, 1, 1, true, 5)}, "left_relu").output(0);
    std::string right = b.Conv("x", "right", 16, 48, 3, 1, 1, true, 6);  // batch 3: the halves meet inside it
    auto& cat = b.Node("Concat", {left, "x", right}, "cat");
    Builder::Int(cat, "axis", 1);
    b.Output(cat.output(0));
    Model two = Model::FromBytes(b.Bytes(), "cat.onnx", {.threads = 2, .batch_parallel = false});
    Model ref = Model::FromBytes(b.Bytes(), "cat.onnx", {.reference = true});
    for (int64_t batch : {3, 2, 1}) {
      SCOPED_TRACE("batch " + std::to_string(batch));
      Tensor x = Tensor::Float({batch, 16, 40, 40}, Randn(batch * 16 * 40 * 40, 13 + batch));
      const Tensor want = ref.Run({x})[0], got = two.Run({x})[0];
      ASSERT_EQ(want.shape(), got.shape());
      float scale = 0;
      for (int64_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want.f()[i]));
      EXPECT_TRUE(permdnn::testing::AllNear<float>({want.f(), static_cast<std::size_t>(want.size())},
                                                   {got.f(), static_cast<std::size_t>(got.size())},
                                                   permdnn::testing::Tolerance(16 * 9, scale)));
      // The input's channels are copied bit for bit (channels 16..31 of each sample).
      for (int64_t n = 0; n < batch; ++n)
        EXPECT_EQ(0, std::memcmp(got.f() + (n * 80 + 16) * 1600, x.f() + n * 16 * 1600, 16 * 1600 * sizeof(float)));
    }
  }
}

// Fully connected layers on two threads: fewer rows than output features
// split the features (each thread its own slice of the weights, with a last
// slice that is not a multiple of 16), otherwise the rows; transB 0 and 1,
// with a bias. The result equals the reference's and one thread's.
TEST(RuntimeCnn, GemmSplitsFeaturesOrRowsOnTwoThreads) {
  struct Case {
    int64_t rows, k, n;
  };
  for (const Case c : {Case{5, 700, 300}, Case{16, 784, 1000}, Case{64, 400, 40}, Case{3, 400, 1100}}) {
    for (int64_t tb : {0, 1}) {
      SCOPED_TRACE(::testing::Message() << "rows " << c.rows << " k " << c.k << " n " << c.n << " transB " << tb);
      Builder b({1, c.k});
      const std::vector<int64_t> wdims = tb ? std::vector<int64_t>{c.n, c.k} : std::vector<int64_t>{c.k, c.n};
      auto& fc = b.Node("Gemm", {"x", b.Init("w", wdims, Randn(static_cast<std::size_t>(c.n * c.k), 5, 0.1f)),
                                       b.Init("b", {c.n}, Randn(static_cast<std::size_t>(c.n), 6))},
                        "y");
      Builder::Int(fc, "transB", tb);
      b.Output(fc.output(0));
      Model two = Model::FromBytes(b.Bytes(), "fc.onnx", {.threads = 2, .profile = true});
      Model one = Model::FromBytes(b.Bytes(), "fc.onnx", {.threads = 1});
      Model ref = Model::FromBytes(b.Bytes(), "fc.onnx", {.reference = true});
      Tensor x = Tensor::Float({c.rows, c.k}, Randn(static_cast<std::size_t>(c.rows * c.k), 7));
      const Tensor want = ref.Run({x})[0], got = two.Run({x})[0], got1 = one.Run({x})[0];
      ASSERT_EQ(got.shape(), (std::vector<int64_t>{c.rows, c.n}));
      float scale = 0;
      for (int64_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want.f()[i]));
      const std::size_t size = static_cast<std::size_t>(want.size());
      EXPECT_TRUE(permdnn::testing::AllNear<float>({want.f(), size}, {got.f(), size},
                                                   permdnn::testing::Tolerance(c.k, scale)));
      EXPECT_TRUE(permdnn::testing::AllNear<float>({got1.f(), size}, {got.f(), size},
                                                   permdnn::testing::Tolerance(c.k, scale)));
      EXPECT_EQ(two.Profile().at(0).kernel, "dense-onednn");
      // One row runs OpenBLAS's sgemv (threads split the features).
      {
        Tensor x1 = Tensor::Float({1, c.k}, Randn(static_cast<std::size_t>(c.k), 9));
        const Tensor w1 = ref.Run({x1})[0], g1 = two.Run({x1})[0];
        EXPECT_TRUE(permdnn::testing::AllNear<float>({w1.f(), static_cast<std::size_t>(c.n)},
                                                     {g1.f(), static_cast<std::size_t>(c.n)},
                                                     permdnn::testing::Tolerance(c.k, scale)));
        EXPECT_EQ(two.Profile().at(0).kernel, "dense-blas");
      }
      // A new batch size re-plans (reusing the reordered weight slices that
      // still fit); then back to the first size.
      for (int64_t rows : {c.rows + 70, c.rows}) {
        SCOPED_TRACE(::testing::Message() << "then rows " << rows);
        Tensor x2 = Tensor::Float({rows, c.k}, Randn(static_cast<std::size_t>(rows * c.k), 8));
        const Tensor want2 = ref.Run({x2})[0], got2 = two.Run({x2})[0];
        float scale2 = 0;
        for (int64_t i = 0; i < want2.size(); ++i) scale2 = std::max(scale2, std::fabs(want2.f()[i]));
        const std::size_t size2 = static_cast<std::size_t>(want2.size());
        EXPECT_TRUE(permdnn::testing::AllNear<float>({want2.f(), size2}, {got2.f(), size2},
                                                     permdnn::testing::Tolerance(c.k, scale2)));
      }
    }
  }
}

// got equals want within the kernel tests' tolerance for sums of k products,
// scaled by want's largest magnitude (+1).
void ExpectNearScaled(const Tensor& want, const Tensor& got, int64_t k) {
  float scale = 0;
  for (int64_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want.f()[i]));
  EXPECT_TRUE(permdnn::testing::AllNear<float>({want.f(), static_cast<std::size_t>(want.size())},
                                               {got.f(), static_cast<std::size_t>(got.size())},
                                               permdnn::testing::Tolerance(k, scale + 1.0f)));
}

// TernaryConv (issue 18) on every conv of the test graph: the stride-2 stem
// (im2col), 3x3 and 1x1 convs at stride 1 (the padded "wide" columns) with
// fused post-ops after them, against the portable export of the same
// projection (dense Conv on the dequantized weights), at batch 1 and 3; and
// the int16 path (calibrated) within 2% of the largest fp32 output, the int8
// path (8-bit quads, tap-major: the 3-channel stem pads a quad) within 6%.
TEST(RuntimeCnn, TernaryConvsMatchTheirPortableModel) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("permdnn_ternary_cnn_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "dense.onnx", std::ios::binary);
    f << TestCnn(0);
  }
  CompressOptions o;
  o.spec = "ternary:group=1:density=0.5,stem=ternary:group=1:density=0.5";
  const ExportReport rep = CompressOnnx((dir / "dense.onnx").string(), (dir / "t.onnx").string(), o);
  ASSERT_EQ(rep.layers[0].name, "stem");
  EXPECT_EQ(rep.layers[0].op, "TernaryConv");
  o.portable = true;
  CompressOnnx((dir / "dense.onnx").string(), (dir / "p.onnx").string(), o);
  Model t = Model::Load((dir / "t.onnx").string()), pm = Model::Load((dir / "p.onnx").string());
  Model q = Model::Load((dir / "t.onnx").string(), {.int16 = true});
  // Calibrated on 8 other samples of the same distribution.
  q.Calibrate(Randn(8 * 3 * 19 * 19, 99), std::vector<int64_t>{8, 3, 19, 19});
  Model q8 = Model::Load((dir / "t.onnx").string(), {.int8 = true, .profile = true});
  q8.Calibrate(Randn(8 * 3 * 19 * 19, 99), std::vector<int64_t>{8, 3, 19, 19});
  for (int64_t batch : {1, 3}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    Tensor x = Tensor::Float({batch, 3, 19, 19}, Randn(batch * 3 * 19 * 19, 11 + batch));
    std::vector<Tensor> want = pm.Run({x}), got = t.Run({x}), got16 = q.Run({x}), got8 = q8.Run({x});
    ASSERT_EQ(want.size(), 2u);
    for (std::size_t k = 0; k < 2; ++k) {
      ExpectNearScaled(want[k], got[k], 48 * 9 * 4);
      float top = 0, diff = 0, diff8 = 0;
      for (int64_t i = 0; i < want[k].size(); ++i) {
        top = std::max(top, std::fabs(want[k].f()[i]));
        diff = std::max(diff, std::fabs(want[k].f()[i] - got16[k].f()[i]));
        diff8 = std::max(diff8, std::fabs(want[k].f()[i] - got8[k].f()[i]));
      }
      EXPECT_LT(diff, 0.02f * top) << "int16, output " << k;
      EXPECT_GT(diff, 0.0f) << "int16, output " << k;
      EXPECT_LT(diff8, 0.06f * top) << "int8, output " << k;
      EXPECT_GT(diff8, diff) << "int8, output " << k;  // coarser than int16: it is the 8-bit path
    }
  }
  int u8_nodes = 0;
  for (const auto& p : q8.Profile()) u8_nodes += p.kernel.find("ternary.matmul_u8") != std::string::npos;
  EXPECT_GE(u8_nodes, 3);
  fs::remove_all(dir);
}

// One stride-2 TernaryConv and nothing else (its im2col columns are the
// plan's largest scratch: an overrun past them is past the arena, where
// a sanitizer build sees it), fp32 and int16, batch 1 and 2.
TEST(RuntimeCnn, LoneStrideTwoTernaryConv) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("permdnn_ternary_s2_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    Builder b({1, 5, 11, 11});
    b.Output(b.Conv("x", "c", 5, 12, 3, 2, 1, true, 3));
    std::ofstream f(dir / "dense.onnx", std::ios::binary);
    f << b.Bytes();
  }
  CompressOptions o;
  o.spec = "c=ternary:group=1:density=0.5";
  CompressOnnx((dir / "dense.onnx").string(), (dir / "t.onnx").string(), o);
  o.portable = true;
  CompressOnnx((dir / "dense.onnx").string(), (dir / "p.onnx").string(), o);
  Model t = Model::Load((dir / "t.onnx").string(), {.profile = true}),
        pm = Model::Load((dir / "p.onnx").string());
  Model q = Model::Load((dir / "t.onnx").string(), {.int16 = true});
  q.Calibrate(Randn(4 * 5 * 11 * 11, 98), std::vector<int64_t>{4, 5, 11, 11});
  Model q8 = Model::Load((dir / "t.onnx").string(), {.int8 = true});
  q8.Calibrate(Randn(4 * 5 * 11 * 11, 98), std::vector<int64_t>{4, 5, 11, 11});
  for (int64_t batch : {1, 2}) {
    Tensor x = Tensor::Float({batch, 5, 11, 11}, Randn(batch * 5 * 11 * 11, 21 + batch));
    const Tensor want = pm.Run({x})[0];
    ExpectNearScaled(want, t.Run({x})[0], 5 * 9);
    const Tensor got16 = q.Run({x})[0];
    float top = 0, diff = 0;
    for (int64_t i = 0; i < want.size(); ++i) {
      top = std::max(top, std::fabs(want.f()[i]));
      diff = std::max(diff, std::fabs(want.f()[i] - got16.f()[i]));
    }
    EXPECT_LT(diff, 0.01f * top) << "int16, batch " << batch;
    const Tensor got8 = q8.Run({x})[0];
    float diff8 = 0;
    for (int64_t i = 0; i < want.size(); ++i) diff8 = std::max(diff8, std::fabs(want.f()[i] - got8.f()[i]));
    EXPECT_LT(diff8, 0.05f * top) << "int8, batch " << batch;
    EXPECT_GT(diff8, 0.0f) << "int8, batch " << batch;
  }
  EXPECT_NE(t.Profile().at(0).kernel.find("im2col+ternary.matmul"), std::string::npos) << t.Profile().at(0).kernel;
  fs::remove_all(dir);
}

// A 3x3 Conv `conv` (4 -> 8 channels) and a BatchNormalization 'bad_bn'
// whose factor is not finite (var = −epsilon), for the fold errors of the
// compressed convs.
std::string BadBatchNormModel(const std::string& conv) {
  Builder b({1, 4, 6, 6});
  std::string t = b.Conv("x", conv, 4, 8, 3, 1, 1, true, 2);
  auto& bn = b.Node("BatchNormalization",
                    {t, b.Init("s", {8}, Randn(8, 1)), b.Init("bb", {8}, Randn(8, 2)), b.Init("m", {8}, Randn(8, 3)),
                     b.Init("v", {8}, std::vector<float>(8, -1e-5f))},
                    "bad_bn");
  b.Output(bn.output(0));
  return b.Bytes();
}

// Compressing BadBatchNormModel(conv) with `spec` fails, naming 'bad_bn' and
// its non-finite factor (compress loads what it wrote: it refuses the file),
// and leaves no file at `out`.
void ExpectBadBatchNormRefused(const std::filesystem::path& dir, const std::string& conv, const std::string& spec,
                               const std::string& out) {
  {
    std::ofstream f(dir / "badbn.onnx", std::ios::binary);
    f << BadBatchNormModel(conv);
  }
  CompressOptions o;
  o.spec = spec;
  try {
    CompressOnnx((dir / "badbn.onnx").string(), (dir / out).string(), o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fused BatchNormalization 'bad_bn'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / out));
}

// TernaryConv chains (issue 18): the load-time fusion folds a following
// BatchNormalization into the ternary rows' scales and bias (negative γ
// included: the folded scale changes sign) and applies the residual Add
// (of the output's shape, or broadcast) and Relu / Clip after the product;
// fp32 against the reference path (no fusion), and the int8 path within
// its quantization of it, at batch 1 and 3.
TEST(RuntimeCnn, TernaryConvChainsFoldTheirPostOps) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("permdnn_ternary_fused_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    Builder b({1, 4, 12, 12});
    std::string t = b.Node("Relu", {b.Conv("x", "stem", 4, 16, 3, 1, 1, true, 1)}, "stem_relu").output(0);
    std::string u = b.Bn(b.Conv(t, "t1", 16, 16, 3, 1, 1, false, 2), "bn1", 16, 3);
    t = b.Node("Relu", {b.Node("Add", {u, t}, "res").output(0)}, "res_relu").output(0);
    std::string v = b.Conv(t, "t2", 16, 8, 3, 2, 1, true, 4);  // stride 2: the im2col columns
    v = b.Node("Add", {v, b.Init("shift", {1, 8, 1, 1}, Randn(8, 5))}, "shift_add").output(0);
    auto& clip = b.Node("Clip", {v}, "clip");
    clip.add_input(b.Init("lo", {}, {0.0f}));
    clip.add_input(b.Init("hi", {}, {1.5f}));
    b.Output(b.Node("GlobalAveragePool", {clip.output(0)}, "y").output(0));
    std::ofstream f(dir / "dense.onnx", std::ios::binary);
    f << b.Bytes();
  }
  CompressOptions o;
  o.spec = "dense,t1=ternary:group=4:density=0.5,t2=ternary:group=4:density=0.5";
  const ExportReport rep = CompressOnnx((dir / "dense.onnx").string(), (dir / "t.onnx").string(), o);
  int ternary = 0;
  for (const auto& l : rep.layers) ternary += l.op == "TernaryConv";
  ASSERT_EQ(ternary, 2);
  const std::string file = (dir / "t.onnx").string();
  Model ref = Model::Load(file, {.reference = true}), fast = Model::Load(file, {.profile = true});
  Model q16 = Model::Load(file, {.int16 = true, .profile = true});
  Model q8 = Model::Load(file, {.int8 = true, .profile = true});
  q16.Calibrate(Randn(6 * 4 * 12 * 12, 97), std::vector<int64_t>{6, 4, 12, 12});
  q8.Calibrate(Randn(6 * 4 * 12 * 12, 97), std::vector<int64_t>{6, 4, 12, 12});
  for (int64_t batch : {1, 3}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    Tensor x = Tensor::Float({batch, 4, 12, 12}, Randn(batch * 4 * 12 * 12, 30 + batch));
    const Tensor want = ref.Run({x})[0], got16 = q16.Run({x})[0], got8 = q8.Run({x})[0];
    ExpectNearScaled(want, fast.Run({x})[0], 16 * 9 * 3);
    float top = 0, diff16 = 0, diff8 = 0;
    for (int64_t i = 0; i < want.size(); ++i) {
      top = std::max(top, std::fabs(want.f()[i]));
      diff16 = std::max(diff16, std::fabs(want.f()[i] - got16.f()[i]));
      diff8 = std::max(diff8, std::fabs(want.f()[i] - got8.f()[i]));
    }
    EXPECT_GT(top, 0.0f);
    EXPECT_LT(diff16, 0.01f * top);
    EXPECT_LT(diff8, 0.05f * top);
  }
  for (const Model* m : {&fast, &q16, &q8}) {
    std::map<std::string, NodeProfile> by_name;
    for (const NodeProfile& q : m->Profile()) by_name[q.name] = q;
    EXPECT_EQ(by_name.at("t1").op_type, "TernaryConv+BatchNormalization+Add+Relu");
    EXPECT_EQ(by_name.at("t2").op_type, "TernaryConv+Add+Clip");
    EXPECT_EQ(by_name.count("bn1") + by_name.count("res") + by_name.count("clip"), 0u);
  }
  // A BatchNormalization whose factor is not finite (var = −epsilon): a clear
  // error naming it, at load.
  ExpectBadBatchNormRefused(dir, "t1", "t1=ternary:group=4:density=0.5", "badbn-t.onnx");
  fs::remove_all(dir);
}

// PermDiagConv chains on the permuted-diagonal conv kernel: BatchNormalization
// folded into its packing, a residual Add and Relu / Clip in its epilogue,
// 3x3 and 1x1 at stride 1 and 2, p = 4, 8 and 16, channel counts that leave
// partial blocks; against the reference path in each layout and on 2 threads.
TEST(RuntimeCnn, PermDiagConvChainsMatchReference) {
  for (int64_t p : {4, 8, 16}) {
    SCOPED_TRACE("p = " + std::to_string(p));
    Builder b({1, 3, 18, 18});
    std::string t = b.Node("Relu", {b.Conv("x", "stem", 3, 32, 3, 1, 1, true, 1)}, "stem_relu").output(0);
    std::string u = b.Bn(b.PermDiagConv(t, "pd1", 32, 32, 3, p, 1, 2), "bn1", 32, 3);
    t = b.Node("Relu", {b.Node("Add", {u, t}, "res").output(0)}, "res_relu").output(0);
    std::string down = b.PermDiagConv(t, "down", 32, 40, 1, p, 2, 4);
    std::string v = b.PermDiagConv(t, "pd2", 32, 40, 3, p, 2, 5);
    auto& clip = b.Node("Clip", {b.Node("Add", {v, down}, "res2").output(0)}, "clip");
    clip.add_input(b.Init("lo", {}, {0.0f}));
    clip.add_input(b.Init("hi", {}, {1.5f}));
    std::string w = b.PermDiagConv(clip.output(0), "pd3", 40, 24, 1, p, 1, 6);
    b.Output(b.Node("GlobalAveragePool", {w}, "y").output(0));
    const std::string bytes = b.Bytes();
    Model ref = Model::FromBytes(bytes, "pd.onnx", {.reference = true});
    for (const char* layout : {(const char*)nullptr, "nhwc", "plain"}) {
      LayoutEnv env(layout);
      for (int threads : {1, 2}) {
        Model fast = Model::FromBytes(bytes, "pd.onnx", {.threads = threads, .profile = true});
        for (int64_t batch : {1, 3}) {
          SCOPED_TRACE(::testing::Message() << (layout ? layout : "auto") << " threads " << threads << " batch "
                                            << batch);
          Tensor x = Tensor::Float({batch, 3, 18, 18}, Randn(batch * 3 * 18 * 18, 20 + batch));
          ExpectNearScaled(ref.Run({x})[0], fast.Run({x})[0], 32 * 9 * 3);
        }
        if (!layout) {  // blocked by the kernel's lanes: the SIMD rows run, with their post-ops folded in
          std::map<std::string, NodeProfile> by_name;
          for (const NodeProfile& q : fast.Profile()) by_name[q.name] = q;
          EXPECT_EQ(by_name.at("pd1").op_type, "PermDiagConv+BatchNormalization+Add+Relu");
          EXPECT_EQ(by_name.at("pd1").kernel, "permdiag.conv.3x3s1");
          EXPECT_EQ(by_name.at("pd2").kernel, "permdiag.conv.3x3s2");
          // The 1x1 rows with shared offsets (.shared) run where every output
          // vector's permutation is the first one's (PermDiagConvPack::
          // shared_index): the builder's offsets ((I·nb + J)·5 + seed) mod p
          // repeat every lanes / p row blocks for some of these shapes.
          const auto vectors_share = [&](int64_t cin, int64_t cout, int seed) {
            const int64_t per = permdnn::kernels::PermDiagConvLanes() / p;
            const int64_t mb = (cout + p - 1) / p, nb = (cin + p - 1) / p;
            if (per == 0 || mb <= per) return false;  // p past the lanes, or one vector: nothing shared
            const auto k = [&](int64_t I, int64_t J) { return ((I * nb + J) * 5 + seed) % p; };
            for (int64_t I = per; I < mb; ++I)
              for (int64_t J = 0; J < nb; ++J)
                if (k(I, J) != k(I % per, J)) return false;
            return true;
          };
          EXPECT_EQ(by_name.at("down").kernel,
                    std::string("permdiag.conv.1x1s2") + (vectors_share(32, 40, 4) ? ".shared" : ""));
          EXPECT_EQ(by_name.at("pd3").kernel,
                    std::string("permdiag.conv.1x1s1") + (vectors_share(40, 24, 6) ? ".shared" : ""));
          // The same model planned again in the plain layout: the im2col
          // path reads the weights again (the blocked path dropped its
          // decoded copy once packed).
          LayoutEnv plain("plain");
          Tensor x2 = Tensor::Float({2, 3, 18, 18}, Randn(2 * 3 * 18 * 18, 31));
          ExpectNearScaled(ref.Run({x2})[0], fast.Run({x2})[0], 32 * 9 * 3);
          fast.ResetProfile();
          fast.Run({x2});
          for (const NodeProfile& q : fast.Profile())
            if (q.name == "pd1") EXPECT_EQ(q.kernel, "permdiag-conv-im2col");
        }
      }
    }
  }
}

// BlockCirculantConv on the channel-DFT path (kernels::CirculantChannelDft):
// 3x3 and 1x1 at stride 1 and 2 (the 1x1 stride-1 layer skips im2col),
// channel counts that leave partial blocks, odd and even p, and the fused
// post-ops (BatchNormalization folded into the inverse DFT, a residual Add
// of the output's shape, a broadcast Add, Relu and Clip); against the
// reference path (no fusion, one FFT product per position on the im2col
// columns), on 1 and 2 threads at batch 1 (a sample's positions split) and 3.
TEST(RuntimeCnn, CirculantConvOnTheChannelDftMatchesReference) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("permdnn_circ_conv_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    Builder b({1, 6, 14, 14});
    std::string t = b.Node("Relu", {b.Bn(b.Conv("x", "c1", 6, 24, 3, 1, 1, true, 1), "bn1", 24, 2)}, "r1").output(0);
    std::string u = b.Bn(b.Conv(t, "c2", 24, 24, 3, 1, 1, false, 3), "bn2", 24, 4);
    t = b.Node("Relu", {b.Node("Add", {u, t}, "res").output(0)}, "r2").output(0);
    t = b.Conv(t, "c3", 24, 20, 3, 2, 1, true, 5);
    t = b.Node("Add", {b.Conv(t, "c4", 20, 36, 1, 1, 1, false, 6), b.Init("shift", {1, 36, 1, 1}, Randn(36, 7))},
               "shift_add")
            .output(0);
    auto& clip = b.Node("Clip", {t}, "clip");
    clip.add_input(b.Init("lo", {}, {0.0f}));
    clip.add_input(b.Init("hi", {}, {1.5f}));
    b.Output(b.Conv(clip.output(0), "c5", 36, 12, 1, 2, 1, true, 8));
    std::ofstream f(dir / "dense.onnx", std::ios::binary);
    f << b.Bytes();
  }
  for (int p : {2, 3, 4, 8, 128}) {  // p = 128: the im2col fallback with the fused post-ops
    SCOPED_TRACE("p = " + std::to_string(p));
    CompressOptions o;
    o.spec = fmt::format("c1=circulant:p={0},c2=circulant:p={0},c3=circulant:p={0},c4=circulant:p={0},"
                         "c5=circulant:p={0}",
                         p);
    const std::string file = (dir / "c.onnx").string();
    const ExportReport rep = CompressOnnx((dir / "dense.onnx").string(), file, o);
    int circulant = 0;
    for (const auto& l : rep.layers) circulant += l.op == "BlockCirculantConv";
    ASSERT_EQ(circulant, 5);
    Model ref = Model::Load(file, {.profile = true, .reference = true});
    for (int threads : {1, 2}) {
      Model fast = Model::Load(file, {.threads = threads, .profile = true});
      for (int64_t batch : {1, 3}) {
        SCOPED_TRACE(::testing::Message() << "threads " << threads << " batch " << batch);
        Tensor x = Tensor::Float({batch, 6, 14, 14}, Randn(batch * 6 * 14 * 14, 40 + batch));
        ExpectNearScaled(ref.Run({x})[0], fast.Run({x})[0], 24 * 9 * 3);
      }
      std::map<std::string, NodeProfile> by_name;
      for (const NodeProfile& q : fast.Profile()) by_name[q.name] = q;
      for (const char* node : {"c1", "c2", "c3", "c4", "c5"})
        EXPECT_EQ(by_name.at(node).kernel, p > 64 ? "im2col+circulant.fft" : "circulant.conv.channel-dft") << node;
      EXPECT_EQ(by_name.at("c1").op_type, "BlockCirculantConv+BatchNormalization+Relu");
      EXPECT_EQ(by_name.at("c2").op_type, "BlockCirculantConv+BatchNormalization+Add+Relu");
      EXPECT_EQ(by_name.at("c4").op_type, "BlockCirculantConv+Add+Clip");
      for (const NodeProfile& q : ref.Profile())
        if (q.op_type == "BlockCirculantConv") EXPECT_EQ(q.kernel.rfind("im2col+", 0), 0u) << q.kernel;
    }
  }
  // A layer whose columns span several chunks of output rows (64 channels,
  // 3x3, 44 x 40: 576 column rows of 40 positions per output row; 5 output
  // rows fill the 128 Ki floats of a chunk, fewer than 256 positions, so a
  // chunk holds 7 rows), the last chunk partial (44 = 6·7 + 2).
  {
    Builder b({1, 64, 44, 40});
    b.Output(b.Node("Relu", {b.Conv("x", "big", 64, 64, 3, 1, 1, true, 9)}, "r").output(0));
    std::ofstream f(dir / "big.onnx", std::ios::binary);
    f << b.Bytes();
  }
  CompressOptions o;
  o.spec = "big=circulant:p=4";
  const std::string file = (dir / "big-c.onnx").string();
  CompressOnnx((dir / "big.onnx").string(), file, o);
  Model ref = Model::Load(file, {.reference = true});
  for (int threads : {1, 2}) {
    Model fast = Model::Load(file, {.threads = threads});
    for (int64_t batch : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "chunks, threads " << threads << " batch " << batch);
      Tensor x = Tensor::Float({batch, 64, 44, 40}, Randn(batch * 64 * 44 * 40, 50 + batch));
      ExpectNearScaled(ref.Run({x})[0], fast.Run({x})[0], 64 * 9);
    }
  }
  // A BatchNormalization whose factor is not finite (var = −epsilon): a
  // clear error naming it, and compress (which loads what it wrote) leaves
  // no file.
  ExpectBadBatchNormRefused(dir, "c1", "c1=circulant:p=4", "badbn-c.onnx");
  fs::remove_all(dir);
}

// Shared offsets (offset_layout "column", issue 15): a PermDiagConv is a
// grouped convolution between two channel gathers. With
// PERMDNN_COLUMN_CONV=grouped every layer whose groups are whole channel
// blocks runs on oneDNN's grouped convolution (BatchNormalization folded,
// residual Add and Clip / Relu in the output gather), with kernel the
// permuted-diagonal kernel, with auto the faster of the two; all give the
// reference path's outputs, on 1 and 2 threads and two batch sizes.
TEST(RuntimeCnn, ColumnOffsetConvAsGroupedConvolutionMatchesReference) {
  Builder b({1, 3, 12, 12});
  std::string t = b.Node("Relu", {b.Conv("x", "stem", 3, 32, 3, 1, 1, true, 1)}, "stem_relu").output(0);
  std::string u = b.Bn(b.PermDiagConv(t, "pd1", 32, 32, 3, 2, 1, 2, true), "bn1", 32, 3);
  t = b.Node("Relu", {b.Node("Add", {u, t}, "res").output(0)}, "res_relu").output(0);
  std::string down = b.PermDiagConv(t, "down", 32, 64, 1, 2, 2, 4, true);
  std::string v = b.PermDiagConv(t, "pd2", 32, 64, 3, 2, 2, 5, true);
  auto& clip = b.Node("Clip", {b.Node("Add", {v, down}, "res2").output(0)}, "clip");
  clip.add_input(b.Init("lo", {}, {0.0f}));
  clip.add_input(b.Init("hi", {}, {1.5f}));
  std::string w = b.PermDiagConv(clip.output(0), "pd3", 64, 64, 1, 4, 1, 6, true);
  b.Output(b.Node("GlobalAveragePool", {w}, "y").output(0));
  const std::string bytes = b.Bytes();
  Model ref = Model::FromBytes(bytes, "col.onnx", {.reference = true});
  for (const char* mode : {"grouped", "kernel", "auto"}) {
    setenv("PERMDNN_COLUMN_CONV", mode, 1);
    for (int threads : {1, 2}) {
      Model fast = Model::FromBytes(bytes, "col.onnx", {.threads = threads, .profile = true});
      for (int64_t batch : {1, 4}) {
        SCOPED_TRACE(::testing::Message() << mode << " threads " << threads << " batch " << batch);
        Tensor x = Tensor::Float({batch, 3, 12, 12}, Randn(batch * 3 * 12 * 12, 30 + batch));
        ExpectNearScaled(ref.Run({x})[0], fast.Run({x})[0], 64 * 9 * 3);
        std::map<std::string, NodeProfile> by_name;
        for (const NodeProfile& q : fast.Profile()) by_name[q.name] = q;
        for (const char* node : {"pd1", "down", "pd2", "pd3"}) {
          const std::string& kernel = by_name.at(node).kernel;
          if (!std::strcmp(mode, "grouped")) EXPECT_EQ(kernel, "permdiag-column.conv.grouped-onednn") << node;
          if (!std::strcmp(mode, "kernel")) EXPECT_EQ(kernel.rfind("permdiag.conv.", 0), 0u) << node << ": " << kernel;
        }
        EXPECT_EQ(by_name.at("pd1").op_type, "PermDiagConv+BatchNormalization+Add+Relu");
      }
    }
  }
  setenv("PERMDNN_COLUMN_CONV", "sideways", 1);
  EXPECT_THROW(Model::FromBytes(bytes, "col.onnx").Run({Tensor::Float({1, 3, 12, 12}, Randn(432, 1))}), Error);
  unsetenv("PERMDNN_COLUMN_CONV");
}

// An Add whose operand broadcasts (a per-channel bias) is fused too and
// runs on the reference path; a BatchNormalization with wrong parameter
// sizes is not fused and reports its own error.
TEST(RuntimeCnn, BroadcastAddAndBadBatchNorm) {
  Builder b({1, 4, 6, 6});
  std::string t = b.Conv("x", "c", 4, 8, 3);
  t = b.Node("Add", {t, b.Init("bias", {1, 8, 1, 1}, Randn(8, 5))}, "add").output(0);
  b.Output(b.Node("Relu", {t}, "y").output(0));
  Model fast = Model::FromBytes(b.Bytes(), "bcast.onnx", {.profile = true});
  Model ref = Model::FromBytes(b.Bytes(), "bcast.onnx", {.reference = true});
  Tensor x = Tensor::Float({2, 4, 6, 6}, Randn(2 * 4 * 36, 9));
  const Tensor want = ref.Run({x})[0], got = fast.Run({x})[0];
  EXPECT_TRUE(permdnn::testing::AllNear<float>({want.f(), 2 * 8 * 36}, {got.f(), 2 * 8 * 36},
                                               permdnn::testing::Tolerance(36, 8.0)));
  EXPECT_EQ(fast.Profile().size(), 1u);
  EXPECT_EQ(fast.Profile()[0].op_type, "Conv+Add+Relu");

  Builder bad({1, 4, 6, 6});
  t = bad.Conv("x", "c", 4, 8, 3);
  auto& bn = bad.Node("BatchNormalization",
                      {t, bad.Init("s", {4}, Randn(4, 1)), bad.Init("bb", {4}, Randn(4, 2)), bad.Init("m", {4}, Randn(4, 3)),
                       bad.Init("v", {4}, Randn(4, 4, 0.1f, 1.0f))},
                      "bn");
  bad.Output(bn.output(0));
  try {
    Model::FromBytes(bad.Bytes(), "badbn.onnx");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("node 'bn' (BatchNormalization"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expected C = 8"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace permdnn::runtime
