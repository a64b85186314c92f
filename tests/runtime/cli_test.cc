// The runtime's commands end to end: bad input gives a clear message and a
// non-zero exit (never a crash), good input round-trips through .npy.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "permdnn/core/npy.h"
#include "permdnn/runtime/onnx_io.h"
#include "support/installed.h"

namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string out;
};

// Runs permdnn with args (after `env`, e.g. "env -u NAME "); stdout+stderr
// captured. code is the exit status, or 128+signal when it crashed.
Result Permdnn(const std::string& args, const std::string& env = "") {
  const fs::path log = fs::temp_directory_path() / ("permdnn_cli_test_" + std::to_string(::getpid()) + ".log");
  const int st =
      std::system((env + std::string(PERMDNN_BIN) + " " + args + " > " + log.string() + " 2>&1").c_str());
  Result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  return r;
}

void Write(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

class RuntimeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("permdnn_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    model_ = fs::path(PERMDNN_TESTDATA) / "node/test_relu/model.onnx";  // x [3, 4, 5] -> Relu
  }
  void TearDown() override { fs::remove_all(dir_); }
  void ExpectError(const std::string& args, const std::string& needle) {
    Result r = Permdnn(args);
    EXPECT_TRUE(r.code == 1 || r.code == 2) << args << " -> exit " << r.code << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << ": message lacks '" << needle << "':\n" << r.out;
  }
  // A small CNN (1x8x8 -> two 3x3 convolutions of 16 channels -> 2 fully
  // connected layers -> 4 classes) exported from a run folder to `onnx`.
  void ExportSmallCnn(const std::string& onnx) {
    const fs::path run = dir_ / "run";
    fs::create_directories(run / "tensors");
    auto tensor = [&](const std::string& name, std::vector<int64_t> shape, float freq) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::vector<float> v(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.3f * std::sin(freq * static_cast<float>(i) + 0.2f);
      permdnn::WriteNpy<float>((run / "tensors" / (name + ".npy")).string(), v, shape);
    };
    tensor("conv1.weight", {16, 1, 3, 3}, 0.71f);
    tensor("conv1.bias", {16}, 0.13f);
    tensor("conv2.weight", {16, 16, 3, 3}, 0.37f);
    tensor("conv2.bias", {16}, 0.29f);
    tensor("fc1.weight", {32, 256}, 0.53f);
    tensor("fc1.bias", {32}, 0.41f);
    tensor("fc2.weight", {4, 32}, 0.61f);
    tensor("fc2.bias", {4}, 0.17f);
    Write(run / "model.json", R"({"format": "permdnn-run/1", "model": "cnn", "num_classes": 4,
    "input": {"shape": [1, 8, 8], "layout": "NCHW"},
    "layers": [
      {"name": "conv1", "type": "conv2d", "in": 1, "out": 16, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
       "compress": {"kind": "dense"}, "tensors": {"weight": "tensors/conv1.weight.npy", "bias": "tensors/conv1.bias.npy"}},
      {"name": "relu1", "type": "relu"},
      {"name": "conv2", "type": "conv2d", "in": 16, "out": 16, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
       "compress": {"kind": "dense"}, "tensors": {"weight": "tensors/conv2.weight.npy", "bias": "tensors/conv2.bias.npy"}},
      {"name": "relu2", "type": "relu"},
      {"name": "pool", "type": "maxpool2d", "kernel": [2, 2], "stride": [2, 2]},
      {"name": "flatten", "type": "flatten"},
      {"name": "fc1", "type": "linear", "in": 256, "out": 32, "compress": {"kind": "dense"},
       "tensors": {"weight": "tensors/fc1.weight.npy", "bias": "tensors/fc1.bias.npy"}},
      {"name": "relu3", "type": "relu"},
      {"name": "fc2", "type": "linear", "in": 32, "out": 4, "compress": {"kind": "dense"},
       "tensors": {"weight": "tensors/fc2.weight.npy", "bias": "tensors/fc2.bias.npy"}}]})");
    const Result r = Permdnn("export " + run.string() + " --out " + onnx);
    ASSERT_EQ(r.code, 0) << r.out;
  }
  fs::path dir_, model_;
};

TEST_F(RuntimeCli, RunRoundTripsNpy) {
  ASSERT_TRUE(permdnn::testing::Installed(model_, permdnn::testing::kOnnxTestdataPackage));
  std::vector<float> x(60);
  for (int i = 0; i < 60; ++i) x[i] = static_cast<float>(i - 30);
  permdnn::WriteNpy<float>((dir_ / "x.npy").string(), x, {3, 4, 5});
  Result r = Permdnn("run " + model_.string() + " --input " + (dir_ / "x.npy").string() + " --output " +
                     (dir_ / "y.npy").string());
  ASSERT_EQ(r.code, 0) << r.out;
  std::vector<float> y = permdnn::ReadNpy((dir_ / "y.npy").string()).as<float>();
  ASSERT_EQ(y.size(), 60u);
  for (int i = 0; i < 60; ++i) EXPECT_EQ(y[i], std::max(0.0f, x[i]));
  // Raw float32 in (the batch is implied by the size), raw out.
  Write(dir_ / "x.raw", std::string(reinterpret_cast<const char*>(x.data()), 60 * 4));
  r = Permdnn("run " + model_.string() + " --input " + (dir_ / "x.raw").string() + " --output " +
              (dir_ / "y.raw").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(fs::file_size(dir_ / "y.raw"), 240u);
}

TEST_F(RuntimeCli, BadInputsFailCleanly) {
  ASSERT_TRUE(permdnn::testing::Installed(model_, permdnn::testing::kOnnxTestdataPackage));
  const std::string bytes = permdnn::runtime::ReadFileBytes(model_.string());
  Write(dir_ / "trunc.onnx", bytes.substr(0, bytes.size() / 2));
  Write(dir_ / "garbage.onnx", std::string("\x08\x07\x12\x05hello\xff\xff\xff\x01garbage"));
  Write(dir_ / "x.npy.onnx", std::string("\x93NUMPY\x01\x00", 8));
  const std::string run = "run ";
  ExpectError(run + (dir_ / "trunc.onnx").string() + " --input x", "error");
  ExpectError(run + (dir_ / "garbage.onnx").string() + " --input x", "not an ONNX model");
  ExpectError(run + (dir_ / "x.npy.onnx").string() + " --input x", "NumPy");
  ExpectError(run + (dir_ / "missing.onnx").string() + " --input x", "cannot open");
  // Wrong-size raw input (7 floats; a sample is 60).
  Write(dir_ / "x7.raw", std::string(28, '\0'));
  ExpectError(run + model_.string() + " --input " + (dir_ / "x7.raw").string(), "wrong input size");
  Write(dir_ / "x3.raw", std::string(3, '\0'));
  ExpectError(run + model_.string() + " --input " + (dir_ / "x3.raw").string(), "not a multiple of 4");
  // NaN in the input.
  std::vector<float> x(60, 1.0f);
  x[5] = std::nanf("");
  permdnn::WriteNpy<float>((dir_ / "nan.npy").string(), x, {3, 4, 5});
  ExpectError(run + model_.string() + " --input " + (dir_ / "nan.npy").string(), "NaN");
  // Shape mismatch of an .npy input.
  permdnn::WriteNpy<float>((dir_ / "bad.npy").string(), std::vector<float>(60, 1.0f), {3, 5, 4});
  ExpectError(run + model_.string() + " --input " + (dir_ / "bad.npy").string(), "should have shape");
  // Nothing half-written on failure.
  EXPECT_FALSE(fs::exists(dir_ / "out.npy"));
  ExpectError("export " + dir_.string() + " --out " + (dir_ / "m.onnx").string(), "no model.json");
  ExpectError("compress " + model_.string() + " --compress permdiag:p=4 --out " + (dir_ / "c.onnx").string(),
              "no Gemm / MatMul / Conv");
#ifdef PERMDNN_HAVE_TRAINING
  ExpectError("compress " + model_.string() + " --compress permdiag:p=4 --out x.onnx --epochs 0", "epochs");
#else
  ExpectError("compress " + model_.string() + " --compress permdiag:p=4 --out x.onnx --epochs 3",
              "not available in this build");
#endif
  ExpectError("eval " + model_.string() + " --data " + (dir_ / "nodata").string(), "");
}

// A model whose input is token ids (a char-LM: Gather -> GRU -> MatMul, from
// scripts/make-recurrent-testdata.py): `run` reads an integer .npy and gives
// PyTorch's logits; a float .npy or --bench is refused with the reason.
TEST_F(RuntimeCli, RunTakesTokenIds) {
  const fs::path data = PERMDNN_RECURRENT_TESTDATA;
  const std::string model = (data / "charlm_gru.onnx").string();
  // int32 ids too: any integer width is read.
  const std::vector<int64_t> ids = permdnn::ReadNpy((data / "charlm_gru.in0.npy").string()).as<int64_t>();
  const std::vector<int32_t> ids32(ids.begin(), ids.end());
  permdnn::WriteNpy<int32_t>((dir_ / "ids32.npy").string(), ids32, {2, 7});
  for (const fs::path in : {data / "charlm_gru.in0.npy", dir_ / "ids32.npy"}) {
    Result r = Permdnn("run " + model + " --input " + in.string() + " --output " + (dir_ / "y.npy").string());
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("int64"), std::string::npos) << r.out;
    const permdnn::NpyArray y = permdnn::ReadNpy((dir_ / "y.npy").string());
    const permdnn::NpyArray want = permdnn::ReadNpy((data / "charlm_gru.out0.npy").string());
    ASSERT_EQ(y.shape, want.shape);
    const std::vector<float> a = y.as<float>(), b = want.as<float>();
    for (std::size_t k = 0; k < a.size(); ++k) EXPECT_NEAR(a[k], b[k], 2e-5) << "logit " << k;
  }
  permdnn::WriteNpy<float>((dir_ / "f.npy").string(), std::vector<float>(14, 1.0f), {2, 7});
  ExpectError("run " + model + " --input " + (dir_ / "f.npy").string(), "integers expected");
  ExpectError("run " + model + " --bench", "float inputs only");
  ExpectError("run " + model + " --input " + (data / "charlm_gru.in0.npy").string() + " --int16",
              "--int16 calibrates on float inputs only");
  ExpectError("run " + model + " --input " + (data / "charlm_gru.in0.npy").string() + " --int8",
              "--int8 calibrates on float inputs only");
}

// export -> compress (every method, the comma form of bits through the
// shell) -> run --profile: the compressed nodes run on compressed kernels.
TEST_F(RuntimeCli, CompressMethodsEndToEnd) {
  const fs::path run = dir_ / "run";
  fs::create_directories(run / "tensors");
  std::vector<float> w1(32 * 16), w2(4 * 32), b1(32, 0.1f), b2(4, 0.0f);
  for (std::size_t i = 0; i < w1.size(); ++i) w1[i] = std::sin(0.37f * static_cast<float>(i));
  for (std::size_t i = 0; i < w2.size(); ++i) w2[i] = std::cos(0.51f * static_cast<float>(i));
  permdnn::WriteNpy<float>((run / "tensors/fc1.weight.npy").string(), w1, {32, 16});
  permdnn::WriteNpy<float>((run / "tensors/fc1.bias.npy").string(), b1, {32});
  permdnn::WriteNpy<float>((run / "tensors/fc2.weight.npy").string(), w2, {4, 32});
  permdnn::WriteNpy<float>((run / "tensors/fc2.bias.npy").string(), b2, {4});
  Write(run / "model.json", R"({"format": "permdnn-run/1", "model": "mlp", "num_classes": 4,
    "input": {"shape": [1, 4, 4], "layout": "NCHW"},
    "layers": [{"name": "flatten", "type": "flatten"},
      {"name": "fc1", "type": "linear", "in": 16, "out": 32, "compress": {"kind": "dense"},
       "tensors": {"weight": "tensors/fc1.weight.npy", "bias": "tensors/fc1.bias.npy"}},
      {"name": "relu1", "type": "relu"},
      {"name": "fc2", "type": "linear", "in": 32, "out": 4, "compress": {"kind": "dense"},
       "tensors": {"weight": "tensors/fc2.weight.npy", "bias": "tensors/fc2.bias.npy"}}]})");
  const std::string dense = (dir_ / "dense.onnx").string();
  Result r = Permdnn("export " + run.string() + " --out " + dense);
  ASSERT_EQ(r.code, 0) << r.out;
  permdnn::WriteNpy<float>((dir_ / "x.npy").string(), std::vector<float>(3 * 16, 0.5f), {3, 1, 4, 4});
  struct Case {
    std::string spec, op, method, kernel;
  };
  for (const Case& c : {Case{"circulant:p=4", "BlockCirculantMatMul", "circulant:p=4", "circulant.fft"},
                        Case{"prune:density=0.25", "SparseMatMul", "prune:density=0.25", "csr.matvec.gather"},
                        Case{"prune:density=0.25,bits=2", "SparseMatMul", "prune:density=0.25:bits=2", "csr.matvec.gather"}}) {
    const std::string out = (dir_ / "c.onnx").string();
    r = Permdnn("compress " + dense + " --compress " + c.spec + " --out " + out);
    ASSERT_EQ(r.code, 0) << c.spec << "\n" << r.out;
    EXPECT_NE(r.out.find(c.op), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(c.method), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("kept energy"), std::string::npos) << r.out;
    r = Permdnn("run " + out + " --input " + (dir_ / "x.npy").string() + " --profile");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find(c.kernel), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("fast compressed"), std::string::npos) << r.out;
    // Warm runs, not the first one: at least 5, named.
    const std::size_t at = r.out.find("profile: per-call means over ");
    ASSERT_NE(at, std::string::npos) << r.out;
    EXPECT_GE(std::atoi(r.out.c_str() + at + 29), 5) << r.out;
  }
  ExpectError("compress " + dense + " --compress prune:density=0.25,bits=9 --out " + (dir_ / "x.onnx").string(),
              "bits");
  // --int16 on a model without int16 layers: calibrates (nothing to record) and runs as fp32.
  r = Permdnn("run " + dense + " --input " + (dir_ / "x.npy").string() + " --int16 --output " +
              (dir_ / "y16.npy").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = Permdnn("run " + dense + " --input " + (dir_ / "x.npy").string() + " --output " + (dir_ / "y32.npy").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(permdnn::ReadNpy((dir_ / "y16.npy").string()).as<float>(),
            permdnn::ReadNpy((dir_ / "y32.npy").string()).as<float>());
  r = Permdnn("run " + dense + " --input " + (dir_ / "x.npy").string() + " --int8 --output " +
              (dir_ / "y8.npy").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(permdnn::ReadNpy((dir_ / "y8.npy").string()).as<float>(),
            permdnn::ReadNpy((dir_ / "y32.npy").string()).as<float>());
}

// run --simd-target: the same model on AVX2 (permdnn's kernels, oneDNN and
// OpenBLAS capped together) gives the outputs of the best target, its
// compressed convolution and FC layers on their SIMD kernels (the
// activations' channel blocks follow oneDNN's ISA, the convolution kernel's
// lanes the Highway target: they agree, or the layer would fall back to
// the reference loops); a target the CPU lacks is an error naming those it has.
TEST_F(RuntimeCli, RunUnderAnotherSimdTarget) {
  {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::stringstream ss;
    ss << cpuinfo.rdbuf();
    if (ss.str().find("avx512f") == std::string::npos)
      GTEST_SKIP() << "no AVX-512: AVX2 is this CPU's own target, nothing to compare";
  }
  const std::string dense = (dir_ / "dense.onnx").string(), model = (dir_ / "p4.onnx").string();
  ExportSmallCnn(dense);
  if (HasFatalFailure()) return;
  Result r = Permdnn("compress " + dense + " --compress permdiag:p=4 --out " + model);
  ASSERT_EQ(r.code, 0) << r.out;
  std::vector<float> x(3 * 64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.23f * static_cast<float>(i));
  permdnn::WriteNpy<float>((dir_ / "x.npy").string(), x, {3, 1, 8, 8});
  const std::string in = " --input " + (dir_ / "x.npy").string();
  r = Permdnn("run " + model + in + " --output " + (dir_ / "best.npy").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = Permdnn("run " + model + in + " --simd-target avx2 --profile --output " + (dir_ / "avx2.npy").string());
  if (r.code != 0 && r.out.find("is not a SIMD target this build and CPU run") != std::string::npos)
    GTEST_SKIP() << "this CPU has no AVX2: " << r.out;
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("SIMD target AVX2 (--simd-target): oneDNN ISA avx2, OpenBLAS core Haswell"), std::string::npos)
      << r.out;
  for (const char* kernel : {"permdiag.conv.3x3s1 fast compressed", "permdiag.matvec",
                             "2 weight layers on fast compressed kernels, 0 on dense fallback"})
    EXPECT_NE(r.out.find(kernel), std::string::npos) << kernel << "\n" << r.out;
  const std::vector<float> best = permdnn::ReadNpy((dir_ / "best.npy").string()).as<float>();
  const std::vector<float> avx2 = permdnn::ReadNpy((dir_ / "avx2.npy").string()).as<float>();
  ASSERT_EQ(best.size(), 12u);
  ASSERT_EQ(avx2.size(), best.size());
  float scale = 0;
  for (float v : best) scale = std::max(scale, std::fabs(v));
  ASSERT_GT(scale, 0.0f);
  for (std::size_t k = 0; k < best.size(); ++k) EXPECT_NEAR(avx2[k], best[k], 1e-5f * scale) << "output " << k;
  ExpectError("run " + model + in + " --simd-target avx7",
              "--simd-target: 'avx7' is not a SIMD target this build and CPU run (available: ");
}

// `run --bench` on two threads reports the checks that chose how the threads
// share each batch: batch 1 timed split and on one thread, batch 8 in
// shares and on split operators; the JSON records what each measured and
// what ran. (ctest fixes the split check's outcome for the runtime tests:
// this run unsets that.)
TEST_F(RuntimeCli, BenchReportsTheThreadChecks) {
  const std::string model = (dir_ / "cnn.onnx").string(), json = (dir_ / "bench.json").string();
  ExportSmallCnn(model);
  if (HasFatalFailure()) return;
  Result r = Permdnn("run " + model + " --bench --batch 1,8 --threads 2 --min-time 0.01 --json " + json,
                     "env -u PERMDNN_SPLIT_CHECK ");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("  split check: 2 threads "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  shares check: 2 shares "), std::string::npos) << r.out;
  std::ifstream in(json);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  for (const char* key : {"\"split_check_ms\"", "\"one_thread\"", "\"shares_check_ms\"", "\"shares\""})
    EXPECT_NE(text.find(key), std::string::npos) << key << "\n" << text;
  // Fixed: neither check runs.
  r = Permdnn("run " + model + " --bench --batch 1,8 --threads 2 --min-time 0.01", "env PERMDNN_SPLIT_CHECK=split ");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find(" check: "), std::string::npos) << r.out;
}

}  // namespace
