// The ONNX LSTM / GRU / RNN operators (src/runtime/ops_recurrent.cc):
// PyTorch-exported models against PyTorch's outputs (tests/data/recurrent,
// written by scripts/make-recurrent-testdata.py), the attributes the
// libonnx-testdata cases do not reach (reverse and bidirectional with
// sequence_lens, clip, input_forget, parametrized activations, both
// layouts, GRU's two reset forms) against a plain double-precision oracle
// written from the operator schema's equations, and the errors of bad
// nodes.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "permdnn/core/npy.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/inspect.h"
#include "permdnn/kernels/activation.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "permdnn/core/dataset.h"
#include "permdnn/sim/engine.h"
#include "permdnn/sim/model.h"
#include "tests/support/heap.h"
#include "tests/support/split_check_env.h"
#include "tests/support/compare.h"
#include "tests/support/installed.h"

namespace permdnn::runtime {
namespace {

namespace fs = std::filesystem;

// ---- PyTorch-exported models ----------------------------------------------

std::vector<std::string> PyTorchCases() {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(PERMDNN_RECURRENT_TESTDATA))
    if (e.path().extension() == ".onnx") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

Tensor FromNpy(const fs::path& p) {
  NpyArray a = ReadNpy(p.string());
  if (a.is<int64_t>()) return Tensor::Int64(a.shape, a.as<int64_t>(p.string()));  // token ids
  std::vector<float> v = a.as<float>(p.string());
  return Tensor::Float(a.shape, v);
}

class RecurrentPyTorch : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(RecurrentPyTorch, MatchesPyTorch) {
  const auto& [name, reference] = GetParam();
  const fs::path dir = PERMDNN_RECURRENT_TESTDATA;
  Model m = Model::Load((dir / (name + ".onnx")).string(), {.reference = reference});
  std::vector<Tensor> inputs;
  for (int k = 0; fs::exists(dir / fmt::format("{}.in{}.npy", name, k)); ++k)
    inputs.push_back(FromNpy(dir / fmt::format("{}.in{}.npy", name, k)));
  ASSERT_EQ(inputs.size(), m.inputs().size());
  std::vector<Tensor> outputs = m.Run(inputs);
  int checked = 0;
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const Tensor want = FromNpy(dir / fmt::format("{}.out{}.npy", name, k));
    ASSERT_EQ(outputs[k].shape(), want.shape()) << name << " output " << k;
    // PyTorch and the runtime sum in different orders (float32, depth <= 28).
    EXPECT_TRUE(testing::AllNear<float>(want.floats(), std::as_const(outputs[k]).floats(), 2e-5)) << name << " output " << k;
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

INSTANTIATE_TEST_SUITE_P(Exported, RecurrentPyTorch,
                         ::testing::Combine(::testing::ValuesIn(PyTorchCases()), ::testing::Bool()),
                         [](const auto& info) {
                           return std::get<0>(info.param) + (std::get<1>(info.param) ? "_reference" : "");
                         });

TEST(RecurrentPyTorch, AllCasesPresent) {
  // The script writes 12 cases; a lost file must not shrink the test silently.
  EXPECT_EQ(PyTorchCases().size(), 12u);
}

// ---- Hand-built nodes against the oracle ---------------------------------

struct Spec {
  std::string op = "LSTM";
  int64_t T = 4, B = 3, I = 5, H = 6;
  std::string direction = "forward";
  int64_t layout = 0;
  bool bias = true, lens = false, h0 = false, c0 = false, peep = false;
  std::vector<int32_t> lengths;
  std::optional<float> clip;
  bool input_forget = false;
  int64_t linear_before_reset = 0;
  std::vector<std::string> activations;
  std::vector<float> alpha, beta;
  std::optional<int64_t> hidden_attr;  // default: H
  // Shapes to write instead of the right ones (bad-input tests).
  std::map<std::string, std::vector<int64_t>> shape_override;
  std::string name = "rnn0";
};

int Gates(const std::string& op) { return op == "LSTM" ? 4 : op == "GRU" ? 3 : 1; }
int64_t Dirs(const Spec& s) { return s.direction == "bidirectional" ? 2 : 1; }

struct Built {
  std::string bytes;
  std::map<std::string, std::vector<float>> f;  // every float array by input name
  std::vector<int64_t> x_shape;
};

Built Build(const Spec& s) {
  Built out;
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(14);
  auto* g = m.mutable_graph();
  const int64_t D = Dirs(s), GH = Gates(s.op) * s.H;
  out.x_shape = s.layout == 0 ? std::vector<int64_t>{s.T, s.B, s.I} : std::vector<int64_t>{s.B, s.T, s.I};
  auto* in = g->add_input();
  in->set_name("X");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(1);
  for (int64_t d : out.x_shape) tt->mutable_shape()->add_dim()->set_dim_value(d);
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> u(-0.6f, 0.6f);
  auto add_float = [&](const std::string& name, std::vector<int64_t> shape) {
    if (s.shape_override.count(name)) shape = s.shape_override.at(name);
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(1);
    int64_t n = 1;
    for (int64_t d : shape) t->add_dims(d), n *= d;
    std::vector<float>& v = out.f[name];
    for (int64_t k = 0; k < n; ++k) v.push_back(u(rng)), t->add_float_data(v.back());
  };
  const std::vector<int64_t> state = s.layout == 0 ? std::vector<int64_t>{D, s.B, s.H}
                                                   : std::vector<int64_t>{s.B, D, s.H};
  add_float("W", {D, GH, s.I});
  add_float("R", {D, GH, s.H});
  std::vector<std::string> inputs{"X", "W", "R", s.bias ? "B" : ""};
  if (s.bias) add_float("B", {D, 2 * GH});
  if (s.lens) {
    auto* t = g->add_initializer();
    t->set_name("L");
    t->set_data_type(6);
    t->add_dims(static_cast<int64_t>(s.lengths.size()));
    for (int32_t l : s.lengths) t->add_int32_data(l);
  }
  inputs.push_back(s.lens ? "L" : "");
  if (s.h0) add_float("H0", state);
  inputs.push_back(s.h0 ? "H0" : "");
  if (s.op == "LSTM") {
    if (s.c0) add_float("C0", state);
    inputs.push_back(s.c0 ? "C0" : "");
    if (s.peep) add_float("P", {D, 3 * s.H});
    inputs.push_back(s.peep ? "P" : "");
  }
  while (!inputs.empty() && inputs.back().empty()) inputs.pop_back();
  auto* n = g->add_node();
  n->set_name(s.name);
  n->set_op_type(s.op);
  for (const auto& i : inputs) n->add_input(i);
  for (const char* o : {"Y", "Y_h", "Y_c"})
    if (s.op == "LSTM" || std::string(o) != "Y_c") n->add_output(o), g->add_output()->set_name(o);
  auto attr = [&](const char* name) {
    auto* a = n->add_attribute();
    a->set_name(name);
    return a;
  };
  auto* a = attr("hidden_size");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(s.hidden_attr.value_or(s.H));
  a = attr("direction");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(s.direction);
  a = attr("layout");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(s.layout);
  if (s.clip) {
    a = attr("clip");
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(*s.clip);
  }
  if (s.op == "LSTM" && s.input_forget) {
    a = attr("input_forget");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(1);
  }
  if (s.op == "GRU") {
    a = attr("linear_before_reset");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(s.linear_before_reset);
  }
  if (!s.activations.empty()) {
    a = attr("activations");
    a->set_type(onnx::AttributeProto::STRINGS);
    for (const auto& x : s.activations) a->add_strings(x);
  }
  if (!s.alpha.empty()) {
    a = attr("activation_alpha");
    a->set_type(onnx::AttributeProto::FLOATS);
    for (float x : s.alpha) a->add_floats(x);
  }
  if (!s.beta.empty()) {
    a = attr("activation_beta");
    a->set_type(onnx::AttributeProto::FLOATS);
    for (float x : s.beta) a->add_floats(x);
  }
  m.SerializeToString(&out.bytes);
  return out;
}

// The schema's activation functions, in double; alpha/beta per the runtime's
// documented consumption order.
using Fn = std::function<double(double)>;
std::vector<Fn> OracleActivations(const Spec& s) {
  std::vector<std::string> names = s.activations;
  if (names.empty()) {
    std::vector<std::string> d = s.op == "LSTM" ? std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"}
                                 : s.op == "GRU" ? std::vector<std::string>{"Sigmoid", "Tanh"}
                                                 : std::vector<std::string>{"Tanh"};
    for (int64_t k = 0; k < Dirs(s); ++k) names.insert(names.end(), d.begin(), d.end());
  }
  std::size_t ia = 0, ib = 0;
  std::vector<Fn> out;
  for (const auto& n : names) {
    auto A = [&](double d) { return ia < s.alpha.size() ? double(s.alpha[ia++]) : d; };
    auto Bt = [&](double d) { return ib < s.beta.size() ? double(s.beta[ib++]) : d; };
    if (n == "Sigmoid") out.push_back([](double x) { return 1 / (1 + std::exp(-x)); });
    else if (n == "Tanh") out.push_back([](double x) { return std::tanh(x); });
    else if (n == "Relu") out.push_back([](double x) { return std::max(x, 0.0); });
    else if (n == "Affine") { double a = A(1), b = Bt(0); out.push_back([=](double x) { return a * x + b; }); }
    else if (n == "LeakyRelu") { double a = A(0.01); out.push_back([=](double x) { return x >= 0 ? x : a * x; }); }
    else if (n == "ThresholdedRelu") { double a = A(1); out.push_back([=](double x) { return x > a ? x : 0; }); }
    else if (n == "ScaledTanh") { double a = A(1), b = Bt(1); out.push_back([=](double x) { return a * std::tanh(b * x); }); }
    else if (n == "HardSigmoid") { double a = A(0.2), b = Bt(0.5); out.push_back([=](double x) { return std::clamp(a * x + b, 0.0, 1.0); }); }
    else if (n == "Elu") { double a = A(1); out.push_back([=](double x) { return x >= 0 ? x : a * (std::exp(x) - 1); }); }
    else if (n == "Softsign") out.push_back([](double x) { return x / (1 + std::fabs(x)); });
    else if (n == "Softplus") out.push_back([](double x) { return std::log(1 + std::exp(x)); });
    else ADD_FAILURE() << "oracle: no activation " << n;
  }
  return out;
}

// Y, Y_h, Y_c in the node's layout, straight from the schema's equations.
std::vector<std::vector<float>> Oracle(const Spec& s, const Built& b, const std::vector<float>& x) {
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H, D = Dirs(s), G = Gates(s.op), GH = G * H;
  const int per = s.op == "LSTM" ? 3 : s.op == "GRU" ? 2 : 1;
  std::vector<Fn> acts = OracleActivations(s);
  std::vector<float> Y(T * D * B * H, 0.0f), Yh(D * B * H), Yc(D * B * H);
  const auto& W = b.f.at("W");
  const auto& R = b.f.at("R");
  auto clip = [&](double v) { return s.clip ? std::clamp(v, -double(*s.clip), double(*s.clip)) : v; };
  auto xat = [&](int64_t t, int64_t bb, int64_t i) { return double(x[(s.layout == 0 ? (t * B + bb) : (bb * T + t)) * I + i]); };
  auto st = [&](int64_t d, int64_t bb) { return s.layout == 0 ? (d * B + bb) * H : (bb * D + d) * H; };
  auto yat = [&](int64_t t, int64_t d, int64_t bb) { return s.layout == 0 ? ((t * D + d) * B + bb) * H : ((bb * T + t) * D + d) * H; };
  for (int64_t d = 0; d < D; ++d) {
    const bool rev = s.direction == "reverse" || d == 1;
    const Fn& f = acts[d * per];
    for (int64_t bb = 0; bb < B; ++bb) {
      std::vector<double> h(H, 0), c(H, 0);
      for (int64_t k = 0; k < H; ++k) {
        if (s.h0) h[k] = b.f.at("H0")[st(d, bb) + k];
        if (s.c0) c[k] = b.f.at("C0")[st(d, bb) + k];
      }
      const int64_t L = s.lens ? s.lengths[bb] : T;
      for (int64_t step = 0; step < L; ++step) {
        const int64_t t = rev ? L - 1 - step : step;
        // wx[g] = W x + Wb, rh[g] = R h + Rb.
        std::vector<double> wx(GH), rh(GH);
        for (int64_t gi = 0; gi < GH; ++gi) {
          double a = s.bias ? b.f.at("B")[d * 2 * GH + gi] : 0, r = s.bias ? b.f.at("B")[d * 2 * GH + GH + gi] : 0;
          for (int64_t i = 0; i < I; ++i) a += double(W[(d * GH + gi) * I + i]) * xat(t, bb, i);
          for (int64_t k = 0; k < H; ++k) r += double(R[(d * GH + gi) * H + k]) * h[k];
          wx[gi] = a, rh[gi] = r;
        }
        std::vector<double> hn(H), cn(H);
        if (s.op == "RNN") {
          for (int64_t k = 0; k < H; ++k) hn[k] = f(clip(wx[k] + rh[k]));
        } else if (s.op == "LSTM") {
          const Fn &g = acts[d * per + 1], &hh = acts[d * per + 2];
          for (int64_t k = 0; k < H; ++k) {
            auto P = [&](int j) { return s.peep ? double(b.f.at("P")[d * 3 * H + j * H + k]) : 0.0; };
            const double i = f(clip(wx[k] + rh[k] + P(0) * c[k]));
            const double fg = s.input_forget ? 1 - i : f(clip(wx[2 * H + k] + rh[2 * H + k] + P(2) * c[k]));
            const double cc = g(clip(wx[3 * H + k] + rh[3 * H + k]));
            cn[k] = fg * c[k] + i * cc;
            const double o = f(clip(wx[H + k] + rh[H + k] + P(1) * cn[k]));
            hn[k] = o * hh(cn[k]);
          }
        } else {
          const Fn& g = acts[d * per + 1];
          std::vector<double> z(H), r(H);
          for (int64_t k = 0; k < H; ++k) z[k] = f(clip(wx[k] + rh[k])), r[k] = f(clip(wx[H + k] + rh[H + k]));
          for (int64_t k = 0; k < H; ++k) {
            double pre;
            if (s.linear_before_reset) {
              pre = wx[2 * H + k] + r[k] * rh[2 * H + k];
            } else {
              double rr = s.bias ? b.f.at("B")[d * 2 * GH + GH + 2 * H + k] : 0;
              for (int64_t j = 0; j < H; ++j) rr += double(R[(d * GH + 2 * H + k) * H + j]) * r[j] * h[j];
              pre = wx[2 * H + k] + rr;
            }
            const double hh = g(clip(pre));
            hn[k] = (1 - z[k]) * hh + z[k] * h[k];
          }
        }
        h = hn;
        if (s.op == "LSTM") c = cn;
        for (int64_t k = 0; k < H; ++k) Y[yat(t, d, bb) + k] = float(h[k]);
      }
      for (int64_t k = 0; k < H; ++k) Yh[st(d, bb) + k] = float(h[k]), Yc[st(d, bb) + k] = float(c[k]);
    }
  }
  if (s.op == "LSTM") return {Y, Yh, Yc};
  return {Y, Yh};
}

void ExpectMatchesOracle(const Spec& s) {
  SCOPED_TRACE(s.op + " " + s.direction + " layout " + std::to_string(s.layout));
  Built b = Build(s);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> x(s.T * s.B * s.I);
  for (float& v : x) v = u(rng);
  std::vector<std::vector<float>> want = Oracle(s, b, x);
  for (bool reference : {false, true}) {
    Model m = Model::FromBytes(b.bytes, s.name, {.reference = reference});
    std::vector<Tensor> out = m.Run({Tensor::Float(b.x_shape, x)});
    ASSERT_EQ(out.size(), want.size());
    for (std::size_t k = 0; k < out.size(); ++k)
      EXPECT_TRUE(testing::AllNear<float>(want[k], std::as_const(out[k]).floats(), 2e-5)) << "output " << k << " reference "
                                                                            << reference;
  }
}

TEST(RecurrentOracle, LstmAllAttributes) {
  for (const char* dir : {"forward", "reverse", "bidirectional"})
    for (int64_t layout : {0, 1}) {
      Spec s;
      s.direction = dir, s.layout = layout, s.h0 = s.c0 = s.peep = s.lens = true;
      s.lengths = {4, 2, 0};
      ExpectMatchesOracle(s);
    }
  Spec s;
  s.direction = "bidirectional", s.clip = 0.3f, s.input_forget = true, s.bias = false;
  s.activations = {"HardSigmoid", "ScaledTanh", "Softsign", "Sigmoid", "Affine", "LeakyRelu"};
  s.alpha = {0.3f, 0.8f, 0.5f, 0.2f}, s.beta = {0.4f, 1.5f, -0.1f};
  ExpectMatchesOracle(s);
}

TEST(RecurrentOracle, GruBothResetForms) {
  for (int64_t lbr : {0, 1})
    for (const char* dir : {"forward", "reverse", "bidirectional"}) {
      Spec s;
      s.op = "GRU", s.direction = dir, s.linear_before_reset = lbr, s.layout = lbr, s.h0 = s.lens = true;
      s.lengths = {1, 4, 3};
      ExpectMatchesOracle(s);
    }
  Spec s;
  s.op = "GRU", s.direction = "bidirectional", s.clip = 0.5f;
  s.activations = {"Elu", "Softplus", "ThresholdedRelu", "Relu"};
  s.alpha = {0.7f, 0.1f};
  ExpectMatchesOracle(s);
}

TEST(RecurrentOracle, RnnActivationsAndBatchOne) {
  for (const char* act : {"Tanh", "Relu", "Sigmoid", "Softsign"}) {
    Spec s;
    s.op = "RNN", s.B = 1, s.direction = "bidirectional", s.activations = {act, "Tanh"}, s.h0 = true;
    ExpectMatchesOracle(s);
  }
  Spec s;  // batch 1 takes the sgemv path of the LSTM too
  s.B = 1, s.H = 17, s.I = 9, s.T = 6;
  ExpectMatchesOracle(s);
}

// The SIMD activations against their libm oracles, on every target.
TEST(RecurrentActivations, SimdMatchesReference) {
  std::vector<float> x;
  for (float v = -100; v <= 100; v += 0.0371f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-8f, -1e-8f, 88.0f, -88.0f, 1e30f, -1e30f}) x.push_back(v);
  for (int64_t target : kernels::AvailableSimdTargets()) {
    kernels::ForceSimdTarget(target);
    SCOPED_TRACE(kernels::SimdTargetName(target));
    for (auto [simd, ref] : {std::pair{&kernels::SigmoidInPlace, &kernels::SigmoidInPlaceReference},
                             std::pair{&kernels::TanhInPlace, &kernels::TanhInPlaceReference}}) {
      std::vector<float> a = x, b = x;
      simd(a.data(), static_cast<int64_t>(a.size()));
      ref(b.data(), static_cast<int64_t>(b.size()));
      EXPECT_TRUE(testing::AllNear<float>(b, a, 4e-7));
    }
  }
  kernels::ForceSimdTarget(0);
}

// ---- Bad nodes --------------------------------------------------------------

std::string LoadError(const Spec& s) {
  Built b = Build(s);
  try {
    Model::FromBytes(b.bytes, "bad.onnx");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void ExpectError(const Spec& s, const std::vector<std::string>& parts) {
  const std::string e = LoadError(s);
  ASSERT_FALSE(e.empty()) << "no error";
  EXPECT_NE(e.find("node '" + s.name + "' (" + s.op), std::string::npos) << e;
  for (const auto& p : parts) EXPECT_NE(e.find(p), std::string::npos) << "missing '" << p << "' in: " << e;
}

TEST(RecurrentBadInput, WrongWeightShapes) {
  Spec s;
  s.shape_override["W"] = {1, 20, 5};
  ExpectError(s, {"W has shape [1, 20, 5], expected [1, 24, 5]", "4·hidden_size"});
  s = Spec{};
  s.op = "GRU", s.shape_override["R"] = {1, 18, 5};
  ExpectError(s, {"R has shape [1, 18, 5], expected [1, 18, 6]"});
  s = Spec{};
  s.shape_override["B"] = {1, 24};
  ExpectError(s, {"B has shape [1, 24], expected [1, 48]"});
  s = Spec{};
  s.peep = true, s.shape_override["P"] = {1, 12};
  ExpectError(s, {"P has shape [1, 12], expected [1, 18]"});
  s = Spec{};
  s.h0 = true, s.layout = 1, s.shape_override["H0"] = {1, 3, 6};
  ExpectError(s, {"initial_h has shape [1, 3, 6], expected [3, 1, 6]"});
}

TEST(RecurrentBadInput, HiddenSizeMismatch) {
  Spec s;
  s.hidden_attr = 7;
  ExpectError(s, {"W has shape [1, 24, 5], expected [1, 28, 5]", "hidden_size = 7"});
}

TEST(RecurrentBadInput, DirectionMismatch) {
  Spec s;
  s.direction = "bidirectional", s.shape_override["W"] = {1, 24, 5};
  ExpectError(s, {"W has 1 directions", "bidirectional needs 2"});
  s = Spec{};
  s.direction = "sideways";
  ExpectError(s, {"direction = 'sideways'", "forward, reverse or bidirectional"});
}

TEST(RecurrentBadInput, SequenceLengths) {
  Spec s;
  s.lens = true, s.lengths = {4, 5, 1};
  ExpectError(s, {"sequence_lens[1] = 5 is outside [0, seq_length = 4]"});
  s.lengths = {4, -1, 1};
  ExpectError(s, {"sequence_lens[1] = -1"});
  s.lengths = {4, 1};
  ExpectError(s, {"sequence_lens has shape [2], expected [3]"});
}

TEST(RecurrentBadInput, Activations) {
  Spec s;
  s.activations = {"Sigmoid", "Tanh", "Swish"};
  ExpectError(s, {"activations[2] = 'Swish' is not an activation", "HardSigmoid"});
  s.activations = {"Sigmoid", "Tanh"};
  ExpectError(s, {"activations has 2 entries, expected 3"});
  s = Spec{};
  s.clip = -1.0f;
  ExpectError(s, {"clip = -1 must be > 0"});
}

// ---- permdnn export of run directories with recurrent layers ---------------

// A run directory (docs/run-format.md, "Recurrent models"): lstm over rows,
// permdiag (p = 4) or dense W_ih / W_hh, bidirectional, output last, then a
// dense fc; or charlm-like: embedding -> gru (sequence) -> fc per step.
struct RecurrentRun {
  bool gru = false, bidir = true;
  bool embed = true;  // gru: an embedding of int64 tokens first (charlm-like); false: float rows as lstm
  int p = 4;  // 1: dense
  int64_t T = 5, in = 6, H = 8, classes = 5, vocab = 7;
  // PyTorch-order dense matrices per direction: ih [G·H, in], hh [G·H, H], biases.
  std::vector<std::vector<float>> ih, hh, bih, bhh;
  std::vector<float> emb, fc_w, fc_b;
};

std::vector<float> Uniform(std::size_t n, uint64_t seed, float a) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-a, a);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

fs::path WriteRecurrentRun(const std::string& tag, RecurrentRun& r) {
  const fs::path dir = fs::temp_directory_path() / ("permdnn_recurrent_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "tensors");
  const int G = r.gru ? 3 : 4;
  const int64_t GH = G * r.H, D = r.bidir ? 2 : 1;
  const int64_t in = r.gru && r.embed ? 4 : r.in;  // gru reads the embedding (dim 4)
  nlohmann::json tensors = nlohmann::json::object();
  for (int64_t d = 0; d < D; ++d) {
    const std::string sfx = d == 1 ? "_reverse" : "";
    for (const char* m : {"ih", "hh"}) {
      const int64_t cols = std::string(m) == "ih" ? in : r.H;
      const std::string key = std::string(m) + sfx;
      std::vector<float> dense(static_cast<std::size_t>(GH * cols));
      if (r.p > 1) {
        PermDiagMatrix w = PermDiagMatrix::Random(GH, cols, r.p, 40 + d * 2 + (key[0] == 'h'));
        for (float& v : w.values()) v *= 0.5f;
        for (int64_t i = 0; i < GH; ++i)
          for (int64_t j = 0; j < cols; ++j) dense[static_cast<std::size_t>(i * cols + j)] = w.At(i, j);
        WriteNpy<float>((dir / ("tensors/rnn1." + key + ".values.npy")).string(), w.values(),
                        {w.row_blocks(), w.col_blocks(), r.p});
        WriteNpy<uint16_t>((dir / ("tensors/rnn1." + key + ".offsets.npy")).string(), w.offsets(),
                           {w.row_blocks(), w.col_blocks()});
        tensors[key + ".values"] = "tensors/rnn1." + key + ".values.npy";
        tensors[key + ".offsets"] = "tensors/rnn1." + key + ".offsets.npy";
      } else {
        dense = Uniform(dense.size(), 50 + d * 2 + (key[0] == 'h'), 0.4f);
        WriteNpy<float>((dir / ("tensors/rnn1." + key + ".weight.npy")).string(), dense, {GH, cols});
        tensors[key + ".weight"] = "tensors/rnn1." + key + ".weight.npy";
      }
      (std::string(m) == "ih" ? r.ih : r.hh).push_back(dense);
    }
    for (const char* b : {"bias_ih", "bias_hh"}) {
      std::vector<float> v = Uniform(static_cast<std::size_t>(GH), 60 + d * 2 + (b[5] == 'h'), 0.3f);
      WriteNpy<float>((dir / ("tensors/rnn1." + std::string(b) + sfx + ".npy")).string(), v, {GH});
      tensors[std::string(b) + sfx] = "tensors/rnn1." + std::string(b) + sfx + ".npy";
      (b[5] == 'i' ? r.bih : r.bhh).push_back(v);
    }
  }
  const int64_t feat = D * r.H;
  r.fc_w = Uniform(static_cast<std::size_t>(r.classes * feat), 70, 0.5f);
  r.fc_b = Uniform(static_cast<std::size_t>(r.classes), 71, 0.5f);
  WriteNpy<float>((dir / "tensors/fc.weight.npy").string(), r.fc_w, {r.classes, feat});
  WriteNpy<float>((dir / "tensors/fc.bias.npy").string(), r.fc_b, {r.classes});
  nlohmann::json compress = r.p > 1 ? nlohmann::json{{"kind", "permdiag"}, {"p", r.p}} : nlohmann::json{{"kind", "dense"}};
  nlohmann::json layers = nlohmann::json::array();
  nlohmann::json input;
  if (r.gru && r.embed) {
    r.emb = Uniform(static_cast<std::size_t>(r.vocab * 4), 72, 1.0f);
    WriteNpy<float>((dir / "tensors/embed.weight.npy").string(), r.emb, {r.vocab, 4});
    layers.push_back({{"name", "embed"}, {"type", "embedding"}, {"vocab", r.vocab}, {"dim", 4},
                      {"tensors", {{"weight", "tensors/embed.weight.npy"}}}});
    input = {{"shape", {r.T}}, {"layout", "T"}, {"dtype", "int64"}, {"vocab", r.vocab}};
  } else {
    input = {{"shape", {r.T, r.in}}, {"layout", "TF"}};
  }
  layers.push_back({{"name", "rnn1"}, {"type", r.gru ? "gru" : "lstm"}, {"in", in}, {"hidden", r.H},
                    {"bidirectional", r.bidir}, {"output", r.gru ? "sequence" : "last"}, {"compress", compress},
                    {"tensors", tensors}});
  layers.push_back({{"name", "fc"}, {"type", "linear"}, {"in", feat}, {"out", r.classes},
                    {"compress", {{"kind", "dense"}}},
                    {"tensors", {{"weight", "tensors/fc.weight.npy"}, {"bias", "tensors/fc.bias.npy"}}}});
  nlohmann::json doc = {{"format", "permdnn-run/1"}, {"model", r.gru ? "charlm" : "lstm"}, {"input", input},
                        {"num_classes", r.classes}, {"layers", layers}};
  std::ofstream(dir / "model.json") << doc.dump(2);
  return dir;
}

// PyTorch's equations (gate order i, f, g, o / r, z, n), double precision.
// x: [B, T, in] features. Returns the logits: [B, classes] (last) or
// [B, T, classes] (sequence).
std::vector<float> RunOracle(const RecurrentRun& r, const std::vector<double>& x, int64_t B) {
  const int64_t D = r.bidir ? 2 : 1, H = r.H, in = r.gru && r.embed ? 4 : r.in, T = r.T;
  auto sig = [](double v) { return 1 / (1 + std::exp(-v)); };
  std::vector<double> hs(static_cast<std::size_t>(B * T * D * H));  // per step outputs
  std::vector<double> last(static_cast<std::size_t>(B * D * H));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      std::vector<double> h(H, 0), c(H, 0);
      const auto &wi = r.ih[d], &wh = r.hh[d], &bi = r.bih[d], &bh = r.bhh[d];
      for (int64_t s = 0; s < T; ++s) {
        const int64_t t = d == 1 ? T - 1 - s : s;
        const int G = r.gru ? 3 : 4;
        std::vector<double> a(G * H), ah(G * H);
        for (int64_t g = 0; g < G * H; ++g) {
          double v = bi[g], u = bh[g];
          for (int64_t i = 0; i < in; ++i) v += wi[g * in + i] * x[(b * T + t) * in + i];
          for (int64_t k = 0; k < H; ++k) u += wh[g * H + k] * h[k];
          a[g] = v, ah[g] = u;
        }
        std::vector<double> hn(H);
        for (int64_t k = 0; k < H; ++k) {
          if (r.gru) {
            const double rr = sig(a[k] + ah[k]), z = sig(a[H + k] + ah[H + k]);
            const double n = std::tanh(a[2 * H + k] + rr * ah[2 * H + k]);
            hn[k] = (1 - z) * n + z * h[k];
          } else {
            const double i = sig(a[k] + ah[k]), f = sig(a[H + k] + ah[H + k]);
            const double g = std::tanh(a[2 * H + k] + ah[2 * H + k]), o = sig(a[3 * H + k] + ah[3 * H + k]);
            c[k] = f * c[k] + i * g;
            hn[k] = o * std::tanh(c[k]);
          }
        }
        h = hn;
        for (int64_t k = 0; k < H; ++k) hs[((b * T + t) * D + d) * H + k] = h[k];
      }
      for (int64_t k = 0; k < H; ++k) last[(b * D + d) * H + k] = h[k];
    }
  const int64_t feat = D * H, rows = r.gru ? B * T : B;
  const std::vector<double>& f = r.gru ? hs : last;
  std::vector<float> out(static_cast<std::size_t>(rows * r.classes));
  for (int64_t q = 0; q < rows; ++q)
    for (int64_t o = 0; o < r.classes; ++o) {
      double v = r.fc_b[o];
      for (int64_t j = 0; j < feat; ++j) v += r.fc_w[o * feat + j] * f[q * feat + j];
      out[q * r.classes + o] = float(v);
    }
  return out;
}

class RecurrentExport : public ::testing::TestWithParam<std::tuple<bool, int, bool>> {};

TEST_P(RecurrentExport, RunsLikePyTorchEquations) {
  const auto [gru, p, bidir] = GetParam();
  RecurrentRun r;
  r.gru = gru, r.p = p, r.bidir = bidir;
  const std::string tag = fmt::format("{}_{}_{}", gru ? "gru" : "lstm", p, bidir);
  const fs::path dir = WriteRecurrentRun(tag, r);
  const int64_t B = 3;
  std::vector<double> feats;
  Tensor input;
  if (gru) {
    std::vector<int64_t> ids(static_cast<std::size_t>(B * r.T));
    for (std::size_t k = 0; k < ids.size(); ++k) ids[k] = static_cast<int64_t>((k * 5 + 2) % r.vocab);
    for (int64_t id : ids)
      for (int e = 0; e < 4; ++e) feats.push_back(r.emb[id * 4 + e]);
    input = Tensor::Int64({B, r.T}, ids);
  } else {
    std::vector<float> x = Uniform(static_cast<std::size_t>(B * r.T * r.in), 80, 1.0f);
    feats.assign(x.begin(), x.end());
    input = Tensor::Float({B, r.T, r.in}, x);
  }
  const std::vector<float> want = RunOracle(r, feats, B);
  for (bool portable : {false, true}) {
    const fs::path out = dir / (portable ? "portable.onnx" : "model.onnx");
    ExportReport rep = ExportRun(dir.string(), out.string(), {.portable = portable});
    ASSERT_EQ(rep.layers.size(), gru ? 3u : 2u);
    const LayerReport& rl = rep.layers[gru ? 1 : 0];
    const std::string want_op = p > 1 && !portable ? (gru ? "PermDiagGRU" : "PermDiagLSTM") : (gru ? "GRU" : "LSTM");
    EXPECT_EQ(rl.op, want_op);
    if (p > 1 && !portable) EXPECT_LT(rl.stored_bytes * 2, rl.dense_bytes) << "p = 4: a quarter of W, R + dense biases";
    Model m = Model::Load(out.string());
    std::vector<Tensor> y = m.Run({input});
    ASSERT_EQ(y.size(), 1u);
    EXPECT_EQ(y[0].size(), static_cast<int64_t>(want.size()));
    EXPECT_TRUE(testing::AllNear<float>(want, std::as_const(y[0]).floats(), 2e-5)) << (portable ? "portable" : "");
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Runs, RecurrentExport,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(1, 4), ::testing::Bool()),
                         [](const auto& info) {
                           return fmt::format("{}_p{}_{}", std::get<0>(info.param) ? "gru" : "lstm",
                                              std::get<1>(info.param),
                                              std::get<2>(info.param) ? "bidir" : "forward");
                         });

// The split check's one-thread replica (batch 1 on two threads) takes each
// direction's W, R and row pack from the model's PackCache: making it grows
// the heap by much less than those weights (3 MiB here), where it used to
// decode its own; its outputs are the model's.
TEST(RecurrentExport, OneThreadReplicaSharesTheWeights) {
  if (testing::HeapInUse() < 0) GTEST_SKIP() << "needs glibc's mallinfo2 (2.33 or later)";
  RecurrentRun r;
  r.bidir = false, r.in = 512, r.H = 512, r.T = 2;
  const fs::path dir = WriteRecurrentRun("share", r);
  ExportRun(dir.string(), (dir / "m.onnx").string());
  const std::vector<float> x = Uniform(static_cast<std::size_t>(r.T * r.in), 81, 1.0f);
  const std::vector<double> feats(x.begin(), x.end());
  const std::vector<float> want = RunOracle(r, feats, 1);
  const testing::SplitCheckEnv one("one");
  Model m = Model::Load((dir / "m.onnx").string(), {.threads = 2});
  const int64_t before = testing::HeapInUse();
  const std::vector<Tensor> y = m.Run({Tensor::Float({1, r.T, r.in}, x)});
  const int64_t grown = testing::HeapInUse() - before;
  ASSERT_EQ(m.RunThreads(), 1);
  const int64_t weights = 4 * r.H * (r.in + 2 * r.H) / r.p * 4;  // W, R and R's row pack
  EXPECT_LT(grown, weights / 4) << "the heap grew by " << grown << " bytes";
  EXPECT_TRUE(testing::AllNear<float>(want, std::as_const(y[0]).floats(), 2e-5));
  fs::remove_all(dir);
}

// A PermDiagLSTM node with a bad R array: the registry's error, naming the
// node, the matrix and the field.
TEST(RecurrentExport, BadCompressedArraysNameTheNode) {
  RecurrentRun r;
  const fs::path dir = WriteRecurrentRun("badarr", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(ReadFileBytes((dir / "m.onnx").string())));
  auto edit = [&](const std::function<void(onnx::TensorProto*)>& fn) {
    onnx::ModelProto c = m;
    for (auto& t : *c.mutable_graph()->mutable_initializer())
      if (t.name() == "rnn1.R.offsets") fn(&t);
    std::string bytes;
    c.SerializeToString(&bytes);
    try {
      Model::FromBytes(bytes, "bad.onnx");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string e = edit([](onnx::TensorProto* t) {
    std::string raw = t->raw_data();
    raw[0] = 9, raw[1] = 0;  // offset 9 >= p = 4
    t->set_raw_data(raw);
  });
  EXPECT_NE(e.find("node 'rnn1' (ai.permdnn.PermDiagLSTM"), std::string::npos) << e;
  EXPECT_NE(e.find("R (direction 0)"), std::string::npos) << e;
  EXPECT_NE(e.find("offset 9"), std::string::npos) << e;
  e = edit([](onnx::TensorProto* t) {
    t->set_dims(0, 1);
    t->set_raw_data(t->raw_data().substr(0, t->raw_data().size() / 2));
  });
  EXPECT_NE(e.find("expected a leading num_directions = 2"), std::string::npos) << e;
  fs::remove_all(dir);
}

// The int16 path of PermDiagLSTM (both products in fixed point after
// calibration) stays close to fp32 and runs the int16 kernel.
TEST(RecurrentExport, Int16CloseToFloat) {
  RecurrentRun r;
  r.bidir = false;
  const fs::path dir = WriteRecurrentRun("int16", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  const int64_t B = 4;
  const std::vector<float> x = Uniform(static_cast<std::size_t>(B * r.T * r.in), 81, 1.0f);
  const std::vector<int64_t> shape{B, r.T, r.in};
  Model m = Model::Load((dir / "m.onnx").string());
  std::vector<float> y32(static_cast<std::size_t>(B * r.classes)), y16(y32.size());
  m.Run(x, shape, y32);
  m.EnableInt16(true);
  m.Calibrate(x, shape);
  m.SetProfiling(true);
  m.Run(x, shape, y16);
  double worst = 0, scale = 0;
  for (std::size_t k = 0; k < y32.size(); ++k)
    worst = std::max(worst, double(std::fabs(y32[k] - y16[k]))), scale = std::max(scale, double(std::fabs(y32[k])));
  EXPECT_LT(worst, 0.01 * scale) << "int16 vs fp32, max |y| " << scale;
  EXPECT_GT(worst, 0.0) << "the int16 path did not run";
  bool i16 = false;
  for (const NodeProfile& p : m.Profile()) i16 = i16 || p.kernel.find("i16") != std::string::npos;
  EXPECT_TRUE(i16);
  fs::remove_all(dir);
}

// An exported row-sequence model (input layout "TF") is evaluated on
// [B, rows, cols] batches (permdnn eval).
TEST(RecurrentExport, EvalReadsRowLayout) {
  RecurrentRun r;
  const fs::path dir = WriteRecurrentRun("evallayout", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  Model m = Model::Load((dir / "m.onnx").string());
  Preprocess pre;
  Layout layout = Layout::kNchw;
  EXPECT_TRUE(DefaultPreprocess(m, &pre, &layout));
  EXPECT_EQ(layout, Layout::kRows);
  ImageDataset data;
  data.rows = r.T, data.cols = r.in;
  EXPECT_EQ(BatchShape(data, layout, 7), (std::vector<int64_t>{7, r.T, r.in}));
  fs::remove_all(dir);
}

// `permdnn sim --model` does not simulate recurrent layers yet: inspection
// lists them as skipped, with the reason, instead of leaving them out.
TEST(RecurrentExport, HiddenNotMultipleOfP) {
  RecurrentRun r;
  r.H = 6;
  const fs::path dir = WriteRecurrentRun("badp", r);
  std::string e;
  try {
    ExportRun(dir.string(), (dir / "x.onnx").string(), {});
  } catch (const Error& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("layer 'rnn1'"), std::string::npos) << e;
  EXPECT_NE(e.find("hidden = 6 must be a multiple of p = 4"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "x.onnx"));
  fs::remove_all(dir);
}

// ---- permdnn sim --model on recurrent layers (issue 17, point 5) ------------------

// Runs `permdnn sim --model` on `model` (2 samples unless given) and returns
// whether it exited 0, its output in *text and its JSON in *j.
bool SimModelCli(const fs::path& model, std::string* text, nlohmann::json* j, int samples = 2) {
  const fs::path log = model.parent_path() / "sim.log", json = model.parent_path() / "sim.json";
  fs::remove(json);
  const std::string cmd = std::string(PERMDNN_BIN) + " sim --model " + model.string() + " --samples " +
                          std::to_string(samples) + " --json " + json.string() + " > " + log.string() + " 2>&1";
  const int st = std::system(cmd.c_str());
  std::stringstream out;
  out << std::ifstream(log).rdbuf();
  *text = out.str();
  if (j && fs::exists(json)) *j = nlohmann::json::parse(std::ifstream(json));
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

const nlohmann::json* Record(const nlohmann::json& j, const std::string& arch, const std::string& layer) {
  for (const auto& r : j["records"])
    if (r["arch"] == arch && r["layer"] == layer) return &r;
  return nullptr;
}

TEST(RecurrentExport, InspectionReadsCompressedRecurrentLayers) {
  RecurrentRun r;
  const fs::path dir = WriteRecurrentRun("inspect", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  const ModelInspection ins = InspectCompressedLayers(ReadFileBytes((dir / "m.onnx").string()), "m.onnx");
  EXPECT_TRUE(ins.layers.empty());
  ASSERT_EQ(ins.recurrent.size(), 1u);
  const RecurrentLayerInfo& l = ins.recurrent[0];
  EXPECT_EQ(l.node, "rnn1");
  EXPECT_EQ(l.op_type, "PermDiagLSTM");
  EXPECT_EQ(l.cell, "LSTM");
  EXPECT_EQ(l.gates, 4);
  EXPECT_EQ(l.hidden, r.H);
  EXPECT_EQ(l.input_size, r.in);
  EXPECT_EQ(l.direction, "bidirectional");
  EXPECT_EQ(l.p, r.p);
  EXPECT_FALSE(l.output_y.empty());
  ASSERT_EQ(l.w.size(), 2u);
  ASSERT_EQ(l.r.size(), 2u);
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(l.w[d].rows(), 4 * r.H);
    EXPECT_EQ(l.w[d].cols(), r.in);
    EXPECT_EQ(l.r[d].rows(), 4 * r.H);
    EXPECT_EQ(l.r[d].cols(), r.H);
    // The same matrices up to the gate order (PyTorch i, f, g, o -> ONNX i,
    // o, f, c): the sums of squares agree.
    double a = 0, b = 0;
    for (float v : l.w[d].ToDense()) a += double{v} * v;
    for (float v : r.ih[d]) b += double{v} * v;
    EXPECT_NEAR(a, b, 1e-6 * b);
  }
  fs::remove_all(dir);
}

// The products the simulator runs per step, rebuilt here from the model's
// captured X and Y: the record of each product is the sum over the steps
// (the mean over the samples) of the FC-layer engine on the same matrix
// with that step's vector, and the activation density is the measured one.
void CheckStepsAgainstFcRuns(const fs::path& model, int64_t samples, bool gru_like_bidir) {
  ASSERT_TRUE(permdnn::testing::Installed(fs::path(kDefaultFashionMnistDir) / "t10k-images-idx3-ubyte.gz",
                                          permdnn::testing::kFashionMnistPackage));
  std::string text;
  nlohmann::json j;
  ASSERT_TRUE(SimModelCli(model, &text, &j, static_cast<int>(samples))) << text;
  const std::string bytes = ReadFileBytes(model.string());
  ModelInspection ins = InspectCompressedLayers(bytes, model.string());
  ASSERT_EQ(ins.recurrent.size(), 1u);
  RecurrentLayerInfo& l = ins.recurrent[0];
  // The inputs as the CLI makes them (the model's preprocessing).
  const Model probe = Model::FromBytes(bytes, model.string());
  Preprocess pre;
  Layout layout = Layout::kNchw;
  DefaultPreprocess(probe, &pre, &layout);
  const ImageDataset test = LoadFashionMnist(kDefaultFashionMnistDir, "test");
  std::vector<float> x(static_cast<std::size_t>(samples * test.image_size()));
  test.Batch(0, samples, pre, x);
  const std::vector<Tensor> got =
      CaptureValues(bytes, model.string(), {Tensor::Float(BatchShape(test, layout, samples), x)}, {l.input, l.output_y});
  const Tensor &X = got[0], &Y = got[1];
  ASSERT_EQ(l.layout, 0);
  const int64_t T = X.shape()[0], I = l.input_size, H = l.hidden, D = static_cast<int64_t>(l.w.size());
  ASSERT_EQ(D, gru_like_bidir ? 2 : 1);
  const sim::TechTable tech = sim::TechTable::Load(sim::TechTable::DefaultPath());
  for (int64_t d = 0; d < D; ++d)
    for (const bool is_r : {false, true}) {
      const std::string name = l.node + (is_r ? ".R" : ".W") + (d == 1 ? "_b" : "");
      sim::ModelLayer ml;
      ml.name = name;
      ml.permdiag = is_r ? l.r[d] : l.w[d];
      ml.inputs = {std::vector<float>(static_cast<std::size_t>(ml.cols()), 0.0f)};
      std::map<std::string, std::string> sources;
      for (const std::string arch : {"permdnn", "eie"}) {
        sim::LayerWorkload w = sim::BuildModelWorkload(ml, arch == "eie", &sources);
        auto engine = sim::MakeEngine(arch, nlohmann::json::object(), tech);
        double cycles = 0, density = 0;
        for (int64_t s = 0; s < samples; ++s) {
          // The sample's vectors in the direction's step order, its scale.
          std::vector<std::vector<float>> vs;
          for (int64_t k = 0; k < T; ++k) {
            const int64_t t = d == 1 ? T - 1 - k : k;
            if (!is_r) {
              const float* p = X.f() + (t * samples + s) * I;
              vs.emplace_back(p, p + I);
            } else if (k == 0) {
              vs.emplace_back(static_cast<std::size_t>(H), 0.0f);  // h_(-1) = 0
            } else {
              const int64_t prev = d == 1 ? t + 1 : t - 1;
              const float* p = Y.f() + ((prev * D + d) * samples + s) * H;
              vs.emplace_back(p, p + H);
            }
          }
          float mx = 0;
          for (int64_t t = 0; t < T; ++t)
            for (int64_t i = 0; i < (is_r ? H : I); ++i)
              mx = std::max(mx, std::fabs(is_r ? Y.f()[((t * D + d) * samples + s) * H + i]
                                               : X.f()[(t * samples + s) * I + i]));
          for (const auto& v : vs) {
            sim::SetModelInput(w, v, mx);
            const sim::LayerResult fc = engine->Run(w, nullptr);
            cycles += static_cast<double>(fc.cycles);
            density += fc.act_density;
          }
        }
        const nlohmann::json* rec = Record(j, arch, name);
        ASSERT_NE(rec, nullptr) << arch << " " << name << "\n" << text;
        EXPECT_EQ((*rec)["cycles"].get<int64_t>(), std::llround(cycles / static_cast<double>(samples)))
            << arch << " " << name;
        EXPECT_NEAR((*rec)["act_density"].get<double>(), density / static_cast<double>(samples * T), 1e-9)
            << arch << " " << name;
      }
    }
  EXPECT_NE(text.find("Recurrent layers: per time step"), std::string::npos) << text;
  ASSERT_EQ(j["recurrent"].size(), 1u);
  EXPECT_EQ(j["recurrent"][0]["steps"], T);
}

// An LSTM over Fashion-MNIST rows (28 steps of 28 pixels, as --model lstm).
TEST(SimRecurrent, LstmStepsEqualFcRunsOfTheSameMatrices) {
  RecurrentRun r;
  r.bidir = false;
  r.T = 28;
  r.in = 28;
  const fs::path dir = WriteRecurrentRun("simlstm", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  CheckStepsAgainstFcRuns(dir / "m.onnx", 2, false);
  fs::remove_all(dir);
}

// Bidirectional: the reverse direction's steps run from T - 1 down, its
// h_(t-1) is the state of step t + 1.
TEST(SimRecurrent, BidirectionalLstmStepsEqualFcRunsOfTheSameMatrices) {
  RecurrentRun r;
  r.T = 28;
  r.in = 28;
  const fs::path dir = WriteRecurrentRun("simbidir", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  CheckStepsAgainstFcRuns(dir / "m.onnx", 2, true);
  fs::remove_all(dir);
}

// A bidirectional GRU over the rows (PyTorch's GRU: linear_before_reset =
// 1, so R h_(t-1) is one product of all three gates).
TEST(SimRecurrent, GruStepsEqualFcRunsOfTheSameMatrices) {
  RecurrentRun r;
  r.gru = true;
  r.embed = false;
  r.T = 28;
  r.in = 28;
  const fs::path dir = WriteRecurrentRun("simgru2", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  CheckStepsAgainstFcRuns(dir / "m.onnx", 2, true);
  fs::remove_all(dir);
}

// --input: a float .npy fed to the model as is (models whose input is not
// an image), its first --samples entries.
TEST(SimRecurrent, InputNpyDrivesTheModel) {
  RecurrentRun r;
  r.bidir = false;
  r.T = 28;
  r.in = 28;
  const fs::path dir = WriteRecurrentRun("siminput", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  std::vector<float> x = Uniform(3 * 28 * 28, 5, 1.0f);
  x[0] = 0;  // one zero in the first sample's x_0
  WriteNpy<float>((dir / "x.npy").string(), x, {3, 28, 28});
  const fs::path log = dir / "log.txt", json = dir / "sim.json";
  auto run = [&](const std::string& input) {
    const std::string cmd = std::string(PERMDNN_BIN) + " sim --model " + (dir / "m.onnx").string() + " --input " +
                            input + " --samples 2 --json " + json.string() + " > " + log.string() + " 2>&1";
    const int st = std::system(cmd.c_str());
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
  };
  auto text = [&] {
    std::stringstream out;
    out << std::ifstream(log).rdbuf();
    return out.str();
  };
  ASSERT_TRUE(run((dir / "x.npy").string())) << text();
  EXPECT_NE(text().find("activations of 2 sample(s) of " + (dir / "x.npy").string() + " [2, 28, 28] (no preprocessing)"),
            std::string::npos)
      << text();
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(json));
  const nlohmann::json* w = Record(j, "permdnn", "rnn1.W");
  ASSERT_NE(w, nullptr);
  EXPECT_NEAR((*w)["act_density"].get<double>(), 1.0 - 1.0 / (2 * 28 * 28), 1e-12);  // the one zero
  WriteNpy<float>((dir / "flat.npy").string(), x, {3 * 28 * 28});
  EXPECT_FALSE(run((dir / "flat.npy").string()));
  EXPECT_NE(text().find("needs a leading sample dimension"), std::string::npos) << text();
  fs::remove_all(dir);
}

// What the step model does not cover is an error naming the node.
TEST(SimRecurrent, UnsupportedCasesErrorClearly) {
  RecurrentRun r;
  r.bidir = false;
  r.T = 28;
  r.in = 28;
  const fs::path dir = WriteRecurrentRun("simbad", r);
  ExportRun(dir.string(), (dir / "m.onnx").string(), {});
  const std::string bytes = ReadFileBytes((dir / "m.onnx").string());
  auto edited = [&](const std::function<void(onnx::NodeProto*)>& edit) {
    onnx::ModelProto m;
    EXPECT_TRUE(m.ParseFromString(bytes));
    for (auto& n : *m.mutable_graph()->mutable_node())
      if (n.name() == "rnn1") edit(&n);
    const fs::path out = dir / "edited.onnx";
    std::ofstream(out, std::ios::binary) << m.SerializeAsString();
    return out;
  };
  std::string text;
  const fs::path lens = edited([](onnx::NodeProto* n) {
    while (n->input_size() < 5) n->add_input("");
    n->set_input(4, "rnn1:X");  // any name: the node now has sequence_lens
  });
  EXPECT_FALSE(SimModelCli(lens, &text, nullptr));
  EXPECT_NE(text.find("recurrent node 'rnn1' (PermDiagLSTM): sequence_lens is not simulated"), std::string::npos)
      << text;
  const fs::path init = edited([](onnx::NodeProto* n) {
    while (n->input_size() < 6) n->add_input("");
    n->set_input(5, "h0");
  });
  EXPECT_FALSE(SimModelCli(init, &text, nullptr));
  EXPECT_NE(text.find("recurrent node 'rnn1' (PermDiagLSTM): initial_h is not simulated"), std::string::npos) << text;
  const fs::path no_y = edited([](onnx::NodeProto* n) { n->set_output(0, ""); });
  EXPECT_FALSE(SimModelCli(no_y, &text, nullptr));
  EXPECT_NE(text.find("recurrent node 'rnn1' (PermDiagLSTM): the node has no Y output"), std::string::npos) << text;
  fs::remove_all(dir);
  // A GRU whose reset gate multiplies h_(t-1) before R (linear_before_reset
  // = 0), and a model whose input is not an image (charlm's tokens).
  RecurrentRun g;
  g.gru = true;
  g.bidir = false;
  const fs::path gdir = WriteRecurrentRun("simgru", g);
  ExportRun(gdir.string(), (gdir / "m.onnx").string(), {});
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(ReadFileBytes((gdir / "m.onnx").string())));
  for (auto& n : *m.mutable_graph()->mutable_node())
    for (auto& a : *n.mutable_attribute())
      if (a.name() == "linear_before_reset") a.set_i(0);
  std::ofstream(gdir / "lbr0.onnx", std::ios::binary) << m.SerializeAsString();
  EXPECT_FALSE(SimModelCli(gdir / "lbr0.onnx", &text, nullptr));
  EXPECT_NE(text.find("recurrent node 'rnn1' (PermDiagGRU): GRU with linear_before_reset = 0"), std::string::npos)
      << text;
  EXPECT_FALSE(SimModelCli(gdir / "m.onnx", &text, nullptr));
  EXPECT_NE(text.find("is int64; sim --model drives the layers with Fashion-MNIST test images"), std::string::npos)
      << text;
  fs::remove_all(gdir);
}

}  // namespace
}  // namespace permdnn::runtime
