// The trainer tests' run setup: a fresh temporary run directory and the
// options of a small run on the synthetic data set (512 training images of
// 8×8, 4 classes, batch 64: 8 batches per epoch; seeded; one thread).
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "permdnn/train/trainer.h"

namespace permdnn::train {

inline std::string FreshDir(const std::string& name) {
  std::string dir = (std::filesystem::temp_directory_path() / ("permdnn_train_test_" + name)).string();
  std::filesystem::remove_all(dir);
  return dir;
}

inline TrainOptions Synthetic(const std::string& dir, const std::string& model, const std::string& compress) {
  TrainOptions o;
  o.model = model;
  o.compress = compress;
  o.out_dir = dir;
  o.epochs = 3;
  o.batch = 64;
  o.lr = 3e-3;
  o.seed = 4;
  o.threads = 1;
  o.progress = false;
  o.synthetic_train = 512;
  o.synthetic_test = 256;
  return o;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `part` until `stop_after_batches`, then resumes it to the end: the
// interrupted-and-resumed run's per-epoch train losses must equal `full`'s.
inline void ExpectResumeIsIdentical(const TrainOptions& full, TrainOptions part, int64_t stop_after_batches) {
  std::ostringstream log;
  part.stop_after_batches = stop_after_batches;
  ASSERT_TRUE(Train(part, log).interrupted);
  part.stop_after_batches = -1;
  part.resume = true;
  ASSERT_FALSE(Train(part, log).interrupted);
  auto a = nlohmann::json::parse(ReadFile(full.out_dir + "/metrics.json"));
  auto b = nlohmann::json::parse(ReadFile(part.out_dir + "/metrics.json"));
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i]["train_loss"].get<double>(), b[i]["train_loss"].get<double>()) << "epoch " << i + 1;
}

}  // namespace permdnn::train
