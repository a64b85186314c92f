// permdnn/train/finetune.h: the LibTorch graph built from an ONNX file equals
// the runtime on the same file (dense and every compressed op kind, after
// `permdnn compress` projections), fine-tuning on the tiny synthetic set
// lowers the loss and writes a file the runtime loads with the structure
// (offsets, CSR indices, codes) unchanged, and bad input gives clear errors.
//
// The model: x [B, 1, 8, 8] -> conv1 (1 -> 6, 3x3, pad 1) -> BatchNorm ->
// Relu -> MaxPool 2 -> conv2 (6 -> 10, 3x3, pad 1) -> Relu -> Flatten ->
// fc1 (160 -> 18, Gemm transB) -> Relu -> fc2 (18 -> 4, MatMul + Add)
// [-> Softmax]. conv2 and fc1 get the compression under test; 10 and 18 are
// not multiples of p = 4, so padded blocks are covered.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <random>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "permdnn/core/error.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/inspect.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "src/runtime/onnx_util.h"
#include "permdnn/train/finetune.h"
#include "tests/support/compare.h"

namespace permdnn::train {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using runtime::detail::AddAttr;
using runtime::detail::SetFloatTensor;
using runtime::detail::SetInt64Tensor;

fs::path TempDir() {
  fs::path d = fs::temp_directory_path() / ("permdnn_onnx_finetune_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::vector<float> Randn(std::size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

struct GraphBuilder {
  onnx::ModelProto m;
  onnx::GraphProto* g = m.mutable_graph();
  uint64_t seed = 1;

  GraphBuilder() {
    m.set_ir_version(8);
    m.add_opset_import()->set_version(13);
    auto* x = g->add_input();
    x->set_name("x");
    auto* tt = x->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(1);
    for (int64_t d : {-1, 1, 8, 8}) {
      auto* dim = tt->mutable_shape()->add_dim();
      if (d > 0) dim->set_dim_value(d);
      else dim->set_dim_param("N");
    }
  }
  void Weight(const std::string& name, std::vector<int64_t> shape, float scale) {
    SetFloatTensor(g->add_initializer(), name, Randn(static_cast<std::size_t>(runtime::NumElements(shape)), seed++, scale),
                   shape);
  }
  onnx::NodeProto* Node(const std::string& name, const std::string& op, std::vector<std::string> in,
                        const std::string& out) {
    auto* n = g->add_node();
    n->set_name(name);
    n->set_op_type(op);
    for (auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  }
  std::string Save(const fs::path& path) {
    runtime::detail::WriteModelProto(m, path.string());
    return path.string();
  }
};

// The small cnn above; `softmax` appends a Softmax (the loss then uses its input).
std::string WriteCnn(const fs::path& path, bool softmax) {
  GraphBuilder b;
  b.Weight("conv1.weight", {6, 1, 3, 3}, 0.4f);
  b.Weight("conv1.bias", {6}, 0.1f);
  b.Weight("bn.scale", {6}, 0.1f);
  b.Weight("bn.bias", {6}, 0.1f);
  b.Weight("bn.mean", {6}, 0.1f);
  SetFloatTensor(b.g->add_initializer(), "bn.var", std::vector<float>(6, 0.8f), {6});
  b.Weight("conv2.weight", {10, 6, 3, 3}, 0.2f);
  b.Weight("conv2.bias", {10}, 0.1f);
  b.Weight("fc1.weight", {18, 160}, 0.1f);
  b.Weight("fc1.bias", {18}, 0.1f);
  b.Weight("fc2.weight", {18, 4}, 0.3f);  // MatMul: [in, out]
  b.Weight("fc2.bias", {4}, 0.1f);
  auto conv = [&](onnx::NodeProto* n) {
    AddAttr(n, "kernel_shape", std::vector<int64_t>{3, 3});
    AddAttr(n, "pads", std::vector<int64_t>{1, 1, 1, 1});
  };
  conv(b.Node("conv1", "Conv", {"x", "conv1.weight", "conv1.bias"}, "c1"));
  b.Node("bn", "BatchNormalization", {"c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"}, "b1");
  b.Node("relu1", "Relu", {"b1"}, "r1");
  auto* pool = b.Node("pool", "MaxPool", {"r1"}, "p1");
  AddAttr(pool, "kernel_shape", std::vector<int64_t>{2, 2});
  AddAttr(pool, "strides", std::vector<int64_t>{2, 2});
  conv(b.Node("conv2", "Conv", {"p1", "conv2.weight", "conv2.bias"}, "c2"));
  b.Node("relu2", "Relu", {"c2"}, "r2");
  b.Node("flat", "Flatten", {"r2"}, "f");
  AddAttr(b.Node("fc1", "Gemm", {"f", "fc1.weight", "fc1.bias"}, "h"), "transB", int64_t{1});
  b.Node("relu3", "Relu", {"h"}, "r3");
  b.Node("fc2", "MatMul", {"r3", "fc2.weight"}, "mm");
  b.Node("fc2_add", "Add", {"mm", "fc2.bias"}, softmax ? "logits" : "y");
  if (softmax) b.Node("softmax", "Softmax", {"logits"}, "y");
  b.g->add_output()->set_name("y");
  return b.Save(path);
}

// The cnn with conv2 and fc1 projected by `method` (or dense when empty).
std::string CompressedCnn(const fs::path& dir, const std::string& method, bool softmax) {
  std::string name = method.empty() ? std::string("dense") : method;
  for (char& c : name)
    if (c == ':' || c == '=' || c == ',') c = '_';
  const std::string dense = WriteCnn(dir / (name + "_in.onnx"), softmax);
  if (method.empty()) return dense;
  const std::string out = (dir / (name + ".onnx")).string();
  runtime::CompressOptions o;
  o.spec = "conv2=" + method + ",fc1=" + method;
  runtime::CompressOnnx(dense, out, o);
  return out;
}

std::vector<float> RunRuntime(const std::string& path, const std::vector<float>& x, std::vector<int64_t> shape) {
  runtime::Model model = runtime::Model::Load(path);
  std::vector<float> y(static_cast<std::size_t>(runtime::NumElements(model.OutputShape(shape))));
  model.Run(x, shape, y);
  return y;
}

class OnnxFineTuneForward : public ::testing::TestWithParam<std::string> {};

TEST_P(OnnxFineTuneForward, TorchGraphEqualsRuntime) {
  const fs::path dir = TempDir();
  const std::string path = CompressedCnn(dir, GetParam(), false);
  for (int64_t batch : {1, 5}) {
    std::vector<int64_t> shape = {batch, 1, 8, 8};
    std::vector<float> x = Randn(static_cast<std::size_t>(batch * 64), 100 + batch, 1.0f);
    std::vector<float> want = RunRuntime(path, x, shape);
    std::vector<float> got = TorchForwardOnnx(path, x, shape);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(batch * 4));
    double scale = 0;
    for (float v : want) scale = std::max(scale, static_cast<double>(std::abs(v)));
    EXPECT_TRUE(testing::AllNear<float>(want, got, testing::Tolerance(160 * 9, std::max(scale, 1.0))))
        << GetParam() << " batch " << batch;
  }
}

INSTANTIATE_TEST_SUITE_P(AllKinds, OnnxFineTuneForward,
                         ::testing::Values("", "permdiag:p=4", "permdiag:p=4,offsets=column", "circulant:p=4",
                                           "prune:density=0.3", "prune:density=0.3,bits=4",
                                           "prune:density=0.3,bits=4,index=3"),
                         [](const auto& info) {
                           std::string s = info.param.empty() ? std::string("dense") : info.param;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// The reshape arithmetic of exported models (Shape -> Gather -> Unsqueeze ->
// Concat -> Reshape; the runtime folds it when its inputs are constant, here
// the shape of the fc weight: [-1, 64]) and a few elementwise ops, against
// the runtime.
TEST(OnnxFineTuneForwardOps, ExporterShapeArithmetic) {
  const fs::path dir = TempDir();
  GraphBuilder b;
  b.Weight("fc.weight", {64, 5}, 0.2f);
  b.Weight("fc.bias", {5}, 0.1f);
  SetInt64Tensor(b.g->add_initializer(), "zero", std::vector<int64_t>{0}, {});
  SetInt64Tensor(b.g->add_initializer(), "minus_one", std::vector<int64_t>{-1}, {1});
  SetInt64Tensor(b.g->add_initializer(), "axes0", std::vector<int64_t>{0}, {1});
  b.Node("shape", "Shape", {"fc.weight"}, "s");
  AddAttr(b.Node("gather", "Gather", {"s", "zero"}, "n"), "axis", int64_t{0});
  b.Node("unsq", "Unsqueeze", {"n", "axes0"}, "n1");
  AddAttr(b.Node("concat", "Concat", {"minus_one", "n1"}, "shp"), "axis", int64_t{0});
  b.Node("reshape", "Reshape", {"x", "shp"}, "flat");
  b.Node("fc", "MatMul", {"flat", "fc.weight"}, "mm");
  b.Node("bias", "Add", {"mm", "fc.bias"}, "z");
  AddAttr(b.Node("leaky", "LeakyRelu", {"z"}, "l"), "alpha", 0.2f);
  b.Node("abs", "Abs", {"l"}, "a");
  b.Node("sqrt", "Sqrt", {"a"}, "y");
  b.g->add_output()->set_name("y");
  const std::string path = b.Save(dir / "shape_ops.onnx");
  std::vector<int64_t> shape = {3, 1, 8, 8};
  std::vector<float> x = Randn(3 * 64, 11, 1.0f);
  EXPECT_TRUE(testing::AllNear<float>(RunRuntime(path, x, shape), TorchForwardOnnx(path, x, shape), 1e-5));
}

FineTuneOptions Tiny() {
  FineTuneOptions o;
  o.epochs = 6;
  o.batch = 32;
  o.lr = 1e-2;
  o.threads = 1;
  o.synthetic_train = 1024;
  o.synthetic_test = 128;
  o.synthetic_side = 8;
  o.synthetic_classes = 4;
  return o;
}

class OnnxFineTuneTrain : public ::testing::TestWithParam<std::string> {};

TEST_P(OnnxFineTuneTrain, LowersLossKeepsStructure) {
  const fs::path dir = TempDir();
  const std::string in = CompressedCnn(dir, GetParam(), true);
  const std::string out = (dir / "tuned.onnx").string();
  std::ostringstream log;
  FineTuneResult r = FineTuneOnnx(in, out, Tiny(), log);
  ASSERT_EQ(r.history.size(), 6u) << log.str();
  EXPECT_LT(r.history.back().test_loss, 0.7 * r.test_loss_before) << log.str();
  EXPECT_GE(r.accuracy_after, r.accuracy_before) << log.str();
  EXPECT_GT(r.trainable_values, 0);

  // Same layers, same structure; the trained values moved.
  runtime::ModelInspection a = runtime::InspectCompressedLayers(runtime::ReadFileBytes(in), in);
  runtime::ModelInspection b = runtime::InspectCompressedLayers(runtime::ReadFileBytes(out), out);
  ASSERT_EQ(a.layers.size(), 2u);
  ASSERT_EQ(b.layers.size(), a.layers.size());
  for (std::size_t k = 0; k < a.layers.size(); ++k) {
    const auto &la = a.layers[k], &lb = b.layers[k];
    EXPECT_EQ(la.op_type, lb.op_type);
    if (la.permdiag) {
      ASSERT_TRUE(lb.permdiag);
      EXPECT_TRUE(std::equal(la.permdiag->offsets().begin(), la.permdiag->offsets().end(),
                             lb.permdiag->offsets().begin()))
          << la.node << ": offsets changed";
    }
    if (la.sparse) {
      ASSERT_TRUE(lb.sparse);
      EXPECT_TRUE(std::equal(la.sparse->row_ptr().begin(), la.sparse->row_ptr().end(), lb.sparse->row_ptr().begin()));
      EXPECT_TRUE(std::equal(la.sparse->col_idx().begin(), la.sparse->col_idx().end(), lb.sparse->col_idx().begin()))
          << la.node << ": mask changed";
      EXPECT_EQ(la.codebook_size, lb.codebook_size);
    }
    EXPECT_NE(la.ToDense(), lb.ToDense()) << la.node << ": weights did not train";
  }
  // The written file: the runtime and LibTorch still agree on it.
  std::vector<float> x = Randn(3 * 64, 7, 1.0f);
  std::vector<int64_t> shape = {3, 1, 8, 8};
  EXPECT_TRUE(testing::AllNear<float>(RunRuntime(out, x, shape), TorchForwardOnnx(out, x, shape), 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Kinds, OnnxFineTuneTrain,
                         ::testing::Values("permdiag:p=4", "prune:density=0.3,bits=4", "prune:density=0.3,bits=4,index=3"),
                         [](const auto& info) {
                           const std::string& s = info.param;
                           return s.substr(0, s.find(':')) + (s.find("index") != std::string::npos ? "_relative" : "");
                         });

TEST(OnnxFineTuneErrors, UnsupportedOperatorNamesNodeAndOp) {
  const fs::path dir = TempDir();
  GraphBuilder b;
  b.Weight("fc.weight", {64, 4}, 0.1f);
  b.Node("flat", "Flatten", {"x"}, "f");
  b.Node("round", "Floor", {"f"}, "r");  // the runtime runs it; fine-tuning does not
  b.Node("fc", "MatMul", {"r", "fc.weight"}, "y");
  b.g->add_output()->set_name("y");
  const std::string path = b.Save(dir / "floor.onnx");
  std::vector<float> x(64, 0.5f);
  std::vector<int64_t> shape = {1, 1, 8, 8};
  EXPECT_NO_THROW(RunRuntime(path, x, shape));
  EXPECT_THAT([&] { TorchForwardOnnx(path, x, shape); },
              ThrowsMessage<runtime::UnsupportedError>(AllOf(HasSubstr("node 'round' (Floor, #1)"),
                                                              HasSubstr("not supported by compress fine-tuning"))));
}

TEST(OnnxFineTuneErrors, BadEpochsAndUnwritableNothing) {
  const fs::path dir = TempDir();
  const std::string in = WriteCnn(dir / "cnn.onnx", true), out = (dir / "never.onnx").string();
  FineTuneOptions o = Tiny();
  o.epochs = 0;
  std::ostringstream log;
  EXPECT_THAT([&] { FineTuneOnnx(in, out, o, log); }, ThrowsMessage<Error>(HasSubstr("--epochs must be >= 1, got 0")));
  EXPECT_FALSE(fs::exists(out));
}

// compress --admm (AdmmCompressOnnx): the dense tiny cnn to conv2 pruned
// and quantized, fc1 permdiag; every round recorded; the written file
// satisfies the SPEC exactly and runs in the runtime as LibTorch runs it.
FineTuneOptions TinyAdmm(const std::string& spec) {
  FineTuneOptions o = Tiny();
  o.epochs = 4;
  o.admm_epochs = 2;
  o.admm_iter = 8;  // 32 batches per epoch: 8 rounds
  o.rho = 0.05;
  o.rho_mult = 1.5;
  o.compress = spec;
  return o;
}

TEST(OnnxAdmmCompress, MeetsTheSpecAndRunsInTheRuntime) {
  const fs::path dir = TempDir() / "admm";
  fs::create_directories(dir);
  const std::string in = WriteCnn(dir / "dense.onnx", true), out = (dir / "admm.onnx").string();
  const std::string csv = (dir / "rounds.csv").string();
  std::ostringstream log;
  const FineTuneOptions o = TinyAdmm("conv2=prune:density=0.3:bits=3,fc1=permdiag:p=4");
  AdmmCompressResult r = AdmmCompressOnnx(in, out, o, csv, log);
  EXPECT_THAT(r.layers, ::testing::ElementsAre("conv2", "fc1"));
  ASSERT_EQ(r.rounds.size(), 8u) << log.str();
  for (std::size_t k = 0; k < r.rounds.size(); ++k) {
    EXPECT_EQ(r.rounds[k].round, static_cast<int64_t>(k + 1));
    EXPECT_EQ(r.rounds[k].step, static_cast<int64_t>(8 * (k + 1)));
    EXPECT_NEAR(r.rounds[k].rho, 0.05 * std::pow(1.5, static_cast<double>(k)), 1e-12);
    ASSERT_EQ(r.rounds[k].layer_residual.size(), 2u);
    EXPECT_TRUE(std::isfinite(r.rounds[k].residual));
  }
  EXPECT_LT(r.rounds.back().residual, r.rounds.front().residual) << log.str();
  EXPECT_NE(log.str().find("ADMM round   8 (step 64)"), std::string::npos) << log.str();
  // The CSV: a header and one row per round.
  const std::string text = runtime::ReadFileBytes(csv);
  EXPECT_EQ(text.rfind("round,step,rho,residual,residual_conv2,residual_fc1,train_loss,test_accuracy\n", 0), 0u);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 9);
  EXPECT_EQ(r.retrain.history.size(), 2u);
  ASSERT_EQ(r.projection.layers.size(), 4u);  // conv1, conv2, fc1, fc2
  EXPECT_EQ(r.projection.path, out);
  EXPECT_EQ(r.projection.file_bytes, static_cast<int64_t>(fs::file_size(out)));
  EXPECT_EQ(r.projection.layers[0].kept_energy, 1.0);  // dense
  for (int k : {1, 2}) {
    EXPECT_GT(r.projection.layers[k].kept_energy, 0.0) << r.projection.layers[k].name;
    EXPECT_LT(r.projection.layers[k].kept_energy, 1.0) << r.projection.layers[k].name;
  }

  // The SPEC, exactly: conv2 keeps round(0.3 · 540) weights on at most 2^3
  // levels, fc1 is permdiag p=4; the other layers stay dense.
  runtime::ModelInspection m = runtime::InspectCompressedLayers(runtime::ReadFileBytes(out), out);
  ASSERT_EQ(m.layers.size(), 2u);
  ASSERT_TRUE(m.layers[0].sparse.has_value());
  EXPECT_EQ(m.layers[0].op_type, "SparseConv");
  EXPECT_EQ(m.layers[0].sparse->nnz(), 162);
  EXPECT_GE(m.layers[0].codebook_size, 2);
  EXPECT_LE(m.layers[0].codebook_size, 8);
  std::set<float> levels(m.layers[0].sparse->values().begin(), m.layers[0].sparse->values().end());
  EXPECT_LE(levels.size(), 8u);
  ASSERT_TRUE(m.layers[1].permdiag.has_value());
  EXPECT_EQ(m.layers[1].p, 4);
  // It runs in the runtime as LibTorch runs it; no temporaries left.
  std::vector<float> x = Randn(3 * 64, 9, 1.0f);
  std::vector<int64_t> shape = {3, 1, 8, 8};
  EXPECT_TRUE(testing::AllNear<float>(RunRuntime(out, x, shape), TorchForwardOnnx(out, x, shape), 1e-4));
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  // The retraining kept the projection's structure and did not lose accuracy
  // on the synthetic set.
  EXPECT_GE(r.retrain.accuracy_after, r.retrain.accuracy_before) << log.str();
}

// The decoupled penalty and the rescaled dual on the ONNX path: rounds as
// before, the residual shrinking, the SPEC met.
TEST(OnnxAdmmCompress, DecoupledPenaltyWithRescaledDual) {
  const fs::path dir = TempDir() / "admm_decoupled";
  fs::create_directories(dir);
  const std::string in = WriteCnn(dir / "dense.onnx", true), out = (dir / "admm.onnx").string();
  std::ostringstream log;
  FineTuneOptions o = TinyAdmm("conv2=prune:density=0.3");
  o.admm_penalty = "decoupled";
  o.rescale_dual = true;
  o.rho = 20;  // c = lr·ρ per step
  AdmmCompressResult r = AdmmCompressOnnx(in, out, o, (dir / "rounds.csv").string(), log);
  ASSERT_EQ(r.rounds.size(), 8u) << log.str();
  EXPECT_LT(r.rounds.back().residual, r.rounds.front().residual) << log.str();
  runtime::ModelInspection m = runtime::InspectCompressedLayers(runtime::ReadFileBytes(out), out);
  ASSERT_EQ(m.layers.size(), 1u);
  ASSERT_TRUE(m.layers[0].sparse.has_value());
  EXPECT_EQ(m.layers[0].sparse->nnz(), 162);
  o.admm_penalty = "soft";
  EXPECT_THROW(AdmmCompressOnnx(in, (dir / "never.onnx").string(), o, "", log), Error);
  EXPECT_FALSE(fs::exists(dir / "never.onnx"));
}

TEST(OnnxAdmmCompress, RejectsBadInputBeforeWriting) {
  const fs::path dir = TempDir() / "admm_bad";
  fs::create_directories(dir);
  const std::string in = WriteCnn(dir / "dense.onnx", true), out = (dir / "never.onnx").string();
  std::ostringstream log;
  auto fails = [&](FineTuneOptions o, const std::string& what) {
    try {
      AdmmCompressOnnx(in, out, o, (dir / "never.csv").string(), log);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  FineTuneOptions o = TinyAdmm("conv2=prune:density=0.3");
  o.rho = 0;
  fails(o, "--rho must be > 0, got 0");
  o.rho = -1;
  fails(o, "--rho must be > 0, got -1");
  const std::pair<const char*, const char*> bad_specs[] = {
      {"conv2=prune:density=0", "density=0"},
      {"conv2=prune:density=1.5", "must be a number in (0, 1]"},
      {"conv2=prune:density=0.3:bits=9", "must be an integer in [1, 8]"},
      {"conv2=prune:density=0.3:bits=0", "must be an integer in [1, 8]"},
      {"conv7=prune:density=0.3", "conv7"},
      {"dense", "compresses no layer"}};
  for (const auto& [spec, what] : bad_specs) fails(TinyAdmm(spec), what);
  o = TinyAdmm("conv2=prune:density=0.3");
  o.epochs = 1;
  fails(o, "ADMM needs --epochs >= 2");
  o = TinyAdmm("conv2=prune:density=0.3");
  o.break_even_density = 0.2;
  o.refuse_break_even = true;
  fails(o, "layer 'conv2' asks for density 0.3 >= its break-even density 0.2 on --break-even");
  // Per layer (the CLI's --break-even cpu|eie-*): conv2 asked as its im2col
  // matrix 10 x 6·3·3 over its 4x4 output pixels, fc1 as 18 x 160.
  o = TinyAdmm("conv2=prune:density=0.3,fc1=prune:density=0.3");
  std::vector<BreakEvenQuery> asked;
  o.break_even_for = [&](const BreakEvenQuery& q) {
    asked.push_back(q);
    return BreakEvenAnswer{q.layer == "fc1" ? 0.2 : 0.5, ""};
  };
  o.break_even_platform = "test-platform";
  o.refuse_break_even = true;
  fails(o, "layer 'fc1' asks for density 0.3 >= its break-even density 0.2 on test-platform");
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[0].layer, "conv2");
  EXPECT_EQ(asked[0].rows, 10);
  EXPECT_EQ(asked[0].cols, 54);
  EXPECT_EQ(asked[0].columns, 16);
  EXPECT_EQ(asked[1].layer, "fc1");
  EXPECT_EQ(asked[1].rows, 18);
  EXPECT_EQ(asked[1].cols, 160);
  EXPECT_EQ(asked[1].columns, 1);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(dir / "never.csv"));
}

#ifdef PERMDNN_BIN
TEST(OnnxAdmmCompress, CliRejectsBadRho) {
  const fs::path dir = TempDir();
  const std::string in = WriteCnn(dir / "cli_admm.onnx", true);
  const fs::path err = dir / "cli_admm.err";
  const std::string cmd = std::string(PERMDNN_BIN) + " compress " + in +
                          " --admm --compress conv2=prune:density=0.2 --epochs 2 --rho -0.5 --out " +
                          (dir / "cli_admm_out.onnx").string() + " > /dev/null 2> " + err.string();
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::string msg = runtime::ReadFileBytes(err.string());
  EXPECT_NE(msg.find("--rho must be > 0, got -0.5"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir / "cli_admm_out.onnx"));
}

TEST(OnnxFineTuneErrors, CliRejectsBadEpochs) {
  const fs::path dir = TempDir();
  const std::string in = WriteCnn(dir / "cli.onnx", true);
  const fs::path err = dir / "cli.err";
  const std::string cmd = std::string(PERMDNN_BIN) + " compress " + in + " --compress conv2=permdiag:p=2 --out " +
                          (dir / "cli_out.onnx").string() + " --epochs 0 > /dev/null 2> " + err.string();
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::string msg = runtime::ReadFileBytes(err.string());
  EXPECT_NE(msg.find("--epochs must be >= 1"), std::string::npos) << msg;
}
#endif

}  // namespace
}  // namespace permdnn::train
