// permdnn_train_bench: one training step (forward + backward, input gradient
// included) of a PermDiagLinear against torch::nn::Linear of the same shape,
// in the same process; prints medians and the speed-up. Both
// implementations of PermDiagLinear are timed: the custom autograd function
// over permdnn's kernels (the default) and LibTorch gather ops.
//
//   permdnn_train_bench [--rows 4096] [--cols 4096] [--p 8] [--batch 128]
//                       [--reps 20] [--threads 2] [--json FILE] [--skip-gather]
//
// --infer: inference instead (issue 4). Builds the `mlp` model dense and
// with permdiag:p=P (random weights, seeded), writes both as run
// directories and exports them to ONNX through the same path as
// `permdnn export` (runtime::ExportRun), then times in this one process,
// per thread count and batch size: LibTorch eager forward of the dense
// model (NoGradGuard, torch::set_num_threads), the runtime on the dense
// ONNX, and the runtime on the p=P ONNX; medians of --reps runs after
// warm-up, outputs cross-checked.
//   permdnn_train_bench --infer [--p 8] [--infer-batches 1,64]
//                       [--infer-threads 1,2] [--reps 200] [--json FILE]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <span>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/linear.h>

#include "permdnn/core/atomic_file.h"
#include "permdnn/core/timing.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/formats/registry.h"
#include "permdnn/formats/spec.h"
#include "permdnn/train/permdiag_grad.h"
#include "src/train/bench_step.h"
#include "src/train/models.h"
#include "src/train/permdiag_layers.h"

// LibTorch (Debian's build) and the runtime's dense layers both run on
// OpenBLAS, whose own thread count torch::set_num_threads does not set: left
// at its default (all cores) its threads fight the measured one.
extern "C" void openblas_set_num_threads(int);

namespace {

// --cpu-time: process CPU time instead of wall time. On a shared machine
// (other jobs on the same cores) wall time counts the time the benchmark is
// descheduled; CPU time does not (it still sees cache and memory-bandwidth
// interference). Meaningful for single-threaded comparisons.
bool g_cpu_time = false;

// Median of `reps` timed steps (bench_step.h), by process CPU time under --cpu-time.
double MedianMs(int reps, const std::function<void()>& step) {
  return permdnn::train::MedianStepMs(reps, step, g_cpu_time);
}

// Issue 4: LibTorch eager (dense) vs the runtime (dense ONNX, p=P ONNX).
int RunInference(int p, const std::vector<int64_t>& batches, const std::vector<int>& thread_list, int reps,
                 const std::string& json) {
  namespace fs = std::filesystem;
  namespace rt = permdnn::runtime;
  using permdnn::formats::CompressSpec;
  const fs::path dir = fs::temp_directory_path() / fmt::format("permdnn_infer_bench_{}", ::getpid());
  fs::create_directories(dir);
  torch::manual_seed(1);
  permdnn::train::Net dense("mlp", CompressSpec::Parse("dense"), permdnn::train::ModelInput{}, 1);
  permdnn::train::Net pd("mlp", CompressSpec::Parse(fmt::format("permdiag:p={}", p)), permdnn::train::ModelInput{}, 1);
  dense->eval();
  pd->eval();
  const permdnn::Preprocess pre;
  dense->WriteRunDescription((dir / "dense").string(), pre, 0.0);
  pd->WriteRunDescription((dir / "pd").string(), pre, 0.0);
  const rt::ExportReport rd = rt::ExportRun((dir / "dense").string(), (dir / "dense.onnx").string());
  const rt::ExportReport rp = rt::ExportRun((dir / "pd").string(), (dir / "pd.onnx").string());
  std::printf("mlp 784-1024-1024-10: dense ONNX %ld bytes, permdiag p=%d ONNX %ld bytes (%s), medians of %d "
              "(%s time)\n",
              static_cast<long>(rd.file_bytes), p, static_cast<long>(rp.file_bytes),
              permdnn::kernels::ActiveSimdTarget().c_str(), reps, g_cpu_time ? "process CPU" : "wall");
  rt::Model m_dense = rt::Model::Load((dir / "dense.onnx").string());
  rt::Model m_pd = rt::Model::Load((dir / "pd.onnx").string());
  nlohmann::json records = nlohmann::json::array();
  std::printf("  %-8s %-6s %14s %14s %14s %12s %12s\n", "threads", "batch", "torch dense ms", "rt dense ms",
              fmt::format("rt p={} ms", p).c_str(), "rt-dense/p", "torch/p");
  for (int threads : thread_list) {
    torch::set_num_threads(threads);
    openblas_set_num_threads(threads);
    m_dense.SetThreads(threads);
    m_pd.SetThreads(threads);
    for (int64_t batch : batches) {
      torch::Tensor x = torch::randn({batch, 1, 28, 28});
      const std::vector<int64_t> shape = {batch, 1, 28, 28};
      std::span<const float> xin(x.data_ptr<float>(), static_cast<std::size_t>(x.numel()));
      std::vector<float> y_dense(static_cast<std::size_t>(batch * 10)), y_pd(y_dense.size());
      torch::Tensor y_torch, y_torch_pd;
      double t_torch;
      {
        torch::NoGradGuard ng;
        t_torch = MedianMs(reps, [&] { y_torch = dense->forward(x); });
        y_torch_pd = pd->forward(x);
      }
      const double t_rt_dense = MedianMs(reps, [&] { m_dense.Run(xin, shape, y_dense); });
      const double t_rt_pd = MedianMs(reps, [&] { m_pd.Run(xin, shape, y_pd); });
      // Same models: the runtime's outputs must match LibTorch's.
      double err = 0;
      for (int64_t i = 0; i < batch * 10; ++i) {
        err = std::max(err, std::fabs(static_cast<double>(y_dense[i]) - y_torch.data_ptr<float>()[i]));
        err = std::max(err, std::fabs(static_cast<double>(y_pd[i]) - y_torch_pd.data_ptr<float>()[i]));
      }
      std::printf("  %-8d %-6ld %14.4f %14.4f %14.4f %11.2fx %11.2fx   (max |rt - torch| %.1e)\n", threads,
                  static_cast<long>(batch), t_torch, t_rt_dense, t_rt_pd, t_rt_dense / t_rt_pd, t_torch / t_rt_pd,
                  err);
      if (err > 1e-3) std::printf("  WARNING: runtime and LibTorch outputs differ by %.3g\n", err);
      records.push_back({{"threads", threads}, {"batch", batch}, {"p", p}, {"torch_dense_ms", t_torch},
                         {"runtime_dense_ms", t_rt_dense}, {"runtime_permdiag_ms", t_rt_pd},
                         {"speedup_vs_runtime_dense", t_rt_dense / t_rt_pd},
                         {"speedup_vs_torch_dense", t_torch / t_rt_pd}, {"max_abs_diff", err}});
    }
  }
  fs::remove_all(dir);
  if (!json.empty()) permdnn::WriteFileAtomic(json, records.dump(2) + "\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"training-step benchmark: PermDiagLinear vs torch::nn::Linear"};
  int64_t rows = 4096, cols = 4096, batch = 128;
  int p = 8, reps = 20, threads = 2;
  std::string json;
  bool skip_gather = false;
  permdnn::train::AddStepBenchOptions(app, &rows, &cols, &p, &batch, &reps, &threads);
  app.add_option("--json", json);
  app.add_flag("--skip-gather", skip_gather, "do not time the (slow) gather-ops variant");
  bool infer = false;
  std::vector<int64_t> infer_batches = {1, 64};
  std::vector<int> infer_threads = {1, 2};
  app.add_flag("--cpu-time", g_cpu_time, "time with process CPU time instead of wall time (shared machine)");
  app.add_flag("--infer", infer, "inference benchmark: LibTorch eager dense mlp vs runtime dense / permdiag ONNX");
  app.add_option("--infer-batches", infer_batches)->delimiter(',')->capture_default_str();
  app.add_option("--infer-threads", infer_threads)->delimiter(',')->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (infer) return RunInference(p, infer_batches, infer_threads, reps, json);

  torch::manual_seed(1);
  torch::set_num_threads(threads);
  openblas_set_num_threads(threads);
  permdnn::train::SetTrainThreads(threads);
  torch::Tensor x = torch::randn({batch, cols}).requires_grad_(true);
  torch::Tensor g = torch::randn({batch, rows});

  permdnn::train::PermDiagLinear pd(cols, rows, p, true, 1);
  torch::nn::Linear dense(cols, rows);
  auto step = [&](torch::nn::Module& m, const std::function<torch::Tensor(const torch::Tensor&)>& fwd) {
    return [&m, &x, &g, fwd] {
      m.zero_grad();
      x.mutable_grad() = torch::Tensor();
      torch::Tensor y = fwd(x);
      y.backward(g);
    };
  };
  auto pd_fwd = [&](const torch::Tensor& in) { return pd->forward(in); };
  auto dense_fwd = [&](const torch::Tensor& in) { return dense->forward(in); };

  pd->use_gather = false;
  double t_kernel = MedianMs(reps, step(*pd, pd_fwd));
  double t_dense = MedianMs(reps, step(*dense, dense_fwd));
  double t_kernel_fwd, t_dense_fwd;
  {
    torch::NoGradGuard ng;
    t_kernel_fwd = MedianMs(reps, [&] { pd->forward(x); });
    t_dense_fwd = MedianMs(reps, [&] { dense->forward(x); });
  }
  pd->use_gather = true;
  double t_gather = skip_gather ? 0.0 : MedianMs(std::max(3, reps / 4), step(*pd, pd_fwd));
  pd->use_gather = false;

  // Breakdown of the PermDiagLinear step: the three kernels alone, on the
  // batch-major operands the autograd function passes them.
  {
    permdnn::PermDiagMatrix m = pd->Matrix();
    torch::Tensor xc = x.detach().contiguous(), gc = g.contiguous();
    torch::Tensor y = torch::empty({batch, rows}), gx = torch::empty({batch, cols}),
                  dq = torch::empty_like(pd->values);
    auto v = m.view();
    double t_fwd = MedianMs(reps, [&] {
      permdnn::kernels::simd::MatMulRows(v, xc.data_ptr<float>(), batch, nullptr, y.data_ptr<float>(), threads);
    });
    // The transposed matrix, repacked as the autograd backward does.
    permdnn::PermDiagMatrix mt(cols, rows, p);
    for (int64_t I = 0; I < m.row_blocks(); ++I)
      for (int64_t J = 0; J < m.col_blocks(); ++J) {
        const int k = m.offset(I, J);
        mt.offsets()[J * m.row_blocks() + I] = static_cast<uint16_t>((p - k) % p);
        for (int d = 0; d < p; ++d) mt.block(J, I)[d] = m.block(I, J)[((d - k) % p + p) % p];
      }
    auto vt = mt.view();
    double t_bwd_x = MedianMs(reps, [&] {
      permdnn::kernels::simd::MatMulRows(vt, gc.data_ptr<float>(), batch, nullptr, gx.data_ptr<float>(), threads);
    });
    double t_bwd_w = MedianMs(reps, [&] {
      permdnn::train::PermDiagWeightGradRows(v, gc.data_ptr<float>(), xc.data_ptr<float>(), batch,
                                             dq.data_ptr<float>(), threads);
    });
    std::printf("  kernels alone: forward %.2f ms, input grad %.2f ms (MatMulRows on the repacked transpose), "
                "weight grad %.2f ms\n",
                t_fwd, t_bwd_x, t_bwd_w);
  }
  const int64_t values = pd->values.numel(), blocks = pd->offsets.numel();
  const permdnn::formats::Geometry geometry{rows, cols, {}, p};
  const int64_t pd_bytes =
      permdnn::formats::StoredSize(permdnn::formats::Kind::kPermDiag, geometry, 0, 0, true, {32, true}).bytes;
  const int64_t dense_bytes = permdnn::formats::StoredSize(permdnn::formats::Kind::kDense, geometry, 0, 0, true).bytes;
  std::printf("training step (forward + backward incl. input gradient), %ldx%ld, batch %ld, %d threads, "
              "kernels %s/%s, median of %d (%s time)\n",
              static_cast<long>(rows), static_cast<long>(cols), static_cast<long>(batch), threads,
              permdnn::kernels::PathName(permdnn::kernels::ActivePath()),
              permdnn::kernels::ActiveSimdTarget().c_str(), reps, g_cpu_time ? "process CPU" : "wall");
  std::printf("  %-40s %10.2f ms\n", "torch::nn::Linear", t_dense);
  std::printf("  %-40s %10.2f ms  %5.2fx vs Linear\n", fmt::format("PermDiagLinear p={} (kernels, default)", p).c_str(),
              t_kernel, t_dense / t_kernel);
  std::printf("  forward only (no autograd): Linear %.2f ms, PermDiagLinear %.2f ms\n", t_dense_fwd, t_kernel_fwd);
  if (!skip_gather)
    std::printf("  %-40s %10.2f ms  %5.2fx vs Linear\n", fmt::format("PermDiagLinear p={} (gather ops)", p).c_str(),
                t_gather, t_dense / t_gather);
  std::printf("  parameter memory: PermDiagLinear %ld bytes (values %ld floats + %ld offsets x %d B + bias), "
              "Linear %ld bytes (%.2fx)\n",
              static_cast<long>(pd_bytes), static_cast<long>(values), static_cast<long>(blocks),
              permdnn::OffsetBytes(p), static_cast<long>(dense_bytes), static_cast<double>(dense_bytes) / pd_bytes);
  if (!json.empty()) {
    nlohmann::json j = {{"rows", rows}, {"cols", cols}, {"p", p}, {"batch", batch}, {"threads", threads},
                        {"reps", reps}, {"linear_ms", t_dense}, {"permdiag_kernel_ms", t_kernel},
                        {"permdiag_gather_ms", t_gather}, {"speedup_kernel", t_dense / t_kernel},
                        {"speedup_gather", skip_gather ? 0.0 : t_dense / t_gather}, {"permdiag_param_bytes", pd_bytes},
                        {"linear_param_bytes", dense_bytes}};
    permdnn::WriteFileAtomic(json, j.dump(2) + "\n");
  }
  return 0;
}
