// The planner binds a buffer to every value a node reads or writes, whatever
// the graph's edges look like. Each test is one shape of graph that once (or
// plausibly could) leave a value without its buffer: graph outputs that name
// a graph input, an initializer, a folded constant or the same value twice;
// nodes whose outputs the file leaves out or nobody reads; tensors with zero
// elements. The first two are the fuzzer's finds (fuzz/regressions/onnx/):
// a node with no outputs at all made Run write through a missing value.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "permdnn/core/error.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/runtime/model.h"
#include "tests/support/heap.h"
#include "tests/support/split_check_env.h"

namespace permdnn::runtime {
namespace {

// A small graph written through the ONNX protobuf API.
class GraphBuilder {
 public:
  GraphBuilder() {
    m_.set_ir_version(8);
    m_.add_opset_import()->set_version(13);
    g_ = m_.mutable_graph();
    g_->set_name("plan");
  }
  void Input(const std::string& name, std::vector<int64_t> shape, int elem = onnx::TensorProto::FLOAT) {
    auto* tt = g_->add_input()->mutable_type()->mutable_tensor_type();
    g_->mutable_input(g_->input_size() - 1)->set_name(name);
    tt->set_elem_type(elem);
    for (int64_t d : shape) {
      if (d < 0) tt->mutable_shape()->add_dim()->set_dim_param("N");
      else tt->mutable_shape()->add_dim()->set_dim_value(d);
    }
  }
  void Output(const std::string& name) { g_->add_output()->set_name(name); }
  void Init(const std::string& name, std::vector<int64_t> shape, std::vector<float> v) {
    auto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : shape) t->add_dims(d);
    for (float x : v) t->add_float_data(x);
  }
  // (dims: one dim of the values' count where empty)
  void InitInts(const std::string& name, std::vector<int64_t> v, int elem = onnx::TensorProto::INT64,
                std::vector<int64_t> dims = {}) {
    auto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(elem);
    if (dims.empty()) dims = {static_cast<int64_t>(v.size())};
    for (int64_t d : dims) t->add_dims(d);
    for (int64_t x : v) {
      if (elem == onnx::TensorProto::INT64) t->add_int64_data(x);
      else t->add_int32_data(static_cast<int32_t>(x));
    }
  }
  onnx::NodeProto& Node(const std::string& op, std::vector<std::string> ins, std::vector<std::string> outs) {
    onnx::NodeProto& n = *g_->add_node();
    n.set_op_type(op);
    n.set_name(op + std::to_string(g_->node_size()));
    for (const auto& i : ins) n.add_input(i);
    for (const auto& o : outs) n.add_output(o);
    return n;
  }
  // Custom-domain nodes (ai.permdnn ops) may follow.
  void ImportPermDnn() {
    auto* o = m_.add_opset_import();
    o->set_domain("ai.permdnn");
    o->set_version(1);
  }
  Model Load(const Options& options = {}) const {
    std::string bytes;
    EXPECT_TRUE(m_.SerializeToString(&bytes));
    return Model::FromBytes(bytes, "plan.onnx", options);
  }

 private:
  onnx::ModelProto m_;
  onnx::GraphProto* g_;
};

std::vector<float> Iota(int64_t n, float scale = 0.25f) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i % 7) * scale - 0.5f;
  return v;
}

std::vector<float> Floats(const Tensor& t) { return {t.f(), t.f() + t.size()}; }

// Softmax along the last axis of rows of width w.
std::vector<float> SoftmaxRows(const std::vector<float>& x, int64_t w) {
  std::vector<float> y(x.size());
  for (std::size_t r = 0; r < x.size() / w; ++r) {
    double mx = -1e30, sum = 0;
    for (int64_t j = 0; j < w; ++j) mx = std::max<double>(mx, x[r * w + j]);
    for (int64_t j = 0; j < w; ++j) sum += std::exp(x[r * w + j] - mx);
    for (int64_t j = 0; j < w; ++j) y[r * w + j] = static_cast<float>(std::exp(x[r * w + j] - mx) / sum);
  }
  return y;
}

void ExpectClose(const std::vector<float>& want, const std::vector<float>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (std::size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(want[i], got[i], 1e-6) << "index " << i;
}

// softmax-null-read.onnx: one Softmax node without outputs, the graph
// output names the graph input. ONNX Runtime returns the input.
TEST(RuntimePlan, NodeWithoutOutputsAndGraphOutputIsTheInput) {
  GraphBuilder b;
  b.Input("x", {3, 4, 5});
  b.Node("Softmax", {"x"}, {});
  b.Output("x");
  Model m = b.Load();
  const std::vector<float> x = Iota(60);
  std::vector<Tensor> out = m.Run({Tensor::Float({3, 4, 5}, x)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].shape(), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(Floats(out[0]), x);
  // Another batch than the declared one is an error, not a read past x.
  EXPECT_THROW(m.Run({Tensor::Float({67, 4, 5}, Iota(67 * 20))}), Error);
}

// copy-null-read.onnx: the same with a copying op (Squeeze), through the
// span API as `permdnn run` uses it.
TEST(RuntimePlan, CopyNodeWithoutOutputsSpanApi) {
  GraphBuilder b;
  b.Input("x", {4, 5});
  b.Node("Squeeze", {"x"}, {});
  b.Output("x");
  Model m = b.Load();
  const std::vector<float> x = Iota(20);
  std::vector<float> y(20, -9.0f);
  EXPECT_EQ(m.Run(x, std::vector<int64_t>{4, 5}, y), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(y, x);
}

// An output left out by an empty name, with a later node that still runs.
TEST(RuntimePlan, OmittedOutputNameStillGetsABuffer) {
  GraphBuilder b;
  b.Input("x", {2, 3});
  b.Node("Relu", {"x"}, {""});
  b.Node("Softmax", {"x"}, {"y"});
  b.Output("y");
  Model m = b.Load();
  const std::vector<float> x = Iota(6);
  EXPECT_EQ(m.Run({Tensor::Float({2, 3}, x)})[0].shape(), (std::vector<int64_t>{2, 3}));
  ExpectClose(SoftmaxRows(x, 3), Floats(m.Run({Tensor::Float({2, 3}, x)})[0]));
}

// Graph outputs naming the input, a computed value twice, and an Identity
// of it: four outputs that alias each other.
TEST(RuntimePlan, GraphOutputsAliasingInputAndEachOther) {
  GraphBuilder b;
  b.Input("x", {-1, 5});
  b.Node("Softmax", {"x"}, {"y"});
  b.Node("Identity", {"y"}, {"z"});
  b.Output("x");
  b.Output("y");
  b.Output("z");
  b.Output("y");
  Model m = b.Load();
  for (int64_t batch : {2, 7, 1}) {
    SCOPED_TRACE(batch);
    const std::vector<float> x = Iota(batch * 5);
    std::vector<Tensor> out = m.Run({Tensor::Float({batch, 5}, x)});
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(Floats(out[0]), x);
    ExpectClose(SoftmaxRows(x, 5), Floats(out[1]));
    EXPECT_EQ(Floats(out[2]), Floats(out[1]));
    EXPECT_EQ(Floats(out[3]), Floats(out[1]));
  }
}

// Graph outputs that are an initializer and a value folded from
// initializers alone (both constants, never in the arena).
TEST(RuntimePlan, GraphOutputsThatAreConstants) {
  GraphBuilder b;
  b.Input("x", {2, 2});
  b.Init("w", {2, 2}, {1, 2, 3, 4});
  b.Node("Add", {"w", "w"}, {"w2"});
  b.Node("Mul", {"x", "w2"}, {"y"});
  b.Output("w");
  b.Output("w2");
  b.Output("y");
  Model m = b.Load();
  std::vector<Tensor> out = m.Run({Tensor::Float({2, 2}, std::vector<float>{1, 1, 1, 1})});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(Floats(out[0]), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(Floats(out[1]), (std::vector<float>{2, 4, 6, 8}));
  EXPECT_EQ(Floats(out[2]), (std::vector<float>{2, 4, 6, 8}));
  // Through the span API the first output is the initializer.
  std::vector<float> y(4);
  m.Run(std::vector<float>{0, 0, 0, 0}, std::vector<int64_t>{2, 2}, y);
  EXPECT_EQ(y, (std::vector<float>{1, 2, 3, 4}));
}

// An integer graph input (a plan-time constant) returned as a graph output.
TEST(RuntimePlan, IntegerGraphInputAsOutput) {
  GraphBuilder b;
  b.Input("x", {2, 3});
  b.Input("shape", {2}, onnx::TensorProto::INT64);
  b.Node("Reshape", {"x", "shape"}, {"y"});
  b.Output("y");
  b.Output("shape");
  Model m = b.Load();
  const std::vector<float> x = Iota(6);
  std::vector<Tensor> out = m.Run({Tensor::Float({2, 3}, x), Tensor::Int64({2}, std::vector<int64_t>{3, 2})});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Floats(out[0]), x);
  EXPECT_EQ(std::vector<int64_t>(out[1].i(), out[1].i() + 2), (std::vector<int64_t>{3, 2}));
}

// Nodes whose outputs nobody reads still run on their own buffers and do
// not overwrite live values (the arena reuses memory of dead values only).
TEST(RuntimePlan, UnusedOutputsDoNotClobberLiveValues) {
  GraphBuilder b;
  b.Input("x", {3, 4});
  b.Node("Relu", {"x"}, {"r"});
  b.Node("Neg", {"x"}, {"unused1"});
  b.Node("Softmax", {"r"}, {"s"});
  b.Node("Exp", {"x"}, {"unused2"});
  b.Node("Add", {"r", "s"}, {"y"});
  b.Output("y");
  Model m = b.Load();
  const std::vector<float> x = Iota(12);
  std::vector<float> r(12);
  for (int i = 0; i < 12; ++i) r[i] = std::max(0.0f, x[i]);
  std::vector<float> want = SoftmaxRows(r, 4);
  for (int i = 0; i < 12; ++i) want[i] += r[i];
  ExpectClose(want, Floats(m.Run({Tensor::Float({3, 4}, x)})[0]));
}

// Zero-element tensors: a batch of 0 through data movement, elementwise,
// softmax, Gemm and Concat, and a zero-size initializer.
TEST(RuntimePlan, EmptyTensors) {
  GraphBuilder b;
  b.Input("x", {-1, 4});
  b.Init("w", {4, 3}, Iota(12));
  b.Init("none", {0, 3}, {});
  b.Node("Relu", {"x"}, {"r"});
  b.Node("Softmax", {"r"}, {"s"});
  b.Node("Gemm", {"s", "w"}, {"g"});
  b.Node("Concat", {"g", "none"}, {"y"}).add_attribute()->CopyFrom([] {
    onnx::AttributeProto a;
    a.set_name("axis");
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(0);
    return a;
  }());
  b.Node("Flatten", {"y"}, {"f"});
  b.Output("f");
  b.Output("none");
  Model m = b.Load();
  std::vector<Tensor> out = m.Run({Tensor::Float({0, 4}, std::vector<float>{})});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].shape(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(out[1].shape(), (std::vector<int64_t>{0, 3}));
  // And the same model at batch 2 afterwards (a re-plan).
  std::vector<Tensor> two = m.Run({Tensor::Float({2, 4}, Iota(8))});
  EXPECT_EQ(two[0].shape(), (std::vector<int64_t>{2, 3}));
}

// A node that declares more outputs than its op has is an error naming it.
TEST(RuntimePlan, ExtraOutputIsAnErrorNamingTheNode) {
  GraphBuilder b;
  b.Input("x", {2, 3});
  b.Node("Relu", {"x"}, {"y", "y2"});
  b.Output("y");
  try {
    b.Load();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("output 'y2' got no shape"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Relu"), std::string::npos) << e.what();
  }
}

// onnx_struct/slice-float-starts-read-as-int64.onnx: a constant input of the
// wrong kind (float starts) was read as int64, past its 4-byte storage.
TEST(RuntimePlan, ConstantInputOfTheWrongDtypeIsAnErrorNamingTheNode) {
  GraphBuilder b;
  b.Input("x", {4, 6});
  b.Init("starts", {1}, {1.0f});
  b.InitInts("ends", {3});
  b.Node("Slice", {"x", "starts", "ends"}, {"y"});
  b.Output("y");
  try {
    b.Load();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(starts) must be an integer tensor, got float32"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("Slice"), std::string::npos) << e.what();
  }
  GraphBuilder c;  // Clip's min must be one float
  c.Input("x", {2, 3});
  c.Init("lo", {0}, {});
  c.Node("Clip", {"x", "lo"}, {"y"});
  c.Output("y");
  EXPECT_THROW(c.Load(), Error);
}

// onnx_struct/flatten-zero-size-huge-dims.onnx: a zero-size shape carried
// dims whose partial products overflow int64.
TEST(RuntimePlan, ShapeLimitCountsTheNonZeroDims) {
  EXPECT_EQ(ShapeProblem(std::vector<int64_t>{0, int64_t{1} << 20, int64_t{1} << 20}), "");
  EXPECT_NE(ShapeProblem(std::vector<int64_t>{0, int64_t{1} << 62, 4}), "");
  EXPECT_NE(ShapeProblem(std::vector<int64_t>{2, -1}), "");
  GraphBuilder b;
  b.Input("x", {0, -1, 4});
  b.Node("Flatten", {"x"}, {"y"});
  b.Output("y");
  Model m = b.Load();
  EXPECT_THROW(m.Run({Tensor(DType::kFloat32, {0, int64_t{1} << 62, 4})}), Error);
  EXPECT_EQ(m.Run({Tensor(DType::kFloat32, {0, 5, 4})})[0].shape(), (std::vector<int64_t>{0, 20}));
}

// onnx/reshape-shape-product-overflow.onnx: a Reshape target whose known
// dims multiply past int64 (signed overflow while inferring the -1).
TEST(RuntimePlan, ReshapeTargetOverflowIsAnError) {
  GraphBuilder b;
  b.Input("x", {2, 3});
  b.InitInts("shape", {int64_t{1} << 40, int64_t{1} << 40, -1});
  b.Node("Reshape", {"x", "shape"}, {"y"});
  b.Output("y");
  try {
    b.Load();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more elements than an int64 counts"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Reshape"), std::string::npos) << e.what();
  }
}

// onnx_struct/transpose-perm-on-scalar.onnx: a rank-0 input with a
// non-empty perm skipped the permutation check (no axis to loop over) and
// Run indexed the empty strides.
TEST(RuntimePlan, TransposePermMustMatchTheRank) {
  for (std::vector<int64_t> perm : {std::vector<int64_t>{1}, std::vector<int64_t>{0}}) {
    GraphBuilder b;
    b.Input("x", {});
    auto& n = b.Node("Transpose", {"x"}, {"y"});
    auto* a = n.add_attribute();
    a->set_name("perm");
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t v : perm) a->add_ints(v);
    b.Output("y");
    try {
      Model m = b.Load();
      m.Run({Tensor::Float({}, std::vector<float>{1.5f})});
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not a permutation of the input's 0 axes"), std::string::npos)
          << e.what();
    }
  }
}

// onnx_tools/conv-empty-batch-split.onnx: a Conv planned on oneDNN's
// blocked layout split an empty batch over threads (division by zero); an
// empty batch now runs the reference loops, and a later batch the fast path.
TEST(RuntimePlan, ConvOnAnEmptyBatch) {
  GraphBuilder b;
  b.Input("x", {-1, 16, 6, 6});
  b.Init("w", {16, 16, 3, 3}, Iota(16 * 16 * 9, 0.01f));
  auto& n = b.Node("Conv", {"x", "w"}, {"c"});
  auto* a = n.add_attribute();
  a->set_name("pads");
  a->set_type(onnx::AttributeProto::INTS);
  for (int k = 0; k < 4; ++k) a->add_ints(1);
  b.Node("Relu", {"c"}, {"y"});
  b.Output("y");
  Model m = b.Load();
  EXPECT_EQ(m.Run({Tensor(DType::kFloat32, {0, 16, 6, 6})})[0].shape(), (std::vector<int64_t>{0, 16, 6, 6}));
  EXPECT_EQ(m.Run({Tensor::Float({2, 16, 6, 6}, Iota(2 * 16 * 36))})[0].shape(),
            (std::vector<int64_t>{2, 16, 6, 6}));
}


// Micro-batching (Options::micro_batch): a per-sample graph run in passes
// of fewer samples gives the whole batch's outputs, through both APIs.
GraphBuilder PerSampleCnn() {
  GraphBuilder b;
  b.Input("x", {-1, 2, 6, 6});
  b.Init("w", {4, 2, 3, 3}, Iota(72, 0.1f));
  b.Init("bias", {4}, {0.1f, -0.2f, 0.3f, 0.0f});
  auto* pads = b.Node("Conv", {"x", "w", "bias"}, {"c"}).add_attribute();
  pads->set_name("pads");
  pads->set_type(onnx::AttributeProto::INTS);
  for (int k = 0; k < 4; ++k) pads->add_ints(1);
  b.Node("Relu", {"c"}, {"r"});
  b.Node("GlobalAveragePool", {"r"}, {"g"});
  b.Node("Flatten", {"g"}, {"f"});
  b.Init("fw", {3, 4}, Iota(12, 0.3f));
  b.Init("fb", {3}, {0.0f, 0.5f, -0.5f});
  auto& gemm = b.Node("Gemm", {"f", "fw", "fb"}, {"z"});
  auto* tb = gemm.add_attribute();
  tb->set_name("transB");
  tb->set_type(onnx::AttributeProto::INT);
  tb->set_i(1);
  b.Node("Softmax", {"z"}, {"y"});
  b.Output("y");
  return b;
}

// Runs `split` on x twice (both APIs; the second run reuses the plans):
// the outputs equal `want`, count(split) is `expect` after each run, and a
// span too short for the whole batch's output (not one pass's or share's)
// is an error.
void ExpectSplitRunsMatch(Model& split, const std::vector<int64_t>& shape, const std::vector<float>& x,
                          const Tensor& want, int64_t (*count)(const Model&), int64_t expect) {
  const int64_t batch = shape[0];
  for (int rep = 0; rep < 2; ++rep) {
    const std::vector<Tensor> got = split.Run({Tensor::Float(shape, x)});
    EXPECT_EQ(count(split), expect) << "batch " << batch;
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].shape(), want.shape());
    ExpectClose(Floats(want), Floats(got[0]));
    std::vector<float> y(static_cast<std::size_t>(batch * 3), -9.0f);
    EXPECT_EQ(split.OutputShape(shape), (std::vector<int64_t>{batch, 3}));
    EXPECT_EQ(split.Run(x, shape, y), (std::vector<int64_t>{batch, 3}));
    EXPECT_EQ(count(split), expect) << "batch " << batch;
    ExpectClose(Floats(want), y);
    std::vector<float> short_y(static_cast<std::size_t>(batch * 3 - 1));
    EXPECT_THROW(split.Run(x, shape, short_y), Error);
  }
}

TEST(RuntimePlan, MicroBatchPassesGiveTheWholeBatchsOutputs) {
  const GraphBuilder b = PerSampleCnn();
  Options whole_opt;
  whole_opt.micro_batch = 0;
  Model whole = b.Load(whole_opt);
  for (int64_t cap : {2, 3, 8}) {
    Options opt;
    opt.micro_batch = cap;
    Model split = b.Load(opt);
    for (int64_t batch : {8, 7, 1}) {
      const std::vector<int64_t> shape = {batch, 2, 6, 6};
      const std::vector<float> x = Iota(batch * 72, 0.37f);
      const std::vector<Tensor> want = whole.Run({Tensor::Float(shape, x)});
      EXPECT_EQ(whole.SamplesPerPass(), batch);
      // The pass is the largest divisor of the batch up to the cap.
      int64_t pass = std::min(cap, batch);
      while (batch % pass != 0) --pass;
      SCOPED_TRACE("cap " + std::to_string(cap));
      ExpectSplitRunsMatch(split, shape, x, want[0], [](const Model& m) { return m.SamplesPerPass(); }, pass);
    }
  }
}

// Softmax over the batch axis of an [N, 4] input: it mixes the samples.
GraphBuilder SoftmaxOverTheBatch() {
  GraphBuilder b;
  b.Input("x", {-1, 4});
  auto* a = b.Node("Softmax", {"x"}, {"y"}).add_attribute();
  a->set_name("axis");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(0);
  b.Output("y");
  return b;
}

// A Reshape of an [N, 8] input to a constant shape that holds the batch.
GraphBuilder ReshapeToFourRows() {
  GraphBuilder b;
  b.Input("x", {-1, 8});
  b.InitInts("s", {4, -1});
  b.Node("Reshape", {"x", "s"}, {"y"});
  b.Output("y");
  return b;
}

// The softmax over 8 samples: each column of the 8 x 4 output sums to 1.
void ExpectColumnsSumToOne(const std::vector<float>& y) {
  for (int j = 0; j < 4; ++j) {
    double sum = 0;
    for (int r = 0; r < 8; ++r) sum += y[r * 4 + j];
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
}

// Graphs whose nodes mix the samples run whole, whatever the option asks.
TEST(RuntimePlan, MicroBatchKeepsGraphsThatMixSamplesWhole) {
  Options opt;
  opt.micro_batch = 2;
  const std::vector<float> x = Iota(32, 0.4f);
  {  // Softmax over the batch axis.
    Model m = SoftmaxOverTheBatch().Load(opt);
    std::vector<float> y(32);
    m.Run(x, std::vector<int64_t>{8, 4}, y);
    EXPECT_EQ(m.SamplesPerPass(), 8);
    ExpectColumnsSumToOne(y);
  }
  {  // Broadcasting an activation of lower rank: z[i][j] = x[i] + x[j],
     // then averaged over j, a mean over the whole batch.
    GraphBuilder b;
    b.Input("x", {-1, 4});
    b.InitInts("ax", {1});
    b.Node("Unsqueeze", {"x", "ax"}, {"u"});
    b.Node("Add", {"u", "x"}, {"z"});
    auto* perm = b.Node("Transpose", {"z"}, {"t"}).add_attribute();
    perm->set_name("perm");
    perm->set_type(onnx::AttributeProto::INTS);
    for (int64_t d : {0, 2, 1}) perm->add_ints(d);
    b.Node("GlobalAveragePool", {"t"}, {"y"});
    b.Output("y");
    Model m = b.Load(opt);
    const std::vector<Tensor> out = m.Run({Tensor::Float({8, 4}, x)});
    EXPECT_EQ(m.SamplesPerPass(), 8);
    ASSERT_EQ(out[0].shape(), (std::vector<int64_t>{8, 4, 1}));
    for (int i = 0; i < 8; ++i)
      for (int c = 0; c < 4; ++c) {
        double mean = 0;
        for (int j = 0; j < 8; ++j) mean += (x[i * 4 + c] + x[j * 4 + c]) / 8.0;
        EXPECT_NEAR(out[0].f()[i * 4 + c], mean, 1e-5);
      }
  }
  {  // A constant operand indexed by sample: a pass's plan cannot broadcast
     // it (the planner's error is caught), the batch runs whole.
    GraphBuilder b;
    b.Input("x", {-1, 4});
    b.Init("c", {8, 4}, Iota(32, 1.0f));
    b.Node("Add", {"x", "c"}, {"y"});
    b.Output("y");
    Model m = b.Load(opt);
    std::vector<float> y(32);
    m.Run(x, std::vector<int64_t>{8, 4}, y);
    EXPECT_EQ(m.SamplesPerPass(), 8);
    const std::vector<float> c = Iota(32, 1.0f);
    for (int i = 0; i < 32; ++i) EXPECT_FLOAT_EQ(y[i], x[i] + c[i]);
  }
  {  // A Reshape to a constant shape that holds the batch: a pass would
     // reshape [2, 8] to [4, 4], so the batch runs whole.
    Model m = ReshapeToFourRows().Load(opt);
    const std::vector<Tensor> out = m.Run({Tensor::Float({4, 8}, x)});
    EXPECT_EQ(m.SamplesPerPass(), 4);
    EXPECT_EQ(out[0].shape(), (std::vector<int64_t>{4, 8}));
    EXPECT_EQ(Floats(out[0]), x);
  }
}

// Every graph output gets the whole batch, through the Tensor API, whether
// passes (micro-batching) or shares on two threads (batch parallelism) cut
// it; a NaN in the fifth sample is named by its element in the whole batch
// (the input is checked once before any pass or share runs).
TEST(RuntimePlan, MicroBatchAndBatchParallelFillEveryOutput) {
  GraphBuilder b;
  b.Input("x", {-1, 5});
  b.Node("Relu", {"x"}, {"r"});
  b.Node("Neg", {"x"}, {"n"});
  b.Output("r");
  b.Output("n");
  for (bool shares : {false, true}) {
    SCOPED_TRACE(shares ? "batch parallelism" : "micro-batching");
    Options opt;
    if (shares) opt.threads = 2;
    else opt.micro_batch = 2;
    Model m = b.Load(opt);
    const std::vector<float> x = Iota(30, 0.3f);
    const std::vector<Tensor> out = m.Run({Tensor::Float({6, 5}, x)});
    EXPECT_EQ(shares ? m.BatchWorkers() : m.SamplesPerPass(), 2);
    ASSERT_EQ(out.size(), 2u);
    for (int i = 0; i < 30; ++i) {
      EXPECT_EQ(out[0].f()[i], std::max(0.0f, x[i])) << i;
      EXPECT_EQ(out[1].f()[i], -x[i]) << i;
    }
    std::vector<float> bad = x;
    bad[23] = std::nanf("");
    try {
      m.Run({Tensor::Float({6, 5}, bad)});
      ADD_FAILURE() << "a NaN input ran";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("NaN at element 23"), std::string::npos) << e.what();
    }
  }
}

// The automatic choice end to end: 32 samples of 2 MiB at the widest node
// (1 MiB in, 1 MiB out) spill a 32 MiB cache, so a pass holds 4; on two
// threads the batch stays whole, and back on one it splits again.
TEST(RuntimePlan, MicroBatchAutoFollowsTheThreadCount) {
  GraphBuilder b;
  b.Input("x", {-1, 1, 512, 512});
  b.Node("Relu", {"x"}, {"y"});
  b.Output("y");
  Model m = b.Load();
  const std::vector<int64_t> shape = {32, 1, 512, 512};
  std::vector<float> x(static_cast<std::size_t>(32 * 512 * 512));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 5) - 2.0f;
  std::vector<float> y(x.size());
  m.Run(x, shape, y);
  EXPECT_EQ(m.SamplesPerPass(), 4);
  for (std::size_t i = 0; i < x.size(); i += 4099) ASSERT_EQ(y[i], std::max(0.0f, x[i])) << i;
  // Loaded for one thread and set to two: 16 samples each (batch
  // parallelism; replicas are made from the loaded graph), 32 MiB, one pass.
  m.SetThreads(2);
  std::fill(y.begin(), y.end(), -1.0f);
  m.Run(x, shape, y);
  EXPECT_EQ(m.BatchWorkers(), 2);
  EXPECT_EQ(m.SamplesPerPass(), 16);
  for (std::size_t i = 0; i < x.size(); i += 4099) ASSERT_EQ(y[i], std::max(0.0f, x[i])) << i;
  // Loaded for two threads, the same; with batch_parallel off, the batch
  // whole on split operators.
  for (bool parallel : {true, false}) {
    Options two;
    two.threads = 2;
    two.batch_parallel = parallel;
    Model m2 = b.Load(two);
    std::fill(y.begin(), y.end(), -1.0f);
    m2.Run(x, shape, y);
    EXPECT_EQ(m2.BatchWorkers(), parallel ? 2 : 1);
    EXPECT_EQ(m2.SamplesPerPass(), parallel ? 16 : 32);
    for (std::size_t i = 0; i < x.size(); i += 4099) ASSERT_EQ(y[i], std::max(0.0f, x[i])) << i;
  }
  m.SetThreads(1);
  std::fill(y.begin(), y.end(), -1.0f);
  m.Run(x, shape, y);
  EXPECT_EQ(m.SamplesPerPass(), 4);
  for (std::size_t i = 0; i < x.size(); i += 4099) ASSERT_EQ(y[i], std::max(0.0f, x[i])) << i;
}

// Batch parallelism (Options::batch_parallel): on T threads a per-sample
// graph's batch runs as one contiguous share per thread, each on its own
// replica of the model; the outputs equal the one-thread run's, through both
// APIs, for shares of unequal size and for batches smaller than T.
TEST(RuntimePlan, BatchParallelGivesTheWholeBatchsOutputs) {
  const GraphBuilder b = PerSampleCnn();
  Options one_opt;
  one_opt.micro_batch = 0;
  Model one = b.Load(one_opt);
  for (int threads : {2, 3}) {
    Options opt;
    opt.threads = threads;
    Model par = b.Load(opt);
    for (int64_t batch : {8, 7, 2, 1}) {
      const std::vector<int64_t> shape = {batch, 2, 6, 6};
      const std::vector<float> x = Iota(batch * 72, 0.37f);
      const std::vector<Tensor> want = one.Run({Tensor::Float(shape, x)});
      const int workers = batch >= 2 ? static_cast<int>(std::min<int64_t>(threads, batch)) : 1;
      SCOPED_TRACE(std::to_string(threads) + " threads");
      ExpectSplitRunsMatch(par, shape, x, want[0],
                           [](const Model& m) { return static_cast<int64_t>(m.BatchWorkers()); }, workers);
    }
  }
}

// Where the graph mixes samples, or the options rule it out, the threads
// split each operator instead.
TEST(RuntimePlan, BatchParallelOnlyWhereItMayBe) {
  const std::vector<float> x = Iota(32, 0.4f);
  Options opt;
  opt.threads = 2;
  {  // Softmax over the batch axis: each column of the 8 x 4 output sums to 1.
    Model m = SoftmaxOverTheBatch().Load(opt);
    std::vector<float> y(32);
    m.Run(x, std::vector<int64_t>{8, 4}, y);
    EXPECT_EQ(m.BatchWorkers(), 1);
    ExpectColumnsSumToOne(y);
  }
  {  // A Reshape to a constant shape that holds the batch.
    Model m = ReshapeToFourRows().Load(opt);
    const std::vector<Tensor> out = m.Run({Tensor::Float({4, 8}, x)});
    EXPECT_EQ(m.BatchWorkers(), 1);
    EXPECT_EQ(Floats(out[0]), x);
  }
  {  // ... and back: the whole batch's plan keeps the batch in dim 0 of
     // every tensor, a share's does not ([2, 8] -> [4, 4] -> [2, 8]).
    GraphBuilder b;
    b.Input("x", {-1, 8});
    b.InitInts("s", {4, -1});
    b.InitInts("back", {-1, 8});
    b.Node("Reshape", {"x", "s"}, {"h"});
    b.Node("Relu", {"h"}, {"r"});
    b.Node("Reshape", {"r", "back"}, {"y"});
    b.Output("y");
    Model m = b.Load(opt);
    const std::vector<Tensor> out = m.Run({Tensor::Float({4, 8}, x)});
    EXPECT_EQ(m.BatchWorkers(), 1);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(out[0].f()[i], std::max(0.0f, x[i])) << i;
    // After a larger batch, whose plan loses the batch ([8, 8] -> [4, 16]),
    // a batch whose shares do not fit keeps that arena (ArenaBytes only
    // grows), its whole-batch plan run again.
    Model big = b.Load(opt);
    const std::vector<float> x8 = Iota(64, 0.4f);
    big.Run({Tensor::Float({8, 8}, x8)});
    const int64_t held = big.ArenaBytes();
    EXPECT_GT(held, 0);
    const std::vector<Tensor> again = big.Run({Tensor::Float({4, 8}, x)});
    EXPECT_EQ(big.BatchWorkers(), 1);
    EXPECT_GE(big.ArenaBytes(), held);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(again[0].f()[i], std::max(0.0f, x[i])) << i;
  }
  {  // Fully connected layers reuse each weight once per sample: shares of
     // fewer than 4 samples would read all the weights on every thread.
    GraphBuilder b;
    b.Input("x", {-1, 16});
    b.Init("w", {16, 8}, Iota(128, 0.05f));
    b.Node("MatMul", {"x", "w"}, {"h"});
    b.Node("Relu", {"h"}, {"y"});
    b.Output("y");
    Model m = b.Load(opt);
    for (int64_t batch : {2, 7, 8, 9}) {
      const std::vector<float> xb = Iota(batch * 16, 0.21f);
      const std::vector<Tensor> out = m.Run({Tensor::Float({batch, 16}, xb)});
      EXPECT_EQ(m.BatchWorkers(), batch >= 8 ? 2 : 1) << "batch " << batch;
      ASSERT_EQ(out[0].shape(), (std::vector<int64_t>{batch, 8}));
      const std::vector<float> w = Iota(128, 0.05f);
      for (int64_t i = 0; i < batch; ++i)
        for (int j = 0; j < 8; ++j) {
          double z = 0;
          for (int k = 0; k < 16; ++k) z += xb[i * 16 + k] * w[k * 8 + j];
          EXPECT_NEAR(out[0].f()[i * 8 + j], std::max(0.0, z), 1e-3 * (1 + std::abs(z)));
        }
    }
  }
  const GraphBuilder cnn = PerSampleCnn();
  const std::vector<int64_t> shape = {4, 2, 6, 6};
  const std::vector<float> xc = Iota(4 * 72, 0.37f);
  std::vector<float> y(12);
  for (int variant = 0; variant < 4; ++variant) {
    Options o = opt;
    if (variant == 0) o.batch_parallel = false;
    if (variant == 1) o.profile = true;
    if (variant == 2) o.reference = true;
    if (variant == 3) o.threads = 1;
    Model m = cnn.Load(o);
    m.Run(xc, shape, y);
    EXPECT_EQ(m.BatchWorkers(), 1) << "variant " << variant;
  }
  Model m = cnn.Load(opt);
  m.Run(xc, shape, y);
  EXPECT_EQ(m.BatchWorkers(), 2);
  m.SetProfiling(true);  // per-node times come from the model's own plan
  m.Run(xc, shape, y);
  EXPECT_EQ(m.BatchWorkers(), 1);
  m.SetProfiling(false);
  m.EnableInt16(true);  // fixed point calibrates the model's own plan
  m.Run(xc, shape, y);
  EXPECT_EQ(m.BatchWorkers(), 1);
  m.EnableInt16(false);
  m.Run(xc, shape, y);
  EXPECT_EQ(m.BatchWorkers(), 2);
  m.SetThreads(3);  // a new thread count chooses again: three shares
  m.Run(xc, shape, y);
  EXPECT_EQ(m.BatchWorkers(), 3);
  // The arenas held (the replicas' too) do not shrink when a batch of one
  // runs on the model's own plan.
  const int64_t held = m.ArenaBytes();
  EXPECT_GT(held, 0);
  std::vector<float> y1(3);
  m.Run(std::span<const float>(xc.data(), 72), std::vector<int64_t>{1, 2, 6, 6}, y1);
  EXPECT_EQ(m.BatchWorkers(), 1);
  EXPECT_GE(m.ArenaBytes(), held);
  m.SetThreads(1);
  m.Run(xc, shape, y);
  EXPECT_EQ(m.BatchWorkers(), 1);
}

// The split check (Options::split_check): on 2 threads a batch-1 run
// (batch parallelism leaves it to split operators) is timed split and on one
// thread at the first run of its shape, and the faster kept; the outputs
// equal the one-thread model's on either path, through both APIs.
using permdnn::testing::SplitCheckEnv;

TEST(RuntimePlan, SplitCheckKeepsTheFasterAndTheOutputs) {
  SplitCheckEnv timed(nullptr);
  const GraphBuilder b = PerSampleCnn();
  Model one = b.Load();
  const std::vector<int64_t> shape = {1, 2, 6, 6};
  const std::vector<float> x = Iota(72, 0.37f);
  const std::vector<Tensor> want = one.Run({Tensor::Float(shape, x)});
  EXPECT_EQ(one.RunThreads(), 1);
  EXPECT_EQ(one.SplitCheckMs(shape), (std::pair<double, double>{0, 0}));
  auto threads = [](const Model& m) { return static_cast<int64_t>(m.RunThreads()); };
  Options opt;
  opt.threads = 2;
  {
    Model m = b.Load(opt);
    const std::vector<Tensor> got = m.Run({Tensor::Float(shape, x)});
    ExpectClose(Floats(want[0]), Floats(got[0]));
    const auto [split_ms, one_ms] = m.SplitCheckMs(shape);
    EXPECT_GT(split_ms, 0);
    EXPECT_GT(one_ms, 0);
    const int chosen = m.RunThreads();
    EXPECT_EQ(chosen, one_ms < 0.8 * split_ms ? 1 : 2);  // model.cc: kSplitCheckMargin
    ExpectSplitRunsMatch(m, shape, x, want[0], threads, chosen);  // the choice is kept
    EXPECT_EQ(m.SplitCheckMs(shape), (std::pair<double, double>{split_ms, one_ms}));
    // A batch that splits into shares has no split check (the shares
    // check may keep the split operators instead: then the split check
    // follows); a new thread count forgets the choices.
    const std::vector<int64_t> shape8 = {8, 2, 6, 6};
    std::vector<float> y8(24);
    m.Run(Iota(8 * 72, 0.37f), shape8, y8);
    if (m.BatchWorkers() == 2) {
      EXPECT_EQ(m.RunThreads(), 1);
      EXPECT_EQ(m.SplitCheckMs(shape8), (std::pair<double, double>{0, 0}));
    } else {
      EXPECT_GT(m.SplitCheckMs(shape8).first, 0);
    }
    m.SetThreads(3);
    EXPECT_EQ(m.SplitCheckMs(shape), (std::pair<double, double>{0, 0}));
  }
  for (const char* force : {"one", "split"}) {
    SCOPED_TRACE(force);
    SplitCheckEnv forced(force);
    Model m = b.Load(opt);
    ExpectSplitRunsMatch(m, shape, x, want[0], threads, force[0] == 'o' ? 1 : 2);
    EXPECT_EQ(m.SplitCheckMs(shape), (std::pair<double, double>{0, 0}));
  }
  {  // Two shapes on the one replica, alternating: each plans it again.
    SplitCheckEnv forced("one");
    Options no_shares = opt;
    no_shares.batch_parallel = false;
    Model m = b.Load(no_shares);
    const std::vector<int64_t> shape2 = {2, 2, 6, 6};
    const std::vector<float> x2 = Iota(144, 0.37f);
    const std::vector<Tensor> want2 = one.Run({Tensor::Float(shape2, x2)});
    for (int rep = 0; rep < 2; ++rep) {
      ExpectSplitRunsMatch(m, shape, x, want[0], threads, 1);
      ExpectSplitRunsMatch(m, shape2, x2, want2[0], threads, 1);
    }
  }
  {  // An output over the input: run split, once, nothing recorded.
    Model m = b.Load(opt);
    std::vector<float> buf(72);
    std::copy(x.begin(), x.end(), buf.begin());
    m.Run(buf, shape, std::span<float>(buf.data(), 3));
    EXPECT_EQ(m.RunThreads(), 2);
    EXPECT_EQ(m.SplitCheckMs(shape), (std::pair<double, double>{0, 0}));
    ExpectClose(Floats(want[0]), std::vector<float>(buf.begin(), buf.begin() + 3));
  }
  {  // Off, or with profiling: always split, never timed.
    Options off = opt;
    off.split_check = false;
    Model m = b.Load(off);
    ExpectSplitRunsMatch(m, shape, x, want[0], threads, 2);
    EXPECT_EQ(m.SplitCheckMs(shape), (std::pair<double, double>{0, 0}));
    Options prof = opt;
    prof.profile = true;
    Model p = b.Load(prof);
    ExpectSplitRunsMatch(p, shape, x, want[0], threads, 2);
    EXPECT_EQ(p.SplitCheckMs(shape), (std::pair<double, double>{0, 0}));
  }
  SplitCheckEnv sideways("sideways");
  Model bad = b.Load(opt);
  std::vector<float> y(3);
  try {
    bad.Run(x, shape, y);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PERMDNN_SPLIT_CHECK=sideways"), std::string::npos) << e.what();
  }
}

// The shares check: on 2 threads, a batch the reuse rule gives shares is
// timed in shares and on split operators at its first run, and the faster
// kept (the split only where it takes under 90% of the shares' time); the
// outputs equal the one-thread model's on either path, through both APIs.
TEST(RuntimePlan, SharesCheckKeepsTheFasterAndTheOutputs) {
  SplitCheckEnv timed(nullptr);
  const GraphBuilder b = PerSampleCnn();
  Model one = b.Load();
  const std::vector<int64_t> shape = {8, 2, 6, 6};
  const std::vector<float> x = Iota(8 * 72, 0.37f);
  const std::vector<Tensor> want = one.Run({Tensor::Float(shape, x)});
  auto workers = [](const Model& m) { return static_cast<int64_t>(m.BatchWorkers()); };
  const std::pair<double, double> none{0, 0};
  Options opt;
  opt.threads = 2;
  {
    Model m = b.Load(opt);
    const std::vector<Tensor> got = m.Run({Tensor::Float(shape, x)});
    ExpectClose(Floats(want[0]), Floats(got[0]));
    const auto [shares_ms, split_ms] = m.SharesCheckMs(shape);
    EXPECT_GT(shares_ms, 0);
    EXPECT_GT(split_ms, 0);
    const int chosen = split_ms < 0.9 * shares_ms ? 1 : 2;  // model.cc: kSharesCheckMargin
    EXPECT_EQ(m.BatchWorkers(), chosen);
    ExpectSplitRunsMatch(m, shape, x, want[0], workers, chosen);  // the choice is kept, not timed again
    EXPECT_EQ(m.SharesCheckMs(shape), (std::pair<double, double>{shares_ms, split_ms}));
    EXPECT_EQ(m.SharesCheckMs(std::vector<int64_t>{4, 2, 6, 6}), none);
    m.SetThreads(3);
    EXPECT_EQ(m.SharesCheckMs(shape), none);
  }
  // The span API, its output over its input (the second share's outputs
  // inside the first share's input): the shares run on a copy of it,
  // checked or fixed to shares.
  for (const char* fixed : {(const char*)nullptr, "shares"}) {
    SCOPED_TRACE(fixed ? "output over the input, shares" : "output over the input, timed");
    if (fixed) setenv("PERMDNN_SHARES_CHECK", fixed, 1);
    for (int rep = 0; rep < 3; ++rep) {
      Model m = b.Load(opt);
      std::vector<float> buf = x;
      m.Run(buf, shape, std::span<float>(buf.data() + 24 * 8, 24));
      ExpectClose(Floats(want[0]), std::vector<float>(buf.begin() + 24 * 8, buf.begin() + 24 * 9));
      EXPECT_EQ(m.SharesCheckMs(shape).first > 0, fixed == nullptr);
    }
    unsetenv("PERMDNN_SHARES_CHECK");
  }
  // Another shape between two runs of a checked one, through the Tensor
  // API: the checked shape's outputs keep the whole batch's shapes on
  // either path (a kept split once took them from the other shape's plan),
  // timed and with the outcome fixed (PERMDNN_SHARES_CHECK) to each path.
  for (const char* fixed : {(const char*)nullptr, "split", "shares"}) {
    SCOPED_TRACE(fixed ? fixed : "timed");
    if (fixed) setenv("PERMDNN_SHARES_CHECK", fixed, 1);
    else unsetenv("PERMDNN_SHARES_CHECK");
    Model m = b.Load(opt);
    const std::vector<int64_t> shape1 = {1, 2, 6, 6};
    const std::vector<float> x1(x.begin(), x.begin() + 72);
    const std::vector<Tensor> want1 = one.Run({Tensor::Float(shape1, x1)});
    for (int rep = 0; rep < 2; ++rep) {
      const std::vector<Tensor> got = m.Run({Tensor::Float(shape, x)});
      ASSERT_EQ(got[0].shape(), want[0].shape());
      ExpectClose(Floats(want[0]), Floats(got[0]));
      const std::vector<Tensor> got1 = m.Run({Tensor::Float(shape1, x1)});
      ASSERT_EQ(got1[0].shape(), want1[0].shape());
      ExpectClose(Floats(want1[0]), Floats(got1[0]));
      if (fixed) EXPECT_EQ(m.BatchWorkers(), 1);  // batch 1
    }
    if (fixed) {
      const std::vector<Tensor> got = m.Run({Tensor::Float(shape, x)});
      EXPECT_EQ(m.BatchWorkers(), fixed[1] == 'p' ? 1 : 2);
      EXPECT_EQ(m.SharesCheckMs(shape), none);
    } else {
      EXPECT_GT(m.SharesCheckMs(shape).first, 0);
    }
    unsetenv("PERMDNN_SHARES_CHECK");
  }
  {  // A first input that is not finite: the error names it, nothing is
     // recorded, and the next run checks.
    Model m = b.Load(opt);
    std::vector<float> bad = x;
    bad[300] = std::nanf("");
    std::vector<float> y(24);
    try {
      m.Run(bad, shape, y);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("NaN at element 300"), std::string::npos) << e.what();
    }
    EXPECT_EQ(m.SharesCheckMs(shape), none);
    m.Run(x, shape, y);
    EXPECT_GT(m.SharesCheckMs(shape).first, 0);
    ExpectClose(Floats(want[0]), y);
  }
  // Forced, or off: shares by the reuse rule, untimed.
  for (const char* force : {"one", "split"}) {
    SCOPED_TRACE(force);
    SplitCheckEnv forced(force);
    Model m = b.Load(opt);
    ExpectSplitRunsMatch(m, shape, x, want[0], workers, 2);
    EXPECT_EQ(m.SharesCheckMs(shape), none);
  }
  Options off = opt;
  off.split_check = false;
  Model m = b.Load(off);
  ExpectSplitRunsMatch(m, shape, x, want[0], workers, 2);
  EXPECT_EQ(m.SharesCheckMs(shape), none);
  setenv("PERMDNN_SHARES_CHECK", "sideways", 1);
  Model bad = b.Load(opt);
  std::vector<float> y(24);
  try {
    bad.Run(x, shape, y);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PERMDNN_SHARES_CHECK=sideways"), std::string::npos) << e.what();
  }
  unsetenv("PERMDNN_SHARES_CHECK");
}

using permdnn::testing::HeapInUse;

// The replicas share the model's weights: the file's constants and the dense
// convolution's reordered copy (a 1x1 convolution has one layout of its
// weights at every batch). 16 MiB of weights on two threads: once the
// model has planned the batch on split operators (profile), the replicas
// the next run makes add their plans and arenas, where replicas that
// loaded and packed their own weights added two copies each.
TEST(RuntimePlan, BatchParallelReplicasShareTheWeights) {
  if (HeapInUse() < 0) GTEST_SKIP() << "needs glibc's mallinfo2 (2.33 or later)";
  constexpr int64_t c = 2048, batch = 4;
  GraphBuilder b;
  b.Input("x", {-1, c, 4, 4});
  b.Init("w", {c, c, 1, 1}, Iota(c * c, 0.01f));
  b.Node("Conv", {"x", "w"}, {"y"});
  b.Output("y");
  Options opt;
  opt.threads = 2;
  Model m = b.Load(opt);
  const std::vector<int64_t> shape = {batch, c, 4, 4};
  const std::vector<float> x = Iota(batch * c * 16, 0.3f);
  std::vector<float> y(x.size()), y_split(x.size());
  m.SetProfiling(true);
  m.Run(x, shape, y_split);
  ASSERT_EQ(m.BatchWorkers(), 1);
  m.SetProfiling(false);
  const int64_t before = HeapInUse();
  m.Run(x, shape, y);
  const int64_t grown = HeapInUse() - before, weights = c * c * 4;
  ASSERT_EQ(m.BatchWorkers(), 2);
  EXPECT_LT(grown, weights / 4) << "the heap grew by " << grown << " bytes";
  for (std::size_t i = 0; i < y.size(); ++i)
    ASSERT_NEAR(y[i], y_split[i], 1e-5 * (1 + std::abs(y_split[i]))) << i;
  const std::vector<float> w = Iota(c * c, 0.01f);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t o : {int64_t{0}, int64_t{777}, c - 1}) {
      const int64_t pos = (n + o) % 16;
      double z = 0;
      for (int64_t i = 0; i < c; ++i) z += double{w[o * c + i]} * x[(n * c + i) * 16 + pos];
      EXPECT_NEAR(y[(n * c + o) * 16 + pos], z, 1e-4 * (1 + std::abs(z))) << n << " " << o;
    }
}

// The same for the compressed fully connected ops. The permuted-diagonal
// one's decoded matrix (the batch >= 4 layout), row pack (batch 1), column
// pack and zero-skipping plan, the sparse one's decoded CSR and the
// block-circulant one's FFT engine and the ternary one's pack come from the
// model's PackCache, so
// neither batch parallelism's replicas (shares of 8, on what the model's
// batch-16 plan made) nor the split check's one-thread replica (batch 1)
// decode or pack their own: with 2048 x 2048 weights at p = 4 (4 MiB of
// values; the CSR keeps 1/4 of the entries, the ternary layer half), each
// replica used to add a copy.
TEST(RuntimePlan, ReplicasShareCompressedForms) {
  if (HeapInUse() < 0) GTEST_SKIP() << "needs glibc's mallinfo2 (2.33 or later)";
  constexpr int64_t c = 2048;
  constexpr int p = 4;
  const PermDiagMatrix w = PermDiagMatrix::Random(c, c, p, 7);
  const std::vector<float> dense = w.ToDense();
  const int64_t weights = c * c / p * 4;
  auto attrs = [](onnx::NodeProto& n, std::vector<std::pair<const char*, int64_t>> v) {
    n.set_domain("ai.permdnn");
    for (const auto& [name, i] : v) {
      auto* a = n.add_attribute();
      a->set_name(name);
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(i);
    }
  };
  // The product of x with `want` ([c, c] row-major), at three outputs.
  const auto expect_product = [&](const std::vector<float>& want, const std::vector<float>& x,
                                  const std::vector<float>& y, int64_t batch) {
    for (int64_t s = 0; s < batch; ++s)
      for (int64_t o : {int64_t{0}, int64_t{1001}, c - 1}) {
        double z = 0;
        for (int64_t i = 0; i < c; ++i) z += double{want[o * c + i]} * x[s * c + i];
        ASSERT_NEAR(y[s * c + o], z, 1e-4 * (1 + std::abs(z))) << "sample " << s << " output " << o;
      }
  };
  for (const char* op : {"PermDiagMatMul", "SparseMatMul", "BlockCirculantMatMul", "TernaryMatMul"}) {
    SCOPED_TRACE(op);
    GraphBuilder b;
    b.ImportPermDnn();
    b.Input("x", {-1, c});
    std::vector<float> want = dense;
    if (std::string(op) == "PermDiagMatMul") {
      b.Init("values", {c / p, c / p, p}, {w.values().begin(), w.values().end()});
      b.InitInts("offsets", {w.offsets().begin(), w.offsets().end()});
      attrs(b.Node(op, {"x", "values", "offsets"}, {"y"}), {{"p", p}, {"in_features", c}, {"out_features", c}});
    } else if (std::string(op) == "SparseMatMul") {  // the permuted-diagonal matrix's entries, in CSR
      std::vector<int64_t> row_ptr = {0}, col_idx;
      std::vector<float> values;
      for (int64_t r = 0; r < c; ++r) {
        for (int64_t k = 0; k < c; ++k)
          if (dense[r * c + k] != 0) {
            col_idx.push_back(k);
            values.push_back(dense[r * c + k]);
          }
        row_ptr.push_back(static_cast<int64_t>(col_idx.size()));
      }
      b.InitInts("row_ptr", row_ptr, onnx::TensorProto::INT32);
      b.InitInts("col_idx", col_idx, onnx::TensorProto::INT32);
      b.Init("values", {static_cast<int64_t>(values.size())}, values);
      attrs(b.Node(op, {"x", "row_ptr", "col_idx", "values"}, {"y"}), {{"in_features", c}, {"out_features", c}});
    } else if (std::string(op) == "TernaryMatMul") {
      // Groups of 16 inputs, all kept; weight (r, i) = scale[r] · t, t = +1
      // where (r + i) % 4 == 0, −1 where it is 1, else 0 (half of them set).
      constexpr int64_t gc = 16;
      std::vector<float> scale(c);
      std::vector<int64_t> mask(c * (c / gc) / 8, 0xff), plus, minus;
      for (int64_t r = 0; r < c; ++r) scale[r] = 0.01f * static_cast<float>(r % 13 + 1);
      for (int64_t r = 0; r < c; ++r)
        for (int64_t g = 0; g < c / gc; ++g)
          for (int64_t byte = 0; byte < gc / 8; ++byte) {
            int64_t pb = 0, mb = 0;
            for (int64_t bit = 0; bit < 8; ++bit) {
              const int64_t i = g * gc + byte * 8 + bit, t = (r + i) % 4;
              pb |= int64_t{t == 0} << bit;
              mb |= int64_t{t == 1} << bit;
              want[r * c + i] = t == 0 ? scale[r] : t == 1 ? -scale[r] : 0.0f;
            }
            plus.push_back(pb);
            minus.push_back(mb);
          }
      b.InitInts("group_mask", mask, onnx::TensorProto::UINT8);
      b.InitInts("plus", plus, onnx::TensorProto::UINT8, {c * (c / gc), gc / 8});
      b.InitInts("minus", minus, onnx::TensorProto::UINT8, {c * (c / gc), gc / 8});
      b.Init("scale", {c}, scale);
      attrs(b.Node(op, {"x", "group_mask", "plus", "minus", "scale"}, {"y"}),
            {{"group_ch", gc}, {"in_features", c}, {"out_features", c}});
    } else {  // W[I·p + r, J·p + d] = values[I, J, (r − d) mod p], the permuted-diagonal values reused
      for (int64_t r = 0; r < c; ++r)
        for (int64_t k = 0; k < c; ++k)
          want[r * c + k] = w.values()[((r / p) * (c / p) + k / p) * p + ((r % p) - (k % p) + p) % p];
      b.Init("values", {c / p, c / p, p}, {w.values().begin(), w.values().end()});
      attrs(b.Node(op, {"x", "values"}, {"y"}), {{"p", p}, {"in_features", c}, {"out_features", c}});
    }
    b.Output("y");
    Options opt;
    opt.threads = 2;
    // The run of `batch` samples that makes the replicas grows the heap by
    // under a quarter of the weights; its outputs are the product.
    const auto expect_shared = [&](Model& m, int64_t batch) {
      const std::vector<float> x = Iota(batch * c, 0.3f);
      std::vector<float> y(x.size());
      const int64_t before = HeapInUse();
      m.Run(x, std::vector<int64_t>{batch, c}, y);
      const int64_t grown = HeapInUse() - before;
      EXPECT_LT(grown, weights / 4) << "the heap grew by " << grown << " bytes";
      expect_product(want, x, y, batch);
    };
    {  // Batch parallelism: the model plans the whole batch first, then the replicas.
      Model m = b.Load(opt);
      m.SetProfiling(true);  // (no shares: the model's batch-16 plan alone)
      std::vector<float> y(16 * c);
      m.Run(Iota(16 * c, 0.3f), std::vector<int64_t>{16, c}, y);
      m.SetProfiling(false);
      expect_shared(m, 16);
      EXPECT_EQ(m.BatchWorkers(), 2);
    }
    {  // The split check's replica, made at the first batch-1 run on one thread.
      SplitCheckEnv one("one");
      Model m = b.Load(opt);
      expect_shared(m, 1);
      EXPECT_EQ(m.RunThreads(), 1);
    }
  }
}

// Outputs of different widths and dtypes land at their own offsets, and a
// replica micro-batches its share (Options::micro_batch = 2: passes of 2).
TEST(RuntimePlan, BatchParallelSharesKeepEachOutputsStride) {
  GraphBuilder b;
  b.Input("x", {-1, 5});
  b.Node("Relu", {"x"}, {"r"});
  b.Init("w", {5, 2}, Iota(10, 0.3f));
  b.Node("MatMul", {"x", "w"}, {"m"});
  auto* to = b.Node("Cast", {"m"}, {"c"}).add_attribute();
  to->set_name("to");
  to->set_type(onnx::AttributeProto::INT);
  to->set_i(onnx::TensorProto::INT64);
  b.Output("r");
  b.Output("m");
  b.Output("c");
  Options opt;
  opt.threads = 2;
  opt.micro_batch = 2;
  Model m = b.Load(opt);
  const int64_t batch = 9;  // shares of 5 and 4
  std::vector<float> x = Iota(batch * 5, 1.7f);
  const std::vector<Tensor> out = m.Run({Tensor::Float({batch, 5}, x)});
  EXPECT_EQ(m.BatchWorkers(), 2);
  EXPECT_EQ(m.SamplesPerPass(), 1);  // share 5: the largest divisor up to 2
  ASSERT_EQ(out.size(), 3u);
  ASSERT_EQ(out[1].shape(), (std::vector<int64_t>{batch, 2}));
  ASSERT_EQ(out[2].shape(), (std::vector<int64_t>{batch, 2}));
  ASSERT_EQ(out[2].dtype(), DType::kInt64);
  const std::vector<float> w = Iota(10, 0.3f);
  for (int64_t i = 0; i < batch; ++i) {
    for (int k = 0; k < 5; ++k) EXPECT_EQ(out[0].f()[i * 5 + k], std::max(0.0f, x[i * 5 + k]));
    for (int j = 0; j < 2; ++j) {
      double z = 0;
      for (int k = 0; k < 5; ++k) z += x[i * 5 + k] * w[k * 2 + j];
      EXPECT_NEAR(out[1].f()[i * 2 + j], z, 1e-4) << i;
      EXPECT_EQ(out[2].i()[i * 2 + j], static_cast<int64_t>(out[1].f()[i * 2 + j])) << i;
    }
  }
}

// The planner's choice (Options::micro_batch = -1).
TEST(RuntimePlan, MicroBatchSamplesRule) {
  constexpr int64_t MiB = int64_t{1} << 20, L3 = 32 * MiB;
  // mobilenet_v2 at p = 8: 6.4 MiB per sample at its widest node, 1 MiB of weights.
  EXPECT_EQ(MicroBatchSamples(16, 64 * MiB / 10, MiB, 1, L3), 1);
  EXPECT_EQ(MicroBatchSamples(16, 375 * MiB / 100, MiB, 1, L3), 2);
  // More than one thread: whole (the threads split the batch).
  EXPECT_EQ(MicroBatchSamples(16, 64 * MiB / 10, MiB, 2, L3), 16);
  // Weights over twice a sample's peak (resnet18 at p = 4: 13.3 MiB against 3.8): whole.
  EXPECT_EQ(MicroBatchSamples(16, 383 * MiB / 100, 1333 * MiB / 100, 1, L3), 16);
  // Weights over half the cache: whole.
  EXPECT_EQ(MicroBatchSamples(16, 40 * MiB, 70 * MiB, 1, 128 * MiB), 16);
  // The batch fits beside the weights (the Fashion-MNIST cnn): whole.
  EXPECT_EQ(MicroBatchSamples(16, MiB / 8, MiB, 1, L3), 16);
  // A divisor of the batch.
  EXPECT_EQ(MicroBatchSamples(15, 375 * MiB / 100, MiB, 1, L3), 1);
  EXPECT_EQ(MicroBatchSamples(24, 5 * MiB / 2, MiB, 1, L3), 3);
  EXPECT_EQ(MicroBatchSamples(1, 100 * MiB, 0, 1, L3), 1);
}

}  // namespace
}  // namespace permdnn::runtime
