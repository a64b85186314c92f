// permdnn_circulant_bench: one training step (forward + backward, input
// gradient included) of BlockCirculantLinear, in its two LibTorch
// implementations — FFT ops (rfft, complex batched matmul or the equivalent
// real batched GEMM, irfft; complex is the default) and the dense
// reconstruction (index gather + matmul) — against torch::nn::Linear of
// the same shape, in the same process; medians.
//
//   permdnn_circulant_bench [--rows 4096] [--cols 4096] [--p 8] [--batch 128]
//                           [--reps 20] [--threads 2]
#include <functional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/nn/modules/linear.h>

#include "src/train/bench_step.h"
#include "src/train/circulant_layers.h"

using permdnn::train::MedianStepMs;

int main(int argc, char** argv) {
  CLI::App app{"training-step benchmark: BlockCirculantLinear (FFT, gather+matmul) vs torch::nn::Linear"};
  int64_t rows = 4096, cols = 4096, batch = 128;
  int p = 8, reps = 20, threads = 2;
  permdnn::train::AddStepBenchOptions(app, &rows, &cols, &p, &batch, &reps, &threads);
  CLI11_PARSE(app, argc, argv);

  torch::manual_seed(1);
  torch::set_num_threads(threads);
  torch::Tensor x = torch::randn({batch, cols}).requires_grad_(true);
  torch::Tensor g = torch::randn({batch, rows});
  permdnn::train::BlockCirculantLinear circ(cols, rows, p, true);
  torch::nn::Linear dense(cols, rows);
  auto step = [&](torch::nn::Module& m, const std::function<torch::Tensor()>& fwd) {
    return [&m, fwd, &x, &g] {
      m.zero_grad();
      x.mutable_grad() = torch::Tensor();
      fwd().backward(g);
    };
  };
  const double fft_ms = MedianStepMs(reps, step(*circ, [&] {
                                       circ->use_dense = false;
                                       return circ->forward(x);
                                     }));
  const double real_ms = MedianStepMs(reps, step(*circ, [&] {
                                        circ->real_gemm = true;
                                        return circ->forward(x);
                                      }));
  circ->real_gemm = false;
  const double gather_ms = MedianStepMs(reps, step(*circ, [&] {
                                          circ->use_dense = true;
                                          return circ->forward(x);
                                        }));
  const double dense_ms = MedianStepMs(reps, step(*dense, [&] { return dense->forward(x); }));
  fmt::print("BlockCirculantLinear {}x{} p={} batch {} threads {} (training step, median of {}):\n", rows, cols, p,
             batch, threads, reps);
  fmt::print("  FFT, complex matmul (default) {:9.2f} ms   {:5.2f}x vs nn::Linear\n", fft_ms, dense_ms / fft_ms);
  fmt::print("  FFT, real batched GEMM        {:9.2f} ms   {:5.2f}x vs nn::Linear\n", real_ms, dense_ms / real_ms);
  fmt::print("  gather dense W + matmul       {:9.2f} ms   {:5.2f}x vs nn::Linear\n", gather_ms, dense_ms / gather_ms);
  fmt::print("  torch::nn::Linear             {:9.2f} ms\n", dense_ms);
  fmt::print("  FFT vs gather: {:.2f}x\n", gather_ms / fft_ms);
  return 0;
}
