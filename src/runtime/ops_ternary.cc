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
// is first planned, and the pack is shared with the model's replicas.
// Kernels: TernaryMatVec per sample below kBatchedMin, TernaryMatMul on a
// feature-major copy of X from there; the conv is im2col
// (or, for 2-D stride-1 convs, "wide" columns) followed by TernaryMatMul
// with the output positions as the batch; with int16 on (Options::int16 +
// Calibrate) each sample is quantized at the calibrated scale before its
// columns are copied, and the product is TernaryMatMulI16; with int8
// (Options::int8) a 2-D conv's sample is quantized into planes of four
// channels' bytes, its columns are 32-bit word copies (four channels at one
// tap: the pack's tap-major quads) and the product is TernaryMatMulU8.
// A TernaryConv takes the load-time fusion's post-ops (fusion.h): a
// BatchNormalization folded into the row scales and bias when the node is
// first planned, then the residual Add and Relu / Clip on each sample's
// output after its product (1.24x on the Fashion-MNIST resnet at B=1 with
// --int8 against the separate BatchNormalization, Add and Relu nodes).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

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

// taps: the conv's kernel taps (the 8-bit product's tap-major quads), 0 for
// none (TernaryPack::Build).
// A fused BatchNormalization (a TernaryConv's post-op, fusion.h) folds into
// the row scales and the bias: a·(α_r·t·x + b_r) + shift = (a·α_r)·t·x +
// (a·b_r + shift), so the kernels run it for free.
// Read at the first plan and shared with the model's replicas
// (CompressedOp::SharedForm).
using TernaryDecoded = WithBias<kernels::TernaryPack>;
TernaryDecoded ReadPack(const OpContext& ctx, const formats::FormatTraits& f, bool conv, int64_t taps) {
  formats::Weights w = ReadWeights(ctx, f, conv);
  std::vector<float> a, shift;
  if (const PostOp* bn = FusedNormFactors(ctx, w.g.out, &a, &shift)) {
    w.bias.resize(static_cast<std::size_t>(w.g.out), 0.0f);
    for (int64_t r = 0; r < w.g.out; ++r) {
      w.scale[r] *= a[r];
      w.bias[r] = w.bias[r] * a[r] + shift[r];
      if (!std::isfinite(w.scale[r]) || !std::isfinite(w.bias[r]))
        ctx.Fail("fused BatchNormalization '{}': channel {} folds to a non-finite scale or bias "
                 "(scale {} / sqrt(var {} + epsilon))",
                 bn->name, r, ctx.in[bn->inputs[0]]->f()[r], ctx.in[bn->inputs[3]]->f()[r]);
    }
  }
  std::vector<float> bias = std::move(w.bias);
  return {kernels::TernaryPack::Build(std::move(*formats::Lift(w).ternary), taps), std::move(bias)};
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
    batched_ = batch_ >= kBatchedMin;
    if (batched_) ctx.scratch_bytes = LinearScratchBytes(batch_, in_, out_);
  }
  void Finalize(OpContext& ctx, const RunState& rs) override {
    if (!w_)  // no 8-bit path: no 8-bit tables
      w_ = SharedForm<TernaryDecoded>(rs.packs, "ternary", [&] { return ReadPack(ctx, format_, false, 0); });
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const kernels::TernaryPack& w = w_->w;
    const std::vector<float>& bias = w_->bias;
    RunFeatureMajorLinear(
        ctx, rs, batch_, in_, out_, batched_, static_cast<double>(batch_) * static_cast<double>(w.index.size()),
        [&](std::span<const float> xt, int64_t batch, std::span<float> yt, int threads) {
          kernels::TernaryMatMul(w, xt, batch, bias, yt, threads);
        },
        [&](std::span<const float> xb, std::span<float> yb, int threads) {
          kernels::TernaryMatVec(w, xb, bias, yb, threads);
        });
  }

 private:
  int64_t in_, out_, batch_ = 1;
  bool batched_ = false;
  std::shared_ptr<const TernaryDecoded> w_;
};

class TernaryConvOp : public CompressedOp, public Int16Op {
 public:
  TernaryConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, true, n), in_(geometry_.in), out_(geometry_.out), ksz_(geometry_.taps()) {}
  std::string KernelName() const override {
    return std::string(wide_ ? "wide+" : "im2col+") +
           kernels::SelectedKernel({int8_active_    ? kernels::KernelOp::kTernaryMatMulU8
                                    : int16_active_ ? kernels::KernelOp::kTernaryMatMulI16
                                                    : kernels::KernelOp::kTernaryMatMul,
                                    geometry_.p, out_, in_ * ksz_, g_win_.out_size(), false});
  }

  void Prepare(OpContext& ctx) override {
    g_win_ = PrepareConv(ctx, in_, out_, geometry_.kernel);
    add_same_shape_ = ValidatePostOps(ctx, ctx.out[0]->shape);
    epilogue_ = FindProductEpilogue(*ctx.node);
    const WindowGeometry& g = g_win_;
    // A 2-D conv of stride 1 without dilation runs on "wide" columns: the
    // sample padded once (Hp x Wp), then each (channel, tap) row of the
    // columns is one contiguous copy of OH·Wp values from it, at the tap's
    // offset (output positions oh·Wp + ow, the Wp − OW columns past each row
    // computed and dropped). Im2Col's per-row copies between zero runs took
    // twice the product's time on the resnet's 28x28 convs at B=1.
    planar_ = g.in[0] == 1 && g.k[0] == 1 && g.out[0] == 1 && g.pad[0] == 0 && g.pad_end[0] == 0;
    wide_ = planar_ && g.stride[1] == 1 && g.stride[2] == 1 && g.dil[1] == 1 && g.dil[2] == 1;
    hp_ = g.in[1] + g.pad[1] + g.pad_end[1];
    wp_ = g.in[2] + g.pad[2] + g.pad_end[2];
    wide_ = wide_ && g.out[1] == hp_ - g.k[1] + 1 && g.out[2] == wp_ - g.k[2] + 1;
    // The padded sample (+ k[2] zeros: the last tap's row reads past it),
    // the columns, and the wide output.
    const int64_t osz = wide_ ? g.out[1] * wp_ : g.out_size(), cols = in_ * ksz_ * osz;
    const int64_t padded = wide_ ? in_ * hp_ * wp_ + g.k[2] : in_ * g.in_size();
    const int64_t f32 = 4 * (cols + (wide_ ? padded + out_ * osz : 0));
    const int64_t i16 = 2 * (cols + padded) + 4 * (wide_ ? out_ * osz : 0);
    // 8 bits: the quantized sample, its padded planes, the columns (per
    // quad of the pack, Finalize), the wide output.
    const int64_t g4 = (in_ + 3) / 4;
    u8_row_bytes_ = kernels::TernaryU8RowBytes(osz);
    const int64_t u8 = g4 * kernels::TernaryU8RowBytes(g.in_size()) + 4 * g4 * (hp_ * wp_ + g.k[2]) +
                       4 * (wide_ ? out_ * osz : 0);
    sample_u8_bytes_ = u8;
    ctx.scratch_bytes = std::max(ctx.scratch_bytes, std::max({f32, i16, u8}) + 4 * 64);
    sample_bytes_ = ctx.scratch_bytes;
  }

  // On several threads with at least as many samples, each thread runs
  // whole samples on its own scratch (ForEachSample, SampleScratchBytes):
  // one sample's product split over the threads hands tiny jobs back and
  // forth (27-29 against 10-11 ms per 3x3 conv of the ternary
  // Fashion-MNIST resnet at batch 256 on two threads).
  // The weights: a fused BatchNormalization folded in, shared with the
  // model's replicas.
  void Finalize(OpContext& ctx, const RunState& rs) override {
    if (!w_) w_ = SharedForm<TernaryDecoded>(rs.packs, "ternary", [&] { return ReadPack(ctx, format_, true, ksz_); });
    sample_bytes_ = std::max(sample_bytes_, sample_u8_bytes_ + w_->w.u8_quads * u8_row_bytes_ + 4 * 64);
    ctx.scratch_bytes =
        std::max(ctx.scratch_bytes, SampleScratchBytes(sample_bytes_, ctx.in[0]->shape[0], rs.threads));
  }

  // The int16 path (after Calibrate, Options::int16): each sample is
  // quantized at the calibrated scale, max |input| / 1023 (values past the
  // calibrated range saturate), the columns are int16 copies, and the
  // product runs on kernels::TernaryMatMulI16: exact 16/32-bit sums, so the
  // result differs from fp32 only by the input's quantization.
  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], isz = g_win_.in_size();
    if (rs.calibrating) {
      const std::span<const float> all{x.f(), static_cast<std::size_t>(n * in_ * isz)};
      x_max_ = std::max(x_max_, MaxAbs(all));
      for (const float v : all) x_min_ = std::min<double>(x_min_, v);
    }
    int16_active_ = rs.int16 && calibrated_ && !rs.calibrating;
    int8_active_ = int16_active_ && rs.int8 && planar_;
    const int64_t ysz = out_ * g_win_.out_size();
    const Value* add = epilogue_.add_input >= 0 ? ctx.in[epilogue_.add_input] : nullptr;
    ForEachSample(n, rs.threads, [&](int64_t s, int threads, int worker) {
      RunState srs = rs;
      srs.threads = threads;
      srs.scratch = SampleScratch(rs.scratch, sample_bytes_, worker);
      const float* xs = x.f() + s * in_ * isz;
      float* ys = ctx.out[0]->f() + s * ysz;
      if (int8_active_) Sample8(xs, ys, srs);
      else if (int16_active_) Sample<int16_t>(xs, ys, srs);
      else Sample<float>(xs, ys, srs);
      if (!add || add_same_shape_) epilogue_.Apply(ys, add ? add->f() + s * ysz : nullptr, ysz);
    });
    if (add && !add_same_shape_) {  // a broadcast operand: the whole output, then the clamp
      AddBroadcastInPlace(ctx.out[0]->f(), ctx.out[0]->shape, add->f(), add->shape, ctx);
      epilogue_.Apply(ctx.out[0]->f(), nullptr, n * ysz);
    }
  }

  void BeginCalibration() override {
    x_max_ = 0;
    x_min_ = 0;
    calibrated_ = false;
  }
  // A range too small for a normal float scale (all inputs ~0) counts as
  // zero: scale 1, every input quantizes to 0.
  void EndCalibration() override {
    const double s = x_max_ / kernels::kTernaryI16Bound;
    x_scale_ = s >= static_cast<double>(std::numeric_limits<float>::min()) ? static_cast<float>(s) : 1.0f;
    // 8 bits: all 255 levels for a non-negative input (ReLU outputs, zero
    // point 0), ±127 around zero point 128 otherwise.
    const double s8 = x_min_ >= 0 ? x_max_ / 255.0 : x_max_ / 127.0;
    q8_ = {s8 >= static_cast<double>(std::numeric_limits<float>::min()) ? static_cast<float>(s8) : 1.0f,
           x_min_ >= 0 ? 0 : 128};
    calibrated_ = true;
  }

 private:
  // x (in × in_size, float) → T values: a copy, or quantized at x_scale_.
  template <class T>
  void Convert(const float* x, int64_t count, T* out) const {
    if constexpr (std::is_same_v<T, float>) {
      std::copy(x, x + count, out);
    } else {
      kernels::QuantizeTernaryInputAt({x, static_cast<std::size_t>(count)}, x_scale_,
                                      {out, static_cast<std::size_t>(count)});
    }
  }
  template <class T>
  void Product(const T* cols, int64_t cols_count, int64_t batch, std::span<float> y, int threads) const {
    if constexpr (std::is_same_v<T, float>) {
      kernels::TernaryMatMul(w_->w, {cols, static_cast<std::size_t>(cols_count)}, batch, w_->bias, y, threads);
    } else {
      kernels::TernaryMatMulI16(w_->w, {cols, static_cast<std::size_t>(cols_count)}, batch, x_scale_, w_->bias, y,
                                threads);
    }
  }

  // The 8-bit path of a 2-D conv, one sample: x quantized at the calibrated
  // scale and zero point into quad rows of four channels (G4 rows of H·W
  // words), placed in padded planes (borders and the channels past in_: the
  // zero point), then quad row t·G4 + g of the columns (tap t, channels
  // 4g .. 4g + 3) copied from plane g at the tap's offset: one contiguous
  // copy of OH·Wp words on wide columns, one strided copy per output row
  // otherwise.
  void Sample8(const float* x, float* y, RunState& rs) const {
    const WindowGeometry& g = g_win_;
    const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2], KH = g.k[1], KW = g.k[2];
    const int64_t g4 = (in_ + 3) / 4, plane = hp_ * wp_ + KW, sq = kernels::TernaryU8RowBytes(H * W);
    const int64_t batch = wide_ ? OH * wp_ : OH * OW, ld = kernels::TernaryU8RowBytes(batch);
    uint8_t* xq = At64(rs.scratch);
    uint32_t* planes = reinterpret_cast<uint32_t*>(At64(xq + g4 * sq));
    uint8_t* cols = At64(reinterpret_cast<uint8_t*>(planes + g4 * plane));
    float* yw = reinterpret_cast<float*>(At64(cols + w_->w.u8_quads * ld));
    kernels::QuantizeTernaryInputU8At({x, static_cast<std::size_t>(in_ * H * W)}, H * W, q8_,
                                      {xq, static_cast<std::size_t>(g4 * sq)});
    std::fill(planes, planes + g4 * plane, static_cast<uint32_t>(q8_.zero) * 0x01010101u);
    for (int64_t q = 0; q < g4; ++q)
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(planes + q * plane + (h + g.pad[1]) * wp_ + g.pad[2], xq + q * sq + h * W * 4,
                    static_cast<std::size_t>(W * 4));
    const int64_t sh = g.stride[1], sw = g.stride[2];
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw)
        for (int64_t q = 0; q < g4; ++q) {
          uint8_t* row = cols + ((kh * KW + kw) * g4 + q) * ld;
          const uint32_t* src = planes + q * plane + kh * g.dil[1] * wp_ + kw * g.dil[2];
          if (wide_) {
            std::memcpy(row, src, static_cast<std::size_t>(batch * 4));
          } else {
            uint32_t* dst = reinterpret_cast<uint32_t*>(row);
            for (int64_t oh = 0; oh < OH; ++oh, dst += OW) {
              const uint32_t* s = src + oh * sh * wp_;
              for (int64_t ow = 0; ow < OW; ++ow) dst[ow] = s[ow * sw];
            }
          }
          std::memset(row + batch * 4, q8_.zero, static_cast<std::size_t>(ld - batch * 4));
        }
    const std::size_t bytes = static_cast<std::size_t>(w_->w.u8_quads * ld);
    float* out = wide_ ? yw : y;
    kernels::TernaryMatMulU8(w_->w, {cols, bytes}, batch, q8_, w_->bias, {out, static_cast<std::size_t>(out_ * batch)},
                             rs.threads);
    if (wide_)
      for (int64_t o = 0; o < out_; ++o)
        for (int64_t oh = 0; oh < OH; ++oh)
          std::copy(yw + o * batch + oh * wp_, yw + o * batch + oh * wp_ + OW, y + o * OH * OW + oh * OW);
  }

  static uint8_t* At64(uint8_t* p) {
    return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
  }

  // One sample: y (out × out_size) = W · columns(x).
  template <class T>
  void Sample(const float* x, float* y, RunState& rs) const {
    const WindowGeometry& g = g_win_;
    const int64_t isz = g.in_size(), osz = g.out_size();
    if (!wide_) {
      // fp32: the columns from x itself (scratch: the columns only); int16:
      // the quantized sample, then the columns (Prepare sizes both).
      T* cols = reinterpret_cast<T*>(rs.scratch);
      const T* src = nullptr;
      if constexpr (std::is_same_v<T, float>) {
        src = x;
      } else {
        T* xt = cols;
        cols = reinterpret_cast<T*>(At64(reinterpret_cast<uint8_t*>(xt + in_ * isz)));
        Convert(x, in_ * isz, xt);
        src = xt;
      }
      Im2Col(g, src, in_, cols);
      Product(cols, in_ * ksz_ * osz, osz, {y, static_cast<std::size_t>(out_ * osz)}, rs.threads);
      return;
    }
    const int64_t H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2], KH = g.k[1], KW = g.k[2];
    const int64_t oszw = OH * wp_, plane = hp_ * wp_;
    T* padded = reinterpret_cast<T*>(rs.scratch);
    T* cols = reinterpret_cast<T*>(At64(reinterpret_cast<uint8_t*>(padded + in_ * plane + KW)));
    float* yw = reinterpret_cast<float*>(At64(reinterpret_cast<uint8_t*>(cols + in_ * ksz_ * oszw)));
    std::fill(padded, padded + in_ * plane + KW, T{0});
    // The sample converted in one call (into the columns' space, free until
    // the copies below, and never smaller: ksz·OH·Wp >= H·W), then its rows
    // placed in the padded planes.
    const T* xt = cols;
    if constexpr (std::is_same_v<T, float>) xt = x;
    else Convert(x, in_ * H * W, cols);
    for (int64_t c = 0; c < in_; ++c)
      for (int64_t h = 0; h < H; ++h)
        std::copy(xt + (c * H + h) * W, xt + (c * H + h + 1) * W, padded + c * plane + (h + g.pad[1]) * wp_ + g.pad[2]);
    T* dst = cols;
    for (int64_t c = 0; c < in_; ++c)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw, dst += oszw) {
          const T* src = padded + c * plane + kh * wp_ + kw;
          std::copy(src, src + oszw, dst);
        }
    Product(cols, in_ * ksz_ * oszw, oszw, {yw, static_cast<std::size_t>(out_ * oszw)}, rs.threads);
    for (int64_t o = 0; o < out_; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        std::copy(yw + o * oszw + oh * wp_, yw + o * oszw + oh * wp_ + OW, y + o * osz + oh * OW);
  }

  int64_t in_, out_, ksz_ = 1, hp_ = 0, wp_ = 0;
  int64_t sample_bytes_ = 0;  // one sample's scratch (Prepare's, with the pack's 8-bit columns from Finalize)
  int64_t sample_u8_bytes_ = 0, u8_row_bytes_ = 0;  // the 8-bit path's, but for its columns (Prepare)
  bool calibrated_ = false, int16_active_ = false, int8_active_ = false, wide_ = false,
       planar_ = false, add_same_shape_ = true;
  ProductEpilogue epilogue_;  // the fused Add and Relu / Clip after the product (the BatchNormalization is in the scales)
  double x_max_ = 0, x_min_ = 0;
  float x_scale_ = 1.0f;
  kernels::TernaryU8Scale q8_;
  std::shared_ptr<const TernaryDecoded> w_;
  WindowGeometry g_win_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateTernaryKernel(const formats::FormatTraits& f, const NodeDef& n) {
  return CreateFormOp<TernaryMatMulOp, TernaryConvOp>(f, n);
}

}  // namespace permdnn::runtime::detail
