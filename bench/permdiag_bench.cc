// Google Benchmark: permuted-diagonal products against OpenBLAS dense on the
// same shapes, with FLOPS over nonzeros and dense-equivalent EffFLOPS as
// rates. Args: m, n, p, batch (p = 0 means the dense OpenBLAS baseline).
#include <cblas.h>

#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/kernels/stream.h"

extern "C" void openblas_set_num_threads(int);

namespace {

using permdnn::AlignedBuffer;
using permdnn::PermDiagMatrix;

void Fill(AlignedBuffer<float>& v, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<double> coin(0, 1);
  for (auto& x : v) x = coin(rng) < density ? nd(rng) : 0.0f;
}

void SetCounters(benchmark::State& state, int64_t m, int64_t n, int64_t nnz, int64_t batch) {
  state.counters["FLOPS"] = benchmark::Counter(2.0 * nnz * batch * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["EffFLOPS"] =
      benchmark::Counter(2.0 * m * n * batch * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_Dense(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), batch = state.range(3);
  openblas_set_num_threads(1);
  AlignedBuffer<float> a(m * n), x(n * batch), y(m * batch);
  Fill(a, 1, 1);
  Fill(x, 1, 2);
  for (auto _ : state) {
    if (batch == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, m, n, 1, a.data(), n, x.data(), 1, 0, y.data(), 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, batch, n, 1, a.data(), n, x.data(), batch, 0,
                  y.data(), batch);
    benchmark::DoNotOptimize(y.data());
  }
  SetCounters(state, m, n, m * n, batch);
}

void BM_PermDiag(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), batch = state.range(3);
  const int p = static_cast<int>(state.range(2));
  PermDiagMatrix w = PermDiagMatrix::Random(m, n, p, 3);
  AlignedBuffer<float> x(n * batch), y(m * batch);
  Fill(x, 1, 2);
  for (auto _ : state) {
    if (batch == 1)
      permdnn::kernels::PermDiagMatVec(w, x.span(), {}, y.span(), 1);
    else
      permdnn::kernels::PermDiagMatMul(w, x.span(), batch, {}, y.span(), 1);
    benchmark::DoNotOptimize(y.data());
  }
  SetCounters(state, m, n, w.nnz(), batch);
}

// Batch 1 on the row pack (kernels::PermDiagRowPack, built once outside the
// loop), the layout `permdnn bench` and the runtime use at batch 1; BM_PermDiag
// above times the row-major matrix.
void BM_PermDiagRowPack(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1);
  const int p = static_cast<int>(state.range(2));
  PermDiagMatrix w = PermDiagMatrix::Random(m, n, p, 3);
  const auto pack = permdnn::kernels::PermDiagRowPack::Build(w);
  AlignedBuffer<float> x(n), y(m);
  Fill(x, 1, 2);
  for (auto _ : state) {
    permdnn::kernels::PermDiagMatVec(pack, x.span(), {}, y.span(), 1);
    benchmark::DoNotOptimize(y.data());
  }
  SetCounters(state, m, n, w.nnz(), 1);
}

// Batch-major Y = X·Wᵀ (kernels::PermDiagMatMulRows), the batched kernel the
// runtime, training and `permdnn bench` use; BM_PermDiag above times the
// feature-major PermDiagMatMul at batch > 1.
void BM_PermDiagRows(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), batch = state.range(3);
  const int p = static_cast<int>(state.range(2));
  PermDiagMatrix w = PermDiagMatrix::Random(m, n, p, 3);
  AlignedBuffer<float> x(n * batch), y(m * batch);
  Fill(x, 1, 2);
  for (auto _ : state) {
    permdnn::kernels::PermDiagMatMulRows(w, x.span(), batch, {}, y.span(), 1);
    benchmark::DoNotOptimize(y.data());
  }
  SetCounters(state, m, n, w.nnz(), batch);
}

void BM_PermDiagSkip(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1);
  const int p = static_cast<int>(state.range(2));
  const double density = state.range(3) / 100.0;
  PermDiagMatrix w = PermDiagMatrix::Random(m, n, p, 3);
  auto pack = permdnn::kernels::PermDiagColumnPack::Build(w);
  AlignedBuffer<float> x(n), y(m);
  Fill(x, density, 2);
  for (auto _ : state) {
    permdnn::kernels::PermDiagMatVecSparseInput(pack, x.span(), {}, y.span(), 1);
    benchmark::DoNotOptimize(y.data());
  }
  SetCounters(state, m, n, w.nnz(), 1);
}

// The read bandwidth bound: kernels::StreamSum (a plain SIMD sum, 8 vector
// accumulators) over `mib` MiB. 8 MiB is the size of the Alex-7 p=8 weights
// (L3 on Zen 3), 400 MiB that of dense VGG-6 (DRAM). bytes_per_second is the
// bound a weight-streaming kernel of that size can reach.
void BM_StreamRead(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0)) * 1024 * 1024 / sizeof(float);
  AlignedBuffer<float> a(n);
  Fill(a, 1, 4);
  for (auto _ : state) {
    float sum = permdnn::kernels::StreamSum(a.span());
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * sizeof(float)));
}

void Shapes(benchmark::internal::Benchmark* b, bool dense) {
  b->ArgNames({"m", "n", "p", "batch"});
  for (auto [m, n] : {std::pair<int64_t, int64_t>{4096, 9216}, {4096, 4096}})
    for (int64_t batch : {1, 64}) {
      if (dense)
        b->Args({m, n, 0, batch});
      else
        for (int64_t p : {4, 8, 16}) b->Args({m, n, p, batch});
    }
}

BENCHMARK(BM_Dense)->Apply([](auto* b) { Shapes(b, true); })->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PermDiag)->Apply([](auto* b) { Shapes(b, false); })->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PermDiagRowPack)
    ->ArgNames({"m", "n", "p"})
    ->Args({4096, 4096, 8})
    ->Args({4096, 4096, 16})
    ->Args({4096, 9216, 8})
    ->Args({4096, 25088, 8})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PermDiagRows)
    ->ArgNames({"m", "n", "p", "batch"})
    ->Args({4096, 9216, 8, 64})
    ->Args({4096, 4096, 8, 64})
    ->Args({4096, 4096, 16, 64})
    ->Args({1024, 1024, 8, 64})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StreamRead)->ArgName("mib")->Arg(8)->Arg(400)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PermDiagSkip)
    ->ArgNames({"m", "n", "p", "act_pct"})
    ->Args({4096, 9216, 8, 35})
    ->Args({4096, 9216, 8, 100})
    ->Args({4096, 4096, 8, 35})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
