// permdnn::runtime: export of synthetic run directories (custom ops vs
// --portable), batch invariance, int16, compress, and bad input.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "permdnn/core/npy.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "tests/support/compare.h"

namespace permdnn::runtime {
namespace {

namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("permdnn_runtime_test_" + name + "_" + std::to_string(::getpid()));
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

void WriteText(const fs::path& p, const std::string& s) {
  std::ofstream(p) << s;
}

// mlp: flatten -> fc1 (permdiag p) -> relu -> fc2 (dense). Returns the
// matrices for a reference computation.
struct Mlp {
  PermDiagMatrix w1;
  std::vector<float> b1, w2, b2;
  int64_t in = 36, hidden = 20, out = 10;
};

Mlp WriteMlpRun(const fs::path& dir, int p, uint16_t bad_offset = 0) {
  Mlp m;
  m.w1 = PermDiagMatrix::Random(m.hidden, m.in, p, 7);
  if (bad_offset) m.w1.offsets()[0] = bad_offset;
  m.b1 = Randn(m.hidden, 8, 0.1f);
  m.w2 = Randn(m.out * m.hidden, 9, 0.3f);
  m.b2 = Randn(m.out, 10, 0.1f);
  WriteNpy<float>((dir / "tensors/fc1.values.npy").string(), m.w1.values(),
                  {m.w1.row_blocks(), m.w1.col_blocks(), p});
  WriteNpy<uint16_t>((dir / "tensors/fc1.offsets.npy").string(), m.w1.offsets(),
                     {m.w1.row_blocks(), m.w1.col_blocks()});
  WriteNpy<float>((dir / "tensors/fc1.bias.npy").string(), m.b1, {m.hidden});
  WriteNpy<float>((dir / "tensors/fc2.weight.npy").string(), m.w2, {m.out, m.hidden});
  WriteNpy<float>((dir / "tensors/fc2.bias.npy").string(), m.b2, {m.out});
  WriteText(dir / "model.json", fmt::format(R"({{
  "format": "permdnn-run/1", "model": "mlp",
  "input": {{"shape": [1, 6, 6], "layout": "NCHW", "scale": 0.00392156862745098, "mean": 0.286, "std": 0.353}},
  "num_classes": 10,
  "layers": [
    {{"name": "flatten", "type": "flatten"}},
    {{"name": "fc1", "type": "linear", "in": 36, "out": 20, "compress": {{"kind": "permdiag", "p": {}}},
     "tensors": {{"values": "tensors/fc1.values.npy", "offsets": "tensors/fc1.offsets.npy", "bias": "tensors/fc1.bias.npy"}}}},
    {{"name": "relu1", "type": "relu"}},
    {{"name": "drop", "type": "dropout"}},
    {{"name": "fc2", "type": "linear", "in": 20, "out": 10, "compress": {{"kind": "dense"}},
     "tensors": {{"weight": "tensors/fc2.weight.npy", "bias": "tensors/fc2.bias.npy"}}}}
  ]}})",
                                            p));
  return m;
}

std::vector<float> MlpReference(const Mlp& m, const std::vector<float>& x, int64_t batch) {
  std::vector<float> w1 = m.w1.ToDense(), y(batch * m.out);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<double> h(m.hidden);
    for (int64_t r = 0; r < m.hidden; ++r) {
      double s = m.b1[r];
      for (int64_t c = 0; c < m.in; ++c) s += double(w1[r * m.in + c]) * x[b * m.in + c];
      h[r] = std::max(0.0, s);
    }
    for (int64_t o = 0; o < m.out; ++o) {
      double s = m.b2[o];
      for (int64_t r = 0; r < m.hidden; ++r) s += double(m.w2[o * m.hidden + r]) * h[r];
      y[b * m.out + o] = static_cast<float>(s);
    }
  }
  return y;
}

std::vector<float> RunModel(Model& model, const std::vector<float>& x, std::vector<int64_t> shape) {
  std::vector<float> y(NumElements(model.OutputShape(shape)));
  model.Run(x, shape, y);
  return y;
}

void ExpectNear(const std::vector<float>& want, const std::vector<float>& got, double tol) {
  ASSERT_EQ(want.size(), got.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(want[i], got[i], tol) << "first bad index " << i;
}

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RuntimeExport, MlpCustomAndPortableMatchReference) {
  for (int p : {4, 8}) {
    fs::path dir = TempDir("mlp" + std::to_string(p));
    Mlp m = WriteMlpRun(dir, p);
    ExportReport custom = ExportRun(dir.string(), (dir / "custom.onnx").string());
    ExportReport portable = ExportRun(dir.string(), (dir / "portable.onnx").string(), {.portable = true});
    // File size reflects the compression of fc1.
    EXPECT_LT(custom.file_bytes, portable.file_bytes);
    EXPECT_EQ(custom.layers[1].op, "PermDiagMatMul");
    EXPECT_EQ(portable.layers[1].op, "Gemm");
    Model a = Model::Load((dir / "custom.onnx").string());
    Model b = Model::Load((dir / "portable.onnx").string());
    EXPECT_EQ(a.Summary().compressed_nodes, 1);
    EXPECT_EQ(b.Summary().compressed_nodes, 0);
    EXPECT_FALSE(a.Metadata("permdnn.preprocess").empty());
    // 1 and 3 run on the row pack, 64 and 128 on the lanes pack where the
    // kernel table picks the lanes row for them (AVX-512; AVX2 at p = 4 and 16),
    // else on the row-major matrix, 16 on the matrix. The first crossing
    // converts and drops the layout before; from the second on the layouts
    // are kept (kernels::PermDiagLanesPack, ops_permdiag.cc).
    for (int64_t batch : {1, 3, 64, 16, 1, 64, 128, 16, 3}) {
      std::vector<float> x = Randn(batch * 36, 100 + batch);
      std::vector<float> want = MlpReference(m, x, batch);
      ExpectNear(want, RunModel(a, x, {batch, 1, 6, 6}), 1e-4);
      ExpectNear(want, RunModel(b, x, {batch, 1, 6, 6}), 1e-4);
      // The node names the lanes row exactly at the batches of 64 where the
      // target has it for p (16 lanes: 4, 8, 16; 8 lanes: 4, 16).
      const std::vector<NodeProfile> profile = a.Profile();
      const NodeProfile* fc = nullptr;
      for (const NodeProfile& n : profile)
        if (n.op_type == "PermDiagMatMul") fc = &n;
      ASSERT_NE(fc, nullptr);
      const int64_t samples = kernels::simd::LanesRowSamples();
      const bool lanes = batch % 64 == 0 && (samples == 64 || (samples == 32 && (p == 4 || p == 16)));
      EXPECT_EQ(fc->kernel.starts_with("permdiag.matmul_rows.lanes"), lanes) << fc->kernel << " batch " << batch;
    }
    fs::remove_all(dir);
  }
}

TEST(RuntimeExport, ConvModelCustomEqualsPortable) {
  fs::path dir = TempDir("conv");
  const int p = 2;
  // conv1 dense 2->4, bn, relu, conv2 permdiag 4->6 (p=2), maxpool 2, flatten, fc permdiag 54->10 (p=4).
  auto w = [&](const std::string& f, const std::vector<float>& v, std::vector<int64_t> s) {
    WriteNpy<float>((dir / "tensors" / f).string(), v, s);
  };
  w("c1.w.npy", Randn(4 * 2 * 9, 1, 0.3f), {4, 2, 3, 3});
  w("c1.b.npy", Randn(4, 2, 0.1f), {4});
  w("bn.w.npy", Randn(4, 3, 0.2f), {4});
  w("bn.b.npy", Randn(4, 4, 0.2f), {4});
  w("bn.m.npy", Randn(4, 5, 0.2f), {4});
  std::vector<float> var = Randn(4, 6, 0.2f);
  for (float& v : var) v = 0.5f + std::fabs(v);
  w("bn.v.npy", var, {4});
  // conv2: mb = 3, nb = 2, p = 2, 3x3 kernels.
  w("c2.values.npy", Randn(3 * 2 * 2 * 9, 7, 0.3f), {3, 2, 2, 3, 3});
  std::vector<uint16_t> off2 = {0, 1, 1, 0, 1, 1};
  WriteNpy<uint16_t>((dir / "tensors/c2.offsets.npy").string(), off2, {3, 2});
  w("c2.b.npy", Randn(6, 8, 0.1f), {6});
  PermDiagMatrix fc = PermDiagMatrix::Random(10, 54, 4, 9);
  w("fc.values.npy", {fc.values().begin(), fc.values().end()}, {fc.row_blocks(), fc.col_blocks(), 4});
  WriteNpy<uint16_t>((dir / "tensors/fc.offsets.npy").string(), fc.offsets(), {fc.row_blocks(), fc.col_blocks()});
  WriteText(dir / "model.json", R"({
  "format": "permdnn-run/1", "model": "cnn", "num_classes": 10,
  "input": {"shape": [2, 6, 6], "layout": "NCHW"},
  "layers": [
    {"name": "conv1", "type": "conv2d", "in": 2, "out": 4, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
     "compress": {"kind": "dense"}, "tensors": {"weight": "tensors/c1.w.npy", "bias": "tensors/c1.b.npy"}},
    {"name": "bn1", "type": "batchnorm2d", "channels": 4, "eps": 1e-5,
     "tensors": {"weight": "tensors/bn.w.npy", "bias": "tensors/bn.b.npy", "running_mean": "tensors/bn.m.npy",
                 "running_var": "tensors/bn.v.npy"}},
    {"name": "relu1", "type": "relu"},
    {"name": "conv2", "type": "conv2d", "in": 4, "out": 6, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
     "compress": {"kind": "permdiag", "p": 2},
     "tensors": {"values": "tensors/c2.values.npy", "offsets": "tensors/c2.offsets.npy", "bias": "tensors/c2.b.npy"}},
    {"name": "pool1", "type": "maxpool2d", "kernel": [2, 2], "stride": [2, 2]},
    {"name": "flatten", "type": "flatten"},
    {"name": "fc", "type": "linear", "in": 54, "out": 10, "compress": {"kind": "permdiag", "p": 4},
     "tensors": {"values": "tensors/fc.values.npy", "offsets": "tensors/fc.offsets.npy"}}
  ]})");
  (void)p;
  ExportReport custom = ExportRun(dir.string(), (dir / "custom.onnx").string());
  ExportReport portable = ExportRun(dir.string(), (dir / "portable.onnx").string(), {.portable = true});
  EXPECT_EQ(custom.layers[3].op, "PermDiagConv");
  EXPECT_EQ(portable.layers[3].op, "Conv");
  EXPECT_LT(custom.file_bytes, portable.file_bytes);
  Model a = Model::Load((dir / "custom.onnx").string());
  Model b = Model::Load((dir / "portable.onnx").string());
  for (int64_t batch : {1, 5}) {
    std::vector<float> x = Randn(batch * 72, 50 + batch);
    ExpectNear(RunModel(b, x, {batch, 2, 6, 6}), RunModel(a, x, {batch, 2, 6, 6}), 1e-4);
  }
  fs::remove_all(dir);
}

TEST(RuntimePlan, ArenaPlannedOncePerShape) {
  fs::path dir = TempDir("plan");
  WriteMlpRun(dir, 4);
  ExportRun(dir.string(), (dir / "m.onnx").string());
  Model model = Model::Load((dir / "m.onnx").string());
  std::vector<float> x64 = Randn(64 * 36, 1), x1 = Randn(36, 2);
  std::vector<float> y64 = RunModel(model, x64, {64, 1, 6, 6});
  const int64_t big = model.ArenaBytes();
  EXPECT_GT(big, 0);
  // Reuse: the arena holds less than all intermediates of batch 64 would
  // (flatten 36 + fc1 20 + relu 20 + identity 20 + fc2 10 floats per sample).
  EXPECT_LT(big, 64 * (36 + 20 + 20 + 20 + 10) * 4);
  RunModel(model, x1, {1, 1, 6, 6});
  EXPECT_EQ(model.ArenaBytes(), big) << "the arena only grows";
  EXPECT_EQ(RunModel(model, x64, {64, 1, 6, 6}), y64) << "re-planning changes nothing";
  fs::remove_all(dir);
}

// A batch run on two threads whose tensors are small gives every tensor its
// own region (each thread's samples stay in the cache lines it wrote the
// run before); one thread, or a batch smaller than the threads, reuses.
TEST(RuntimePlan, SmallBatchRunOnTwoThreadsKeepsEveryTensor) {
  fs::path dir = TempDir("plan2");
  WriteMlpRun(dir, 4);
  ExportRun(dir.string(), (dir / "m.onnx").string());
  // (Split operators: batch parallelism would run the batch on replicas,
  // `one` too once SetThreads(2) below, and the split check adds a
  // one-thread replica's arena where it measures.)
  Model one = Model::Load((dir / "m.onnx").string(), {.batch_parallel = false, .split_check = false});
  Model two = Model::Load((dir / "m.onnx").string(), {.threads = 2, .batch_parallel = false, .split_check = false});
  Model two_b1 =
      Model::Load((dir / "m.onnx").string(), {.threads = 2, .batch_parallel = false, .split_check = false});
  Model one_b1 = Model::Load((dir / "m.onnx").string());
  std::vector<float> x64 = Randn(64 * 36, 1), x1 = Randn(36, 2);
  ExpectNear(RunModel(two, x64, {64, 1, 6, 6}), RunModel(one, x64, {64, 1, 6, 6}), 1e-5);
  EXPECT_GE(two.ArenaBytes(), 64 * (36 + 20 + 20 + 20 + 10) * 4 - 5 * 64 * 4) << "every tensor in its own region";
  EXPECT_LT(one.ArenaBytes(), two.ArenaBytes()) << "one thread reuses dead tensors' regions";
  RunModel(one_b1, x1, {1, 1, 6, 6});
  RunModel(two_b1, x1, {1, 1, 6, 6});
  EXPECT_EQ(two_b1.ArenaBytes(), one_b1.ArenaBytes()) << "batch 1 on two threads reuses as on one";
  // SetThreads re-plans: one thread, then two, lays the batch out as `two` does.
  one.SetThreads(2);
  ExpectNear(RunModel(one, x64, {64, 1, 6, 6}), RunModel(two, x64, {64, 1, 6, 6}), 1e-5);
  EXPECT_EQ(one.ArenaBytes(), two.ArenaBytes());
  // A max_arena_bytes that only the reusing plan fits keeps reuse.
  Model one64 = Model::Load((dir / "m.onnx").string());
  RunModel(one64, x64, {64, 1, 6, 6});
  ASSERT_LT(one64.ArenaBytes(), two.ArenaBytes());
  Model capped = Model::Load((dir / "m.onnx").string(),
                             {.threads = 2, .max_arena_bytes = one64.ArenaBytes(), .batch_parallel = false, .split_check = false});
  EXPECT_NO_THROW(RunModel(capped, x64, {64, 1, 6, 6}));
  EXPECT_EQ(capped.ArenaBytes(), one64.ArenaBytes());
  fs::remove_all(dir);
}

// PyTorch's x.view(x.size(0), -1) exports as Reshape(x, Concat(Shape(x)[0:1],
// [-1])) on an input with a symbolic batch: Shape folds from the planned
// shape, so the model loads and runs at every batch size.
TEST(RuntimePlan, ReshapeFedByShapeOfASymbolicInput) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(15);
  onnx::GraphProto& g = *m.mutable_graph();
  g.set_name("view");
  onnx::ValueInfoProto& in = *g.add_input();
  in.set_name("x");
  in.mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = in.mutable_type()->mutable_tensor_type()->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  shape->add_dim()->set_dim_value(2);
  shape->add_dim()->set_dim_value(3);
  onnx::ValueInfoProto& out = *g.add_output();
  out.set_name("y");
  out.mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  const std::vector<float> w = Randn(6 * 4, 21);
  onnx::TensorProto& wt = *g.add_initializer();
  wt.set_name("w");
  wt.set_data_type(onnx::TensorProto::FLOAT);
  wt.add_dims(6);
  wt.add_dims(4);
  for (float v : w) wt.add_float_data(v);
  onnx::TensorProto& minus1 = *g.add_initializer();
  minus1.set_name("minus1");
  minus1.set_data_type(onnx::TensorProto::INT64);
  minus1.add_dims(1);
  minus1.add_int64_data(-1);
  auto node = [&](const char* op, std::vector<std::string> ins, const char* o) -> onnx::NodeProto& {
    onnx::NodeProto& n = *g.add_node();
    n.set_op_type(op);
    n.set_name(o);
    for (const auto& i : ins) n.add_input(i);
    n.add_output(o);
    return n;
  };
  onnx::NodeProto& sh = node("Shape", {"x"}, "batch");
  onnx::AttributeProto* end = sh.add_attribute();
  end->set_name("end");
  end->set_type(onnx::AttributeProto::INT);
  end->set_i(1);
  onnx::AttributeProto* axis = node("Concat", {"batch", "minus1"}, "target").add_attribute();
  axis->set_name("axis");
  axis->set_type(onnx::AttributeProto::INT);
  axis->set_i(0);
  node("Reshape", {"x", "target"}, "flat");
  node("MatMul", {"flat", "w"}, "y");
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  Model model = Model::FromBytes(bytes, "view.onnx");
  for (int64_t batch : {3, 1, 5}) {
    SCOPED_TRACE(batch);
    const std::vector<float> x = Randn(batch * 6, 30 + batch);
    std::vector<float> want(batch * 4, 0.0f);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < 4; ++j)
        for (int64_t k = 0; k < 6; ++k) want[b * 4 + j] += x[b * 6 + k] * w[k * 4 + j];
    ASSERT_EQ(model.OutputShape(std::vector<int64_t>{batch, 2, 3}), (std::vector<int64_t>{batch, 4}));
    ExpectNear(want, RunModel(model, x, {batch, 2, 3}), 1e-5);
  }
}

// Batch 32 calibrates from the row-major matrix, batch 2 from the row pack.
class RuntimeInt16 : public ::testing::TestWithParam<int64_t> {};

TEST_P(RuntimeInt16, CloseToFloat) {
  fs::path dir = TempDir("int16_" + std::to_string(GetParam()));
  WriteMlpRun(dir, 4);
  ExportRun(dir.string(), (dir / "m.onnx").string());
  Model model = Model::Load((dir / "m.onnx").string());
  const int64_t batch = GetParam();
  std::vector<float> x = Randn(batch * 36, 3);
  std::vector<float> ref = RunModel(model, x, {batch, 1, 6, 6});
  model.EnableInt16(true);
  model.Calibrate(x, std::vector<int64_t>{batch, 1, 6, 6});
  ASSERT_TRUE(model.int16_ready());
  std::vector<float> q = RunModel(model, x, {batch, 1, 6, 6});
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < q.size(); ++i) {
    err += (q[i] - ref[i]) * double(q[i] - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  EXPECT_LT(err / norm, 1e-5) << "normalized MSE of int16 vs fp32";
  EXPECT_GT(err, 0.0) << "int16 path did not run";
  // On two threads (whole samples per thread, each on its own int16
  // staging): the same integer sums, so the same outputs.
  model.SetThreads(2);
  for (int round = 0; round < 3; ++round) EXPECT_EQ(RunModel(model, x, {batch, 1, 6, 6}), q) << "two threads";
  model.SetThreads(1);
  model.SetProfiling(true);
  RunModel(model, x, {batch, 1, 6, 6});
  bool saw = false;
  for (const auto& p : model.Profile()) saw = saw || p.kernel == "permdiag.matvec_i16.widened";
  EXPECT_TRUE(saw);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Batches, RuntimeInt16, ::testing::Values(32, 2));

TEST(RuntimeCompress, ProjectionMatchesDenseReconstruction) {
  fs::path dir = TempDir("compress");
  // A dense mlp: export a p=1 permdiag? Use the portable export of a permdiag
  // run: its fc1 Gemm then compresses back exactly (all energy kept).
  Mlp m = WriteMlpRun(dir, 4);
  ExportRun(dir.string(), (dir / "dense.onnx").string(), {.portable = true});
  CompressOptions o;
  o.spec = "fc1=permdiag:p=4";
  ExportReport r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c.onnx").string(), o);
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.layers[0].op, "PermDiagMatMul");
  EXPECT_NEAR(r.layers[0].kept_energy, 1.0, 1e-9);
  Model c = Model::Load((dir / "c.onnx").string());
  std::vector<float> x = Randn(4 * 36, 11);
  ExpectNear(MlpReference(m, x, 4), RunModel(c, x, {4, 1, 6, 6}), 1e-4);
  // A global method keeps the last layer dense.
  o.spec = "permdiag:p=2";
  r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c2.onnx").string(), o);
  EXPECT_EQ(r.layers[0].method, "permdiag:p=2");
  EXPECT_EQ(r.layers[1].method, "dense");
  // Named, the random dense fc2 is projected and loses energy.
  o.spec = "fc1=dense,fc2=permdiag:p=2";
  r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c3.onnx").string(), o);
  EXPECT_EQ(r.layers[1].op, "PermDiagMatMul");
  EXPECT_LT(r.layers[1].kept_energy, 1.0);
  EXPECT_GT(r.layers[1].kept_energy, 0.4);
  o.spec = "fc9=permdiag:p=2";
  EXPECT_NE(ErrorOf([&] { CompressOnnx((dir / "dense.onnx").string(), (dir / "c4.onnx").string(), o); }), "");
  fs::remove_all(dir);
}

// ---- Bad input ----------------------------------------------------------------

TEST(RuntimeBadInput, FilesAndBytes) {
  fs::path dir = TempDir("bad");
  WriteMlpRun(dir, 4);
  ExportRun(dir.string(), (dir / "m.onnx").string());
  const std::string bytes = ReadFileBytes((dir / "m.onnx").string());
  // Truncation at many points: always an Error, never a crash.
  for (std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{10}, bytes.size() / 3, bytes.size() / 2,
                          bytes.size() - 100, bytes.size() - 1})
    EXPECT_NE(ErrorOf([&] { Model::FromBytes(bytes.substr(0, cut), "cut"); }), "") << "cut at " << cut;
  EXPECT_NE(ErrorOf([&] { Model::FromBytes("\x93NUMPY\x01\x00", "x.npy"); }).find("NumPy"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { Model::FromBytes("PK\x03\x04garbage", "x.pt"); }).find("zip"), std::string::npos);
  std::mt19937 rng(1);
  for (int t = 0; t < 200; ++t) {
    std::string g(1 + rng() % 300, '\0');
    for (char& c : g) c = static_cast<char>(rng());
    EXPECT_NE(ErrorOf([&] { Model::FromBytes(g, "garbage"); }), "");
  }
  EXPECT_NE(ErrorOf([&] { Model::Load((dir / "missing.onnx").string()); }).find("cannot open"), std::string::npos);
  // NaN input and wrong-size input.
  Model model = Model::FromBytes(bytes, "m");
  std::vector<float> x(36, 0.5f), y(10);
  x[7] = std::nanf("");
  EXPECT_NE(ErrorOf([&] { model.Run(x, std::vector<int64_t>{1, 1, 6, 6}, y); }).find("NaN"), std::string::npos);
  std::vector<float> small(30, 0.f);
  EXPECT_NE(ErrorOf([&] { model.Run(small, std::vector<int64_t>{1, 1, 6, 6}, y); }), "");
  EXPECT_NE(ErrorOf([&] { model.Run(x, std::vector<int64_t>{1, 1, 5, 6}, y); }).find("shape"), std::string::npos);
  fs::remove_all(dir);
}

TEST(RuntimeBadInput, RunDirectories) {
  fs::path dir = TempDir("badrun");
  WriteMlpRun(dir, 4, /*bad_offset=*/4);  // offset == p
  std::string e = ErrorOf([&] { ExportRun(dir.string(), (dir / "m.onnx").string()); });
  EXPECT_NE(e.find("offset"), std::string::npos) << e;
  WriteMlpRun(dir, 4);
  WriteNpy<float>((dir / "tensors/fc2.weight.npy").string(), std::vector<float>(30, 0.f), {3, 10});
  e = ErrorOf([&] { ExportRun(dir.string(), (dir / "m.onnx").string()); });
  EXPECT_NE(e.find("expected [10, 20]"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "m.onnx"));
  e = ErrorOf([&] { ExportRun((dir / "nope").string(), (dir / "m.onnx").string()); });
  EXPECT_NE(e.find("not a directory"), std::string::npos) << e;
  fs::remove_all(dir);
}

// Hand-built ModelProtos for the graph-level errors.
onnx::ModelProto Gemm(bool with_weight, int64_t weight_rows) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  auto* in = g->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(1);
  tt->mutable_shape()->add_dim()->set_dim_value(2);
  tt->mutable_shape()->add_dim()->set_dim_value(4);
  if (with_weight) {
    auto* w = g->add_initializer();
    w->set_name("w");
    w->set_data_type(1);
    w->add_dims(weight_rows);
    w->add_dims(3);
    for (int k = 0; k < weight_rows * 3; ++k) w->add_float_data(0.5f);
  }
  auto* n = g->add_node();
  n->set_name("fc");
  n->set_op_type("Gemm");
  n->add_input("x");
  n->add_input("w");
  n->add_output("y");
  g->add_output()->set_name("y");
  return m;
}

TEST(RuntimeBadInput, GraphErrorsNameTheNode) {
  std::string s;
  Gemm(true, 4).SerializeToString(&s);
  Model ok = Model::FromBytes(s, "ok");
  std::vector<float> x(8, 1.0f), y(6);
  ok.Run(x, std::vector<int64_t>{2, 4}, y);
  EXPECT_FLOAT_EQ(y[0], 2.0f);
  Gemm(false, 4).SerializeToString(&s);
  std::string e = ErrorOf([&] { Model::FromBytes(s, "m"); });
  EXPECT_NE(e.find("node 'fc' (Gemm, #0)"), std::string::npos) << e;
  EXPECT_NE(e.find("'w' is missing"), std::string::npos) << e;
  Gemm(true, 5).SerializeToString(&s);
  e = ErrorOf([&] { Model::FromBytes(s, "m"); });
  EXPECT_NE(e.find("node 'fc' (Gemm, #0)"), std::string::npos) << e;
  EXPECT_NE(e.find("inner dimensions"), std::string::npos) << e;
  onnx::ModelProto m = Gemm(true, 4);
  m.mutable_graph()->mutable_node(0)->set_op_type("FancyOp");
  m.SerializeToString(&s);
  try {
    Model::FromBytes(s, "m");
    FAIL() << "no error";
  } catch (const UnsupportedError& u) {
    EXPECT_NE(std::string(u.what()).find("node 'fc' (FancyOp, #0): unsupported operator 'FancyOp'"), std::string::npos)
        << u.what();
  }
  // Raw data of the wrong size.
  m = Gemm(true, 4);
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->clear_float_data();
  w->set_raw_data(std::string(10, '\0'));
  m.SerializeToString(&s);
  e = ErrorOf([&] { Model::FromBytes(s, "m"); });
  EXPECT_NE(e.find("raw_data has 10"), std::string::npos) << e;
}

}  // namespace
}  // namespace permdnn::runtime
