// The trainer on the synthetic data set: it learns, it resumes bit for bit
// after an interruption, it rejects a corrupt checkpoint with a clear error,
// and the LibTorch-free run description (model.json + npy) reproduces the
// LibTorch model's predictions through permdnn's own kernels.
#include "permdnn/train/trainer.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "tests/train/synthetic_run.h"

namespace permdnn::train {
namespace {

namespace fs = std::filesystem;

TEST(Trainer, LearnsSyntheticData) {
  std::ostringstream log;
  TrainOptions o = Synthetic(FreshDir("learns"), "tiny", "permdiag:p=4");
  TrainResult r = Train(o, log);
  ASSERT_FALSE(r.interrupted);
  ASSERT_EQ(r.history.size(), 3u);
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss) << log.str();
  EXPECT_GT(r.final_accuracy, 0.9) << log.str();
  EXPECT_GT(r.compression, 1.5);
  for (const char* f : {"metrics.csv", "metrics.json", "checkpoint_last.pt", "checkpoint_best.pt", "model.json",
                        "test_predictions.npy", "summary.json"})
    EXPECT_TRUE(fs::exists(o.out_dir + "/" + f)) << f;
  // A finished run is not overwritten by accident.
  EXPECT_THROW(Train(o, log), Error);
}

TEST(Trainer, ResumeAfterInterruptIsIdentical) {
  std::ostringstream log;
  TrainOptions full = Synthetic(FreshDir("full"), "tiny", "permdiag:p=2");
  Train(full, log);

  TrainOptions part = Synthetic(FreshDir("part"), "tiny", "permdiag:p=2");
  part.stop_after_batches = 11;  // mid-way through epoch 2 (8 batches per epoch)
  TrainResult r1 = Train(part, log);
  ASSERT_TRUE(r1.interrupted);
  part.stop_after_batches = -1;
  part.resume = true;
  TrainResult r2 = Train(part, log);
  ASSERT_FALSE(r2.interrupted);

  auto a = nlohmann::json::parse(ReadFile(full.out_dir + "/metrics.json"));
  auto b = nlohmann::json::parse(ReadFile(part.out_dir + "/metrics.json"));
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["train_loss"].get<double>(), b[i]["train_loss"].get<double>()) << "epoch " << i + 1;
    EXPECT_EQ(a[i]["test_loss"].get<double>(), b[i]["test_loss"].get<double>()) << "epoch " << i + 1;
  }
  EXPECT_EQ(ReadFile(full.out_dir + "/test_predictions.npy"), ReadFile(part.out_dir + "/test_predictions.npy"));
  EXPECT_EQ(ReadFile(full.out_dir + "/tensors/fc1.values.npy"), ReadFile(part.out_dir + "/tensors/fc1.values.npy"));
}

// --weight-decay shrinks the weights (decoupled, after each Adam step) and
// is recorded in summary.json; a negative value is refused by name.
TEST(Trainer, WeightDecayShrinksWeights) {
  std::ostringstream log;
  auto norm = [](const std::string& file) {
    double s = 0;
    for (float v : ReadNpy(file).as<float>()) s += static_cast<double>(v) * v;
    return std::sqrt(s);
  };
  TrainOptions plain = Synthetic(FreshDir("wd0"), "tiny", "permdiag:p=2");
  Train(plain, log);
  TrainOptions decayed = Synthetic(FreshDir("wd"), "tiny", "permdiag:p=2");
  decayed.weight_decay = 50;  // ×(1 − 0.15) per step
  Train(decayed, log);
  for (const char* t : {"/tensors/fc1.values.npy", "/tensors/fc3.weight.npy"})
    EXPECT_LT(norm(decayed.out_dir + t), 0.5 * norm(plain.out_dir + t)) << t;
  EXPECT_EQ(nlohmann::json::parse(ReadFile(decayed.out_dir + "/summary.json"))["weight_decay"].get<double>(), 50);
  // Biases are not decayed: the same biases would be unlikely, shrunk ones too.
  EXPECT_GT(norm(decayed.out_dir + "/tensors/fc1.bias.npy"), 0.5 * norm(plain.out_dir + "/tensors/fc1.bias.npy"));

  TrainOptions bad = Synthetic(FreshDir("wdbad"), "tiny", "dense");
  bad.weight_decay = -1;
  try {
    Train(bad, log);
    FAIL() << "a negative --weight-decay was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--weight-decay"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(bad.out_dir + "/checkpoint_last.pt"));
}

// --resume with options that change the layers' shapes (here --hidden, which
// the tiny model ignores, so the tensors would load) names both sets.
TEST(Trainer, ResumeWithOtherShapesIsAClearError) {
  std::ostringstream log;
  TrainOptions o = Synthetic(FreshDir("reshape"), "tiny", "dense");
  o.epochs = 1;
  Train(o, log);
  o.resume = true;
  o.epochs = 2;
  o.hidden = 128;
  try {
    Train(o, log);
    FAIL() << "a checkpoint of other shapes was resumed";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--hidden 256 --embed 64"), std::string::npos) << what;
    EXPECT_NE(what.find("--hidden 128 --embed 64"), std::string::npos) << what;
  }
}

TEST(Trainer, CorruptCheckpointIsAClearError) {
  std::ostringstream log;
  TrainOptions o = Synthetic(FreshDir("corrupt"), "tiny", "dense");
  o.epochs = 1;
  Train(o, log);
  std::string path = o.out_dir + "/checkpoint_last.pt";
  std::string bytes = ReadFile(path);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes.substr(0, bytes.size() / 2);  // truncated
  }
  o.resume = true;
  o.epochs = 2;
  try {
    Train(o, log);
    FAIL() << "corrupt checkpoint accepted";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("corrupt"), std::string::npos) << what;
    EXPECT_NE(what.find(path), std::string::npos) << what;
  }
}

// --resume's reader of checkpoint_last.pt (LibTorch's archive format, which
// the clang fuzz build cannot reach: docs/reliability.md), fuzzed here
// instead: seeded mutations of a real checkpoint (byte flips, overwritten
// runs, truncations, bytes inserted) either resume or give a permdnn::Error;
// any other exception fails the test, a crash or sanitizer report (make
// test-asan) fails the run.
TEST(Trainer, ResumeRejectsCorruptCheckpoints) {
  std::ostringstream log;
  TrainOptions o = Synthetic(FreshDir("mutated"), "tiny", "dense");
  o.epochs = 1;
  o.synthetic_train = 128;
  o.synthetic_test = 64;
  o.stop_after_batches = 1;  // a checkpoint in mid-epoch: every meta field in use
  ASSERT_TRUE(Train(o, log).interrupted);
  const std::string path = o.out_dir + "/checkpoint_last.pt";
  const std::string good = ReadFile(path);
  ASSERT_GT(good.size(), 64u);
  o.resume = true;
  o.stop_after_batches = 0;  // a resumed run stops at once (before any batch)
  std::mt19937_64 rng(20);
  int errors = 0, resumed = 0;
  for (int i = 0; i < 150; ++i) {
    std::string bytes = good;
    const auto at = [&] { return static_cast<std::size_t>(rng() % bytes.size()); };
    switch (i % 4) {
      case 0:
        for (int k = 0; k < 1 + i % 8; ++k) bytes[at()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1: {
        const std::size_t a = at();
        for (std::size_t k = a; k < std::min(bytes.size(), a + 1 + rng() % 16); ++k)
          bytes[k] = static_cast<char>(rng() % 2 ? 0xff : rng() % 256);
        break;
      }
      case 2:
        bytes.resize(at());
        break;
      default:
        bytes.insert(at(), std::string(1 + rng() % 8, static_cast<char>(rng() % 256)));
    }
    { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; }
    try {
      Train(o, log);
      ++resumed;
    } catch (const Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find(o.out_dir), std::string::npos) << "mutation " << i << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "mutation " << i << ": not a permdnn::Error: " << e.what();
    }
  }
  EXPECT_GT(errors, 0);
  std::printf("corrupt checkpoints: %d rejected, %d resumed\n", errors, resumed);
}

TEST(Trainer, ResumeWithFewerBatchesIsAClearError) {
  std::ostringstream log;
  TrainOptions o = Synthetic(FreshDir("fewer"), "tiny", "dense");
  o.stop_after_batches = 5;  // 8 batches per epoch: stopped at batch 5 of epoch 1
  ASSERT_TRUE(Train(o, log).interrupted);
  o.stop_after_batches = -1;
  o.resume = true;
  o.synthetic_train = 128;  // 2 batches per epoch now
  try {
    Train(o, log);
    FAIL() << "resumed past the end of the epoch";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch 5 of epoch 1, but this run has 2 batches"), std::string::npos)
        << e.what();
  }
}

// The dense [out, in] matrix of a pruned linear layer of a run, with the
// contract checks of docs/run-format.md on the way (dtypes, shapes, sorted
// rows, codes in range, the density reported).
std::vector<float> PrunedDense(const std::string& dir, const nlohmann::json& l) {
  const int64_t in = l["in"], out = l["out"];
  const auto& t = l["tensors"];
  NpyArray rp = ReadNpy(dir + "/" + t["row_ptr"].get<std::string>());
  NpyArray ci = ReadNpy(dir + "/" + t["col_idx"].get<std::string>());
  EXPECT_EQ(rp.descr, "<i4");
  EXPECT_EQ(ci.descr, "<i4");
  EXPECT_EQ(rp.shape, (std::vector<int64_t>{out + 1}));
  std::vector<int32_t> row_ptr = rp.as<int32_t>(), col_idx = ci.as<int32_t>();
  const int64_t nnz = static_cast<int64_t>(col_idx.size());
  EXPECT_EQ(ci.shape, (std::vector<int64_t>{nnz}));
  EXPECT_EQ(row_ptr.front(), 0);
  EXPECT_EQ(row_ptr.back(), nnz);
  EXPECT_DOUBLE_EQ(l["compress"]["density"].get<double>(), static_cast<double>(nnz) / static_cast<double>(out * in));
  std::vector<float> values;
  if (l["compress"].contains("bits")) {
    const int bits = l["compress"]["bits"];
    EXPECT_FALSE(t.contains("values"));
    NpyArray codes = ReadNpy(dir + "/" + t["codes"].get<std::string>());
    NpyArray book = ReadNpy(dir + "/" + t["codebook"].get<std::string>());
    EXPECT_EQ(codes.descr, "|u1");
    EXPECT_EQ(codes.shape, (std::vector<int64_t>{nnz}));
    EXPECT_EQ(book.shape, (std::vector<int64_t>{int64_t{1} << bits}));
    std::vector<float> cb = book.as<float>();
    for (uint8_t c : codes.as<uint8_t>()) {
      EXPECT_LT(c, cb.size());
      values.push_back(cb[c % cb.size()]);
    }
  } else {
    EXPECT_FALSE(t.contains("codes"));
    values = ReadNpy(dir + "/" + t["values"].get<std::string>()).as<float>();
    EXPECT_EQ(static_cast<int64_t>(values.size()), nnz);
  }
  std::vector<float> w(static_cast<std::size_t>(out * in), 0.0f);
  for (int64_t r = 0; r < out; ++r)
    for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) {
      if (k > row_ptr[r]) EXPECT_LT(col_idx[k - 1], col_idx[k]) << "row " << r;
      EXPECT_TRUE(col_idx[k] >= 0 && col_idx[k] < in);
      if (col_idx[k] >= 0 && col_idx[k] < in) w[r * in + col_idx[k]] = values[k];
    }
  return w;
}

// A LibTorch-free forward pass of an MLP run description (flatten, linear
// dense/permdiag, relu) with permdnn's kernels: the run-format contract.
std::vector<int32_t> PredictFromRun(const std::string& dir, const ImageDataset& data, int64_t begin, int64_t n) {
  auto doc = nlohmann::json::parse(ReadFile(dir + "/model.json"));
  EXPECT_EQ(doc["format"], "permdnn-run/1");
  Preprocess pre;
  pre.scale = doc["input"]["scale"].get<float>();
  pre.mean = doc["input"]["mean"].get<float>();
  pre.std = doc["input"]["std"].get<float>();
  std::vector<int32_t> out;
  std::vector<float> image(static_cast<std::size_t>(data.image_size()));
  for (int64_t s = begin; s < begin + n; ++s) {
    data.Batch(s, 1, pre, image);
    std::vector<float> x = image;
    for (const auto& l : doc["layers"]) {
      std::string type = l["type"];
      if (type == "relu") {
        for (float& v : x) v = std::max(v, 0.0f);
      } else if (type == "linear") {
        const int64_t in = l["in"], outn = l["out"];
        const auto& t = l["tensors"];
        std::vector<float> bias = ReadNpy(dir + "/" + t["bias"].get<std::string>()).as<float>();
        std::vector<float> y(static_cast<std::size_t>(outn));
        if (l["compress"]["kind"] == "permdiag") {
          int p = l["compress"]["p"];
          NpyArray v = ReadNpy(dir + "/" + t["values"].get<std::string>());
          NpyArray o = ReadNpy(dir + "/" + t["offsets"].get<std::string>());
          EXPECT_EQ(v.shape, (std::vector<int64_t>{CeilDiv(outn, p), CeilDiv(in, p), p}));
          EXPECT_EQ(o.descr, "<u2");
          std::vector<float> vals = v.as<float>();
          std::vector<uint16_t> offs = o.as<uint16_t>();
          if (l["compress"].value("offsets", "block") == "column") {  // [nb], shared by every row block
            EXPECT_EQ(o.shape, (std::vector<int64_t>{CeilDiv(in, p)}));
            std::vector<uint16_t> all;
            for (int64_t I = 0; I < CeilDiv(outn, p); ++I) all.insert(all.end(), offs.begin(), offs.end());
            offs = all;
          }
          PermDiagMatrix m = PermDiagMatrix::FromParts(outn, in, p, vals, offs);
          kernels::PermDiagMatVec(m, x, bias, y);
        } else if (l["compress"]["kind"] == "circulant" || l["compress"]["kind"] == "prune") {
          std::vector<float> w;
          if (l["compress"]["kind"] == "circulant") {
            int p = l["compress"]["p"];
            NpyArray v = ReadNpy(dir + "/" + t["values"].get<std::string>());
            EXPECT_EQ(v.shape, (std::vector<int64_t>{CeilDiv(outn, p), CeilDiv(in, p), p}));
            w = BlockCirculantMatrix::FromParts(outn, in, p, v.as<float>()).ToDense();
          } else {
            w = PrunedDense(dir, l);
          }
          for (int64_t r = 0; r < outn; ++r) {
            double acc = bias[r];
            for (int64_t c = 0; c < in; ++c) acc += double{w[r * in + c]} * x[c];
            y[r] = static_cast<float>(acc);
          }
        } else {
          std::vector<float> w = ReadNpy(dir + "/" + t["weight"].get<std::string>()).as<float>();
          for (int64_t r = 0; r < outn; ++r) {
            double acc = bias[r];
            for (int64_t c = 0; c < in; ++c) acc += double{w[r * in + c]} * x[c];
            y[r] = static_cast<float>(acc);
          }
        }
        x = y;
      }
    }
    out.push_back(static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin()));
  }
  return out;
}

TEST(Trainer, RunDescriptionReproducesPredictions) {
  std::ostringstream log;
  TrainOptions o = Synthetic(FreshDir("describe"), "tiny", "fc1=permdiag:p=4,fc2=permdiag:p=3");
  o.synthetic_side = 9;  // 81 inputs: not a multiple of 4 (padding)
  Train(o, log);
  ImageDataset all = SyntheticDataset(o.synthetic_train + o.synthetic_test, 9, 9, o.synthetic_classes, 12345);
  std::vector<int32_t> ours = PredictFromRun(o.out_dir, all, o.synthetic_train, o.synthetic_test);
  std::vector<int32_t> torch_preds = ReadNpy(o.out_dir + "/test_predictions.npy").as<int32_t>();
  ASSERT_EQ(ours.size(), torch_preds.size());
  int64_t same = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) same += ours[i] == torch_preds[i];
  EXPECT_GE(same, static_cast<int64_t>(ours.size()) - 1) << "of " << ours.size();
}

// Shared offsets (offsets=column): the run stores one offset per block
// column and reproduces the LibTorch predictions; a dense cnn converts to it
// (projection per block column) and every block of a column shares its offset.
TEST(Trainer, ColumnOffsetRunsFollowTheContract) {
  std::ostringstream log;
  TrainOptions o = Synthetic(FreshDir("column"), "tiny", "fc1=permdiag:p=4,offsets=column,fc2=permdiag:p=3:offsets=column");
  o.synthetic_side = 9;  // 81 inputs: padding
  TrainResult r = Train(o, log);
  EXPECT_GT(r.final_accuracy, 0.8) << log.str();
  ImageDataset all = SyntheticDataset(o.synthetic_train + o.synthetic_test, 9, 9, o.synthetic_classes, 12345);
  std::vector<int32_t> ours = PredictFromRun(o.out_dir, all, o.synthetic_train, o.synthetic_test);
  std::vector<int32_t> torch_preds = ReadNpy(o.out_dir + "/test_predictions.npy").as<int32_t>();
  ASSERT_EQ(ours.size(), torch_preds.size());
  int64_t same = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) same += ours[i] == torch_preds[i];
  EXPECT_GE(same, static_cast<int64_t>(ours.size()) - 1) << "of " << ours.size();
  for (const auto& l : r.layers)
    if (l.name == "fc1") EXPECT_EQ(l.compress, "permdiag:p=4:offsets=column");

  TrainOptions dense = Synthetic(FreshDir("column_dense"), "tinycnn", "dense");
  dense.epochs = 2;
  Train(dense, log);
  TrainOptions conv = Synthetic(FreshDir("column_conv"), "tinycnn", "permdiag:p=2,offsets=column");
  conv.epochs = 1;
  conv.from_dir = dense.out_dir;
  TrainResult c = Train(conv, log);
  int converted = 0;
  for (const auto& l : c.layers)
    if (l.compress == "permdiag:p=2:offsets=column") {
      ++converted;
      EXPECT_GT(l.kept_energy, 0.5) << l.name;  // p=2 keeps at least the better half of each block column
    }
  EXPECT_EQ(converted, 2) << log.str();
  auto doc = nlohmann::json::parse(ReadFile(conv.out_dir + "/model.json"));
  for (const auto& l : doc["layers"])
    if (l["name"] == "conv2") {
      EXPECT_EQ(l["compress"]["offsets"], "column");
      EXPECT_EQ(ReadNpy(conv.out_dir + "/" + l["tensors"]["offsets"].get<std::string>()).shape,
                (std::vector<int64_t>{2}));  // 4 input channels at p = 2
    }
}

TEST(Trainer, ConvertsDenseCnnRun) {
  std::ostringstream log;
  TrainOptions dense = Synthetic(FreshDir("cnn_dense"), "tinycnn", "dense");
  dense.epochs = 6;  // trained well above chance, so the projection has something to keep
  const TrainResult d = Train(dense, log);
  TrainOptions conv = Synthetic(FreshDir("cnn_conv"), "tinycnn", "permdiag:p=2");
  conv.epochs = 1;
  conv.from_dir = dense.out_dir;
  TrainResult r = Train(conv, log);
  int converted = 0;
  for (const auto& l : r.layers) {
    if (l.compress == "permdiag:p=2") {
      ++converted;
      EXPECT_GT(l.kept_energy, 0.5) << l.name;  // p=2 keeps the better half
      EXPECT_LE(l.kept_energy, 1.0) << l.name;
    }
  }
  EXPECT_EQ(converted, 2) << log.str();  // conv2 and fc1; conv1 and fc2 stay dense
  // The projected model (evaluated before fine-tuning) still classifies:
  // well above chance, and not better than the dense model it came from by
  // more than the test set's noise.
  EXPECT_GT(r.converted_accuracy, 2.0 / conv.synthetic_classes) << log.str();
  EXPECT_LE(r.converted_accuracy, d.final_accuracy + 0.05) << log.str();
  auto doc = nlohmann::json::parse(ReadFile(conv.out_dir + "/model.json"));
  for (const auto& l : doc["layers"])
    if (l["name"] == "conv2") {
      NpyArray v = ReadNpy(conv.out_dir + "/" + l["tensors"]["values"].get<std::string>());
      EXPECT_EQ(v.shape, (std::vector<int64_t>{4, 2, 2, 3, 3}));
    }
}

// Sum of the data bytes of a layer's tensors in a run (every stored byte).
int64_t TensorBytes(const std::string& dir, const nlohmann::json& layer) {
  int64_t bytes = 0;
  for (const auto& [key, file] : layer["tensors"].items()) bytes += ReadNpy(dir + "/" + file.get<std::string>()).bytes.size();
  return bytes;
}

// circulant + pruned (with and without 4-bit sharing) MLP runs: they learn,
// their model.json + npy files follow the contract and reproduce the LibTorch
// predictions, the densities are exact, and the summary's bytes are exactly
// the bytes of the stored arrays.
TEST(Trainer, CirculantAndPrunedRunsFollowTheContract) {
  struct Case {
    const char* name;
    const char* compress;
  };
  for (Case c : {Case{"circ_prune4", "fc1=circulant:p=4,fc2=prune:density=0.25,bits=4"},
                 Case{"prune_circ", "fc1=prune:density=0.2,fc2=circulant:p=3"}}) {
    SCOPED_TRACE(c.compress);
    std::ostringstream log;
    TrainOptions o = Synthetic(FreshDir(c.name), "tiny", c.compress);
    o.synthetic_side = 9;  // 81 inputs: not a multiple of p (padding)
    TrainResult r = Train(o, log);
    EXPECT_GT(r.final_accuracy, 0.8) << log.str();
    ImageDataset all = SyntheticDataset(o.synthetic_train + o.synthetic_test, 9, 9, o.synthetic_classes, 12345);
    std::vector<int32_t> ours = PredictFromRun(o.out_dir, all, o.synthetic_train, o.synthetic_test);
    std::vector<int32_t> torch_preds = ReadNpy(o.out_dir + "/test_predictions.npy").as<int32_t>();
    ASSERT_EQ(ours.size(), torch_preds.size());
    int64_t same = 0;
    for (std::size_t i = 0; i < ours.size(); ++i) same += ours[i] == torch_preds[i];
    EXPECT_GE(same, static_cast<int64_t>(ours.size()) - 1) << "of " << ours.size();

    auto doc = nlohmann::json::parse(ReadFile(o.out_dir + "/model.json"));
    auto summary = nlohmann::json::parse(ReadFile(o.out_dir + "/summary.json"));
    int64_t total = 0;
    for (const auto& l : doc["layers"]) {
      if (l["type"] != "linear") continue;
      const int64_t bytes = TensorBytes(o.out_dir, l);
      total += bytes;
      for (const auto& s : summary["layers"])
        if (s["name"] == l["name"]) EXPECT_EQ(s["bytes"].get<int64_t>(), bytes) << l["name"];
      if (l["compress"]["kind"] == "prune") {
        const double want = l["name"] == "fc1" ? 0.2 : 0.25;
        const int64_t size = l["in"].get<int64_t>() * l["out"].get<int64_t>();
        EXPECT_EQ(l["compress"]["density"].get<double>(),
                  static_cast<double>(std::llround(want * size)) / static_cast<double>(size));
      }
    }
    EXPECT_EQ(summary["model_bytes"].get<int64_t>(), total);
  }
}

// index=R: the run directory keeps csr-codebook arrays, the export writes
// csr-relative, and the summary counts what the file stores (the packed
// row lengths, gaps and codes of the mask's pattern), smaller than the
// int32 indices of the same run without index.
TEST(Trainer, RelativeIndexBytesAreTheExportedFile) {
  std::ostringstream log;
  int64_t bytes[2] = {0, 0};
  for (int index : {0, 3}) {
    const std::string spec = std::string("fc1=prune:density=0.2,bits=3") + (index ? ",index=3" : "");
    TrainOptions o = Synthetic(FreshDir(fmt::format("prune_rel{}", index)), "tiny", spec);
    Train(o, log);
    auto summary = nlohmann::json::parse(ReadFile(o.out_dir + "/summary.json"));
    const runtime::ExportReport rep = runtime::ExportRun(o.out_dir, o.out_dir + "/m.onnx");
    int64_t exported = -1;
    for (const auto& l : rep.layers)
      if (l.name == "fc1") {
        exported = l.stored_bytes;
        EXPECT_EQ(l.op, index ? "RelativeSparseMatMul" : "SparseMatMul");
      }
    for (const auto& l : summary["layers"])
      if (l["name"] == "fc1") bytes[index ? 1 : 0] = l["bytes"].get<int64_t>();
    EXPECT_EQ(bytes[index ? 1 : 0], exported) << spec;
    // The file loads in the runtime with its compressed node.
    runtime::Model m = runtime::Model::Load(o.out_dir + "/m.onnx");
    EXPECT_GT(m.Summary().compressed_nodes, 0);
  }
  EXPECT_LT(bytes[1], bytes[0] / 2);
}

TEST(Trainer, PrunedRunResumesIdentically) {
  std::ostringstream log;
  const char* spec = "prune:density=0.2,bits=3";
  TrainOptions full = Synthetic(FreshDir("prune_full"), "tiny", spec);
  Train(full, log);
  // 24 steps: pruning until 12, sharing at 18. Stop inside the pruning phase
  // and after the sharing step.
  TrainOptions part = Synthetic(FreshDir("prune_part"), "tiny", spec);
  part.stop_after_batches = 10;
  ASSERT_TRUE(Train(part, log).interrupted);
  part.resume = true;
  ASSERT_TRUE(Train(part, log).interrupted);
  part.stop_after_batches = -1;
  ASSERT_FALSE(Train(part, log).interrupted);
  auto a = nlohmann::json::parse(ReadFile(full.out_dir + "/metrics.json"));
  auto b = nlohmann::json::parse(ReadFile(part.out_dir + "/metrics.json"));
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["train_loss"].get<double>(), b[i]["train_loss"].get<double>()) << "epoch " << i + 1;
    EXPECT_EQ(a[i]["test_loss"].get<double>(), b[i]["test_loss"].get<double>()) << "epoch " << i + 1;
  }
  for (const char* f : {"test_predictions.npy", "tensors/fc1.codes.npy", "tensors/fc1.codebook.npy",
                        "tensors/fc2.col_idx.npy", "model.json"})
    EXPECT_EQ(ReadFile(full.out_dir + "/" + f), ReadFile(part.out_dir + "/" + f)) << f;
}

TEST(Trainer, ConvertsDenseRunToCirculantAndPruned) {
  std::ostringstream log;
  TrainOptions dense = Synthetic(FreshDir("cnn_dense2"), "tinycnn", "dense");
  dense.epochs = 1;
  TrainResult d = Train(dense, log);
  TrainOptions circ = Synthetic(FreshDir("cnn_circ"), "tinycnn", "circulant:p=2");
  circ.epochs = 1;
  circ.from_dir = dense.out_dir;
  TrainResult r = Train(circ, log);
  int converted = 0;
  for (const auto& l : r.layers)
    if (l.compress == "circulant:p=2") {
      ++converted;
      EXPECT_GT(l.kept_energy, 0.0) << l.name;
      EXPECT_LT(l.kept_energy, 1.0) << l.name;
    }
  EXPECT_EQ(converted, 2) << log.str();  // conv2 and fc1
  auto doc = nlohmann::json::parse(ReadFile(circ.out_dir + "/model.json"));
  for (const auto& l : doc["layers"])
    if (l["name"] == "conv2") {
      EXPECT_EQ(l["compress"]["kind"], "circulant");
      NpyArray v = ReadNpy(circ.out_dir + "/" + l["tensors"]["values"].get<std::string>());
      EXPECT_EQ(v.shape, (std::vector<int64_t>{4, 2, 2, 3, 3}));
    }
  // Pruning starts from the full mask: right after conversion it is the dense model.
  TrainOptions prune = Synthetic(FreshDir("cnn_prune"), "tinycnn", "prune:density=0.3");
  prune.epochs = 2;
  prune.from_dir = dense.out_dir;
  TrainResult p = Train(prune, log);
  EXPECT_EQ(p.converted_accuracy, d.final_accuracy);
  auto pdoc = nlohmann::json::parse(ReadFile(prune.out_dir + "/model.json"));
  for (const auto& l : pdoc["layers"])
    if (l["name"] == "conv2") {
      EXPECT_EQ(l["compress"]["kind"], "prune");
      EXPECT_NEAR(l["compress"]["density"].get<double>(), 0.3, 0.01);
      NpyArray rp = ReadNpy(prune.out_dir + "/" + l["tensors"]["row_ptr"].get<std::string>());
      EXPECT_EQ(rp.shape, (std::vector<int64_t>{9}));  // 8 out channels + 1
    }
}

}  // namespace
}  // namespace permdnn::train
