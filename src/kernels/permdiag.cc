// Public permuted-diagonal products: validate shapes once, then dispatch to
// the reference or SIMD path (dispatch.h). Also builds the column and row packs.
#include "permdnn/kernels/permdiag.h"
#include "permdnn/kernels/table.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "permdnn/core/cpu_time.h"
#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/kernels/dispatch.h"
#include "src/kernels/table_internal.h"

namespace permdnn::kernels {

namespace {

void CheckSize(const char* op, const char* what, std::size_t got, int64_t expected) {
  PERMDNN_CHECK(static_cast<int64_t>(got) == expected, "{}: {} has {} entries, expected {}", op,
                what, got, expected);
}

void CheckBias(const char* op, std::span<const float> bias, int64_t rows) {
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == rows,
                "{}: bias has {} entries, expected 0 or {} (rows)", op, bias.size(), rows);
}

// The block geometry each pack keeps of its matrix.
template <class Pack>
void TakeGeometry(const PermDiagMatrix& w, Pack& pack) {
  pack.rows = w.rows();
  pack.cols = w.cols();
  pack.p = w.p();
  pack.row_blocks = w.row_blocks();
  pack.col_blocks = w.col_blocks();
}

}  // namespace

PermDiagColumnPack PermDiagColumnPack::Build(const PermDiagMatrix& w) {
  PermDiagColumnPack pack;
  TakeGeometry(w, pack);
  const int p = w.p();
  const int64_t mb = w.row_blocks(), nb = w.col_blocks();
  pack.col_values.Resize(static_cast<std::size_t>(nb * p * mb));
  if (p <= 256)
    pack.col_offsets.Resize(static_cast<std::size_t>(nb * mb));
  else
    pack.col_offsets16.Resize(static_cast<std::size_t>(nb * mb));
  for (int64_t J = 0; J < nb; ++J) {
    for (int64_t I = 0; I < mb; ++I) {
      int k = w.offset(I, J);
      if (p <= 256)
        pack.col_offsets[J * mb + I] = static_cast<uint8_t>(k);
      else
        pack.col_offsets16[J * mb + I] = static_cast<uint16_t>(k);
      const float* q = w.block(I, J);
      for (int d = 0; d < p; ++d) pack.col_values[(J * p + d) * mb + I] = q[(d - k + p) % p];
    }
  }
  return pack;
}

bool PermDiagRowPack::UsesChunks(const PermDiagMatrix& w, int64_t chunked_max_bytes) {
  const int p = w.p();
  if (64 % p != 0) return false;
  const int64_t group = 64 / p;
  const int64_t padded_blocks = (w.row_blocks() + group - 1) / group * group;
  const int64_t padded_bytes = padded_blocks * w.col_blocks() * p * static_cast<int64_t>(sizeof(float));
  // Where the pack kernels permute in registers instead of loading rotated
  // slices (AVX-512: lanes<4>, permute<8>, and full<1> at p = 16; AVX2:
  // lanes<4>), the pack stays chunk-major past L3 too. From DRAM it beat the row-major kernels
  // (one thread, Zen 5, medians of 41; p = 4 measured with permute<4>, lanes<4>'s
  // predecessor): 4096x9216 p=4 0.86 vs 1.48 ms,
  // 4096x25088 p=4 3.41 vs 6.45, p=8 1.34 vs 1.66, p=16 0.59 vs 0.77 (and
  // 0.62-0.65 vs 0.67-0.71 ms for the row-major kernel on AVX2, the
  // PreferredSimdTarget entry, alternating). On AVX2, p = 4: 4096x25088
  // 2.96-3.31 ms chunk-major (permute<4>) vs 3.50-4.15 row-major, three
  // alternating runs; at p = 8 and 16 AVX2's row-major streams stay faster
  // from DRAM (README).
  if (chunked_max_bytes == kChunkedMaxBytes) {
    const char* row = p == 4 ? "permdiag.packed.lanes<4>" : p == 8 ? "permdiag.packed.permute<8>"
                      : p == 16 ? "permdiag.packed.full<1>" : nullptr;
    if (row && KernelAdmits(row, {KernelOp::kPermDiagMatVecPacked, p, w.rows(), w.cols(), 1, true}))
      chunked_max_bytes = int64_t{1} << 40;
  }
  return padded_bytes <= chunked_max_bytes && 4 * (padded_blocks - w.row_blocks()) <= w.row_blocks();
}

PermDiagRowPack PermDiagRowPack::Build(const PermDiagMatrix& w, int64_t chunked_max_bytes) {
  const int p = w.p();
  PermDiagRowPack pack;
  TakeGeometry(w, pack);
  pack.chunked = UsesChunks(w, chunked_max_bytes);
  if (!pack.chunked) {
    pack.groups = pack.row_blocks;
    pack.chunk = pack.col_blocks;
    pack.values.Resize(w.values().size());
    std::copy(w.values().begin(), w.values().end(), pack.values.data());
    pack.offsets16.Resize(w.offsets().size());
    std::copy(w.offsets().begin(), w.offsets().end(), pack.offsets16.data());
    return pack;
  }
  pack.group = 64 / p;
  pack.groups = (pack.row_blocks + pack.group - 1) / pack.group;
  pack.chunk = std::max(1, 512 / p);  // 512 / p blocks = 4 KiB of doubled input
  const int64_t slots = pack.groups * pack.group * pack.col_blocks;
  pack.values.Resize(static_cast<std::size_t>(slots * p));  // zeroed: padding rows stay 0
  pack.offsets.Resize(static_cast<std::size_t>(slots));
  pack.ForEachBlock([&](int64_t slot, int64_t I, int64_t J) {
    pack.offsets[slot] = static_cast<uint8_t>(w.offset(I, J));
    for (int e = 0; e < p; ++e) pack.values[pack.ValueIndex(slot, e)] = w.block(I, J)[e];
  });
  return pack;
}

PermDiagMatrix PermDiagRowPack::Unpack() const {
  if (!chunked)
    return PermDiagMatrix::FromParts(rows, cols, p, {values.data(), values.size()}, {offsets16.data(), offsets16.size()});
  std::vector<float> v(static_cast<std::size_t>(row_blocks * col_blocks * p));
  std::vector<uint16_t> k(static_cast<std::size_t>(row_blocks * col_blocks));
  ForEachBlock([&](int64_t slot, int64_t I, int64_t J) {
    k[I * col_blocks + J] = offsets[slot];
    for (int e = 0; e < p; ++e) v[(I * col_blocks + J) * p + e] = values[ValueIndex(slot, e)];
  });
  return PermDiagMatrix::FromParts(rows, cols, p, v, k);
}

PermDiagLanesPack PermDiagLanesPack::Build(const PermDiagMatrix& w) {
  PermDiagLanesPack pk;
  TakeGeometry(w, pk);
  const int64_t samples = simd::LanesRowSamples() > 0 ? simd::LanesRowSamples() : 64;
  pk.chunk_rows = ChunkRows(pk.p, samples);
  pk.chunk_cols = ChunkCols(pk.p, samples);
  pk.values.Resize(static_cast<std::size_t>(pk.row_blocks * pk.col_blocks * pk.p));
  pk.offsets.Resize(static_cast<std::size_t>(pk.row_blocks * pk.col_blocks));
  for (int64_t I = 0; I < pk.row_blocks; ++I)
    for (int64_t J = 0; J < pk.col_blocks; ++J) {
      const int64_t at = pk.BlockStart(I, J);
      std::memcpy(pk.values.data() + at, w.block(I, J), sizeof(float) * pk.p);
      pk.offsets[static_cast<std::size_t>(at / pk.p)] = static_cast<uint16_t>(w.offset(I, J));
    }
  return pk;
}

PermDiagMatrix PermDiagLanesPack::Unpack() const {
  std::vector<float> v(values.size());
  std::vector<uint16_t> k(offsets.size());
  for (int64_t I = 0; I < row_blocks; ++I)
    for (int64_t J = 0; J < col_blocks; ++J) {
      const int64_t at = BlockStart(I, J);
      std::memcpy(v.data() + (I * col_blocks + J) * p, values.data() + at, sizeof(float) * p);
      k[static_cast<std::size_t>(I * col_blocks + J)] = offsets[static_cast<std::size_t>(at / p)];
    }
  return PermDiagMatrix::FromParts(rows, cols, p, v, k);
}

void PermDiagMatMulRows(const PermDiagLanesPack& w, std::span<const float> x, int64_t batch,
                        std::span<const float> bias, std::span<float> y, int threads) {
  const char* op = "PermDiagMatMulRows (lanes pack)";
  PERMDNN_CHECK(batch >= 1, "{}: batch must be >= 1, got {}", op, batch);
  CheckSize(op, "X (batch x cols)", x.size(), w.cols * batch);
  CheckSize(op, "Y (batch x rows)", y.size(), w.rows * batch);
  CheckBias(op, bias, w.rows);
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagMatMulRows))
    ref::MatMulRowsLanes(w, x.data(), batch, b, y.data());
  else
    simd::MatMulRowsLanes(w, x.data(), batch, b, y.data(), threads);
}

bool PermDiagUsesLanesPack(int p, int64_t rows, int64_t cols, int64_t batch) {
  // (A prefix: a row the preferences table moves to another target is
  // named with that target appended.)
  return SelectedKernel({KernelOp::kPermDiagMatMulRows, p, rows, cols, batch, false})
             .starts_with("permdiag.matmul_rows.lanes");
}

void PermDiagMatVec(const PermDiagRowPack& w, std::span<const float> x, std::span<const float> bias,
                    std::span<float> y, int threads) {
  const char* op = "PermDiagMatVec (row pack)";
  CheckSize(op, "x", x.size(), w.cols);
  CheckSize(op, "y", y.size(), w.rows);
  CheckBias(op, bias, w.rows);
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagMatVecPacked))
    ref::MatVecPacked(w, x.data(), b, y.data());
  else
    simd::MatVecPacked(w, x.data(), b, y.data(), threads);
}

void PermDiagMatVec(const PermDiagMatrix& w, std::span<const float> x, std::span<const float> bias,
                    std::span<float> y, int threads) {
  const char* op = "PermDiagMatVec";
  CheckSize(op, "x", x.size(), w.cols());
  CheckSize(op, "y", y.size(), w.rows());
  CheckBias(op, bias, w.rows());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagMatVec))
    ref::MatVec(w.view(), x.data(), b, y.data());
  else
    simd::MatVec(w.view(), x.data(), b, y.data(), threads);
}

void PermDiagMatMul(const PermDiagMatrix& w, std::span<const float> x, int64_t batch,
                    std::span<const float> bias, std::span<float> y, int threads) {
  const char* op = "PermDiagMatMul (feature-major)";
  PERMDNN_CHECK(batch >= 1, "{}: batch must be >= 1, got {}", op, batch);
  CheckSize(op, "X (cols x batch)", x.size(), w.cols() * batch);
  CheckSize(op, "Y (rows x batch)", y.size(), w.rows() * batch);
  CheckBias(op, bias, w.rows());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagMatMul))
    ref::MatMul(w.view(), x.data(), batch, b, y.data());
  else
    simd::MatMul(w.view(), x.data(), batch, b, y.data(), threads);
}

void PermDiagMatMulRows(const PermDiagMatrix& w, std::span<const float> x, int64_t batch,
                        std::span<const float> bias, std::span<float> y, int threads) {
  const char* op = "PermDiagMatMulRows";
  PERMDNN_CHECK(batch >= 1, "{}: batch must be >= 1, got {}", op, batch);
  CheckSize(op, "X (batch x cols)", x.size(), w.cols() * batch);
  CheckSize(op, "Y (batch x rows)", y.size(), w.rows() * batch);
  CheckBias(op, bias, w.rows());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagMatMulRows))
    ref::MatMulRows(w.view(), x.data(), batch, b, y.data());
  else
    simd::MatMulRows(w.view(), x.data(), batch, b, y.data(), threads);
}

void PermDiagMatVecT(const PermDiagMatrix& w, std::span<const float> g, std::span<float> x,
                     int threads) {
  const char* op = "PermDiagMatVecT";
  CheckSize(op, "g", g.size(), w.rows());
  CheckSize(op, "x", x.size(), w.cols());
  if (detail::UseReference(KernelOp::kPermDiagMatVecT))
    ref::MatVecT(w.view(), g.data(), x.data());
  else
    simd::MatVecT(w.view(), g.data(), x.data(), threads);
}

void PermDiagMatMulT(const PermDiagMatrix& w, std::span<const float> g, int64_t batch,
                     std::span<float> x, int threads) {
  const char* op = "PermDiagMatMulT";
  PERMDNN_CHECK(batch >= 1, "{}: batch must be >= 1, got {}", op, batch);
  CheckSize(op, "G (rows x batch)", g.size(), w.rows() * batch);
  CheckSize(op, "X (cols x batch)", x.size(), w.cols() * batch);
  if (detail::UseReference(KernelOp::kPermDiagMatMulT))
    ref::MatMulT(w.view(), g.data(), batch, x.data());
  else
    simd::MatMulT(w.view(), g.data(), batch, x.data(), threads);
}

void PermDiagMatVecSparseInput(const PermDiagColumnPack& w, std::span<const float> x,
                               std::span<const float> bias, std::span<float> y, int threads) {
  const char* op = "PermDiagMatVecSparseInput";
  CheckSize(op, "x", x.size(), w.cols);
  CheckSize(op, "y", y.size(), w.rows);
  CheckBias(op, bias, w.rows);
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagMatVecSparseInput))
    ref::MatVecSparseInput(w, x.data(), b, y.data());
  else
    simd::MatVecSparseInput(w, x.data(), b, y.data(), threads);
}

namespace {

// Median seconds of one call of fn, over runs of at least `slice` seconds
// of the calling thread's CPU time (wall clock when fn runs on several
// threads: their CPU time is not its latency).
template <class F>
double MedianSeconds(F&& fn, double slice, bool thread_time) {
  auto now_s = [&] {
    return thread_time ? ThreadCpuMs() * 1e-3
                       : std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  fn();  // warm-up: caches, scratch buffers
  std::vector<double> t;
  for (int round = 0; round < 5; ++round) {
    int64_t calls = 0;
    const double t0 = now_s();
    double s = 0;
    do {
      fn();
      ++calls;
      s = now_s() - t0;
    } while (s < slice);
    t.push_back(s / static_cast<double>(calls));
  }
  std::nth_element(t.begin(), t.begin() + 2, t.end());
  return t[2];
}

}  // namespace

double MeasureSkipCrossover(const std::function<void(std::span<const float>)>& dense,
                            const std::function<void(std::span<const float>)>& skipping, int64_t cols,
                            int threads, double min_seconds) {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> value(0.5f, 1.5f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  auto input = [&](double density) {
    std::vector<float> x(static_cast<std::size_t>(cols));
    for (float& v : x) v = coin(rng) < density ? value(rng) : 0.0f;
    return x;
  };
  const std::vector<float> full = input(1.0), quarter = input(0.25);
  const double slice = min_seconds / 8;
  const bool thread_time = threads == 1;
  const double t_dense = MedianSeconds([&] { dense(full); }, slice, thread_time);
  const double at1 = MedianSeconds([&] { skipping(full); }, slice, thread_time);
  const double atq = MedianSeconds([&] { skipping(quarter); }, slice, thread_time);
  // t(δ) = atq + (δ − 1/4)·slope; t(δ*) = t_dense.
  const double slope = (at1 - atq) / 0.75;
  if (slope <= 0) return at1 < t_dense ? 1.0 : 0.0;
  return std::clamp(0.25 + (t_dense - atq) / slope, 0.0, 1.0);
}

double MeasureSkipCrossover(const PermDiagRowPack& rows, const PermDiagColumnPack& columns, int threads,
                            double min_seconds) {
  PERMDNN_CHECK(rows.rows == columns.rows && rows.cols == columns.cols && rows.p == columns.p,
                "MeasureSkipCrossover: the row pack ({}x{}, p={}) and the column pack ({}x{}, p={}) differ", rows.rows,
                rows.cols, rows.p, columns.rows, columns.cols, columns.p);
  std::vector<float> y(static_cast<std::size_t>(rows.rows));
  return MeasureSkipCrossover([&](std::span<const float> x) { PermDiagMatVec(rows, x, {}, y, threads); },
                              [&](std::span<const float> x) { PermDiagMatVecSparseInput(columns, x, {}, y, threads); },
                              rows.cols, threads, min_seconds);
}

void PermDiagMatVecI16Acc(const PermDiagMatrixI16& w, std::span<const int16_t> x,
                          std::span<int64_t> acc, int threads) {
  const char* op = "PermDiagMatVecI16";
  CheckSize(op, "x", x.size(), w.cols());
  CheckSize(op, "accumulators", acc.size(), w.rows());
  if (detail::UseReference(KernelOp::kPermDiagMatVecI16))
    ref::MatVecI16Acc(w.view(), x.data(), acc.data());
  else
    simd::MatVecI16Acc(w.view(), x.data(), acc.data(), threads);
}

void PermDiagMatVecI16(const PermDiagMatrixI16& w, std::span<const int16_t> x,
                       std::span<const int64_t> bias, int shift, std::span<int16_t> y,
                       int threads) {
  const char* op = "PermDiagMatVecI16";
  CheckSize(op, "y", y.size(), w.rows());
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == w.rows(),
                "{}: bias has {} entries, expected 0 or {} (rows)", op, bias.size(), w.rows());
  AlignedBuffer<int64_t> acc(static_cast<std::size_t>(w.rows()));
  PermDiagMatVecI16Acc(w, x, acc.span(), threads);
  for (int64_t r = 0; r < w.rows(); ++r)
    y[r] = RequantizeShift<int16_t>(acc[r] + (bias.empty() ? 0 : bias[r]), shift);
}

}  // namespace permdnn::kernels
