// Addition-only ternary products (kernels/ternary.h): pack, reference and
// Highway SIMD kernels.
//
// Layouts (TernaryPack): words[k][0..W) / [W..2W) the plus / minus planes of
// kept group k as 64-bit words (bit e = weight e of the group, W =
// ceil(group_len / 64)); index[plus_begin[r] .. minus_begin[r]) the columns
// of row r's +1 weights, [minus_begin[r] .. plus_begin[r + 1]) its −1
// weights, over the kept groups only.
//
// ternary.matvec.masks (y = W·x): per kept group and vector of N lanes, the
// N plane bits at bit v·N of the group (N divides 64 on every target: 1, 4,
// 8, 16, so a vector's bits never straddle two words) are broadcast, ANDed
// with the lane bits 1 << i and compared with zero: that is the lane mask
// IfThenElseZero selects the inputs with, then one add per plane (the
// minus sum is subtracted once per row). A vector whose 2N plane bits are
// all zero is skipped. Over-read: the last vector of a group reads up to
// N − 1 floats past the group, so x is copied once per call into a buffer
// with 16 zero floats of padding (its bits there are zero: nothing added).
// Performance model: per N weights one load of x, two mask builds and two
// adds; the weight stream is 2 bits per weight, so large layers at batch 1
// are bound by x in L1/L2, not by the weights (fp32: 32 bits per weight).
//
// ternary.matmul.lists (Y = W·X, feature-major): per tile of 4N batch
// columns (outer) and row (inner), four accumulators; each +1 column adds its row of X (four
// unaligned loads, four adds), each −1 column subtracts; then one
// MulAdd(scale, acc, bias) per vector; where X's row stride would crowd
// the strip into a few L1 sets (StripCrowdsL1: a batch of 12544 = a 28x28
// conv at B=16: 144 rows on 16 of the 64 sets), the strip is first copied
// to a contiguous buffer (docs/ternary.md, "Kernel speed"). Then tiles of N
// and a scalar tail;
// no over-read. Eight accumulators (the +1 and -1 columns apart) measured
// no faster than four. Two load ports and two FP add ports on Zen 5 bound it at
// one weight per cycle per tile: the skipped groups and zero codes are the
// whole gain over dense (the dense GEMM does one FMA per weight and tile).
//
// ternary.matvec.lut (AVX2, AVX-512): per chunk c of four inputs the
// subset-sum table T_c[s] = sum of x[4c + j] over the bits j of s (16
// floats: one vector on AVX-512, two on AVX2), built once per call for
// every chunk. Per block of 16 rows and chunk: the 16 code bytes widened
// to 32-bit lanes, T_c looked up at the plus nibble and at the minus
// nibble (vpermps; on AVX2 both halves and a blend on bit 3), one add
// each. 64 weights in about seven instructions on AVX-512, against two
// loads, two mask builds and two adds per 16 kept weights for the masks
// row; pruned groups are looked up as code 0 (they cost as kept ones),
// chunks whose four inputs are all zero are not visited. Bound by the
// shuffle unit (widening + two vpermps per 64 weights: about 3 cycles
// measured on Zen 5).
//
// ternary.matmul.lut (Y = W·X, every target): per tile of Z <= 4 vectors
// of batch columns (outer) and group column j, the tables of S = 8 chunks
// at a time, T[c][s][4N] (S·16·4N floats: 32 KB on AVX-512, in L1),
// built from X's rows with 11 adds and 15 stores per chunk and vector;
// then every row of the slice that kept group j loads its accumulators,
// adds T[c][plus] and T[c][minus] into two sets of Z registers per chunk
// and stores them back. Per four weights and vector: two loads and two
// adds whatever the codes, against one load and one add per nonzero
// weight for the lists row; the table build is shared by the rows that
// kept the group, so the row admits 32 rows and more (measured: 16 rows
// ran at 0.45x of the lists row). Bound by the loads: table loads whose
// address comes from a code byte loaded just before ran 1.2-1.4 adds per
// cycle in a standalone loop on Zen 5, 2.0 with addresses computed from
// registers, so each row's codes of a block are read as one 64-bit word
// (1.6-1.8; the kernel as a whole about 1.1 with the table build and the
// accumulator round trips), where sgemm issues two register FMAs. Tails:
// the partial vector of the last tile is a masked load (AVX2, AVX-512) or a
// zero-filled copy, and a copy out.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/ternary_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/aligned_allocator.h>
#include <hwy/highway.h>

#include <cpuid.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/ternary.h"
#include "src/kernels/table_internal.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using detail::Row;

alignas(64) static constexpr uint32_t kLaneBits[16] = {1u << 0, 1u << 1, 1u << 2,  1u << 3,  1u << 4,  1u << 5,
                                                       1u << 6, 1u << 7, 1u << 8,  1u << 9,  1u << 10, 1u << 11,
                                                       1u << 12, 1u << 13, 1u << 14, 1u << 15};

void TernaryRowsImpl(const TernaryPack* w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto lane_bits = hn::Load(du, kLaneBits);
  const uint64_t low = N >= 64 ? ~uint64_t{0} : (uint64_t{1} << N) - 1;
  const TernaryMatrix& m = w->matrix;
  const int64_t L = m.group_len(), W = w->words_per_plane;
  for (int64_t r = r0; r < r1; ++r) {
    auto acc_p = hn::Zero(d), acc_m = hn::Zero(d);
    for (int64_t k = m.row_start(r); k < m.row_start(r + 1); ++k) {
      const float* xg = x + m.group_col(k) * L;
      const uint64_t* pw = w->words.data() + k * 2 * W;
      for (int64_t v = 0; v * N < L; ++v) {
        const int64_t bit = v * N;
        const uint64_t pb = (pw[bit / 64] >> (bit % 64)) & low, mb = (pw[W + bit / 64] >> (bit % 64)) & low;
        if ((pb | mb) == 0) continue;
        const auto xv = hn::LoadU(d, xg + bit);
        const auto pmask = hn::RebindMask(d, hn::Ne(hn::And(hn::Set(du, static_cast<uint32_t>(pb)), lane_bits),
                                                    hn::Zero(du)));
        const auto mmask = hn::RebindMask(d, hn::Ne(hn::And(hn::Set(du, static_cast<uint32_t>(mb)), lane_bits),
                                                    hn::Zero(du)));
        acc_p = hn::Add(acc_p, hn::IfThenElseZero(pmask, xv));
        acc_m = hn::Add(acc_m, hn::IfThenElseZero(mmask, xv));
      }
    }
    const float sum = hn::GetLane(hn::SumOfLanes(d, hn::Sub(acc_p, acc_m)));
    y[r] = m.scale()[r] * sum + (bias ? bias[r] : 0.0f);
  }
}

// Whether a strip of `rows` rows of `width` bytes, `stride` bytes apart,
// crowds into a few sets of a 64-set L1 with 64-byte lines: some set gets
// more than twice the lines an even spread would give it (a stride of 12544
// floats touches 16 of the 64 sets: 4x).
// Strides and widths in bytes (the fp32 and the int16 rows).
bool StripCrowdsL1(int64_t rows, int64_t stride, int64_t width) {
  constexpr int64_t kSets = 64, kLine = 64;  // bytes per line
  int64_t count[kSets] = {};
  const int64_t lines = (width + kLine - 1) / kLine, even = (rows * lines + kSets - 1) / kSets;
  for (int64_t k = 0; k < rows; ++k)
    for (int64_t j = 0; j < lines; ++j)
      if (++count[((k * stride) / kLine + j) % kSets] > 2 * even) return true;
  return false;
}

// acc ± X's rows idx[e0 .. e1) (each 4N columns from xs, rows ld apart) into
// four accumulators. The column indices are read two at a time as one
// 64-bit word: the row loads' addresses then wait on fewer, earlier loads
// (the lookup-table row's codes had the same limit; docs/ternary.md).
template <bool kMinus, class D, class V>
HWY_INLINE void ListRows(D d, const float* xs, int64_t ld, const int32_t* idx, int64_t e0, int64_t e1, V& a0, V& a1,
                         V& a2, V& a3) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto add = [&](const float* xr) {
    if constexpr (kMinus) {
      a0 = hn::Sub(a0, hn::LoadU(d, xr));
      a1 = hn::Sub(a1, hn::LoadU(d, xr + N));
      a2 = hn::Sub(a2, hn::LoadU(d, xr + 2 * N));
      a3 = hn::Sub(a3, hn::LoadU(d, xr + 3 * N));
    } else {
      a0 = hn::Add(a0, hn::LoadU(d, xr));
      a1 = hn::Add(a1, hn::LoadU(d, xr + N));
      a2 = hn::Add(a2, hn::LoadU(d, xr + 2 * N));
      a3 = hn::Add(a3, hn::LoadU(d, xr + 3 * N));
    }
  };
  int64_t e = e0;
  for (; e + 2 <= e1; e += 2) {
    int32_t pair[2];
    std::memcpy(pair, idx + e, sizeof(pair));  // one 64-bit load
    add(xs + int64_t{pair[0]} * ld);
    add(xs + int64_t{pair[1]} * ld);
  }
  if (e < e1) add(xs + int64_t{idx[e]} * ld);
}

void TernaryMatMulRowsImpl(const TernaryPack* w, const float* x, int64_t batch, const float* bias, float* y,
                           int64_t r0, int64_t r1) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int32_t* idx = w->index.data();
  const float* scale = w->matrix.scale().data();
  // Batch tiles outside, rows inside: every row of the slice reads the same
  // 4N-column strip of X, which then stays in L1/L2 across the rows
  // (row-outer re-read the whole of X from L3 for every row). X's rows are
  // `batch` floats apart; where that stride crowds the strip into a few L1
  // sets (StripCrowdsL1), the strip is first copied to a contiguous buffer.
  // Elsewhere the copy would cost more than it saves.
  const int64_t K = w->cols(), TW = 4 * N;
  // The answer depends on (K, batch) only: kept per thread for the last
  // shape, so a layer run call after call scans the sets once.
  static thread_local int64_t crowd_k = -1, crowd_batch = -1;
  static thread_local bool crowded = false;
  if (crowd_k != K || crowd_batch != batch) {
    crowded = batch >= TW && StripCrowdsL1(K, batch * int64_t{sizeof(float)}, TW * int64_t{sizeof(float)});
    crowd_k = K;
    crowd_batch = batch;
  }
  const bool pack = crowded;
  static thread_local hwy::AlignedFreeUniquePtr<float[]> strip;
  static thread_local int64_t strip_size = 0;
  if (pack && strip_size < K * TW) {
    strip = hwy::AllocateAligned<float>(static_cast<std::size_t>(K * TW));
    strip_size = K * TW;
  }
  const int64_t ld = pack ? TW : batch;  // the strip's row stride
  int64_t b0 = 0;
  for (; b0 + TW <= batch; b0 += TW) {
    const float* xs = x + b0;
    if (pack) {
      float* xp = strip.get();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t z = 0; z < TW; z += N) hn::Store(hn::LoadU(d, x + k * batch + b0 + z), d, xp + k * TW + z);
      xs = xp;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p0 = w->plus_begin[r], m0 = w->minus_begin[r], m1 = w->plus_begin[r + 1];
      auto a0 = hn::Zero(d), a1 = a0, a2 = a0, a3 = a0;
      ListRows<false>(d, xs, ld, idx, p0, m0, a0, a1, a2, a3);
      ListRows<true>(d, xs, ld, idx, m0, m1, a0, a1, a2, a3);
      const auto vs = hn::Set(d, scale[r]), vb = hn::Set(d, bias ? bias[r] : 0.0f);
      float* yr = y + r * batch + b0;
      hn::StoreU(hn::MulAdd(vs, a0, vb), d, yr);
      hn::StoreU(hn::MulAdd(vs, a1, vb), d, yr + N);
      hn::StoreU(hn::MulAdd(vs, a2, vb), d, yr + 2 * N);
      hn::StoreU(hn::MulAdd(vs, a3, vb), d, yr + 3 * N);
    }
  }
  for (; b0 + N <= batch; b0 += N)
    for (int64_t r = r0; r < r1; ++r) {
      auto a = hn::Zero(d);
      for (int64_t e = w->plus_begin[r]; e < w->minus_begin[r]; ++e)
        a = hn::Add(a, hn::LoadU(d, x + int64_t{idx[e]} * batch + b0));
      for (int64_t e = w->minus_begin[r]; e < w->plus_begin[r + 1]; ++e)
        a = hn::Sub(a, hn::LoadU(d, x + int64_t{idx[e]} * batch + b0));
      hn::StoreU(hn::MulAdd(hn::Set(d, scale[r]), a, hn::Set(d, bias ? bias[r] : 0.0f)), d, y + r * batch + b0);
    }
  for (; b0 < batch; ++b0)
    for (int64_t r = r0; r < r1; ++r) {
      float a = 0.0f;
      for (int64_t e = w->plus_begin[r]; e < w->minus_begin[r]; ++e) a += x[int64_t{idx[e]} * batch + b0];
      for (int64_t e = w->minus_begin[r]; e < w->plus_begin[r + 1]; ++e) a -= x[int64_t{idx[e]} * batch + b0];
      y[r * batch + b0] = scale[r] * a + (bias ? bias[r] : 0.0f);
    }
}

#if HWY_ARCH_X86 && (HWY_TARGET <= HWY_AVX3 || HWY_TARGET == HWY_AVX2)
#define PERMDNN_TERNARY_LUT_MATVEC 1
#if HWY_TARGET <= HWY_AVX3
// NB blocks of 16 rows (consecutive in `codes`), NC chunks per pass: the
// table vector of a chunk is loaded once for the NB blocks, and the NB·NC
// plus and minus sums are independent add chains.
constexpr int kLutPairBlocks = 2, kLutPassChunks = 2;  // 1.15x the (1, 4) pass on Zen 5; (2, 4), (4, 1), (4, 2) tie with it
template <int NB, int NC>
HWY_INLINE void LutBlocksAvx3(const float* T, const uint8_t* codes, int64_t C, const int32_t* live, int64_t n,
                              float* sums) {
  __m512 ap[NB][NC], am[NB][NC];
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < NC; ++j) ap[i][j] = am[i][j] = _mm512_setzero_ps();
  const auto step = [&](int j, int64_t c) {
    const __m512 t = _mm512_loadu_ps(T + c * 16);
    for (int i = 0; i < NB; ++i) {
      const __m512i v =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (i * C + c) * 16)));
      ap[i][j] = _mm512_add_ps(ap[i][j], _mm512_permutexvar_ps(v, t));
      am[i][j] = _mm512_add_ps(am[i][j], _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), t));
    }
  };
  int64_t k = 0;
  for (; k + NC <= n; k += NC)
    for (int j = 0; j < NC; ++j) step(j, live[k + j]);
  for (; k < n; ++k) step(0, live[k]);
  for (int i = 0; i < NB; ++i) {
    __m512 plus = ap[i][0], minus = am[i][0];
    for (int j = 1; j < NC; ++j) {
      plus = _mm512_add_ps(plus, ap[i][j]);
      minus = _mm512_add_ps(minus, am[i][j]);
    }
    _mm512_store_ps(sums + 16 * i, _mm512_sub_ps(plus, minus));
  }
}
#endif

// y = W·x by table lookups (ternary.matvec.lut); x padded (kPad zeros) so
// the last chunk's four inputs exist.
void TernaryLutMatVec(const TernaryPack* w, const float* x, const float* bias, float* y, int threads) {
  const hn::ScalableTag<float> d;
  constexpr int64_t N = HWY_LANES(float);  // 16 or 8
  const TernaryMatrix& m = w->matrix;
  const int64_t C4 = (m.cols() + 15) / 16, C = 4 * C4, blocks = (m.rows() + 15) / 16;
  // 64-byte aligned: each chunk's table is one cache line (a std::vector's
  // 16-byte alignment split every table load across two lines).
  static thread_local AlignedBuffer<float> tables;
  static thread_local std::vector<int32_t> live_chunks;
  tables.Resize(static_cast<std::size_t>(C * 16));
  live_chunks.resize(static_cast<std::size_t>(C));
  int64_t n_live = 0;
  // T_c[s] = sum of x[4c + j] over the bits j of s: lanes s of the first
  // vector hold s < N; on AVX2 the second vector (s >= 8) adds x[4c + 3].
  // Chunks past the columns read the zero padding of x (their codes are 0).
  const hn::RebindToUnsigned<decltype(d)> du;
  const auto iota = hn::Iota(du, 0);
  const auto bit0 = hn::RebindMask(d, hn::Ne(hn::And(iota, hn::Set(du, 1u)), hn::Zero(du)));
  const auto bit1 = hn::RebindMask(d, hn::Ne(hn::And(iota, hn::Set(du, 2u)), hn::Zero(du)));
  const auto bit2 = hn::RebindMask(d, hn::Ne(hn::And(iota, hn::Set(du, 4u)), hn::Zero(du)));
  const auto bit3 = hn::RebindMask(d, hn::Ne(hn::And(iota, hn::Set(du, 8u)), hn::Zero(du)));
  // A chunk whose four inputs are all zero adds nothing to any row: it is
  // left out of the live list the rows walk (ReLU outputs: most chunks at
  // 10-20% input density).
  for (int64_t c = 0; c < C; ++c) {
    const float* xc = x + 4 * c;
    if (xc[0] == 0.0f && xc[1] == 0.0f && xc[2] == 0.0f && xc[3] == 0.0f) continue;
    live_chunks[n_live++] = static_cast<int32_t>(c);
    auto t = hn::Add(hn::IfThenElseZero(bit0, hn::Set(d, xc[0])), hn::IfThenElseZero(bit1, hn::Set(d, xc[1])));
    t = hn::Add(t, hn::IfThenElseZero(bit2, hn::Set(d, xc[2])));
    if constexpr (N == 16) {
      hn::StoreU(hn::Add(t, hn::IfThenElseZero(bit3, hn::Set(d, xc[3]))), d, tables.data() + c * 16);
    } else {
      hn::StoreU(t, d, tables.data() + c * 16);
      hn::StoreU(hn::Add(t, hn::Set(d, xc[3])), d, tables.data() + c * 16 + 8);
    }
  }
  const float* T = tables.data();
  const int32_t* live = live_chunks.data();
  const uint8_t* codes = w->block_codes.data();
  const float* scale = m.scale().data();
  const int64_t rows = m.rows();
  // Writes block b's 16 sums (rows past the end dropped) as y = scale·sum + bias.
  const auto finish = [&](int64_t b, const float* sums) {
    for (int64_t i = 0; i < 16 && b * 16 + i < rows; ++i) {
      const int64_t r = b * 16 + i;
      y[r] = scale[r] * sums[i] + (bias ? bias[r] : 0.0f);
    }
  };
  // Raw intrinsics for the lookups: vpermps reads only the low 4 (AVX-512)
  // or 3 (AVX2) bits of each 32-bit index, so a widened code byte is the
  // plus index as it stands and shifted right by 4 the minus index (Highway
  // 1.0's IndicesFromVec asserts the range in debug builds). Measured on
  // Zen 5: code words of four chunks (one load, shifts instead of widening)
  // ran 1.25x slower than widening each chunk's 16 bytes.
  ParallelFor(blocks, threads, [&](int64_t b0, int64_t b1, int) {
    alignas(64) float sums[64];
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* cb = codes + b * C * 16;
#if HWY_TARGET <= HWY_AVX3
      if (b + kLutPairBlocks <= b1) {
        LutBlocksAvx3<kLutPairBlocks, kLutPassChunks>(T, cb, C, live, n_live, sums);
        for (int64_t i = 0; i < kLutPairBlocks; ++i) finish(b + i, sums + 16 * i);
        b += kLutPairBlocks - 1;
        continue;
      }
      LutBlocksAvx3<1, 4>(T, cb, C, live, n_live, sums);
#else
      // AVX2: eight rows per half; a nibble looks up the low table (s < 8)
      // and the high one and keeps the high one where its bit 3 is set
      // (shifted into the sign bit for blendv).
      const uint8_t* cbytes = cb;
      for (int half = 0; half < 2; ++half) {
        __m256 p0 = _mm256_setzero_ps(), p1 = p0, m0 = p0, m1 = p0;
        int64_t k = 0;
        for (; k + 2 <= n_live; k += 2) {
          const int64_t c = live[k], c1 = live[k + 1];
#define PERMDNN_PICK(T, V, S)                                                                                        \
  _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(T), _mm256_srli_epi32(V, S)),                            \
                   _mm256_permutevar8x32_ps(_mm256_loadu_ps((T) + 8), _mm256_srli_epi32(V, S)),                      \
                   _mm256_castsi256_ps(_mm256_slli_epi32(V, 28 - (S))))
#define PERMDNN_BYTES(C) \
  _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cbytes + (C) * 16 + half * 8)))
          const __m256i v0 = PERMDNN_BYTES(c), v1 = PERMDNN_BYTES(c1);
          p0 = _mm256_add_ps(p0, PERMDNN_PICK(T + c * 16, v0, 0));
          m0 = _mm256_add_ps(m0, PERMDNN_PICK(T + c * 16, v0, 4));
          p1 = _mm256_add_ps(p1, PERMDNN_PICK(T + c1 * 16, v1, 0));
          m1 = _mm256_add_ps(m1, PERMDNN_PICK(T + c1 * 16, v1, 4));
        }
        if (k < n_live) {
          const int64_t c = live[k];
          const __m256i v0 = PERMDNN_BYTES(c);
          p0 = _mm256_add_ps(p0, PERMDNN_PICK(T + c * 16, v0, 0));
          m0 = _mm256_add_ps(m0, PERMDNN_PICK(T + c * 16, v0, 4));
        }
#undef PERMDNN_BYTES
#undef PERMDNN_PICK
        _mm256_store_ps(sums + 8 * half, _mm256_sub_ps(_mm256_add_ps(p0, p1), _mm256_add_ps(m0, m1)));
      }
#endif
      finish(b, sums);
    }
  });
}
#endif

void TernaryMaskMatVec(const TernaryPack* w, const float* x, const float* bias, float* y, int threads) {
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) { TernaryRowsImpl(w, x, bias, y, r0, r1); });
}

// The lookup-table matmul's tables: S chunks at a time.
constexpr int64_t kLutChunks = 8;
// Rows that walk a chunk block together (LutTile).
constexpr int kLutRows = HWY_LANES(float) >= 16 ? 3 : 2;

// The kept groups of group column j whose rows are in [r0, r1): the range
// [lo, hi) of col_row (rows ascending) for the lookup-table rows.
HWY_INLINE std::pair<const int32_t*, const int32_t*> KeptRowsOfColumn(const TernaryPack* w, int64_t j, int64_t r0,
                                                                      int64_t r1) {
  const int32_t* rows_begin = w->col_row.data() + w->col_begin[j];
  const int32_t* rows_end = w->col_row.data() + w->col_begin[j + 1];
  const int32_t* lo = std::lower_bound(rows_begin, rows_end, static_cast<int32_t>(r0));
  return {lo, std::lower_bound(lo, rows_end, static_cast<int32_t>(r1))};
}

// The 15 nonzero subset sums of four inputs (vectors v[0..3]) at t + s·ZN
// for s = 1..15 (bit j of s: input j), with 11 adds: the lookup-table rows'
// tables, fp32 or int16.
template <class D, class V>
HWY_INLINE void StoreSubsetSums(D d, const V* v, hn::TFromD<D>* t, int64_t ZN) {
  const auto v01 = hn::Add(v[0], v[1]);
  const auto v2s = hn::Add(v[2], v01);
  hn::StoreU(v[0], d, t + 1 * ZN);
  hn::StoreU(v[1], d, t + 2 * ZN);
  hn::StoreU(v01, d, t + 3 * ZN);
  hn::StoreU(v[2], d, t + 4 * ZN);
  hn::StoreU(hn::Add(v[2], v[0]), d, t + 5 * ZN);
  hn::StoreU(hn::Add(v[2], v[1]), d, t + 6 * ZN);
  hn::StoreU(v2s, d, t + 7 * ZN);
  hn::StoreU(v[3], d, t + 8 * ZN);
  hn::StoreU(hn::Add(v[3], v[0]), d, t + 9 * ZN);
  hn::StoreU(hn::Add(v[3], v[1]), d, t + 10 * ZN);
  hn::StoreU(hn::Add(v[3], v01), d, t + 11 * ZN);
  hn::StoreU(hn::Add(v[3], v[2]), d, t + 12 * ZN);
  hn::StoreU(hn::Add(v[3], hn::Add(v[2], v[0])), d, t + 13 * ZN);
  hn::StoreU(hn::Add(v[3], hn::Add(v[2], v[1])), d, t + 14 * ZN);
  hn::StoreU(hn::Add(v[3], v2s), d, t + 15 * ZN);
}

// Columns [b0, b0 + nv) of row `row` of X as vector z of a tile: a full
// load, the tail vector zero-filled, zero past the end.
template <class D>
HWY_INLINE hn::Vec<D> LoadTileVector(D d, const float* row, int64_t z, int64_t nv) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), left = nv - z * N;
  if (left >= N) return hn::LoadU(d, row + z * N);
  if (left <= 0) return hn::Zero(d);
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  return hn::MaskedLoad(hn::FirstN(d, static_cast<size_t>(left)), d, row + z * N);
#else
  // Through a copy: Highway 1.0's MaskedLoad is an aligned full load on SSE4.
  alignas(64) float part[16] = {};
  std::copy(row + z * N, row + z * N + left, part);
  return hn::Load(d, part);
#endif
}

// Rows it[0 .. R) of a tile: each adds, per chunk c of the block [s0,
// s0 + sn), the table entries at its plus and minus nibbles to its
// accumulators acc[(row − r0) · 4N] (loaded, then stored back).
template <int Z, int R>
HWY_INLINE void LutRows(const TernaryPack* w, const int32_t* it, int64_t s0, int64_t sn, int64_t r0, float* acc,
                        const float* tables) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), ZN = 4 * N;
  const int64_t CL = (w->matrix.group_len() + 3) / 4;
  const uint8_t* codes[R];
  float* a[R];
  hn::Vec<decltype(d)> ap[R][Z], am[R][Z];
  for (int i = 0; i < R; ++i) {
    codes[i] = w->group_codes.data() + w->col_kept[it + i - w->col_row.data()] * CL + s0;
    a[i] = acc + (it[i] - r0) * ZN;
    for (int z = 0; z < Z; ++z) {
      ap[i][z] = hn::LoadU(d, a[i] + z * N);
      am[i][z] = hn::Zero(d);
    }
  }
  // Each row's sn <= 8 code bytes as one word, shifted a byte per chunk: a
  // table load's address then comes from a load issued long before it (a
  // byte load per chunk ran 1.2-1.4 table adds per cycle on Zen 5 in a
  // standalone loop, the word 1.6-1.8).
  static_assert(kLutChunks == 8, "one 64-bit word of codes per row and block");
  uint64_t word[R];
  for (int i = 0; i < R; ++i) {
    if (sn == kLutChunks) {
      std::memcpy(&word[i], codes[i], sizeof(uint64_t));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      word[i] = __builtin_bswap64(word[i]);  // code c at bits 8c
#endif
    } else {
      word[i] = 0;
      for (int64_t c = 0; c < sn; ++c) word[i] |= uint64_t{codes[i][c]} << (8 * c);
    }
  }
  for (int64_t c = 0; c < sn; ++c) {
    const float* tc = tables + c * 16 * ZN;
    for (int i = 0; i < R; ++i) {
      const unsigned code = static_cast<unsigned>(word[i] & 255u);
      word[i] >>= 8;
      const float* tp = tc + (code & 15u) * ZN;
      const float* tq = tc + (code >> 4) * ZN;
      for (int z = 0; z < Z; ++z) {
        ap[i][z] = hn::Add(ap[i][z], hn::LoadU(d, tp + z * N));
        am[i][z] = hn::Add(am[i][z], hn::LoadU(d, tq + z * N));
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int z = 0; z < Z; ++z) hn::StoreU(hn::Sub(ap[i][z], am[i][z]), d, a[i] + z * N);
}

// One tile of Z vectors (nv valid columns from b0) for rows [r0, r1) of
// the slice: acc[(r - r0) · 4N] accumulates, tables is the thread's
// S·16·4N scratch (entry [c][s] at (c·16 + s)·4N whatever Z, so the
// entries s = 0 are never written and stay zero).
template <int Z>
void LutTile(const TernaryPack* w, const float* x, int64_t batch, int64_t b0, int64_t nv, int64_t r0, int64_t r1,
             float* acc, float* tables) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), ZN = 4 * N;
  const TernaryMatrix& m = w->matrix;
  const int64_t L = m.group_len(), CL = (L + 3) / 4, G = m.groups_per_row();
  std::fill(acc, acc + (r1 - r0) * ZN, 0.0f);
  for (int64_t j = 0; j < G; ++j) {
    const auto [lo, hi] = KeptRowsOfColumn(w, j, r0, r1);
    if (lo == hi) continue;
    for (int64_t s0 = 0; s0 < CL; s0 += kLutChunks) {
      const int64_t sn = std::min(kLutChunks, CL - s0);
      for (int64_t c = 0; c < sn; ++c) {
        const int64_t e0 = 4 * (s0 + c);
        float* tc = tables + c * 16 * ZN;
        for (int64_t z = 0; z < Z; ++z) {
          hn::Vec<decltype(d)> v[4];
          for (int64_t q = 0; q < 4; ++q)
            v[q] = e0 + q < L ? LoadTileVector(d, x + (j * L + e0 + q) * batch + b0, z, nv) : hn::Zero(d);
          StoreSubsetSums(d, v, tc + z * N, ZN);
        }
      }
      // kLutRows rows at a time: on AVX-512 three (24 accumulators at Z = 4),
      // 1.05-1.12x over one row at a time on resnet's stage 2-3 products (two
      // rows: 1.03-1.08x); on AVX2 two (16 accumulators, some spilled), still
      // 1.05-1.3x over one.
      const int32_t* it = lo;
      for (; hi - it >= kLutRows; it += kLutRows) LutRows<Z, kLutRows>(w, it, s0, sn, r0, acc, tables);
      for (; it != hi; ++it) LutRows<Z, 1>(w, it, s0, sn, r0, acc, tables);
    }
  }
}

void TernaryLutMatMul(const TernaryPack* w, const float* x, int64_t batch, const float* bias, float* y,
                      int threads) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), TW = 4 * N;
  const float* scale = w->matrix.scale().data();
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) {
    // 64-byte aligned, so no table or accumulator vector straddles two cache
    // lines: with std::vector's 16-byte alignment the kernel ran 1.5x slower
    // whenever the heap handed out an address off a line (64x576 at 784
    // columns: 0.31 against 0.20 ms, depending on what ran before it).
    static thread_local AlignedBuffer<float> tables, acc;
    if (tables.size() != static_cast<std::size_t>(kLutChunks * 16 * TW)) {
      tables.Resize(static_cast<std::size_t>(kLutChunks * 16 * TW));
      tables.Fill(0.0f);  // T[c][0] stays 0
    }
    if (acc.size() < static_cast<std::size_t>((r1 - r0) * TW)) acc.Resize(static_cast<std::size_t>((r1 - r0) * TW));
    for (int64_t b0 = 0; b0 < batch; b0 += TW) {
      const int64_t nv = std::min(TW, batch - b0), zc = (nv + N - 1) / N;
      switch (zc) {
        case 1: LutTile<1>(w, x, batch, b0, nv, r0, r1, acc.data(), tables.data()); break;
        case 2: LutTile<2>(w, x, batch, b0, nv, r0, r1, acc.data(), tables.data()); break;
        case 3: LutTile<3>(w, x, batch, b0, nv, r0, r1, acc.data(), tables.data()); break;
        default: LutTile<4>(w, x, batch, b0, nv, r0, r1, acc.data(), tables.data()); break;
      }
      const int64_t ZN = TW;
      for (int64_t r = r0; r < r1; ++r) {
        const auto vs = hn::Set(d, scale[r]), vb = hn::Set(d, bias ? bias[r] : 0.0f);
        const float* a = acc.data() + (r - r0) * ZN;
        float* yr = y + r * batch + b0;
        for (int64_t z = 0; z * N < nv; ++z) {
          const auto out = hn::MulAdd(vs, hn::LoadU(d, a + z * N), vb);
          const int64_t left = nv - z * N;
          if (left >= N) hn::StoreU(out, d, yr + z * N);
          else {
            alignas(64) float part[16];
            hn::Store(out, d, part);
            std::copy(part, part + left, yr + z * N);
          }
        }
      }
    }
  });
}

void TernaryListsMatMul(const TernaryPack* w, const float* x, int64_t batch, const float* bias, float* y,
                        int threads) {
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) {
    TernaryMatMulRowsImpl(w, x, batch, bias, y, r0, r1);
  });
}

// ---- int16 inputs (ternary.matmul_i16.*) ----------------------------------

#if HWY_TARGET != HWY_SCALAR
using D16 = hn::ScalableTag<int16_t>;
using D32 = hn::Repartition<int32_t, D16>;  // half the lanes: one int16 vector widens to two
using DF = hn::Repartition<float, D16>;

// lo / hi += the low / high half of a, widened to int32: lo holds columns
// [0, N32) of a's columns, hi [N32, 2·N32).
HWY_INLINE void WidenAdd(hn::Vec<D16> a, hn::Vec<D32>& lo, hn::Vec<D32>& hi) {
  const D32 d32;
  const hn::Half<D16> dh;
  lo = hn::Add(lo, hn::PromoteTo(d32, hn::LowerHalf(dh, a)));
  hi = hn::Add(hi, hn::PromoteTo(d32, hn::UpperHalf(dh, a)));
}

// Columns [0, nv) of K rows of X (stride ld) copied to a K × width strip,
// zero past nv.
void CopyStripI16(const int16_t* x, int64_t ld, int64_t K, int64_t nv, int64_t width, int16_t* strip) {
  for (int64_t k = 0; k < K; ++k) {
    std::memcpy(strip + k * width, x + k * ld, static_cast<std::size_t>(nv) * sizeof(int16_t));
    std::fill(strip + k * width + nv, strip + (k + 1) * width, int16_t{0});
  }
}

// y[0, nv) = s · float(acc[0, nv)) + b, acc in 32-bit lanes (column order).
HWY_INLINE void FinishI16(const int32_t* acc, int64_t nv, float s, float b, float* yr) {
  const DF df;
  const D32 d32;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const auto vs = hn::Set(df, s), vb = hn::Set(df, b);
  for (int64_t c = 0; c < nv; c += N) {
    const auto out = hn::MulAdd(vs, hn::ConvertTo(df, hn::LoadU(d32, acc + c)), vb);
    if (c + N <= nv) {
      hn::StoreU(out, df, yr + c);
    } else {
      alignas(64) float part[16];
      hn::Store(out, df, part);
      std::copy(part, part + (nv - c), yr + c);
    }
  }
}

// acc16 ± X's rows idx[e0 .. e1) (V int16 vectors from xs, rows ld apart),
// widened into c[2V] every kTernaryI16Run entries (|sum| <= 32 · 1023).
template <bool kMinus, int V>
HWY_INLINE void ListRowsI16(const int16_t* xs, int64_t ld, const int32_t* idx, int64_t e0, int64_t e1,
                            hn::Vec<D32>* c) {
  const D16 d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t s0 = e0; s0 < e1; s0 += kTernaryI16Run) {
    const int64_t s1 = std::min<int64_t>(e1, s0 + kTernaryI16Run);
    hn::Vec<D16> a[V];
    for (int v = 0; v < V; ++v) a[v] = hn::Zero(d);
    auto add = [&](const int16_t* xr) {
      for (int v = 0; v < V; ++v) {
        if constexpr (kMinus) a[v] = hn::Sub(a[v], hn::LoadU(d, xr + v * N));
        else a[v] = hn::Add(a[v], hn::LoadU(d, xr + v * N));
      }
    };
    int64_t e = s0;
    for (; e + 2 <= s1; e += 2) {
      int32_t pair[2];
      std::memcpy(pair, idx + e, sizeof(pair));
      add(xs + int64_t{pair[0]} * ld);
      add(xs + int64_t{pair[1]} * ld);
    }
    if (e < s1) add(xs + int64_t{idx[e]} * ld);
    for (int v = 0; v < V; ++v) WidenAdd(a[v], c[2 * v], c[2 * v + 1]);
  }
}

// Rows [r0, r1) of one tile of V int16 vectors (nv <= V·N valid columns,
// X rows ld apart from xs: full vectors readable), into y from column b0.
template <int V>
void ListsTileI16(const TernaryPack* w, const int16_t* xs, int64_t ld, int64_t batch, int64_t b0, int64_t nv,
                  float x_scale, const float* bias, float* y, int64_t r0, int64_t r1, int32_t* acc) {
  const D32 d32;
  const int64_t N32 = static_cast<int64_t>(hn::Lanes(d32));
  const int32_t* idx = w->index.data();
  const float* scale = w->matrix.scale().data();
  for (int64_t r = r0; r < r1; ++r) {
    hn::Vec<D32> c[2 * V];
    for (auto& v : c) v = hn::Zero(d32);
    ListRowsI16<false, V>(xs, ld, idx, w->plus_begin[r], w->minus_begin[r], c);
    ListRowsI16<true, V>(xs, ld, idx, w->minus_begin[r], w->plus_begin[r + 1], c);
    for (int h = 0; h < 2 * V; ++h) hn::StoreU(c[h], d32, acc + h * N32);
    FinishI16(acc, nv, x_scale * scale[r], bias ? bias[r] : 0.0f, y + r * batch + b0);
  }
}

// The lists row on int16 X: tiles of four int16 vectors (4·N16 columns:
// 128 on AVX-512, the fp32 row's 64 columns' bytes), rows inside; a tile
// whose strip crowds L1's sets runs on a copy, and the last partial tile on
// a zero-padded copy one, two or four vectors wide.
void TernaryListsMatMulI16(const TernaryPack* w, const int16_t* x, int64_t batch, float x_scale, const float* bias,
                           float* y, int threads) {
  const D16 d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), TW = 4 * N, K = w->cols();
  const bool crowded = batch >= TW && StripCrowdsL1(K, batch * int64_t{sizeof(int16_t)}, TW * int64_t{sizeof(int16_t)});
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) {
    static thread_local AlignedBuffer<int16_t> strip;
    static thread_local AlignedBuffer<int32_t> acc;
    if (acc.size() < static_cast<std::size_t>(TW)) acc.Resize(static_cast<std::size_t>(TW));
    for (int64_t b0 = 0; b0 < batch; b0 += TW) {
      const int64_t nv = std::min(TW, batch - b0);
      const int64_t V = nv == TW ? 4 : nv <= N ? 1 : nv <= 2 * N ? 2 : 4;
      const int16_t* xs = x + b0;
      int64_t ld = batch;
      if (crowded || nv < TW) {
        if (strip.size() < static_cast<std::size_t>(K * TW)) strip.Resize(static_cast<std::size_t>(K * TW));
        CopyStripI16(x + b0, batch, K, nv, V * N, strip.data());
        xs = strip.data();
        ld = V * N;
      }
      switch (V) {
        case 1: ListsTileI16<1>(w, xs, ld, batch, b0, nv, x_scale, bias, y, r0, r1, acc.data()); break;
        case 2: ListsTileI16<2>(w, xs, ld, batch, b0, nv, x_scale, bias, y, r0, r1, acc.data()); break;
        default: ListsTileI16<4>(w, xs, ld, batch, b0, nv, x_scale, bias, y, r0, r1, acc.data()); break;
      }
    }
  });
}

// Rows it[0 .. R) of a tile of Z int16 vectors: per chunk of the block the
// table entries at the plus and minus nibbles (at most 32 inputs: the sums
// fit int16), then the difference widened into the row's 32-bit sums.
template <int Z, int R>
HWY_INLINE void LutRowsI16(const TernaryPack* w, const int32_t* it, int64_t s0, int64_t sn, int64_t r0,
                           int32_t* acc, const int16_t* tables) {
  const D16 d;
  const D32 d32;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), N32 = N / 2, ZN = Z * N;
  const int64_t CL = (w->matrix.group_len() + 3) / 4;
  static_assert(4 * kLutChunks <= kTernaryI16Run, "a block's sums must fit int16");
  hn::Vec<D16> ap[R][Z], am[R][Z];
  uint64_t word[R];
  for (int i = 0; i < R; ++i) {
    const uint8_t* codes = w->group_codes.data() + w->col_kept[it + i - w->col_row.data()] * CL + s0;
    word[i] = 0;
    if (sn == kLutChunks) {
      std::memcpy(&word[i], codes, sizeof(uint64_t));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      word[i] = __builtin_bswap64(word[i]);
#endif
    } else {
      for (int64_t c = 0; c < sn; ++c) word[i] |= uint64_t{codes[c]} << (8 * c);
    }
    for (int z = 0; z < Z; ++z) ap[i][z] = am[i][z] = hn::Zero(d);
  }
  for (int64_t c = 0; c < sn; ++c) {
    const int16_t* tc = tables + c * 16 * ZN;
    for (int i = 0; i < R; ++i) {
      const unsigned code = static_cast<unsigned>(word[i] & 255u);
      word[i] >>= 8;
      const int16_t* tp = tc + (code & 15u) * ZN;
      const int16_t* tq = tc + (code >> 4) * ZN;
      for (int z = 0; z < Z; ++z) {
        ap[i][z] = hn::Add(ap[i][z], hn::LoadU(d, tp + z * N));
        am[i][z] = hn::Add(am[i][z], hn::LoadU(d, tq + z * N));
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    int32_t* a = acc + (it[i] - r0) * ZN;
    for (int z = 0; z < Z; ++z) {
      auto lo = hn::LoadU(d32, a + 2 * z * N32), hi = hn::LoadU(d32, a + (2 * z + 1) * N32);
      WidenAdd(hn::Sub(ap[i][z], am[i][z]), lo, hi);
      hn::StoreU(lo, d32, a + 2 * z * N32);
      hn::StoreU(hi, d32, a + (2 * z + 1) * N32);
    }
  }
}

// One tile of Z int16 vectors for rows [r0, r1): X rows ld apart from xs
// (full vectors readable: the caller pads the last tile), acc[(r − r0)·Z·N]
// the 32-bit sums in column order; tables the thread's 8·16·Z·N scratch.
template <int Z>
void LutTileI16(const TernaryPack* w, const int16_t* xs, int64_t ld, int64_t r0, int64_t r1, int32_t* acc,
                int16_t* tables) {
  const D16 d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), ZN = Z * N;
  const TernaryMatrix& m = w->matrix;
  const int64_t L = m.group_len(), CL = (L + 3) / 4, G = m.groups_per_row();
  std::fill(acc, acc + (r1 - r0) * ZN, 0);
  for (int64_t j = 0; j < G; ++j) {
    const auto [lo, hi] = KeptRowsOfColumn(w, j, r0, r1);
    if (lo == hi) continue;
    for (int64_t s0 = 0; s0 < CL; s0 += kLutChunks) {
      const int64_t sn = std::min(kLutChunks, CL - s0);
      for (int64_t c = 0; c < sn; ++c) {
        const int64_t e0 = 4 * (s0 + c);
        int16_t* tc = tables + c * 16 * ZN;
        for (int64_t z = 0; z < Z; ++z) {
          hn::Vec<D16> v[4];
          for (int64_t q = 0; q < 4; ++q)
            v[q] = e0 + q < L ? hn::LoadU(d, xs + (j * L + e0 + q) * ld + z * N) : hn::Zero(d);
          StoreSubsetSums(d, v, tc + z * N, ZN);
        }
      }
      const int32_t* it = lo;
      for (; hi - it >= kLutRows; it += kLutRows) LutRowsI16<Z, kLutRows>(w, it, s0, sn, r0, acc, tables);
      for (; it != hi; ++it) LutRowsI16<Z, 1>(w, it, s0, sn, r0, acc, tables);
    }
  }
}

// The lookup-table row on int16 X: tiles of two int16 vectors (64 columns
// on AVX-512, 16 KB of tables; four vectors measured no faster in a
// standalone prototype); the last partial tile runs on a zero-padded copy.
void TernaryLutMatMulI16(const TernaryPack* w, const int16_t* x, int64_t batch, float x_scale, const float* bias,
                         float* y, int threads) {
  constexpr int Z = 2;
  const D16 d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), TW = Z * N, K = w->cols();
  const float* scale = w->matrix.scale().data();
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) {
    static thread_local AlignedBuffer<int16_t> tables, strip;
    static thread_local AlignedBuffer<int32_t> acc;
    if (tables.size() != static_cast<std::size_t>(kLutChunks * 16 * TW)) {
      tables.Resize(static_cast<std::size_t>(kLutChunks * 16 * TW));
      tables.Fill(int16_t{0});  // T[c][0] stays 0
    }
    if (acc.size() < static_cast<std::size_t>((r1 - r0) * TW)) acc.Resize(static_cast<std::size_t>((r1 - r0) * TW));
    for (int64_t b0 = 0; b0 < batch; b0 += TW) {
      const int64_t nv = std::min(TW, batch - b0);
      const int16_t* xs = x + b0;
      int64_t ld = batch;
      if (nv < TW) {
        if (strip.size() < static_cast<std::size_t>(K * TW)) strip.Resize(static_cast<std::size_t>(K * TW));
        CopyStripI16(x + b0, batch, K, nv, TW, strip.data());
        xs = strip.data();
        ld = TW;
      }
      LutTileI16<Z>(w, xs, ld, r0, r1, acc.data(), tables.data());
      for (int64_t r = r0; r < r1; ++r)
        FinishI16(acc.data() + (r - r0) * TW, nv, x_scale * scale[r], bias ? bias[r] : 0.0f, y + r * batch + b0);
    }
  });
}
#endif  // HWY_TARGET != HWY_SCALAR

// Any target (the only row on the scalar one): the lists with 32-bit sums.
void TernaryPlainMatMulI16(const TernaryPack* w, const int16_t* x, int64_t batch, float x_scale, const float* bias,
                           float* y, int threads) {
  const int32_t* idx = w->index.data();
  const float* scale = w->matrix.scale().data();
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) {
    std::vector<int32_t> acc(static_cast<std::size_t>(batch));
    for (int64_t r = r0; r < r1; ++r) {
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t e = w->plus_begin[r]; e < w->plus_begin[r + 1]; ++e) {
        const int16_t* xr = x + int64_t{idx[e]} * batch;
        if (e < w->minus_begin[r]) {
          for (int64_t b = 0; b < batch; ++b) acc[b] += xr[b];
        } else {
          for (int64_t b = 0; b < batch; ++b) acc[b] -= xr[b];
        }
      }
      const float s = x_scale * scale[r], bb = bias ? bias[r] : 0.0f;
      for (int64_t b = 0; b < batch; ++b) y[r * batch + b] = s * static_cast<float>(acc[b]) + bb;
    }
  });
}

// xq = round(x · inv) clamped to ±kTernaryI16Bound; NaN → 0 (in the body
// and the tail alike: Min / Max would pick a bound, lrint an undefined value).
void QuantizeTernaryAtImpl(const float* x, int64_t n, float inv, int16_t* xq) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<int16_t, decltype(d)> d16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const float hi = static_cast<float>(kTernaryI16Bound);
  const auto vinv = hn::Set(d, inv), bound = hn::Set(d, hi);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, x + i);
    const auto q = hn::Min(hn::Max(hn::Mul(v, vinv), hn::Neg(bound)), bound);
    hn::StoreU(hn::DemoteTo(d16, hn::NearestInt(hn::IfThenElseZero(hn::Eq(v, v), q))), d16, xq + i);
  }
  for (; i < n; ++i)
    xq[i] = x[i] == x[i] ? static_cast<int16_t>(std::lrint(std::clamp(x[i] * inv, -hi, hi))) : int16_t{0};
}

// The scale s = max|x| / kTernaryI16Bound (1 where x is all zero), then xq.
float QuantizeTernaryInputImpl(const float* x, int64_t n, int16_t* xq) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  // max |x|, and whether some x is NaN (Max would drop it).
  auto mx = hn::Zero(d);
  auto nan = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, x + i);
    mx = hn::Max(mx, hn::Abs(v));
    nan = hn::Or(nan, hn::VecFromMask(d, hn::Not(hn::Eq(v, v))));  // Ne is ordered: false for NaN
  }
  float amax = hn::GetLane(hn::MaxOfLanes(d, mx));
  bool has_nan = !hn::AllTrue(d, hn::Eq(nan, hn::Zero(d)));
  for (; i < n; ++i) {
    amax = std::max(amax, std::fabs(x[i]));
    has_nan = has_nan || x[i] != x[i];
  }
  PERMDNN_CHECK(!has_nan && std::isfinite(amax), "QuantizeTernaryInput: the input holds a non-finite value ({})",
                has_nan ? "NaN" : "inf");
  if (amax == 0.0f) {
    std::fill(xq, xq + n, int16_t{0});
    return 1.0f;
  }
  // Clamped: amax · (bound / amax) may round one ulp past the bound.
  QuantizeTernaryAtImpl(x, n, static_cast<float>(kTernaryI16Bound) / amax, xq);
  return amax / static_cast<float>(kTernaryI16Bound);
}

// ---- 8-bit inputs (ternary.matmul_u8.*) -----------------------------------
// X in quads (kernels/ternary.h): one 32-bit lane = four consecutive
// columns of one batch column, bytes; the row's four codes of the quad as
// four int8 in one broadcast 32-bit word. Per row and tile of V vectors
// (V·kU8Cols batch columns) and quad of a kept run: one broadcast, V loads
// and V dot products. With VNNI (`ternary.matmul_u8.vnni`: AVX-512 VNNI, or
// AVX-VNNI on the AVX2 target):
// `vpdpbusd` adds the four byte · code products of each lane into its
// int32 sum, 64 multiply-adds per instruction; without VNNI (`.madd`, AVX2
// and AVX-512): `vpmaddubsw` gives the two pair sums per lane in 16 bits
// (|x0·c0 + x1·c1| <= 510: no saturation), added in 16-bit lanes for up
// to kU8Run quads (64 · 510 < 2^15) and then widened (`vpmaddwd` by 1).
// Tiles: up to 8 vectors, sized evenly, fewer when the tile's strip
// (quads · V vectors of 64 bytes on AVX-512, 32 on AVX2) would pass 40 KiB
// of L1; a partial last vector reads the quad row's padding (rows are whole
// 64-byte lines, so the loads never leave the buffer, and on a 64-byte
// aligned X never straddle two lines, which cost 1.35x and 1.46x at 196 and 49
// columns). With four vectors or fewer the VNNI row alternates two sets of
// sums between quads (2V dependent chains).
#if HWY_ARCH_X86 && (HWY_TARGET <= HWY_AVX3 || HWY_TARGET == HWY_AVX2)
#define PERMDNN_TERNARY_U8_SIMD 1
#if HWY_TARGET <= HWY_AVX3
using VU8 = __m512i;
constexpr int64_t kU8Cols = 16;  // batch columns per vector
HWY_INLINE VU8 U8Load(const uint8_t* p) { return _mm512_loadu_si512(p); }
HWY_INLINE VU8 U8Zero() { return _mm512_setzero_si512(); }
HWY_INLINE VU8 U8Bcast(int32_t c) { return _mm512_set1_epi32(c); }
HWY_INLINE VU8 U8Madd(VU8 x, VU8 c) { return _mm512_maddubs_epi16(x, c); }
HWY_INLINE VU8 U8Add16(VU8 a, VU8 b) { return _mm512_add_epi16(a, b); }
HWY_INLINE VU8 U8Add32(VU8 a, VU8 b) { return _mm512_add_epi32(a, b); }
HWY_INLINE VU8 U8Widen(VU8 acc, VU8 s16) { return _mm512_add_epi32(acc, _mm512_madd_epi16(s16, _mm512_set1_epi16(1))); }
HWY_INLINE void U8Store(VU8 acc, int32_t corr, float s, float b, float* y) {
  const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_set1_epi32(corr)));
  _mm512_storeu_ps(y, _mm512_fmadd_ps(_mm512_set1_ps(s), v, _mm512_set1_ps(b)));
}
#else
using VU8 = __m256i;
constexpr int64_t kU8Cols = 8;
HWY_INLINE VU8 U8Load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
HWY_INLINE VU8 U8Zero() { return _mm256_setzero_si256(); }
HWY_INLINE VU8 U8Bcast(int32_t c) { return _mm256_set1_epi32(c); }
HWY_INLINE VU8 U8Madd(VU8 x, VU8 c) { return _mm256_maddubs_epi16(x, c); }
HWY_INLINE VU8 U8Add16(VU8 a, VU8 b) { return _mm256_add_epi16(a, b); }
HWY_INLINE VU8 U8Add32(VU8 a, VU8 b) { return _mm256_add_epi32(a, b); }
HWY_INLINE VU8 U8Widen(VU8 acc, VU8 s16) { return _mm256_add_epi32(acc, _mm256_madd_epi16(s16, _mm256_set1_epi16(1))); }
HWY_INLINE void U8Store(VU8 acc, int32_t corr, float s, float b, float* y) {
  const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, _mm256_set1_epi32(corr)));
  _mm256_storeu_ps(y, _mm256_fmadd_ps(_mm256_set1_ps(s), v, _mm256_set1_ps(b)));
}
#endif
constexpr int64_t kU8Run = 64;
constexpr int64_t kU8VecBytes = kU8Cols * 4;

// y[0, ncols) of one row from its V sums (ncols <= V · kU8Cols).
template <int V>
HWY_INLINE void U8FinishRow(const VU8* acc, int64_t ncols, int32_t corr, float s, float b, float* yr) {
  for (int v = 0; v < V; ++v) {
    const int64_t c = v * kU8Cols;
    if (c + kU8Cols <= ncols) {
      U8Store(acc[v], corr, s, b, yr + c);
    } else if (c < ncols) {
      alignas(64) float part[kU8Cols];
      U8Store(acc[v], corr, s, b, part);
      std::copy(part, part + (ncols - c), yr + c);
    }
  }
}

// Rows [r0, r1) of one tile: V vectors from xs (quads ld bytes apart),
// ncols valid columns, into y (the tile's first column of row 0).
template <int V>
void U8MaddTile(const TernaryPack* w, const uint8_t* xs, int64_t ld, int64_t ncols, TernaryU8Scale q,
                const float* bias, float* y, int64_t batch, int64_t r0, int64_t r1) {
  const float* scale = w->matrix.scale().data();

  for (int64_t r = r0; r < r1; ++r) {
    VU8 acc[V];
    for (auto& a : acc) a = U8Zero();
    const int32_t* code = w->u8_codes.data() + w->u8_code_begin[r];
    for (int64_t i = w->u8_run_begin[r]; i < w->u8_run_begin[r + 1]; ++i) {
      const int64_t q0 = w->u8_runs[2 * i], q1 = w->u8_runs[2 * i + 1];
      const uint8_t* xp = xs + q0 * ld;
      for (int64_t s0 = q0; s0 < q1; s0 += kU8Run) {
        const int64_t n = std::min(kU8Run, q1 - s0);
        VU8 s16[V];
        for (auto& a : s16) a = U8Zero();
        for (int64_t k = 0; k < n; ++k, xp += ld) {
          const VU8 c = U8Bcast(*code++);
          for (int v = 0; v < V; ++v) s16[v] = U8Add16(s16[v], U8Madd(U8Load(xp + v * kU8VecBytes), c));
        }
        for (int v = 0; v < V; ++v) acc[v] = U8Widen(acc[v], s16[v]);
      }
    }
    U8FinishRow<V>(acc, ncols, q.zero * w->u8_sum[r], q.scale * scale[r], bias ? bias[r] : 0.0f, y + r * batch);
  }
}

// The dot product instruction: AVX-512 VNNI on the AVX3 target, AVX-VNNI
// (the VEX form: Zen 5, Intel from Alder Lake) on the AVX2 target. The
// target attribute adds the feature to the target's own (clang replaces a
// pragma's features with an attribute's); the CPU is asked by CPUID (leaf
// 7: sub-leaf 0 ECX bit 11, sub-leaf 1 EAX bit 4), which both compilers read.
#define PERMDNN_TERNARY_U8_VNNI 1
#if HWY_TARGET <= HWY_AVX3
#define PERMDNN_U8_VNNI_ISA HWY_TARGET_STR ",avx512vnni"
#define PERMDNN_U8_DPBUSD _mm512_dpbusd_epi32
#else
#define PERMDNN_U8_VNNI_ISA HWY_TARGET_STR ",avxvnni"
#define PERMDNN_U8_DPBUSD _mm256_dpbusd_avx_epi32
#endif
bool CpuHasVnni() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
#if HWY_TARGET <= HWY_AVX3
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((c >> 11) & 1);
#else
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1);
#endif
  }();
  return has;
}
bool AdmitsVnni(const KernelProblem&) { return CpuHasVnni(); }

template <int V>
__attribute__((target(PERMDNN_U8_VNNI_ISA))) void U8VnniTile(const TernaryPack* w, const uint8_t* xs, int64_t ld,
                                                      int64_t ncols, TernaryU8Scale q, const float* bias, float* y,
                                                      int64_t batch, int64_t r0, int64_t r1) {
  constexpr int S = V <= 4 ? 2 : 1;  // sets of sums, alternating between quads
  const float* scale = w->matrix.scale().data();

  for (int64_t r = r0; r < r1; ++r) {
    VU8 acc[S][V];
    for (auto& set : acc)
      for (auto& a : set) a = U8Zero();
    const int32_t* code = w->u8_codes.data() + w->u8_code_begin[r];
    for (int64_t i = w->u8_run_begin[r]; i < w->u8_run_begin[r + 1]; ++i) {
      const int64_t q0 = w->u8_runs[2 * i], q1 = w->u8_runs[2 * i + 1];
      const uint8_t* xp = xs + q0 * ld;
      int64_t k = q0;
      for (; k + S <= q1; k += S)
        for (int s = 0; s < S; ++s, xp += ld) {
          const VU8 c = U8Bcast(*code++);
          for (int v = 0; v < V; ++v)
            acc[s][v] = PERMDNN_U8_DPBUSD(acc[s][v], U8Load(xp + v * kU8VecBytes), c);
        }
      for (; k < q1; ++k, xp += ld) {
        const VU8 c = U8Bcast(*code++);
        for (int v = 0; v < V; ++v) acc[0][v] = PERMDNN_U8_DPBUSD(acc[0][v], U8Load(xp + v * kU8VecBytes), c);
      }
    }
    if constexpr (S == 2)
      for (int v = 0; v < V; ++v) acc[0][v] = U8Add32(acc[0][v], acc[1][v]);
    U8FinishRow<V>(acc[0], ncols, q.zero * w->u8_sum[r], q.scale * scale[r], bias ? bias[r] : 0.0f, y + r * batch);
  }
}
#undef PERMDNN_U8_VNNI_ISA
#undef PERMDNN_U8_DPBUSD

template <bool kVnni, int V>
void U8Tile(const TernaryPack* w, const uint8_t* xs, int64_t ld, int64_t ncols, TernaryU8Scale q, const float* bias,
            float* y, int64_t batch, int64_t r0, int64_t r1) {
#ifdef PERMDNN_TERNARY_U8_VNNI
  if constexpr (kVnni) return U8VnniTile<V>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
#endif
  U8MaddTile<V>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
}

template <bool kVnni>
void U8TileOf(int64_t nv, const TernaryPack* w, const uint8_t* xs, int64_t ld, int64_t ncols, TernaryU8Scale q,
              const float* bias, float* y, int64_t batch, int64_t r0, int64_t r1) {
  switch (nv) {
    case 1: return U8Tile<kVnni, 1>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
    case 2: return U8Tile<kVnni, 2>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
    case 3: return U8Tile<kVnni, 3>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
    case 4: return U8Tile<kVnni, 4>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
    case 5: return U8Tile<kVnni, 5>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
    case 6: return U8Tile<kVnni, 6>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
    case 7: return U8Tile<kVnni, 7>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
    default: return U8Tile<kVnni, 8>(w, xs, ld, ncols, q, bias, y, batch, r0, r1);
  }
}

template <bool kVnni>
void TernaryU8MatMul(const TernaryPack* w, const uint8_t* x, int64_t batch, TernaryU8Scale q, const float* bias,
                     float* y, int threads) {
  const int64_t Kq = w->u8_quads, ld = TernaryU8RowBytes(batch);
  const int64_t nvec = (batch + kU8Cols - 1) / kU8Cols;  // the last one may be partial: it reads the padding
  const int64_t vmax = std::clamp<int64_t>(40960 / (Kq * kU8VecBytes), 1, 8);
  const int64_t tiles = (nvec + vmax - 1) / vmax;
  const int64_t V = (nvec + tiles - 1) / tiles;
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) {
    for (int64_t v0 = 0; v0 < nvec; v0 += V) {
      const int64_t nv = std::min(V, nvec - v0), b0 = v0 * kU8Cols;
      U8TileOf<kVnni>(nv, w, x + b0 * 4, ld, std::min(nv * kU8Cols, batch - b0), q, bias, y + b0, batch, r0, r1);
    }
  });
}
void TernaryMaddMatMulU8(const TernaryPack* w, const uint8_t* x, int64_t batch, TernaryU8Scale q, const float* bias,
                         float* y, int threads) {
  TernaryU8MatMul<false>(w, x, batch, q, bias, y, threads);
}
#ifdef PERMDNN_TERNARY_U8_VNNI
void TernaryVnniMatMulU8(const TernaryPack* w, const uint8_t* x, int64_t batch, TernaryU8Scale q, const float* bias,
                         float* y, int threads) {
  TernaryU8MatMul<true>(w, x, batch, q, bias, y, threads);
}
#endif
#endif  // AVX3 / AVX2

// Any target: the runs with 32-bit sums, a byte at a time.
void TernaryPlainMatMulU8(const TernaryPack* w, const uint8_t* x, int64_t batch, TernaryU8Scale q, const float* bias,
                          float* y, int threads) {
  const float* scale = w->matrix.scale().data();
  ParallelFor(w->rows(), threads, [&](int64_t r0, int64_t r1, int) {
    std::vector<int32_t> acc(static_cast<std::size_t>(batch));
    for (int64_t r = r0; r < r1; ++r) {
      std::fill(acc.begin(), acc.end(), 0);
      const int32_t* code = w->u8_codes.data() + w->u8_code_begin[r];
      for (int64_t i = w->u8_run_begin[r]; i < w->u8_run_begin[r + 1]; ++i)
        for (int64_t k = w->u8_runs[2 * i]; k < w->u8_runs[2 * i + 1]; ++k) {
          const uint32_t c = static_cast<uint32_t>(*code++);
          const uint8_t* xq = x + k * TernaryU8RowBytes(batch);
          for (int j = 0; j < 4; ++j) {
            const int cj = static_cast<int8_t>((c >> (8 * j)) & 0xff);
            if (cj == 0) continue;
            for (int64_t b = 0; b < batch; ++b) acc[b] += cj * int32_t{xq[b * 4 + j]};
          }
        }
      const float s = q.scale * scale[r], bb = bias ? bias[r] : 0.0f;
      const int32_t corr = q.zero * w->u8_sum[r];
      for (int64_t b = 0; b < batch; ++b) y[r * batch + b] = s * static_cast<float>(acc[b] - corr) + bb;
    }
  });
}

// xq (quads, kernels/ternary.h) = round(x · inv) + zero clamped to
// [0, 255]; NaN, the rows past K and the padding columns → zero. Per quad
// row and N columns: four rows rounded in 32-bit lanes and packed into one
// word per column (byte j = row 4q + j).
void QuantizeU8Impl(const float* x, int64_t K, int64_t batch, float inv, int zero, uint8_t* xq) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d)), ld = TernaryU8RowBytes(batch);
  const float lo = static_cast<float>(-zero), hi = static_cast<float>(255 - zero);
  const auto vinv = hn::Set(d, inv), vlo = hn::Set(d, lo), vhi = hn::Set(d, hi);
  const auto vz = hn::Set(di, zero);
  auto lane = [&](const float* xr, int64_t b) {
    if (xr == nullptr) return vz;
    const auto v = hn::LoadU(d, xr + b);
    const auto q = hn::Min(hn::Max(hn::Mul(v, vinv), vlo), vhi);
    return hn::Add(hn::NearestInt(hn::IfThenElseZero(hn::Eq(v, v), q)), vz);
  };
  auto one = [&](const float* xr, int64_t b) -> uint32_t {
    if (xr == nullptr) return static_cast<uint32_t>(zero);
    const float v = xr[b];
    return v == v ? static_cast<uint32_t>(std::lrint(std::clamp(v * inv, lo, hi)) + zero) : static_cast<uint32_t>(zero);
  };
  for (int64_t q = 0; q < TernaryU8Quads(K); ++q) {
    uint8_t* out = xq + q * ld;
    std::memset(out + batch * 4, zero, static_cast<std::size_t>(ld - batch * 4));
    const float* xr[4];
    for (int64_t j = 0; j < 4; ++j) xr[j] = 4 * q + j < K ? x + (4 * q + j) * batch : nullptr;
    int64_t b = 0;
    for (; b + N <= batch; b += N) {
      auto w = hn::Or(hn::Or(lane(xr[0], b), hn::ShiftLeft<8>(lane(xr[1], b))),
                      hn::Or(hn::ShiftLeft<16>(lane(xr[2], b)), hn::ShiftLeft<24>(lane(xr[3], b))));
      hn::StoreU(w, di, reinterpret_cast<int32_t*>(out + b * 4));
    }
    for (; b < batch; ++b) {
      const uint32_t w = one(xr[0], b) | one(xr[1], b) << 8 | one(xr[2], b) << 16 | one(xr[3], b) << 24;
      std::memcpy(out + b * 4, &w, 4);
    }
  }
}

using MatVecFn = void (*)(const TernaryPack*, const float*, const float*, float*, int);
using MatMulFn = void (*)(const TernaryPack*, const float*, int64_t, const float*, float*, int);

std::span<const Row<MatVecFn>> TernaryMatVecRows() {
  static const std::vector<Row<MatVecFn>> rows = {
#ifdef PERMDNN_TERNARY_LUT_MATVEC
      {"ternary.matvec.lut", detail::AdmitsAll, TernaryLutMatVec},
#endif
      {"ternary.matvec.masks", detail::AdmitsAll, TernaryMaskMatVec},
  };
  return rows;
}
// The tables pay once enough rows share them: measured on Zen 5 (AVX3),
// 16 rows (a 16-channel conv) ran at 0.45x of the lists row, 32 rows at
// 1.1-1.7x (docs/ternary.md).
bool LutMatMulAdmits(const KernelProblem& q) { return q.rows >= 32; }

std::span<const Row<MatMulFn>> TernaryMatMulRows() {
  static const std::vector<Row<MatMulFn>> rows = {
      {"ternary.matmul.lut", LutMatMulAdmits, TernaryLutMatMul},
      {"ternary.matmul.lists", detail::AdmitsAll, TernaryListsMatMul},
  };
  return rows;
}

using MatMulI16Fn = void (*)(const TernaryPack*, const int16_t*, int64_t, float, const float*, float*, int);
std::span<const Row<MatMulI16Fn>> TernaryMatMulI16Rows() {
  static const std::vector<Row<MatMulI16Fn>> rows = {
#if HWY_TARGET != HWY_SCALAR
      {"ternary.matmul_i16.lut", LutMatMulAdmits, TernaryLutMatMulI16},
      {"ternary.matmul_i16.lists", detail::AdmitsAll, TernaryListsMatMulI16},
#endif
      {"ternary.matmul_i16.plain", detail::AdmitsAll, TernaryPlainMatMulI16},
  };
  return rows;
}

using MatMulU8Fn = void (*)(const TernaryPack*, const uint8_t*, int64_t, TernaryU8Scale, const float*, float*, int);
std::span<const Row<MatMulU8Fn>> TernaryMatMulU8Rows() {
  static const std::vector<Row<MatMulU8Fn>> rows = {
#ifdef PERMDNN_TERNARY_U8_VNNI
      {"ternary.matmul_u8.vnni", AdmitsVnni, TernaryVnniMatMulU8},
#endif
#ifdef PERMDNN_TERNARY_U8_SIMD
      {"ternary.matmul_u8.madd", detail::AdmitsAll, TernaryMaddMatMulU8},
#endif
      {"ternary.matmul_u8.plain", detail::AdmitsAll, TernaryPlainMatMulU8},
  };
  return rows;
}
#undef PERMDNN_TERNARY_LUT_MATVEC
#undef PERMDNN_TERNARY_U8_SIMD
#undef PERMDNN_TERNARY_U8_VNNI

void TernaryMatVecImpl(const TernaryPack* w, const float* x, const float* bias, float* y, int threads) {
  detail::Pick(TernaryMatVecRows(), {KernelOp::kTernaryMatVec, static_cast<int>(w->matrix.group_len()), w->rows(),
                              w->cols(), 1, false})
      ->fn(w, x, bias, y, threads);
}
void TernaryMatMulImpl(const TernaryPack* w, const float* x, int64_t batch, const float* bias, float* y,
                       int threads) {
  detail::Pick(TernaryMatMulRows(), {KernelOp::kTernaryMatMul, static_cast<int>(w->matrix.group_len()), w->rows(),
                              w->cols(), batch, false})
      ->fn(w, x, batch, bias, y, threads);
}

void TernaryMatMulI16Impl(const TernaryPack* w, const int16_t* x, int64_t batch, float x_scale, const float* bias,
                          float* y, int threads) {
  detail::Pick(TernaryMatMulI16Rows(), {KernelOp::kTernaryMatMulI16, static_cast<int>(w->matrix.group_len()),
                                        w->rows(), w->cols(), batch, false})
      ->fn(w, x, batch, x_scale, bias, y, threads);
}
void TernaryMatMulU8Impl(const TernaryPack* w, const uint8_t* x, int64_t batch, TernaryU8Scale q, const float* bias,
                         float* y, int threads) {
  detail::Pick(TernaryMatMulU8Rows(), {KernelOp::kTernaryMatMulU8, static_cast<int>(w->matrix.group_len()),
                                       w->rows(), w->cols(), batch, false})
      ->fn(w, x, batch, q, bias, y, threads);
}

// This file's part of the kernel table.
void TernaryTableImpl(std::vector<KernelRow>* out) {
  detail::Describe(TernaryMatVecRows(), KernelOp::kTernaryMatVec, out);
  detail::Describe(TernaryMatMulRows(), KernelOp::kTernaryMatMul, out);
  detail::Describe(TernaryMatMulI16Rows(), KernelOp::kTernaryMatMulI16, out);
  detail::Describe(TernaryMatMulU8Rows(), KernelOp::kTernaryMatMulU8, out);
}
const char* TernarySelectImpl(const KernelProblem& q) {
  if (q.op == KernelOp::kTernaryMatVec) return detail::Pick(TernaryMatVecRows(), q)->name;
  if (q.op == KernelOp::kTernaryMatMul) return detail::Pick(TernaryMatMulRows(), q)->name;
  if (q.op == KernelOp::kTernaryMatMulI16) return detail::Pick(TernaryMatMulI16Rows(), q)->name;
  if (q.op == KernelOp::kTernaryMatMulU8) return detail::Pick(TernaryMatMulU8Rows(), q)->name;
  return nullptr;
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(TernaryMatVecImpl);
HWY_EXPORT(TernaryMatMulImpl);
HWY_EXPORT(TernaryMatMulI16Impl);
HWY_EXPORT(TernaryMatMulU8Impl);
HWY_EXPORT(QuantizeU8Impl);
HWY_EXPORT(QuantizeTernaryInputImpl);
HWY_EXPORT(QuantizeTernaryAtImpl);
PERMDNN_EXPORT_KERNEL_TABLE(Ternary, TernaryTableImpl, TernarySelectImpl)

namespace {
// Padding of the matvec's input copy: the widest vector (16 floats).
constexpr int64_t kPad = 16;

void CheckCommon(const char* op, int64_t rows, std::span<const float> bias, std::size_t y_size, int64_t y_expected) {
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == rows,
                "{}: bias has {} entries, expected 0 or {} (rows)", op, bias.size(), rows);
  PERMDNN_CHECK(static_cast<int64_t>(y_size) == y_expected, "{}: output has {} entries, expected {}", op, y_size,
                y_expected);
}
}  // namespace

TernaryPack TernaryPack::Build(TernaryMatrix m, int64_t u8_taps) {
  PERMDNN_CHECK(u8_taps == 0 || (u8_taps >= 1 && m.cols() % u8_taps == 0),
                "TernaryPack: {} columns are not a whole number of {} taps", m.cols(), u8_taps);
  TernaryPack p;
  const int64_t L = m.group_len(), W = (L + 63) / 64, gb = m.group_bytes();
  p.words_per_plane = W;
  p.words.assign(static_cast<std::size_t>(m.kept_groups() * 2 * W), 0);
  for (int64_t k = 0; k < m.kept_groups(); ++k)
    for (int64_t b = 0; b < gb; ++b) {
      p.words[k * 2 * W + b / 8] |= uint64_t{m.plus()[k * gb + b]} << (8 * (b % 8));
      p.words[k * 2 * W + W + b / 8] |= uint64_t{m.minus()[k * gb + b]} << (8 * (b % 8));
    }
  PERMDNN_CHECK(m.cols() < (int64_t{1} << 31) && m.rows() < (int64_t{1} << 31) && m.kept_groups() < (int64_t{1} << 31),
                "TernaryPack: {} x {} ({} kept groups) exceeds int32 indices", m.rows(), m.cols(), m.kept_groups());
  p.plus_begin.assign(static_cast<std::size_t>(m.rows() + 1), 0);
  p.minus_begin.assign(static_cast<std::size_t>(m.rows()), 0);
  for (int64_t r = 0; r < m.rows(); ++r) {
    p.plus_begin[r] = static_cast<int64_t>(p.index.size());
    for (int sign : {1, -1}) {
      if (sign < 0) p.minus_begin[r] = static_cast<int64_t>(p.index.size());
      for (int64_t k = m.row_start(r); k < m.row_start(r + 1); ++k)
        for (int64_t e = 0; e < L; ++e)
          if (m.Code(k, e) == sign) p.index.push_back(static_cast<int32_t>(m.group_col(k) * L + e));
    }
  }
  p.plus_begin[m.rows()] = static_cast<int64_t>(p.index.size());
  // Lookup-table codes: byte of chunk c = plus bits | minus bits << 4.
  const int64_t C4 = (m.cols() + 15) / 16, CL = (L + 3) / 4, G = m.groups_per_row();
  p.block_codes.assign(static_cast<std::size_t>((m.rows() + 15) / 16 * 4 * C4 * 16), 0);
  p.group_codes.assign(static_cast<std::size_t>(m.kept_groups() * CL), 0);
  p.col_begin.assign(static_cast<std::size_t>(G + 1), 0);
  for (int64_t r = 0; r < m.rows(); ++r)
    for (int64_t k = m.row_start(r); k < m.row_start(r + 1); ++k) {
      ++p.col_begin[m.group_col(k) + 1];
      for (int64_t e = 0; e < L; ++e) {
        const int code = m.Code(k, e);
        if (code == 0) continue;
        const int shift = (e % 4) + (code < 0 ? 4 : 0);
        p.group_codes[k * CL + e / 4] |= static_cast<uint8_t>(1u << shift);
        const int64_t col = m.group_col(k) * L + e, c = col / 4;
        p.block_codes[((r / 16) * 4 * C4 + c) * 16 + r % 16] |= static_cast<uint8_t>(1u << ((col % 4) + (code < 0 ? 4 : 0)));
      }
    }
  for (int64_t j = 0; j < G; ++j) p.col_begin[j + 1] += p.col_begin[j];
  p.col_kept.resize(static_cast<std::size_t>(m.kept_groups()));
  p.col_row.resize(static_cast<std::size_t>(m.kept_groups()));
  std::vector<int64_t> fill(p.col_begin.begin(), p.col_begin.end() - 1);
  for (int64_t r = 0; r < m.rows(); ++r)  // rows in order: each column's list is sorted by row
    for (int64_t k = m.row_start(r); k < m.row_start(r + 1); ++k) {
      const int64_t at = fill[m.group_col(k)]++;
      p.col_kept[at] = static_cast<int32_t>(k);
      p.col_row[at] = static_cast<int32_t>(r);
    }
  // The 8-bit product: per row the runs of quads that touch a kept group,
  // their codes four to a word, and the sum of the codes; columns in the
  // u8_taps order (none for u8_taps = 0).
  if (u8_taps == 0) {
    p.u8_taps = 0;
    p.matrix = std::move(m);
    return p;
  }
  const int64_t T = u8_taps, CQ = (m.cols() / T + 3) / 4 * 4, Kq = T * CQ / 4;
  auto u8_col = [&](int64_t col) { return (col % T) * CQ + col / T; };
  p.u8_taps = T;
  p.u8_quads = Kq;
  std::vector<int8_t> codes(static_cast<std::size_t>(Kq * 4));
  std::vector<uint8_t> touched(static_cast<std::size_t>(Kq));
  p.u8_run_begin.assign(static_cast<std::size_t>(m.rows() + 1), 0);
  p.u8_code_begin.assign(static_cast<std::size_t>(m.rows() + 1), 0);
  p.u8_sum.assign(static_cast<std::size_t>(m.rows()), 0);
  for (int64_t r = 0; r < m.rows(); ++r) {
    std::fill(codes.begin(), codes.end(), int8_t{0});
    std::fill(touched.begin(), touched.end(), uint8_t{0});
    for (int64_t k = m.row_start(r); k < m.row_start(r + 1); ++k) {
      const int64_t c0 = m.group_col(k) * L;
      for (int64_t e = 0; e < L; ++e) {
        const int64_t col = u8_col(c0 + e);
        codes[col] = static_cast<int8_t>(m.Code(k, e));
        touched[col / 4] = 1;
        p.u8_sum[r] += m.Code(k, e);
      }
    }
    p.u8_run_begin[r] = static_cast<int64_t>(p.u8_runs.size() / 2);
    p.u8_code_begin[r] = static_cast<int64_t>(p.u8_codes.size());
    for (int64_t q = 0; q < Kq; ++q) {
      if (!touched[q]) continue;
      if (q == 0 || !touched[q - 1]) p.u8_runs.insert(p.u8_runs.end(), {static_cast<int32_t>(q), 0});
      p.u8_runs.back() = static_cast<int32_t>(q + 1);
      uint32_t word = 0;
      for (int j = 0; j < 4; ++j) word |= uint32_t{static_cast<uint8_t>(codes[4 * q + j])} << (8 * j);
      p.u8_codes.push_back(static_cast<int32_t>(word));
    }
  }
  p.u8_run_begin[m.rows()] = static_cast<int64_t>(p.u8_runs.size() / 2);
  p.u8_code_begin[m.rows()] = static_cast<int64_t>(p.u8_codes.size());
  p.matrix = std::move(m);
  return p;
}

namespace ref {
void TernaryMatVec(const TernaryMatrix& w, const float* x, const float* bias, float* y) {
  TernaryMatMul(w, x, 1, bias, y);
}
void TernaryMatMul(const TernaryMatrix& w, const float* x, int64_t batch, const float* bias, float* y) {
  const int64_t L = w.group_len();
  std::vector<double> acc(static_cast<std::size_t>(batch));
  for (int64_t r = 0; r < w.rows(); ++r) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t k = w.row_start(r); k < w.row_start(r + 1); ++k)
      for (int64_t e = 0; e < L; ++e) {
        const int code = w.Code(k, e);
        if (code == 0) continue;
        const float* xr = x + (w.group_col(k) * L + e) * batch;
        for (int64_t b = 0; b < batch; ++b) acc[b] += code > 0 ? double(xr[b]) : -double(xr[b]);
      }
    for (int64_t b = 0; b < batch; ++b)
      y[r * batch + b] = static_cast<float>(double(w.scale()[r]) * acc[b] + (bias ? double(bias[r]) : 0.0));
  }
}
void TernaryMatMulI16(const TernaryMatrix& w, const int16_t* x, int64_t batch, float x_scale, const float* bias,
                      float* y) {
  const int64_t L = w.group_len();
  std::vector<int64_t> acc(static_cast<std::size_t>(batch));
  for (int64_t r = 0; r < w.rows(); ++r) {
    std::fill(acc.begin(), acc.end(), 0);
    for (int64_t k = w.row_start(r); k < w.row_start(r + 1); ++k)
      for (int64_t e = 0; e < L; ++e) {
        const int code = w.Code(k, e);
        if (code == 0) continue;
        const int16_t* xr = x + (w.group_col(k) * L + e) * batch;
        for (int64_t b = 0; b < batch; ++b) acc[b] += code > 0 ? xr[b] : -xr[b];
      }
    for (int64_t b = 0; b < batch; ++b)
      y[r * batch + b] = static_cast<float>(double(x_scale) * double(w.scale()[r]) * double(acc[b]) +
                                            (bias ? double(bias[r]) : 0.0));
  }
}
void TernaryMatMulU8(const TernaryMatrix& w, int64_t taps, const uint8_t* xq, int64_t batch, TernaryU8Scale q,
                     const float* bias, float* y) {
  const int64_t L = w.group_len(), C4 = (w.cols() / taps + 3) / 4 * 4;
  std::vector<int64_t> acc(static_cast<std::size_t>(batch));
  for (int64_t r = 0; r < w.rows(); ++r) {
    std::fill(acc.begin(), acc.end(), 0);
    for (int64_t k = w.row_start(r); k < w.row_start(r + 1); ++k)
      for (int64_t e = 0; e < L; ++e) {
        const int code = w.Code(k, e);
        if (code == 0) continue;
        const int64_t c = w.group_col(k) * L + e, col = (c % taps) * C4 + c / taps;
        const uint8_t* xr = xq + (col / 4) * TernaryU8RowBytes(batch) + col % 4;
        for (int64_t b = 0; b < batch; ++b) acc[b] += code * (int64_t{xr[b * 4]} - q.zero);
      }
    for (int64_t b = 0; b < batch; ++b)
      y[r * batch + b] = static_cast<float>(double(q.scale) * double(w.scale()[r]) * double(acc[b]) +
                                            (bias ? double(bias[r]) : 0.0));
  }
}
}  // namespace ref

namespace {
void QuantizeU8(const float* x, int64_t K, int64_t batch, float inv, int zero, uint8_t* xq) {
  HWY_DYNAMIC_DISPATCH(QuantizeU8Impl)(x, K, batch, inv, zero, xq);
}
void CheckU8Shapes(const char* op, std::size_t x_size, int64_t batch, std::size_t xq_size) {
  PERMDNN_CHECK(batch >= 1 && x_size % static_cast<std::size_t>(batch) == 0,
                "{}: {} inputs are not a whole number of columns of batch {}", op, x_size, batch);
  const int64_t K = static_cast<int64_t>(x_size) / batch;
  PERMDNN_CHECK(static_cast<int64_t>(xq_size) == TernaryU8Quads(K) * TernaryU8RowBytes(batch),
                "{}: the quads hold {} bytes, expected {} ({} rows in quads of 4, batch {} padded to {})", op,
                xq_size, TernaryU8Quads(K) * TernaryU8RowBytes(batch), K, batch, TernaryU8RowBytes(batch) / 4);
}
}  // namespace

TernaryU8Scale QuantizeTernaryInputU8(std::span<const float> x, int64_t batch, std::span<uint8_t> xq) {
  CheckU8Shapes("QuantizeTernaryInputU8", x.size(), batch, xq.size());
  float amax = 0.0f, amin = 0.0f;
  bool finite = true;
  for (const float v : x) {
    finite = finite && std::isfinite(v);
    amax = std::max(amax, std::fabs(v));
    amin = std::min(amin, v);
  }
  PERMDNN_CHECK(finite, "QuantizeTernaryInputU8: the input holds a non-finite value");
  TernaryU8Scale q;
  if (amax > 0.0f) q = amin >= 0.0f ? TernaryU8Scale{amax / 255.0f, 0} : TernaryU8Scale{amax / 127.0f, 128};
  // A range too small for a normal float scale counts as zero (1 / scale would be inf).
  const bool zero = q.scale < std::numeric_limits<float>::min() || amax == 0.0f;
  if (zero) q = TernaryU8Scale{};
  QuantizeU8(x.data(), static_cast<int64_t>(x.size()) / batch, batch, zero ? 0.0f : 1.0f / q.scale, q.zero,
             xq.data());
  return q;
}

void QuantizeTernaryInputU8At(std::span<const float> x, int64_t batch, TernaryU8Scale q, std::span<uint8_t> xq) {
  CheckU8Shapes("QuantizeTernaryInputU8At", x.size(), batch, xq.size());
  PERMDNN_CHECK(q.scale >= std::numeric_limits<float>::min() && std::isfinite(q.scale),
                "QuantizeTernaryInputU8At: scale must be a positive normal float, got {}", q.scale);
  PERMDNN_CHECK(q.zero == 0 || q.zero == 128, "QuantizeTernaryInputU8At: zero point must be 0 or 128, got {}", q.zero);
  QuantizeU8(x.data(), static_cast<int64_t>(x.size()) / batch, batch, 1.0f / q.scale, q.zero, xq.data());
}

void TernaryMatMulU8(const TernaryPack& w, std::span<const uint8_t> xq, int64_t batch, TernaryU8Scale q,
                     std::span<const float> bias, std::span<float> y, int threads) {
  PERMDNN_CHECK(w.u8_taps >= 1, "TernaryMatMulU8: the pack has no 8-bit tables (built with u8_taps 0)");
  PERMDNN_CHECK(batch >= 1, "TernaryMatMulU8: batch must be >= 1, got {}", batch);
  PERMDNN_CHECK(static_cast<int64_t>(xq.size()) == w.u8_quads * TernaryU8RowBytes(batch),
                "TernaryMatMulU8: X has {} bytes, expected {} ({} quads, batch {} padded to {})", xq.size(),
                w.u8_quads * TernaryU8RowBytes(batch), w.u8_quads, batch, TernaryU8RowBytes(batch) / 4);
  PERMDNN_CHECK(q.zero >= 0 && q.zero <= 255, "TernaryMatMulU8: zero point must be in [0, 255], got {}", q.zero);
  CheckCommon("TernaryMatMulU8", w.rows(), bias, y.size(), w.rows() * batch);
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kTernaryMatMulU8))
    return ref::TernaryMatMulU8(w.matrix, w.u8_taps, xq.data(), batch, q, b, y.data());
  HWY_DYNAMIC_DISPATCH(TernaryMatMulU8Impl)(&w, xq.data(), batch, q, b, y.data(), threads);
}

float QuantizeTernaryInput(std::span<const float> x, std::span<int16_t> xq) {
  PERMDNN_CHECK(x.size() == xq.size(), "QuantizeTernaryInput: {} inputs but {} outputs", x.size(), xq.size());
  return HWY_DYNAMIC_DISPATCH(QuantizeTernaryInputImpl)(x.data(), static_cast<int64_t>(x.size()), xq.data());
}

void QuantizeTernaryInputAt(std::span<const float> x, float scale, std::span<int16_t> xq) {
  PERMDNN_CHECK(x.size() == xq.size(), "QuantizeTernaryInputAt: {} inputs but {} outputs", x.size(), xq.size());
  PERMDNN_CHECK(scale >= std::numeric_limits<float>::min() && std::isfinite(scale),
                "QuantizeTernaryInputAt: scale must be a positive normal float, got {}", scale);
  HWY_DYNAMIC_DISPATCH(QuantizeTernaryAtImpl)(x.data(), static_cast<int64_t>(x.size()), 1.0f / scale, xq.data());
}

void TernaryMatMulI16(const TernaryPack& w, std::span<const int16_t> x, int64_t batch, float x_scale,
                      std::span<const float> bias, std::span<float> y, int threads) {
  PERMDNN_CHECK(batch >= 1, "TernaryMatMulI16: batch must be >= 1, got {}", batch);
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == w.cols() * batch, "TernaryMatMulI16: X has {} entries, expected {}",
                x.size(), w.cols() * batch);
  CheckCommon("TernaryMatMulI16", w.rows(), bias, y.size(), w.rows() * batch);
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kTernaryMatMulI16))
    return ref::TernaryMatMulI16(w.matrix, x.data(), batch, x_scale, b, y.data());
  HWY_DYNAMIC_DISPATCH(TernaryMatMulI16Impl)(&w, x.data(), batch, x_scale, b, y.data(), threads);
}

void TernaryMatVec(const TernaryPack& w, std::span<const float> x, std::span<const float> bias, std::span<float> y,
                   int threads) {
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == w.cols(), "TernaryMatVec: x has {} entries, expected {}", x.size(),
                w.cols());
  CheckCommon("TernaryMatVec", w.rows(), bias, y.size(), w.rows());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kTernaryMatVec)) return ref::TernaryMatVec(w.matrix, x.data(), b, y.data());
  thread_local std::vector<float> padded;
  padded.assign(x.begin(), x.end());
  padded.resize(x.size() + kPad, 0.0f);
  const float* xp = padded.data();
  HWY_DYNAMIC_DISPATCH(TernaryMatVecImpl)(&w, xp, b, y.data(), threads);
}

void TernaryMatMul(const TernaryPack& w, std::span<const float> x, int64_t batch, std::span<const float> bias,
                   std::span<float> y, int threads) {
  PERMDNN_CHECK(batch >= 1, "TernaryMatMul: batch must be >= 1, got {}", batch);
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == w.cols() * batch, "TernaryMatMul: X has {} entries, expected {}",
                x.size(), w.cols() * batch);
  CheckCommon("TernaryMatMul", w.rows(), bias, y.size(), w.rows() * batch);
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kTernaryMatMul))
    return ref::TernaryMatMul(w.matrix, x.data(), batch, b, y.data());
  HWY_DYNAMIC_DISPATCH(TernaryMatMulImpl)(&w, x.data(), batch, b, y.data(), threads);
}

}  // namespace permdnn::kernels
#endif
