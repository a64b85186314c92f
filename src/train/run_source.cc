// Reading a run directory for --from (see run_source.h).
#include "src/train/run_source.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/ranges.h>

#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"

namespace permdnn::train {

using nlohmann::json;

RunSource RunSource::Open(const std::string& run_dir, const std::string& model) {
  RunSource s;
  s.dir_ = run_dir;
  s.path_ = run_dir + "/model.json";
  const std::string& path = s.path_;
  PERMDNN_CHECK(std::filesystem::is_regular_file(path),
                "--from: '{}' not found (a run directory of `permdnn train` holds model.json)", path);
  json doc;
  try {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    doc = json::parse(text.str());
  } catch (const json::exception& e) {
    Fail("--from: {} is not valid JSON: {}", path, e.what());
  }
  PERMDNN_CHECK(doc.is_object(), "--from: {}: the top level must be an object", path);
  const json format = doc.value("format", json());
  PERMDNN_CHECK(format.is_string() && format.get<std::string>() == "permdnn-run/1",
                "--from: {}: format is {}, expected \"permdnn-run/1\"", path, format.dump());
  const json m = doc.value("model", json());
  PERMDNN_CHECK(m.is_string(), "--from: {}: \"model\" must be a string, got {}", path, m.dump());
  PERMDNN_CHECK(m.get<std::string>() == model, "--from: {} holds model '{}', this run trains '{}'", path,
                m.get<std::string>(), model);
  PERMDNN_CHECK(doc.contains("layers") && doc["layers"].is_array(), "--from: {}: no \"layers\" array", path);
  for (const json& j : doc["layers"]) {
    PERMDNN_CHECK(j.is_object() && j.contains("name") && j["name"].is_string(),
                  "--from: {}: a layer is not an object with a string \"name\": {}", path, j.dump());
    const std::string name = j["name"].get<std::string>();
    PERMDNN_CHECK(!s.layers_.count(name), "--from: {}: layer '{}' appears twice", path, name);
    s.layers_[name] = j;
  }
  return s;
}

const json& RunSource::Layer(const std::string& layer) const {
  auto it = layers_.find(layer);
  PERMDNN_CHECK(it != layers_.end(), "--from: {} has no layer '{}'", path_, layer);
  return it->second;
}

std::string RunSource::Kind(const std::string& layer) const {
  const json& l = Layer(layer);
  if (!l.contains("compress")) return "";
  const json& c = l["compress"];
  PERMDNN_CHECK(c.is_object(), "--from: {}: layer '{}': \"compress\" must be an object, got {}", path_, layer,
                c.dump());
  const json kind = c.value("kind", json(""));
  PERMDNN_CHECK(kind.is_string(), "--from: {}: layer '{}': compress.kind must be a string, got {}", path_, layer,
                kind.dump());
  return kind.get<std::string>();
}

std::vector<float> RunSource::Tensor(const std::string& layer, const std::string& key,
                                     const std::vector<int64_t>& shape) const {
  const json& l = Layer(layer);
  PERMDNN_CHECK(l.contains("tensors") && l["tensors"].is_object() && l["tensors"].contains(key),
                "--from: {}: layer '{}' has no tensor '{}'", path_, layer, key);
  const json& rel = l["tensors"][key];
  PERMDNN_CHECK(rel.is_string(), "--from: {}: layer '{}': tensors.{} must be a file name, got {}", path_, layer, key,
                rel.dump());
  const std::string path = dir_ + "/" + rel.get<std::string>();
  NpyArray a = ReadNpy(path);
  PERMDNN_CHECK(a.shape == shape, "{}: layer '{}' tensor '{}' has shape [{}], expected [{}]", path, layer, key,
                fmt::join(a.shape, ", "), fmt::join(shape, ", "));
  return a.ToFloat(path);
}

}  // namespace permdnn::train
