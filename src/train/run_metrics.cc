// metrics.json / metrics.csv of a run directory (see run_metrics.h).
#include "src/train/run_metrics.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"

namespace permdnn::train {

namespace {

using nlohmann::json;

constexpr int64_t kMaxEpoch = 1000000000;

json ToJson(const EpochMetrics& m) {
  return {{"epoch", m.epoch},
          {"lr", m.lr},
          {"train_loss", m.train_loss},
          {"train_accuracy", m.train_accuracy},
          {"test_loss", m.test_loss},
          {"test_accuracy", m.test_accuracy},
          {"seconds", m.seconds},
          {"best", m.best}};
}

// Entry `i` of `path`, checked field by field.
EpochMetrics FromJson(const json& j, const std::string& path, std::size_t i) {
  PERMDNN_CHECK(j.is_object(), "--resume: {}: entry {} must be an object, got {}", path, i, j.dump());
  auto field = [&](const char* key) -> const json& {
    const auto it = j.find(key);
    PERMDNN_CHECK(it != j.end(), "--resume: {}: entry {} has no \"{}\"", path, i, key);
    return *it;
  };
  auto number = [&](const char* key) {
    const json& v = field(key);
    PERMDNN_CHECK(v.is_number() && std::isfinite(v.get<double>()),
                  "--resume: {}: entry {}: \"{}\" must be a finite number, got {}", path, i, key, v.dump());
    return v.get<double>();
  };
  EpochMetrics m;
  const json& epoch = field("epoch");
  PERMDNN_CHECK(epoch.is_number_integer() && epoch.get<int64_t>() >= 1 && epoch.get<int64_t>() <= kMaxEpoch &&
                    !(epoch.is_number_unsigned() && epoch.get<uint64_t>() > static_cast<uint64_t>(kMaxEpoch)),
                "--resume: {}: entry {}: \"epoch\" must be an integer in [1, {}], got {}", path, i, kMaxEpoch,
                epoch.dump());
  m.epoch = static_cast<int>(epoch.get<int64_t>());
  m.lr = number("lr");
  m.train_loss = number("train_loss");
  m.train_accuracy = number("train_accuracy");
  m.test_loss = number("test_loss");
  m.test_accuracy = number("test_accuracy");
  m.seconds = number("seconds");
  const json& best = field("best");
  PERMDNN_CHECK(best.is_boolean(), "--resume: {}: entry {}: \"best\" must be true or false, got {}", path, i,
                best.dump());
  m.best = best.get<bool>();
  return m;
}

}  // namespace

void WriteMetrics(const std::string& dir, const std::vector<EpochMetrics>& history) {
  json j = json::array();
  std::string csv = "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,seconds,best\n";
  for (const auto& m : history) {
    j.push_back(ToJson(m));
    csv += fmt::format("{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.3f},{}\n", m.epoch, m.lr, m.train_loss,
                       m.train_accuracy, m.test_loss, m.test_accuracy, m.seconds, m.best ? 1 : 0);
  }
  WriteFileAtomic(dir + "/metrics.json", j.dump(2) + "\n");
  WriteFileAtomic(dir + "/metrics.csv", csv);
}

std::vector<EpochMetrics> ReadMetrics(const std::string& dir, int64_t epochs_done) {
  const std::string path = dir + "/metrics.json";
  std::vector<EpochMetrics> out;
  if (!std::filesystem::exists(path)) return out;
  std::ifstream in(path, std::ios::binary);
  PERMDNN_CHECK(in.good(), "--resume: {} cannot be opened", path);
  std::stringstream text;
  text << in.rdbuf();
  json doc;
  try {
    doc = json::parse(text.str());
  } catch (const json::exception& e) {
    Fail("--resume: {} is not valid JSON: {}", path, e.what());
  }
  PERMDNN_CHECK(doc.is_array(), "--resume: {}: the top level must be an array of epochs, got {}", path,
                doc.type_name());
  for (std::size_t i = 0; i < doc.size(); ++i) {
    EpochMetrics m = FromJson(doc[i], path, i);
    if (m.epoch <= epochs_done) out.push_back(m);
  }
  return out;
}

}  // namespace permdnn::train
