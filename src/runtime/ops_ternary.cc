// The ai.permdnn ternary operators (issue 18; formats/ternary_matrix.h) on
// the addition-only kernels (kernels/ternary.h).
//
// TernaryMatMul(X, group_mask, plus, minus, scale[, bias]) -> Y
//   X [..., in_features], Y [..., out_features]; W[o][i] = scale[o] · t,
//   t = +1 / −1 where the plus / minus bit of i in its group is set, 0 in a
//   pruned group (group_mask bit clear) or where neither is; attributes
//   group_ch (must divide in_features), in_features, out_features.
// TernaryConv(X, group_mask, plus, minus, scale[, bias]) -> Y
//   the same over the conv weight as [out, in·k...] (column = in channel ·
//   ksz + kernel index; a group = group_ch input channels × the whole
//   kernel); attributes group_ch, in_channels, out_channels, kernel_shape
//   (required), strides, pads, dilations (as Conv, group 1).
//
// The arrays are validated by the registry and packed once, when the node
// is first planned. Kernels: TernaryMatVec per sample below kBatchedMin,
// TernaryMatMul on a feature-major copy of X from there; the conv is im2col
// followed by TernaryMatMul with the output positions as the batch; with
// int16 on (Options::int16 + Calibrate) the conv's columns are quantized by
// im2col and the product is TernaryMatMulI16.
#include <algorithm>

#include "permdnn/core/fixed_point.h"

#include "permdnn/kernels/table.h"
#include "permdnn/kernels/ternary.h"
#include "runtime/ops_compressed.h"

namespace permdnn::runtime::detail {

namespace {

// From this batch on the batched kernel (one X row per +/-1 weight, SIMD
// over the batch) runs instead of one masked matvec per sample; the CSR
// ops' crossover, not measured for ternary.
constexpr int64_t kBatchedMin = 8;

kernels::TernaryPack ReadPack(const OpContext& ctx, const formats::FormatTraits& f, bool conv,
                              std::vector<float>* bias) {
  formats::Weights w = ReadWeights(ctx, f, conv);
  *bias = std::move(w.bias);
  return kernels::TernaryPack::Build(std::move(*formats::Lift(w).ternary));
}

class TernaryMatMulOp : public CompressedOp {
 public:
  TernaryMatMulOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, false, n), in_(geometry_.in), out_(geometry_.out) {}
  std::string KernelName() const override {
    return kernels::SelectedKernel({batched_ ? kernels::KernelOp::kTernaryMatMul : kernels::KernelOp::kTernaryMatVec,
                                    geometry_.p, out_, in_, batch_, false});
  }

  void Prepare(OpContext& ctx) override {
    batch_ = PrepareLinear(ctx, in_, out_);
    if (!ready_) {
      w_ = ReadPack(ctx, format_, false, &bias_);
      ready_ = true;
    }
    batched_ = batch_ >= kBatchedMin;
    if (batched_) ctx.scratch_bytes = LinearScratchBytes(batch_, in_, out_);
  }

  void Run(OpContext& ctx, RunState& rs) override {
    RunFeatureMajorLinear(
        ctx, rs, batch_, in_, out_, batched_, static_cast<double>(batch_) * static_cast<double>(w_.index.size()),
        [&](std::span<const float> xt, int64_t batch, std::span<float> yt, int threads) {
          kernels::TernaryMatMul(w_, xt, batch, bias_, yt, threads);
        },
        [&](std::span<const float> xb, std::span<float> yb, int threads) {
          kernels::TernaryMatVec(w_, xb, bias_, yb, threads);
        });
  }

 private:
  int64_t in_, out_, batch_ = 1;
  bool ready_ = false, batched_ = false;
  kernels::TernaryPack w_;
  std::vector<float> bias_;
};

class TernaryConvOp : public CompressedOp, public Int16Op {
 public:
  TernaryConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, true, n), in_(geometry_.in), out_(geometry_.out), ksz_(geometry_.taps()) {}
  std::string KernelName() const override {
    return "im2col+" + kernels::SelectedKernel({int16_active_ ? kernels::KernelOp::kTernaryMatMulI16
                                                              : kernels::KernelOp::kTernaryMatMul,
                                                geometry_.p, out_, in_ * ksz_, g_win_.out_size(), false});
  }

  void Prepare(OpContext& ctx) override {
    if (!ready_) {
      w_ = ReadPack(ctx, format_, true, &bias_);
      ready_ = true;
    }
    g_win_ = PrepareConv(ctx, in_, out_, geometry_.kernel);
    // The int16 path's sample and columns fit the float columns' scratch
    // (2·(in·isz + K·osz) bytes); kept explicit.
    const int64_t i16 = static_cast<int64_t>(sizeof(int16_t)) * (in_ * g_win_.in_size() + in_ * ksz_ * g_win_.out_size());
    ctx.scratch_bytes = std::max(ctx.scratch_bytes, i16 + 64);
  }

  // The int16 path (after Calibrate, Options::int16): each sample is
  // quantized at the calibrated scale, max |input| / 1023 (values past the
  // calibrated range saturate), im2col copies int16 columns, and the product runs on
  // kernels::TernaryMatMulI16: exact 16/32-bit sums, so the result differs
  // from fp32 only by the input's quantization.
  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_win_.out_size(), isz = g_win_.in_size(), kcols = in_ * ksz_ * osz;
    if (rs.calibrating) x_max_ = std::max(x_max_, MaxAbs({x.f(), static_cast<std::size_t>(n * in_ * isz)}));
    int16_active_ = rs.int16 && calibrated_ && !rs.calibrating;
    for (int64_t s = 0; s < n; ++s) {
      std::span<float> y{ctx.out[0]->f() + s * out_ * osz, static_cast<std::size_t>(out_ * osz)};
      if (int16_active_) {
        int16_t* xq = reinterpret_cast<int16_t*>(rs.scratch);
        int16_t* cols = xq + in_ * isz;
        kernels::QuantizeTernaryInputAt({x.f() + s * in_ * isz, static_cast<std::size_t>(in_ * isz)}, x_scale_,
                                        {xq, static_cast<std::size_t>(in_ * isz)});
        Im2Col(g_win_, xq, in_, cols);
        kernels::TernaryMatMulI16(w_, {cols, static_cast<std::size_t>(kcols)}, osz, x_scale_, bias_, y, rs.threads);
      } else {
        float* cols = reinterpret_cast<float*>(rs.scratch);
        Im2Col(g_win_, x.f() + s * in_ * isz, in_, cols);
        kernels::TernaryMatMul(w_, {cols, static_cast<std::size_t>(kcols)}, osz, bias_, y, rs.threads);
      }
    }
  }

  void BeginCalibration() override {
    x_max_ = 0;
    calibrated_ = false;
  }
  void EndCalibration() override {
    x_scale_ = x_max_ > 0 ? static_cast<float>(x_max_ / kernels::kTernaryI16Bound) : 1.0f;
    calibrated_ = true;
  }

 private:
  int64_t in_, out_, ksz_ = 1;
  bool ready_ = false, calibrated_ = false, int16_active_ = false;
  double x_max_ = 0;
  float x_scale_ = 1.0f;
  kernels::TernaryPack w_;
  std::vector<float> bias_;
  WindowGeometry g_win_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateTernaryKernel(const formats::FormatTraits& f, const NodeDef& n) {
  return CreateFormOp<TernaryMatMulOp, TernaryConvOp>(f, n);
}

}  // namespace permdnn::runtime::detail
