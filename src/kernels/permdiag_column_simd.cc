// Shared-offset permuted-diagonal products (permdiag_column.h): Highway
// SIMD kernels, OpenBLAS grouped GEMMs, the public entry points and this
// file's rows of the kernel table.
//
// Layout (permdiag_column.h): G_r in row tiles of 128 rows, each tile
// column by column (values[r][t][J][0..h)), rows padded to a multiple of 16
// floats, so every tile column starts on a 64-byte boundary and is a whole
// number of vectors on SSE4 / AVX2 / AVX-512 (zero past row_blocks). The
// outputs are produced residue-major, yres[r][I] = y[I·p + r] (scratch of
// p·mb_pad floats), and written to y once at the end (m strided stores).
// Reads stay inside values, x and the scratch lists (prefetches may name
// addresses inside values only).
//
// Both batch-1 products are one loop over a list of (column J, input
// value) pairs per residue r: all nb columns with x_r[J] = x[J·p + (r +
// k_J) mod p] for the dense-input product, only the nonzero inputs (found
// in one branch-free pass over x, bucketed by r = (d − k_J) mod p) for the
// zero-skipping one. Per row tile, a register tile of up to 8 vectors of
// yres[r] (128 rows on AVX-512, 64 on AVX2) stays in registers while the
// list is walked: per entry one broadcast and one load + FMA per vector (1
// load per FMA; the weights' bandwidth is the limit, not the load ports).
// The dense-input walk reads each tile as one contiguous run; the skipping
// walk reads one contiguous h-float piece per nonzero input (512 bytes at
// h = 128), i.e. the AXPY of that input over the tile's rows with the
// accumulators in registers. Measured on the earlier column-major layout
// (values[r][J][mb_pad], Zen 5 AVX-512, loaded machine): a whole-column
// AXPY into yres in L1 (2 loads + 1 store per FMA) was slower for skipping
// (VGG-6 35%: 2.0 ms, 1.5 ms with a 4-column prefetch, vs 0.92 ms for
// register tiles) and the register tiles over whole columns were strided
// (VGG-6 dense input 3.6-4.2 ms vs 2.9 ms for general permdiag), which the
// row tiles remove.
// Batched (matmul_rows.sgemm): per r the permuted inputs X_r [B][nb] are
// gathered (B·n scalar loads, 1/(m/p) of the multiply-adds) and per row
// tile Z_r = X_r · tile (row-major [B][nb] × [nb][h], OpenBLAS sgemm), then
// scattered to Y[b][I·p + r] with the bias.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/permdiag_column_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/cache_control.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include <cblas.h>

#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag_column.h"
#include "src/kernels/table_internal.h"

#ifndef PERMDNN_KERNELS_PERMDIAG_COLUMN_ONCE
#define PERMDNN_KERNELS_PERMDIAG_COLUMN_ONCE
namespace permdnn::kernels::detail {
// The per-residue lists the batch-1 kernels walk. Dense input: cols ==
// nullptr, xs[r·nb + J] = x_r[J], counts all nb. Sparse input: cols[r·nb +
// e] = J and xs[r·nb + e] = x_j of the e-th nonzero input of residue r.
struct ColumnLists {
  const int32_t* cols = nullptr;
  const float* xs = nullptr;
  const int64_t* counts = nullptr;
};
using ColumnGroupsFn = void (*)(const PermDiagColumnWeights& w, const ColumnLists& lists, float* yres, int64_t r0,
                                int64_t r1);
}  // namespace permdnn::kernels::detail
#endif

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using detail::ColumnGroupsFn;
using detail::ColumnLists;
using detail::Row;

// Helpers with internal linkage: the names (MatVecRows, Scratch, ...) also
// exist in permdiag_simd.cc's per-target namespace.
namespace {

// One register tile of T vectors at rows [s, s + T·N) of one row tile of
// G_r (column stride h floats), over the list of residue r; written to yr
// (the tile's slice of yres[r]). kIndexed: column J = cols[e], else e.
// kAhead > 0: the slice of the column kAhead entries ahead is prefetched
// (a skipped column is a jump the hardware prefetcher cannot follow).
template <int T, bool kIndexed, int kAhead>
HWY_INLINE void Tile(const float* HWY_RESTRICT base, int64_t h, const int32_t* HWY_RESTRICT cols,
                     const float* HWY_RESTRICT xs, int64_t count, int64_t s, float* HWY_RESTRICT yr) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  using V = decltype(hn::Zero(d));
  V acc[T];
  for (int t = 0; t < T; ++t) acc[t] = hn::Zero(d);
  const float* w = base + s;
  for (int64_t e = 0; e < count; ++e) {
    const float* col = w + (kIndexed ? static_cast<int64_t>(cols[e]) : e) * h;
    if (kAhead > 0 && e + kAhead < count) {
      const float* next = w + (kIndexed ? static_cast<int64_t>(cols[e + kAhead]) : e + kAhead) * h;
      for (int64_t i = 0; i < T * N; i += 16) hwy::Prefetch(next + i);  // 64-byte lines
    }
    const V xv = hn::Set(d, xs[e]);
    for (int t = 0; t < T; ++t) acc[t] = hn::MulAdd(hn::LoadU(d, col + t * N), xv, acc[t]);
  }
  for (int t = 0; t < T; ++t) hn::StoreU(acc[t], d, yr + s + t * N);
}

// Every register tile of one row tile (h rows: 8 vectors on AVX-512, two
// passes of 8 on AVX2).
template <bool kIndexed, int kAhead>
void RowTile(const float* base, int64_t h, const int32_t* cols, const float* xs, int64_t count, float* yr) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t s = 0; s < h;) {
    const int64_t v = std::min<int64_t>(8, (h - s) / N);
    switch (v) {
      case 8: Tile<8, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
      case 7: Tile<7, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
      case 6: Tile<6, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
      case 5: Tile<5, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
      case 4: Tile<4, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
      case 3: Tile<3, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
      case 2: Tile<2, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
      default: Tile<1, kIndexed, kAhead>(base, h, cols, xs, count, s, yr); break;
    }
    s += v * N;
  }
}

template <int kAhead>
void Groups(const PermDiagColumnWeights& w, const ColumnLists& lists, float* yres, int64_t r0, int64_t r1) {
  const int64_t nb = w.col_blocks;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xs = lists.xs + r * nb;
    const int64_t count = lists.counts[r];
    for (int64_t t = 0; t < w.tiles; ++t) {
      float* yr = yres + r * w.mb_pad + t * PermDiagColumnWeights::kTileRows;
      if (lists.cols == nullptr) RowTile<false, kAhead>(w.Tile(r, t), w.TileHeight(t), nullptr, xs, count, yr);
      else RowTile<true, kAhead>(w.Tile(r, t), w.TileHeight(t), lists.cols + r * nb, xs, count, yr);
    }
  }
}

std::span<const Row<ColumnGroupsFn>> MatVecRows() {
  static const std::vector<Row<ColumnGroupsFn>> rows = {
      {"permdiag_column.matvec.tiles", detail::AdmitsAll, Groups<0>},
  };
  return rows;
}
std::span<const Row<ColumnGroupsFn>> SparseInputRows() {
  static const std::vector<Row<ColumnGroupsFn>> rows = {
      {"permdiag_column.sparse_input.tiles", detail::AdmitsAll, Groups<0>},
      {"permdiag_column.sparse_input.tiles_prefetch4", detail::AdmitsAll, Groups<4>},
  };
  return rows;
}

// The grouped GEMM is OpenBLAS on every target: one row, named for the
// table (the Highway target only changes which copy of it is listed).
using MatMulRowsFn = void (*)(const PermDiagColumnWeights&, const float*, int64_t, const float*, float*, int);
void GroupedSgemm(const PermDiagColumnWeights& w, const float* x, int64_t batch, const float* bias, float* y,
                  int threads) {
  const int64_t p = w.p, nb = w.col_blocks, mb_pad = w.mb_pad;
  ParallelFor(p, threads, [&](int64_t r0, int64_t r1, int) {
    std::vector<float> xr(static_cast<std::size_t>(batch * nb)), z(static_cast<std::size_t>(batch * mb_pad));
    for (int64_t r = r0; r < r1; ++r) {
      // Sample by sample: each row of X read forward, each row of X_r written in order.
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t J = 0; J < nb; ++J) {
          const int64_t j = w.InputOf(r, J);
          xr[b * nb + J] = j < w.cols ? x[b * w.cols + j] : 0.0f;
        }
      for (int64_t t = 0; t < w.tiles; ++t) {  // Z[:, tile t] = X_r · (tile t of G_r, [nb][h])
        const int h = static_cast<int>(w.TileHeight(t));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(batch), h, static_cast<int>(nb),
                    1.0f, xr.data(), static_cast<int>(nb), w.Tile(r, t), h, 0.0f,
                    z.data() + t * PermDiagColumnWeights::kTileRows, static_cast<int>(mb_pad));
      }
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t I = 0; I < w.row_blocks && I * p + r < w.rows; ++I)
          y[b * w.rows + I * p + r] = z[b * mb_pad + I] + (bias ? bias[I * p + r] : 0.0f);
    }
  });
}
std::span<const Row<MatMulRowsFn>> MatMulRowsRows() {
  static const std::vector<Row<MatMulRowsFn>> rows = {
      {"permdiag_column.matmul_rows.sgemm", detail::AdmitsAll, GroupedSgemm},
  };
  return rows;
}

// yres -> y with the bias.
void Unpermute(const PermDiagColumnWeights& w, const float* yres, const float* bias, float* y) {
  const int64_t p = w.p;
  for (int64_t r = 0; r < p; ++r)
    for (int64_t I = 0; I < w.row_blocks && I * p + r < w.rows; ++I)
      y[I * p + r] = yres[r * w.mb_pad + I] + (bias ? bias[I * p + r] : 0.0f);
}

float* Scratch(AlignedBuffer<float>& b, std::size_t n) {
  if (b.size() < n) b.Resize(n);
  return b.data();
}

}  // namespace

void ColumnMatVecImpl(const PermDiagColumnWeights& w, const float* x, const float* bias, float* y, int threads) {
  static thread_local AlignedBuffer<float> xs_buf, y_buf;
  static thread_local std::vector<int64_t> counts;
  const int64_t p = w.p, nb = w.col_blocks;
  const ColumnGroupsFn fn =
      detail::Pick(MatVecRows(), {KernelOp::kPermDiagColumnMatVec, w.p, w.rows, w.cols, 1, false})->fn;
  float* xs = Scratch(xs_buf, static_cast<std::size_t>(p * nb));
  float* yres = Scratch(y_buf, static_cast<std::size_t>(p * w.mb_pad));
  counts.assign(static_cast<std::size_t>(p), nb);
  for (int64_t r = 0; r < p; ++r)
    for (int64_t J = 0; J < nb; ++J) {
      const int64_t j = w.InputOf(r, J);
      xs[r * nb + J] = j < w.cols ? x[j] : 0.0f;
    }
  const ColumnLists lists{nullptr, xs, counts.data()};
  ParallelFor(p, threads, [&](int64_t r0, int64_t r1, int) { fn(w, lists, yres, r0, r1); });
  Unpermute(w, yres, bias, y);
}

void ColumnMatVecSparseInputImpl(const PermDiagColumnWeights& w, const float* x, const float* bias, float* y,
                                 int threads) {
  static thread_local AlignedBuffer<float> xs_buf, y_buf;
  static thread_local std::vector<int32_t> cols;
  static thread_local std::vector<int64_t> counts;
  const int64_t p = w.p, nb = w.col_blocks;
  const ColumnGroupsFn fn =
      detail::Pick(SparseInputRows(), {KernelOp::kPermDiagColumnSparseInput, w.p, w.rows, w.cols, 1, false})->fn;
  float* xs = Scratch(xs_buf, static_cast<std::size_t>(p * nb));
  float* yres = Scratch(y_buf, static_cast<std::size_t>(p * w.mb_pad));
  cols.resize(static_cast<std::size_t>(p * nb));
  counts.assign(static_cast<std::size_t>(p), 0);
  // Leading-nonzero detection, bucketed by residue, branch-free: input
  // J·p + d reaches residue (d − k_J) mod p, a bijection of d for each J,
  // so bucket r holds at most one entry per J and counts[r] <= J here.
  const uint16_t* k = w.offsets.data();
  for (int64_t J = 0; J < nb; ++J) {
    const int64_t dn = std::min<int64_t>(p, w.cols - J * p);
    for (int64_t dd = 0; dd < dn; ++dd) {
      const float v = x[J * p + dd];
      int64_t r = dd - k[J];
      r += r < 0 ? p : 0;
      const int64_t at = r * nb + counts[r];
      cols[at] = static_cast<int32_t>(J);
      xs[at] = v;
      counts[r] += v != 0.0f;
    }
  }
  const ColumnLists lists{cols.data(), xs, counts.data()};
  ParallelFor(p, threads, [&](int64_t r0, int64_t r1, int) { fn(w, lists, yres, r0, r1); });
  Unpermute(w, yres, bias, y);
}

void ColumnMatMulRowsImpl(const PermDiagColumnWeights& w, const float* x, int64_t batch, const float* bias,
                          float* y, int threads) {
  const MatMulRowsFn fn =
      detail::Pick(MatMulRowsRows(), {KernelOp::kPermDiagColumnMatMulRows, w.p, w.rows, w.cols, batch, false})->fn;
  fn(w, x, batch, bias, y, threads);
}

void PermDiagColumnTableImpl(std::vector<KernelRow>* out) {
  detail::Describe(MatVecRows(), KernelOp::kPermDiagColumnMatVec, out);
  detail::Describe(SparseInputRows(), KernelOp::kPermDiagColumnSparseInput, out);
  detail::Describe(MatMulRowsRows(), KernelOp::kPermDiagColumnMatMulRows, out);
}
const char* PermDiagColumnSelectImpl(const KernelProblem& q) {
  switch (q.op) {
    case KernelOp::kPermDiagColumnMatVec: return detail::Pick(MatVecRows(), q)->name;
    case KernelOp::kPermDiagColumnSparseInput: return detail::Pick(SparseInputRows(), q)->name;
    case KernelOp::kPermDiagColumnMatMulRows: return detail::Pick(MatMulRowsRows(), q)->name;
    default: return nullptr;
  }
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(ColumnMatVecImpl);
HWY_EXPORT(ColumnMatVecSparseInputImpl);
HWY_EXPORT(ColumnMatMulRowsImpl);
PERMDNN_EXPORT_KERNEL_TABLE(PermDiagColumn, PermDiagColumnTableImpl, PermDiagColumnSelectImpl)

namespace {
void Check(const char* op, const PermDiagColumnWeights& w, std::size_t x_size, int64_t batch, std::span<const float> bias,
           std::size_t y_size) {
  PERMDNN_CHECK(batch >= 1, "{}: batch must be >= 1, got {}", op, batch);
  PERMDNN_CHECK(static_cast<int64_t>(x_size) == w.cols * batch, "{}: x has {} entries, expected {} (batch {} x cols {})",
                op, x_size, w.cols * batch, batch, w.cols);
  PERMDNN_CHECK(static_cast<int64_t>(y_size) == w.rows * batch, "{}: y has {} entries, expected {} (batch {} x rows {})",
                op, y_size, w.rows * batch, batch, w.rows);
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == w.rows,
                "{}: bias has {} entries, expected 0 or {} (rows)", op, bias.size(), w.rows);
}
}  // namespace

void PermDiagColumnMatVec(const PermDiagColumnWeights& w, std::span<const float> x, std::span<const float> bias,
                          std::span<float> y, int threads) {
  Check("PermDiagColumnMatVec", w, x.size(), 1, bias, y.size());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagColumnMatVec)) return ref::ColumnMatVec(w, x.data(), b, y.data());
  HWY_DYNAMIC_DISPATCH(ColumnMatVecImpl)(w, x.data(), b, y.data(), threads);
}

void PermDiagColumnMatVecSparseInput(const PermDiagColumnWeights& w, std::span<const float> x,
                                     std::span<const float> bias, std::span<float> y, int threads) {
  Check("PermDiagColumnMatVecSparseInput", w, x.size(), 1, bias, y.size());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagColumnSparseInput)) return ref::ColumnMatVec(w, x.data(), b, y.data());
  HWY_DYNAMIC_DISPATCH(ColumnMatVecSparseInputImpl)(w, x.data(), b, y.data(), threads);
}

void PermDiagColumnMatMulRows(const PermDiagColumnWeights& w, std::span<const float> x, int64_t batch,
                              std::span<const float> bias, std::span<float> y, int threads) {
  Check("PermDiagColumnMatMulRows", w, x.size(), batch, bias, y.size());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kPermDiagColumnMatMulRows))
    return ref::ColumnMatMulRows(w, x.data(), batch, b, y.data());
  HWY_DYNAMIC_DISPATCH(ColumnMatMulRowsImpl)(w, x.data(), batch, b, y.data(), threads);
}

}  // namespace permdnn::kernels
#endif
