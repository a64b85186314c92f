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
//
// The arrays are validated and decoded once, when the node is first planned
// (a codebook becomes plain float values: the product is the same and the
// CSR kernels need no lookup). Kernels: kernels::CsrMatVec per sample (batch
// below kBatchedMin, or threads over samples), kernels::CsrMatMul on a
// feature-major copy of X for larger batches (SIMD over the batch); the conv
// is im2col followed by CsrMatMul with the output positions as the batch,
// which writes NCHW directly.
#include <algorithm>

#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/sparse.h"
#include "permdnn/kernels/table.h"
#include "runtime/compressed_formats.h"
#include "runtime/conv_util.h"
#include "runtime/ops_compressed.h"

namespace permdnn::runtime::detail {

namespace {

// From this batch on, transposing X and using the batched CSR kernel wins
// over one CsrMatVec per sample (measured in docs/runtime.md).
constexpr int64_t kBatchedMin = 8;

// Input k: a constant integer vector (int32 expected; int64 accepted).
const Value& IndexArray(OpContext& ctx, std::size_t k, const char* what) {
  const Value& v = ctx.Const(k, what);
  if (v.dtype != DType::kInt32 && v.dtype != DType::kInt64)
    ctx.Fail("{} '{}' must be int32 (int64 accepted), got {}", what, v.name, DTypeName(v.dtype));
  if (v.shape.size() != 1) ctx.Fail("{} '{}' must be 1-D, got shape {}", what, v.name, ShapeString(v.shape));
  return v;
}

// Reads and validates the CSR inputs 1..5 of a sparse node over a rows x cols
// weight.
CsrMatrix ReadSparse(OpContext& ctx, int64_t rows, int64_t cols, std::vector<float>* bias, int64_t* codebook_size) {
  const Value& rp = IndexArray(ctx, 1, "row_ptr");
  const Value& ci = IndexArray(ctx, 2, "col_idx");
  const Value& vals = ctx.Const(3, "values");
  if (vals.shape.size() != 1 || vals.size() != ci.size())
    ctx.Fail("values '{}' has shape {}, expected [nnz = {}] like col_idx '{}'", vals.name, ShapeString(vals.shape),
             ci.size(), ci.name);
  const std::string where = ctx.node->Where();
  std::vector<float> w;
  if (const Value* cb = ctx.In(5)) {
    const Value& c = ctx.Const(5, "codebook");
    if (!IsFloat(c.dtype) || c.shape.size() != 1)
      ctx.Fail("codebook '{}' must be a 1-D float32 tensor, got {} {}", cb->name, DTypeName(c.dtype),
               ShapeString(c.shape));
    if (vals.dtype != DType::kUInt8)
      ctx.Fail("with a codebook, input 3 '{}' must hold uint8 codes, got {}", vals.name, DTypeName(vals.dtype));
    w = DecodeCodebook(where, {vals.constant_data.i(), static_cast<std::size_t>(vals.size())},
                       {c.constant_data.f(), static_cast<std::size_t>(c.size())});
    *codebook_size = c.size();
  } else {
    if (!IsFloat(vals.dtype))
      ctx.Fail("values '{}' must be float32 (integer codes need a codebook input), got {}", vals.name,
               DTypeName(vals.dtype));
    w.assign(vals.constant_data.f(), vals.constant_data.f() + vals.size());
    *codebook_size = 0;
  }
  if (const Value* b = ctx.In(4)) {
    const Value& bc = ctx.Const(4, "bias");
    if (!IsFloat(bc.dtype) || bc.size() != rows || bc.shape.size() != 1)
      ctx.Fail("bias '{}' is {} {}, expected float32 [{}]", b->name, DTypeName(bc.dtype), ShapeString(bc.shape), rows);
    bias->assign(bc.constant_data.f(), bc.constant_data.f() + rows);
  }
  return MakeCsr(where, rows, cols, {rp.constant_data.i(), static_cast<std::size_t>(rp.size())},
                 {ci.constant_data.i(), static_cast<std::size_t>(ci.size())}, std::move(w));
}

class SparseMatMulOp : public OpKernel {
 public:
  explicit SparseMatMulOp(const NodeDef& n)
      : in_(RequirePositiveAttr(n, "in_features")), out_(RequirePositiveAttr(n, "out_features")) {}
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }
  std::string KernelName() const override {
    return kernels::SelectedKernel({batched_ ? kernels::KernelOp::kCsrMatMul : kernels::KernelOp::kCsrMatVec, 1,
                                    out_, in_, batch_, false});
  }

  void Prepare(OpContext& ctx) override {
    const Value* x = ctx.In(0);
    if (!x) ctx.Fail("missing input X");
    if (!IsFloat(x->dtype)) ctx.Fail("X must be float32, got {}", DTypeName(x->dtype));
    if (x->shape.empty() || x->shape.back() != in_)
      ctx.Fail("X has shape {}, its last dimension must be in_features = {}", ShapeString(x->shape), in_);
    if (!ready_) {
      int64_t k = 0;
      w_ = ReadSparse(ctx, out_, in_, &bias_, &k);
      ready_ = true;
    }
    batch_ = x->size() / in_;
    batched_ = batch_ >= kBatchedMin;
    std::vector<int64_t> out = x->shape;
    out.back() = out_;
    ctx.SetOut(0, DType::kFloat32, out);
    // Feature-major X and Y for the batched kernel.
    if (batched_) ctx.scratch_bytes = static_cast<int64_t>(sizeof(float)) * batch_ * (in_ + out_);
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const float* x = ctx.in[0]->f();
    float* y = ctx.out[0]->f();
    if (batched_) {
      float* xt = reinterpret_cast<float*>(rs.scratch);
      float* yt = xt + batch_ * in_;
      Transpose(x, batch_, in_, xt);
      kernels::CsrMatMul(w_, {xt, static_cast<std::size_t>(batch_ * in_)}, batch_, bias_,
                         {yt, static_cast<std::size_t>(batch_ * out_)}, rs.threads);
      Transpose(yt, out_, batch_, y);
      return;
    }
    auto rows = [&](int64_t begin, int64_t end, int threads) {
      for (int64_t b = begin; b < end; ++b)
        kernels::CsrMatVec(w_, {x + b * in_, static_cast<std::size_t>(in_)}, bias_,
                           {y + b * out_, static_cast<std::size_t>(out_)}, threads);
    };
    if (rs.threads > 1 && batch_ >= rs.threads)
      ParallelFor(batch_, rs.threads, [&](int64_t begin, int64_t end, int) { rows(begin, end, 1); });
    else
      rows(0, batch_, rs.threads);
  }

 private:
  // a [r][c] -> t [c][r], in tiles so both sides stay in cache.
  static void Transpose(const float* a, int64_t r, int64_t c, float* t) {
    constexpr int64_t kTile = 32;
    for (int64_t i0 = 0; i0 < r; i0 += kTile)
      for (int64_t j0 = 0; j0 < c; j0 += kTile)
        for (int64_t i = i0; i < std::min(r, i0 + kTile); ++i)
          for (int64_t j = j0; j < std::min(c, j0 + kTile); ++j) t[j * r + i] = a[i * c + j];
  }

  int64_t in_, out_, batch_ = 1;
  bool ready_ = false, batched_ = false;
  CsrMatrix w_;
  std::vector<float> bias_;
};

class SparseConvOp : public OpKernel {
 public:
  explicit SparseConvOp(const NodeDef& n)
      : n_(n), in_(RequirePositiveAttr(n, "in_channels")), out_(RequirePositiveAttr(n, "out_channels")) {
    if (n.Int("group", 1) != 1) throw UnsupportedError(n.Where() + ": SparseConv with group != 1");
    if (!n.Has("kernel_shape")) Fail("{}: missing attribute 'kernel_shape'", n.Where());
    kshape_ = n.Ints("kernel_shape");
    PERMDNN_CHECK(!kshape_.empty() && kshape_.size() <= 3, "{}: kernel_shape {} must have 1 to 3 dims", n.Where(),
                  ShapeString(kshape_));
    for (int64_t k : kshape_)
      PERMDNN_CHECK(k >= 1 && k <= 4096, "{}: kernel_shape {} must hold sizes in [1, 4096]", n.Where(),
                    ShapeString(kshape_));
    ksz_ = NumElements(kshape_);
  }
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }
  std::string KernelName() const override {
    return "im2col+" + kernels::SelectedKernel({kernels::KernelOp::kCsrMatMul, 1, out_, in_ * ksz_, 1, false});
  }

  void Prepare(OpContext& ctx) override {
    const Value* x = ctx.In(0);
    if (!x) ctx.Fail("missing input X");
    if (!IsFloat(x->dtype)) ctx.Fail("X must be float32, got {}", DTypeName(x->dtype));
    if (x->shape.size() != kshape_.size() + 2 || x->shape[1] != in_)
      ctx.Fail("X has shape {}, expected [N, in_channels={}, {} spatial dims]", ShapeString(x->shape), in_,
               kshape_.size());
    if (!ready_) {
      int64_t k = 0;
      w_ = ReadSparse(ctx, out_, in_ * ksz_, &bias_, &k);
      ready_ = true;
    }
    g_ = MakeWindowGeometry(ctx, x->shape, kshape_, n_, true);
    std::vector<int64_t> out = {x->shape[0], out_};
    out.insert(out.end(), g_.out_spatial.begin(), g_.out_spatial.end());
    ctx.SetOut(0, DType::kFloat32, out);
    ctx.scratch_bytes = static_cast<int64_t>(sizeof(float)) * in_ * ksz_ * g_.out_size();
  }

  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    const int64_t n = x.shape[0], osz = g_.out_size(), isz = g_.in_size();
    float* cols = reinterpret_cast<float*>(rs.scratch);
    for (int64_t s = 0; s < n; ++s) {
      Im2Col(g_, x.f() + s * in_ * isz, in_, cols);
      kernels::CsrMatMul(w_, {cols, static_cast<std::size_t>(in_ * ksz_ * osz)}, osz, bias_,
                         {ctx.out[0]->f() + s * out_ * osz, static_cast<std::size_t>(out_ * osz)}, rs.threads);
    }
  }

 private:
  const NodeDef& n_;
  int64_t in_, out_, ksz_ = 1;
  std::vector<int64_t> kshape_;
  bool ready_ = false;
  CsrMatrix w_;
  std::vector<float> bias_;
  WindowGeometry g_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateSparseKernel(const NodeDef& n) {
  if (n.op_type == "SparseMatMul") return std::make_unique<SparseMatMulOp>(n);
  if (n.op_type == "SparseConv") return std::make_unique<SparseConvOp>(n);
  return nullptr;
}

}  // namespace permdnn::runtime::detail
