// ADMM-NN (src/train/admm.h): the projection Π_S onto each structure, and
// whole ADMM runs on the synthetic data set (rounds recorded, the target
// reached, an interrupted run resumes bit for bit, bad options rejected).
#include "src/train/admm.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "permdnn/core/error.h"
#include "permdnn/train/trainer.h"
#include "tests/train/synthetic_run.h"

namespace permdnn::train {
namespace {

namespace fs = std::filesystem;

LayerInfo Layer(const std::string& type, int64_t in, int64_t out, int kernel, const std::string& method) {
  LayerInfo l{"w", type, in, out, kernel, 1, 0, formats::ParseLayerCompression(method)};
  return l;
}

torch::Tensor Weight(const LayerInfo& l, int seed) {
  torch::manual_seed(seed);
  return l.type == "conv2d" ? torch::randn({l.out, l.in, l.kernel, l.kernel}) : torch::randn({l.out, l.in});
}

TEST(AdmmProject, PruneKeepsTheLargest) {
  const LayerInfo l = Layer("linear", 37, 23, 0, "prune:density=0.25");
  const torch::Tensor w = Weight(l, 1), z = AdmmProject(l, w);
  const int64_t keep = std::llround(0.25 * static_cast<double>(w.numel()));
  const torch::Tensor nz = z.ne(0);
  ASSERT_EQ(nz.sum().item<int64_t>(), keep);
  EXPECT_TRUE(torch::equal(z.masked_select(nz), w.masked_select(nz)));  // kept values unchanged
  // Every kept |w| >= every dropped |w|.
  EXPECT_GE(w.abs().masked_select(nz).min().item<float>(), w.abs().masked_select(nz.logical_not()).max().item<float>());
}

TEST(AdmmProject, PruneAndQuantizeUsesFittedLevels) {
  const LayerInfo l = Layer("conv2d", 6, 8, 3, "prune:density=0.3:bits=2");
  const torch::Tensor w = Weight(l, 2), z = AdmmProject(l, w);
  const torch::Tensor nz = z.ne(0);
  EXPECT_EQ(nz.sum().item<int64_t>(), std::llround(0.3 * static_cast<double>(w.numel())));
  // Four levels ±q, ±2q, on the support of the largest weights.
  const torch::Tensor values = std::get<0>(torch::_unique(z.masked_select(nz)));
  ASSERT_LE(values.numel(), 4);
  const float q = values.abs().min().item<float>();
  for (int64_t i = 0; i < values.numel(); ++i) {
    const float v = values[i].item<float>(), r = std::fabs(v) / q;
    EXPECT_NEAR(r, std::round(r), 1e-4) << v;
    EXPECT_LE(std::round(r), 2) << v;
  }
  const torch::Tensor kept = AdmmProject(Layer("conv2d", 6, 8, 3, "prune:density=0.3"), w);
  EXPECT_TRUE(torch::equal(kept.ne(0), nz));  // the same support as pruning alone
}

// Every Π_S is a projection onto its set: Π(Π(w)) = Π(w), and it moves a
// random w (not in the set) by less than ‖w‖.
TEST(AdmmProject, EveryStructureIsIdempotent) {
  for (const char* m : {"prune:density=0.1", "prune:density=1:bits=3", "permdiag:p=4", "circulant:p=4"}) {
    for (const char* type : {"linear", "conv2d"}) {
      const bool conv = std::string(type) == "conv2d";
      const LayerInfo l = Layer(type, conv ? 8 : 13, conv ? 12 : 10, conv ? 3 : 0, m);
      const torch::Tensor w = Weight(l, 3), z = AdmmProject(l, w);
      EXPECT_TRUE(torch::allclose(AdmmProject(l, z), z, 1e-5, 1e-6)) << m << " " << type;
      EXPECT_LT((w - z).norm().item<double>(), w.norm().item<double>()) << m << " " << type;
      EXPECT_GT((w - z).norm().item<double>(), 0.0) << m << " " << type;
    }
  }
  const LayerInfo dense = Layer("linear", 5, 4, 0, "dense");
  const torch::Tensor w = Weight(dense, 4);
  EXPECT_TRUE(torch::equal(AdmmProject(dense, w), w));
}

TrainOptions Admm(const std::string& name, const std::string& model, const std::string& compress) {
  TrainOptions o = Synthetic(FreshDir("admm_" + name), model, compress);
  o.method = "admm";
  o.epochs = 6;
  o.admm_epochs = 4;
  o.admm_iter = 8;  // 8 batches per epoch: one round per epoch
  o.rho = 0.5;
  o.rho_mult = 1.5;
  return o;
}

std::vector<std::vector<double>> ReadCsv(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

TEST(TrainAdmm, PrunesAndQuantizesWithRecordedRounds) {
  std::ostringstream log;
  // From a trained dense model, as ADMM-NN starts.
  TrainOptions dense = Admm("prune_dense", "tiny", "dense");
  dense.method = "adam";
  dense.epochs = 3;
  ASSERT_FALSE(Train(dense, log).interrupted);
  TrainOptions o = Admm("prune", "tiny", "prune:density=0.2,bits=3");
  o.from_dir = dense.out_dir;
  // Rounds long enough for Adam to move W towards Z − U (with too few steps
  // per round U outgrows W and the support of Π(W + U) wanders).
  o.epochs = 10;
  o.admm_epochs = 8;
  o.admm_iter = 16;
  o.lr = 5e-3;
  o.rho = 1;
  o.rho_mult = 2;
  const TrainResult r = Train(o, log);
  ASSERT_FALSE(r.interrupted) << log.str();
  // Four rounds with ρ doubling, and the constraint violation shrinking.
  const auto rows = ReadCsv(o.out_dir + "/admm/admm_rounds.csv");
  ASSERT_EQ(rows.size(), 4u) << log.str();
  for (std::size_t k = 0; k < rows.size(); ++k) {
    EXPECT_EQ(rows[k][0], static_cast<double>(k + 1));
    EXPECT_EQ(rows[k][1], static_cast<double>(16 * (k + 1)));
    EXPECT_NEAR(rows[k][2], std::pow(2.0, static_cast<double>(k)), 1e-9);
  }
  EXPECT_LT(rows.back()[3], rows.front()[3]) << log.str();
  // The retrained model is the target: exact density, 8-entry codebook, 2 epochs.
  auto summary = nlohmann::json::parse(ReadFile(o.out_dir + "/summary.json"));
  EXPECT_EQ(summary["method"], "admm");
  EXPECT_EQ(summary["admm"]["epochs"], 8);
  EXPECT_EQ(summary["admm"]["retrain_epochs"], 2);
  auto model = nlohmann::json::parse(ReadFile(o.out_dir + "/model.json"));
  int pruned = 0;
  for (const auto& l : model["layers"]) {
    if (!l.contains("compress") || l["compress"]["kind"] != "prune") continue;
    ++pruned;
    const double size = static_cast<double>(l["in"].get<int64_t>() * l["out"].get<int64_t>());
    EXPECT_NEAR(l["compress"]["density"].get<double>(), std::llround(0.2 * size) / size, 1e-9) << l.dump();
    EXPECT_EQ(l["compress"]["bits"], 3);
    EXPECT_TRUE(l["tensors"].contains("codebook"));
  }
  EXPECT_EQ(pruned, 2);  // fc1, fc2 (fc3 is the dense edge layer)
  EXPECT_GT(r.final_accuracy, 0.5) << log.str();
  EXPECT_NE(log.str().find("hard-pruned to density"), std::string::npos);
  // Float retraining first, the levels at 3/4 of the 2 retraining epochs.
  EXPECT_NE(log.str().find("fc1 quantized to 8 levels"), std::string::npos) << log.str();
}

// The decoupled penalty's step is the exact minimiser of
// (1/2lr)‖W' − W‖² + (ρ/2)‖W' − Z + U‖²: W' = (W + c(Z − U))/(1 + c), c = lr·ρ.
TEST(AdmmProximalStep, IsTheProximalPointOfThePenalty) {
  torch::manual_seed(7);
  const torch::Tensor w0 = torch::randn({5, 4}), z = torch::randn({5, 4}), u = torch::randn({5, 4});
  std::vector<AdmmTerm> terms = {{"fc", {}, {}, w0.clone(), z, u}};
  const double lr = 0.01, rho = 30, c = lr * rho;
  AdmmProximalStep(terms, c);
  EXPECT_TRUE(torch::allclose(terms[0].w, (w0 + c * (z - u)) / (1 + c), 1e-6, 1e-6));
  // The gradient of the proximal objective is zero there.
  const torch::Tensor grad = (terms[0].w - w0) / lr + rho * (terms[0].w - z + u);
  EXPECT_LT(grad.abs().max().item<double>(), 1e-3);
  // c → ∞ lands on Z − U; c = 0 leaves W.
  std::vector<AdmmTerm> far = {{"fc", {}, {}, w0.clone(), z, u}};
  AdmmProximalStep(far, 1e9);
  EXPECT_TRUE(torch::allclose(far[0].w, z - u, 1e-5, 1e-5));
  std::vector<AdmmTerm> none = {{"fc", {}, {}, w0.clone(), z, u}};
  AdmmProximalStep(none, 0);
  EXPECT_TRUE(torch::equal(none[0].w, w0));
}

// --admm-penalty decoupled with --rescale-dual: the same rounds and target,
// the penalty applied as proximal steps, U rescaled as ρ grows.
TEST(TrainAdmm, DecoupledPenaltyWithRescaledDualReachesTheTarget) {
  std::ostringstream log;
  TrainOptions o = Admm("decoupled", "tiny", "prune:density=0.2");
  o.admm_penalty = "decoupled";
  o.rescale_dual = true;
  o.lr = 5e-3;
  o.rho = 20;  // c = lr·ρ = 0.1 per step
  o.rho_mult = 1.5;
  const TrainResult r = Train(o, log);
  ASSERT_FALSE(r.interrupted) << log.str();
  const auto rows = ReadCsv(o.out_dir + "/admm/admm_rounds.csv");
  ASSERT_EQ(rows.size(), 4u) << log.str();
  EXPECT_LT(rows.back()[3], rows.front()[3]) << log.str();
  EXPECT_LT(rows.back()[3], 0.2) << log.str();  // W close to its sparse Z after four rounds
  auto summary = nlohmann::json::parse(ReadFile(o.out_dir + "/summary.json"));
  EXPECT_EQ(summary["admm"]["penalty"], "decoupled");
  EXPECT_EQ(summary["admm"]["rescale_dual"], true);
  EXPECT_NE(log.str().find("decoupled penalty"), std::string::npos) << log.str();
  for (const auto& l : r.layers)
    if (l.name == "fc1" || l.name == "fc2") EXPECT_EQ(l.compress, "prune:density=0.2");
}

TEST(TrainAdmm, ConvOntoPermDiagAndCirculant) {
  for (const char* spec : {"permdiag:p=2", "circulant:p=2"}) {
    std::ostringstream log;
    TrainOptions o = Admm(std::string("struct") + spec[0], "tinycnn", spec);
    o.epochs = 2;
    o.admm_epochs = 1;
    o.admm_iter = 4;
    const TrainResult r = Train(o, log);
    ASSERT_FALSE(r.interrupted);
    EXPECT_EQ(ReadCsv(o.out_dir + "/admm/admm_rounds.csv").size(), 2u);
    EXPECT_GT(r.compression, 1.3) << spec;
    for (const auto& l : r.layers)
      if (l.name == "conv2") EXPECT_EQ(l.compress, spec);
  }
}

TEST(TrainAdmm, InterruptedRunResumesIdentically) {
  std::ostringstream log;
  const char* spec = "prune:density=0.3,bits=2";
  const TrainOptions full = Admm("full", "tiny", spec);
  ASSERT_FALSE(Train(full, log).interrupted);
  // 32 ADMM steps, then 16 retraining steps: stop mid-round in the ADMM
  // phase, then in the retraining phase.
  TrainOptions part = Admm("part", "tiny", spec);
  part.stop_after_batches = 13;
  ASSERT_TRUE(Train(part, log).interrupted);
  part.resume = true;
  part.stop_after_batches = 25;
  ASSERT_TRUE(Train(part, log).interrupted);
  part.stop_after_batches = -1;
  ASSERT_FALSE(Train(part, log).interrupted) << log.str();
  EXPECT_EQ(ReadFile(full.out_dir + "/admm/admm_rounds.csv"), ReadFile(part.out_dir + "/admm/admm_rounds.csv"));
  auto a = nlohmann::json::parse(ReadFile(full.out_dir + "/metrics.json"));
  auto b = nlohmann::json::parse(ReadFile(part.out_dir + "/metrics.json"));
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["train_loss"].get<double>(), b[i]["train_loss"].get<double>()) << "epoch " << i + 1;
    EXPECT_EQ(a[i]["test_loss"].get<double>(), b[i]["test_loss"].get<double>()) << "epoch " << i + 1;
  }
  for (const char* f : {"test_predictions.npy", "tensors/fc1.codes.npy", "tensors/fc1.codebook.npy",
                        "tensors/fc2.col_idx.npy", "admm/tensors/fc1.weight.npy"})
    EXPECT_EQ(ReadFile(full.out_dir + "/" + f), ReadFile(part.out_dir + "/" + f)) << f;
}

TEST(TrainAdmm, RejectsBadOptions) {
  std::ostringstream log;
  auto fails = [&](TrainOptions o, const std::string& what) {
    try {
      Train(o, log);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  TrainOptions o = Admm("bad", "tiny", "prune:density=0.2");
  o.rho = 0;
  fails(o, "--rho must be > 0");
  o.rho = -1;
  fails(o, "--rho must be > 0");
  o.rho = 0.1;
  o.rho_mult = 0;
  fails(o, "--rho-mult must be > 0");
  o.rho_mult = 1;
  o.admm_epochs = 6;
  fails(o, "--admm-epochs 6 must be in [1, epochs - 1 = 5]");
  o.admm_epochs = 2;
  o.compress = "prune:density=0";
  fails(o, "density=0");
  o.compress = "prune:density=1.5";
  fails(o, "must be a number in (0, 1]");
  o.compress = "prune:density=0.5,bits=9";
  fails(o, "must be an integer in [1, 8]");
  o.compress = "dense";
  fails(o, "compresses no layer");
  o.compress = "prune:density=0.2";
  o.break_even_density = 1.5;
  fails(o, "--break-even must be in [0, 1]");
  o.break_even_density = 0;
  o.refuse_break_even = true;
  fails(o, "--refuse-break-even needs --break-even");
  o.break_even_density = 0.1;  // fc1 and fc2 at 0.2: nothing bought
  fails(o, "layer 'fc1' asks for density 0.2 >= its break-even density 0.1 on --break-even");
  o.refuse_break_even = false;
  o.break_even_density = 0;
  o.admm_penalty = "soft";
  fails(o, "--admm-penalty must be gradient or decoupled, got 'soft'");
  o.admm_penalty = "gradient";
  o.method = "sgd";
  fails(o, "--method must be adam or admm");
  EXPECT_FALSE(fs::exists(o.out_dir + "/checkpoint_last.pt"));
}

// The conv output sizes the break-even query uses (a conv's im2col matrix
// multiplies one column per output pixel), on 28×28 inputs.
TEST(TrainAdmm, ConvOutputPixelsFollowTheLayerList) {
  ModelInput in;  // 28 x 28
  auto pixels = [&](const std::string& model) {
    return ConvOutputPixels(Net(model, CompressSpec::Parse("dense"), in, 1)->layers(), in);
  };
  const auto lenet5 = pixels("lenet5");  // conv1 5x5 pad 2, pool, conv2 5x5
  EXPECT_EQ(lenet5.at("conv1"), 28 * 28);
  EXPECT_EQ(lenet5.at("conv2"), 10 * 10);
  const auto caffe = pixels("lenet5caffe");  // no padding
  EXPECT_EQ(caffe.at("conv1"), 24 * 24);
  EXPECT_EQ(caffe.at("conv2"), 8 * 8);
  const auto cnn = pixels("cnn");  // 3x3 pad 1 then 2x2 pooling, three times
  EXPECT_EQ(cnn.at("conv1"), 28 * 28);
  EXPECT_EQ(cnn.at("conv2"), 14 * 14);
  EXPECT_EQ(cnn.at("conv3"), 7 * 7);
  const auto res = pixels("tinyres");  // stride-2 stages; the shortcut reads the block input
  EXPECT_EQ(res.at("conv1"), 28 * 28);
  EXPECT_EQ(res.at("s1b1_conv2"), 28 * 28);
  EXPECT_EQ(res.at("s2b1_conv1"), 14 * 14);
  EXPECT_EQ(res.at("s2b1_sc"), 14 * 14);
  EXPECT_EQ(res.at("s3b1_conv2"), 7 * 7);
  EXPECT_EQ(res.at("s3b1_sc"), 7 * 7);
}

// Per-layer break-even (TrainOptions::break_even_for, what the CLI's
// `--break-even cpu|eie-cycles|eie-energy` sets): every pruned layer is
// asked with its own matrix shape and conv output size, and a layer at or
// above its answer is refused by name, before any training.
TEST(TrainAdmm, BreakEvenIsAskedPerLayerShape) {
  TrainOptions o = Admm("break_even", "tinycnn", "prune:density=0.3");
  std::vector<BreakEvenQuery> asked;
  o.break_even_for = [&](const BreakEvenQuery& q) {
    asked.push_back(q);
    return BreakEvenAnswer{q.layer == "fc1" ? 0.25 : 0.5, "test platform detail"};
  };
  o.break_even_platform = "test-platform";
  o.refuse_break_even = true;
  try {
    Train(o, std::cout);
    ADD_FAILURE() << "fc1 at 0.3 >= 0.25 was not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'fc1' asks for density 0.3 >= its break-even density 0.25 on "
                                         "test-platform"),
              std::string::npos)
        << e.what();
  }
  // tinycnn on 8x8 synthetic images: conv1 stays dense (first layer),
  // conv2 (8 outputs, 4 inputs, 3x3, pad 1) runs at 4x4 after one pooling;
  // fc1 (16 outputs) reads 8 channels at 2x2.
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[0].layer, "conv2");
  EXPECT_EQ(asked[0].rows, 8);
  EXPECT_EQ(asked[0].cols, 4 * 9);
  EXPECT_EQ(asked[0].columns, 4 * 4);
  EXPECT_EQ(asked[1].layer, "fc1");
  EXPECT_EQ(asked[1].rows, 16);
  EXPECT_EQ(asked[1].cols, 8 * 2 * 2);
  EXPECT_EQ(asked[1].columns, 1);
  EXPECT_FALSE(fs::exists(o.out_dir + "/admm/checkpoint_last.pt"));
}

}  // namespace
}  // namespace permdnn::train
