// Block-circulant products: FFT (FFTW), direct, int16 and reference.
//
// FFT layout (see circulant.h): spectra Wr/Wi[I][f][J], f = 0..F-1 with
// F = p/2 + 1 (real-input FFT). For y = W·x:
//   1. X_J = rfft(x_J) for every column block (one batched FFTW plan),
//      transposed to split-complex Xr/Xi[f][J];
//   2. A_I[f] = Σ_J W_IJ[f] · X_J[f]   (SIMD dot products over J, circulant_simd.cc);
//   3. y_I = irfft(A_I) / p.
// Wᵀ·g uses conj(W): the transpose of a circulant block is circulant with
// the reversed vector, whose spectrum is the conjugate.
// FFTW's planner is not thread-safe: plans are made under a global mutex;
// executing a plan on new arrays (fftwf_execute_dft_r2c) is.
#include "permdnn/kernels/circulant.h"

#include <fftw3.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/dispatch.h"
#include "src/kernels/circulant_simd.h"
#include "src/kernels/table_internal.h"

namespace permdnn::kernels {

namespace {
std::mutex& PlannerMutex() {
  static std::mutex m;
  return m;
}
}  // namespace

struct CirculantFft::State {
  BlockCirculantMatrix w;       // the reference path's operand
  int64_t rows = 0, cols = 0, mb = 0, nb = 0;
  int p = 1, F = 1;
  AlignedBuffer<float> wr, wi;  // [mb][F][nb]
  fftwf_plan r2c = nullptr;     // one block: p reals -> F complex
  fftwf_plan c2r = nullptr;     // one block: F complex -> p reals
  // The channel-DFT form of the batched product (MatMul), made at its first call.
  mutable std::once_flag dft_once;
  mutable std::unique_ptr<CirculantChannelDft> dft;
  ~State() {
    std::lock_guard<std::mutex> lock(PlannerMutex());
    if (r2c) fftwf_destroy_plan(r2c);
    if (c2r) fftwf_destroy_plan(c2r);
  }
};

CirculantFft::CirculantFft(CirculantFft&&) noexcept = default;
CirculantFft& CirculantFft::operator=(CirculantFft&&) noexcept = default;
CirculantFft::~CirculantFft() = default;

CirculantFft::CirculantFft(BlockCirculantMatrix matrix) : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.w = std::move(matrix);
  const BlockCirculantMatrix& w = s.w;
  s.rows = w.rows();
  s.cols = w.cols();
  s.mb = w.row_blocks();
  s.nb = w.col_blocks();
  s.p = w.p();
  s.F = s.p / 2 + 1;
  AlignedBuffer<float> real(static_cast<std::size_t>(s.p));
  AlignedBuffer<float> cplx(static_cast<std::size_t>(2 * s.F));
  {
    std::lock_guard<std::mutex> lock(PlannerMutex());
    s.r2c = fftwf_plan_dft_r2c_1d(s.p, real.data(), reinterpret_cast<fftwf_complex*>(cplx.data()), FFTW_ESTIMATE);
    s.c2r = fftwf_plan_dft_c2r_1d(s.p, reinterpret_cast<fftwf_complex*>(cplx.data()), real.data(), FFTW_ESTIMATE);
  }
  PERMDNN_CHECK(s.r2c && s.c2r, "FFTW could not plan a transform of size {}", s.p);
  s.wr.Resize(static_cast<std::size_t>(s.mb * s.F * s.nb));
  s.wi.Resize(static_cast<std::size_t>(s.mb * s.F * s.nb));
  for (int64_t I = 0; I < s.mb; ++I) {
    for (int64_t J = 0; J < s.nb; ++J) {
      std::memcpy(real.data(), w.block(I, J), sizeof(float) * s.p);
      fftwf_execute_dft_r2c(s.r2c, real.data(), reinterpret_cast<fftwf_complex*>(cplx.data()));
      for (int f = 0; f < s.F; ++f) {
        s.wr[(I * s.F + f) * s.nb + J] = cplx[2 * f];
        s.wi[(I * s.F + f) * s.nb + J] = cplx[2 * f + 1];
      }
    }
  }
}

int64_t CirculantFft::rows() const { return s_->rows; }
int64_t CirculantFft::cols() const { return s_->cols; }
const BlockCirculantMatrix& CirculantFft::matrix() const { return s_->w; }
int64_t CirculantFft::spectrum_bytes() const {
  return static_cast<int64_t>(s_->wr.size() + s_->wi.size()) * int64_t{sizeof(float)};
}

void CirculantFft::MatVec(std::span<const float> x, std::span<const float> bias, std::span<float> y,
                          int threads) const {
  const State& s = *s_;
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == s.cols, "CirculantFft::MatVec: x has {} entries, expected {}",
                x.size(), s.cols);
  PERMDNN_CHECK(static_cast<int64_t>(y.size()) == s.rows, "CirculantFft::MatVec: y has {} entries, expected {}",
                y.size(), s.rows);
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == s.rows,
                "CirculantFft::MatVec: bias has {} entries, expected 0 or {}", bias.size(), s.rows);
  if (detail::UseReference(KernelOp::kCirculantMatVec))
    return ref::CirculantMatVec(s.w.view(), x.data(), bias.empty() ? nullptr : bias.data(), y.data());
  static thread_local AlignedBuffer<float> xr, xi;
  xr.Resize(static_cast<std::size_t>(s.F * s.nb));
  xi.Resize(static_cast<std::size_t>(s.F * s.nb));
  // Workers see their own thread_locals: hand them pointers to ours.
  float* xrw = xr.data();
  float* xiw = xi.data();
  // 1. Spectra of the input blocks.
  ParallelFor(s.nb, threads, [&](int64_t J0, int64_t J1, int) {
    AlignedBuffer<float> real(static_cast<std::size_t>(s.p)), cplx(static_cast<std::size_t>(2 * s.F));
    for (int64_t J = J0; J < J1; ++J) {
      for (int d = 0; d < s.p; ++d) {
        const int64_t col = J * s.p + d;
        real[d] = col < s.cols ? x[col] : 0.0f;
      }
      fftwf_execute_dft_r2c(s.r2c, real.data(), reinterpret_cast<fftwf_complex*>(cplx.data()));
      for (int f = 0; f < s.F; ++f) {
        xrw[f * s.nb + J] = cplx[2 * f];
        xiw[f * s.nb + J] = cplx[2 * f + 1];
      }
    }
  });
  // 2-3. Per output block: spectral dot products, then the inverse FFT.
  const float inv_p = 1.0f / static_cast<float>(s.p);
  const float* xrp = xr.data();
  const float* xip = xi.data();
  ParallelFor(s.mb, threads, [&](int64_t I0, int64_t I1, int) {
    AlignedBuffer<float> real(static_cast<std::size_t>(s.p)), cplx(static_cast<std::size_t>(2 * s.F));
    for (int64_t I = I0; I < I1; ++I) {
      for (int f = 0; f < s.F; ++f) {
        const int64_t o = (I * s.F + f) * s.nb;
        ComplexDot(s.wr.data() + o, s.wi.data() + o, xrp + f * s.nb, xip + f * s.nb, s.nb, false, &cplx[2 * f],
                   &cplx[2 * f + 1]);
      }
      fftwf_execute_dft_c2r(s.c2r, reinterpret_cast<fftwf_complex*>(cplx.data()), real.data());
      for (int c = 0; c < s.p; ++c) {
        const int64_t r = I * s.p + c;
        if (r < s.rows) y[r] = real[c] * inv_p + (bias.empty() ? 0.0f : bias[r]);
      }
    }
  });
}

void CirculantFft::MatVecT(std::span<const float> g, std::span<float> x, int threads) const {
  const State& s = *s_;
  PERMDNN_CHECK(static_cast<int64_t>(g.size()) == s.rows, "CirculantFft::MatVecT: g has {} entries, expected {}",
                g.size(), s.rows);
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == s.cols, "CirculantFft::MatVecT: x has {} entries, expected {}",
                x.size(), s.cols);
  if (detail::UseReference(KernelOp::kCirculantMatVecT)) return ref::CirculantMatVecT(s.w.view(), g.data(), x.data());
  static thread_local AlignedBuffer<float> gr, gi;
  gr.Resize(static_cast<std::size_t>(s.mb * s.F));
  gi.Resize(static_cast<std::size_t>(s.mb * s.F));
  float* grw = gr.data();
  float* giw = gi.data();
  ParallelFor(s.mb, threads, [&](int64_t I0, int64_t I1, int) {
    AlignedBuffer<float> real(static_cast<std::size_t>(s.p)), cplx(static_cast<std::size_t>(2 * s.F));
    for (int64_t I = I0; I < I1; ++I) {
      for (int c = 0; c < s.p; ++c) {
        const int64_t r = I * s.p + c;
        real[c] = r < s.rows ? g[r] : 0.0f;
      }
      fftwf_execute_dft_r2c(s.r2c, real.data(), reinterpret_cast<fftwf_complex*>(cplx.data()));
      for (int f = 0; f < s.F; ++f) {
        grw[I * s.F + f] = cplx[2 * f];
        giw[I * s.F + f] = cplx[2 * f + 1];
      }
    }
  });
  const float inv_p = 1.0f / static_cast<float>(s.p);
  ParallelFor(s.nb, threads, [&](int64_t J0, int64_t J1, int) {
    const int64_t len = J1 - J0;
    AlignedBuffer<float> ar(static_cast<std::size_t>(s.F * len)), ai(static_cast<std::size_t>(s.F * len));
    ar.Fill(0.0f);
    ai.Fill(0.0f);
    // A_J[f] = Σ_I conj(W_IJ[f]) · G_I[f], accumulated as vectors over J.
    for (int64_t I = 0; I < s.mb; ++I)
      for (int f = 0; f < s.F; ++f) {
        const int64_t o = (I * s.F + f) * s.nb + J0;
        ComplexAxpyConj(s.wr.data() + o, s.wi.data() + o, grw[I * s.F + f], giw[I * s.F + f], len,
                        ar.data() + f * len, ai.data() + f * len);
      }
    AlignedBuffer<float> real(static_cast<std::size_t>(s.p)), cplx(static_cast<std::size_t>(2 * s.F));
    for (int64_t J = J0; J < J1; ++J) {
      for (int f = 0; f < s.F; ++f) {
        cplx[2 * f] = ar[f * len + (J - J0)];
        cplx[2 * f + 1] = ai[f * len + (J - J0)];
      }
      fftwf_execute_dft_c2r(s.c2r, reinterpret_cast<fftwf_complex*>(cplx.data()), real.data());
      for (int d = 0; d < s.p; ++d) {
        const int64_t col = J * s.p + d;
        if (col < s.cols) x[col] = real[d] * inv_p;
      }
    }
  });
}

bool CirculantFft::MatMulUsesDft(int p, int64_t batch) {
  return batch >= kDftBatch && p >= 2 && p <= 64 && !detail::UseReference(KernelOp::kCirculantMatVec);
}

void CirculantFft::MatMul(std::span<const float> x, int64_t batch, std::span<const float> bias,
                          std::span<float> y, int threads) const {
  const State& s = *s_;
  PERMDNN_CHECK(batch >= 1, "CirculantFft::MatMul: batch must be >= 1, got {}", batch);
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == s.cols * batch && static_cast<int64_t>(y.size()) == s.rows * batch,
                "CirculantFft::MatMul: X must be {}x{} and Y {}x{}", s.cols, batch, s.rows, batch);
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == s.rows,
                "CirculantFft::MatMul: bias has {} entries, expected 0 or {}", bias.size(), s.rows);
  if (MatMulUsesDft(s.p, batch)) {
    // The batch as the columns of one GEMM per frequency: the weights are
    // read once per batch instead of once per sample (1024 x 1024, p = 8,
    // one thread: batch 16 0.18 against 0.25 ms, batch 64 0.32 against 1.12).
    std::call_once(s.dft_once, [&] { s.dft = std::make_unique<CirculantChannelDft>(s.w, 1); });
    const CirculantChannelDft& d = *s.dft;
    ParallelFor(batch, threads, [&](int64_t b0, int64_t b1, int) {
      const int64_t n = b1 - b0;
      thread_local std::vector<float> t, u;  // per worker, grow-only
      t.resize(static_cast<std::size_t>(std::max<int64_t>(d.in_rows() * n, 1)));
      u.resize(static_cast<std::size_t>(std::max<int64_t>(d.out_rows() * n, 1)));
      d.Forward(x.data() + b0, batch, s.cols, t.data(), n, n);
      d.Products(t.data(), n, u.data(), n, n);
      d.Inverse(u.data(), n, nullptr, bias.empty() ? nullptr : bias.data(), y.data() + b0, batch, s.rows, n);
    });
    return;
  }
  // One sample at a time through the batch-1 path (gather/scatter a column).
  std::vector<float> xc(static_cast<std::size_t>(s.cols)), yc(static_cast<std::size_t>(s.rows));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < s.cols; ++j) xc[j] = x[j * batch + b];
    MatVec(xc, bias, yc, threads);
    for (int64_t r = 0; r < s.rows; ++r) y[r * batch + b] = yc[r];
  }
}

void CirculantMatVecDirect(const BlockCirculantMatrix& w, std::span<const float> x, std::span<const float> bias,
                           std::span<float> y) {
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == w.cols() && static_cast<int64_t>(y.size()) == w.rows(),
                "CirculantMatVecDirect: x must have {} and y {} entries", w.cols(), w.rows());
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == w.rows(),
                "CirculantMatVecDirect: bias has {} entries, expected 0 or {}", bias.size(), w.rows());
  if (detail::UseReference(KernelOp::kCirculantMatVec))
    return ref::CirculantMatVec(w.view(), x.data(), bias.empty() ? nullptr : bias.data(), y.data());
  const int p = w.p();
  // Doubled block vector: row c of block (I, J) is ww[c + p - d] for d = 0..p-1,
  // i.e. a reversed contiguous run; x_J is read forward.
  std::vector<float> xpad(static_cast<std::size_t>(w.col_blocks() * p), 0.0f);
  std::copy(x.begin(), x.end(), xpad.begin());
  std::vector<float> ww(static_cast<std::size_t>(2 * p));
  for (int64_t I = 0; I < w.row_blocks(); ++I) {
    std::vector<float> acc(static_cast<std::size_t>(p), 0.0f);
    for (int64_t J = 0; J < w.col_blocks(); ++J) {
      const float* q = w.block(I, J);
      for (int t = 0; t < p; ++t) ww[t] = ww[t + p] = q[t];
      const float* xj = xpad.data() + J * p;
      for (int c = 0; c < p; ++c) {
        const float* row = ww.data() + c + p;  // row[-d] = q[(c - d) mod p]
        float sum = 0;
        for (int d = 0; d < p; ++d) sum += row[-d] * xj[d];
        acc[c] += sum;
      }
    }
    for (int c = 0; c < p; ++c) {
      const int64_t r = I * p + c;
      if (r < w.rows()) y[r] = acc[c] + (bias.empty() ? 0.0f : bias[r]);
    }
  }
}

void CirculantMatVecI16Acc(const CirculantView<int16_t>& w, std::span<const int16_t> x, std::span<int64_t> acc) {
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == w.cols && static_cast<int64_t>(acc.size()) == w.rows,
                "CirculantMatVecI16Acc: x must have {} and acc {} entries", w.cols, w.rows);
  const int p = w.p;
  for (int64_t r = 0; r < w.rows; ++r) {
    const int64_t I = r / p;
    const int c = static_cast<int>(r % p);
    int64_t sum = 0;
    for (int64_t col = 0; col < w.cols; ++col) {
      const int d = static_cast<int>(col % p);
      sum += int64_t{w.block(I, col / p)[((c - d) % p + p) % p]} * x[col];
    }
    acc[r] = sum;
  }
}

namespace detail {

// The circulant rows of the kernel table. The FFT wins from p = 2 on: 1024 x
// 1024, batch 1, one thread (load ~5): p=2 122 vs 2399 us, p=4 57 vs 1200,
// p=8 27 vs 379, p=16 21 vs 221 (FFT vs direct, medians). p = 1 is a dense
// matrix: direct.
bool AdmitsFft(const KernelProblem& q) { return q.p >= 2; }

void CirculantTable(std::vector<KernelRow>* out) {
  out->push_back({"circulant.fft", KernelOp::kCirculantMatVec, "", AdmitsFft});  // SIMD spectral dots
  out->push_back({"circulant.direct", KernelOp::kCirculantMatVec, "generic", AdmitsAll});
  out->push_back({"circulant.matvec_t.fft", KernelOp::kCirculantMatVecT, "", AdmitsAll});
}

const char* CirculantSelect(const KernelProblem& q) {
  if (q.op == KernelOp::kCirculantMatVecT) return "circulant.matvec_t.fft";
  if (q.op != KernelOp::kCirculantMatVec) return nullptr;
  const char* forced = ForcedKernel();
  if (forced != nullptr && std::string_view(forced) == "circulant.direct") return "circulant.direct";
  return AdmitsFft(q) ? "circulant.fft" : "circulant.direct";
}

}  // namespace detail

namespace ref {

void CirculantMatVec(const CirculantView<float>& w, const float* x, const float* bias, float* y) {
  const int p = w.p;
  for (int64_t r = 0; r < w.rows; ++r) {
    const int64_t I = r / p;
    const int c = static_cast<int>(r % p);
    double acc = bias ? bias[r] : 0.0;
    for (int64_t col = 0; col < w.cols; ++col) {
      const int d = static_cast<int>(col % p);
      acc += static_cast<double>(w.block(I, col / p)[((c - d) % p + p) % p]) * x[col];
    }
    y[r] = static_cast<float>(acc);
  }
}

void CirculantMatVecT(const CirculantView<float>& w, const float* g, float* x) {
  const int p = w.p;
  for (int64_t col = 0; col < w.cols; ++col) {
    const int64_t J = col / p;
    const int d = static_cast<int>(col % p);
    double acc = 0;
    for (int64_t r = 0; r < w.rows; ++r) {
      const int c = static_cast<int>(r % p);
      acc += static_cast<double>(w.block(r / p, J)[((c - d) % p + p) % p]) * g[r];
    }
    x[col] = static_cast<float>(acc);
  }
}

}  // namespace ref
}  // namespace permdnn::kernels
