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
// followed by TernaryMatMul with the output positions as the batch.
#include <algorithm>

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

class TernaryConvOp : public CompressedOp {
 public:
  TernaryConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, true, n), in_(geometry_.in), out_(geometry_.out), ksz_(geometry_.taps()) {}
  std::string KernelName() const override {
    return "im2col+" + kernels::SelectedKernel({kernels::KernelOp::kTernaryMatMul, geometry_.p, out_, in_ * ksz_, 1,
                                                false});
  }

  void Prepare(OpContext& ctx) override {
    if (!ready_) {
      w_ = ReadPack(ctx, format_, true, &bias_);
      ready_ = true;
    }
    g_win_ = PrepareConv(ctx, in_, out_, geometry_.kernel);
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_win_.out_size(), isz = g_win_.in_size();
    float* cols = reinterpret_cast<float*>(rs.scratch);
    for (int64_t s = 0; s < n; ++s) {
      Im2Col(g_win_, x.f() + s * in_ * isz, in_, cols);
      kernels::TernaryMatMul(w_, {cols, static_cast<std::size_t>(in_ * ksz_ * osz)}, osz, bias_,
                             {ctx.out[0]->f() + s * out_ * osz, static_cast<std::size_t>(out_ * osz)}, rs.threads);
    }
  }

 private:
  int64_t in_, out_, ksz_ = 1;
  bool ready_ = false;
  kernels::TernaryPack w_;
  std::vector<float> bias_;
  WindowGeometry g_win_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateTernaryKernel(const formats::FormatTraits& f, const NodeDef& n) {
  return CreateFormOp<TernaryMatMulOp, TernaryConvOp>(f, n);
}

}  // namespace permdnn::runtime::detail
