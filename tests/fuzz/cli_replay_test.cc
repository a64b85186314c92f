// Every committed crash input (fuzz/regressions/<target>/) and the two files
// of issue 20 through the command that reads such a file: `permdnn run`,
// `eval`, `export`, `compress`, `sim --model`, `sim --config`, `sim --tech`,
// `train --from`, `train --resume`. Each must end with exit 0,
// or exit 1 and a message that names a file of the input; never a signal,
// never exit 2 (an internal error), and a failed command leaves no output
// file behind. (permdnn_fuzz_replay runs the same inputs through the
// libraries; this is the process-level half.)
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "fuzz/targets.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/npy.h"

namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string out;
};

Result Permdnn(const std::string& args, const fs::path& log) {
  const int st = std::system((std::string(PERMDNN_BIN) + " " + args + " > '" + log.string() + "' 2>&1").c_str());
  Result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  return r;
}

std::string ReadBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// x [N, width] -> Softmax -> y, written as an ONNX file.
void WriteSoftmaxModel(const fs::path& path, int64_t width) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("softmax");
  g->add_input()->set_name("x");
  auto* tt = g->mutable_input(0)->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  tt->mutable_shape()->add_dim()->set_dim_value(width);
  onnx::NodeProto* n = g->add_node();
  n->set_op_type("Softmax");
  n->add_input("x");
  n->add_output("y");
  g->add_output()->set_name("y");
  std::ofstream(path, std::ios::binary) << m.SerializeAsString();
}

class FuzzCliReplay : public ::testing::Test {
 protected:
  void SetUp() override {
    work_ = fs::temp_directory_path() / ("permdnn_cli_replay_" + std::to_string(::getpid()));
    fs::remove_all(work_);
    fs::create_directories(work_);
  }
  void TearDown() override { fs::remove_all(work_); }

  // Runs one command; `dir` holds the input's files, `output` is the file
  // the command writes on success ("" for none).
  void Check(const std::string& args, const fs::path& dir, const fs::path& output) {
    SCOPED_TRACE(args);
    if (!output.empty()) fs::remove(output);
    const Result r = Permdnn(args, work_ / "log.txt");
    ASSERT_TRUE(r.code == 0 || r.code == 1) << "exit " << r.code << " (" << (r.code > 128 ? "signal" : "status")
                                            << ")\n" << r.out;
    if (r.code == 1) {
      EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
      EXPECT_EQ(r.out.find("internal error"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find(dir.string()), std::string::npos) << "the message names no file of the input:\n" << r.out;
      if (!output.empty()) EXPECT_FALSE(fs::exists(output)) << "a failed command left " << output;
    } else if (!output.empty()) {
      EXPECT_TRUE(fs::exists(output)) << r.out;
    }
  }

  // The commands that read a file of `target`.
  void Replay(const std::string& target, const fs::path& file) {
    SCOPED_TRACE(file.string());
    const fs::path dir = work_ / "in";
    fs::remove_all(dir);
    fs::create_directories(dir);
    const std::string bytes = ReadBytes(file);
    const std::string in = permdnn::fuzz::WriteInputFiles(
        target, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), dir.string());
    const std::string q = "'" + in + "'";
    const bool have_data = fs::exists(permdnn::kDefaultFashionMnistDir);
    if (target == "onnx" || target == "onnx_struct") {
      permdnn::WriteNpy<float>((dir / "x.npy").string(), std::vector<float>(8, 0.5f), {2, 4});
      Check("run " + q + " --input '" + (dir / "x.npy").string() + "' --output '" + (dir / "out.npy").string() + "'",
            dir, dir / "out.npy");
      Check("run " + q + " --bench --batch 1,2 --min-time 0.001", dir, "");
      if (have_data) Check("eval " + q + " --limit 8", dir, "");
    } else if (target == "onnx_tools") {
      Check("compress " + q + " --compress permdiag:p=2 --out '" + (dir / "out.onnx").string() + "'", dir,
            dir / "out.onnx");
      if (have_data) Check("sim --model " + q + " --samples 1", dir, "");
    } else if (target == "npy") {
      WriteSoftmaxModel(dir / "model.onnx", 4);
      Check("run '" + (dir / "model.onnx").string() + "' --input " + q + " --output '" + (dir / "out.npy").string() +
                "'",
            dir, dir / "out.npy");
    } else if (target == "idx") {
      WriteSoftmaxModel(dir / "model.onnx", 784);
      Check("eval '" + (dir / "model.onnx").string() + "' --data " + q + " --limit 16", dir, "");
    } else if (target == "run_dir") {
      Check("export " + q + " --out '" + (dir / "out.onnx").string() + "'", dir, dir / "out.onnx");
    } else if (target == "sim_config") {
      Check("sim --config " + q + " --layers 24x40 --json '" + (dir / "out.json").string() + "'", dir,
            dir / "out.json");
    } else if (target == "sim_tech") {
      Check("sim --tech " + q + " --layers 24x40 --json '" + (dir / "out.json").string() + "'", dir, dir / "out.json");
    } else if (target == "train_from") {
#ifndef PERMDNN_HAVE_TRAINING
      return;  // permdnn built without LibTorch has no `train`
#endif
      Check("train --model tiny --compress dense --epochs 1 --limit-train 64 --from " + q + " --out '" +
                (dir / "out").string() + "'",
            dir, "");
      // --resume reads the same directory's checkpoint_last.pt and metrics.json.
      if (fs::exists(fs::path(in) / "checkpoint_last.pt"))
        Check("train --model tiny --compress dense --epochs 1 --limit-train 64 --resume --out " + q, dir, "");
    } else if (target == "text") {
#ifndef PERMDNN_HAVE_TRAINING
      return;
#endif
      Check("train --model charlm --data " + q + " --epochs 1 --hidden 8 --seq-len 4 --batch 2 --limit-train 2 "
            "--limit-test 1 --threads 1 --out '" + (dir / "out").string() + "'",
            dir, "");
    } else {
      ADD_FAILURE() << "no command for target " << target;
    }
  }

  fs::path work_;
};

TEST_F(FuzzCliReplay, EveryCommittedCrashInput) {
  const fs::path root = fs::path(PERMDNN_SOURCE_DIR) / "fuzz/regressions";
  std::vector<std::pair<std::string, fs::path>> cases;
  for (const auto& t : fs::directory_iterator(root))
    if (t.is_directory())
      for (const auto& f : fs::directory_iterator(t.path()))
        if (f.is_regular_file()) cases.emplace_back(t.path().filename().string(), f.path());
  std::sort(cases.begin(), cases.end());
  ASSERT_FALSE(cases.empty()) << "nothing under " << root;
  for (const auto& [target, file] : cases) {
    ASSERT_NE(permdnn::fuzz::FindTarget(target), nullptr) << root / target << " names no fuzz target";
    Replay(target, file);
  }
}

// The issue's two reproductions, as it gives them: a graph whose output
// names its input runs and returns the input (as ONNX Runtime does).
TEST_F(FuzzCliReplay, IssueTwentyCommandsReturnTheInput) {
  struct Case {
    const char* file;
    std::vector<int64_t> shape;
  };
  for (const Case& c : {Case{"softmax-null-read.onnx", {67, 4, 5}}, Case{"copy-null-read.onnx", {4, 5}}}) {
    SCOPED_TRACE(c.file);
    const fs::path model = fs::path(PERMDNN_SOURCE_DIR) / "fuzz/regressions/onnx" / c.file;
    ASSERT_TRUE(fs::exists(model));
    int64_t n = 1;
    for (int64_t d : c.shape) n *= d;
    std::vector<float> x(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i % 11) * 0.5f;
    const fs::path xin = work_ / "x.npy", yout = work_ / "y.npy";
    permdnn::WriteNpy<float>(xin.string(), x, c.shape);
    const Result r = Permdnn("run '" + model.string() + "' --input '" + xin.string() + "' --output '" +
                                 yout.string() + "'",
                             work_ / "log.txt");
    ASSERT_EQ(r.code, 0) << r.out;
    permdnn::NpyArray y = permdnn::ReadNpy(yout.string());
    EXPECT_EQ(y.shape, c.shape);
    EXPECT_EQ(y.as<float>(), x);
  }
}

}  // namespace
