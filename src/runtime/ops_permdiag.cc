// The ai.permdnn permuted-diagonal operators on the permdnn kernels. Their
// contract (PermDiagMatMul: X, values [mb, nb, p], offsets [mb, nb], bias;
// PermDiagConv: values [mb, nb, p, kernel...]; attributes) is the format
// registry's permdiag row (formats/registry.h), which also reads and
// validates the weights; docs/runtime.md has the table.
//
// PermDiagMatMul at batch 1 chooses per call between the dense-input and
// the zero-skipping (column-wise) product: the input's density against the
// crossover measured for the layer at its first batch-1 plan
// (Options::zero_skip). The permdiag-column row (offset_layout="column",
// shared offsets) runs the same classes: PermDiagMatMul on
// kernels/permdiag_column.h (batch 1 as above; batch > 1: p grouped GEMMs),
// int16 and PermDiagConv on the general permdiag kernels (the same matrix,
// offsets expanded).
//
// PermDiagConv on kernels::PermDiagConv2D (kernels/permdiag_conv.h: the
// SIMD kernel on channel-blocked activations, no im2col) when the plan's
// activation layout is blocked by the kernel's lane count and the kernel
// table has a row for the shape (1x1 / 3x3, stride 1 / 2, p dividing the
// lanes, 2-D, no dilation); the fused post-ops become the kernel's packing
// (BatchNormalization folded into the weights and bias) and epilogue
// (residual Add, Relu / Clip). Otherwise, and on the reference path, im2col
// and per-channel loops on plain tensors, then the post-ops in node order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "permdnn/core/fixed_point.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/kernels/permdiag_column.h"
#include "permdnn/kernels/permdiag_conv.h"
#include "permdnn/kernels/table.h"
#include "runtime/conv_util.h"
#include "runtime/dnnl_util.h"
#include "runtime/graph.h"
#include "runtime/ops_compressed.h"

namespace permdnn::runtime::detail {

namespace {

class PermDiagMatMulOp : public CompressedOp, public Int16Op {
 public:
  PermDiagMatMulOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, false, n), where_(n.Where()), p_(geometry_.p), in_(geometry_.in), out_(geometry_.out) {}
  // The kernel table's row for the planned batch (what --profile shows).
  std::string KernelName() const override {
    kernels::KernelProblem q{kernels::KernelOp::kPermDiagMatVecPacked, static_cast<int>(p_), out_, in_, batch_,
                             pack_.chunked};
    if (column_ && !int16_active_) {
      q.op = batch_ > 1 ? kernels::KernelOp::kPermDiagColumnMatMulRows
                        : skipped_ ? kernels::KernelOp::kPermDiagColumnSparseInput
                                   : kernels::KernelOp::kPermDiagColumnMatVec;
      if (batch_ > 1 || density_ < 0) return kernels::SelectedKernel(q);
      return fmt::format("{} (input density {:.3f}, {})", kernels::SelectedKernel(q), density_, SkipRule());
    }
    if (int16_active_) q.op = kernels::KernelOp::kPermDiagMatVecI16;
    else if (batch_ >= 4) q.op = kernels::KernelOp::kPermDiagMatMulRows;
    else if (skipped_) q.op = kernels::KernelOp::kPermDiagMatVecSparseInput;
    if (batch_ > 1 || density_ < 0 || int16_active_) return kernels::SelectedKernel(q);
    return fmt::format("{} (input density {:.3f}, {})", kernels::SelectedKernel(q), density_, SkipRule());
  }

  void Prepare(OpContext& ctx) override {
    batch_ = PrepareLinear(ctx, in_, out_);
    if (!loaded_) {
      formats::Weights w = ReadWeights(ctx, format_, false);
      w_ = PermDiagMatrix::FromParts(out_, in_, static_cast<int>(p_), w.values, w.offsets);
      bias_ = std::move(w.bias);
      if (column_) col_ = kernels::PermDiagColumnWeights::Build(w_);
      loaded_ = true;  // only once weights and bias are both valid
    }
    if (!column_) HoldLayoutFor(batch_);
    // The zero-skipping crossover, once, at the first batch-1 plan (so no
    // run, and no --profile, pays for it).
    if (batch_ == 1 && crossover_ < 0) crossover_ = MeasureCrossover();
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
    for (std::size_t r = 0; r < bias_.size(); ++r) {
      const double scaled = RoundHalfAway(std::ldexp(static_cast<double>(bias_[r]), facc));
      PERMDNN_CHECK(std::fabs(scaled) < 0x1p62, "{}: int16: bias[{}] = {} does not fit the int64 accumulator at scale 2^{}",
                    where_, r, bias_[r], facc);
      bias64_[r] = static_cast<int64_t>(scaled);
    }
    shift_ = facc - fy_;
    calibrated_ = true;
  }

 private:
  std::string where_;  // the node, for errors after Prepare
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
    if (column_) return RunColumn(x, y, bias, rs);
    if (batch_ >= 4) {
      kernels::PermDiagMatMulRows(w_, {x, static_cast<std::size_t>(batch_ * in_)}, batch_, bias,
                                  {y, static_cast<std::size_t>(batch_ * out_)}, rs.threads);
      return;
    }
    if (batch_ == 1 && Skips(x, rs)) {
      kernels::PermDiagMatVecSparseInput(colpack_, {x, static_cast<std::size_t>(in_)}, bias,
                                         {y, static_cast<std::size_t>(out_)}, rs.threads);
      return;
    }
    ForEachSample(batch_, rs.threads, [&](int64_t b, int threads) {
      kernels::PermDiagMatVec(pack_, {x + b * in_, static_cast<std::size_t>(in_)}, bias,
                              {y + b * out_, static_cast<std::size_t>(out_)}, threads);
    });
  }
  // Batch 1 (Options::zero_skip): one pass counts the nonzero inputs; the
  // zero-skipping product runs when their density is below the crossover
  // measured for this layer at its first batch-1 plan (kAuto), always
  // (kAlways) or never (kNever). The general format's skipping product
  // reads a column pack (a second copy of the weights), which is kept only
  // where skipping can win: a layer whose measured crossover is 0 drops it.
  bool Skips(const float* x, const RunState& rs) {
    if (rs.zero_skip == ZeroSkip::kNever) {
      skipped_ = false;
      density_ = -1;
      return false;
    }
    int64_t nonzero = 0;
    for (int64_t j = 0; j < in_; ++j) nonzero += x[j] != 0.0f;
    density_ = static_cast<double>(nonzero) / static_cast<double>(in_);
    always_ = rs.zero_skip == ZeroSkip::kAlways;
    skipped_ = always_ || density_ < crossover_;
    if (skipped_ && !column_) EnsureColumnPack();
    return skipped_;
  }
  double MeasureCrossover() {
    if (column_) return kernels::MeasureSkipCrossover(col_, 1);
    EnsureColumnPack();
    const double c = kernels::MeasureSkipCrossover(pack_, colpack_, 1);
    if (c <= 0) colpack_ = kernels::PermDiagColumnPack();
    return c;
  }
  void EnsureColumnPack() {
    if (colpack_.rows == 0) colpack_ = kernels::PermDiagColumnPack::Build(w_.rows() > 0 ? w_ : pack_.Unpack());
  }
  std::string SkipRule() const {
    return always_ ? "zero skipping forced" : fmt::format("skips below {:.3f}", crossover_);
  }
  // Shared offsets. Batch 1: one pass counts the nonzero inputs; below the
  // measured crossover density the zero-skipping product runs.
  void RunColumn(const float* x, float* y, std::span<const float> bias, RunState& rs) {
    const std::span<const float> xs(x, static_cast<std::size_t>(batch_ * in_));
    const std::span<float> ys(y, static_cast<std::size_t>(batch_ * out_));
    if (batch_ > 1) return kernels::PermDiagColumnMatMulRows(col_, xs, batch_, bias, ys, rs.threads);
    if (Skips(x, rs)) kernels::PermDiagColumnMatVecSparseInput(col_, xs, bias, ys, rs.threads);
    else kernels::PermDiagColumnMatVec(col_, xs, bias, ys, rs.threads);
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

  int64_t p_, in_, out_, batch_ = 1;
  bool loaded_ = false;
  // Shared offsets (permdiag-column): the grouped layout (w_ kept for int16).
  const bool column_ = format_.kind == formats::Kind::kPermDiagColumn;
  kernels::PermDiagColumnWeights col_;
  // Zero skipping at batch 1 (Skips): the general format's column pack, the
  // crossover measured at the first batch-1 plan (-1: not yet), the last
  // call's input density (-1: not counted) and path.
  kernels::PermDiagColumnPack colpack_;
  double crossover_ = -1, density_ = -1;
  bool skipped_ = false, always_ = false;
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

class PermDiagConvOp : public CompressedOp {
 public:
  PermDiagConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, true, n), n_(n), p_(geometry_.p), in_(geometry_.in), out_(geometry_.out) {}
  std::string KernelName() const override {
    return fast_ ? kernels::SelectedKernel(Problem()) : std::string("permdiag-conv-im2col");
  }

  void Prepare(OpContext& ctx) override {
    if (!loaded_) {
      formats::Weights w = ReadWeights(ctx, format_, true);
      kernel_ = w.g.kernel;
      ksz_ = w.g.taps();
      values_ = std::move(w.values);
      offsets_ = std::move(w.offsets);
      bias_ = std::move(w.bias);
      loaded_ = true;  // only once weights and bias are both valid
    }
    g_ = PrepareConv(ctx, in_, out_, kernel_);
    const Value* x = ctx.In(0);
    std::vector<int64_t> out = {x->shape[0], out_};
    out.insert(out.end(), g_.out_spatial.begin(), g_.out_spatial.end());
    add_same_shape_ = ValidatePostOps(ctx, out);
    shape_ = kernels::PermDiagConvShape{x->shape[0], in_, out_, g_.in[1], g_.in[2], g_.out[1], g_.out[2],
                                        static_cast<int>(g_.k[1]), static_cast<int>(g_.k[2]),
                                        static_cast<int>(g_.stride[1]), static_cast<int>(g_.stride[2]),
                                        static_cast<int>(g_.pad[1]), static_cast<int>(g_.pad[2])};
    simd_ = x->shape.size() == 4 && g_.dil[1] == 1 && g_.dil[2] == 1 && g_.stride[1] == g_.stride[2] &&
            add_same_shape_ && kernels::SelectedKernel(Problem()) != "permdiag.conv.reference";
  }

  bool WritesLayout(const OpContext&, std::size_t k, const Layout& layout) const override {
    return k == 0 && Blocked(layout);
  }
  bool ReadsLayout(const OpContext&, std::size_t k, const Layout& layout) const override {
    return (k == 0 || k >= 4) && Blocked(layout);  // X and a fused Add's operand
  }

  void Finalize(OpContext& ctx, const RunState& rs) override {
    fast_ = !rs.reference && Blocked(rs.act_layout);
    if (!fast_) return;
    const Layout L = rs.act_layout;
    if (pack_.lanes != L.block) BuildPack(ctx, L.block);
    const Value& x = *ctx.in[0];
    Value& y = *ctx.out[0];
    int64_t scratch = 0;
    in_conv_.Init(x.shape, x.layout, L);
    if (!in_conv_.identity()) scratch += Align(L.StoredElements(x.shape));
    out_offset_ = scratch;
    out_conv_.Init(y.shape, L, y.layout);
    if (!out_conv_.identity()) scratch += Align(L.StoredElements(y.shape));
    add_offset_ = scratch;
    add_input_ = -1;
    for (const PostOp& p : n_.post_ops)
      if (p.op_type == "Add") add_input_ = p.inputs[0];
    if (add_input_ >= 0) {
      add_conv_.Init(y.shape, ctx.in[add_input_]->layout, L);
      if (!add_conv_.identity()) scratch += Align(L.StoredElements(y.shape));
    }
    pad_offset_ = scratch;
    ctx.scratch_bytes =
        scratch + std::max({in_conv_.scratchpad_bytes(), out_conv_.scratchpad_bytes(), add_conv_.scratchpad_bytes()});
  }

  void Run(OpContext& ctx, RunState& rs) override {
    if (fast_) RunBlocked(ctx, rs);
    else RunIm2Col(ctx, rs);
  }

 private:
  static int64_t Align(int64_t floats) { return (floats * 4 + 63) / 64 * 64; }
  bool Blocked(const Layout& layout) const {
    return simd_ && layout.kind == LayoutKind::kBlocked && layout.block == kernels::PermDiagConvLanes();
  }
  kernels::KernelProblem Problem() const {
    kernels::KernelProblem q{kernels::KernelOp::kPermDiagConv, static_cast<int>(p_), out_, in_, shape_.batch, false};
    q.kh = shape_.kh;
    q.kw = shape_.kw;
    q.stride = shape_.stride_h;
    return q;
  }

  // The kernel's packing, with a fused BatchNormalization folded in
  // (scale a = gamma / sqrt(var + eps), shift beta - mean·a).
  void BuildPack(const OpContext& ctx, int lanes) {
    std::vector<float> scale, shift;
    for (const PostOp& p : n_.post_ops) {
      if (p.op_type != "BatchNormalization") continue;
      const float *g = ctx.in[p.inputs[0]]->f(), *b = ctx.in[p.inputs[1]]->f(), *mu = ctx.in[p.inputs[2]]->f(),
                  *var = ctx.in[p.inputs[3]]->f();
      scale.resize(out_);
      shift.resize(out_);
      for (int64_t o = 0; o < out_; ++o) {
        scale[o] = g[o] / std::sqrt(var[o] + p.epsilon);
        shift[o] = b[o] - mu[o] * scale[o];
      }
    }
    pack_ = kernels::PermDiagConvPack::Build(values_, offsets_, out_, in_, static_cast<int>(p_), shape_.kh, shape_.kw,
                                             lanes, bias_, scale, shift);
  }

  void RunBlocked(OpContext& ctx, RunState& rs) {
    const Value& x = *ctx.in[0];
    const float* src = x.f();
    if (!in_conv_.identity()) {
      float* staged = reinterpret_cast<float*>(rs.scratch);
      in_conv_.Run(src, staged, rs.scratch + pad_offset_);
      src = staged;
    }
    float* dst = out_conv_.identity() ? ctx.out[0]->f() : reinterpret_cast<float*>(rs.scratch + out_offset_);
    kernels::PermDiagConvEpilogue e;
    if (add_input_ >= 0) {
      const Value& a = *ctx.in[add_input_];
      e.residual = a.f();
      if (!add_conv_.identity()) {
        float* staged = reinterpret_cast<float*>(rs.scratch + add_offset_);
        add_conv_.Run(a.f(), staged, rs.scratch + pad_offset_);
        e.residual = staged;
      }
    }
    for (const PostOp& p : n_.post_ops) {
      if (p.op_type == "Relu") e.lo = std::max(e.lo, 0.0f);
      if (p.op_type == "Clip") {
        e.lo = std::max(e.lo, p.lo);
        e.hi = std::min(e.hi, p.hi);
      }
    }
    kernels::PermDiagConvShape s = shape_;
    s.batch = x.shape[0];
    kernels::PermDiagConv2D(pack_, s, src, e, dst, rs.threads);
    if (!out_conv_.identity()) out_conv_.Run(dst, ctx.out[0]->f(), rs.scratch + pad_offset_);
  }

  // Per sample: im2col, then each output channel sums its nb in-channel
  // kernels over the column rows: out·nb·K·HWout MACs, p× fewer than dense.
  void RunIm2Col(OpContext& ctx, RunState& rs) {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_.out_size(), isz = g_.in_size(), p = p_;
    const int64_t nb = CeilDiv(in_, p_);
    float* cols = reinterpret_cast<float*>(rs.scratch);
    for (int64_t s = 0; s < n; ++s) {
      Im2Col(g_, x.f() + s * in_ * isz, in_, cols);
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
    ApplyPostOpsPlain(ctx, ctx.out[0]->f(), ctx.out[0]->shape);
  }

  const NodeDef& n_;
  int64_t p_, in_, out_, ksz_ = 1;
  std::vector<int64_t> kernel_;
  bool loaded_ = false, add_same_shape_ = true, simd_ = false, fast_ = false;
  std::vector<float> values_, bias_;
  std::vector<uint16_t> offsets_;
  WindowGeometry g_;
  kernels::PermDiagConvShape shape_;
  kernels::PermDiagConvPack pack_;
  LayoutConverter in_conv_, out_conv_, add_conv_;
  int64_t out_offset_ = 0, add_offset_ = 0, pad_offset_ = 0;
  int add_input_ = -1;
};

}  // namespace

std::unique_ptr<OpKernel> CreatePermDiagKernel(const formats::FormatTraits& f, const NodeDef& n) {
  return CreateFormOp<PermDiagMatMulOp, PermDiagConvOp>(f, n);
}

}  // namespace permdnn::runtime::detail
