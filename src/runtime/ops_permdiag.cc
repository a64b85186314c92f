// The ai.permdnn permuted-diagonal operators on the permdnn kernels. Their
// contract (PermDiagMatMul: X, values [mb, nb, p], offsets [mb, nb], bias;
// PermDiagConv: values [mb, nb, p, kernel...]; attributes) is the format
// registry's permdiag row (formats/registry.h), which also reads and
// validates the weights; docs/runtime.md has the table.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "permdnn/core/fixed_point.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/kernels/table.h"
#include "runtime/ops_compressed.h"

namespace permdnn::runtime::detail {

namespace {

class PermDiagMatMulOp : public OpKernel, public Int16Op {
 public:
  PermDiagMatMulOp(const formats::FormatTraits& f, const NodeDef& n)
      : f_(f), g_(formats::ReadGeometry(f, false, n.attrs, n.Where())), p_(g_.p), in_(g_.in), out_(g_.out) {}
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }
  // The kernel table's row for the planned batch (what --profile shows).
  std::string KernelName() const override {
    kernels::KernelProblem q{kernels::KernelOp::kPermDiagMatVecPacked, static_cast<int>(p_), out_, in_, batch_,
                             pack_.chunked};
    if (int16_active_) q.op = kernels::KernelOp::kPermDiagMatVecI16;
    else if (batch_ >= 4) q.op = kernels::KernelOp::kPermDiagMatMulRows;
    return kernels::SelectedKernel(q);
  }

  void Prepare(OpContext& ctx) override {
    batch_ = PrepareLinear(ctx, in_, out_);
    if (!loaded_) {
      formats::Weights w = ReadWeights(ctx, f_, false);
      w_ = PermDiagMatrix::FromParts(out_, in_, static_cast<int>(p_), w.values, w.offsets);
      bias_ = std::move(w.bias);
      loaded_ = true;  // only once weights and bias are both valid
    }
    HoldLayoutFor(batch_);
    // int16 staging of one sample.
    ctx.scratch_bytes = static_cast<int64_t>(sizeof(int16_t)) * (in_ + out_) + 64;
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const float* x = ctx.in[0]->f();
    float* y = ctx.out[0]->f();
    if (rs.calibrating) {
      RunFloat(x, y, rs);
      x_max_ = std::max(x_max_, MaxAbs({x, static_cast<std::size_t>(batch_ * in_)}));
      y_max_ = std::max(y_max_, MaxAbs({y, static_cast<std::size_t>(batch_ * out_)}));
      return;
    }
    int16_active_ = rs.int16 && calibrated_;
    if (int16_active_) RunInt16(x, y, rs);
    else RunFloat(x, y, rs);
  }

  void BeginCalibration() override {
    x_max_ = y_max_ = 0;
    calibrated_ = false;
  }
  // Rule: weights at the largest non-saturating frac bits of max|q|
  // (PermDiagMatrixI16::Quantize); input and output activations at
  // ChooseFracBits<int16_t> of their max |value| on the calibration batch;
  // bias at the accumulator scale 2^-(fw + fx).
  void EndCalibration() override {
    w16_ = PermDiagMatrixI16::Quantize(w_.rows() > 0 ? w_ : pack_.Unpack());
    fx_ = ChooseFracBits<int16_t>(x_max_);
    fy_ = ChooseFracBits<int16_t>(y_max_);
    const int facc = w16_.frac_bits() + fx_;
    bias64_.assign(bias_.size(), 0);
    for (std::size_t r = 0; r < bias_.size(); ++r)
      bias64_[r] = static_cast<int64_t>(RoundHalfAway(std::ldexp(static_cast<double>(bias_[r]), facc)));
    shift_ = facc - fy_;
    calibrated_ = true;
  }

 private:
  // The weights in the layout of the planned batch: the row-major matrix
  // for batch >= 4, the row pack (kernels::PermDiagRowPack: chunk-major
  // when cache-sized, the faster batch-1 layout) below. The first re-plan
  // across 4 converts, so a model planned for one batch regime holds its
  // weights once (after a conversion); from the second crossing on, both
  // layouts are kept rather than rebuilt on every re-plan of a caller that
  // alternates batch sizes.
  void HoldLayoutFor(int64_t batch) {
    const bool want_pack = batch < 4;
    const bool have_pack = pack_.rows > 0, have_matrix = w_.rows() > 0;
    if (want_pack && !have_pack) {
      pack_ = kernels::PermDiagRowPack::Build(w_);
      if (crossings_++ == 0) w_ = PermDiagMatrix();
    } else if (!want_pack && !have_matrix) {
      w_ = pack_.Unpack();
      if (crossings_++ == 0) pack_ = kernels::PermDiagRowPack();
    }
  }

  // Batch >= 4: the batch-major register-blocked kernels::PermDiagMatMulRows
  // (each weight vector loaded once per tile of up to 8 samples, threads
  // over row blocks). Below that, one PermDiagMatVec per sample: at batch
  // 2 and 3 the tiles are too small to win (measured, 1024 outputs, p = 8:
  // 0.65-0.99x of per-sample; batch 8: 1.5x, batch 64: 1.2-1.6x; see
  // docs/runtime.md), on the row pack. With several threads and at least
  // as many samples, threads split the samples (one hand-off per call).
  void RunFloat(const float* x, float* y, RunState& rs) {
    const std::span<const float> bias(bias_);
    if (batch_ >= 4) {
      kernels::PermDiagMatMulRows(w_, {x, static_cast<std::size_t>(batch_ * in_)}, batch_, bias,
                                  {y, static_cast<std::size_t>(batch_ * out_)}, rs.threads);
      return;
    }
    ForEachSample(batch_, rs.threads, [&](int64_t b, int threads) {
      kernels::PermDiagMatVec(pack_, {x + b * in_, static_cast<std::size_t>(in_)}, bias,
                              {y + b * out_, static_cast<std::size_t>(out_)}, threads);
    });
  }
  void RunInt16(const float* x, float* y, RunState& rs) {
    int16_t* xq = reinterpret_cast<int16_t*>(rs.scratch);
    int16_t* yq = xq + in_;
    for (int64_t b = 0; b < batch_; ++b) {
      QuantizeSpan<int16_t>({x + b * in_, static_cast<std::size_t>(in_)}, fx_, {xq, static_cast<std::size_t>(in_)});
      kernels::PermDiagMatVecI16(w16_, {xq, static_cast<std::size_t>(in_)}, bias64_, shift_,
                                 {yq, static_cast<std::size_t>(out_)}, rs.threads);
      DequantizeSpan<int16_t>({yq, static_cast<std::size_t>(out_)}, fy_, {y + b * out_, static_cast<std::size_t>(out_)});
    }
  }

  const formats::FormatTraits& f_;
  const formats::Geometry g_;
  int64_t p_, in_, out_, batch_ = 1;
  bool loaded_ = false;
  int crossings_ = 0;  // re-plans that converted between the layouts
  PermDiagMatrix w_;
  kernels::PermDiagRowPack pack_;
  std::vector<float> bias_;
  // Fixed point.
  bool calibrated_ = false, int16_active_ = false;
  double x_max_ = 0, y_max_ = 0;
  PermDiagMatrixI16 w16_;
  int fx_ = 0, fy_ = 0, shift_ = 0;
  std::vector<int64_t> bias64_;
};

class PermDiagConvOp : public OpKernel {
 public:
  PermDiagConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : f_(f), g_(formats::ReadGeometry(f, true, n.attrs, n.Where())), p_(g_.p), in_(g_.in), out_(g_.out) {}
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }
  std::string KernelName() const override { return "permdiag-conv"; }

  void Prepare(OpContext& ctx) override {
    if (!loaded_) {
      formats::Weights w = ReadWeights(ctx, f_, true);
      kernel_ = w.g.kernel;
      ksz_ = w.g.taps();
      values_ = std::move(w.values);
      offsets_ = std::move(w.offsets);
      bias_ = std::move(w.bias);
      loaded_ = true;  // only once weights and bias are both valid
    }
    g_win_ = PrepareConv(ctx, in_, out_, kernel_);
  }

  // Per sample: im2col, then each output channel sums its nb in-channel
  // kernels over the column rows: out·nb·K·HWout MACs, p× fewer than dense.
  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_win_.out_size(), isz = g_win_.in_size(), p = p_;
    const int64_t nb = CeilDiv(in_, p_);
    float* cols = reinterpret_cast<float*>(rs.scratch);
    for (int64_t s = 0; s < n; ++s) {
      Im2Col(g_win_, x.f() + s * in_ * isz, in_, cols);
      float* ys = ctx.out[0]->f() + s * out_ * osz;
      ParallelFor(out_, rs.threads, [&](int64_t begin, int64_t end, int) {
        for (int64_t o = begin; o < end; ++o) {
          float* yo = ys + o * osz;
          std::fill_n(yo, osz, bias_.empty() ? 0.0f : bias_[o]);
          const int64_t I = o / p, c = o % p;
          for (int64_t J = 0; J < nb; ++J) {
            const int64_t ic = J * p + (c + offsets_[I * nb + J]) % p;
            if (ic >= in_) continue;
            const float* w = values_.data() + ((I * nb + J) * p + c) * ksz_;
            for (int64_t t = 0; t < ksz_; ++t) {
              const float wv = w[t];
              const float* col = cols + (ic * ksz_ + t) * osz;
              for (int64_t q = 0; q < osz; ++q) yo[q] += wv * col[q];
            }
          }
        }
      });
    }
  }

 private:
  const formats::FormatTraits& f_;
  const formats::Geometry g_;
  int64_t p_, in_, out_, ksz_ = 1;
  std::vector<int64_t> kernel_;
  bool loaded_ = false;
  std::vector<float> values_, bias_;
  std::vector<uint16_t> offsets_;
  WindowGeometry g_win_;
};

}  // namespace

std::unique_ptr<OpKernel> CreatePermDiagKernel(const formats::FormatTraits& f, const NodeDef& n) {
  if (f.conv->name == n.op_type) return std::make_unique<PermDiagConvOp>(f, n);
  return std::make_unique<PermDiagMatMulOp>(f, n);
}

}  // namespace permdnn::runtime::detail
