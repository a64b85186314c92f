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
#include "runtime/conv_util.h"
#include "runtime/ops_compressed.h"

namespace permdnn::runtime::detail {

int64_t RequirePositiveAttr(const NodeDef& n, const char* a) {
  if (!n.Has(a)) Fail("{}: missing attribute '{}'", n.Where(), a);
  const int64_t v = n.Int(a, 0);
  PERMDNN_CHECK(v >= 1 && v <= (int64_t{1} << 31), "{}: attribute {} = {} must be >= 1", n.Where(), a, v);
  return v;
}

namespace {

// FFTW and the spectra layout are fine with any p; this bounds what a file
// can make the loader allocate per block.
constexpr int64_t kMaxP = 4096;

void ReadBias(OpContext& ctx, std::size_t k, int64_t out, std::vector<float>* bias) {
  const Value* b = ctx.In(k);
  if (!b) return;
  const Value& bc = ctx.Const(k, "bias");
  if (!IsFloat(bc.dtype) || bc.size() != out || bc.shape.size() != 1)
    ctx.Fail("bias '{}' is {} {}, expected float32 [{}]", b->name, DTypeName(bc.dtype), ShapeString(bc.shape), out);
  bias->assign(bc.constant_data.f(), bc.constant_data.f() + out);
}

// values input: float32 of exactly `shape`.
const float* ReadValues(OpContext& ctx, const std::vector<int64_t>& shape, int64_t p, int64_t in, int64_t out,
                        const char* in_name, const char* out_name) {
  const Value& v = ctx.Const(1, "values");
  if (!IsFloat(v.dtype)) ctx.Fail("values '{}' must be float32, got {}", v.name, DTypeName(v.dtype));
  if (v.shape != shape)
    ctx.Fail("values '{}' has shape {}, but attributes p={}, {}={}, {}={} need {}", v.name, ShapeString(v.shape), p,
             in_name, in, out_name, out, ShapeString(shape));
  const float* f = v.constant_data.f();
  for (int64_t e = 0; e < v.size(); ++e)
    if (!std::isfinite(f[e])) ctx.Fail("values '{}'[{}] = {} is not finite", v.name, e, f[e]);
  return f;
}

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

class BlockCirculantMatMulOp : public OpKernel {
 public:
  explicit BlockCirculantMatMulOp(const NodeDef& n)
      : p_(RequirePositiveAttr(n, "p")),
        in_(RequirePositiveAttr(n, "in_features")),
        out_(RequirePositiveAttr(n, "out_features")) {
    PERMDNN_CHECK(p_ <= kMaxP, "{}: p = {} exceeds {}", n.Where(), p_, kMaxP);
  }
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }
  std::string KernelName() const override { return w_.name(); }

  void Prepare(OpContext& ctx) override {
    const Value* x = ctx.In(0);
    if (!x) ctx.Fail("missing input X");
    if (!IsFloat(x->dtype)) ctx.Fail("X must be float32, got {}", DTypeName(x->dtype));
    if (x->shape.empty() || x->shape.back() != in_)
      ctx.Fail("X has shape {}, its last dimension must be in_features = {}", ShapeString(x->shape), in_);
    if (!w_.ready()) {
      const int64_t mb = CeilDiv(out_, p_), nb = CeilDiv(in_, p_);
      const float* v = ReadValues(ctx, {mb, nb, p_}, p_, in_, out_, "in_features", "out_features");
      w_.Init(BlockCirculantMatrix::FromParts(out_, in_, static_cast<int>(p_), {v, static_cast<std::size_t>(mb * nb * p_)}));
      ReadBias(ctx, 2, out_, &bias_);
    }
    batch_ = x->size() / in_;
    std::vector<int64_t> out = x->shape;
    out.back() = out_;
    ctx.SetOut(0, DType::kFloat32, out);
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
    auto rows = [&](int64_t begin, int64_t end, int threads) {
      for (int64_t b = begin; b < end; ++b)
        w_.MatVec({x + b * in_, static_cast<std::size_t>(in_)}, bias_, {y + b * out_, static_cast<std::size_t>(out_)},
                  threads);
    };
    if (rs.threads > 1 && batch_ >= rs.threads)
      ParallelFor(batch_, rs.threads, [&](int64_t begin, int64_t end, int) { rows(begin, end, 1); });
    else
      rows(0, batch_, rs.threads);
  }

 private:
  int64_t p_, in_, out_, batch_ = 1;
  Circulant w_;
  std::vector<float> bias_;
};

class BlockCirculantConvOp : public OpKernel {
 public:
  explicit BlockCirculantConvOp(const NodeDef& n)
      : n_(n),
        p_(RequirePositiveAttr(n, "p")),
        in_(RequirePositiveAttr(n, "in_channels")),
        out_(RequirePositiveAttr(n, "out_channels")) {
    PERMDNN_CHECK(p_ <= kMaxP, "{}: p = {} exceeds {}", n.Where(), p_, kMaxP);
    if (n.Int("group", 1) != 1) throw UnsupportedError(n.Where() + ": BlockCirculantConv with group != 1");
  }
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }
  std::string KernelName() const override { return "im2col+" + w_.name(); }

  void Prepare(OpContext& ctx) override {
    const Value* x = ctx.In(0);
    if (!x) ctx.Fail("missing input X");
    if (!IsFloat(x->dtype)) ctx.Fail("X must be float32, got {}", DTypeName(x->dtype));
    if (x->shape.size() < 3 || x->shape.size() > 5 || x->shape[1] != in_)
      ctx.Fail("X has shape {}, expected [N, in_channels={}, spatial...]", ShapeString(x->shape), in_);
    const Value& v = ctx.Const(1, "values");
    if (v.shape.size() != x->shape.size() + 1)
      ctx.Fail("values '{}' has shape {}, expected [mb, nb, p, kernel...] with {} kernel dims", v.name,
               ShapeString(v.shape), x->shape.size() - 2);
    std::vector<int64_t> kshape(v.shape.begin() + 3, v.shape.end());
    if (n_.Has("kernel_shape") && n_.Ints("kernel_shape") != kshape)
      ctx.Fail("kernel_shape {} differs from values {}", ShapeString(n_.Ints("kernel_shape")), ShapeString(v.shape));
    const int64_t mb = CeilDiv(out_, p_), nb = CeilDiv(in_, p_);
    ksz_ = NumElements(kshape);
    if (!w_.ready()) {
      std::vector<int64_t> want = {mb, nb, p_};
      want.insert(want.end(), kshape.begin(), kshape.end());
      const float* vals = ReadValues(ctx, want, p_, in_, out_, "in_channels", "out_channels");
      // Taps side by side: block (I, t·nb + J) = values[I, J, :, t].
      BlockCirculantMatrix w(out_, ksz_ * nb * p_, static_cast<int>(p_));
      for (int64_t I = 0; I < mb; ++I)
        for (int64_t J = 0; J < nb; ++J)
          for (int64_t t = 0; t < ksz_; ++t) {
            float* blk = w.block(I, t * nb + J);
            for (int64_t s = 0; s < p_; ++s) blk[s] = vals[((I * nb + J) * p_ + s) * ksz_ + t];
          }
      w_.Init(std::move(w));
      ReadBias(ctx, 2, out_, &bias_);
    }
    g_ = MakeWindowGeometry(ctx, x->shape, kshape, n_, true);
    std::vector<int64_t> out = {x->shape[0], out_};
    out.insert(out.end(), g_.out_spatial.begin(), g_.out_spatial.end());
    ctx.SetOut(0, DType::kFloat32, out);
    ctx.scratch_bytes = static_cast<int64_t>(sizeof(float)) * in_ * ksz_ * g_.out_size();
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_.out_size(), isz = g_.in_size();
    const int64_t nbp = CeilDiv(in_, p_) * p_, wide = ksz_ * nbp;
    float* cols = reinterpret_cast<float*>(rs.scratch);
    for (int64_t s = 0; s < n; ++s) {
      Im2Col(g_, x.f() + s * in_ * isz, in_, cols);
      float* ys = ctx.out[0]->f() + s * out_ * osz;
      ParallelFor(osz, rs.threads, [&](int64_t q0, int64_t q1, int) {
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
    }
  }

 private:
  const NodeDef& n_;
  int64_t p_, in_, out_, ksz_ = 1;
  Circulant w_;
  std::vector<float> bias_;
  WindowGeometry g_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateCirculantKernel(const NodeDef& n) {
  if (n.op_type == "BlockCirculantMatMul") return std::make_unique<BlockCirculantMatMulOp>(n);
  if (n.op_type == "BlockCirculantConv") return std::make_unique<BlockCirculantConvOp>(n);
  return nullptr;
}

}  // namespace permdnn::runtime::detail
