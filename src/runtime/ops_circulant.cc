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
// circulant.fft row admits p (p >= 2), else the direct product.
// The conv, for p = 2..64: kernels::CirculantChannelDft, a real DFT over
// every block of p input channels, one dense GEMM per channel frequency on
// the im2col columns of the transformed input, and the inverse DFT
// (circulant.h says why that is about (2/p)·the dense conv's
// multiply-adds), with a following BatchNormalization, Add and Relu / Clip
// fused (fusion.h). Else, and on the reference path: one block-circulant
// matrix product per output position. After im2col, the weight of kernel
// tap t over the channels is itself block-circulant, so the taps are laid
// side by side as one [out, ksz·nb·p] block-circulant matrix (column
// t·nb·p + in channel) and each output position is one MatVec of its
// gathered window: 6-9x slower on resnet18 at p = 4 and 8 (docs/runtime.md,
// "How the block-circulant and sparse ops run").
#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>

#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/circulant.h"
#include "permdnn/kernels/dispatch.h"
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
  // Feature-major X (cols × batch): the FFT engine's batched product (the
  // channel-DFT GEMMs from CirculantFft::kDftBatch samples on).
  bool Batched(int64_t batch) const { return fft_ && kernels::CirculantFft::MatMulUsesDft(fft_->matrix().p(), batch); }
  void MatMul(std::span<const float> xt, int64_t batch, std::span<const float> bias, std::span<float> yt,
              int threads) const {
    fft_->MatMul(xt, batch, bias, yt, threads);
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
  std::string KernelName() const override {
    return ran_batched_ ? kernels::CirculantFft::kDftMatMulName : w_ ? w_->w.name() : "";
  }

  void Prepare(OpContext& ctx) override { batch_ = PrepareLinear(ctx, in_, out_); }
  // The weights (the FFT engine's spectra or the matrix, read at the first
  // plan and shared with the model's replicas) and the path for the batch.
  void Finalize(OpContext& ctx, const RunState& rs) override {
    if (!w_) w_ = SharedForm<Decoded>(rs.packs, "circulant", [&] {
      formats::Weights w = ReadWeights(ctx, format_, false);
      Decoded d;
      d.w.Init(BlockCirculantMatrix::FromParts(out_, in_, geometry_.p, w.values));
      d.bias = std::move(w.bias);
      return d;
    });
    batched_ = w_->w.Batched(batch_);
    // Feature-major X and Y for the batched product.
    if (batched_) ctx.scratch_bytes = LinearScratchBytes(batch_, in_, out_);
  }

  // One MatVec per sample, threads splitting the samples (with at least as
  // many), else each product's blocks; from CirculantFft::kDftBatch samples
  // on the batched product (one GEMM per frequency over the whole batch,
  // threads splitting the samples). A tiled FFT batch product (input spectra
  // of 16 samples, weight spectra streamed once per tile, plain-C++ vector
  // loop over the tile) was tried and lost at every batch (1024 x 1024,
  // p = 8, 1 thread: batch 8 409 vs 207 us, 64: 1915 vs 1724 us).
  void Run(OpContext& ctx, RunState& rs) override {
    ran_batched_ = batched_ && !rs.reference;  // the reference path: one FFT product per sample
    RunFeatureMajorLinear(
        ctx, rs, batch_, in_, out_, ran_batched_,
        2.0 * static_cast<double>(batch_) * static_cast<double>(in_) * static_cast<double>(out_) / geometry_.p,
        [&](std::span<const float> xt, int64_t batch, std::span<float> yt, int threads) {
          w_->w.MatMul(xt, batch, w_->bias, yt, threads);
        },
        [&](std::span<const float> xb, std::span<float> yb, int threads) { w_->w.MatVec(xb, w_->bias, yb, threads); });
  }

 private:
  using Decoded = WithBias<Circulant>;
  int64_t in_, out_, batch_ = 1;
  bool batched_ = false, ran_batched_ = false;
  std::shared_ptr<const Decoded> w_;
};

class BlockCirculantConvOp : public CompressedOp {
 public:
  BlockCirculantConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, true, n), p_(geometry_.p), in_(geometry_.in), out_(geometry_.out) {}
  std::string KernelName() const override { return spectral_ ? "circulant.conv.channel-dft" : "im2col+" + w_.name(); }

  void Prepare(OpContext& ctx) override {
    std::optional<formats::Weights>& w = first_read_;  // read at the first plan, kept for Finalize
    if (kernel_.empty()) {
      w = ReadWeights(ctx, format_, true);
      ksz_ = w->g.taps();
      bias_ = w->bias;
    }
    g_win_ = PrepareConv(ctx, in_, out_, w ? w->g.kernel : kernel_);
    ctx.scratch_bytes = 0;  // Finalize sizes it for the path that runs
    add_same_shape_ = ValidatePostOps(ctx, ctx.out[0]->shape);
    if (w) {
      // The channel-DFT path's bias, with a fused BatchNormalization folded
      // in: a·(W·x + b) + shift, the factor a in the inverse DFT's rows and
      // the bias a·b + shift. Kept only once all of it is finite (a failed
      // plan leaves the op to read its weights again).
      std::vector<float> a, shift, folded = bias_;
      if (const PostOp* bn = FusedNormFactors(ctx, out_, &a, &shift)) {
        folded.assign(static_cast<std::size_t>(out_), 0.0f);
        for (int64_t o = 0; o < out_; ++o) {
          folded[o] = (bias_.empty() ? 0.0f : bias_[o]) * a[o] + shift[o];
          if (!std::isfinite(a[o]) || !std::isfinite(folded[o]))
            ctx.Fail("fused BatchNormalization '{}': channel {} folds to a non-finite scale or bias "
                     "(scale {} / sqrt(var {} + epsilon))",
                     bn->name, o, ctx.in[bn->inputs[0]]->f()[o], ctx.in[bn->inputs[3]]->f()[o]);
        }
      }
      dft_scale_ = std::move(a);
      dft_bias_ = std::move(folded);
      kernel_ = w->g.kernel;  // the attribute, or the values' shape
    }
    epilogue_ = FindProductEpilogue(*ctx.node);
    const WindowGeometry& g = g_win_;
    identity_window_ = g.kernel_size() == 1 && g.in == g.out && g.stride == std::array<int64_t, 3>{1, 1, 1} &&
                       g.pad == std::array<int64_t, 3>{0, 0, 0};
  }
  // The path and its weights: the channel-DFT form for p = 2..64 (shared
  // with the model's batch-parallel replicas through the PackCache), else,
  // and on the reference path (Options::reference or the kernels' reference
  // path), the im2col product on the kernel table's rows. Whole samples per
  // thread (ForEachSample), each on its own scratch: the im2col columns, or
  // on the channel-DFT path the transformed input and one chunk's columns
  // and products per thread of the sample.
  void Finalize(OpContext& ctx, const RunState& rs) override {
    spectral_ = p_ >= 2 && p_ <= 64 && !rs.reference && kernels::ActivePath() != kernels::KernelPath::kReference;
    const int64_t n = ctx.in[0]->shape[0], osz = g_win_.out_size(), isz = g_win_.in_size();
    // Taps side by side: the registry's lifted [out, taps·nb·p] matrix, of
    // the weights Prepare read (a later plan reads them again).
    const auto lifted = [&] {
      formats::Weights w = first_read_ ? std::move(*first_read_) : ReadWeights(ctx, format_, true);
      first_read_.reset();
      return std::move(*formats::Lift(w).circulant);
    };
    if (!spectral_) {
      if (!w_.ready()) w_.Init(lifted());
      first_read_.reset();
      sample_bytes_ = static_cast<int64_t>(sizeof(float)) * in_ * ksz_ * osz;
      ctx.scratch_bytes = SampleScratchBytes(sample_bytes_, n, rs.threads);
      return;
    }
    if (!dft_)
      dft_ = SharedForm<kernels::CirculantChannelDft>(rs.packs, "channel-dft",
                                                      [&] { return kernels::CirculantChannelDft(lifted(), ksz_); });
    first_read_.reset();  // (a replica found the form in the cache)
    const WindowGeometry& g = g_win_;
    const int64_t rows = g.out[0] * g.out[1], k = dft_->in_rows() * ksz_, t = Align16(dft_->in_rows() * isz);
    // Output rows per chunk (whole rows: a 1-D conv is one chunk): the
    // chunk's columns in about kChunkFloats unless that is fewer than
    // kMinColumns positions; then no more rows than give each thread of a
    // sample a chunk.
    chunk_threads_ = SampleWorkers(n, rs.threads) == 1 ? rs.threads : 1;
    chunk_rows_ = std::clamp<int64_t>(
        std::max(kChunkFloats / std::max<int64_t>(1, k * g.out[2]), CeilDiv(kMinColumns, g.out[2])), 1, rows);
    chunk_rows_ = std::min(chunk_rows_, CeilDiv(rows, chunk_threads_));
    const int64_t q = chunk_rows_ * g.out[2];
    chunk_floats_ = Align16(identity_window_ ? 0 : k * q) + Align16(dft_->out_rows() * q);
    sample_bytes_ = static_cast<int64_t>(sizeof(float)) * (t + chunk_threads_ * chunk_floats_);
    ctx.scratch_bytes = SampleScratchBytes(sample_bytes_, n, rs.threads);
  }

  void Run(OpContext& ctx, RunState& rs) override {
    if (spectral_) RunSpectral(ctx, rs);
    else RunIm2Col(ctx, rs);
  }

 private:
  static int64_t Align16(int64_t n) { return (n + 15) / 16 * 16; }
  // The im2col columns of one chunk of output rows, in floats (512 KiB:
  // with its products it stays in a Zen 4 / 5 core's 1 MiB L2).
  static constexpr int64_t kChunkFloats = 128 * 1024;
  // At least this many output positions per chunk (GEMM columns) where a
  // sample has them.
  static constexpr int64_t kMinColumns = 256;

  // Per sample: the channel DFT of the input; then per chunk of output
  // rows, its im2col columns of the transformed input (none for a 1x1
  // stride-1 window: the transformed input is its own columns), one GEMM per
  // frequency, the inverse DFT with the bias (and a fused BatchNormalization)
  // and the fused Add and Relu / Clip, while the chunk is in cache. A
  // sample's threads split its positions (the DFT) and its chunks. (Groups
  // of samples side by side in one set of GEMMs for the layers of few
  // positions, so that each GEMM packs its weights once for more columns,
  // were tried and measured level: resnet18 circulant:p=4 at batch 16
  // 230-242 against 233-241 ms, the Fashion-MNIST cnn at p = 4 5% slower.)
  void RunSpectral(OpContext& ctx, RunState& rs) {
    const Value& x = *ctx.in[0];
    const WindowGeometry& g = g_win_;
    const int64_t n = x.shape[0], osz = g.out_size(), isz = g.in_size(), ysz = out_ * osz;
    const int64_t tin = dft_->in_rows(), rows = g.out[0] * g.out[1], chunks = CeilDiv(rows, chunk_rows_);
    const float* scale = dft_scale_.empty() ? nullptr : dft_scale_.data();
    const float* bias = dft_bias_.empty() ? nullptr : dft_bias_.data();
    const Value* add = epilogue_.add_input >= 0 ? ctx.in[epilogue_.add_input] : nullptr;
    // The fused Add (of the output's shape) and activation on positions
    // [q0, q0 + nq) of sample s; a broadcast Add waits for the whole output.
    const bool late = add && !add_same_shape_;
    auto finish = [&](int64_t s, int64_t q0, int64_t nq) {
      if (late || (!add && !epilogue_.activation)) return;
      float* ys = ctx.out[0]->f() + s * ysz;
      for (int64_t o = 0; o < out_; ++o)
        epilogue_.Apply(ys + o * osz + q0, add ? add->f() + s * ysz + o * osz + q0 : nullptr, nq);
    };
    ForEachSample(n, rs.threads, [&](int64_t s, int threads, int worker) {
      float* t = reinterpret_cast<float*>(SampleScratch(rs.scratch, sample_bytes_, worker));
      float* chunk_base = t + Align16(tin * isz);
      const float* xs = x.f() + s * in_ * isz;
      float* ys = ctx.out[0]->f() + s * ysz;
      ParallelFor(isz, threads, [&](int64_t q0, int64_t q1, int) {
        dft_->Forward(xs + q0, isz, in_, t + q0, isz, q1 - q0);
      });
      ParallelFor(chunks, std::min<int64_t>(threads, chunk_threads_), [&](int64_t c0, int64_t c1, int w) {
        float* cols = chunk_base + w * chunk_floats_;
        float* u = identity_window_ ? cols : cols + Align16(tin * ksz_ * chunk_rows_ * g.out[2]);
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t r0 = c * chunk_rows_, r1 = std::min(rows, r0 + chunk_rows_);
          const int64_t q0 = r0 * g.out[2], nq = (r1 - r0) * g.out[2];
          if (identity_window_) {
            dft_->Products(t + q0, isz, u, nq, nq);
          } else {
            Im2ColRows(g, t, tin, r0, r1, cols);
            dft_->Products(cols, nq, u, nq, nq);
          }
          dft_->Inverse(u, nq, scale, bias, ys + q0, osz, out_, nq);
          finish(s, q0, nq);
        }
      });
    });
    if (late) {  // a broadcast operand: the whole output, then the clamp
      AddBroadcastInPlace(ctx.out[0]->f(), ctx.out[0]->shape, add->f(), add->shape, ctx);
      epilogue_.Apply(ctx.out[0]->f(), nullptr, n * ysz);
    }
  }

  // One block-circulant product per output position of the im2col columns,
  // then the fused post-ops on the whole output.
  void RunIm2Col(OpContext& ctx, RunState& rs) {
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
    ApplyPostOpsPlain(ctx, ctx.out[0]->f(), ctx.out[0]->shape);
  }

  int64_t p_, in_, out_, ksz_ = 1, sample_bytes_ = 0;
  std::vector<int64_t> kernel_;
  std::optional<formats::Weights> first_read_;  // the first plan's weights, until Finalize lifts them
  // The channel-DFT path's chunks of output rows (Finalize).
  int64_t chunk_rows_ = 1, chunk_floats_ = 0, chunk_threads_ = 1;
  Circulant w_;  // the im2col path's product (p outside 2-64, or the reference path), made when planned
  std::shared_ptr<const kernels::CirculantChannelDft> dft_;
  std::vector<float> bias_, dft_scale_, dft_bias_;  // the file's bias; the channel-DFT path's, BatchNormalization folded
  bool spectral_ = false, identity_window_ = false, add_same_shape_ = true;
  ProductEpilogue epilogue_;  // the fused Add and Relu / Clip (the BatchNormalization is in dft_scale_ / dft_bias_)
  WindowGeometry g_win_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateCirculantKernel(const formats::FormatTraits& f, const NodeDef& n) {
  return CreateFormOp<BlockCirculantMatMulOp, BlockCirculantConvOp>(f, n);
}

}  // namespace permdnn::runtime::detail
