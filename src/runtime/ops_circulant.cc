// The ai.permdnn block-circulant operators (CirCNN) on the permdnn kernels.
//
// BlockCirculantMatMul(X, values[, bias]) -> Y
//   X [..., in_features], Y [..., out_features]; values [mb, nb, p] float
//   (W[I·p + c, J·p + d] = values[I, J, (c − d) mod p]), bias [out];
//   attributes p, in_features, out_features; mb = ceil(out/p), nb = ceil(in/p).
// BlockCirculantConv(X, values[, bias]) -> Y
//   X [N, C, spatial...]; values [mb, nb, p, k...]: out channel I·p + c reads
//   in channel J·p + d through the kernel values[I, J, (c − d) mod p];
//   attributes p, in_channels, out_channels, kernel_shape, strides, pads,
//   dilations (as Conv, group 1).
//
// Kernels: kernels::CirculantFft (FFTW plans and the weight spectra made
// once, when the node is first planned) where the kernel table's
// circulant.fft row admits p (p >= 2), else the direct product. The conv is
// one block-circulant
// matrix product per output position: after im2col, the weight of kernel
// tap t over the channels is itself block-circulant, so the taps are laid
// side by side as one [out, ksz·nb·p] block-circulant matrix (column
// t·nb·p + in channel) and each output position is one MatVec of its
// gathered window — the FFT saving applies to the conv as well.
#include <algorithm>
#include <cmath>
#include <memory>

#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/circulant.h"
#include "permdnn/kernels/table.h"
#include "runtime/ops_compressed.h"

namespace permdnn::runtime::detail {

namespace {

// The matrix with the kernel the table's predicate picks for its p: the
// FFT engine (which keeps the matrix) or the direct product.
class Circulant {
 public:
  void Init(BlockCirculantMatrix w) {
    problem_ = {kernels::KernelOp::kCirculantMatVec, w.p(), w.rows(), w.cols(), 1, false};
    if (kernels::KernelAdmits("circulant.fft", problem_)) fft_ = std::make_unique<kernels::CirculantFft>(std::move(w));
    else w_ = std::move(w);
  }
  bool ready() const { return fft_ || w_.rows() > 0; }
  // The kernel table's row that runs (what --profile shows).
  std::string name() const {
    return fft_ || kernels::SelectedKernel(problem_) != "circulant.fft" ? kernels::SelectedKernel(problem_)
                                                                          : "circulant.direct";
  }
  void MatVec(std::span<const float> x, std::span<const float> bias, std::span<float> y, int threads) const {
    if (fft_) fft_->MatVec(x, bias, y, threads);
    else kernels::CirculantMatVecDirect(w_, x, bias, y);
  }

 private:
  kernels::KernelProblem problem_;
  BlockCirculantMatrix w_;
  std::unique_ptr<kernels::CirculantFft> fft_;
};

class BlockCirculantMatMulOp : public CompressedOp {
 public:
  BlockCirculantMatMulOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, false, n), in_(geometry_.in), out_(geometry_.out) {}
  std::string KernelName() const override { return w_.name(); }

  void Prepare(OpContext& ctx) override {
    batch_ = PrepareLinear(ctx, in_, out_);
    if (!w_.ready()) {
      formats::Weights w = ReadWeights(ctx, format_, false);
      w_.Init(BlockCirculantMatrix::FromParts(out_, in_, geometry_.p, w.values));
      bias_ = std::move(w.bias);
    }
  }

  // One MatVec per sample; with several threads and at least as many
  // samples, threads split the samples, else each product's blocks. A
  // tiled batch product (input spectra of 16 samples, weight spectra
  // streamed once per tile, plain-C++ vector loop over the tile) was tried
  // and lost at every batch (1024 x 1024, p = 8, 1 thread: batch 8 409 vs
  // 207 us, 64: 1915 vs 1724 us), so the SIMD per-sample product stays.
  void Run(OpContext& ctx, RunState& rs) override {
    const float* x = ctx.in[0]->f();
    float* y = ctx.out[0]->f();
    ForEachSample(batch_, rs.threads, [&](int64_t b, int threads, int) {
      w_.MatVec({x + b * in_, static_cast<std::size_t>(in_)}, bias_, {y + b * out_, static_cast<std::size_t>(out_)},
                threads);
    });
  }

 private:
  int64_t in_, out_, batch_ = 1;
  Circulant w_;
  std::vector<float> bias_;
};

class BlockCirculantConvOp : public CompressedOp {
 public:
  BlockCirculantConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, true, n), p_(geometry_.p), in_(geometry_.in), out_(geometry_.out) {}
  std::string KernelName() const override { return "im2col+" + w_.name(); }

  void Prepare(OpContext& ctx) override {
    if (!w_.ready()) {
      formats::Weights w = ReadWeights(ctx, format_, true);
      kernel_ = w.g.kernel;
      ksz_ = w.g.taps();
      // Taps side by side: the registry's lifted [out, taps·nb·p] matrix.
      w_.Init(std::move(*formats::Lift(w).circulant));
      bias_ = std::move(w.bias);
    }
    g_win_ = PrepareConv(ctx, in_, out_, kernel_);
    sample_bytes_ = ctx.scratch_bytes;
  }
  // Whole samples per thread (ForEachSample), each on its own columns.
  void Finalize(OpContext& ctx, const RunState& rs) override {
    ctx.scratch_bytes = std::max(ctx.scratch_bytes, SampleScratchBytes(sample_bytes_, ctx.in[0]->shape[0], rs.threads));
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_win_.out_size(), isz = g_win_.in_size();
    const int64_t nbp = CeilDiv(in_, p_) * p_, wide = ksz_ * nbp;
    ForEachSample(n, rs.threads, [&](int64_t s, int threads, int worker) {
      float* cols = reinterpret_cast<float*>(SampleScratch(rs.scratch, sample_bytes_, worker));
      Im2Col(g_win_, x.f() + s * in_ * isz, in_, cols);
      float* ys = ctx.out[0]->f() + s * out_ * osz;
      ParallelFor(osz, threads, [&](int64_t q0, int64_t q1, int) {
        // Per worker: the gathered window (padded channels stay 0) and the
        // output column. Sized once per thread, reused across calls.
        thread_local std::vector<float> xq, yq;
        xq.assign(static_cast<std::size_t>(wide), 0.0f);
        yq.resize(static_cast<std::size_t>(out_));
        for (int64_t q = q0; q < q1; ++q) {
          for (int64_t ic = 0; ic < in_; ++ic)
            for (int64_t t = 0; t < ksz_; ++t) xq[t * nbp + ic] = cols[(ic * ksz_ + t) * osz + q];
          w_.MatVec(xq, bias_, yq, 1);
          for (int64_t o = 0; o < out_; ++o) ys[o * osz + q] = yq[o];
        }
      });
    });
  }

 private:
  int64_t p_, in_, out_, ksz_ = 1, sample_bytes_ = 0;
  std::vector<int64_t> kernel_;
  Circulant w_;
  std::vector<float> bias_;
  WindowGeometry g_win_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateCirculantKernel(const formats::FormatTraits& f, const NodeDef& n) {
  return CreateFormOp<BlockCirculantMatMulOp, BlockCirculantConvOp>(f, n);
}

}  // namespace permdnn::runtime::detail
