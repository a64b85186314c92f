// SIMD permuted-diagonal kernels (Highway, dynamic dispatch).
//
// Data layout (see permdiag_matrix.h): values[I][J][c], offsets[I][J].
//
// The rotation trick. Row c of block (I, J) reads x[J·p + (c + k) mod p], a
// rotation of the block's slice x_J. Writing x once into a "doubled" buffer
//     xx[J·2p + t] = x[J·p + (t mod p)],   t in [0, 2p)
// turns every rotated slice into the contiguous run xx[J·2p + k .. + p), so a
// block is one unaligned load and one FMA per vector of output rows: no
// per-element modulo, no gather. Building xx costs 2n stores per call.
//   * p a multiple of the lane count N: p/N vectors per block.
//   * p < N and N % p == 0 (p = 2, 4 on AVX2; 2..8 on AVX-512): G = N/p
//     blocks share one vector; the x operand is G half/quarter loads joined
//     with Combine, and the G partial sums are folded once per row block.
//   * anything else (p = 3, 5, 7, ...): full vectors while they fit, scalar
//     for the remainder of each block, still without modulo.
// The transposed product uses the mirror image: a doubled accumulator
// acc2[J·2p + k + c] += q_IJ[c]·g[I·p + c], folded as acc2[t] + acc2[t + p].
//
// The batch-major product (MatMulRows, X is B × cols as in the runtime and
// LibTorch) is register-blocked over sample tiles; see its section below.
// The feature-major batched products (X is cols × B): one weight is
// broadcast and multiplied into NV vectors of B samples; 2 FMA pipes × 4
// cycles latency want 8 independent accumulators, which B = 64 on AVX2
// (8 vectors) provides. Work is blocked so the rows of X touched by a
// J-chunk (~256 KiB) and the output tile (~128 KiB) stay in L2.
//
// Over-reads: none past any array end; xx and the padded output buffers are
// sized to whole blocks. Threads: row blocks for y = W·x, column blocks for
// Wᵀ·g, so every worker writes a disjoint slice.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/permdiag_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/permdiag.h"
#include "src/kernels/table_internal.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using View = PermDiagView<float>;
using detail::AdmitsAll;
using detail::Row;

// The target's float lane count (what the table's predicates compare p with).
int64_t LanesF() { return static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())); }

// Software prefetch distance for each of the interleaved weight streams of
// RowsMultiple and RowsPacked: 1 KiB ahead per stream at p <= 4, 4 KiB in
// all with four streams, which covered the DRAM latency (~100 ns) at the
// ~15 GB/s one Zen 3 core streamed (2 KiB per stream measured slower
// there); 4 KiB per stream at p >= 8, where each weight carries less work
// and the stream runs faster (Zen 5, 2026-12-06, alternating runs, one
// thread: AVX-512 Alex-6 p=8 0.40 vs 0.48-0.52 ms, VGG-6 p=16 0.56 vs
// 0.73-0.79 ms, VGG-6 p=8 1.64-1.76 vs 1.87-2.02 ms; AVX2 Alex-6 p=8 0.40 vs
// 0.50 ms, VGG-6 p=16 0.81 vs 0.87 ms; at p = 4 the longer distance was
// 5-13% slower on both targets, so p = 4 keeps 1 KiB).
constexpr int64_t StreamPrefetchFloats(int64_t p) { return p >= 8 ? 1024 : 256; }
// ...but only when a worker's weights are too big for L3: on L3-resident
// Alex-7 (8.4 MB at p=8) the software prefetches cost 5-10% against the
// hardware prefetcher alone (0.169 vs 0.187 ms, standalone harness, huge
// pages), while from DRAM they are neutral to 7-14% faster.
constexpr int64_t kStreamPrefetchMinBytes = int64_t{16} << 20;

// Whether row_blocks row blocks of one worker (each col_blocks blocks of p
// floats) are big enough for the software prefetch above to pay; the
// row-major kernels and the row pack's kernels ask the same question.
bool StreamPrefetchPays(int64_t row_blocks, int64_t col_blocks, int64_t p) {
  return row_blocks * col_blocks * p * static_cast<int64_t>(sizeof(float)) > kStreamPrefetchMinBytes;
}

// One cache line into L1 (kL2: into L2, prefetcht1 on x86); nothing where
// HWY_DISABLE_CACHE_CONTROL is set, as hwy::Prefetch. Every helper that
// only prefetches is HWY_INLINE (forced): GCC 12 takes a function whose only
// effects are prefetches for pure and drops the calls to it that were not
// inlined first, prefetches and all. That is how the batched tile row's, the
// lanes row's and the batch-1 matrix rows' prefetches had vanished from the
// binary (found at stop 54, objdump: no prefetch instruction in RowsBatched,
// LanesChunk, RowsMultiple or RowsPacked).
template <bool kL2 = false>
HWY_INLINE void PrefetchLine(const void* line) {
#if !defined(HWY_DISABLE_CACHE_CONTROL)
  if constexpr (kL2) __builtin_prefetch(line, 0, 2);
  else hwy::Prefetch(line);
#else
  (void)line;
#endif
}

// The weight and offset streams of kR consecutive row blocks from I, read
// side by side by the batch-1 kernels (RowsMultiple, RowsPacked).
template <int kR>
struct RowStreams {
  const float* q[kR];
  const uint16_t* k[kR];
  RowStreams(const View& w, int64_t I, int64_t p) {
    for (int r = 0; r < kR; ++r) {
      q[r] = w.values + (I + r) * w.col_blocks * p;
      k[r] = w.offsets + (I + r) * w.col_blocks;
    }
  }
  // Prefetch for a step of `blocks` blocks from block J (blocks divides 32):
  // every line of each weight stream StreamPrefetchFloats(p) ahead, and, once
  // per 32 blocks, each offset stream's line 64 entries ahead (the offsets
  // are kR more streams; prefetching them too measured 7-14% faster on the
  // DRAM-bound 4096x25088 p=8).
  HWY_INLINE void Prefetch(int64_t J, int64_t blocks, int64_t p) const {
    for (int r = 0; r < kR; ++r)
      for (int64_t pf = 0; pf < blocks * p; pf += 16) PrefetchLine(q[r] + J * p + StreamPrefetchFloats(p) + pf);
    if (J % 32 < blocks)
      for (int r = 0; r < kR; ++r) PrefetchLine(k[r] + J + 64);
  }
};

// Per-thread scratch, grown on demand and reused across calls.
float* Scratch(AlignedBuffer<float>& buf, std::size_t n) {
  if (buf.size() < n) buf.Resize(n);
  return buf.data();
}

// xx for the cols inputs x of col_blocks blocks of p (the rotation trick).
void BuildDoubled(int p, int64_t col_blocks, int64_t cols, const float* x, float* xx) {
  for (int64_t J = 0; J < col_blocks; ++J) {
    float* dst = xx + J * 2 * p;
    const int64_t base = J * p;
    const int valid = static_cast<int>(std::min<int64_t>(p, cols - base));
    std::memcpy(dst, x + base, sizeof(float) * valid);
    for (int t = valid; t < p; ++t) dst[t] = 0.0f;  // the last block's padding
    std::memcpy(dst + p, dst, sizeof(float) * p);
  }
}

// ---- y = W·x, case A: p = V·N (V vectors per block) ------------------------
// R row blocks are streamed side by side, each with U accumulators per
// vector, R·U·V = 8 FMA chains. One weight stream per row block, as before
// this change, left the load pipeline waiting on L3/DRAM: on Zen 3 with
// p = 8, four interleaved streams measured 1.5-2x faster on 4096x4096
// (L3-resident) and 1.2-1.6x on 4096x25088 (DRAM) than one stream with
// the same prefetch (tools: src/kernels/README.md). Each stream is
// prefetched StreamPrefetchFloats(p) ahead, one request per cache line.
template <int V>
void RowsMultiple(const View& w, const float* xx, int64_t I0, int64_t I1, float* ypad) {
  constexpr int R = V >= 8 ? 1 : V >= 4 ? 2 : 4;
  constexpr int U = V * R >= 8 ? 1 : 8 / (V * R);
  const hn::ScalableTag<float> d;
#if HWY_HAVE_SCALABLE
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t p = w.p;
#else
  // p == V·N is a compile-time constant here (the caller checked it), so the
  // block address arithmetic folds.
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(decltype(d)()));
  constexpr int64_t p = V * N;
#endif
  const int64_t nb = w.col_blocks;
  const bool prefetch = StreamPrefetchPays(I1 - I0, w.col_blocks, w.p);
  auto run = [&](auto r_tag, int64_t I) {
    constexpr int kR = decltype(r_tag)::value;
    const RowStreams<kR> streams(w, I, p);
    const auto& q = streams.q;
    const auto& k = streams.k;
    hn::Vec<decltype(d)> acc[kR][U][V];
    for (int r = 0; r < kR; ++r)
      for (int u = 0; u < U; ++u)
        for (int v = 0; v < V; ++v) acc[r][u][v] = hn::Zero(d);
    int64_t J = 0;
    for (; J + U <= nb; J += U) {
      if (prefetch) streams.Prefetch(J, U, p);
      for (int u = 0; u < U; ++u) {
        const float* xb = xx + (J + u) * 2 * p;
        for (int r = 0; r < kR; ++r) {
          const float* qb = q[r] + (J + u) * p;
          const float* xr = xb + k[r][J + u];
          for (int v = 0; v < V; ++v)
            acc[r][u][v] = hn::MulAdd(hn::LoadU(d, qb + v * N), hn::LoadU(d, xr + v * N), acc[r][u][v]);
        }
      }
    }
    for (; J < nb; ++J) {
      for (int r = 0; r < kR; ++r) {
        const float* qb = q[r] + J * p;
        const float* xr = xx + J * 2 * p + k[r][J];
        for (int v = 0; v < V; ++v)
          acc[r][0][v] = hn::MulAdd(hn::LoadU(d, qb + v * N), hn::LoadU(d, xr + v * N), acc[r][0][v]);
      }
    }
    for (int r = 0; r < kR; ++r)
      for (int v = 0; v < V; ++v) {
        auto sum = acc[r][0][v];
        for (int u = 1; u < U; ++u) sum = hn::Add(sum, acc[r][u][v]);
        hn::StoreU(sum, d, ypad + (I + r) * p + v * N);
      }
  };
  int64_t I = I0;
  for (; I + R <= I1; I += R) run(std::integral_constant<int, R>(), I);
  for (; I < I1; ++I) run(std::integral_constant<int, 1>(), I);
}

// p a multiple of N but with more than 8 vectors per block: 8 at a time.
void RowsMultipleWide(const View& w, const float* xx, int64_t I0, int64_t I1, float* ypad) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  for (int64_t I = I0; I < I1; ++I) {
    const float* q = w.values + I * nb * p;
    const uint16_t* k = w.offsets + I * nb;
    for (int64_t c0 = 0; c0 < p; c0 += 8 * N) {
      const int vecs = static_cast<int>(std::min<int64_t>(8, (p - c0) / N));
      hn::Vec<decltype(d)> acc[8];
      for (int v = 0; v < 8; ++v) acc[v] = hn::Zero(d);
      for (int64_t J = 0; J < nb; ++J) {
        const float* qb = q + J * p + c0;
        const float* xb = xx + J * 2 * p + k[J] + c0;
        for (int v = 0; v < vecs; ++v)
          acc[v] = hn::MulAdd(hn::LoadU(d, qb + v * N), hn::LoadU(d, xb + v * N), acc[v]);
      }
      for (int v = 0; v < vecs; ++v) hn::StoreU(acc[v], d, ypad + I * p + c0 + v * N);
    }
  }
}

#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR
// G = Lanes(D)/P slices of P floats joined into one vector, slice i0 in the
// lowest lanes; slice(i) is the address of slice i. Used for the rotated
// slices of G consecutive blocks of a row (RowsPacked) and of G row blocks
// of one row-pack step (PackedSplit).
template <int P, class D, class SliceAt>
HWY_INLINE hn::Vec<D> JoinSlices(D d, const SliceAt& slice, int64_t i0) {
  constexpr size_t kLanes = hn::MaxLanes(D());
  if constexpr (kLanes == P) {
    return hn::LoadU(d, slice(i0));
  } else {
    const hn::Half<D> dh;
    constexpr int64_t kHalf = static_cast<int64_t>(kLanes / 2 / P);
    return hn::Combine(d, JoinSlices<P>(dh, slice, i0 + kHalf), JoinSlices<P>(dh, slice, i0));
  }
}

// The rotated slices of blocks J, J+1, ... of one row block (offsets k).
template <int P, class D>
HWY_INLINE hn::Vec<D> LoadSlices(D d, const float* xx, const uint16_t* k, int64_t J) {
  return JoinSlices<P>(d, [xx, k](int64_t i) HWY_ATTR { return xx + i * 2 * P + k[i]; }, J);
}

// ---- y = W·x, case B: p < N, N % p == 0 (G blocks per vector) -------------
// As in case A, R = 4 row blocks are streamed side by side with U = 2
// vectors (2·G blocks) per stream and step: 8 FMA chains. One row block at a
// time (the earlier form) streamed VGG-6 p=4 from DRAM at ~11 GB/s against
// sgemv's ~17 GB/s once both had huge pages.
template <int P>
void RowsPacked(const View& w, const float* xx, int64_t I0, int64_t I1, float* ypad) {
  const hn::ScalableTag<float> d;
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(decltype(d)()));
  constexpr int64_t G = N / P;
  constexpr int U = 2;
  const int64_t nb = w.col_blocks;
  const bool prefetch = StreamPrefetchPays(I1 - I0, w.col_blocks, w.p);
  auto run = [&](auto r_tag, int64_t I) {
    constexpr int kR = decltype(r_tag)::value;
    const RowStreams<kR> streams(w, I, P);
    const auto& q = streams.q;
    const auto& k = streams.k;
    hn::Vec<decltype(d)> acc[kR][U];
    for (int r = 0; r < kR; ++r)
      for (int u = 0; u < U; ++u) acc[r][u] = hn::Zero(d);
    int64_t J = 0;
    for (; J + U * G <= nb; J += U * G) {
      if (prefetch) streams.Prefetch(J, U * G, P);
      for (int u = 0; u < U; ++u)
        for (int r = 0; r < kR; ++r)
          acc[r][u] = hn::MulAdd(hn::LoadU(d, q[r] + (J + u * G) * P), LoadSlices<P>(d, xx, k[r], J + u * G),
                                 acc[r][u]);
    }
    for (; J + G <= nb; J += G)
      for (int r = 0; r < kR; ++r)
        acc[r][0] = hn::MulAdd(hn::LoadU(d, q[r] + J * P), LoadSlices<P>(d, xx, k[r], J), acc[r][0]);
    HWY_ALIGN float lanes[N];
    for (int r = 0; r < kR; ++r) {
      hn::Store(hn::Add(acc[r][0], acc[r][1]), d, lanes);
      float y[P];
      for (int c = 0; c < P; ++c) {
        float s = 0;
        for (int64_t g = 0; g < G; ++g) s += lanes[g * P + c];
        y[c] = s;
      }
      for (int64_t Jr = J; Jr < nb; ++Jr) {  // fewer than G blocks left
        const float* xb = xx + Jr * 2 * P + k[r][Jr];
        for (int c = 0; c < P; ++c) y[c] += q[r][Jr * P + c] * xb[c];
      }
      for (int c = 0; c < P; ++c) ypad[(I + r) * P + c] = y[c];
    }
  };
  constexpr int R = 4;
  int64_t I = I0;
  for (; I + R <= I1; I += R) run(std::integral_constant<int, R>(), I);
  for (; I < I1; ++I) run(std::integral_constant<int, 1>(), I);
}
#endif

// ---- y = W·x, case C: any p --------------------------------------------------
void RowsGeneric(const View& w, const float* xx, int64_t I0, int64_t I1, float* ypad) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  const int64_t full = (p / N) * N;
  for (int64_t I = I0; I < I1; ++I) {
    const float* q = w.values + I * nb * p;
    const uint16_t* k = w.offsets + I * nb;
    float* y = ypad + I * p;
    for (int c = 0; c < p; ++c) y[c] = 0;
    for (int64_t c0 = 0; c0 < full; c0 += N) {
      auto acc = hn::Zero(d);
      for (int64_t J = 0; J < nb; ++J)
        acc = hn::MulAdd(hn::LoadU(d, q + J * p + c0), hn::LoadU(d, xx + J * 2 * p + k[J] + c0), acc);
      hn::StoreU(acc, d, y + c0);
    }
    for (int64_t J = 0; J < nb; ++J) {
      const float* qb = q + J * p;
      const float* xb = xx + J * 2 * p + k[J];
      for (int64_t c = full; c < p; ++c) y[c] += qb[c] * xb[c];
    }
  }
}

// ---- The rows of y = W·x (kernel table, table.h) ------------------------------
// Case A (multiple<V>: p = V·N, V in {1, 2, 4, 8}; multiple_wide: more
// vectors), case B (packed<P>: p < N, N % p == 0), case C (generic: any p).
// The predicates are disjoint but for generic, which admits everything.
using RowsFn = void (*)(const View&, const float*, int64_t, int64_t, float*);

template <int V>
bool AdmitsMultiple(const KernelProblem& q) {
  return q.p == V * LanesF();
}
bool AdmitsMultipleWide(const KernelProblem& q) {
  const int64_t N = LanesF(), v = q.p / N;
  return q.p % N == 0 && v != 1 && v != 2 && v != 4 && v != 8;
}
template <int P>
bool AdmitsP(const KernelProblem& q) {
  return q.p == P;
}
bool AdmitsHalfLanes(const KernelProblem& q) { return 2 * q.p == LanesF(); }
bool AdmitsQuarterLanes(const KernelProblem& q) { return 4 * q.p == LanesF(); }

std::span<const Row<RowsFn>> MatVecRows() {
  static const std::vector<Row<RowsFn>> rows = [] {
    std::vector<Row<RowsFn>> r = {
        {"permdiag.matvec.multiple<1>", AdmitsMultiple<1>, RowsMultiple<1>},
        {"permdiag.matvec.multiple<2>", AdmitsMultiple<2>, RowsMultiple<2>},
        {"permdiag.matvec.multiple<4>", AdmitsMultiple<4>, RowsMultiple<4>},
        {"permdiag.matvec.multiple<8>", AdmitsMultiple<8>, RowsMultiple<8>},
        {"permdiag.matvec.multiple_wide", AdmitsMultipleWide, RowsMultipleWide},
    };
#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR
    constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(hn::ScalableTag<float>()));
    if constexpr (N > 1) r.push_back({"permdiag.matvec.packed<1>", AdmitsP<1>, RowsPacked<1>});
    if constexpr (N > 2) r.push_back({"permdiag.matvec.packed<2>", AdmitsP<2>, RowsPacked<2>});
    if constexpr (N > 4) r.push_back({"permdiag.matvec.packed<4>", AdmitsP<4>, RowsPacked<4>});
    if constexpr (N > 8) r.push_back({"permdiag.matvec.packed<8>", AdmitsP<8>, RowsPacked<8>});
#endif
    r.push_back({"permdiag.matvec.generic", AdmitsAll, RowsGeneric});
    return r;
  }();
  return rows;
}

const Row<RowsFn>& MatVecRow(const View& w) {
  return *detail::Pick(MatVecRows(), {KernelOp::kPermDiagMatVec, w.p, w.rows, w.cols, 1, false});
}

void MatVecImpl(const View& w, const float* x, const float* bias, float* y, int threads) {
  static thread_local AlignedBuffer<float> xx_buf, y_buf;
  const int p = w.p;
  float* xx = Scratch(xx_buf, static_cast<std::size_t>(w.col_blocks * 2 * p));
  BuildDoubled(p, w.col_blocks, w.cols, x, xx);
  // Whole row blocks are written to ypad; only the first `rows` go to y.
  const bool direct = w.rows == w.padded_rows();
  float* ypad = direct ? y : Scratch(y_buf, static_cast<std::size_t>(w.padded_rows()));
  const RowsFn rows_fn = MatVecRow(w).fn;
  ParallelFor(w.row_blocks, threads, [&](int64_t I0, int64_t I1, int) {
    rows_fn(w, xx, I0, I1, ypad);
    const int64_t r0 = I0 * p, r1 = std::min(w.rows, I1 * p);
    if (bias)
      for (int64_t r = r0; r < r1; ++r) y[r] = ypad[r] + bias[r];
    else if (!direct)
      std::memcpy(y + r0, ypad + r0, sizeof(float) * (r1 - r0));
  });
}

// ---- y = W·x on the row pack ------------------------------------------------
// The pack (PermDiagRowPack in permdiag.h) stores, per chunk of 512/p column
// blocks, the groups of 64/p row blocks one after another, so a chunk's
// 4 KiB of doubled input stays in L1 while its weights stream past; the
// row-major kernels above re-read the whole doubled input (2n floats,
// 32 KiB at n = 4096) from L2 for every four row blocks. A group's 64 output
// rows are A = 64/N vectors of accumulators, carried through ypad between
// chunk sets. kPackStreams chunks are read side by side (the same group in
// each, so they share the accumulators). Medians of 6-8 alternating runs on
// 4096x4096 (one thread): one stream was 1.3-1.8x slower than several on
// Alex-6 p=8 (19 MB, at the edge of L3) and at p=4; four streams beat two
// at p=4 (0.74-0.76 vs 0.96-1.04 ms), two beat four at p=8 (0.16-0.17 vs
// 0.19-0.22 ms) and p=16 (0.075-0.079 vs 0.099-0.101 ms). More in
// src/kernels/README.md. Matrices too big for L3, too short for whole
// groups, or with p not dividing 64 keep the row-major layout
// (PermDiagRowPack::UsesChunks) and run MatVecImpl.
template <int64_t P>
constexpr int kPackStreams = P >= 8 ? 2 : 4;


// Drives the groups [g0, g1) of one worker over all chunks. For each step
// (one column block j of one chunk, the group's 64/p row blocks) it calls
// step(acc, q, k, xb) with the step's 64 weights q, its 64/p one-byte
// offsets k and the column block's doubled input xb; the S streams of a
// chunk set alternate over U accumulator sets, so A·U >= 8 FMA chains.
template <class D, int A, int64_t P, class Step>
HWY_INLINE void PackedDrive(D d, const PermDiagRowPack& w, const float* xx, int64_t g0, int64_t g1, float* ypad,
                            const Step& step) {
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int S = kPackStreams<P>;
  constexpr int U = A >= 8 ? 1 : 8 / A;
  constexpr int64_t R = 64 / P;
  const int64_t nc = w.chunks();
  // Each stream is prefetched StreamPrefetchFloats(P) ahead when the worker's
  // weights exceed kStreamPrefetchMinBytes. Chunked packs stop at 24 MiB,
  // so this is the 16-24 MiB band (Alex-6 p=8: 19 MB, one worker), where it
  // measured 0.56-0.68 against 1.06-1.10 ms.
  const bool prefetch = StreamPrefetchPays((g1 - g0) * w.group, w.col_blocks, P);
  for (int64_t c0 = 0; c0 < nc; c0 += S) {
    const int cs = static_cast<int>(std::min<int64_t>(S, nc - c0));
    for (int64_t g = g0; g < g1; ++g) {
      const float* q[S];
      const uint8_t* k[S];
      const float* xb[S];
      int64_t jn[S];
      for (int s = 0; s < cs; ++s) {
        const int64_t c = c0 + s;
        jn[s] = w.ChunkBlocks(c);
        const int64_t slot0 = w.ChunkStart(c) + g * jn[s] * R;
        q[s] = w.values.data() + slot0 * P;
        k[s] = w.offsets.data() + slot0;
        xb[s] = xx + c * w.chunk * 2 * P;
      }
      float* yg = ypad + g * 64;
      hn::Vec<D> acc[U][A];
      for (int a = 0; a < A; ++a) acc[0][a] = c0 == 0 ? hn::Zero(d) : hn::Load(d, yg + a * N);
      for (int u = 1; u < U; ++u)
        for (int a = 0; a < A; ++a) acc[u][a] = hn::Zero(d);
      // One step of stream s, then its pointers move to the next column block.
      auto one = [&](int s) HWY_ATTR {
        step(acc[s % U], q[s], k[s], xb[s]);
        q[s] += 64;
        k[s] += R;
        xb[s] += 2 * P;
      };
      int64_t j = 0;
      if (cs == S) {  // all streams while the shortest (the last chunk may be partial) lasts
        const int64_t jmin = jn[S - 1];
        if (prefetch) {
          for (; j < jmin; ++j)
            for (int s = 0; s < S; ++s) {
              for (int l = 0; l < 64; l += 16) hwy::Prefetch(q[s] + StreamPrefetchFloats(P) + l);
              one(s);
            }
        } else {
          for (; j < jmin; ++j)
            for (int s = 0; s < S; ++s) one(s);
        }
      }
      for (int s = 0; s < cs; ++s)
        for (int64_t js = j; js < jn[s]; ++js) one(s);
      for (int a = 0; a < A; ++a) {
        auto sum = acc[0][a];
        for (int u = 1; u < U; ++u) sum = hn::Add(sum, acc[u][a]);
        hn::Store(sum, d, yg + a * N);
      }
    }
  }
}

// Case A on the pack: p = V·N <= 64, R = 64/p row blocks per step, each V
// vectors. The R <= 8 one-byte offsets of a step are read as one integer
// (3-5% faster than single loads in the harness).
template <class D, int V>
void PackedFull(D d, const PermDiagRowPack& w, const float* xx, int64_t g0, int64_t g1, float* ypad) {
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int A = static_cast<int>(64 / N);
  constexpr int R = A / V;
  static_assert(R * V * N == 64);
  PackedDrive<D, A, V * N>(d, w, xx, g0, g1, ypad,
                    [d](hn::Vec<D>* acc, const float* q, const uint8_t* k, const float* xb) HWY_ATTR {
                      uint64_t kk = 0;  // offset r in byte r, counted from the low end
                      if constexpr (R <= 8) {
                        if constexpr (std::endian::native == std::endian::little)
                          std::memcpy(&kk, k, R);
                        else
                          for (int r = 0; r < R; ++r) kk |= uint64_t{k[r]} << (8 * r);
                      }
                      for (int a = 0; a < A; ++a) {
                        const int r = a / V, v = a % V;
                        const int64_t off = R <= 8 ? static_cast<int64_t>((kk >> (8 * r)) & 0xff) : k[r];
                        if constexpr (V == 1 && N >= 16) {
                          // p = N: the rotation stays inside the block's aligned vector, so one
                          // lane permutation replaces the unaligned load (which splits a cache
                          // line for every k != 0): Alex-7 p=16 0.052 -> 0.0xx ms (README).
                          const hn::RebindToSigned<D> di;
                          const auto idx = hn::And(hn::Add(hn::Iota(di, 0), hn::Set(di, static_cast<int32_t>(off))),
                                                   hn::Set(di, static_cast<int32_t>(N - 1)));
                          acc[a] = hn::MulAdd(hn::Load(d, q + a * N),
                                              hn::TableLookupLanes(hn::Load(d, xb), hn::IndicesFromVec(d, idx)), acc[a]);
                        } else {
                          acc[a] = hn::MulAdd(hn::Load(d, q + a * N), hn::LoadU(d, xb + off + v * N), acc[a]);
                        }
                      }
                    });
}

#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR
// Case B on the pack: p < N, N % p == 0. A vector holds G = N/p row blocks
// of a step, so the 64 rows of a group are again A = 64/N vectors.
template <int P>
void PackedSplit(const PermDiagRowPack& w, const float* xx, int64_t g0, int64_t g1, float* ypad) {
  const hn::ScalableTag<float> d;
  using D = decltype(d);
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int A = static_cast<int>(64 / N);
  constexpr int G = static_cast<int>(N / P);
  PackedDrive<D, A, P>(d, w, xx, g0, g1, ypad,
                    [d](hn::Vec<D>* acc, const float* q, const uint8_t* k, const float* xb) HWY_ATTR {
                      for (int a = 0; a < A; ++a) {
                        // Row blocks a·G, a·G + 1, ... of the step, each at its own offset.
                        const auto xv = P == 1 ? hn::Set(d, xb[0])
                                               : JoinSlices<P>(d, [xb, k](int64_t r) HWY_ATTR { return xb + k[r]; }, a * G);
                        acc[a] = hn::MulAdd(hn::Load(d, q + a * N), xv, acc[a]);
                      }
                    });
}

// Case B with one lane permutation instead of joined loads, for R = 64/P = N,
// N/2 or 2N and 2P <= N (p = 8 on AVX-512; p = 4, which it ran on AVX2 and
// AVX-512 too, now has its own layout and lanes<4>): the step's R
// one-byte offsets are one or two loads widened to 32-bit lanes; for vector
// a, lane (r, c) of its G = N/P row blocks takes the doubled input's element
// k[a·G + r] + c (< 2P <= N), so the index is a table lookup of the offsets
// plus c, and the rotated slices are one TableLookupLanes of the block's
// doubled input (2P floats, loaded into the low half). The dropped split<4>
// joined four 4-float loads per vector instead and ran Alex-7 at 31% of a
// bare read of its values on AVX-512, 33% on AVX2 (Zen 5).
template <int P>
void PackedPermute(const PermDiagRowPack& w, const float* xx, int64_t g0, int64_t g1, float* ypad) {
  const hn::ScalableTag<float> d;
  using D = decltype(d);
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int A = static_cast<int>(64 / N);
  constexpr int G = static_cast<int>(N / P);
  constexpr int64_t R = 64 / P;  // offsets per step
  static_assert((R == N || 2 * R == N || R == 2 * N) && 2 * P <= N);
  constexpr int H = R > N ? static_cast<int>(R / N) : 1;  // offset vectors per step
  const hn::RebindToSigned<D> di;
  const hn::Half<D> dh;
  // pattern[a] lane L = a·G + L / P: which offset (of offset vector a·G / N);
  // lane_c lane L = L mod P.
  hn::Vec<decltype(di)> pattern[A];
  const auto iota = hn::Iota(di, 0);
  const auto lane_c = hn::And(iota, hn::Set(di, P - 1));
  for (int a = 0; a < A; ++a) pattern[a] = hn::Add(hn::Set(di, static_cast<int32_t>((a * G) % N)), hn::ShiftRight<P == 4 ? 2 : 3>(iota));
  PackedDrive<D, A, P>(d, w, xx, g0, g1, ypad,
                       [&](hn::Vec<D>* acc, const float* q, const uint8_t* k, const float* xb) HWY_ATTR {
                         hn::Vec<decltype(di)> kv[H];
                         if constexpr (R >= N) {
                           const hn::Rebind<uint8_t, D> d8;
                           for (int h = 0; h < H; ++h)
                             kv[h] = hn::BitCast(di, hn::PromoteTo(hn::RebindToUnsigned<D>(), hn::LoadU(d8, k + h * N)));
                         } else {
                           const hn::Rebind<uint8_t, decltype(dh)> d8;
                           const hn::RebindToSigned<decltype(dh)> dhi;
                           kv[0] = hn::ZeroExtendVector(
                               di, hn::BitCast(dhi, hn::PromoteTo(hn::RebindToUnsigned<decltype(dh)>(), hn::LoadU(d8, k))));
                         }
                         // The block's doubled input: 2P floats (aligned: blocks are 2P·4 bytes apart).
                         hn::Vec<D> xv;
                         if constexpr (2 * P == N) xv = hn::Load(d, xb);
                         else xv = hn::ZeroExtendVector(d, hn::LoadU(dh, xb));
                         for (int a = 0; a < A; ++a) {
                           const auto idx = hn::Add(hn::TableLookupLanes(kv[a * G / N], hn::IndicesFromVec(di, pattern[a])), lane_c);
                           const auto rotated = hn::TableLookupLanes(xv, hn::IndicesFromVec(d, idx));
                           acc[a] = hn::MulAdd(hn::Load(d, q + a * N), rotated, acc[a]);
                         }
                       });
}

// p = 4 on the element-major pack (PermDiagRowPack::LaneMajor): vector
// (e, h) of a step holds output element e of the row blocks h·N .. h·N + N − 1
// of its group, whose inputs are x_J[(e + k_r) mod 4] = xx[J·8 + e + k_r].
// Per step: the 16 offsets widened to 32-bit lanes (16/N loads), the
// block's doubled input (8 floats) once, then per vector an add (k_r + e:
// the lane index) and one lane permutation before the FMA. permute<4> (on
// the element-minor layout before it) needed a second permutation per
// vector to spread each offset over its block's four lanes: about a fifth
// faster on AVX2, equal or faster on AVX-512 (src/kernels/README.md has
// the alternating runs). With four lanes (SSE4) the
// permutation reaches no further than the vector: each element loads its
// own window of the doubled input (xx[J·8 + e ..], 4 floats) and the
// offsets are the indices as they are.
void PackedLanes4(const PermDiagRowPack& w, const float* xx, int64_t g0, int64_t g1, float* ypad) {
  const hn::ScalableTag<float> d;
  using D = decltype(d);
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int A = static_cast<int>(64 / N);
  constexpr int H = static_cast<int>(16 / N);  // vectors per element: the group's 16 row blocks
  static_assert(N == 4 || N == 8 || N == 16);
  const hn::RebindToSigned<D> di;
  const hn::RebindToUnsigned<D> du;
  const hn::Rebind<uint8_t, D> d8;
  PackedDrive<D, A, 4>(d, w, xx, g0, g1, ypad,
                       [&](hn::Vec<D>* acc, const float* q, const uint8_t* k, const float* xb) HWY_ATTR {
                         for (int h = 0; h < H; ++h) {
                           const auto kh = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, k + h * N)));
                           if constexpr (N >= 8) {
                             // The doubled block (8 floats, 32-byte aligned) in the low lanes.
                             hn::Vec<D> xv;
                             if constexpr (N == 8) xv = hn::Load(d, xb);
                             else xv = hn::ZeroExtendVector(d, hn::Load(hn::Half<D>(), xb));
                             for (int e = 0; e < 4; ++e) {
                               const auto idx = hn::IndicesFromVec(d, hn::Add(kh, hn::Set(di, e)));
                               acc[e * H + h] = hn::MulAdd(hn::Load(d, q + (e * H + h) * N),
                                                           hn::TableLookupLanes(xv, idx), acc[e * H + h]);
                             }
                           } else {
                             const auto idx = hn::IndicesFromVec(d, kh);
                             for (int e = 0; e < 4; ++e)
                               acc[e * H + h] = hn::MulAdd(hn::Load(d, q + (e * H + h) * N),
                                                           hn::TableLookupLanes(hn::LoadU(d, xb + e), idx), acc[e * H + h]);
                           }
                         }
                       });
}
#endif

// ---- The rows of y = W·x on the row pack -------------------------------------
// Chunked packs only (a row-major pack runs the matvec rows above):
// full<V> for p = V·N <= 64 but 4 (the element-major pack), lanes<4> /
// windows<4> for p = 4 (element-major), permute<8> for p = 8 on 16 lanes,
// split<P> for the other p < N.
using GroupsFn = void (*)(const PermDiagRowPack&, const float*, int64_t, int64_t, float*);

template <int V>
bool AdmitsPackedFull(const KernelProblem& q) {
  return q.chunked && q.p == V * LanesF();
}
// A chunked pack of block size P (split<P>, permute<8>, lanes<4>, windows<4>).
template <int P>
bool AdmitsPackedP(const KernelProblem& q) {
  return q.chunked && q.p == P;
}

std::span<const Row<GroupsFn>> PackedRows() {
  static const std::vector<Row<GroupsFn>> rows = [] {
    std::vector<Row<GroupsFn>> r;
#if !HWY_HAVE_SCALABLE
    using DF = hn::ScalableTag<float>;
    constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(DF()));
    auto full = [&](auto v_tag, const char* name) {
      constexpr int V = decltype(v_tag)::value;
      // Not on the element-major pack (p = 4: lanes<4>).
      if constexpr (V * N <= 64 && !PermDiagRowPack::LaneMajor(static_cast<int>(V * N)))
        r.push_back({name, AdmitsPackedFull<V>,
                     [](const PermDiagRowPack& w, const float* xx, int64_t g0, int64_t g1, float* yp) {
                       PackedFull<DF, V>(DF(), w, xx, g0, g1, yp);
                     }});
    };
    full(std::integral_constant<int, 1>(), "permdiag.packed.full<1>");
    full(std::integral_constant<int, 2>(), "permdiag.packed.full<2>");
    full(std::integral_constant<int, 4>(), "permdiag.packed.full<4>");
    full(std::integral_constant<int, 8>(), "permdiag.packed.full<8>");
    full(std::integral_constant<int, 16>(), "permdiag.packed.full<16>");
    full(std::integral_constant<int, 32>(), "permdiag.packed.full<32>");
    full(std::integral_constant<int, 64>(), "permdiag.packed.full<64>");
#if HWY_TARGET != HWY_SCALAR
    // Two names for one kernel: lanes<4> (one permutation of the doubled
    // block per vector) stays chunk-major past L3 (PermDiagRowPack::
    // UsesChunks names it); windows<4> (4 lanes: a load per element) was
    // never measured from DRAM, so 4-lane targets keep the 24 MiB cap.
    if constexpr (N == 8 || N == 16) r.push_back({"permdiag.packed.lanes<4>", AdmitsPackedP<4>, PackedLanes4});
    if constexpr (N == 4) r.push_back({"permdiag.packed.windows<4>", AdmitsPackedP<4>, PackedLanes4});
    if constexpr (N == 16) r.push_back({"permdiag.packed.permute<8>", AdmitsPackedP<8>, PackedPermute<8>});
    if constexpr (N > 1) r.push_back({"permdiag.packed.split<1>", AdmitsPackedP<1>, PackedSplit<1>});
    if constexpr (N > 2) r.push_back({"permdiag.packed.split<2>", AdmitsPackedP<2>, PackedSplit<2>});
    if constexpr (N > 8) r.push_back({"permdiag.packed.split<8>", AdmitsPackedP<8>, PackedSplit<8>});
#endif
#endif
    return r;
  }();
  return rows;
}

void MatVecPackedImpl(const PermDiagRowPack& w, const float* x, const float* bias, float* y, int threads) {
  if (!w.chunked) return MatVecImpl(w.RowMajorView(), x, bias, y, threads);
  static thread_local AlignedBuffer<float> xx_buf, y_buf;
  const int p = w.p;
  const Row<GroupsFn>* row =
      detail::Pick(PackedRows(), {KernelOp::kPermDiagMatVecPacked, p, w.rows, w.cols, 1, true});
  // No vector shape (scalable vectors, not built on x86): the reference
  // kernel on the pack, correct but scalar.
  if (row == nullptr) return ref::MatVecPacked(w, x, bias, y);
  const GroupsFn groups_fn = row->fn;
  float* xx = Scratch(xx_buf, static_cast<std::size_t>(w.col_blocks * 2 * p));
  BuildDoubled(p, w.col_blocks, w.cols, x, xx);
  const int64_t group_rows = w.group * p;
  float* ypad = Scratch(y_buf, static_cast<std::size_t>(w.groups * group_rows));
  // An element-major pack's kernel leaves each group's outputs element-major
  // too: row (r, e) of the group at e·group + r.
  const bool lane_major = PermDiagRowPack::LaneMajor(p);
  ParallelFor(w.groups, threads, [&](int64_t g0, int64_t g1, int) {
    groups_fn(w, xx, g0, g1, ypad);
    const int64_t r0 = g0 * group_rows, r1 = std::min(w.rows, g1 * group_rows);
    if (lane_major) {
      for (int64_t g = g0; g < g1; ++g) {
        const float* yg = ypad + g * group_rows;
        for (int64_t r = 0; r < w.group; ++r)
          for (int e = 0; e < p; ++e) {
            const int64_t row = g * group_rows + r * p + e;
            if (row < r1) y[row] = bias ? yg[e * w.group + r] + bias[row] : yg[e * w.group + r];
          }
      }
    } else {
      for (int64_t r = r0; r < r1; ++r) y[r] = bias ? ypad[r] + bias[r] : ypad[r];
    }
  });
}

// ---- Y = W·X (feature-major batch) ------------------------------------------
// One output row r = I·p + c over a column tile [b0, b0 + NV·N):
//   Y[r, tile] (+)= Σ_{J in chunk} q_IJ[c] · X[J·p + (c + k_IJ) mod p, tile]
template <int NV>
HWY_INLINE void BatchRowTile(const View& w, const float* x, int64_t batch, int64_t I, int c,
                             int64_t J0, int64_t J1, int64_t full_blocks, int64_t b0, bool first,
                             float* yrow) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  hn::Vec<decltype(d)> acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = first ? hn::Zero(d) : hn::LoadU(d, yrow + b0 + v * N);
  const float* q = w.values + (I * nb) * p + c;
  const uint16_t* k = w.offsets + I * nb;
  const int64_t safe_end = std::min<int64_t>(J1, full_blocks);  // blocks with no padded columns
  int64_t J = J0;
  for (; J < safe_end; ++J) {
    int t = c + k[J];
    t -= t >= p ? p : 0;
    const float* xr = x + (J * p + t) * batch + b0;
    const auto wq = hn::Set(d, q[J * p]);
    for (int v = 0; v < NV; ++v) acc[v] = hn::MulAdd(wq, hn::LoadU(d, xr + v * N), acc[v]);
  }
  for (; J < J1; ++J) {
    int t = c + k[J];
    t -= t >= p ? p : 0;
    const int64_t col = J * p + t;
    if (col >= w.cols) continue;
    const float* xr = x + col * batch + b0;
    const auto wq = hn::Set(d, q[J * p]);
    for (int v = 0; v < NV; ++v) acc[v] = hn::MulAdd(wq, hn::LoadU(d, xr + v * N), acc[v]);
  }
  for (int v = 0; v < NV; ++v) hn::StoreU(acc[v], d, yrow + b0 + v * N);
}

void BatchRowScalarTail(const View& w, const float* x, int64_t batch, int64_t I, int c, int64_t J0,
                        int64_t J1, int64_t b0, bool first, float* yrow) {
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  for (int64_t b = b0; b < batch; ++b) {
    float acc = first ? 0.0f : yrow[b];
    for (int64_t J = J0; J < J1; ++J) {
      int t = c + w.offsets[I * nb + J];
      t -= t >= p ? p : 0;
      const int64_t col = J * p + t;
      if (col < w.cols) acc += w.values[(I * nb + J) * p + c] * x[col * batch + b];
    }
    yrow[b] = acc;
  }
}

void MatMulImpl(const View& w, const float* x, int64_t batch, const float* bias, float* y,
                int threads) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int p = w.p;
  // L2 blocking: X rows of one J-chunk ≈ 64 KiB, output tile ≈ 128 KiB
  // (measured: 24, 64 and 256 KiB chunks are within noise of each other on
  // Zen 3; 64 KiB leaves L2 room for the weights and the output tile).
  const int64_t row_bytes = batch * static_cast<int64_t>(sizeof(float));
  const int64_t j_chunk = std::max<int64_t>(1, (64 * 1024) / (row_bytes * p));
  const int64_t i_tile = std::max<int64_t>(1, (128 * 1024) / (row_bytes * p));
  const int64_t full_blocks = w.cols / p;  // column blocks without padding
  ParallelFor(w.row_blocks, threads, [&](int64_t I0, int64_t I1, int) {
    for (int64_t It = I0; It < I1; It += i_tile) {
      const int64_t It1 = std::min(I1, It + i_tile);
      for (int64_t J0 = 0; J0 < w.col_blocks; J0 += j_chunk) {
        const int64_t J1 = std::min(w.col_blocks, J0 + j_chunk);
        const bool first = J0 == 0;
        for (int64_t I = It; I < It1; ++I) {
          for (int c = 0; c < p; ++c) {
            const int64_t r = I * p + c;
            if (r >= w.rows) break;
            float* yrow = y + r * batch;
            int64_t b0 = 0;
            for (; b0 + 8 * N <= batch; b0 += 8 * N)
              BatchRowTile<8>(w, x, batch, I, c, J0, J1, full_blocks, b0, first, yrow);
            if (b0 + 4 * N <= batch) {
              BatchRowTile<4>(w, x, batch, I, c, J0, J1, full_blocks, b0, first, yrow);
              b0 += 4 * N;
            }
            if (b0 + 2 * N <= batch) {
              BatchRowTile<2>(w, x, batch, I, c, J0, J1, full_blocks, b0, first, yrow);
              b0 += 2 * N;
            }
            if (b0 + N <= batch) {
              BatchRowTile<1>(w, x, batch, I, c, J0, J1, full_blocks, b0, first, yrow);
              b0 += N;
            }
            if (b0 < batch) BatchRowScalarTail(w, x, batch, I, c, J0, J1, b0, first, yrow);
          }
        }
      }
      if (bias) {
        for (int64_t r = It * p; r < std::min(w.rows, It1 * p); ++r)
          for (int64_t b = 0; b < batch; ++b) y[r * batch + b] += bias[r];
      }
    }
  });
}

// ---- Y = X·Wᵀ (batch-major: X is B × cols, Y is B × rows) -------------------
// The runtime's and LibTorch's layout: each sample is a contiguous row. Per
// row block I and a tile of T samples, the T·V accumulators (V vectors per
// block of p rows) live in registers; each q_IJ vector is loaded once and
// reused by the T samples, whose rotated slices are one unaligned load each
// from the sample's doubled copy xx_b (see the rotation trick above). So a
// tile costs V + T·V loads per T·V FMAs instead of 2 loads per FMA as in the
// matvec. Blocking: three levels (J-superchunk, I-chunk, J-chunk), described
// in RowsBatched.
// p < N (p = 1, 2, 4 on AVX2) uses a vector of exactly p lanes (CappedTag);
// p without a fitting vector shape (3, 5, 7, 12, ...) runs one matvec per
// sample. Threads split the row blocks.
// Sample tiles: kTileMax samples while they last, then 4, 2, 1. The doubled
// inputs of a tile of T samples are interleaved block by block,
//     xt[(J·T + t)·2p + u] = x_t[J·p + (u mod p)],
// so the T rotated slices a block needs are at compile-time distances t·2p
// from one address (independent loads, no address chain), and a J-chunk of
// the tile is one contiguous run in L1.
inline int TileSize(int64_t left, int tile_max) {
  return left >= tile_max ? tile_max : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

// The tile holding sample b: its first sample and its size.
inline void TileOf(int64_t b, int64_t batch, int tile_max, int64_t* b0, int* size) {
  const int64_t full = batch / tile_max * tile_max;
  if (b < full) {
    *b0 = b - b % tile_max;
    *size = tile_max;
    return;
  }
  int64_t s = full;
  for (int t = TileSize(batch - s, tile_max); b >= s + t; t = TileSize(batch - s, tile_max)) s += t;
  *b0 = s;
  *size = TileSize(batch - s, tile_max);
}

void BuildDoubledTiles(const View& w, const float* x, int64_t batch, int tile_max, float* xx, int threads) {
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  ParallelFor(batch, threads, [&](int64_t s0, int64_t s1, int) {
    for (int64_t b = s0; b < s1; ++b) {
      int64_t b0;
      int T;
      TileOf(b, batch, tile_max, &b0, &T);
      const int64_t t = b - b0;
      float* xt = xx + b0 * nb * 2 * p;
      const float* xs = x + b * w.cols;
      for (int64_t J = 0; J < nb; ++J) {
        float* dst = xt + (J * T + t) * 2 * p;
        const int64_t valid = std::min<int64_t>(p, w.cols - J * p);
        std::memcpy(dst, xs + J * p, sizeof(float) * valid);
        for (int64_t u = valid; u < p; ++u) dst[u] = 0.0f;
        std::memcpy(dst + p, dst, sizeof(float) * p);
      }
    }
  });
}

// Tile kinds: kLoads reads each rotated slice with an unaligned load;
// kPermute (p = N) loads the block's aligned vector and rotates it with one
// lane permutation, the index built once per block and shared by the T
// samples (an unaligned 64-byte load splits a cache line for every k != 0);
// kPair (p = N/2) does the same for row blocks I and I+1 side by side in one
// full vector, where kLoads ran p = 8 on 8-lane vectors on AVX-512; kQuad
// (p = N/4) for row blocks I..I+3, where p = 4 ran on 4-lane vectors
// (capped<4>) no faster per stored weight than sgemm.
enum TileKind { kLoads, kPermute, kPair, kQuad };

// Row blocks side by side in one vector of a tile kind.
template <int Kind>
constexpr int64_t GroupOf() {
  return Kind == kPair ? 2 : Kind == kQuad ? 4 : 1;
}

// kQuad's lane indices, one aligned vector per offset quadruple: entry
// k0 + p·k1 + p²·k2 + p³·k3 holds k_g + c in lane (g, c), c < p = N/4 (the
// doubled block is 2p floats). 16 KiB at p = 4; one load replaces four
// GPR-to-vector moves.
template <int64_t N>
const int32_t* QuadIndices() {
  constexpr int64_t kP = N >= 4 ? N / 4 : 1;  // 4 on AVX-512, the only target with a quad row
  constexpr int64_t kEntries = kP * kP * kP * kP;
  alignas(64) static const std::array<int32_t, kEntries * N> table = [] {
    std::array<int32_t, kEntries * N> t{};
    for (int64_t e = 0; e < kEntries; ++e)
      for (int64_t c = 0; c < N; ++c) {
        int64_t k = e;
        for (int64_t g = 0; g < c / kP; ++g) k /= kP;
        t[e * N + c] = static_cast<int32_t>(k % kP + c % kP);
      }
    return t;
  }();
  return table.data();
}

template <class D, int V, int T, int Kind = kLoads>
HWY_INLINE void RowsTile(D d, const View& w, int64_t I, int64_t J0, int64_t J1, const float* xt,
                         const float* init, bool first, float* yt, int64_t ldy) {
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int64_t kP = Kind == kPair || Kind == kQuad ? N / GroupOf<Kind>() : V * N;  // == w.p (checked by the caller)
  const int64_t nb = w.col_blocks;
  hn::Vec<D> acc[T][V];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v)
      acc[t][v] = first ? hn::LoadU(d, init + I * kP + v * N) : hn::LoadU(d, yt + t * ldy + I * kP + v * N);
  const float* q = w.values + (I * nb + J0) * kP;
  const uint16_t* k = w.offsets + I * nb;
  if constexpr (Kind == kLoads) {
    for (int64_t J = J0; J < J1; ++J, q += kP) {
      const float* xj = xt + J * (T * 2 * kP) + k[J];
      hn::Vec<D> qv[V];
      for (int v = 0; v < V; ++v) qv[v] = hn::LoadU(d, q + v * N);
      for (int t = 0; t < T; ++t)
        for (int v = 0; v < V; ++v)
          acc[t][v] = hn::MulAdd(qv[v], hn::LoadU(d, xj + t * 2 * kP + v * N), acc[t][v]);
    }
  } else {
#if HWY_TARGET != HWY_SCALAR
    static_assert(V == 1);
    const hn::RebindToSigned<D> di;
    const auto iota = hn::Iota(di, 0);
    [[maybe_unused]] const hn::Half<D> dh;
    [[maybe_unused]] const hn::RebindToSigned<decltype(dh)> dhi;
    [[maybe_unused]] const float* q2 = q + nb * kP;  // row block I+1 (kPair, kQuad)
    [[maybe_unused]] const uint16_t* k2 = k + nb;
    [[maybe_unused]] const float* q3 = q + 2 * nb * kP;  // row blocks I+2, I+3 (kQuad)
    [[maybe_unused]] const float* q4 = q + 3 * nb * kP;
    [[maybe_unused]] const uint16_t* k3 = k + 2 * nb;
    [[maybe_unused]] const uint16_t* k4 = k + 3 * nb;
    [[maybe_unused]] const int32_t* quad_indices = nullptr;
    if constexpr (Kind == kQuad) quad_indices = QuadIndices<N>();
    for (int64_t J = J0; J < J1; ++J, q += kP) {
      const float* xj = xt + J * (T * 2 * kP);  // aligned: blocks of 2p floats
      hn::Vec<D> qv;
      hn::Vec<decltype(di)> lane;
      if constexpr (Kind == kPermute) {
        qv = hn::LoadU(d, q);
        lane = hn::And(hn::Add(iota, hn::Set(di, static_cast<int32_t>(k[J]))), hn::Set(di, static_cast<int32_t>(N - 1)));
      } else if constexpr (Kind == kQuad) {
        const hn::Half<decltype(dh)> dq;
        const int64_t o = (J - J0) * kP;
        qv = hn::Combine(d, hn::Combine(dh, hn::LoadU(dq, q4 + o), hn::LoadU(dq, q3 + o)),
                         hn::Combine(dh, hn::LoadU(dq, q2 + o), hn::LoadU(dq, q)));
        lane = hn::Load(di, quad_indices + (k[J] + kP * (k2[J] + kP * (k3[J] + kP * k4[J]))) * N);
      } else {
        qv = hn::Combine(d, hn::LoadU(dh, q2 + (J - J0) * kP), hn::LoadU(dh, q));
        // Lane (r, c) reads the doubled block at k_r + c (< 2p = N).
        const auto kk = hn::Combine(di, hn::Set(dhi, static_cast<int32_t>(k2[J])), hn::Set(dhi, static_cast<int32_t>(k[J])));
        lane = hn::Add(kk, hn::And(iota, hn::Set(di, static_cast<int32_t>(kP - 1))));
      }
      const auto idx = hn::IndicesFromVec(d, lane);
      for (int t = 0; t < T; ++t) {
        // kQuad: the doubled block is 8 floats, half a vector (indices < 8).
        hn::Vec<D> xv;
        if constexpr (Kind == kQuad) xv = hn::ZeroExtendVector(d, hn::Load(dh, xj + t * 2 * kP));
        else xv = hn::Load(d, xj + t * 2 * kP);
        acc[t][0] = hn::MulAdd(qv, hn::TableLookupLanes(xv, idx), acc[t][0]);
      }
    }
#endif
  }
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v) hn::StoreU(acc[t][v], d, yt + t * ldy + I * kP + v * N);
}

template <int V, int Kind = kLoads>
constexpr int TileMax() {
  // The permuting kinds: 16 samples would fit AVX-512's 32 registers, but
  // measured slower than 8 (A/B, 4 alternating runs, Alex-7 B=64 one thread:
  // p=16 52-56 vs 68-87 GF/s per stored weight; p=8 equal).
  if constexpr (Kind != kLoads) return 8;
  return V >= 8 ? 1 : 8 / V;
}

// RowsTile for a tile of `tile` samples (kTileMax, 4, 2 or 1).
template <class D, int V, int Kind, int kTileMax>
HWY_INLINE void RowsTileAny(D d, int tile, const View& w, int64_t I, int64_t J0, int64_t J1, const float* xt,
                            const float* init, bool first, float* yt, int64_t ldy) {
  if (tile == kTileMax) return RowsTile<D, V, kTileMax, Kind>(d, w, I, J0, J1, xt, init, first, yt, ldy);
  if constexpr (kTileMax > 4) {
    if (tile == 4) return RowsTile<D, V, 4, Kind>(d, w, I, J0, J1, xt, init, first, yt, ldy);
  }
  if constexpr (kTileMax > 2) {
    if (tile == 2) return RowsTile<D, V, 2, Kind>(d, w, I, J0, J1, xt, init, first, yt, ldy);
  }
  if constexpr (kTileMax > 1) RowsTile<D, V, 1, Kind>(d, w, I, J0, J1, xt, init, first, yt, ldy);
}

// Prefetches the weights and offsets of row block I's column blocks
// [J0, J1) (one request per cache line): the batched products read a short
// run of each of many row blocks, nb·p floats apart, too many streams for
// the hardware prefetcher (LanesChunk, RowsBatched). kL2: into L2, not L1
// (prefetcht1 on x86), for a request further ahead than the L1 one, which
// then finds its line in L2.
template <bool kL2 = false>
HWY_INLINE void PrefetchRowBlock(const View& w, int64_t I, int64_t J0, int64_t J1) {
  const float* q = w.block(I, J0);
  for (int64_t f = 0; f < (J1 - J0) * w.p; f += 16) PrefetchLine<kL2>(q + f);
  const uint16_t* k = w.offsets + I * w.col_blocks + J0;
  for (int64_t f = 0; f < J1 - J0; f += 32) PrefetchLine<kL2>(k + f);
}

template <class D, int V, int Kind = kLoads>
void RowsBatched(D d, const View& w, const float* xx, int64_t batch, const float* init, float* ypad, int64_t ldy,
                 int threads) {
  constexpr int kTileMax = TileMax<V, Kind>();
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  // Three levels, as in a GEMM:
  //   J-superchunk: the doubled inputs of ALL samples for js column blocks
  //     (batch·js·2p floats, ~256 KiB) stay in L2 while an I-chunk's rows
  //     pass over them;
  //   I-chunk: its weights for the superchunk (ic·js·p floats, ~128 KiB)
  //     stay in L2 while all sample tiles pass over them;
  //   J-chunk: one tile's inputs of the chunk (kTileMax·jc·2p floats,
  //     16 KiB) stay in L1 while every row block of the I-chunk uses them.
  // Partial sums go through the output between J-chunks. Without the
  // superchunk level, wide layers (n = 25088) re-read each tile's whole
  // input row per row block from L3 and ran 3x slower than this.
  const int64_t fsz = sizeof(float);
  const int64_t jc = std::max<int64_t>(1, (16 * 1024) / (kTileMax * 2 * p * fsz));
  const int64_t js = std::min(nb, std::max<int64_t>(1, (256 * 1024) / (batch * 2 * p * fsz) / jc) * jc);
  const int64_t ic = std::max<int64_t>(1, (128 * 1024) / (js * p * fsz));
  ParallelFor(w.row_blocks, threads, [&](int64_t I0, int64_t I1, int) {
    for (int64_t Js = 0; Js < nb; Js += js) {
      const int64_t Js1 = std::min(nb, Js + js);
      for (int64_t Ic = I0; Ic < I1; Ic += ic) {
        const int64_t Ic1 = std::min(I1, Ic + ic);
        for (int64_t b0 = 0; b0 < batch;) {
          const int tile = TileSize(batch - b0, kTileMax);
          const float* xt = xx + b0 * nb * 2 * p;
          float* yt = ypad + b0 * ldy;
          for (int64_t J0 = Js; J0 < Js1; J0 += jc) {
            const int64_t J1 = std::min(Js1, J0 + jc);
            const bool first = J0 == 0;
            // kPair / kQuad take two / four row blocks a step; the last
            // 1-3 run one at a time on a half / quarter vector.
            for (int64_t I = Ic; I < Ic1; I += GroupOf<Kind>()) {
              // The first sample tile brings the weights into L2 (the others
              // find them there), prefetched two steps ahead. Zen 5, one
              // thread, B=64, four alternating rounds, 2026-12-06: AVX3
              // p = 16 VGG-6 12.4 vs 13.9 ms, Alex-6 0.97x, Alex-7 equal;
              // AVX2 p = 8 0.91-0.93x, p = 16 0.96-0.99x. LanesChunk's wrap
              // into the next J-chunk (its first row blocks prefetched at the
              // end of the chunk before) was no better here: AVX3 p = 16,
              // B=64, four alternating rounds (stop 40): Alex-6 / VGG-6
              // 1.02x / 1.01x the time. An L2 prefetch six steps ahead as
              // well (LanesChunk's kAheadL2; stop 41, four rounds): AVX3
              // p = 16 0.98-1.01x, AVX2 p = 8 / 16 0.96-1.00x: too little
              // for a second prefetch stream, not kept.
              if (b0 == 0)
                for (int64_t Ia = I + 2 * GroupOf<Kind>(); Ia < std::min(Ic1, I + 3 * GroupOf<Kind>()); ++Ia)
                  PrefetchRowBlock(w, Ia, J0, J1);
              if constexpr (Kind == kPair && HWY_TARGET != HWY_SCALAR) {
                if (I + 1 >= Ic1) {
                  const hn::Half<D> dh;
                  RowsTileAny<decltype(dh), 1, kLoads, kTileMax>(dh, tile, w, I, J0, J1, xt, init, first, yt, ldy);
                  continue;
                }
              }
              if constexpr (Kind == kQuad && HWY_TARGET != HWY_SCALAR) {
                if (I + 3 >= Ic1) {
                  const hn::Half<hn::Half<D>> dq;
                  for (int64_t Ir = I; Ir < Ic1; ++Ir)
                    RowsTileAny<decltype(dq), 1, kLoads, kTileMax>(dq, tile, w, Ir, J0, J1, xt, init, first, yt, ldy);
                  continue;
                }
              }
              RowsTileAny<D, V, Kind, kTileMax>(d, tile, w, I, J0, J1, xt, init, first, yt, ldy);
            }
          }
          b0 += tile;
        }
      }
    }
  });
}

// ---- lanes: Y = X·Wᵀ with the batch in the vector lanes ------------------------
// For a batch that is a multiple of 4N (AdmitsLanes: B % 64 == 0): X is
// transposed once into xT[c][b] (columns zero-padded to whole blocks), so
// row i of block I adds, per column block J, its one weight (broadcast)
// times the N-sample vectors of column J·p + (r + k) mod p, and the
// accumulators yT[row][b] are transposed back. No lane permutation and no doubled input: one broadcast and V loads
// per V FMAs. Tiles of R rows of one row block × V vectors (V·N samples).
// Where the lanes row reads its weights: the matrix (row-major), or a
// PermDiagLanesPack (chunk-major, with its own chunk sizes; permdiag.h).
struct LanesWeights {
  const float* values = nullptr;
  const uint16_t* offsets = nullptr;       // one per block, in the values' order
  int64_t chunk_rows = 0, chunk_cols = 0;  // the pack's; 0: the matrix
};

// Rows r0 .. r0 + R − 1 of one row block over nj column blocks: q holds the
// first block's values, the next ones p floats apart (both layouts), k its
// offsets, xb the first block's xT rows, yr the first row's yT row.
template <class D, int R, int V>
HWY_INLINE void LanesTile(D d, int p, const float* q, const uint16_t* k, int64_t nj, int r0, const float* xb,
                          float* yr) {
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int64_t W = V * N;  // samples per xT / yT row
  hn::Vec<D> acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = hn::Load(d, yr + r * W + v * N);
  q += r0;
  for (int64_t j = 0; j < nj; ++j) {
    const int kk = k[j];
    const float* xj = xb + j * p * W;
    const float* qj = q + j * p;
    for (int r = 0; r < R; ++r) {
      int c = r0 + r + kk;
      if (c >= p) c -= p;
      const float* xr = xj + c * W;
      const auto qv = hn::Set(d, qj[r]);
      for (int v = 0; v < V; ++v) acc[r][v] = hn::MulAdd(qv, hn::Load(d, xr + v * N), acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) hn::Store(acc[r][v], d, yr + r * W + v * N);
}

// The lanes row's weights (the matrix or a pack) n floats from value `from`
// on, and their blocks' offsets (at the value index / p in both layouts),
// into L1 (or L2); nothing at or past `total` (all values).
template <bool kL2>
HWY_INLINE void PrefetchLanesPiece(const LanesWeights& lw, int p, int64_t from, int64_t n, int64_t total,
                                   std::bool_constant<kL2>) {
  const int64_t to = std::min(total, from + n);
  for (int64_t f = from; f < to; f += 16) PrefetchLine<kL2>(lw.values + f);
  for (int64_t b = from / p / 32 * 32; b * p < to; b += 32) PrefetchLine<kL2>(lw.offsets + b);  // 32 offsets a line
}

template <class D, int R, int V>
void LanesChunk(D d, const View& w, const LanesWeights& lw, const float* xT, float* yT, int threads) {
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int64_t W = V * N;
  const int p = w.p;
  PERMDNN_DCHECK(p % R == 0);  // a tile's R rows stay in one row block
  const int64_t nb = w.col_blocks;
  // J-chunk: its xT rows (jc·p·W floats, ~32 KiB) stay in L1 while the rows of
  // an I-chunk (their yT rows ~128 KiB, in L2) pass over them. I-chunks are
  // aligned to multiples of ic; workers take contiguous row blocks, each
  // walking its part of every I-chunk.
  //
  // Each row block reads its J-chunk's weights (jc·p floats) and offsets:
  // from the matrix nb·p floats away from the previous block's, so an
  // I-chunk is 64-128 short streams, too many for the hardware prefetcher;
  // from a lanes pack (lw.chunk_rows > 0, permdiag.h) right after them, one
  // stream. Either way they are prefetched kAhead row blocks ahead of the
  // worker's walk (a row block's tiles take ~0.2 µs), on into its first rows
  // of the next J-chunk. Zen 5, AVX3, one thread, B=64, four alternating
  // rounds, 2026-12-06 (the matrix): Alex-6 p = 4 / 8 12.5 / 6.9 vs 14.3 /
  // 7.8 ms, VGG-6 34.5 / 20.2 vs 40.6 / 23.1 ms, and on the L3-resident
  // Alex-7 / VGG-7 p = 4 5.2 / 5.3 vs 6.1 / 6.1 ms, p = 8 0.98x, Alex-8
  // 0.99x; one or four blocks ahead measured the same as two. Further ahead
  // (kAheadL2 row blocks) the same lines go to L2 first: Zen 5, AVX3, one
  // thread, B=64, six alternating rounds against the code before (which had
  // measured 12.5 / 34.5 ms at p = 4 above: the host's state), stop 41:
  // p = 4 Alex-6 11.4 vs 17.4 ms, VGG-6 31.0 vs 51.1 ms, Alex-7 / VGG-7
  // 0.81x; p = 8 Alex-6 6.3 vs 7.6 ms, VGG-6 17.2 vs 23.0 ms, Alex-7 /
  // VGG-7 0.95x (with the register transposes, Transpose16). 6, 12 and 24
  // blocks ahead measured the same (four rounds). On the pack the prefetch
  // took AVX2 p = 4 VGG-6 from 94-96 to 71-72 ms, AVX3 level (stop 53).
  constexpr int64_t kAhead = 2, kAheadL2 = 6;
  const bool pack = lw.chunk_rows > 0;
  const int64_t ic = pack ? lw.chunk_rows : PermDiagLanesPack::ChunkRows(p, W);
  const int64_t jc = pack ? lw.chunk_cols : PermDiagLanesPack::ChunkCols(p, W);
  const int64_t total = w.row_blocks * nb * p;
  // The walk, for each layout (kPack a compile-time constant, so that the
  // loop compiles for each): `first` gives the block index of row block I's
  // first block of J-chunk [J0, J1) in I-chunk [Ic, Ic1), its values start p
  // times further, its offsets there.
  const auto walk = [&](auto kPack, int64_t I0, int64_t I1) {
    const auto first = [&](int64_t Ic, int64_t Ic1, int64_t I, int64_t J0, int64_t J1) {
      return decltype(kPack)::value ? Ic * nb + J0 * (Ic1 - Ic) + (I - Ic) * (J1 - J0) : I * nb + J0;
    };
    for (int64_t Ic = I0 / ic * ic; Ic < I1; Ic += ic) {
      const int64_t Ic1 = std::min(w.row_blocks, Ic + ic), Ia = std::max(I0, Ic), Ib = std::min(I1, Ic1);
      for (int64_t J0 = 0; J0 < nb; J0 += jc) {
        const int64_t J1 = std::min(nb, J0 + jc);
        // The piece `s` row blocks on in this worker's walk (further down
        // its rows of this J-chunk, else its first rows of the next one):
        // its first value and its length, 0 past the walk's end. (Computed
        // here, prefetched in the loop: a lambda that only prefetched would
        // be dropped whole, see PrefetchLine.)
        const auto ahead = [&](int64_t I, int64_t s) -> std::pair<int64_t, int64_t> {
          int64_t r = I + s, K0 = J0, K1 = J1;
          if (r >= Ib) r = Ia + (r - Ib), K0 = J1, K1 = std::min(nb, J1 + jc);
          if (K0 >= nb || r >= Ib) return {0, 0};
          return {first(Ic, Ic1, r, K0, K1) * p, (K1 - K0) * p};
        };
        for (int64_t I = Ia; I < Ib; ++I) {
          const auto [l1_from, l1_n] = ahead(I, kAhead);
          PrefetchLanesPiece(lw, p, l1_from, l1_n, total, std::false_type{});
          const auto [l2_from, l2_n] = ahead(I, kAheadL2);
          PrefetchLanesPiece(lw, p, l2_from, l2_n, total, std::true_type{});
          const int64_t at = first(Ic, Ic1, I, J0, J1);
          for (int r0 = 0; r0 < p; r0 += R)
            LanesTile<D, R, V>(d, p, lw.values + at * p, lw.offsets + at, J1 - J0, r0, xT + J0 * p * W,
                               yT + (I * p + r0) * W);
        }
      }
    }
  };
  ParallelFor(w.row_blocks, threads, [&](int64_t I0, int64_t I1, int) {
    if (pack) walk(std::true_type{}, I0, I1);
    else walk(std::false_type{}, I0, I1);
  });
}

// dst[c·ld_dst + i] = src[i·ld_src + c] for a 16 x 16 tile, in registers
// (AVX-512: unpacks of 32 and 64 bits, then two rounds of 128-bit block
// shuffles, 64 shuffles for 16 rows; AVX2: four 8 x 8 tiles). False on
// other targets: the caller's loops then run. The lanes row's transposes
// with plain loops were 7% of its time on VGG-6 at B=64, p = 8 (perf, Zen
// 5, AVX3). Intrinsics:
// Highway 1.0.3 has no two-input block shuffle like vshuff32x4 (composing
// OddEvenBlocks and SwapAdjacentBlocks costs two ops for each).
inline bool Transpose16(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
  // t[2i] / t[2i+1]: rows 2i and 2i+1 interleaved, elements 0-1 / 2-3 of
  // each 128-bit block.
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4i+j]: block b holds column 4b + j of rows 4i..4i+3.
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), e = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  // Blocks regrouped: t[j] = rows 0-3 of columns j, 8+j, rows 4-7 of the
  // same; t[4+j] the same for columns 4+j, 12+j; t[8+j], t[12+j] rows 8-15.
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
  }
  for (int j = 0; j < 4; ++j) {
    _mm512_storeu_ps(dst + j * ld_dst, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
    _mm512_storeu_ps(dst + (8 + j) * ld_dst, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD));
    _mm512_storeu_ps(dst + (4 + j) * ld_dst, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88));
    _mm512_storeu_ps(dst + (12 + j) * ld_dst, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD));
  }
  return true;
#elif HWY_ARCH_X86 && HWY_TARGET == HWY_AVX2
  // Four 8 x 8 tiles: unpacks of 32 bits, 64-bit lane shuffles, then the
  // 128-bit halves combined (permute2f128: low | low, high | high).
  for (int bi = 0; bi < 16; bi += 8)
    for (int bj = 0; bj < 16; bj += 8) {
      const float* s = src + bi * ld_src + bj;
      float* o = dst + bj * ld_dst + bi;
      __m256 r[8], t[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * ld_src);
      for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
      // r[4h + j]: columns j and 4 + j of rows 4h..4h+3 (one per half).
      for (int h = 0; h < 2; ++h) {
        r[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        r[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
        r[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        r[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
      }
      for (int j = 0; j < 4; ++j) {
        _mm256_storeu_ps(o + j * ld_dst, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
        _mm256_storeu_ps(o + (4 + j) * ld_dst, _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
      }
    }
  return true;
#else
  (void)src, (void)ld_src, (void)dst, (void)ld_dst;
  return false;
#endif
}

// The batch in chunks of W = 4N samples (AdmitsLanes: B % 64 == 0, so every
// chunk is whole): R x 4 tiles, R·4 accumulators, 16 of the 32 registers on
// 16 lanes (R = 4), 8 of the 16 on 8 lanes (R = 2; AVX2, B=64, three
// alternating rounds, stop 41: 1 x 4 and 4 x 4 were slower, 1 x 8 and 2 x 8
// no faster).
template <class D>
void LanesBatched(D d, const View& w, const LanesWeights& lw, const float* x, int64_t batch, const float* init,
                  float* ypad, int64_t ldy, int threads) {
  static thread_local AlignedBuffer<float> xt_buf, yt_buf;
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int V = 4;
  constexpr int64_t W = V * N;
  PERMDNN_DCHECK(batch % W == 0);
  const int64_t ncol = w.col_blocks * w.p, prow = w.padded_rows();
  for (int64_t b0 = 0; b0 < batch; b0 += W) {
    float* xT = Scratch(xt_buf, static_cast<std::size_t>(ncol * W));
    float* yT = Scratch(yt_buf, static_cast<std::size_t>(prow * W));
    // Transposes in 16 x 16 tiles (one cache line of each side per step),
    // in registers where the tile is whole.
    for (int64_t c0 = 0; c0 < ncol; c0 += 16)
      for (int64_t s0 = 0; s0 < W; s0 += 16) {
        if (c0 + 16 <= w.cols && Transpose16(x + (b0 + s0) * w.cols + c0, w.cols, xT + c0 * W + s0, W)) continue;
        for (int64_t c = c0; c < std::min(ncol, c0 + 16); ++c)
          for (int64_t s = s0; s < s0 + 16; ++s) xT[c * W + s] = c < w.cols ? x[(b0 + s) * w.cols + c] : 0.0f;
      }
    for (int64_t r = 0; r < prow; ++r)
      for (int64_t s = 0; s < W; ++s) yT[r * W + s] = init[r];
    LanesChunk<D, N >= 16 ? 4 : 2, V>(d, w, lw, xT, yT, threads);
    for (int64_t r0 = 0; r0 < prow; r0 += 16)
      for (int64_t s0 = 0; s0 < W; s0 += 16) {
        if (r0 + 16 <= prow && Transpose16(yT + r0 * W + s0, W, ypad + (b0 + s0) * ldy + r0, ldy)) continue;
        for (int64_t s = s0; s < s0 + 16; ++s)
          for (int64_t r = r0; r < std::min(prow, r0 + 16); ++r) ypad[(b0 + s) * ldy + r] = yT[r * W + s];
      }
  }
}

// Measured against the permuting rows (Zen 5, AVX3, one thread, Alex-7,
// two alternating runs): B=64 p=4 6.28-6.32 vs quad 7.74-8.02 ms, p=8
// 3.39-3.61 vs pair 4.08; slower at B=16 (one vector per row: two loads per
// FMA), so the row takes B % 64 == 0. At p=16 it was slower too (2.48 vs
// 1.80-1.94) until LanesChunk's L2 prefetch and the register transposes
// (stop 41, six alternating rounds, against permute<1>): Alex-6 4.05 vs
// 4.62 ms, VGG-6 11.4 vs 13.6 ms, level on Alex-7 / VGG-7 (1.00-1.01x).
// On AVX2 (8 lanes, 2 x 4 tiles; stop 41, four alternating rounds, B=64,
// against the tile rows): p = 4 0.54-0.60x the time of capped<4> on
// Alex-6, Alex-7, VGG-6 and VGG-7; p = 8 0.97-1.10x of tiles<1>; p = 16
// 0.82-1.00x of tiles<2> on Alex-6 / VGG-6 (three runs of four to six
// rounds) and 1.04-1.05x on Alex-7 / VGG-7. Those AVX2 rounds may have run
// without the prefetches (see PrefetchLine); with them (Intel Xeon, AVX2,
// one thread, three alternating rounds, stop 54) p = 16 took 0.83-0.98x the
// time of tiles<2> at B=64 and 128 on Alex-6, VGG-6, Alex-7, VGG-7 and
// Alex-8 (VGG-6 B=64 18.7-18.8 vs 21.9-22.8 ms), p = 8 still 1.06-1.14x of
// tiles<1>. So on 8 lanes it takes p = 4 and 16; on 16 lanes p = 4, 8 and
// 16.
bool AdmitsLanes(const KernelProblem& q) {
  if (q.batch % 64 != 0) return false;
  return LanesF() == 16 ? q.p == 4 || q.p == 8 || q.p == 16 : LanesF() == 8 && (q.p == 4 || q.p == 16);
}

// ---- The rows of Y = X·Wᵀ -------------------------------------------------------
// tiles<V>: p = V·N, sample tiles of TileMax<V>; capped<P>: p = P < N on a
// vector of exactly P lanes (CappedTag), tiles of 8; per_sample: p with no
// vector shape (3, 5, 7, 12, ...) runs the matvec once per sample. The tile
// kernel needs p as a compile-time multiple (or exact width) of the vector,
// so only fixed-width targets have tile rows.
using BatchedFn = void (*)(const View&, const float*, int64_t, const float*, float*, int64_t, int);

std::span<const Row<BatchedFn>> MatMulRowsRows() {
  static const std::vector<Row<BatchedFn>> rows = [] {
    std::vector<Row<BatchedFn>> r;
#if !HWY_HAVE_SCALABLE
    using DF = hn::ScalableTag<float>;
    auto full = [&](auto v_tag, const char* name) {
      constexpr int V = decltype(v_tag)::value;
      r.push_back({name, AdmitsMultiple<V>,
                   [](const View& w, const float* xx, int64_t b, const float* i, float* yp, int64_t l, int t) {
                     RowsBatched<DF, V>(DF(), w, xx, b, i, yp, l, t);
                   },
                   TileMax<V>()});
    };
#if HWY_TARGET != HWY_SCALAR
    if constexpr (hn::MaxLanes(DF()) == 16 || hn::MaxLanes(DF()) == 8) {
      // arg 0: the row takes the plain input, not the doubled tiles.
      r.push_back({"permdiag.matmul_rows.lanes", AdmitsLanes,
                   [](const View& w, const float* x, int64_t b, const float* i, float* yp, int64_t l, int t) {
                     LanesBatched<DF>(DF(), w, LanesWeights{w.values, w.offsets}, x, b, i, yp, l, t);
                   },
                   0});
    }
    if constexpr (hn::MaxLanes(DF()) >= 16) {
      r.push_back({"permdiag.matmul_rows.permute<1>", AdmitsMultiple<1>,
                   [](const View& w, const float* xx, int64_t b, const float* i, float* yp, int64_t l, int t) {
                     RowsBatched<DF, 1, kPermute>(DF(), w, xx, b, i, yp, l, t);
                   },
                   TileMax<1, kPermute>()});
      r.push_back({"permdiag.matmul_rows.pair", AdmitsHalfLanes,
                   [](const View& w, const float* xx, int64_t b, const float* i, float* yp, int64_t l, int t) {
                     RowsBatched<DF, 1, kPair>(DF(), w, xx, b, i, yp, l, t);
                   },
                   TileMax<1, kPair>()});
      r.push_back({"permdiag.matmul_rows.quad", AdmitsQuarterLanes,
                   [](const View& w, const float* xx, int64_t b, const float* i, float* yp, int64_t l, int t) {
                     RowsBatched<DF, 1, kQuad>(DF(), w, xx, b, i, yp, l, t);
                   },
                   TileMax<1, kQuad>()});
    }
#endif
    full(std::integral_constant<int, 1>(), "permdiag.matmul_rows.tiles<1>");
    full(std::integral_constant<int, 2>(), "permdiag.matmul_rows.tiles<2>");
    full(std::integral_constant<int, 4>(), "permdiag.matmul_rows.tiles<4>");
    full(std::integral_constant<int, 8>(), "permdiag.matmul_rows.tiles<8>");
#if HWY_TARGET != HWY_SCALAR
    constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(DF()));
    auto capped = [&](auto tag, auto p_tag, const char* name) {
      using DC = decltype(tag);
      constexpr int P = decltype(p_tag)::value;
      if constexpr (P < N && static_cast<int>(hn::MaxLanes(DC())) == P)
        r.push_back({name, AdmitsP<P>,
                     [](const View& w, const float* xx, int64_t b, const float* i, float* yp, int64_t l, int t) {
                       RowsBatched<DC, 1>(DC(), w, xx, b, i, yp, l, t);
                     },
                     TileMax<1>()});
    };
    capped(hn::CappedTag<float, 1>(), std::integral_constant<int, 1>(), "permdiag.matmul_rows.capped<1>");
    capped(hn::CappedTag<float, 2>(), std::integral_constant<int, 2>(), "permdiag.matmul_rows.capped<2>");
    capped(hn::CappedTag<float, 4>(), std::integral_constant<int, 4>(), "permdiag.matmul_rows.capped<4>");
    capped(hn::CappedTag<float, 8>(), std::integral_constant<int, 8>(), "permdiag.matmul_rows.capped<8>");
#endif
#endif
    r.push_back({"permdiag.matmul_rows.per_sample", AdmitsAll, nullptr});
    return r;
  }();
  return rows;
}

// The batched rows write whole row blocks, from accumulators that start at
// the bias (zero-padded to whole row blocks): directly into y when rows is
// a multiple of p, else into a padded copy whose valid part FinishPaddedRows
// copies out.
struct PaddedRows {
  const float* init;
  float* ypad;
};
PaddedRows StartPaddedRows(const View& w, int64_t batch, const float* bias, float* y) {
  static thread_local AlignedBuffer<float> y_buf, init_buf;
  const int64_t prow = w.padded_rows();
  float* init = Scratch(init_buf, static_cast<std::size_t>(prow));
  for (int64_t r = 0; r < prow; ++r) init[r] = (bias && r < w.rows) ? bias[r] : 0.0f;
  return {init, w.rows == prow ? y : Scratch(y_buf, static_cast<std::size_t>(batch * prow))};
}
void FinishPaddedRows(const View& w, int64_t batch, const float* ypad, float* y) {
  if (ypad == y) return;
  const int64_t prow = w.padded_rows();
  for (int64_t b = 0; b < batch; ++b) std::memcpy(y + b * w.rows, ypad + b * prow, sizeof(float) * w.rows);
}

void MatMulRowsImpl(const View& w, const float* x, int64_t batch, const float* bias, float* y, int threads) {
  static thread_local AlignedBuffer<float> xx_buf;
  const int p = w.p;
  const Row<BatchedFn>& row =
      *detail::Pick(MatMulRowsRows(), {KernelOp::kPermDiagMatMulRows, p, w.rows, w.cols, batch, false});
  if (row.fn == nullptr) {  // no vector shape for this p: one matvec per sample
    for (int64_t b = 0; b < batch; ++b) MatVecImpl(w, x + b * w.cols, bias, y + b * w.rows, threads);
    return;
  }
  const int tile_max = row.arg;
  const int64_t prow = w.padded_rows();
  const float* xx = x;  // arg 0: the row reads the input as it is (lanes)
  if (tile_max > 0) {
    float* tiles = Scratch(xx_buf, static_cast<std::size_t>(batch * w.col_blocks * 2 * p));
    BuildDoubledTiles(w, x, batch, tile_max, tiles, threads);
    xx = tiles;
  }
  const PaddedRows out = StartPaddedRows(w, batch, bias, y);
  row.fn(w, xx, batch, out.init, out.ypad, prow, threads);
  FinishPaddedRows(w, batch, out.ypad, y);
}

// The product on a lanes pack: the lanes row where the table picks it for
// the problem (as PermDiagUsesLanesPack asked at the plan); where it picks
// another row (the target changed since, or a row is forced) that row runs
// on the matrix unpacked for the call: correct, not fast.
void MatMulRowsLanesImpl(const PermDiagLanesPack& pk, const float* x, int64_t batch, const float* bias, float* y,
                         int threads) {
  PERMDNN_CHECK(pk.chunk_rows > 0 && pk.chunk_cols > 0, "PermDiagMatMulRows: a lanes pack with chunks of {}x{} blocks",
                pk.chunk_rows, pk.chunk_cols);
  const Row<BatchedFn>& row =
      *detail::Pick(MatMulRowsRows(), {KernelOp::kPermDiagMatMulRows, pk.p, pk.rows, pk.cols, batch, false});
#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR
  using DF = hn::ScalableTag<float>;
  if constexpr (hn::MaxLanes(DF()) == 16 || hn::MaxLanes(DF()) == 8) {
    if (std::string_view(row.name) == "permdiag.matmul_rows.lanes") {
      const View w{pk.rows, pk.cols, pk.p, pk.row_blocks, pk.col_blocks, nullptr, nullptr};  // geometry only
      const PaddedRows out = StartPaddedRows(w, batch, bias, y);
      LanesBatched<DF>(DF(), w, LanesWeights{pk.values.data(), pk.offsets.data(), pk.chunk_rows, pk.chunk_cols}, x,
                       batch, out.init, out.ypad, w.padded_rows(), threads);
      FinishPaddedRows(w, batch, out.ypad, y);
      return;
    }
  }
#endif
  (void)row;
  const PermDiagMatrix m = pk.Unpack();
  MatMulRowsImpl(m.view(), x, batch, bias, y, threads);
}

int64_t LanesRowSamplesImpl() {
#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR
  using DF = hn::ScalableTag<float>;
  if constexpr (hn::MaxLanes(DF()) == 16 || hn::MaxLanes(DF()) == 8) return 4 * static_cast<int64_t>(hn::MaxLanes(DF()));
#endif
  return 0;
}

// ---- x = Wᵀ·g ------------------------------------------------------------------
void MatVecTImpl(const View& w, const float* g, float* x, int threads) {
  static thread_local AlignedBuffer<float> g_buf, acc_buf;
  const int p = w.p;
  const int64_t nb = w.col_blocks, mb = w.row_blocks;
  float* gpad = Scratch(g_buf, static_cast<std::size_t>(w.padded_rows()));
  std::memcpy(gpad, g, sizeof(float) * w.rows);
  for (int64_t r = w.rows; r < w.padded_rows(); ++r) gpad[r] = 0;
  float* acc2 = Scratch(acc_buf, static_cast<std::size_t>(nb * 2 * p));
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full = (p / N) * N;
  ParallelFor(nb, threads, [&](int64_t J0, int64_t J1, int) {
    std::memset(acc2 + J0 * 2 * p, 0, sizeof(float) * (J1 - J0) * 2 * p);
    for (int64_t I = 0; I < mb; ++I) {
      const float* gI = gpad + I * p;
      const float* q = w.values + I * nb * p;
      const uint16_t* k = w.offsets + I * nb;
      for (int64_t J = J0; J < J1; ++J) {
        float* a = acc2 + J * 2 * p + k[J];
        const float* qb = q + J * p;
        for (int64_t c = 0; c < full; c += N)
          hn::StoreU(hn::MulAdd(hn::LoadU(d, qb + c), hn::LoadU(d, gI + c), hn::LoadU(d, a + c)), d,
                     a + c);
        for (int64_t c = full; c < p; ++c) a[c] += qb[c] * gI[c];
      }
    }
    for (int64_t J = J0; J < J1; ++J) {
      const float* a = acc2 + J * 2 * p;
      for (int dd = 0; dd < p; ++dd) {
        const int64_t col = J * p + dd;
        if (col < w.cols) x[col] = a[dd] + a[dd + p];
      }
    }
  });
}

// ---- X = Wᵀ·G (feature-major batch) --------------------------------------------
template <int NV>
HWY_INLINE void BatchTColTile(const View& w, const float* g, int64_t batch, int64_t J, int dd,
                              int64_t b0, float* xrow) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  hn::Vec<decltype(d)> acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = hn::Zero(d);
  for (int64_t I = 0; I < w.row_blocks; ++I) {
    int c = dd - w.offsets[I * nb + J];
    c += c < 0 ? p : 0;
    const int64_t r = I * p + c;
    if (r >= w.rows) continue;
    const auto wq = hn::Set(d, w.values[(I * nb + J) * p + c]);
    const float* gr = g + r * batch + b0;
    for (int v = 0; v < NV; ++v) acc[v] = hn::MulAdd(wq, hn::LoadU(d, gr + v * N), acc[v]);
  }
  for (int v = 0; v < NV; ++v) hn::StoreU(acc[v], d, xrow + b0 + v * N);
}

void MatMulTImpl(const View& w, const float* g, int64_t batch, float* x, int threads) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  ParallelFor(nb, threads, [&](int64_t J0, int64_t J1, int) {
    for (int64_t J = J0; J < J1; ++J) {
      for (int dd = 0; dd < p; ++dd) {
        const int64_t col = J * p + dd;
        if (col >= w.cols) break;
        float* xrow = x + col * batch;
        int64_t b0 = 0;
        for (; b0 + 8 * N <= batch; b0 += 8 * N) BatchTColTile<8>(w, g, batch, J, dd, b0, xrow);
        if (b0 + 4 * N <= batch) {
          BatchTColTile<4>(w, g, batch, J, dd, b0, xrow);
          b0 += 4 * N;
        }
        if (b0 + 2 * N <= batch) {
          BatchTColTile<2>(w, g, batch, J, dd, b0, xrow);
          b0 += 2 * N;
        }
        if (b0 + N <= batch) {
          BatchTColTile<1>(w, g, batch, J, dd, b0, xrow);
          b0 += N;
        }
        for (int64_t b = b0; b < batch; ++b) {
          float acc = 0;
          for (int64_t I = 0; I < w.row_blocks; ++I) {
            int c = dd - w.offsets[I * nb + J];
            c += c < 0 ? p : 0;
            const int64_t r = I * p + c;
            if (r < w.rows) acc += w.values[(I * nb + J) * p + c] * g[r * batch + b];
          }
          xrow[b] = acc;
        }
      }
    }
  });
}

// ---- y = W·x column-wise, skipping zero inputs --------------------------------
// For every nonzero x_j (j = J·p + d) and every row block I of this worker:
//     y[I·p + ((d − k_IJ) mod p)] += col_values[j][I] · x_j
// The weights of a column are contiguous, so only the columns of nonzero
// inputs are read at all: with density δ, δ of the weight bytes move.
template <bool kPow2>
void SparseColumns(const PermDiagColumnPack& w, const int32_t* nz_index, const float* nz_value,
                   int64_t nnz, int64_t I0, int64_t I1, float* ypad) {
  // The scatter-add is scalar: x86 before AVX-512 has no scatter, and
  // staging N indices through memory for scalar read-modify-writes measured
  // no faster than this loop (gathering y with AVX2 was 1.7x slower); see
  // src/kernels/README.md for why the scatter bounds this product. The
  // weight stream: consecutive nonzero columns are far apart in memory, so
  // the hardware prefetcher restarts at every column; the next nonzero
  // column's values (and offsets) are prefetched in step with this one,
  // one cache line per 16 rows (a burst of the whole next column up front
  // measured 1.1-1.3x slower).
  const int p = w.p;
  const int mask = p - 1;
  const int64_t mb = w.row_blocks;
  const float* values = w.col_values.data();
  const uint8_t* offsets = w.col_offsets.data();
  constexpr int64_t kLine = 16;  // floats per cache line
  for (int64_t e = 0; e < nnz; ++e) {
    const int64_t j = nz_index[e];
    const float xj = nz_value[e];
    const int64_t J = j / p;
    const int dd = static_cast<int>(j - J * p);
    const float* v = values + j * mb;
    const uint8_t* k = offsets + J * mb;
    const int64_t jn = e + 1 < nnz ? nz_index[e + 1] : j;
    const float* vn = values + jn * mb;
    const uint8_t* kn = offsets + (jn / p) * mb;
    int64_t row_base = I0 * p;
    for (int64_t Il = I0; Il < I1; Il += kLine) {
      hwy::Prefetch(vn + Il);
      if ((Il - I0) % (4 * kLine) == 0) hwy::Prefetch(kn + Il);
      const int64_t Ie = std::min(I1, Il + kLine);
      for (int64_t I = Il; I < Ie; ++I, row_base += p) {
        int c;
        if constexpr (kPow2) {
          c = (dd - k[I]) & mask;
        } else {
          c = dd - k[I];
          c += c < 0 ? p : 0;
        }
        ypad[row_base + c] += v[I] * xj;
      }
    }
  }
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// AVX-512 (native vscatterdps): one nonzero column's update over N row
// blocks at a time is a gather of y at the N target rows, one FMA and a
// scatter back. The N indices of a vector never collide (one row per row
// block), so no conflict detection is needed. p a power of two, one-byte
// offsets, the same prefetch of the next column as SparseColumns. Not
// compiled for AVX2 and below, whose scatter Highway emulates lane by lane.
void SparseColumnsScatter(const PermDiagColumnPack& w, const int32_t* nz_index, const float* nz_value, int64_t nnz,
                          int64_t I0, int64_t I1, float* ypad) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(di)> du8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int p = w.p;
  const int mask = p - 1;
  const int64_t mb = w.row_blocks;
  const float* values = w.col_values.data();
  const uint8_t* offsets = w.col_offsets.data();
  const auto lane_rows = hn::Mul(hn::Iota(di, 0), hn::Set(di, p));  // lane l: row block I + l starts at l·p
  const auto vmask = hn::Set(di, mask);
  constexpr int64_t kLine = 16;
  for (int64_t e = 0; e < nnz; ++e) {
    const int64_t j = nz_index[e];
    const float xj = nz_value[e];
    const int64_t J = j / p;
    const int dd = static_cast<int>(j - J * p);
    const float* v = values + j * mb;
    const uint8_t* k = offsets + J * mb;
    const int64_t jn = e + 1 < nnz ? nz_index[e + 1] : j;
    const float* vn = values + jn * mb;
    const uint8_t* kn = offsets + (jn / p) * mb;
    const auto vx = hn::Set(df, xj);
    const auto vdd = hn::Set(di, dd);
    int64_t I = I0;
    for (; I + N <= I1; I += N) {
      if ((I - I0) % kLine == 0) hwy::Prefetch(vn + I);
      if ((I - I0) % (4 * kLine) == 0) hwy::Prefetch(kn + I);
      const auto c = hn::And(hn::Sub(vdd, hn::PromoteTo(di, hn::LoadU(du8, k + I))), vmask);
      const auto idx = hn::Add(hn::Add(lane_rows, hn::Set(di, static_cast<int32_t>(I * p))), c);
      const auto y = hn::GatherIndex(df, ypad, idx);
      hn::ScatterIndex(hn::MulAdd(hn::LoadU(df, v + I), vx, y), df, ypad, idx);
    }
    for (; I < I1; ++I) ypad[I * p + ((dd - k[I]) & mask)] += v[I] * xj;
  }
}
#endif

// Offsets of two bytes (p > 256): rare, kept simple.
void SparseColumnsWide(const PermDiagColumnPack& w, const int32_t* nz_index, const float* nz_value, int64_t nnz,
                       int64_t I0, int64_t I1, float* ypad) {
  const int p = w.p;
  for (int64_t e = 0; e < nnz; ++e) {
    const int64_t j = nz_index[e];
    const int64_t J = j / p;
    const int dd = static_cast<int>(j - J * p);
    const float* v = w.col_values.data() + j * w.row_blocks;
    const uint16_t* k = w.col_offsets16.data() + J * w.row_blocks;
    for (int64_t I = I0; I < I1; ++I) {
      int c = dd - k[I];
      c += c < 0 ? p : 0;
      ypad[I * p + c] += v[I] * nz_value[e];
    }
  }
}

// The rows of the zero-skipping product: one-byte offsets with a mask
// (p a power of two) or a conditional add, two-byte offsets above 256.
using ColumnsFn = void (*)(const PermDiagColumnPack&, const int32_t*, const float*, int64_t, int64_t, int64_t, float*);

bool AdmitsPow2(const KernelProblem& q) { return q.p <= 256 && (q.p & (q.p - 1)) == 0; }
bool AdmitsByteOffsets(const KernelProblem& q) { return q.p <= 256; }
bool AdmitsWideOffsets(const KernelProblem& q) { return q.p > 256; }  // the column pack has col_offsets16 only then

std::span<const Row<ColumnsFn>> SparseInputRows() {
  static const std::vector<Row<ColumnsFn>> rows = {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
      {"permdiag.sparse_input.scatter", AdmitsPow2, SparseColumnsScatter},
#endif
      {"permdiag.sparse_input.pow2", AdmitsPow2, SparseColumns<true>},
      {"permdiag.sparse_input.any_p", AdmitsByteOffsets, SparseColumns<false>},
      {"permdiag.sparse_input.wide_offsets", AdmitsWideOffsets, SparseColumnsWide},
  };
  return rows;
}

void MatVecSparseInputImpl(const PermDiagColumnPack& w, const float* x, const float* bias, float* y,
                           int threads) {
  static thread_local AlignedBuffer<float> y_buf, nzv_buf;
  static thread_local std::vector<int32_t> nzi;
  const int p = w.p;
  const ColumnsFn columns =
      detail::Pick(SparseInputRows(), {KernelOp::kPermDiagMatVecSparseInput, p, w.rows, w.cols, 1, false})->fn;
  float* ypad = Scratch(y_buf, static_cast<std::size_t>(w.row_blocks * p));
  // Leading-nonzero detection: compact the nonzero inputs once.
  nzi.resize(static_cast<std::size_t>(w.cols));
  float* nzv = Scratch(nzv_buf, static_cast<std::size_t>(w.cols));
  int64_t nnz = 0;
  // Branch-free (a branch at ~35% density mispredicts often); every store
  // is at nnz <= j, inside the buffers.
  for (int64_t j = 0; j < w.cols; ++j) {
    nzi[nnz] = static_cast<int32_t>(j);
    nzv[nnz] = x[j];
    nnz += x[j] != 0.0f;
  }
  const int32_t* nz_index = nzi.data();
  ParallelFor(w.row_blocks, threads, [&](int64_t I0, int64_t I1, int) {
    std::memset(ypad + I0 * p, 0, sizeof(float) * (I1 - I0) * p);
    columns(w, nz_index, nzv, nnz, I0, I1, ypad);
    const int64_t r1 = std::min(w.rows, I1 * p);
    for (int64_t r = I0 * p; r < r1; ++r) y[r] = ypad[r] + (bias ? bias[r] : 0.0f);
  });
}

// ---- int16 fixed point: exact int64 accumulators -----------------------------
// Products of two symmetric int16 values are below 2^30 and fit int32
// exactly; they are widened to int64 before accumulation, so no sum can
// overflow for any realistic n (2^33 terms).
//
// Row blocks [I0, I1) with the rows of a block in the lanes of d32 (c0 in
// steps of its lanes; the rows past the last whole vector in the scalar
// loop), each block column's inputs read at its offset from the doubled
// input xx. A block narrower than a full vector runs on a capped one (p = 4
// on four lanes), not in the scalar loop: the 784-1024-1024-10 mlp at p = 4
// (AVX3) took 0.6 ms per sample with every row there.
template <class D32>
void RowBlocksI16(D32 d32, const PermDiagView<int16_t>& w, const int16_t* xx, int64_t* acc, int64_t I0, int64_t I1) {
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  std::vector<int64_t> row(static_cast<std::size_t>(p));
#if HWY_TARGET == HWY_SCALAR
  const int64_t full = 0;  // one lane: the scalar loop below does everything
  (void)d32;
#else
  const hn::Rebind<int16_t, D32> d16;
  const hn::Half<D32> d32h;
  const hn::Repartition<int64_t, D32> d64;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d32));
  const int64_t H = static_cast<int64_t>(hn::Lanes(d64));
  const int64_t full = (p / N) * N;
  HWY_ALIGN int64_t tmp[2 * hn::MaxLanes(d64)];
#endif
  for (int64_t I = I0; I < I1; ++I) {
    const int16_t* q = w.values + I * nb * p;
    const uint16_t* k = w.offsets + I * nb;
    std::fill(row.begin(), row.end(), 0);
#if HWY_TARGET != HWY_SCALAR
    for (int64_t c0 = 0; c0 < full; c0 += N) {
      auto lo = hn::Zero(d64), hi = hn::Zero(d64);
      for (int64_t J = 0; J < nb; ++J) {
        const auto qv = hn::PromoteTo(d32, hn::LoadU(d16, q + J * p + c0));
        const auto xv = hn::PromoteTo(d32, hn::LoadU(d16, xx + J * 2 * p + k[J] + c0));
        const auto prod = hn::Mul(qv, xv);
        lo = hn::Add(lo, hn::PromoteTo(d64, hn::LowerHalf(d32h, prod)));
        hi = hn::Add(hi, hn::PromoteTo(d64, hn::UpperHalf(d32h, prod)));
      }
      hn::Store(lo, d64, tmp);
      hn::Store(hi, d64, tmp + H);
      for (int64_t i = 0; i < 2 * H; ++i) row[c0 + i] = tmp[i];
    }
#endif
    if (full < p)
      for (int64_t J = 0; J < nb; ++J) {
        const int16_t* qb = q + J * p;
        const int16_t* xb = xx + J * 2 * p + k[J];
        for (int64_t c = full; c < p; ++c) row[c] += int64_t{qb[c]} * xb[c];
      }
    for (int c = 0; c < p; ++c)
      if (I * p + c < w.rows) acc[I * p + c] = row[c];
  }
}

void MatVecI16AccImpl(const PermDiagView<int16_t>& w, const int16_t* x, int64_t* acc, int threads) {
  static thread_local std::vector<int16_t> xx;
  const int p = w.p;
  const int64_t nb = w.col_blocks;
  xx.assign(static_cast<std::size_t>(nb * 2 * p), 0);
  for (int64_t J = 0; J < nb; ++J)
    for (int t = 0; t < 2 * p; ++t) {
      const int64_t col = J * p + t % p;
      xx[J * 2 * p + t] = col < w.cols ? x[col] : 0;
    }
  const int16_t* xxp = xx.data();
  const hn::ScalableTag<int32_t> d32;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d32));
  ParallelFor(w.row_blocks, threads, [&](int64_t I0, int64_t I1, int) {
    // The widest vector of at most p lanes (a power of two). Two lanes ran
    // twice the scalar loop's speed at p = 2 on AVX2 and AVX3 but 0.55x on
    // SSSE3 (no 16-to-32-bit widening there): below SSE4, p < 4 stays scalar
    // (four lanes with p < 4 hold no whole vector).
    constexpr bool kTwoLanes = HWY_TARGET <= HWY_SSE4;
    if (p >= N) RowBlocksI16(d32, w, xxp, acc, I0, I1);
    else if (p >= 8) RowBlocksI16(hn::CappedTag<int32_t, 8>(), w, xxp, acc, I0, I1);
    else if (p >= 4 || !kTwoLanes) RowBlocksI16(hn::CappedTag<int32_t, 4>(), w, xxp, acc, I0, I1);
    else RowBlocksI16(hn::CappedTag<int32_t, 2>(), w, xxp, acc, I0, I1);
  });
}

// ---- This file's part of the kernel table -------------------------------------
// The single-kernel ops have one SIMD row each.
void PermDiagTableImpl(std::vector<KernelRow>* out) {
  detail::Describe(MatVecRows(), KernelOp::kPermDiagMatVec, out);
  detail::Describe(PackedRows(), KernelOp::kPermDiagMatVecPacked, out);
  detail::Describe(MatMulRowsRows(), KernelOp::kPermDiagMatMulRows, out);
  out->push_back({"permdiag.matmul.tiles", KernelOp::kPermDiagMatMul, "", AdmitsAll});
  out->push_back({"permdiag.matvec_t.doubled", KernelOp::kPermDiagMatVecT, "", AdmitsAll});
  out->push_back({"permdiag.matmul_t.tiles", KernelOp::kPermDiagMatMulT, "", AdmitsAll});
  detail::Describe(SparseInputRows(), KernelOp::kPermDiagMatVecSparseInput, out);
  out->push_back({"permdiag.matvec_i16.widened", KernelOp::kPermDiagMatVecI16, "", AdmitsAll});
}

const char* PermDiagSelectImpl(const KernelProblem& q) {
  switch (q.op) {
    case KernelOp::kPermDiagMatVecPacked:
      if (q.chunked) {
        const Row<GroupsFn>* row = detail::Pick(PackedRows(), q);
        return row ? row->name : nullptr;
      }
      [[fallthrough]];  // a row-major pack runs the matvec rows
    case KernelOp::kPermDiagMatVec: {
      KernelProblem m = q;
      m.op = KernelOp::kPermDiagMatVec;
      return detail::Pick(MatVecRows(), m)->name;
    }
    case KernelOp::kPermDiagMatMulRows: return detail::Pick(MatMulRowsRows(), q)->name;
    case KernelOp::kPermDiagMatMul: return "permdiag.matmul.tiles";
    case KernelOp::kPermDiagMatVecT: return "permdiag.matvec_t.doubled";
    case KernelOp::kPermDiagMatMulT: return "permdiag.matmul_t.tiles";
    case KernelOp::kPermDiagMatVecSparseInput: return detail::Pick(SparseInputRows(), q)->name;
    case KernelOp::kPermDiagMatVecI16: return "permdiag.matvec_i16.widened";
    default: return nullptr;
  }
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(MatVecImpl);
HWY_EXPORT(MatMulImpl);
HWY_EXPORT(MatMulRowsImpl);
HWY_EXPORT(MatMulRowsLanesImpl);
HWY_EXPORT(LanesRowSamplesImpl);
HWY_EXPORT(MatVecTImpl);
HWY_EXPORT(MatMulTImpl);
HWY_EXPORT(MatVecSparseInputImpl);
HWY_EXPORT(MatVecPackedImpl);
HWY_EXPORT(MatVecI16AccImpl);
PERMDNN_EXPORT_KERNEL_TABLE(PermDiag, PermDiagTableImpl, PermDiagSelectImpl)

namespace detail {
const char* PermDiagSelectOn(int64_t target, const KernelProblem& q) {
  return (*HWY_DISPATCH_TABLE(PermDiagSelectImpl)[TargetIndex(target)])(q);
}
}  // namespace detail

namespace {
// The preferred target's entry of a HWY_EXPORT table when a preference
// applies to q (PreferredSimdTarget), else the usual dynamic dispatch.
template <class Fn>
Fn Dispatch(Fn const* table, const KernelProblem& q) {
  if (const int64_t t = PreferredSimdTarget(q)) return table[detail::TargetIndex(t)];
  return table[hwy::GetChosenTarget().GetIndex()];
}
}  // namespace

namespace simd {
void MatVec(const PermDiagView<float>& w, const float* x, const float* bias, float* y, int threads) {
  (*Dispatch(HWY_DISPATCH_TABLE(MatVecImpl), {KernelOp::kPermDiagMatVec, w.p, w.rows, w.cols, 1, false}))(
      w, x, bias, y, threads);
}
void MatMul(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias, float* y,
            int threads) {
  HWY_DYNAMIC_DISPATCH(MatMulImpl)(w, x, batch, bias, y, threads);
}
void MatMulRows(const PermDiagView<float>& w, const float* x, int64_t batch, const float* bias, float* y,
                int threads) {
  HWY_DYNAMIC_DISPATCH(MatMulRowsImpl)(w, x, batch, bias, y, threads);
}
void MatMulRowsLanes(const PermDiagLanesPack& w, const float* x, int64_t batch, const float* bias, float* y,
                     int threads) {
  HWY_DYNAMIC_DISPATCH(MatMulRowsLanesImpl)(w, x, batch, bias, y, threads);
}
int64_t LanesRowSamples() { return HWY_DYNAMIC_DISPATCH(LanesRowSamplesImpl)(); }
void MatVecT(const PermDiagView<float>& w, const float* g, float* x, int threads) {
  HWY_DYNAMIC_DISPATCH(MatVecTImpl)(w, g, x, threads);
}
void MatMulT(const PermDiagView<float>& w, const float* g, int64_t batch, float* x, int threads) {
  HWY_DYNAMIC_DISPATCH(MatMulTImpl)(w, g, batch, x, threads);
}
void MatVecSparseInput(const PermDiagColumnPack& w, const float* x, const float* bias, float* y,
                       int threads) {
  HWY_DYNAMIC_DISPATCH(MatVecSparseInputImpl)(w, x, bias, y, threads);
}
void MatVecPacked(const PermDiagRowPack& w, const float* x, const float* bias, float* y, int threads) {
  (*Dispatch(HWY_DISPATCH_TABLE(MatVecPackedImpl),
             {KernelOp::kPermDiagMatVecPacked, w.p, w.rows, w.cols, 1, w.chunked}))(w, x, bias, y, threads);
}
void MatVecI16Acc(const PermDiagView<int16_t>& w, const int16_t* x, int64_t* acc, int threads) {
  HWY_DYNAMIC_DISPATCH(MatVecI16AccImpl)(w, x, acc, threads);
}
}  // namespace simd
}  // namespace permdnn::kernels
#endif
