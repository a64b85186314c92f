// Weight gradient of the permuted-diagonal product (see permdiag_grad.h).
//
// Performance model: every stored value needs one dot product of length B
// (2 loads per FMA, so load-bound at ~1 FMA/cycle). Work goes block by block:
// the p rows of G of row block I (p·B floats) stay in L1 while the p rows of
// X of block J, contiguous in memory, stream in sequentially (prefetcher
// friendly; a first version that shared one G row across four blocks read X
// rows p·B·4 bytes apart, 4 KiB at p=8, B=128: every load hit the same L1
// sets, and it ran several times slower). Four dots at a time give four
// independent FMA chains. Column blocks are processed in chunks whose X rows
// fit in ~256 KiB (L2), reused by all row blocks of the worker.
// Over-reads: none (the tail of B runs scalar).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/train/permdiag_grad.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/train/permdiag_grad.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::train::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void WeightGradDots(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch, float* dq,
                    int threads) {
  const int p = w.p;
  const int64_t nb = w.col_blocks, B = batch;
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t vec_end = B - B % N;
  // Column blocks per chunk so that the chunk's X rows (p·B floats each
  // block) stay in ~256 KiB of L2 while every row block of the worker reuses them.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{256} << 10) / (int64_t{4} * p * std::max<int64_t>(B, 1)));
  ParallelFor(w.row_blocks, threads, [&](int64_t i0, int64_t i1, int) {
    std::vector<const float*> xr(static_cast<std::size_t>(p));
    for (int64_t j0 = 0; j0 < nb; j0 += chunk) {
      const int64_t j1 = std::min(nb, j0 + chunk);
      for (int64_t I = i0; I < i1; ++I) {
        // The block's p rows of G (p·B floats) stay in L1 across the chunk;
        // the X block rows are read sequentially, block after block.
        const int crows = static_cast<int>(std::min<int64_t>(p, w.rows - I * p));
        const float* gb = g + I * p * B;
        for (int64_t J = j0; J < j1; ++J) {
          float* out = dq + (I * nb + J) * p;
          const int k = w.offset(I, J);
          int c = 0;
          // Rows whose column is valid, in chunks of four independent dots.
          int valid[4];
          auto flush = [&](int n) {
            auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
            const float* g0 = gb + valid[0] * B;
            const float* g1 = gb + valid[n > 1 ? 1 : 0] * B;
            const float* g2 = gb + valid[n > 2 ? 2 : 0] * B;
            const float* g3 = gb + valid[n > 3 ? 3 : 0] * B;
            const float* x0 = xr[0];
            const float* x1 = xr[n > 1 ? 1 : 0];
            const float* x2 = xr[n > 2 ? 2 : 0];
            const float* x3 = xr[n > 3 ? 3 : 0];
            for (int64_t b = 0; b < vec_end; b += N) {
              a0 = hn::MulAdd(hn::LoadU(d, g0 + b), hn::LoadU(d, x0 + b), a0);
              a1 = hn::MulAdd(hn::LoadU(d, g1 + b), hn::LoadU(d, x1 + b), a1);
              a2 = hn::MulAdd(hn::LoadU(d, g2 + b), hn::LoadU(d, x2 + b), a2);
              a3 = hn::MulAdd(hn::LoadU(d, g3 + b), hn::LoadU(d, x3 + b), a3);
            }
            float s[4] = {hn::GetLane(hn::SumOfLanes(d, a0)), hn::GetLane(hn::SumOfLanes(d, a1)),
                          hn::GetLane(hn::SumOfLanes(d, a2)), hn::GetLane(hn::SumOfLanes(d, a3))};
            const float* gs[4] = {g0, g1, g2, g3};
            const float* xs[4] = {x0, x1, x2, x3};
            for (int t = 0; t < n; ++t) {
              for (int64_t b = vec_end; b < B; ++b) s[t] += gs[t][b] * xs[t][b];
              out[valid[t]] = s[t];
            }
          };
          int n = 0;
          for (c = 0; c < p; ++c) {
            const int64_t col = J * p + (c + k) % p;
            if (c >= crows || col >= w.cols) {
              out[c] = 0.0f;  // padding never trains
              continue;
            }
            valid[n] = c;
            xr[n] = x + col * B;
            if (++n == 4) {
              flush(4);
              n = 0;
            }
          }
          if (n > 0) flush(n);
        }
      }
    }
  });
}


// Packed path for p in {4, 8, 16} when one vector holds exactly p floats
// (p = 8 on AVX2, 16 on AVX-512): no horizontal sums at all. With
//     Gp[I][b][c]  = G[I·p + c, b]            (0 for padded rows)
//     Xd[J][b][t]  = X[J·p + (t mod p), b]    (t < 2p, 0 for padded columns)
// the p values of block (I, J) are one vector accumulated over the batch:
//     dq_IJ[0..p) += Gp[I][b][0..p) ∘ Xd[J][b][k_IJ .. k_IJ + p)
// (the "doubled" rotation trick of the forward kernel). Eight column blocks
// share each Gp load (8 accumulators in registers, 1.125 loads per FMA);
// column groups are the outer loop so a group's Xd (8·B·2p floats) is reused
// from L2 by all row blocks of the worker. Packing costs 3 passes over G and
// X (m·B + 2·n·B stores), small next to the m·n·B/p FMAs.
// batch_major: G is B × rows and X is B × cols (each sample a row) instead
// of feature-major; only the packing differs (and is cheaper: P contiguous
// floats per copy instead of a strided scatter).
template <int P>
bool WeightGradPacked(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch, float* dq,
                      int threads, bool batch_major) {
  const hn::CappedTag<float, P> d;
  if (static_cast<int>(hn::Lanes(d)) != P) return false;
  const int64_t mb = w.row_blocks, nb = w.col_blocks, B = batch;
  thread_local AlignedBuffer<float> gp_buf, xd_buf;
  if (gp_buf.size() < static_cast<std::size_t>(mb * B * P)) gp_buf.Resize(mb * B * P);
  if (xd_buf.size() < static_cast<std::size_t>(nb * B * 2 * P)) xd_buf.Resize(nb * B * 2 * P);
  float* gp = gp_buf.data();
  float* xd = xd_buf.data();
  if (batch_major) {
    ParallelFor(B, threads, [&](int64_t b0, int64_t b1, int) {
      for (int64_t b = b0; b < b1; ++b) {
        const float* gs = g + b * w.rows;
        const float* xs = x + b * w.cols;
        for (int64_t I = 0; I < mb; ++I) {
          float* dst = gp + (I * B + b) * P;
          const int64_t valid = std::min<int64_t>(P, w.rows - I * P);
          std::memcpy(dst, gs + I * P, sizeof(float) * valid);
          for (int64_t c = valid; c < P; ++c) dst[c] = 0.0f;
        }
        for (int64_t J = 0; J < nb; ++J) {
          float* dst = xd + (J * B + b) * 2 * P;
          const int64_t valid = std::min<int64_t>(P, w.cols - J * P);
          std::memcpy(dst, xs + J * P, sizeof(float) * valid);
          for (int64_t t = valid; t < P; ++t) dst[t] = 0.0f;
          std::memcpy(dst + P, dst, sizeof(float) * P);
        }
      }
    });
  } else {
  ParallelFor(mb, threads, [&](int64_t i0, int64_t i1, int) {
    for (int64_t I = i0; I < i1; ++I)
      for (int c = 0; c < P; ++c) {
        const int64_t r = I * P + c;
        float* dst = gp + I * B * P + c;
        if (r < w.rows) {
          const float* src = g + r * B;
          for (int64_t b = 0; b < B; ++b) dst[b * P] = src[b];
        } else {
          for (int64_t b = 0; b < B; ++b) dst[b * P] = 0.0f;
        }
      }
  });
  ParallelFor(nb, threads, [&](int64_t j0, int64_t j1, int) {
    for (int64_t J = j0; J < j1; ++J)
      for (int t = 0; t < P; ++t) {
        const int64_t col = J * P + t;
        float* dst = xd + J * B * 2 * P + t;
        if (col < w.cols) {
          const float* src = x + col * B;
          for (int64_t b = 0; b < B; ++b) dst[b * 2 * P] = dst[b * 2 * P + P] = src[b];
        } else {
          for (int64_t b = 0; b < B; ++b) dst[b * 2 * P] = dst[b * 2 * P + P] = 0.0f;
        }
      }
  });
  }
  constexpr int64_t kGroup = 8;
  // Batch chunks keep a group's Xd slice (kGroup·chunk·2p floats, 16 KiB)
  // in L1 across all row blocks; without them the 64 KiB slice came from L2
  // every iteration and bounded the loop (partial sums go through dq).
  const int64_t bchunk = std::max<int64_t>(1, 4096 / (kGroup * 2 * P));
  // Row-block chunks keep their packed G (ic·B·p floats, ~128 KiB) in L2
  // while every column group passes over them; without them all of G came
  // from L3 once per (group, batch chunk): ~0.5 GB at 4096², B = 128.
  const int64_t ic = std::max<int64_t>(1, (int64_t{128} << 10) / (B * P * int64_t{sizeof(float)}));
  ParallelFor(mb, threads, [&](int64_t ci0, int64_t ci1, int) {
   for (int64_t i0 = ci0; i0 < ci1; i0 += ic) {
    const int64_t i1 = std::min(ci1, i0 + ic);
    for (int64_t j0 = 0; j0 < nb; j0 += kGroup) {
      const int64_t nj = std::min(kGroup, nb - j0);
      for (int64_t b0 = 0; b0 < B; b0 += bchunk) {
        const int64_t b1 = std::min(B, b0 + bchunk);
        for (int64_t I = i0; I < i1; ++I) {
          const float* gI = gp + I * B * P;
          float* out = dq + (I * nb + j0) * P;
          const float* xs[kGroup];
          for (int64_t j = 0; j < kGroup; ++j) {
            const int64_t J = j0 + (j < nj ? j : 0);
            xs[j] = xd + J * B * 2 * P + w.offset(I, J);
          }
          auto init = [&](int64_t j) { return (b0 == 0 || j >= nj) ? hn::Zero(d) : hn::LoadU(d, out + j * P); };
          auto a0 = init(0), a1 = init(1), a2 = init(2), a3 = init(3);
          auto a4 = init(4), a5 = init(5), a6 = init(6), a7 = init(7);
          for (int64_t b = b0; b < b1; ++b) {
            const auto gv = hn::Load(d, gI + b * P);
            const int64_t o = b * 2 * P;
            a0 = hn::MulAdd(gv, hn::LoadU(d, xs[0] + o), a0);
            a1 = hn::MulAdd(gv, hn::LoadU(d, xs[1] + o), a1);
            a2 = hn::MulAdd(gv, hn::LoadU(d, xs[2] + o), a2);
            a3 = hn::MulAdd(gv, hn::LoadU(d, xs[3] + o), a3);
            a4 = hn::MulAdd(gv, hn::LoadU(d, xs[4] + o), a4);
            a5 = hn::MulAdd(gv, hn::LoadU(d, xs[5] + o), a5);
            a6 = hn::MulAdd(gv, hn::LoadU(d, xs[6] + o), a6);
            a7 = hn::MulAdd(gv, hn::LoadU(d, xs[7] + o), a7);
          }
          const decltype(a0) acc[kGroup] = {a0, a1, a2, a3, a4, a5, a6, a7};
          for (int64_t j = 0; j < nj; ++j) hn::StoreU(acc[j], d, out + j * P);
        }
      }
    }
   }
  });
  return true;
}

void WeightGradImpl(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch, float* dq,
                    int threads) {
  bool done = false;
  if (w.p == 8) done = WeightGradPacked<8>(w, g, x, batch, dq, threads, false);
  if (w.p == 16) done = WeightGradPacked<16>(w, g, x, batch, dq, threads, false);
  if (w.p == 4) done = WeightGradPacked<4>(w, g, x, batch, dq, threads, false);
  if (!done) WeightGradDots(w, g, x, batch, dq, threads);
}

// Batch-major G (B × rows) and X (B × cols). Packed path when it applies;
// otherwise transpose to feature-major and take the dot-product path.
void WeightGradRowsImpl(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch, float* dq,
                        int threads) {
  bool done = false;
  if (w.p == 8) done = WeightGradPacked<8>(w, g, x, batch, dq, threads, true);
  if (w.p == 16) done = WeightGradPacked<16>(w, g, x, batch, dq, threads, true);
  if (w.p == 4) done = WeightGradPacked<4>(w, g, x, batch, dq, threads, true);
  if (done) return;
  std::vector<float> gt(static_cast<std::size_t>(w.rows * batch)), xt(static_cast<std::size_t>(w.cols * batch));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < w.rows; ++r) gt[r * batch + b] = g[b * w.rows + r];
    for (int64_t c = 0; c < w.cols; ++c) xt[c * batch + b] = x[b * w.cols + c];
  }
  WeightGradDots(w, gt.data(), xt.data(), batch, dq, threads);
}

}  // namespace permdnn::train::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::train {
HWY_EXPORT(WeightGradImpl);
HWY_EXPORT(WeightGradRowsImpl);

void PermDiagWeightGradRows(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch,
                            float* dq, int threads) {
  HWY_DYNAMIC_DISPATCH(WeightGradRowsImpl)(w, g, x, batch, dq, threads);
}

void PermDiagWeightGrad(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch,
                        float* dq, int threads) {
  HWY_DYNAMIC_DISPATCH(WeightGradImpl)(w, g, x, batch, dq, threads);
}

void PermDiagWeightGradRef(const PermDiagView<float>& w, const float* g, const float* x, int64_t batch,
                           float* dq) {
  const int p = w.p;
  for (int64_t I = 0; I < w.row_blocks; ++I) {
    for (int64_t J = 0; J < w.col_blocks; ++J) {
      for (int c = 0; c < p; ++c) {
        int64_t r = I * p + c, col = J * p + (c + w.offset(I, J)) % p;
        double acc = 0.0;
        if (r < w.rows && col < w.cols)
          for (int64_t b = 0; b < batch; ++b) acc += double{g[r * batch + b]} * x[col * batch + b];
        dq[(I * w.col_blocks + J) * p + c] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace permdnn::train
#endif  // HWY_ONCE
