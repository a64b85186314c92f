// train::RunSource, the reader behind `permdnn train --from`: a good run
// directory reads back, and every malformed model.json or tensor is an
// Error naming the file and what was wrong (before it, a layer without
// "tensors" or "compress" was an out-of-range nlohmann::json lookup).
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "src/train/run_source.h"

namespace permdnn::train {
namespace {

namespace fs = std::filesystem;

class RunSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("permdnn_run_source_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "tensors");
    WriteNpy<float>((dir_ / "tensors/fc1.weight.npy").string(), std::vector<float>(6, 0.5f), {2, 3});
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Json(const std::string& text) { std::ofstream(dir_ / "model.json") << text; }
  // The message of the Error `fn` throws ("" when it throws none).
  template <typename Fn>
  std::string ErrorOf(Fn fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

constexpr const char* kGood =
    R"({"format": "permdnn-run/1", "model": "tiny", "layers": [
         {"name": "fc1", "type": "linear", "compress": {"kind": "dense"},
          "tensors": {"weight": "tensors/fc1.weight.npy"}}]})";

TEST_F(RunSourceTest, ReadsAGoodRun) {
  Json(kGood);
  RunSource s = RunSource::Open(dir_.string(), "tiny");
  EXPECT_TRUE(s.Has("fc1"));
  EXPECT_FALSE(s.Has("fc2"));
  EXPECT_EQ(s.Kind("fc1"), "dense");
  EXPECT_EQ(s.Tensor("fc1", "weight", {2, 3}), std::vector<float>(6, 0.5f));
}

TEST_F(RunSourceTest, MalformedFilesNameTheFileAndTheProblem) {
  const std::string mj = (dir_ / "model.json").string();
  struct Case {
    const char* json;
    const char* needle;
  };
  for (const Case& c : {
           Case{"[1, 2]", "top level must be an object"},
           Case{"7", "top level must be an object"},
           Case{R"({"format": 3, "model": "tiny", "layers": []})", "format is 3"},
           Case{R"({"format": "permdnn-run/1", "model": ["tiny"], "layers": []})", "\"model\" must be a string"},
           Case{R"({"format": "permdnn-run/1", "model": "mlp", "layers": []})", "holds model 'mlp'"},
           Case{R"({"format": "permdnn-run/1", "model": "tiny", "layers": 5})", "no \"layers\" array"},
           Case{R"({"format": "permdnn-run/1", "model": "tiny", "layers": [3]})", "not an object with a string"},
           Case{R"({"format": "permdnn-run/1", "model": "tiny", "layers": [{"name": 1}]})", "not an object"},
           Case{R"({"format": "permdnn-run/1", "model": "tiny", "layers": [{"name": "a"}, {"name": "a"}]})",
                "appears twice"},
           Case{"{", "not valid JSON"},
       }) {
    SCOPED_TRACE(c.json);
    Json(c.json);
    const std::string e = ErrorOf([&] { RunSource::Open(dir_.string(), "tiny"); });
    EXPECT_NE(e.find(mj), std::string::npos) << e;
    EXPECT_NE(e.find(c.needle), std::string::npos) << e;
  }
}

TEST_F(RunSourceTest, MalformedLayersAndTensors) {
  const std::string mj = (dir_ / "model.json").string();
  Json(R"({"format": "permdnn-run/1", "model": "tiny", "layers": [
            {"name": "fc1"}, {"name": "fc2", "compress": 4, "tensors": {"weight": 9}},
            {"name": "fc3", "compress": {"kind": 1}, "tensors": []},
            {"name": "fc4", "tensors": {"weight": "tensors/fc1.weight.npy", "bias": "tensors"}}]})");
  RunSource s = RunSource::Open(dir_.string(), "tiny");
  EXPECT_EQ(s.Kind("fc1"), "");  // absent: the caller says which kind it needs
  EXPECT_NE(ErrorOf([&] { s.Tensor("fc1", "weight", {2, 3}); }).find("layer 'fc1' has no tensor 'weight'"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { s.Kind("fc2"); }).find("\"compress\" must be an object"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { s.Tensor("fc2", "weight", {2, 3}); }).find("tensors.weight must be a file name"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { s.Kind("fc3"); }).find("compress.kind must be a string"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { s.Tensor("fc3", "weight", {2, 3}); }).find("has no tensor"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { s.Tensor("fc4", "weight", {3, 2}); }).find("expected [3, 2]"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { s.Tensor("fc4", "bias", {2}); }).find("not a regular file"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { s.Kind("fc9"); }).find(mj + " has no layer 'fc9'"), std::string::npos);
}

}  // namespace
}  // namespace permdnn::train
