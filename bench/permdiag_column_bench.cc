// Google Benchmark: every row of the shared-offset kernels (kernel table
// rows permdiag_column.*, forced by name) on the EIE layers Alex-6, Alex-7,
// VGG-6, VGG-7 at p = 8, input densities 1 and 0.35, one thread, next to
// the general permdiag batch-1 product on the same shapes. Args: m, n, p,
// input density in percent. Counters: FLOPS over the stored weights,
// dense-equivalent EffFLOPS.
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/kernels/permdiag_column.h"
#include "permdnn/kernels/table.h"

namespace {

using permdnn::AlignedBuffer;
using permdnn::PermDiagMatrix;
namespace k = permdnn::kernels;

std::vector<float> Input(int64_t n, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<double> coin(0, 1);
  std::vector<float> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = coin(rng) < density ? nd(rng) : 0.0f;
  return x;
}

// A random permdiag matrix with row block 0's offsets shared down each block column.
PermDiagMatrix Shared(int64_t m, int64_t n, int p) {
  return PermDiagMatrix::Random(m, n, p, 5).WithColumnOffsets();
}

void Counters(benchmark::State& state, int64_t m, int64_t n, int p) {
  state.counters["FLOPS"] = benchmark::Counter(2.0 * m * n / p * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["EffFLOPS"] = benchmark::Counter(2.0 * m * n * state.iterations(), benchmark::Counter::kIsRate);
}

void ColumnRow(benchmark::State& state, std::string row, k::KernelOp op) {
  const int64_t m = state.range(0), n = state.range(1);
  const int p = static_cast<int>(state.range(2));
  const k::PermDiagColumnWeights w = k::PermDiagColumnWeights::Build(Shared(m, n, p));
  const std::vector<float> x = Input(n, static_cast<double>(state.range(3)) / 100.0, 2);
  std::vector<float> y(static_cast<std::size_t>(m));
  k::ForceKernel(row);
  for (auto _ : state) {
    if (op == k::KernelOp::kPermDiagColumnSparseInput) k::PermDiagColumnMatVecSparseInput(w, x, {}, y);
    else k::PermDiagColumnMatVec(w, x, {}, y);
    benchmark::DoNotOptimize(y.data());
  }
  k::ForceKernel("");
  Counters(state, m, n, p);
}

void GeneralPermDiag(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1);
  const int p = static_cast<int>(state.range(2));
  const k::PermDiagRowPack w = k::PermDiagRowPack::Build(PermDiagMatrix::Random(m, n, p, 5));
  const std::vector<float> x = Input(n, static_cast<double>(state.range(3)) / 100.0, 2);
  std::vector<float> y(static_cast<std::size_t>(m));
  for (auto _ : state) {
    k::PermDiagMatVec(w, x, {}, y);
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, m, n, p);
}

void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "p", "density%"});
  for (auto [m, n] : {std::pair<int64_t, int64_t>{4096, 9216}, {4096, 4096}, {4096, 25088}})
    for (int density : {100, 35}) b->Args({m, n, 8, density});
  b->UseRealTime();
}

const bool registered = [] {
  benchmark::RegisterBenchmark("PermDiag/general.packed", GeneralPermDiag)->Apply(Shapes);
  for (const k::KernelRow& r : k::KernelTable())
    if ((r.op == k::KernelOp::kPermDiagColumnMatVec || r.op == k::KernelOp::kPermDiagColumnSparseInput) &&
        r.target != "reference")
      benchmark::RegisterBenchmark(("PermDiagColumn/" + r.name).c_str(), ColumnRow, r.name, r.op)->Apply(Shapes);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
