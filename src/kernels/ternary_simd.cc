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
// MulAdd(scale, acc, bias) per vector. Then tiles of N and a scalar tail;
// no over-read. Two load ports and two FP add ports on Zen 5 bound it at
// one weight per cycle per tile: the skipped groups and zero codes are the
// whole gain over dense (the dense GEMM does one FMA per weight and tile).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/ternary_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <vector>

#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/ternary.h"
#include "src/kernels/table_internal.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

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

void TernaryMatMulRowsImpl(const TernaryPack* w, const float* x, int64_t batch, const float* bias, float* y,
                           int64_t r0, int64_t r1) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int32_t* idx = w->index.data();
  const float* scale = w->matrix.scale().data();
  // Batch tiles outside, rows inside: every row of the slice reads the same
  // 4N-column strip of X, which then stays in L1/L2 across the rows
  // (row-outer re-read the whole of X from L3 for every row).
  int64_t b0 = 0;
  for (; b0 + 4 * N <= batch; b0 += 4 * N)
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p0 = w->plus_begin[r], m0 = w->minus_begin[r], m1 = w->plus_begin[r + 1];
      auto a0 = hn::Zero(d), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t e = p0; e < m0; ++e) {
        const float* xr = x + int64_t{idx[e]} * batch + b0;
        a0 = hn::Add(a0, hn::LoadU(d, xr));
        a1 = hn::Add(a1, hn::LoadU(d, xr + N));
        a2 = hn::Add(a2, hn::LoadU(d, xr + 2 * N));
        a3 = hn::Add(a3, hn::LoadU(d, xr + 3 * N));
      }
      for (int64_t e = m0; e < m1; ++e) {
        const float* xr = x + int64_t{idx[e]} * batch + b0;
        a0 = hn::Sub(a0, hn::LoadU(d, xr));
        a1 = hn::Sub(a1, hn::LoadU(d, xr + N));
        a2 = hn::Sub(a2, hn::LoadU(d, xr + 2 * N));
        a3 = hn::Sub(a3, hn::LoadU(d, xr + 3 * N));
      }
      const auto vs = hn::Set(d, scale[r]), vb = hn::Set(d, bias ? bias[r] : 0.0f);
      float* yr = y + r * batch + b0;
      hn::StoreU(hn::MulAdd(vs, a0, vb), d, yr);
      hn::StoreU(hn::MulAdd(vs, a1, vb), d, yr + N);
      hn::StoreU(hn::MulAdd(vs, a2, vb), d, yr + 2 * N);
      hn::StoreU(hn::MulAdd(vs, a3, vb), d, yr + 3 * N);
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

// This file's part of the kernel table: one SIMD row per op.
void TernaryTableImpl(std::vector<KernelRow>* out) {
  out->push_back({"ternary.matvec.masks", KernelOp::kTernaryMatVec, "", detail::AdmitsAll});
  out->push_back({"ternary.matmul.lists", KernelOp::kTernaryMatMul, "", detail::AdmitsAll});
}
const char* TernarySelectImpl(const KernelProblem& q) {
  if (q.op == KernelOp::kTernaryMatVec) return "ternary.matvec.masks";
  if (q.op == KernelOp::kTernaryMatMul) return "ternary.matmul.lists";
  return nullptr;
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(TernaryRowsImpl);
HWY_EXPORT(TernaryMatMulRowsImpl);
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

TernaryPack TernaryPack::Build(TernaryMatrix m) {
  TernaryPack p;
  const int64_t L = m.group_len(), W = (L + 63) / 64, gb = m.group_bytes();
  p.words_per_plane = W;
  p.words.assign(static_cast<std::size_t>(m.kept_groups() * 2 * W), 0);
  for (int64_t k = 0; k < m.kept_groups(); ++k)
    for (int64_t b = 0; b < gb; ++b) {
      p.words[k * 2 * W + b / 8] |= uint64_t{m.plus()[k * gb + b]} << (8 * (b % 8));
      p.words[k * 2 * W + W + b / 8] |= uint64_t{m.minus()[k * gb + b]} << (8 * (b % 8));
    }
  PERMDNN_CHECK(m.cols() < (int64_t{1} << 31), "TernaryPack: {} columns exceed int32 indices", m.cols());
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
}  // namespace ref

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
  ParallelFor(w.rows(), threads, [&](int64_t r0, int64_t r1, int) {
    HWY_DYNAMIC_DISPATCH(TernaryRowsImpl)(&w, xp, b, y.data(), r0, r1);
  });
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
  ParallelFor(w.rows(), threads, [&](int64_t r0, int64_t r1, int) {
    HWY_DYNAMIC_DISPATCH(TernaryMatMulRowsImpl)(&w, x.data(), batch, b, y.data(), r0, r1);
  });
}

}  // namespace permdnn::kernels
#endif
