// Compressed LSTM / GRU layers (recurrent_layers.h) and the recurrent models:
// forward and every parameter gradient against LibTorch's own LSTM / GRU
// (at::lstm / at::gru) run on the dense reconstruction of the same matrices,
// output shapes, clear errors (hidden not a multiple of p, unknown layer or
// cell), the run description of docs/run-format.md "Recurrent models", --from
// conversion, and a short charlm training run that resumes and whose export
// gives the trainer's held-out bits per character in the runtime.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/runtime/eval.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/train/trainer.h"
#include "src/train/models.h"
#include "src/train/recurrent_layers.h"

namespace permdnn::train {
namespace {

namespace fs = std::filesystem;

double Nmse(const torch::Tensor& a, const torch::Tensor& b) {
  double num = (a - b).pow(2).sum().item<double>(), den = b.pow(2).sum().item<double>();
  return den > 0 ? num / den : num;
}

std::string FreshDir(const std::string& name) {
  std::string dir = (fs::temp_directory_path() / ("permdnn_recurrent_test_" + name)).string();
  fs::remove_all(dir);
  return dir;
}

// LibTorch's LSTM / GRU on the dense reconstruction of the layer's matrices
// (differentiable in the layer's parameters): the oracle.
torch::Tensor Reference(RecurrentLayerImpl& l, const torch::Tensor& x) {
  const int64_t B = x.size(0);
  torch::Tensor h0 = torch::zeros({1, B, l.hidden});
  std::vector<torch::Tensor> params = {l.ih->DenseWeight(), l.hh->DenseWeight(), l.bias_ih, l.bias_hh};
  torch::Tensor out;
  if (l.cell == RecurrentCell::kLstm) {
    out = std::get<0>(at::lstm(x, {h0, h0}, params, true, 1, 0.0, true, false, true));
  } else {
    out = std::get<0>(at::gru(x, h0, params, true, 1, 0.0, true, false, true));
  }
  return l.sequence_output ? out : out.select(1, x.size(1) - 1);
}

struct Case {
  const char* cell;
  const char* compress;
  int64_t in, hidden;
};

class RecurrentMatchesTorch : public ::testing::TestWithParam<Case> {};

TEST_P(RecurrentMatchesTorch, ForwardAndGradients) {
  const Case c = GetParam();
  for (int mode : {0, 1, 2}) {
    const bool sequence = mode != 0, step_kernels = mode == 2;
    SCOPED_TRACE(::testing::Message() << c.cell << " " << c.compress << " in " << c.in << " hidden " << c.hidden
                                      << (sequence ? " sequence" : " last") << (step_kernels ? " step kernels" : ""));
    torch::manual_seed(7);
    const formats::CompressSpec spec = formats::CompressSpec::Parse(c.compress);
    RecurrentLayer layer("rnn1", ParseCell(c.cell), c.in, c.hidden, spec.Resolve("rnn1", false), sequence, 3);
    layer->step_kernels = step_kernels;
    if (layer->ih->pruned) {  // a real mask, so the oracle sees the pruned matrix
      layer->ih->pruned->Prune(0.3);
      layer->hh->pruned->Prune(0.3);
    }
    const int64_t B = 3, T = 5;
    torch::Tensor x = torch::randn({B, T, c.in});
    torch::Tensor xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
    torch::Tensor y = layer->forward(xa);
    const std::vector<int64_t> want = sequence ? std::vector<int64_t>{B, T, c.hidden} : std::vector<int64_t>{B, c.hidden};
    ASSERT_EQ(y.sizes().vec(), want);
    torch::Tensor r = torch::randn(y.sizes());
    (y * r).sum().backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : layer->parameters()) grads.push_back(p.grad().clone());
    layer->zero_grad();
    torch::Tensor ref = Reference(*layer, xb);
    (ref * r).sum().backward();
    EXPECT_LT(Nmse(y.detach(), ref.detach()), 1e-10);
    EXPECT_LT(Nmse(xa.grad(), xb.grad()), 1e-10);
    const auto params = layer->named_parameters();
    for (std::size_t k = 0; k < params.size(); ++k) {
      SCOPED_TRACE(params[k].key());
      ASSERT_TRUE(grads[k].defined());
      EXPECT_TRUE(torch::isfinite(grads[k]).all().item<bool>());
      EXPECT_LT(Nmse(grads[k], params[k].value().grad()), 1e-9);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    P, RecurrentMatchesTorch,
    ::testing::Values(Case{"lstm", "dense", 6, 8}, Case{"lstm", "permdiag:p=4", 6, 8},
                      Case{"lstm", "permdiag:p=8", 28, 16}, Case{"lstm", "circulant:p=4", 10, 8},
                      Case{"lstm", "prune:density=0.3", 6, 8}, Case{"gru", "dense", 5, 8},
                      Case{"gru", "permdiag:p=4", 7, 12}, Case{"gru", "circulant:p=4", 6, 8},
                      Case{"gru", "prune:density=0.3", 6, 8}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string s = std::string(info.param.cell) + "_" + info.param.compress;
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

// A permuted-diagonal gate matrix is block-structured: every row reads only
// ceil(in/p) inputs, and the four gates' blocks never share a block row.
TEST(RecurrentLayer, PermDiagMatricesHaveOneNonzeroPerBlockRow) {
  RecurrentLayer layer("rnn1", RecurrentCell::kLstm, 16, 8, formats::CompressSpec::Parse("permdiag:p=4").Resolve("rnn1", false),
                       false, 1);
  torch::Tensor w = layer->hh->DenseWeight().detach();
  ASSERT_EQ(w.sizes().vec(), (std::vector<int64_t>{32, 8}));
  for (int64_t r = 0; r < 32; ++r)
    for (int64_t J = 0; J < 2; ++J) EXPECT_LE(w[r].narrow(0, J * 4, 4).ne(0).sum().item<int64_t>(), 1) << r;
}

ModelInput Input(int64_t hidden) {
  ModelInput in;
  in.hidden = hidden;
  return in;
}

TEST(RecurrentModels, HiddenNotAMultipleOfPNamesTheLayer) {
  try {
    Net net("lstm", formats::CompressSpec::Parse("permdiag:p=8"), Input(20), 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("rnn1"), std::string::npos) << m;
    EXPECT_NE(m.find("multiple of p"), std::string::npos) << m;
    EXPECT_NE(m.find("20"), std::string::npos) << m;
  }
  EXPECT_THROW(Net("lstm", formats::CompressSpec::Parse("circulant:p=16"), Input(24), 1), Error);
  EXPECT_NO_THROW(Net("lstm", formats::CompressSpec::Parse("prune:density=0.1"), Input(20), 1));
  try {
    Net net("lstm", formats::CompressSpec::Parse("lstm2=permdiag:p=4"), Input(16), 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lstm2"), std::string::npos) << e.what();
  }
  ModelInput bad = Input(16);
  bad.cell = "rnn";
  try {
    Net net("lstm", formats::CompressSpec::Parse("dense"), bad, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--cell"), std::string::npos) << e.what();
  }
}

TEST(RecurrentModels, ShapesAndDefaultCompression) {
  Net lstm("lstm", formats::CompressSpec::Parse("permdiag:p=4"), Input(16), 1);
  EXPECT_EQ(lstm->forward(torch::randn({2, 1, 28, 28})).sizes().vec(), (std::vector<int64_t>{2, 10}));
  const auto layers = lstm->layers();
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].compress.ToString(), "permdiag:p=4");
  EXPECT_EQ(layers[1].compress.ToString(), "dense");  // the last layer stays dense unless named
  ModelInput in = Input(8);
  in.classes = 5;
  in.seq_len = 7;
  in.alphabet = {10, 32, 97, 98, 99};
  in.cell = "gru";
  Net lm("charlm", formats::CompressSpec::Parse("rnn1=circulant:p=4,fc=permdiag:p=4"), in, 1);
  torch::Tensor ids = torch::randint(0, 5, {3, 7}, torch::kLong);
  EXPECT_EQ(lm->forward(ids).sizes().vec(), (std::vector<int64_t>{3, 7, 5}));
  // Storage: W_ih [24, 64] and W_hh [24, 8] circulant p=4 + two biases.
  const auto st = lm->Storage();
  ASSERT_EQ(st.size(), 3u);
  EXPECT_EQ(st[1].name, "rnn1");
  EXPECT_EQ(st[1].bytes, (6 * 16 * 4 + 6 * 2 * 4) * 4 + 2 * 24 * 4);
  EXPECT_EQ(st[1].dense_bytes, (24 * 64 + 24 * 8 + 2 * 24) * 4);
  // --embed sets the embedding's width, which is rnn1's input size; out of range is refused.
  in.embed = 12;
  Net wide("charlm", formats::CompressSpec::Parse("rnn1=permdiag:p=4"), in, 1);
  EXPECT_EQ(wide->forward(ids).sizes().vec(), (std::vector<int64_t>{3, 7, 5}));
  EXPECT_EQ(wide->layers()[0].out, 12);
  EXPECT_EQ(wide->layers()[1].in, 12);
  EXPECT_EQ(wide->Storage()[1].dense_bytes, (24 * 12 + 24 * 8 + 2 * 24) * 4);
  in.embed = 0;
  EXPECT_THROW(Net("charlm", formats::CompressSpec::Parse("dense"), in, 1), Error);
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// model.json + npy per docs/run-format.md, read back with the LibTorch-free
// npy reader: the arrays reassemble the layer's matrices.
TEST(RecurrentModels, RunDescriptionFollowsTheRunFormat) {
  const std::string dir = FreshDir("runfmt");
  ModelInput in = Input(8);
  in.classes = 4;
  in.seq_len = 6;
  in.alphabet = {10, 65, 66, 67};
  for (const char* compress : {"permdiag:p=4", "prune:density=0.5", "dense", "circulant:p=4"}) {
    SCOPED_TRACE(compress);
    fs::remove_all(dir);
    torch::manual_seed(1);
    Net net("charlm", formats::CompressSpec::Parse(compress), in, 2);
    net->CompressionStep(1, 2);  // prune: the final mask (pruning end T = 1 of 2 steps)
    net->WriteRunDescription(dir, Preprocess{}, 0.5, std::log(2.0) * 1.25);
    const nlohmann::json j = ReadJson(dir + "/model.json");
    EXPECT_EQ(j["model"], "charlm");
    EXPECT_EQ(j["input"]["layout"], "T");
    EXPECT_EQ(j["input"]["dtype"], "int64");
    EXPECT_EQ(j["input"]["shape"], nlohmann::json::array({6}));
    EXPECT_EQ(j["input"]["alphabet"], nlohmann::json::array({10, 65, 66, 67}));
    EXPECT_NEAR(j["test_bpc"].get<double>(), 1.25, 1e-12);
    ASSERT_EQ(j["layers"].size(), 3u);
    EXPECT_EQ(j["layers"][0]["type"], "embedding");
    EXPECT_EQ(j["layers"][0]["vocab"], 4);
    EXPECT_EQ(j["layers"][0]["dim"], 64);
    const nlohmann::json& r = j["layers"][1];
    EXPECT_EQ(r["type"], "lstm");
    EXPECT_EQ(r["in"], 64);
    EXPECT_EQ(r["hidden"], 8);
    EXPECT_EQ(r["output"], "sequence");
    EXPECT_EQ(r["bidirectional"], false);
    const auto& t = r["tensors"];
    auto npy = [&](const std::string& key) { return ReadNpy(dir + "/" + t.at(key).get<std::string>()); };
    EXPECT_EQ(npy("bias_ih").shape, (std::vector<int64_t>{32}));
    EXPECT_EQ(npy("bias_hh").shape, (std::vector<int64_t>{32}));
    const auto& mods = net->named_modules();
    RecurrentLayerImpl* rnn = nullptr;
    for (const auto& m : mods)
      if (m.key() == "rnn1") rnn = dynamic_cast<RecurrentLayerImpl*>(m.value().get());
    ASSERT_NE(rnn, nullptr);
    for (const std::string prefix : {"ih.", "hh."}) {
      CompressedLinearImpl& m = prefix == "ih." ? *rnn->ih : *rnn->hh;
      const int64_t cols = prefix == "ih." ? 64 : 8;
      torch::Tensor want = m.DenseWeight().detach().contiguous();
      std::vector<float> got(static_cast<std::size_t>(32 * cols), 0.0f);
      const std::string kind = r["compress"]["kind"];
      if (kind == "dense") {
        NpyArray w = npy(prefix + "weight");
        ASSERT_EQ(w.shape, (std::vector<int64_t>{32, cols}));
        got = w.ToFloat();
      } else if (kind == "permdiag") {
        NpyArray v = npy(prefix + "values"), o = npy(prefix + "offsets");
        ASSERT_EQ(v.shape, (std::vector<int64_t>{8, cols / 4, 4}));
        ASSERT_EQ(o.shape, (std::vector<int64_t>{8, cols / 4}));
        const std::vector<float> vals = v.ToFloat();
        const std::vector<float> offs = o.ToFloat();
        for (int64_t I = 0; I < 8; ++I)
          for (int64_t J = 0; J < cols / 4; ++J)
            for (int64_t c = 0; c < 4; ++c) {
              const int64_t k = static_cast<int64_t>(offs[I * (cols / 4) + J]);
              got[(I * 4 + c) * cols + J * 4 + (c + k) % 4] = vals[(I * (cols / 4) + J) * 4 + c];
            }
      } else if (kind == "circulant") {
        const std::vector<float> vals = npy(prefix + "values").ToFloat();
        for (int64_t rr = 0; rr < 32; ++rr)
          for (int64_t cc = 0; cc < cols; ++cc)
            got[rr * cols + cc] = vals[((rr / 4) * (cols / 4) + cc / 4) * 4 + ((rr % 4 - cc % 4 + 4) % 4)];
      } else {
        ASSERT_EQ(kind, "prune");
        EXPECT_NEAR(r["compress"]["density"].get<double>(), 0.5, 0.01);
        const std::vector<float> rp = npy(prefix + "row_ptr").ToFloat(), ci = npy(prefix + "col_idx").ToFloat(),
                                 vals = npy(prefix + "values").ToFloat();
        ASSERT_EQ(rp.size(), 33u);
        for (int64_t rr = 0; rr < 32; ++rr)
          for (int64_t k = static_cast<int64_t>(rp[rr]); k < static_cast<int64_t>(rp[rr + 1]); ++k)
            got[rr * cols + static_cast<int64_t>(ci[k])] = vals[k];
      }
      for (int64_t k = 0; k < 32 * cols; ++k) ASSERT_EQ(got[k], want.data_ptr<float>()[k]) << prefix << k;
    }
  }
}

// --from: a dense run's recurrent layer projected onto permdiag keeps the
// most energy per block; dense → dense copies exactly.
TEST(RecurrentModels, FromDenseRunConverts) {
  const std::string dir = FreshDir("from");
  torch::manual_seed(2);
  Net dense("lstm", formats::CompressSpec::Parse("dense"), Input(16), 1);
  dense->WriteRunDescription(dir, Preprocess{}, 0.5);
  torch::Tensor x = torch::randn({2, 1, 28, 28});
  Net copy("lstm", formats::CompressSpec::Parse("dense"), Input(16), 9);
  copy->LoadFromRun(dir);
  {
    torch::NoGradGuard ng;
    EXPECT_LT(Nmse(copy->forward(x), dense->forward(x)), 1e-12);
  }
  for (const char* c : {"permdiag:p=4", "circulant:p=4", "prune:density=0.2"}) {
    SCOPED_TRACE(c);
    Net pd("lstm", formats::CompressSpec::Parse(c), Input(16), 9);
    const auto reports = pd->LoadFromRun(dir);
    ASSERT_EQ(reports.size(), 2u);
    EXPECT_EQ(reports[0].layer, "rnn1");
    if (std::string(c).rfind("prune", 0) == 0) {
      EXPECT_EQ(reports[0].kept_energy, 1.0);  // copied; pruned by the schedule
    } else {
      // Random dense matrices: one of p diagonals (or the circulant mean) keeps
      // more than 1/p of the energy, never all of it.
      EXPECT_GT(reports[0].kept_energy, 0.2);
      EXPECT_LT(reports[0].kept_energy, 0.9);
    }
  }
  // A compressed source is not a conversion source.
  const std::string pdir = FreshDir("from_pd");
  Net(("lstm"), formats::CompressSpec::Parse("permdiag:p=4"), Input(16), 1)->WriteRunDescription(pdir, Preprocess{}, 0.5);
  Net target("lstm", formats::CompressSpec::Parse("permdiag:p=4"), Input(16), 1);
  EXPECT_THROW(target->LoadFromRun(pdir), Error);
}

// charlm end to end on a small corpus file: it learns (held-out bits per
// character below a uniform guess), writes its run description with
// test_bpc, and an interrupted run resumes to the same result.
TEST(RecurrentModels, CharLmTrainsAndResumes) {
  const std::string corpus = FreshDir("corpus.txt");
  {
    std::ofstream out(corpus, std::ios::binary);
    for (int i = 0; i < 300; ++i) out << "abcabd abcabd\n";
  }
  auto options = [&](const std::string& name) {
    TrainOptions o;
    o.model = "charlm";
    o.compress = "permdiag:p=4";
    o.data_dir = corpus;
    o.out_dir = FreshDir(name);
    o.hidden = 16;
    o.embed = 12;  // not the default 64: the export and the runtime read the width from the run
    o.seq_len = 16;
    o.epochs = 2;
    o.batch = 16;
    o.lr = 1e-2;
    o.threads = 1;
    o.progress = false;
    return o;
  };
  std::ostringstream log;
  TrainOptions full = options("lm_full");
  TrainResult a = Train(full, log);
  ASSERT_FALSE(a.interrupted);
  EXPECT_LT(a.final_bpc, std::log2(8.0) * 0.5) << log.str();  // alphabet of 7 bytes + '\n' ... far below uniform
  const nlohmann::json j = ReadJson(full.out_dir + "/model.json");
  EXPECT_NEAR(j["test_bpc"].get<double>(), a.best_bpc, 1e-9);
  EXPECT_EQ(j["input"]["vocab"], 6);  // a b c d ' ' '\n'
  EXPECT_EQ(j["layers"][0]["dim"], 12);
  EXPECT_EQ(ReadJson(full.out_dir + "/summary.json")["embed"], 12);
  // The exported model in the runtime gives the trainer's held-out bpc (the
  // best epoch's weights, the same windows, the same cross-entropy).
  const std::string onnx = full.out_dir + "/model.onnx";
  runtime::ExportRun(full.out_dir, onnx);
  runtime::Model m = runtime::Model::Load(onnx);
  runtime::TextInput text;
  ASSERT_TRUE(runtime::ModelTextInput(m, &text));
  EXPECT_EQ(text.seq_len, 16);
  EXPECT_EQ(text.alphabet, (std::vector<uint8_t>{'\n', ' ', 'a', 'b', 'c', 'd'}));
  const TextCorpus lm = LoadTextCorpus(corpus);
  const runtime::TextEvalResult ev = runtime::EvaluateText(m, lm, text.alphabet, {.seq_len = 16, .batch = 7});
  EXPECT_NEAR(ev.bpc, a.best_bpc, 1e-4);
  EXPECT_EQ(ev.windows, TextCorpus::WindowCount(static_cast<int64_t>(lm.test_ids.size()), 16));
  // A corpus with a byte the model has no id for is refused, naming the byte.
  const std::string other = FreshDir("other.txt");
  std::ofstream(other, std::ios::binary) << std::string(400, 'a') + "xyz";
  try {
    runtime::EvaluateText(m, LoadTextCorpus(other), text.alphabet, {.seq_len = 4});
    ADD_FAILURE() << "a byte outside the alphabet was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("0x78"), std::string::npos) << e.what();
  }

  TrainOptions part = options("lm_part");
  part.stop_after_batches = 20;
  EXPECT_TRUE(Train(part, log).interrupted);
  part.stop_after_batches = -1;
  part.resume = true;
  TrainResult b = Train(part, log);
  ASSERT_FALSE(b.interrupted);
  EXPECT_EQ(a.final_bpc, b.final_bpc);
  EXPECT_EQ(a.final_accuracy, b.final_accuracy);
}

}  // namespace
}  // namespace permdnn::train
