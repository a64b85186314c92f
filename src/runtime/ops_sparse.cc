// The ai.permdnn pruned operators (Deep Compression / EIE) on the CSR kernels.
//
// SparseMatMul(X, row_ptr, col_idx, values[, bias][, codebook]) -> Y
//   X [..., in_features], Y [..., out_features]; the weight [out, in] in CSR:
//   row_ptr int32 [out + 1], col_idx int32 [nnz], values float32 [nnz], or
//   uint8 codes [nnz] when codebook float32 [K], 1 <= K <= 256, is given
//   (weight = codebook[code]); bias float32 [out] ("" when absent);
//   attributes in_features, out_features.
// SparseConv(X, row_ptr, col_idx, values[, bias][, codebook]) -> Y
//   the same CSR over the conv weight reshaped to [out, in·k...] (column =
//   in channel · ksz + kernel index); attributes in_channels, out_channels,
//   kernel_shape (required: the CSR does not carry it), strides, pads,
//   dilations (as Conv, group 1).
// RelativeSparseMatMul / RelativeSparseConv(X, row_len, gaps, codes[, bias],
//   codebook) -> Y: the same weights stored with Deep Compression's relative
//   column indices and bit-packed codes (attribute index_bits; the layout is
//   the registry's csr-relative row, formats/registry.h).
//
// The arrays are validated and decoded once, when the node is first planned
// (a codebook becomes plain float values and relative indices absolute
// ones: the product is the same and the CSR kernels need no lookup), and
// the decoded CSR is shared with the model's replicas. Kernels: kernels::CsrMatVec per sample (batch
// below kBatchedMin, or threads over samples), kernels::CsrMatMul on a
// feature-major copy of X for larger batches (SIMD over the batch); the conv
// is im2col followed by CsrMatMul with the output positions as the batch,
// which writes NCHW directly.
#include <algorithm>
#include <memory>
#include <vector>

#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/sparse.h"
#include "permdnn/kernels/table.h"
#include "runtime/ops_compressed.h"

namespace permdnn::runtime::detail {

namespace {

// From this batch on, transposing X and using the batched CSR kernel wins
// over one CsrMatVec per sample (measured in docs/runtime.md).
constexpr int64_t kBatchedMin = 8;

// The node's CSR matrix (a codebook decoded into float values) and bias,
// validated by the registry; read at the first plan, and shared with the
// model's replicas (CompressedOp::SharedForm).
using SparseDecoded = WithBias<CsrMatrix>;
SparseDecoded ReadCsr(const OpContext& ctx, const formats::FormatTraits& f, bool conv) {
  formats::Weights w = ReadWeights(ctx, f, conv);
  std::vector<float> bias = std::move(w.bias);
  return {std::move(*formats::Lift(w).sparse), std::move(bias)};
}

class SparseMatMulOp : public CompressedOp {
 public:
  SparseMatMulOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, false, n), in_(geometry_.in), out_(geometry_.out) {}
  std::string KernelName() const override {
    return kernels::SelectedKernel({batched_ ? kernels::KernelOp::kCsrMatMul : kernels::KernelOp::kCsrMatVec, 1,
                                    out_, in_, batch_, false});
  }

  void Prepare(OpContext& ctx) override {
    batch_ = PrepareLinear(ctx, in_, out_);
    batched_ = batch_ >= kBatchedMin;
    // Feature-major X and Y for the batched kernel.
    if (batched_) ctx.scratch_bytes = LinearScratchBytes(batch_, in_, out_);
  }
  void Finalize(OpContext& ctx, const RunState& rs) override {
    if (!w_) w_ = SharedForm<SparseDecoded>(rs.packs, "csr", [&] { return ReadCsr(ctx, format_, false); });
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const CsrMatrix& w = w_->w;
    const std::vector<float>& bias = w_->bias;
    RunFeatureMajorLinear(
        ctx, rs, batch_, in_, out_, batched_, static_cast<double>(batch_) * static_cast<double>(w.nnz()),
        [&](std::span<const float> xt, int64_t batch, std::span<float> yt, int threads) {
          kernels::CsrMatMul(w, xt, batch, bias, yt, threads);
        },
        [&](std::span<const float> xb, std::span<float> yb, int threads) {
          kernels::CsrMatVec(w, xb, bias, yb, threads);
        });
  }

 private:
  int64_t in_, out_, batch_ = 1;
  bool batched_ = false;
  std::shared_ptr<const SparseDecoded> w_;
};

class SparseConvOp : public CompressedOp {
 public:
  SparseConvOp(const formats::FormatTraits& f, const NodeDef& n)
      : CompressedOp(f, true, n), in_(geometry_.in), out_(geometry_.out), ksz_(geometry_.taps()) {}
  std::string KernelName() const override {
    return "im2col+" + kernels::SelectedKernel({kernels::KernelOp::kCsrMatMul, 1, out_, in_ * ksz_, 1, false});
  }

  void Prepare(OpContext& ctx) override {
    g_win_ = PrepareConv(ctx, in_, out_, geometry_.kernel);
    sample_bytes_ = ctx.scratch_bytes;
  }
  // The weights (shared with the model's replicas); whole samples per
  // thread (ForEachSample), each on its own columns.
  void Finalize(OpContext& ctx, const RunState& rs) override {
    if (!w_) w_ = SharedForm<SparseDecoded>(rs.packs, "csr", [&] { return ReadCsr(ctx, format_, true); });
    ctx.scratch_bytes = std::max(ctx.scratch_bytes, SampleScratchBytes(sample_bytes_, ctx.in[0]->shape[0], rs.threads));
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_win_.out_size(), isz = g_win_.in_size();
    ForEachSample(n, rs.threads, [&](int64_t s, int threads, int worker) {
      float* cols = reinterpret_cast<float*>(SampleScratch(rs.scratch, sample_bytes_, worker));
      Im2Col(g_win_, x.f() + s * in_ * isz, in_, cols);
      kernels::CsrMatMul(w_->w, {cols, static_cast<std::size_t>(in_ * ksz_ * osz)}, osz, w_->bias,
                         {ctx.out[0]->f() + s * out_ * osz, static_cast<std::size_t>(out_ * osz)}, threads);
    });
  }

 private:
  int64_t in_, out_, ksz_ = 1, sample_bytes_ = 0;
  std::shared_ptr<const SparseDecoded> w_;
  WindowGeometry g_win_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateSparseKernel(const formats::FormatTraits& f, const NodeDef& n) {
  return CreateFormOp<SparseMatMulOp, SparseConvOp>(f, n);
}

}  // namespace permdnn::runtime::detail
