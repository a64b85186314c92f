// The permuted-diagonal convolution's SIMD kernel (layout, reads and the
// performance model: include/permdnn/kernels/permdiag_conv.h), in Highway
// with dynamic dispatch, and its rows of the kernel table (op
// permdiag.conv, one row per kernel size and stride, and for 1×1 a
// `.shared` row per stride for packs whose output vectors share their
// permutation, PermDiagConvPack::shared_index, and on 8 lanes a `.rotated`
// row at stride 1 for p = 8, PermDiagConvPack::rotated).
//
// Register tile: R output rows × T output columns of NV output vectors
// (NV·R·T accumulators). Per pass (a column block; chained packs, every
// 3×3: PermDiagConvPack::chained): the first vector's KH·KW weight vectors
// are loaded once where they stay in registers (WeightsInRegisters; the
// others' are memory operands of the FMAs), the accumulators move to the
// pass's frame (one permutation each), and each input position of the
// tile's halo ((R−1)·S + KH rows × (T−1)·S + KW columns) is loaded once
// and multiplied into every accumulator whose window covers it; after the
// last pass the accumulators move back to the output's lanes. (Unchained,
// the 1×1 tiles: each loaded halo position is permuted once per output
// vector instead.) With 32 vector registers (AVX-512): R = 2, T = 4, NV = 2
// for 3×3 (16 accumulators, 9 weights, the moves' indices, the input),
// R = 2, T = 8, NV = 1 for 1×1 at stride 1 and R = 2, T = 2, NV = 4 at
// stride 2, with padding (ConvRun); with 16 (AVX2, SSE4): R = 2,
// T = 4 for 3×3 with the weights loaded at each FMA (WeightsInRegisters;
// on AVX2 at stride 2 R = 2, T = 2, NV = 2), R = 1, T = 8 for 1×1. Tiles
// at the bottom and right use smaller R and T (every R ≤ RMAX, T ≤ TMAX
// is instantiated), so no output position is
// computed twice; edge tiles (kEdge) skip the halo rows outside the image
// and read zeros for its columns outside it, so nothing outside is read.
// 1×1 layers without padding on any side (every one in resnet18 and
// mobilenet_v2) run Conv1x1 instead on 16 lanes, and on 8 lanes at p < 8
// (at p = 8 too with a shared permutation): runs of positions whose input
// vectors are loaded once for all column blocks inside them; with a shared
// permutation each loaded position is also permuted once for four output
// vectors (two on 8 lanes). On 8 lanes at p = 8, stride 1 and offsets not
// shared, with at least 4 column blocks, the `.rotated` row sums each
// output vector's blocks in pairs in the order of their shifts, rotating
// its accumulators once per pair (Run1x1Rot). The 1×1 tiles above remain
// for padded 1×1 layers (shared or not), for the other p = 8 layers on 8
// lanes and for 4 lanes (SSE4).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/permdiag_conv_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "permdnn/core/cpu_time.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag_conv.h"
#include "src/kernels/table_internal.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using detail::Row;

struct ConvArgs {
  const PermDiagConvPack* w;
  const PermDiagConvShape* s;
  const float* x;
  const PermDiagConvEpilogue* e;
  float* y;
  bool prefetch_out;  // OutputPrefetchPays
};

// Whether tiles prefetch their output lines (and the residual's) before
// their column-block loop: when the output is too big to stay in L2 between
// calls (batch 16 on resnet18's layers), a tile's stores miss and stall it
// once the store buffer fills. A read prefetch (prefetcht0; the build does
// not enable PRFCHW's write prefetch). Zen 5, AVX3, one
// thread, eight alternating rounds of permdnn_conv_bench, 2026-12-06: batch
// 16 0.91-1.01x the time (3x3 layers at p = 4 and 8, median 0.97x); batch 1,
// where the output stays in L2, 0.98-1.09x (median 1.01-1.03x), hence the
// size test.
bool OutputPrefetchPays(const PermDiagConvPack& w, const PermDiagConvShape& s) {
  return s.batch * w.out_vectors * s.out_h * s.out_w * w.lanes * static_cast<int64_t>(sizeof(float)) >
         (int64_t{2} << 20);
}

#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR
constexpr int kLanes = static_cast<int>(hn::MaxLanes(hn::ScalableTag<float>()));
#else
constexpr int kLanes = 1;
#endif
alignas(64) constexpr float kZeroVector[kLanes] = {};  // what an edge tile reads outside the image
// kRotations[r][l] = (l + r) mod L: a vector's lanes rotated by r (the
// rotated 1×1 runs' moves between frames).
constexpr std::array<int32_t, kLanes * kLanes> RotationTable() {
  std::array<int32_t, kLanes * kLanes> t{};
  for (int r = 0; r < kLanes; ++r)
    for (int l = 0; l < kLanes; ++l) t[static_cast<std::size_t>(r * kLanes + l)] = (l + r) % kLanes;
  return t;
}
alignas(64) constexpr std::array<int32_t, kLanes * kLanes> kRotationArray = RotationTable();
constexpr const int32_t* kRotations = kRotationArray.data();

// The epilogue of output vector o of sample n, for the tiles and the 1×1
// runs alike: bias, the residual, the clamp, padded lanes zeroed, stored at
// element offset `at` of the vector's plane.
template <class D>
struct OutputVector {
  using V = hn::Vec<D>;
  V bias, lo, hi;
  hn::Mask<D> keep;
  float* y;
  const float* residual;
  HWY_INLINE OutputVector(D d, const ConvArgs& a, int64_t n, int64_t o) {
    const PermDiagConvPack& w = *a.w;
    const int64_t plane = (n * w.out_vectors + o) * a.s->out_h * a.s->out_w * w.lanes;
    bias = hn::Load(d, w.bias.data() + o * w.lanes);
    lo = hn::Set(d, a.e->lo);
    hi = hn::Set(d, a.e->hi);
    keep = hn::FirstN(d, static_cast<size_t>(std::min<int64_t>(w.lanes, w.out_channels - o * w.lanes)));
    y = a.y + plane;
    residual = a.e->residual ? a.e->residual + plane : nullptr;
  }
  HWY_INLINE void Store(D d, int64_t at, V acc) const {
    V v = hn::Add(acc, bias);
    if (residual) v = hn::Add(v, hn::LoadU(d, residual + at));
    v = hn::Min(hn::Max(v, lo), hi);
    hn::StoreU(hn::IfThenElseZero(keep, v), d, y + at);
  }
};

template <int KH, int KW>
constexpr int TileRows() {
  return kLanes >= 16 || KH * KW > 1 ? 2 : 1;
}
template <int KH, int KW>
constexpr int TileCols() {
  return kLanes >= 16 || KH * KW == 1 ? 8 : 4;
}
// Whether the kernel's weights of a column block stay in registers. With 16
// registers (AVX2, SSE4) a 3×3 kernel's nine would leave room for four
// accumulators, too few to cover the FMA latency (two FMAs per cycle, four
// cycles each: eight in flight); there they are loaded at each FMA instead
// (L1 hits) and the tile keeps 2×4 accumulators: 43-51% → 70-79% of
// oneDNN's AVX2 convolution on resnet18's 3×3 stride-1 layers.
template <int KH, int KW>
constexpr bool WeightsInRegisters() {
  return kLanes >= 16 || KH * KW == 1;
}

// One R×T tile of NV output vectors ov, ov + 1, ... of sample n at (oy0,
// ox0). kEdge: the tile's halo may leave the image: halo rows outside it
// are skipped, halo columns outside it read a zero vector (a pointer select
// per position, no branch) instead of a test and zero blend per position
// (src/kernels/README.md, stop 40: 0.70-0.89x the time on resnet18's
// layer3.0 / layer4.0 on AVX3, 0.63-0.79x on layer3.0 / layer4.0 / layer4 on
// AVX2); interior tiles read without tests. With NV = 2 each halo position is
// loaded once for both output vectors (before chained packs: and permuted
// once per vector; chained, used as loaded): half the input loads per
// FMA (stride 2 reads 85 halo positions per 144 FMAs of a 2×8 tile, and
// those loads, mostly from L2, were that tile's limit: dropping its permutes
// changed nothing, sharing the loads gained 1.25-1.4x; the NV = 2 tile ran
// 0.79-0.88x the time without its permutes at batch 1, before the edge-tile
// change); the first vector's weights stay in registers
// (WeightsInRegisters), the others' are memory operands.
template <int KH, int KW, int S, int R, int T, bool kEdge, int NV>
HWY_NOINLINE void Tile(const ConvArgs& a, int64_t n, int64_t ov, int64_t oy0, int64_t ox0) {
  using D = hn::ScalableTag<float>;
  using DI = hn::RebindToSigned<D>;
  using V = hn::Vec<D>;
  const D d;
  const DI di;
  constexpr int L = kLanes, HR = (R - 1) * S + KH, HC = (T - 1) * S + KW, K = KH * KW;
  // Chained packs (PermDiagConvPack::chained: every pack with more than one
  // tap on these lanes): the accumulators move to each pass's frame (R·T
  // permutes per vector and pass) and the halo is used as loaded, where
  // permuting each halo position per vector took HR·HC (2x8 tile at stride
  // 1: 40; NV = 2 at stride 2: 45 per vector).
  constexpr bool kChained = K > 1;
  const PermDiagConvPack& w = *a.w;
  const PermDiagConvShape& s = *a.s;
  PERMDNN_DCHECK(w.chained == kChained);
  const int64_t nb = w.passes, iv_count = (s.in_channels + L - 1) / L;
  const int64_t in_plane = s.in_h * s.in_w * L;
  const int64_t iy0 = oy0 * S - s.pad_top, ix0 = ox0 * S - s.pad_left;
  V acc[NV][R * T];
#pragma GCC unroll 4
  for (int u = 0; u < NV; ++u)
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) acc[u][i] = hn::Zero(d);
  const int32_t* index = w.index.data() + ov * nb * L;
  const float* weights = w.weights.data() + ov * nb * K * L;
  const float* xs = a.x + n * iv_count * in_plane;
  // Edge tiles: which halo rows and columns lie inside the image. A row
  // outside is skipped (its products are zero); a column outside reads a
  // zero vector instead (a pointer select, no branch per position).
  bool col_in[HC];
#pragma GCC unroll 24
  for (int hx = 0; hx < HC; ++hx) col_in[hx] = !kEdge || (ix0 + hx >= 0 && ix0 + hx < s.in_w);
  if (a.prefetch_out) {
    const float* res = a.e->residual;
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) {
      const int64_t at = (n * w.out_vectors + ov + u) * s.out_h * s.out_w * L;
#pragma GCC unroll 2
      for (int oy = 0; oy < R; ++oy)
        for (int i = 0; i < T * L; i += 16) {  // one request per 64-byte line
          const int64_t o = at + ((oy0 + oy) * s.out_w + ox0) * L + i;
          hwy::Prefetch(a.y + o);
          if (res) hwy::Prefetch(res + o);
        }
    }
  }
  for (int64_t J = 0; J < nb; ++J) {
    decltype(hn::IndicesFromVec(d, hn::Zero(di))) idx[NV];
    if constexpr (!kChained) {
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) idx[u] = hn::IndicesFromVec(d, hn::Load(di, index + (u * nb + J) * L));
    } else {
      if (J > 0) {
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) {
          const auto move = hn::IndicesFromVec(d, hn::Load(di, w.chain.data() + ((ov + u) * nb + J) * L));
#pragma GCC unroll 16
          for (int i = 0; i < R * T; ++i) acc[u][i] = hn::TableLookupLanes(acc[u][i], move);
        }
      }
    }
    V wt[K];  // read only where WeightsInRegisters
    if constexpr (WeightsInRegisters<KH, KW>()) {
#pragma GCC unroll 9
      for (int t = 0; t < K; ++t) wt[t] = hn::Load(d, weights + (J * K + t) * L);
    }
    const float* wt1 = weights + (nb + J) * K * L;  // the second vector's; the u-th at (u − 1)·nb·K·L further
    const float* xv = xs + ((J * w.p) / L) * in_plane;
#pragma GCC unroll 8
    for (int hy = 0; hy < HR; ++hy) {
      const int64_t iy = iy0 + hy;
      if (kEdge && (iy < 0 || iy >= s.in_h)) continue;
      const float* xrow = xv + iy * s.in_w * L + ix0 * L;
#pragma GCC unroll 24
      for (int hx = 0; hx < HC; ++hx) {
        const V raw = hn::LoadU(d, kEdge && !col_in[hx] ? kZeroVector : xrow + hx * L);
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) {
          const V v = kChained ? raw : hn::TableLookupLanes(raw, idx[u]);
#pragma GCC unroll 3
          for (int ky = 0; ky < KH; ++ky) {
            if ((hy - ky) % S != 0) continue;
            const int oy = (hy - ky) / S;
            if (hy < ky || oy >= R) continue;
#pragma GCC unroll 3
            for (int kx = 0; kx < KW; ++kx) {
              if ((hx - kx) % S != 0) continue;
              const int ox = (hx - kx) / S;
              if (hx < kx || ox >= T) continue;
              const V wk = u == 0 && WeightsInRegisters<KH, KW>()
                               ? wt[ky * KW + kx]
                               : hn::Load(d, (u == 0 ? weights + J * K * L : wt1 + (u - 1) * nb * K * L) +
                                                    (ky * KW + kx) * L);
              acc[u][oy * T + ox] = hn::MulAdd(wk, v, acc[u][oy * T + ox]);
            }
          }
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int u = 0; u < NV; ++u) {
    if constexpr (kChained) {  // back to the output's lanes
      const auto last = hn::IndicesFromVec(d, hn::Load(di, w.chain.data() + (ov + u) * nb * L));
#pragma GCC unroll 16
      for (int i = 0; i < R * T; ++i) acc[u][i] = hn::TableLookupLanes(acc[u][i], last);
    }
    const OutputVector<D> out(d, a, n, ov + u);
#pragma GCC unroll 2
    for (int oy = 0; oy < R; ++oy)
#pragma GCC unroll 8
      for (int ox = 0; ox < T; ++ox) out.Store(d, ((oy0 + oy) * s.out_w + ox0 + ox) * L, acc[u][oy * T + ox]);
  }
}

using TileFn = void (*)(const ConvArgs&, int64_t, int64_t, int64_t, int64_t);

// The tiles of R rows: [t - 1] = Tile<KH, KW, S, R, t, kEdge, NV>.
template <int KH, int KW, int S, int R, bool kEdge, int NV, int... Ts>
constexpr std::array<TileFn, sizeof...(Ts)> TileRow(std::integer_sequence<int, Ts...>) {
  return {&Tile<KH, KW, S, R, Ts + 1, kEdge, NV>...};
}

// All tiles of one convolution, NV output vectors per tile (ConvRun picks
// NV); the vectors of a group past its last multiple of NV run one at a
// time, on the same (narrower) tile.
template <int KH, int KW, int S, int NV>
void ConvTiles(const ConvArgs& a, int threads) {
  constexpr int RM = TileRows<KH, KW>(), TM = TileCols<KH, KW>() / NV;
  using Seq = std::make_integer_sequence<int, TM>;
  using Table = std::array<std::array<TileFn, TM>, 2>;  // [r == RM][t - 1]
  // [edge][vectors - 1]
  static const std::array<std::array<Table, 2>, 2> tiles = {
      {{Table{TileRow<KH, KW, S, 1, false, 1>(Seq()), TileRow<KH, KW, S, RM, false, 1>(Seq())},
        Table{TileRow<KH, KW, S, 1, false, NV>(Seq()), TileRow<KH, KW, S, RM, false, NV>(Seq())}},
       {Table{TileRow<KH, KW, S, 1, true, 1>(Seq()), TileRow<KH, KW, S, RM, true, 1>(Seq())},
        Table{TileRow<KH, KW, S, 1, true, NV>(Seq()), TileRow<KH, KW, S, RM, true, NV>(Seq())}}}};
  const PermDiagConvShape& s = *a.s;
  const int64_t row_tiles = (s.out_h + RM - 1) / RM, ovs = a.w->out_vectors;
  // Loop order. Weights that fit in L2 (256 KiB) stay there while all output
  // vectors of one row tile pass, so the tile's input stays in L1 (1x1
  // layers read each input vector once per FMA: ov outermost streamed it
  // from L2 again per output vector, 28 vs 47 GMAC/s on 64 channels at
  // 56x56); larger weights keep one group of output vectors' weights hot
  // over all row tiles instead. A group's weights fit in a third of L1
  // (16 KiB; at least NV vectors): for each column tile every vector of the
  // group runs while the tile's input halo is still in L1 (p = 16 layers,
  // whose vectors have few column blocks: 62 → 69% of the dense rate on
  // resnet18's layer1 at B=1).
  if (ovs == 0 || s.batch == 0) return;
  const bool ov_inner = a.w->weights.size() * sizeof(float) <= (256u << 10);
  const int64_t per_ov_bytes =
      std::max<int64_t>(1, a.w->passes * KH * KW * kLanes * static_cast<int64_t>(sizeof(float)));
  int64_t group = std::min<int64_t>(ovs, std::max<int64_t>(NV, (16 << 10) / per_ov_bytes / NV * NV));
  // Enough work items for the threads (four each), down to NV per group.
  while (group > NV && s.batch * ((ovs + group - 1) / group) * row_tiles < 4 * int64_t{threads})
    group = std::max<int64_t>(NV, group / 2 / NV * NV);
  const int64_t groups = (ovs + group - 1) / group, per_sample = groups * row_tiles;
  ParallelFor(s.batch * per_sample, threads, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / per_sample, rest = item % per_sample;
      const int64_t g = ov_inner ? rest % groups : rest / row_tiles;
      const int64_t oy0 = (ov_inner ? rest / groups : rest % row_tiles) * RM;
      const int64_t ov_end = std::min(ovs, (g + 1) * group);
      const int r = static_cast<int>(std::min<int64_t>(RM, s.out_h - oy0));
      const int64_t iy0 = oy0 * S - s.pad_top;
      const bool rows_in = iy0 >= 0 && iy0 + (r - 1) * S + KH <= s.in_h;
      for (int64_t ox0 = 0; ox0 < s.out_w; ox0 += TM) {
        const int t = static_cast<int>(std::min<int64_t>(TM, s.out_w - ox0));
        const int64_t ix0 = ox0 * S - s.pad_left;
        const bool in = rows_in && ix0 >= 0 && ix0 + (t - 1) * S + KW <= s.in_w;
        const std::array<Table, 2>& by_vectors = tiles[in ? 0 : 1];
        int64_t ov = g * group;
        for (; ov + NV <= ov_end; ov += NV) by_vectors[1][r == 1 ? 0 : 1][t - 1](a, n, ov, oy0, ox0);
        for (; ov < ov_end; ++ov) by_vectors[0][r == 1 ? 0 : 1][t - 1](a, n, ov, oy0, ox0);
      }
    }
  });
}

// 1×1 convolutions without padding: a run of T output positions (flat, in
// row-major order across output rows; at stride 2 each position's input
// offset is computed once per run) of NV output vectors. The loop is over
// input vectors: the run's T input positions of one input vector are
// loaded once and serve every column block J inside it (L/p of them) and
// every one of the NV vectors, each with its own permutation and weights.
// So a p = 4 layer on 16 lanes loads each input position once per eight
// FMAs (NV = 2) where ConvTiles, walking the column blocks, reloaded it for
// each block (one load per FMA).
//
// kShared (a pack with shared_index): every vector's permutation is the first
// one's, so each input position is permuted once per column block for all
// NV vectors (one permutation per NV FMAs instead of one per FMA).
template <int S, int T, int NV, bool kShared = false>
HWY_NOINLINE void Run1x1(const ConvArgs& a, int64_t n, int64_t ov, int64_t q0) {
  using D = hn::ScalableTag<float>;
  using DI = hn::RebindToSigned<D>;
  using V = hn::Vec<D>;
  const D d;
  const DI di;
  constexpr int L = kLanes;
  const PermDiagConvPack& w = *a.w;
  const PermDiagConvShape& s = *a.s;
  const int64_t nb = w.col_blocks, iv_count = (s.in_channels + L - 1) / L;
  const int64_t in_plane = s.in_h * s.in_w * L, per_vector = L / w.p;
  // Input offsets of the run's positions within one input vector's plane.
  int64_t off[T];
#pragma GCC unroll 16
  for (int i = 0; i < T; ++i) {
    const int64_t q = q0 + i;
    off[i] = S == 1 ? q * L : ((q / s.out_w) * S * s.in_w + (q % s.out_w) * S) * L;
  }
  V acc[NV][T];
#pragma GCC unroll 4
  for (int u = 0; u < NV; ++u)
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) acc[u][i] = hn::Zero(d);
  const int32_t* index = w.index.data() + ov * nb * L;
  const float* weights = w.weights.data() + ov * nb * L;
  const float* xs = a.x + n * iv_count * in_plane;
  for (int64_t iv = 0, J0 = 0; J0 < nb; ++iv, J0 += per_vector) {
    const float* xv = xs + iv * in_plane;
    V x[T];
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) x[i] = hn::LoadU(d, xv + off[i]);
    const int64_t J1 = std::min(nb, J0 + per_vector);
    for (int64_t J = J0; J < J1; ++J) {
      if constexpr (kShared) {
        const auto idx = hn::IndicesFromVec(d, hn::Load(di, index + J * L));
        V wk[NV];
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) wk[u] = hn::Load(d, weights + (u * nb + J) * L);
#pragma GCC unroll 16
        for (int i = 0; i < T; ++i) {
          const V v = hn::TableLookupLanes(x[i], idx);
#pragma GCC unroll 4
          for (int u = 0; u < NV; ++u) acc[u][i] = hn::MulAdd(wk[u], v, acc[u][i]);
        }
      } else {
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) {
          const auto idx = hn::IndicesFromVec(d, hn::Load(di, index + (u * nb + J) * L));
          const V wk = hn::Load(d, weights + (u * nb + J) * L);
#pragma GCC unroll 16
          for (int i = 0; i < T; ++i) acc[u][i] = hn::MulAdd(wk, hn::TableLookupLanes(x[i], idx), acc[u][i]);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int u = 0; u < NV; ++u) {
    const OutputVector<D> out(d, a, n, ov + u);
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) out.Store(d, (q0 + i) * L, acc[u][i]);
  }
}

// A rotated pack (PermDiagConvPack::rotated: p = L, one tap), stride 1: a
// run of T positions of one output vector walks its pairs of blocks (sorted
// by shift; the blocks of shift k accumulate in k's frame, lane (c + k) mod
// L holding output lane c, the input vector used as loaded with the
// weights stored in that frame): before each pair the T accumulators
// rotate by the pair's move (the identity inside a shift), after the last
// back to the output's lanes. No branch on the shifts (their segments'
// loop exits mispredicted in a network, where other layers run between
// two calls), at most one permutation per two FMAs, which AVX2 issues on a
// port of its own. Each FMA reads its own input vector from L1 (no vector
// serves two blocks at p = L), at one pointer and constant displacements
// (the positions are consecutive). Only 8-lane targets run it
// (ConvRunRotated).
template <int T>
HWY_NOINLINE void Run1x1Rot(const ConvArgs& a, int64_t n, int64_t ov, int64_t q0) {
  using D = hn::ScalableTag<float>;
  using DI = hn::RebindToSigned<D>;
  using V = hn::Vec<D>;
  const D d;
  const DI di;
  constexpr int L = kLanes;
  const PermDiagConvPack& w = *a.w;
  const PermDiagConvShape& s = *a.s;
  PERMDNN_DCHECK(w.rotated);
  const int64_t iv_count = (s.in_channels + L - 1) / L;
  const int64_t in_plane = s.in_h * s.in_w * L;
  V acc[T];
  const int32_t first = w.rot_first[ov], last = w.rot_first[ov + 1];
  const int32_t* pr = w.rot_pairs.data();
  const float* pw = w.rot_weights.data();
  const float* xq = a.x + n * iv_count * in_plane + q0 * L;
  {  // the first pair starts in its own frame (zero is zero in any)
    const V wa = hn::Load(d, pw + first * 2 * L), wb = hn::Load(d, pw + (first * 2 + 1) * L);
    const float* xa = xq + pr[first * 4] * in_plane;
    const float* xb = xq + pr[first * 4 + 1] * in_plane;
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) acc[i] = hn::Mul(wa, hn::LoadU(d, xa + i * L));
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) acc[i] = hn::MulAdd(wb, hn::LoadU(d, xb + i * L), acc[i]);
  }
  for (int32_t q = first + 1; q < last; ++q) {
    const auto move = hn::IndicesFromVec(d, hn::Load(di, kRotations + pr[q * 4 + 2] * L));
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) acc[i] = hn::TableLookupLanes(acc[i], move);
    const V wa = hn::Load(d, pw + q * 2 * L), wb = hn::Load(d, pw + (q * 2 + 1) * L);
    const float* xa = xq + pr[q * 4] * in_plane;
    const float* xb = xq + pr[q * 4 + 1] * in_plane;
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) acc[i] = hn::MulAdd(wa, hn::LoadU(d, xa + i * L), acc[i]);
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) acc[i] = hn::MulAdd(wb, hn::LoadU(d, xb + i * L), acc[i]);
  }
  {  // back to the output's lanes
    const auto move = hn::IndicesFromVec(d, hn::Load(di, kRotations + w.rot_final[ov] * L));
#pragma GCC unroll 16
    for (int i = 0; i < T; ++i) acc[i] = hn::TableLookupLanes(acc[i], move);
  }
  const OutputVector<D> out(d, a, n, ov);
#pragma GCC unroll 16
  for (int i = 0; i < T; ++i) out.Store(d, (q0 + i) * L, acc[i]);
}

enum class RunKind { kGeneral, kShared, kRotated };
using RunFn = void (*)(const ConvArgs&, int64_t, int64_t, int64_t);
template <int S, int NV, RunKind kKind, int... Ts>
constexpr std::array<RunFn, sizeof...(Ts)> RunRow(std::integer_sequence<int, Ts...>) {
  if constexpr (kKind == RunKind::kRotated) {
    static_assert(S == 1 && NV == 1, "the rotated runs are of one output vector at stride 1");
    return {&Run1x1Rot<Ts + 1>...};
  }
  else return {&Run1x1<S, Ts + 1, NV, kKind == RunKind::kShared>...};
}

// All runs of a padless 1×1 convolution. Work items: (sample, group of
// output vectors, chunk of positions); inside one, each NV vectors walk the
// chunk's runs. A chunk's input (every input vector at its positions) is
// about 16 KiB (at 8 lanes and stride 2, where a position uses half of the
// cache lines it touches, about twice that in L1), so it stays in L1 while
// the group's vectors pass over it (Zen 5, AVX3, batch 1: 256 KiB chunks
// streamed it from L2 per vector and ran p = 16 layers 1.2-1.5x slower; 32
// and 64 KiB were between).
template <int S, int NV, int TM, RunKind kKind = RunKind::kGeneral>
void Conv1x1(const ConvArgs& a, int threads) {
  constexpr bool kShared = kKind == RunKind::kShared;
  using Seq = std::make_integer_sequence<int, TM>;
  static const std::array<RunFn, TM> runs_nv = RunRow<S, NV, kKind>(Seq());
  // Shared: the vectors left over from NV in pairs that still share their
  // permutations (a layer of 2 or 3 vectors would otherwise run each alone:
  // Intel Xeon, AVX3, mbv2 144>24 @56, p = 4, batch 1, 0.111 -> 0.083 ms,
  // the general kernel 0.091-0.096).
  constexpr RunKind kOne = kKind == RunKind::kRotated ? kKind : RunKind::kGeneral;  // a vector alone shares nothing
  static const std::array<RunFn, TM> runs_1 = RunRow<S, 1, kOne>(Seq());
  static const std::array<RunFn, TM> runs_2 =  // (run by kShared only; otherwise runs_1 again)
      RunRow<S, kShared ? 2 : 1, kShared ? kKind : kOne>(Seq());
  const PermDiagConvShape& s = *a.s;
  const int64_t ovs = a.w->out_vectors, positions = s.out_h * s.out_w;
  if (ovs == 0 || s.batch == 0 || positions == 0) return;
  const int64_t iv_count = (s.in_channels + kLanes - 1) / kLanes;
  const int64_t per_position = std::max<int64_t>(1, iv_count * kLanes * static_cast<int64_t>(sizeof(float)));
  int64_t chunk = std::max<int64_t>(TM, (16 << 10) / per_position / TM * TM);
  chunk = std::min(chunk, (positions + TM - 1) / TM * TM);
  int64_t group = ovs;
  const auto items = [&] { return s.batch * ((ovs + group - 1) / group) * ((positions + chunk - 1) / chunk); };
  while (items() < 4 * int64_t{threads} && (group > NV || chunk > TM)) {
    if (group > NV) group = std::max<int64_t>(NV, group / 2 / NV * NV);
    else chunk = std::max<int64_t>(TM, chunk / 2 / TM * TM);
  }
  const int64_t groups = (ovs + group - 1) / group, chunks = (positions + chunk - 1) / chunk;
  ParallelFor(s.batch * groups * chunks, threads, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / (groups * chunks), rest = item % (groups * chunks);
      const int64_t g = rest / chunks, c = rest % chunks;
      const int64_t q_begin = c * chunk, q_end = std::min(positions, q_begin + chunk);
      const int64_t ov_end = std::min(ovs, (g + 1) * group);
      int64_t ov = g * group;
      for (; ov + NV <= ov_end; ov += NV)
        for (int64_t q = q_begin; q < q_end; q += TM)
          runs_nv[static_cast<std::size_t>(std::min<int64_t>(TM, q_end - q) - 1)](a, n, ov, q);
      if constexpr (kShared && NV > 2)
        for (; ov + 2 <= ov_end; ov += 2)
          for (int64_t q = q_begin; q < q_end; q += TM)
            runs_2[static_cast<std::size_t>(std::min<int64_t>(TM, q_end - q) - 1)](a, n, ov, q);
      for (; ov < ov_end; ++ov)
        for (int64_t q = q_begin; q < q_end; q += TM)
          runs_1[static_cast<std::size_t>(std::min<int64_t>(TM, q_end - q) - 1)](a, n, ov, q);
    }
  });
}

// NV = 2 (each loaded input position shared by two output vectors, a 2×4
// tile each) on 16 lanes for every 3×3: at stride 2 (its halo loads are its
// limit: 1.25-1.4x), at p >= 8 (few column blocks per vector; p = 16 layers
// of resnet18 gained 5-12 points of the dense rate), and since the chained
// packs at p = 4 too (both tiles then permute 16 accumulators per 144 FMAs,
// and the 2×4 pair loads 24 halo positions where the 2×8 loads 40: Intel
// Xeon, AVX3, two alternating runs of permdnn_conv_bench --only 3x3 --p 4,
// 2026-12-07 20:30 UTC: the stride-1 rows at 0.98-1.13x the GMAC/s,
// median 1.09x; before, p = 4 lost 0-3 points and kept the 2×8 single-vector
// tile); on 8 lanes (AVX2) two 2×2 tiles at stride 2 since the chained
// packs made a shared load worth sharing (the input used as loaded: Intel
// Xeon, three alternating runs of permdnn_conv_bench --only 3x3 --p 4,8
// --simd-target avx2, 2026-12-07 22:40 UTC: resnet18's layer3.0 0.83-0.89x
// the time, layer4.0 0.91-0.95x, layer2.0 0.96-1.06x; at stride 1 the same
// tiles ran layer3 0.91-0.94x, layer4 1.00-1.04x, layer1 up to 1.06x: not
// taken there); NV = 4 (2×2 tiles) for padded 1×1
// layers at stride 2; NV = 1 elsewhere. 1×1 layers without padding run
// Conv1x1 instead: runs of 8 positions of two output vectors on
// 16 lanes (NV = 1 runs of 12 and NV = 2 runs of 6 or 10 were slower or
// level, NV = 3 x 6 and NV = 4 x 4 slower), runs of 6 of one vector on 8
// lanes where a vector holds several column blocks (p < 8; at p = 8 the
// tile below was level with it). Before, the 2×2 tiles of four vectors
// (NV = 4) ran every 1×1 layer at stride 2, the 2×8 tile at stride 1.
// Measured with bench/permdiag_conv_bench.cc (docs/benchmarks.md,
// convbench; stop 46 in src/kernels/README.md).
// A 1×1 layer at stride S with no padding: none at the top and left, and
// the output size that leaves none at the bottom and right either (an ONNX
// pads = [0, 0, 1, 1] gives a larger output, whose last rows and columns
// read padding). Conv1x1 runs these.
template <int S>
bool Padless1x1(const PermDiagConvShape& s) {
  return s.pad_top == 0 && s.pad_left == 0 && s.out_h == (s.in_h - 1) / S + 1 && s.out_w == (s.in_w - 1) / S + 1;
}

template <int KH, int KW, int S>
void ConvRun(const ConvArgs& a, int threads) {
  if constexpr (KH == 1 && KW == 1 && kLanes >= 8) {
    if (Padless1x1<S>(*a.s)) {
      if constexpr (kLanes >= 16) {
        return Conv1x1<S, 2, 8>(a, threads);
      } else {
        if (a.w->p < kLanes) return Conv1x1<S, 1, 6>(a, threads);
      }
    }
  }
  if constexpr (KH == 3 && (kLanes >= 16 || (kLanes == 8 && S == 2))) {
    return ConvTiles<KH, KW, S, 2>(a, threads);
  }
  if constexpr (kLanes >= 16 && KH == 1 && S == 2) return ConvTiles<KH, KW, S, 4>(a, threads);
  ConvTiles<KH, KW, S, 1>(a, threads);
}

// A 1×1 pack with shared_index: padless layers on runs of NV vectors that
// share each permuted input position (Run1x1's kShared), the rest as
// ConvRun. Four vectors × four positions on 16 lanes (26 registers with
// the inputs, weights, index and permuted vector), two × four on 8 lanes.
// Intel Xeon, one thread, permdnn_conv_bench's shared column against the
// general kernel on the same layers (2026-12-08, three rounds): AVX3 p = 4
// median 0.75x the time, p = 8 0.81x, p = 16 0.85x; AVX2 p = 4 0.79x, p = 8
// 0.87x. One-round variants on AVX3: 3 × 6 level, 2 × 8 slower.
template <int S>
void ConvRunShared(const ConvArgs& a, int threads) {
  if constexpr (kLanes >= 8) {
    if (Padless1x1<S>(*a.s)) {
      if constexpr (kLanes >= 16) return Conv1x1<S, 4, 4, RunKind::kShared>(a, threads);
      else return Conv1x1<S, 2, 4, RunKind::kShared>(a, threads);
    }
  }
  ConvRun<1, 1, S>(a, threads);
}

// A rotated pack (p = L, one tap) at stride 1 on 8 lanes: padless layers
// on runs of 12 positions of one output vector (Run1x1Rot: 12 accumulators,
// the weights, the move; runs of 8 took 0.95-1.19x the time of 12 on the
// conv bench's 1x1 shapes, median 1.10x, measured with the first, segment
// version; see AdmitsRotated1x1), the rest as ConvRun.
void ConvRunRotated(const ConvArgs& a, int threads) {
  if constexpr (kLanes == 8) {
    if (a.w->rotated && Padless1x1<1>(*a.s)) return Conv1x1<1, 1, 12, RunKind::kRotated>(a, threads);
  }
  ConvRun<1, 1, 1>(a, threads);
}

using ConvFn = void (*)(const ConvArgs&, int);

bool LanesFit(const KernelProblem& q) { return kLanes > 1 && kLanes % q.p == 0; }
template <int K, int S>
bool AdmitsConv(const KernelProblem& q) {
  return LanesFit(q) && q.kh == K && q.kw == K && q.stride == S;
}
template <int S>
bool AdmitsShared1x1(const KernelProblem& q) {
  return AdmitsConv<1, S>(q) && q.shared;
}
// The rotated row: p = L on 8 lanes, stride 1, at least 4 column blocks.
// Intel Xeon, AVX2 (where the permutations have a port of their own and
// the 1×8 tiles issue one per FMA), one thread, against the 1×8 tiles that
// ran these layers before (2026-12-08, three alternating rounds):
// permdnn_conv_bench --only 1x1 --p 8 --simd-target avx2 0.75-0.95x the
// time on six of mobilenet_v2's 1x1 shapes at batch 1 and 16 (144>24 @56
// 1.00x / 1.09x); mobilenet_v2-p8 (permdnn run --profile --simd-target
// avx2, batch 1) its rotated layers 0.90x in all, the model end to end
// 0.94x / 0.96x at batch 1 / 16 (permdnn run --bench --cpu-time),
// squeezenet1_1-p8 0.94x / 0.95x. A first version walked each shift's
// blocks as a segment, moving only between shifts: faster in the layer
// bench, which repeats one layer, but its segments' loop exits are data
// the branch predictor has not seen in a network, where other layers run
// between two calls (mobilenet_v2's expansions, 8-20 blocks over up to 120
// output vectors, 1.01-1.36x the tiles' time there; it was kept to 24 or
// more blocks, the model 0.98x / 0.95x); pairs have no such branch. On 16
// lanes (AVX3, p = 16) the runs of two vectors sharing each loaded input
// (Conv1x1) stay: the rotated runs, one 64-byte load per FMA, ran 0.95-1.5x
// their time.
bool AdmitsRotated1x1(const KernelProblem& q) {
  return kLanes == 8 && AdmitsConv<1, 1>(q) && q.p == kLanes &&
         (q.cols + q.p - 1) / q.p >= PermDiagConvPack::kRotatedMinBlocks;
}

std::span<const Row<ConvFn>> ConvRows() {
  static const std::vector<Row<ConvFn>> rows = [] {
    std::vector<Row<ConvFn>> r;
    if constexpr (kLanes > 1) {
      r.push_back({"permdiag.conv.3x3s1", AdmitsConv<3, 1>, ConvRun<3, 3, 1>});
      r.push_back({"permdiag.conv.3x3s2", AdmitsConv<3, 2>, ConvRun<3, 3, 2>});
      r.push_back({"permdiag.conv.1x1s1.shared", AdmitsShared1x1<1>, ConvRunShared<1>});
      r.push_back({"permdiag.conv.1x1s2.shared", AdmitsShared1x1<2>, ConvRunShared<2>});
      if constexpr (kLanes == 8) r.push_back({"permdiag.conv.1x1s1.rotated", AdmitsRotated1x1, ConvRunRotated});
      r.push_back({"permdiag.conv.1x1s1", AdmitsConv<1, 1>, ConvRun<1, 1, 1>});
      r.push_back({"permdiag.conv.1x1s2", AdmitsConv<1, 2>, ConvRun<1, 1, 2>});
    }
    return r;
  }();
  return rows;
}

int LanesImpl() { return kLanes; }

// BlockedChannelGather (permdiag_conv.h) with one hardware gather per
// destination vector: the lanes' source offsets are the same at every
// position, shifted by q·L.
void GatherImpl(const float* src, const int32_t* from, int64_t vectors, int64_t positions,
                const PermDiagConvEpilogue& e, float* dst) {
  using D = hn::ScalableTag<float>;
  const D d;
  const hn::RebindToSigned<D> di;
  constexpr int L = kLanes;
  const auto lo = hn::Set(d, e.lo), hi = hn::Set(d, e.hi);
  for (int64_t v = 0; v < vectors; ++v) {
    const auto idx = hn::LoadU(di, from + v * L);
    float* out = dst + v * positions * L;
    const float* r = e.residual ? e.residual + v * positions * L : nullptr;
    for (int64_t q = 0; q < positions; ++q) {
      auto x = hn::GatherIndex(d, src + q * L, idx);
      if (r) x = hn::Add(x, hn::LoadU(d, r + q * L));
      hn::StoreU(hn::Min(hn::Max(x, lo), hi), d, out + q * L);
    }
  }
}

// ProbePermuteIssue (permdiag_conv.h): 12 independent chains per kind, so
// the latencies (FMA 4, permutation up to 6 cycles) hide behind the issue
// rate, in at most 15 vector registers (AVX2 has 16). The indices come from
// memory, so no permutation folds away; the pairs permute vectors loaded
// from L1 (the address moves with the iteration, so nothing is hoisted;
// one load per pair, on the load ports, where the 1x1 runs load an input
// vector once per several pairs) and only the FMAs form chains. A short
// run first, discarded, lets the core reach its clock. On SSE4 / SSSE3
// (no FMA, 16 registers of 4 lanes) the "FMA" is a multiply and an add,
// and the permutation chain's code spills: those rates are rough.
template <int kKind>  // 0: FMA, 1: permutation, 2: permutation feeding an FMA
HWY_NOINLINE double IssueRate(const int32_t* index, const float* source, double seconds) {
  using D = hn::ScalableTag<float>;
  const D d;
  const hn::RebindToSigned<D> di;
  constexpr int kChains = 12;
  const auto idx = hn::IndicesFromVec(d, hn::LoadU(di, index));
  const auto w = hn::Set(d, 1.0000001f);
  hn::Vec<D> a[kChains];
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) a[i] = hn::Set(d, static_cast<float>(i));
  constexpr int64_t kBlock = 1 << 16;  // iterations between clock reads
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t iterations = 0;
  const double t0 = ThreadCpuMs();
  double t1 = t0;
  do {
    for (int64_t n = 0; n < kBlock; ++n) {
      const float* x = source + (n & 3) * kChains * lanes;
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) {
        if constexpr (kKind == 0) a[i] = hn::MulAdd(a[i], w, w);
        if constexpr (kKind == 1) a[i] = hn::TableLookupLanes(a[i], idx);
        if constexpr (kKind == 2) a[i] = hn::MulAdd(hn::TableLookupLanes(hn::Load(d, x + i * lanes), idx), w, a[i]);
      }
    }
    iterations += kBlock;
    t1 = ThreadCpuMs();
  } while (t1 - t0 < seconds * 1e3);
  float sink = 0;  // keeps the chains' results alive
  for (int i = 0; i < kChains; ++i) sink += hn::GetLane(a[i]);
  volatile float keep = sink;
  (void)keep;
  return static_cast<double>(iterations) * kChains / ((t1 - t0) * 1e6);
}

PermuteIssueRates ProbeImpl(double seconds) {
  // A rotation by 3 inside blocks of 4 lanes (any permutation costs the same).
  alignas(64) int32_t index[kLanes];
  for (int l = 0; l < kLanes; ++l) index[l] = kLanes >= 4 ? (l & ~3) | ((l + 3) & 3) : l;
  PermuteIssueRates r;
  r.lanes = kLanes;
  if constexpr (kLanes > 1) {
    AlignedBuffer<float> source(4 * 12 * kLanes);
    for (std::size_t i = 0; i < source.size(); ++i) source.data()[i] = 1e-3f * static_cast<float>(i % 97);
    (void)IssueRate<0>(index, source.data(), seconds / 4);  // warm-up
    r.fma_per_ns = IssueRate<0>(index, source.data(), seconds);
    r.permute_per_ns = IssueRate<1>(index, source.data(), seconds);
    r.pair_per_ns = IssueRate<2>(index, source.data(), seconds);
  }
  return r;
}

// The row for this problem, or nullptr (the reference loops run).
const Row<ConvFn>* ConvRow(const PermDiagConvPack& w, const PermDiagConvShape& s) {
  // (A pack built for more than one tap on these lanes is chained, which
  // the tiles expect; one built otherwise is not.)
  if (w.lanes != kLanes || s.stride_h != s.stride_w || w.chained != (w.kh * w.kw > 1)) return nullptr;
  KernelProblem q{KernelOp::kPermDiagConv, w.p, w.out_channels, w.in_channels, s.batch, false};
  q.kh = w.kh;
  q.kw = w.kw;
  q.stride = s.stride_h;
  q.shared = w.shared_index;
  return detail::Pick(ConvRows(), q);
}

bool AdmitsImpl(const PermDiagConvPack& w, const PermDiagConvShape& s) { return ConvRow(w, s) != nullptr; }

void ConvImpl(const PermDiagConvPack& w, const PermDiagConvShape& s, const float* x, const PermDiagConvEpilogue& e,
              float* y, int threads) {
  const Row<ConvFn>* row = ConvRow(w, s);
  if (row == nullptr) return PermDiagConv2DReference(w, s, x, e, y);
  row->fn(ConvArgs{&w, &s, x, &e, y, OutputPrefetchPays(w, s)}, threads);
}

void ConvTableImpl(std::vector<KernelRow>* out) { detail::Describe(ConvRows(), KernelOp::kPermDiagConv, out); }

const char* ConvSelectImpl(const KernelProblem& q) {
  if (q.op != KernelOp::kPermDiagConv) return nullptr;
  const Row<ConvFn>* row = detail::Pick(ConvRows(), q);
  return row ? row->name : nullptr;
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(LanesImpl);
HWY_EXPORT(AdmitsImpl);
HWY_EXPORT(ConvImpl);
HWY_EXPORT(GatherImpl);
HWY_EXPORT(ProbeImpl);
PERMDNN_EXPORT_KERNEL_TABLE(PermDiagConv, ConvTableImpl, ConvSelectImpl)

int PermDiagConvLanes() { return HWY_DYNAMIC_DISPATCH(LanesImpl)(); }

void BlockedChannelGather(const float* src, const int32_t* from, int64_t vectors, int64_t positions, int lanes,
                          const PermDiagConvEpilogue& e, float* dst) {
  if (!detail::UseReference(KernelOp::kPermDiagConv) && lanes > 1 && lanes == PermDiagConvLanes())
    return HWY_DYNAMIC_DISPATCH(GatherImpl)(src, from, vectors, positions, e, dst);
  for (int64_t v = 0; v < vectors; ++v)
    for (int64_t q = 0; q < positions; ++q)
      for (int l = 0; l < lanes; ++l) {
        const int64_t at = (v * positions + q) * lanes + l;
        const float x = src[q * lanes + from[v * lanes + l]] + (e.residual ? e.residual[at] : 0.0f);
        dst[at] = std::min(std::max(x, e.lo), e.hi);
      }
}

PermuteIssueRates ProbePermuteIssue(double seconds) { return HWY_DYNAMIC_DISPATCH(ProbeImpl)(seconds); }

bool PermDiagConvSimdAdmits(const PermDiagConvPack& w, const PermDiagConvShape& s) {
  if (detail::UseReference(KernelOp::kPermDiagConv)) return false;
  return HWY_DYNAMIC_DISPATCH(AdmitsImpl)(w, s);
}

void PermDiagConv2D(const PermDiagConvPack& w, const PermDiagConvShape& s, const float* x,
                    const PermDiagConvEpilogue& e, float* y, int threads) {
  if (detail::UseReference(KernelOp::kPermDiagConv)) return PermDiagConv2DReference(w, s, x, e, y);
  HWY_DYNAMIC_DISPATCH(ConvImpl)(w, s, x, e, y, threads);
}

}  // namespace permdnn::kernels
#endif
