// permdnn_train_bench: one training step (forward + backward, input gradient
// included) of a PermDiagLinear against torch::nn::Linear of the same shape,
// in the same process; prints medians and the speed-up. Both
// implementations of PermDiagLinear are timed: the custom autograd function
// over permdnn's kernels (the default) and LibTorch gather ops.
//
//   permdnn_train_bench [--rows 4096] [--cols 4096] [--p 8] [--batch 128]
//                       [--reps 20] [--threads 2] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/linear.h>

#include "permdnn/core/atomic_file.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/train/permdiag_grad.h"
#include "src/train/permdiag_layers.h"

namespace {

double MedianMs(int reps, const std::function<void()>& step) {
  for (int i = 0; i < 3; ++i) step();  // warm-up: allocator, thread pools
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"training-step benchmark: PermDiagLinear vs torch::nn::Linear"};
  int64_t rows = 4096, cols = 4096, batch = 128;
  int p = 8, reps = 20, threads = 2;
  std::string json;
  app.add_option("--rows", rows)->capture_default_str();
  app.add_option("--cols", cols)->capture_default_str();
  app.add_option("--p", p)->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--reps", reps)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--json", json);
  CLI11_PARSE(app, argc, argv);

  torch::manual_seed(1);
  torch::set_num_threads(threads);
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
  double t_gather = MedianMs(std::max(3, reps / 4), step(*pd, pd_fwd));
  pd->use_gather = false;

  // Breakdown of the PermDiagLinear step: the three kernels alone.
  {
    permdnn::PermDiagMatrix m = pd->Matrix();
    torch::Tensor xt = x.detach().t().contiguous(), gt = g.t().contiguous();
    torch::Tensor yt = torch::empty({rows, batch}), gxt = torch::empty({cols, batch}),
                  dq = torch::empty_like(pd->values);
    auto v = m.view();
    double t_fwd = MedianMs(reps, [&] {
      permdnn::kernels::simd::MatMul(v, xt.data_ptr<float>(), batch, nullptr, yt.data_ptr<float>(), threads);
    });
    double t_bwd_x = MedianMs(reps, [&] {
      permdnn::kernels::simd::MatMulT(v, gt.data_ptr<float>(), batch, gxt.data_ptr<float>(), threads);
    });
    // The transposed matrix, repacked as the autograd backward does.
    std::vector<float> dense_t(static_cast<std::size_t>(rows * cols));
    permdnn::PermDiagMatrix mt(cols, rows, p);
    for (int64_t I = 0; I < m.row_blocks(); ++I)
      for (int64_t J = 0; J < m.col_blocks(); ++J) {
        const int k = m.offset(I, J);
        mt.offsets()[J * m.row_blocks() + I] = static_cast<uint16_t>((p - k) % p);
        for (int d = 0; d < p; ++d) mt.block(J, I)[d] = m.block(I, J)[((d - k) % p + p) % p];
      }
    auto vt = mt.view();
    double t_bwd_x_fwd = MedianMs(reps, [&] {
      permdnn::kernels::simd::MatMul(vt, gt.data_ptr<float>(), batch, nullptr, gxt.data_ptr<float>(), threads);
    });
    double t_bwd_w = MedianMs(reps, [&] {
      permdnn::train::PermDiagWeightGrad(v, gt.data_ptr<float>(), xt.data_ptr<float>(), batch,
                                         dq.data_ptr<float>(), threads);
    });
    std::printf("  kernels alone: forward %.2f ms, input grad %.2f ms as MatMulT / %.2f ms as MatMul on the "
                "repacked transpose (used), weight grad %.2f ms\n",
                t_fwd, t_bwd_x, t_bwd_x_fwd, t_bwd_w);
  }
  const int64_t values = pd->values.numel(), blocks = pd->offsets.numel();
  const int64_t pd_bytes = values * 4 + blocks * permdnn::OffsetBytes(p) + rows * 4;
  const int64_t dense_bytes = (rows * cols + rows) * 4;
  std::printf("training step (forward + backward incl. input gradient), %ldx%ld, batch %ld, %d threads, "
              "kernels %s/%s, median of %d\n",
              static_cast<long>(rows), static_cast<long>(cols), static_cast<long>(batch), threads,
              permdnn::kernels::PathName(permdnn::kernels::ActivePath()),
              permdnn::kernels::ActiveSimdTarget().c_str(), reps);
  std::printf("  %-40s %10.2f ms\n", "torch::nn::Linear", t_dense);
  std::printf("  %-40s %10.2f ms  %5.2fx vs Linear\n", fmt::format("PermDiagLinear p={} (kernels, default)", p).c_str(),
              t_kernel, t_dense / t_kernel);
  std::printf("  forward only (no autograd): Linear %.2f ms, PermDiagLinear %.2f ms\n", t_dense_fwd, t_kernel_fwd);
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
                        {"speedup_gather", t_dense / t_gather}, {"permdiag_param_bytes", pd_bytes},
                        {"linear_param_bytes", dense_bytes}};
    permdnn::WriteFileAtomic(json, j.dump(2) + "\n");
  }
  return 0;
}
