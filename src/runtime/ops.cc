// The dense ONNX operators of the runtime (float32 compute, int64 for shape
// arithmetic). PermDiag custom ops live in ops_permdiag.cc. Every Prepare
// validates shapes and fails naming the node; Run trusts them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>

#include <cblas.h>

#include "permdnn/core/thread_pool.h"
#include "runtime/conv_util.h"
#include "runtime/dnnl_util.h"
#include "runtime/graph.h"
#include "runtime/ops_compressed.h"
#include "runtime/ops_recurrent.h"

namespace permdnn::runtime::detail {

std::unique_ptr<OpKernel> CreateCnnKernel(const NodeDef& node);

[[noreturn]] void Unsupported(const OpContext& ctx, const std::string& what) {
  throw UnsupportedError(ctx.node->Where() + ": " + what);
}
[[noreturn]] void UnsupportedNode(const NodeDef& n, const std::string& what) {
  throw UnsupportedError(n.Where() + ": " + what);
}

void RequireFloat(const OpContext& ctx, const Value* v, const char* what) {
  if (!IsFloat(v->dtype))
    Unsupported(ctx, fmt::format("{} '{}' has dtype {}; this op computes in float32 only", what, v->name,
                                 DTypeName(v->dtype)));
}
const Value& Req(const OpContext& ctx, std::size_t k, const char* what) {
  const Value* v = ctx.In(k);
  if (!v) ctx.Fail("missing required input {} ({})", k, what);
  return *v;
}

namespace {

std::vector<int64_t> Strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int k = static_cast<int>(shape.size()) - 2; k >= 0; --k) s[k] = s[k + 1] * shape[k + 1];
  return s;
}

// ---- Elementwise binary with multidirectional broadcasting -----------------

enum class BinKind { kAdd, kSub, kMul, kDiv };

template <typename T>
inline T ApplyBin(BinKind k, T a, T b) {
  switch (k) {
    case BinKind::kAdd: return a + b;
    case BinKind::kSub: return a - b;
    case BinKind::kMul: return a * b;
    case BinKind::kDiv:
      if constexpr (std::is_integral_v<T>) return b == 0 ? T{0} : a / b;
      else return a / b;
  }
  return a;
}

// y = a (kind) b with multidirectional broadcasting; y has the broadcast
// shape (y may alias a when a has it).
template <typename T>
void ApplyBroadcast(BinKind kind, const T* pa, const std::vector<int64_t>& a_shape, const T* pb,
                    const std::vector<int64_t>& b_shape, T* py, const std::vector<int64_t>& y_shape) {
  const int64_t n = NumElements(y_shape);
  if (n == 0) return;
  const int64_t na = NumElements(a_shape), nb = NumElements(b_shape);
  if (na == n && nb == n) {
    for (int64_t i = 0; i < n; ++i) py[i] = ApplyBin<T>(kind, pa[i], pb[i]);
    return;
  }
  if (na == n && nb == 1) {
    const T s = pb[0];
    for (int64_t i = 0; i < n; ++i) py[i] = ApplyBin<T>(kind, pa[i], s);
    return;
  }
  if (nb == n && na == 1) {
    const T s = pa[0];
    for (int64_t i = 0; i < n; ++i) py[i] = ApplyBin<T>(kind, s, pb[i]);
    return;
  }
  // General: strides with 0 on broadcast dims, innermost loop on the last dim.
  const int r = static_cast<int>(y_shape.size());
  std::vector<int64_t> sa(r, 0), sb(r, 0);
  auto fill = [&](const std::vector<int64_t>& shp, std::vector<int64_t>& st) {
    const int off = r - static_cast<int>(shp.size());
    std::vector<int64_t> s = Strides(shp);
    for (int k = 0; k < static_cast<int>(shp.size()); ++k) st[off + k] = shp[k] == 1 ? 0 : s[k];
  };
  fill(a_shape, sa);
  fill(b_shape, sb);
  const int64_t inner = y_shape[r - 1];
  const int64_t outer = n / inner;
  const int64_t ia = sa[r - 1], ib = sb[r - 1];
  std::vector<int64_t> idx(r, 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t oa = 0, ob = 0;
    for (int k = 0; k < r - 1; ++k) {
      oa += idx[k] * sa[k];
      ob += idx[k] * sb[k];
    }
    T* row = py + o * inner;
    for (int64_t j = 0; j < inner; ++j) row[j] = ApplyBin<T>(kind, pa[oa + j * ia], pb[ob + j * ib]);
    for (int k = r - 2; k >= 0; --k) {
      if (++idx[k] < y_shape[k]) break;
      idx[k] = 0;
    }
  }
}

class BinaryOp : public OpKernel {
 public:
  explicit BinaryOp(BinKind k) : kind_(k) {}
  void Prepare(OpContext& ctx) override {
    const Value& a = Req(ctx, 0, "A");
    const Value& b = Req(ctx, 1, "B");
    if (IsFloat(a.dtype) != IsFloat(b.dtype))
      ctx.Fail("operand dtypes differ: {} vs {}", DTypeName(a.dtype), DTypeName(b.dtype));
    ctx.SetOut(0, a.dtype, BroadcastShapes(a.shape, b.shape, ctx));
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& a = *ctx.in[0];
    const Value& b = *ctx.in[1];
    Value& y = *ctx.out[0];
    if (IsFloat(y.dtype)) ApplyBroadcast<float>(kind_, a.f(), a.shape, b.f(), b.shape, y.f(), y.shape);
    else ApplyBroadcast<int64_t>(kind_, a.i(), a.shape, b.i(), b.shape, y.i(), y.shape);
  }
  std::string KernelName() const override { return "elementwise"; }

 private:
  BinKind kind_;
};

// ---- Elementwise unary (float) ---------------------------------------------

class UnaryOp : public OpKernel {
 public:
  using Fn = std::function<float(float)>;
  UnaryOp(Fn fn, bool relu) : fn_(std::move(fn)), relu_(relu) {}
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "X");
    RequireFloat(ctx, &x, "input");
    ctx.SetOut(0, x.dtype, x.shape);
  }
  void Run(OpContext& ctx, RunState&) override {
    const float* x = ctx.in[0]->f();
    float* y = ctx.out[0]->f();
    const int64_t n = ctx.out[0]->size();
    if (relu_) {
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0 ? x[i] : 0.0f;
    } else {
      for (int64_t i = 0; i < n; ++i) y[i] = fn_(x[i]);
    }
  }
  std::string KernelName() const override { return "elementwise"; }

 private:
  Fn fn_;
  bool relu_;
};

class ClipOp : public OpKernel {
 public:
  explicit ClipOp(const NodeDef& n) {
    if (n.opset < 11) {
      lo_ = n.Float("min", -std::numeric_limits<float>::infinity());
      hi_ = n.Float("max", std::numeric_limits<float>::infinity());
      from_inputs_ = false;
    }
  }
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "X");
    RequireFloat(ctx, &x, "input");
    if (from_inputs_) {
      lo_ = -std::numeric_limits<float>::infinity();
      hi_ = std::numeric_limits<float>::infinity();
      auto scalar = [&](std::size_t k, const char* what) {
        const std::vector<float> v = ctx.ConstFloats(k, what);
        if (v.size() != 1) ctx.Fail("{} must be a scalar, got {} elements", what, v.size());
        return v[0];
      };
      if (ctx.In(1)) lo_ = scalar(1, "min");
      if (ctx.In(2)) hi_ = scalar(2, "max");
    }
    ctx.SetOut(0, x.dtype, x.shape);
  }
  void Run(OpContext& ctx, RunState&) override {
    const float* x = ctx.in[0]->f();
    float* y = ctx.out[0]->f();
    for (int64_t i = 0, n = ctx.out[0]->size(); i < n; ++i) y[i] = std::min(std::max(x[i], lo_), hi_);
  }

 private:
  float lo_ = 0, hi_ = 0;
  bool from_inputs_ = true;
};

// ---- Data movement ----------------------------------------------------------

// Copies input 0 into output 0 with a new shape computed by `shape_fn`.
class CopyOp : public OpKernel {
 public:
  using ShapeFn = std::function<std::vector<int64_t>(OpContext&)>;
  explicit CopyOp(ShapeFn fn) : fn_(std::move(fn)) {}
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "data");
    std::vector<int64_t> shape = fn_(ctx);
    if (NumElements(shape) != x.size())
      ctx.Fail("output shape {} has {} elements, input {} has {}", ShapeString(shape), NumElements(shape),
               ShapeString(x.shape), x.size());
    ctx.SetOut(0, x.dtype, std::move(shape));
  }
  void Run(OpContext& ctx, RunState&) override {
    if (ctx.out[0]->data != ctx.in[0]->data) std::memcpy(ctx.out[0]->data, ctx.in[0]->data, ctx.in[0]->bytes());
  }
  std::string KernelName() const override { return "copy"; }

 private:
  ShapeFn fn_;
};

std::vector<int64_t> ReadAxes(OpContext& ctx, const NodeDef& n, std::size_t input) {
  if (n.opset < 13) return n.Ints("axes");
  if (!ctx.In(input)) return {};
  return ctx.ConstInts(input, "axes");
}

std::unique_ptr<OpKernel> MakeFlatten(const NodeDef& n) {
  const int64_t axis_attr = n.Int("axis", 1);
  return std::make_unique<CopyOp>([axis_attr](OpContext& ctx) {
    const auto& s = ctx.in[0]->shape;
    const int64_t r = static_cast<int64_t>(s.size());
    int64_t axis = axis_attr < 0 ? axis_attr + r : axis_attr;
    if (axis < 0 || axis > r) ctx.Fail("axis {} out of range for rank {}", axis_attr, r);
    int64_t a = 1, b = 1;
    for (int64_t k = 0; k < r; ++k) (k < axis ? a : b) *= s[k];
    return std::vector<int64_t>{a, b};
  });
}

std::unique_ptr<OpKernel> MakeReshape(const NodeDef& n) {
  const bool allow_zero = n.Int("allowzero", 0) != 0;
  const int opset = n.opset;
  std::vector<int64_t> attr_shape = n.Ints("shape");
  return std::make_unique<CopyOp>([=](OpContext& ctx) {
    std::vector<int64_t> target = attr_shape;
    if (opset >= 5) {
      const Value& s = ctx.Const(1, "shape");
      if (s.shape.size() != 1) ctx.Fail("shape input must be 1-D, got {}", ShapeString(s.shape));
      target = ctx.ConstInts(1, "shape");
    }
    const auto& in = ctx.in[0]->shape;
    int infer = -1;
    int64_t known = 1;
    for (std::size_t k = 0; k < target.size(); ++k) {
      if (target[k] == 0 && !allow_zero) {
        if (k >= in.size()) ctx.Fail("shape[{}] = 0 copies a dimension the input (rank {}) lacks", k, in.size());
        target[k] = in[k];
      }
      if (target[k] == -1) {
        if (infer >= 0) ctx.Fail("shape {} has more than one -1", ShapeString(target));
        infer = static_cast<int>(k);
      } else if (target[k] < 0) {
        ctx.Fail("shape {} has a negative dimension", ShapeString(target));
      } else if (__builtin_mul_overflow(known, target[k], &known)) {
        ctx.Fail("shape {} has more elements than an int64 counts", ShapeString(target));
      }
    }
    if (infer >= 0) {
      const int64_t total = NumElements(in);
      if (known == 0 || total % known != 0)
        ctx.Fail("cannot reshape {} to {}", ShapeString(in), ShapeString(target));
      target[infer] = total / known;
    }
    return target;
  });
}

std::unique_ptr<OpKernel> MakeSqueeze(const NodeDef& n) {
  return std::make_unique<CopyOp>([&n](OpContext& ctx) {
    const auto& in = ctx.in[0]->shape;
    const int64_t r = static_cast<int64_t>(in.size());
    std::vector<int64_t> axes = ReadAxes(ctx, n, 1);
    std::vector<bool> drop(r, false);
    if (axes.empty()) {
      for (int64_t k = 0; k < r; ++k) drop[k] = in[k] == 1;
    } else {
      for (int64_t a : axes) {
        int64_t k = NormalizeAxis(a, r, ctx);
        if (in[k] != 1) ctx.Fail("cannot squeeze axis {} of size {}", a, in[k]);
        drop[k] = true;
      }
    }
    std::vector<int64_t> out;
    for (int64_t k = 0; k < r; ++k)
      if (!drop[k]) out.push_back(in[k]);
    return out;
  });
}

std::unique_ptr<OpKernel> MakeUnsqueeze(const NodeDef& n) {
  return std::make_unique<CopyOp>([&n](OpContext& ctx) {
    const auto& in = ctx.in[0]->shape;
    std::vector<int64_t> axes = ReadAxes(ctx, n, 1);
    const int64_t r = static_cast<int64_t>(in.size() + axes.size());
    std::vector<bool> ins(r, false);
    for (int64_t a : axes) {
      int64_t k = NormalizeAxis(a, r, ctx);
      if (ins[k]) ctx.Fail("axis {} repeated", a);
      ins[k] = true;
    }
    std::vector<int64_t> out;
    std::size_t j = 0;
    for (int64_t k = 0; k < r; ++k) out.push_back(ins[k] ? 1 : in[j++]);
    return out;
  });
}

class IdentityOp : public CopyOp {
 public:
  IdentityOp() : CopyOp([](OpContext& ctx) { return ctx.in[0]->shape; }) {}
};

class DropoutOp : public IdentityOp {
 public:
  explicit DropoutOp(const NodeDef& n) {
    if (n.outputs.size() > 1 && n.outputs[1] >= 0) UnsupportedNode(n, "Dropout's mask output is not supported");
    if (n.opset < 7 && n.Int("is_test", 0) == 0) UnsupportedNode(n, "Dropout in training mode (is_test=0)");
  }
  void Prepare(OpContext& ctx) override {
    if (ctx.In(2)) {
      const std::vector<int64_t> t = ctx.ConstInts(2, "training_mode");
      if (t.size() != 1) ctx.Fail("training_mode must be a scalar, got {} elements", t.size());
      if (t[0] != 0) Unsupported(ctx, "Dropout with training_mode=true");
    }
    IdentityOp::Prepare(ctx);
  }
};

class CastOp : public OpKernel {
 public:
  explicit CastOp(const NodeDef& n) : to_(DTypeFromOnnx(static_cast<int>(n.Int("to", 1)), n.Where())) {}
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "input");
    ctx.SetOut(0, to_, x.shape);
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& x = *ctx.in[0];
    Value& y = *ctx.out[0];
    const int64_t n = x.size();
    if (IsFloat(x.dtype) && IsFloat(to_)) {
      std::memcpy(y.data, x.data, x.bytes());
    } else if (IsFloat(x.dtype)) {
      for (int64_t i = 0; i < n; ++i) y.i()[i] = Narrow(FloatToInt(x.f()[i]));
    } else if (IsFloat(to_)) {
      for (int64_t i = 0; i < n; ++i) y.f()[i] = static_cast<float>(x.i()[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) y.i()[i] = Narrow(x.i()[i]);
    }
  }

 private:
  static int64_t FloatToInt(float v) {
    if (std::isnan(v)) return 0;
    if (v >= 9.2e18f) return std::numeric_limits<int64_t>::max();
    if (v <= -9.2e18f) return std::numeric_limits<int64_t>::min();
    return static_cast<int64_t>(v);
  }
  int64_t Narrow(int64_t v) const {
    switch (to_) {
      case DType::kBool: return v != 0;
      case DType::kUInt8: return static_cast<uint8_t>(v);
      case DType::kInt8: return static_cast<int8_t>(v);
      case DType::kUInt16: return static_cast<uint16_t>(v);
      case DType::kInt16: return static_cast<int16_t>(v);
      case DType::kInt32: return static_cast<int32_t>(v);
      default: return v;
    }
  }
  DType to_;
};

// DequantizeLinear (opset 13): y = (x − zero_point) · scale, x an integer
// tensor, scale a scalar or 1-D along `axis` (per-channel), zero_point the
// same shape (absent: 0). permdnn writes it for `compress --portable` of
// ternary weights (int8 codes, scale per output channel); with constant
// inputs it is folded at load.
class DequantizeLinearOp : public OpKernel {
 public:
  explicit DequantizeLinearOp(const NodeDef& n) : axis_(n.Int("axis", 1)) {}
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "x");
    if (IsFloat(x.dtype)) ctx.Fail("x must be an integer tensor, got {}", DTypeName(x.dtype));
    const Value& scale = Req(ctx, 1, "x_scale");
    if (!IsFloat(scale.dtype)) ctx.Fail("x_scale must be float32, got {}", DTypeName(scale.dtype));
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    channels_ = scale.size();
    if (scale.shape.size() > 1) ctx.Fail("x_scale has shape {}, must be a scalar or 1-D", ShapeString(scale.shape));
    if (scale.shape.size() == 1 && channels_ != 1) {
      const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
      if (axis < 0 || axis >= rank) ctx.Fail("axis = {} is out of range for x of rank {}", axis_, rank);
      if (x.shape[axis] != channels_)
        ctx.Fail("x_scale has {} entries but x has shape {}: dimension axis={} must match", channels_,
                 ShapeString(x.shape), axis_);
      inner_ = 1;
      for (int64_t k = axis + 1; k < rank; ++k) inner_ *= x.shape[k];
    } else {
      channels_ = 1;
      inner_ = x.size();
    }
    if (const Value* zp = ctx.In(2)) {
      if (IsFloat(zp->dtype) || zp->size() != scale.size())
        ctx.Fail("x_zero_point must be an integer tensor shaped like x_scale ({} entries), got {} {}", scale.size(),
                 DTypeName(zp->dtype), ShapeString(zp->shape));
    }
    ctx.SetOut(0, DType::kFloat32, x.shape);
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& x = *ctx.in[0];
    const float* scale = ctx.in[1]->f();
    const Value* zp = ctx.In(2);
    float* y = ctx.out[0]->f();
    for (int64_t i = 0, n = x.size(); i < n; ++i) {
      const int64_t c = (i / inner_) % channels_;
      y[i] = static_cast<float>(x.i()[i] - (zp ? zp->i()[c] : 0)) * scale[c];
    }
  }

 private:
  int64_t axis_, channels_ = 1, inner_ = 1;
};

class ShapeOp : public OpKernel {
 public:
  explicit ShapeOp(const NodeDef& n) : start_(n.Int("start", 0)), end_(n.Int("end", INT64_MAX)) {}
  void Prepare(OpContext& ctx) override {
    const int64_t r = static_cast<int64_t>(Req(ctx, 0, "data").shape.size());
    auto clamp = [r](int64_t v) { return std::clamp(v < 0 ? v + r : v, int64_t{0}, r); };
    s_ = clamp(start_);
    e_ = std::max(s_, clamp(end_));
    ctx.SetOut(0, DType::kInt64, {e_ - s_});
  }
  void Run(OpContext& ctx, RunState&) override {
    for (int64_t k = s_; k < e_; ++k) ctx.out[0]->i()[k - s_] = ctx.in[0]->shape[k];
  }
  bool ShapeOnly() const override { return true; }

 private:
  int64_t start_, end_, s_ = 0, e_ = 0;
};

class ConstantOp : public OpKernel {
 public:
  explicit ConstantOp(const NodeDef& n) {
    if (n.Has("value")) {
      t_ = n.TensorAttr("value");
    } else if (n.Has("value_float")) {
      float v = n.Float("value_float", 0);
      t_ = Tensor::Float({}, {&v, 1});
    } else if (n.Has("value_floats")) {
      auto v = n.Floats("value_floats");
      t_ = Tensor::Float({static_cast<int64_t>(v.size())}, v);
    } else if (n.Has("value_int")) {
      int64_t v = n.Int("value_int", 0);
      t_ = Tensor::Int64({}, {&v, 1});
    } else if (n.Has("value_ints")) {
      auto v = n.Ints("value_ints");
      t_ = Tensor::Int64({static_cast<int64_t>(v.size())}, v);
    } else {
      UnsupportedNode(n, "Constant without value / value_float(s) / value_int(s)");
    }
  }
  void Prepare(OpContext& ctx) override { ctx.SetOut(0, t_.dtype(), t_.shape()); }
  void Run(OpContext& ctx, RunState&) override { std::memcpy(ctx.out[0]->data, t_.raw(), t_.bytes()); }

 private:
  Tensor t_;
};

class ConstantOfShapeOp : public OpKernel {
 public:
  explicit ConstantOfShapeOp(const NodeDef& n) {
    if (n.Has("value")) t_ = n.TensorAttr("value");
    else t_ = Tensor(DType::kFloat32, {1});
    if (t_.size() != 1) UnsupportedNode(n, "value must have one element");
  }
  void Prepare(OpContext& ctx) override {
    const std::vector<int64_t> shape = ctx.ConstInts(0, "shape");
    for (int64_t d : shape)
      if (d < 0) ctx.Fail("negative dimension in {}", ShapeString(shape));
    ctx.SetOut(0, t_.dtype(), shape);
  }
  void Run(OpContext& ctx, RunState&) override {
    Value& y = *ctx.out[0];
    if (IsFloat(y.dtype)) std::fill_n(y.f(), y.size(), t_.f()[0]);
    else std::fill_n(y.i(), y.size(), t_.i()[0]);
  }

 private:
  Tensor t_;
};

// Expand: the input broadcast to a shape (PyTorch exports the zero initial
// states of nn.LSTM / nn.GRU / nn.RNN as ConstantOfShape → Expand).
class ExpandOp : public OpKernel {
 public:
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "input");
    const std::vector<int64_t> shape = ctx.ConstInts(1, "shape");
    for (int64_t d : shape)
      if (d < 0) ctx.Fail("negative dimension in shape {}", ShapeString(shape));
    ctx.SetOut(0, x.dtype, BroadcastShapes(x.shape, shape, ctx));
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& x = *ctx.in[0];
    Value& y = *ctx.out[0];
    if (IsFloat(y.dtype)) {
      const float zero = 0;
      ApplyBroadcast<float>(BinKind::kAdd, x.f(), x.shape, &zero, {}, y.f(), y.shape);
    } else {
      const int64_t zero = 0;
      ApplyBroadcast<int64_t>(BinKind::kAdd, x.i(), x.shape, &zero, {}, y.i(), y.shape);
    }
  }
  std::string KernelName() const override { return "copy"; }
};

class GatherOp : public OpKernel {
 public:
  explicit GatherOp(const NodeDef& n) : axis_attr_(n.Int("axis", 0)) {}
  void Prepare(OpContext& ctx) override {
    const Value& d = Req(ctx, 0, "data");
    const Value& idx = Req(ctx, 1, "indices");
    if (IsFloat(idx.dtype)) ctx.Fail("indices must be integer, got {}", DTypeName(idx.dtype));
    const int64_t r = static_cast<int64_t>(d.shape.size());
    if (r == 0) ctx.Fail("data must have rank >= 1");
    axis_ = NormalizeAxis(axis_attr_, r, ctx);
    std::vector<int64_t> out(d.shape.begin(), d.shape.begin() + axis_);
    out.insert(out.end(), idx.shape.begin(), idx.shape.end());
    out.insert(out.end(), d.shape.begin() + axis_ + 1, d.shape.end());
    ctx.SetOut(0, d.dtype, out);
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& d = *ctx.in[0];
    const Value& idx = *ctx.in[1];
    const std::size_t es = StorageBytes(d.dtype);
    int64_t outer = 1, inner = 1;
    for (int64_t k = 0; k < axis_; ++k) outer *= d.shape[k];
    for (std::size_t k = axis_ + 1; k < d.shape.size(); ++k) inner *= d.shape[k];
    const int64_t dim = d.shape[axis_], ni = idx.size();
    const auto* src = static_cast<const uint8_t*>(d.data);
    auto* dst = static_cast<uint8_t*>(ctx.out[0]->data);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < ni; ++j) {
        int64_t k = idx.i()[j];
        if (k < 0) k += dim;
        if (k < 0 || k >= dim) ctx.Fail("index {} out of range [-{}, {})", idx.i()[j], dim, dim);
        std::memcpy(dst + ((o * ni + j) * inner) * es, src + ((o * dim + k) * inner) * es, inner * es);
      }
  }

 private:
  int64_t axis_attr_, axis_ = 0;
};

class ConcatOp : public OpKernel {
 public:
  explicit ConcatOp(const NodeDef& n) : axis_attr_(n.Int("axis", 0)) {
    if (!n.Has("axis") && n.opset >= 4) UnsupportedNode(n, "Concat needs the axis attribute");
  }
  void Prepare(OpContext& ctx) override {
    const Value& a = Req(ctx, 0, "inputs");
    const int64_t r = static_cast<int64_t>(a.shape.size());
    axis_ = NormalizeAxis(axis_attr_, r, ctx);
    std::vector<int64_t> out = a.shape;
    out[axis_] = 0;
    for (std::size_t k = 0; k < ctx.in.size(); ++k) {
      const Value* v = ctx.in[k];
      if (!v) ctx.Fail("input {} is empty", k);
      if (v->shape.size() != a.shape.size() || IsFloat(v->dtype) != IsFloat(a.dtype))
        ctx.Fail("input {} is {} {}, input 0 is {} {}", k, DTypeName(v->dtype), ShapeString(v->shape),
                 DTypeName(a.dtype), ShapeString(a.shape));
      for (int64_t d = 0; d < r; ++d)
        if (d != axis_ && v->shape[d] != a.shape[d])
          ctx.Fail("input {} has shape {}, input 0 {} (only axis {} may differ)", k, ShapeString(v->shape),
                   ShapeString(a.shape), axis_);
      out[axis_] += v->shape[axis_];
    }
    ctx.SetOut(0, a.dtype, out);
  }
  // Along channels in a channels-last or blocked layout (blocked: every
  // input's channels a multiple of the block, so the chunks stay whole).
  bool WritesLayout(const OpContext& ctx, std::size_t, const Layout& layout) const override {
    return ChannelConcat(ctx, layout);
  }
  bool ReadsLayout(const OpContext& ctx, std::size_t, const Layout& layout) const override {
    return ChannelConcat(ctx, layout);
  }
  void Finalize(OpContext& ctx, const RunState&) override {
    const Value& y = *ctx.out[0];
    convert_.assign(ctx.in.size(), LayoutConverter());
    offsets_.assign(ctx.in.size(), -1);
    int64_t scratch = 0;
    for (std::size_t k = 0; k < ctx.in.size(); ++k) {
      const Value& v = *ctx.in[k];
      if (v.layout == y.layout) continue;
      convert_[k].Init(v.shape, v.layout, y.layout);
      offsets_[k] = scratch;
      scratch += (static_cast<int64_t>(y.layout.StoredElements(v.shape) * sizeof(float)) + 63) / 64 * 64;
      pad_ = std::max(pad_, convert_[k].scratchpad_bytes());
    }
    pad_offset_ = scratch;
    ctx.scratch_bytes = scratch + pad_;
  }
  void Run(OpContext& ctx, RunState& rs) override {
    Value& y = *ctx.out[0];
    const std::size_t es = StorageBytes(y.dtype);
    // [outer, axis · inner] rows; channels-last: [N·spatial, C]; blocked: [N, C·spatial].
    int64_t outer = 1, inner = 1;
    for (int64_t k = 0; k < axis_; ++k) outer *= y.shape[k];
    for (std::size_t k = axis_ + 1; k < y.shape.size(); ++k) inner *= y.shape[k];
    if (y.layout.kind == LayoutKind::kChannelsLast) {
      outer *= inner;
      inner = 1;
    }
    auto* dst = static_cast<uint8_t*>(y.data);
    const int64_t row = y.shape[axis_] * inner;  // elements of y per outer index
    // Input k fills elements [at_k, at_k + chunk_k) of every row of y.
    std::vector<const uint8_t*> src(ctx.in.size());
    std::vector<int64_t> at(ctx.in.size() + 1, 0);
    for (std::size_t k = 0; k < ctx.in.size(); ++k) {
      const Value* v = ctx.in[k];
      src[k] = static_cast<const uint8_t*>(v->data);
      if (offsets_.size() == ctx.in.size() && offsets_[k] >= 0) {
        float* staged = reinterpret_cast<float*>(rs.scratch + offsets_[k]);
        convert_[k].Run(v->f(), staged, rs.scratch + pad_offset_);
        src[k] = reinterpret_cast<const uint8_t*>(staged);
      }
      at[k + 1] = at[k] + v->shape[axis_] * inner;
    }
    // y's elements [e0, e1) in order: each piece is a run of one input's
    // chunk in one row. Large copies are split into equal ranges of y over
    // the threads (memory-bound: one thread does not reach the bandwidth).
    auto copy = [&](int64_t e0, int64_t e1) {
      while (e0 < e1) {
        const int64_t o = e0 / row, in_row = e0 % row;
        std::size_t k = 0;
        while (at[k + 1] <= in_row) ++k;
        const int64_t chunk = at[k + 1] - at[k], from = in_row - at[k];
        const int64_t len = std::min(e1 - e0, chunk - from);
        std::memcpy(dst + e0 * es, src[k] + (o * chunk + from) * es, len * es);
        e0 += len;
      }
    };
    const int64_t total = outer * row;
    const int parts = static_cast<int>(
        std::min<int64_t>(rs.threads, std::max<int64_t>(1, total * static_cast<int64_t>(es) / kParallelCopyBytes)));
    if (parts <= 1) return copy(0, total);
    ParallelFor(parts, parts, [&](int64_t c0, int64_t c1, int) {
      for (int64_t c = c0; c < c1; ++c) copy(total * c / parts, total * (c + 1) / parts);
    });
  }

 private:
  // Bytes per thread below which another thread costs more than it saves.
  static constexpr int64_t kParallelCopyBytes = 256 << 10;
  bool ChannelConcat(const OpContext& ctx, const Layout& layout) const {
    if (axis_ != 1 || !IsFloat(ctx.out[0]->dtype) || ctx.out[0]->shape.size() < 3) return false;
    if (layout.kind == LayoutKind::kChannelsLast) return true;
    if (layout.kind != LayoutKind::kBlocked) return false;
    for (const Value* v : ctx.in)
      if (v->shape[1] % layout.block != 0) return false;
    return true;
  }
  int64_t axis_attr_, axis_ = 0;
  std::vector<LayoutConverter> convert_;
  std::vector<int64_t> offsets_;
  int64_t pad_ = 0, pad_offset_ = 0;
};

// Generic strided copy: out[i...] = in[start + i·step ...] per dim.
void StridedCopy(const uint8_t* src, uint8_t* dst, std::size_t es, const std::vector<int64_t>& in_strides,
                 const std::vector<int64_t>& start, const std::vector<int64_t>& step,
                 const std::vector<int64_t>& out_shape) {
  const int r = static_cast<int>(out_shape.size());
  const int64_t n = NumElements(out_shape);
  if (n == 0) return;
  if (r == 0) {
    std::memcpy(dst, src, es);
    return;
  }
  std::vector<int64_t> idx(r, 0);
  int64_t base = 0;
  for (int k = 0; k < r; ++k) base += start[k] * in_strides[k];
  // Where the innermost output axis walks the input contiguously (a Slice
  // with step 1 on it, a Transpose that keeps the last axis), each output row
  // is one memcpy. Copied one element at a time, the batch-first LSTM's
  // input transpose ([1, 32, 600]) took 83 µs, 9% of a p = 8 PermDiagLSTM
  // run at the NT-LSTM shape.
  const int64_t row = step[r - 1] * in_strides[r - 1] == 1 ? out_shape[r - 1] : 1;
  const int inner = row > 1 ? r - 1 : r;  // the axes walked one index at a time
  for (int64_t o = 0; o < n; o += row) {
    int64_t off = base;
    for (int k = 0; k < inner; ++k) off += idx[k] * step[k] * in_strides[k];
    std::memcpy(dst + o * es, src + off * es, es * static_cast<std::size_t>(row));
    for (int k = inner - 1; k >= 0; --k) {
      if (++idx[k] < out_shape[k]) break;
      idx[k] = 0;
    }
  }
}

class SliceOp : public OpKernel {
 public:
  explicit SliceOp(const NodeDef& n) : n_(n) {}
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "data");
    const int64_t r = static_cast<int64_t>(x.shape.size());
    std::vector<int64_t> starts, ends, axes, steps;
    auto ints = [&](std::size_t k, const char* what) { return ctx.ConstInts(k, what); };
    if (n_.opset < 10) {
      starts = n_.Ints("starts");
      ends = n_.Ints("ends");
      axes = n_.Ints("axes");
    } else {
      starts = ints(1, "starts");
      ends = ints(2, "ends");
      if (ctx.In(3)) axes = ints(3, "axes");
      if (ctx.In(4)) steps = ints(4, "steps");
    }
    if (axes.empty())
      for (std::size_t k = 0; k < starts.size(); ++k) axes.push_back(static_cast<int64_t>(k));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (starts.size() != ends.size() || axes.size() != starts.size() || steps.size() != starts.size())
      ctx.Fail("starts/ends/axes/steps lengths differ ({}/{}/{}/{})", starts.size(), ends.size(), axes.size(),
               steps.size());
    start_.assign(r, 0);
    step_.assign(r, 1);
    std::vector<int64_t> out = x.shape;
    for (std::size_t k = 0; k < axes.size(); ++k) {
      const int64_t a = NormalizeAxis(axes[k], r, ctx);
      const int64_t dim = x.shape[a];
      const int64_t st = steps[k];
      if (st == 0) ctx.Fail("step 0 on axis {}", a);
      int64_t s = starts[k], e = ends[k];
      if (s < 0) s += dim;
      if (e < 0) e += dim;
      if (st > 0) {
        s = std::clamp(s, int64_t{0}, dim);
        e = std::clamp(e, int64_t{0}, dim);
      } else {
        s = std::clamp(s, int64_t{0}, dim - 1);
        e = std::clamp(e, int64_t{-1}, dim - 1);
      }
      int64_t count = st > 0 ? (e - s + st - 1) / st : (s - e + (-st) - 1) / (-st);
      out[a] = std::max<int64_t>(0, count);
      start_[a] = s;
      step_[a] = st;
    }
    ctx.SetOut(0, x.dtype, out);
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& x = *ctx.in[0];
    StridedCopy(static_cast<const uint8_t*>(x.data), static_cast<uint8_t*>(ctx.out[0]->data),
                StorageBytes(x.dtype), Strides(x.shape), start_, step_, ctx.out[0]->shape);
  }

 private:
  const NodeDef& n_;
  std::vector<int64_t> start_, step_;
};

class TransposeOp : public OpKernel {
 public:
  explicit TransposeOp(const NodeDef& n) : perm_attr_(n.Ints("perm")) {}
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "data");
    const int64_t r = static_cast<int64_t>(x.shape.size());
    perm_ = perm_attr_;
    if (perm_.empty())
      for (int64_t k = r - 1; k >= 0; --k) perm_.push_back(k);
    std::vector<int64_t> sorted = perm_;
    std::sort(sorted.begin(), sorted.end());
    // (the size check first: a rank-0 input with a non-empty perm has no k)
    bool permutation = static_cast<int64_t>(sorted.size()) == r;
    for (int64_t k = 0; permutation && k < r; ++k) permutation = sorted[k] == k;
    if (!permutation)
      ctx.Fail("perm {} is not a permutation of the input's {} axes", ShapeString(perm_), r);
    std::vector<int64_t> out(r);
    for (int64_t k = 0; k < r; ++k) out[k] = x.shape[perm_[k]];
    ctx.SetOut(0, x.dtype, out);
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& x = *ctx.in[0];
    const std::vector<int64_t> s = Strides(x.shape);
    std::vector<int64_t> ps(perm_.size());
    for (std::size_t k = 0; k < perm_.size(); ++k) ps[k] = s[perm_[k]];
    StridedCopy(static_cast<const uint8_t*>(x.data), static_cast<uint8_t*>(ctx.out[0]->data),
                StorageBytes(x.dtype), ps, std::vector<int64_t>(perm_.size(), 0),
                std::vector<int64_t>(perm_.size(), 1), ctx.out[0]->shape);
  }

 private:
  std::vector<int64_t> perm_attr_, perm_;
};

// ---- Softmax ----------------------------------------------------------------

class SoftmaxOp : public OpKernel {
 public:
  SoftmaxOp(const NodeDef& n, bool log) : log_(log), legacy_(n.opset < 13), axis_attr_(n.Int("axis", n.opset < 13 ? 1 : -1)) {}
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "input");
    RequireFloat(ctx, &x, "input");
    const int64_t r = static_cast<int64_t>(x.shape.size());
    const int64_t axis = r == 0 ? 0 : NormalizeAxis(axis_attr_, r, ctx);
    outer_ = 1, dim_ = 1, inner_ = 1;
    for (int64_t k = 0; k < r; ++k) {
      if (k < axis) outer_ *= x.shape[k];
      else if (k == axis || legacy_) dim_ *= x.shape[k];
      else inner_ *= x.shape[k];
    }
    ctx.SetOut(0, x.dtype, x.shape);
  }
  void Run(OpContext& ctx, RunState&) override {
    const float* x = ctx.in[0]->f();
    float* y = ctx.out[0]->f();
    for (int64_t o = 0; o < outer_; ++o)
      for (int64_t i = 0; i < inner_; ++i) {
        const float* xs = x + o * dim_ * inner_ + i;
        float* ys = y + o * dim_ * inner_ + i;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t d = 0; d < dim_; ++d) mx = std::max(mx, xs[d * inner_]);
        double sum = 0;
        for (int64_t d = 0; d < dim_; ++d) sum += std::exp(static_cast<double>(xs[d * inner_] - mx));
        if (log_) {
          const double ls = std::log(sum);
          for (int64_t d = 0; d < dim_; ++d) ys[d * inner_] = static_cast<float>(xs[d * inner_] - mx - ls);
        } else {
          for (int64_t d = 0; d < dim_; ++d)
            ys[d * inner_] = static_cast<float>(std::exp(static_cast<double>(xs[d * inner_] - mx)) / sum);
        }
      }
  }

 private:
  bool log_, legacy_;
  int64_t axis_attr_, outer_ = 1, dim_ = 1, inner_ = 1;
};

// ---- Gemm / MatMul (OpenBLAS) -------------------------------------------------

class GemmOp : public OpKernel {
 public:
  explicit GemmOp(const NodeDef& n)
      : alpha_(n.Float("alpha", 1)), beta_(n.Float("beta", 1)), ta_(n.Int("transA", 0)), tb_(n.Int("transB", 0)) {}
  void Prepare(OpContext& ctx) override {
    const Value& a = Req(ctx, 0, "A");
    const Value& b = Req(ctx, 1, "B");
    RequireFloat(ctx, &a, "A");
    RequireFloat(ctx, &b, "B");
    if (a.shape.size() != 2 || b.shape.size() != 2)
      ctx.Fail("A and B must be 2-D, got {} and {}", ShapeString(a.shape), ShapeString(b.shape));
    m_ = ta_ ? a.shape[1] : a.shape[0];
    k_ = ta_ ? a.shape[0] : a.shape[1];
    const int64_t kb = tb_ ? b.shape[1] : b.shape[0];
    n_ = tb_ ? b.shape[0] : b.shape[1];
    if (k_ != kb) ctx.Fail("inner dimensions differ: A {} (transA={}) vs B {} (transB={})", ShapeString(a.shape), ta_,
                           ShapeString(b.shape), tb_);
    if (const Value* c = ctx.In(2)) {
      RequireFloat(ctx, c, "C");
      std::vector<int64_t> bs = BroadcastShapes({m_, n_}, c->shape, ctx);
      if (bs != std::vector<int64_t>{m_, n_})
        ctx.Fail("C {} does not broadcast to [{}, {}]", ShapeString(c->shape), m_, n_);
    }
    ctx.SetOut(0, DType::kFloat32, {m_, n_});
  }
  // Fast path: oneDNN's inner product (3x OpenBLAS's sgemm at 16 rows,
  // e.g. 16x784x1024: 0.13 vs 0.36 ms, one thread), for y = A·op(B) + bias
  // with B and the bias constant (a fully connected layer). Threads split
  // the work one of two ways, one single-threaded primitive per chunk (see
  // ops_cnn.cc):
  //  - rows (the batch): each thread reads the whole weight matrix; used when
  //    there are at least as many rows as output features;
  //  - output features (fewer rows than features, e.g. B=16 through a
  //    1024-wide layer): each thread holds its own slice of the weights, so
  //    the weight traffic per thread halves; the slice's outputs go to the
  //    chunk's scratch and are copied into their columns.
  void Finalize(OpContext& ctx, const RunState& rs) override {
    fast_ = false;
    const Value& b = *ctx.in[1];
    const Value* c = ctx.In(2);
    const bool bias_ok = !c || (c->constant && c->size() == n_ && (c->shape.size() == 1 || c->shape[0] == 1));
    if (rs.reference || ta_ || alpha_ != 1.0f || !b.constant || !bias_ok || m_ == 0 || n_ == 0 || k_ == 0) return;
    // One sample: OpenBLAS's sgemv (Run) is as fast as oneDNN's inner
    // product on large layers and 3-5x faster on small ones, where the
    // primitive's fixed cost dominates (Fashion-MNIST mlp at B=1, one thread,
    // Zen 5: 1024x1024 48.6 vs 50.4 us, 10x1024 0.6-0.9 vs 2.7-4.2 us).
    if (m_ == 1) return;
    try {
      SetDnnlThreads(1);
      if (bias_.empty()) {
        bias_.assign(static_cast<std::size_t>(n_), 0.0f);
        if (c && beta_ != 0)
          for (int64_t j = 0; j < n_; ++j) bias_[j] = beta_ * c->f()[j];
      }
      const double work = static_cast<double>(m_) * n_ * k_;
      const int64_t max_chunks = ThreadsForWork(work, rs.threads);
      by_features_ = max_chunks > 1 && m_ < n_ && n_ >= 64 * max_chunks;
      split_ = by_features_ ? RowSplit{m_, 1, m_} : BatchSplitRows(m_, work, static_cast<int>(max_chunks));
      const int64_t col_chunks = by_features_ ? max_chunks : 1;
      using tag = dnnl::memory::format_tag;
      const auto f32 = dnnl::memory::data_type::f32;
      // The previous plan's executions keep their reordered weights: a new
      // batch size re-plans, and a slice whose layout is unchanged is reused.
      const std::vector<Exec> prev = std::move(execs_);
      execs_.clear();
      std::vector<Exec> execs;
      int64_t pad = 0;
      for (int64_t cc = 0; cc < col_chunks; ++cc) {
        int64_t j0 = 0, j1 = n_;
        if (by_features_) {  // slices of whole 16-feature groups; the last takes the remainder
          ChunkRange(n_ / 16, static_cast<int>(col_chunks), static_cast<int>(cc), &j0, &j1);
          j0 *= 16;
          j1 = cc + 1 == col_chunks ? n_ : j1 * 16;
        }
        const int64_t nc = j1 - j0;
        for (int64_t rows : {split_.first, split_.last}) {
          if (execs.size() > static_cast<std::size_t>(cc) && execs.back().rows == rows) break;
          dnnl::memory::desc src({rows, k_}, f32, tag::ab), wd({nc, k_}, f32, tag::any), bd({nc}, f32, tag::a),
              dst({rows, nc}, f32, tag::ab);
          dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, src, wd, bd, dst);
          dnnl::inner_product_forward::primitive_desc pd(d, UserScratchpadAttr(), DnnlEngine());
          if (IsReferenceImpl(pd)) return;
          Exec e{rows, j0, nc, dnnl::inner_product_forward(pd), src, dst, pd.scratchpad_desc(), {}, {}};
          // The weights of the slice, reordered once into the primitive's layout.
          const Exec* same = nullptr;
          for (const std::vector<Exec>* list : {static_cast<const std::vector<Exec>*>(&execs), &prev})
            for (const Exec& o : *list)
              if (!same && o.col0 == j0 && o.w.get_desc() == pd.weights_desc()) same = &o;
          if (same) {
            e.w = same->w, e.b = same->b;
          } else {
            // B's [nc, k] slice: rows j0.. of B (transB=1) or columns j0.. of B (transB=0).
            dnnl::memory::desc plain_d({nc, k_}, f32, tb_ ? dnnl::memory::dims{k_, 1} : dnnl::memory::dims{1, n_});
            const float* src_w = b.f() + (tb_ ? j0 * k_ : j0);
            dnnl::memory plain(plain_d, DnnlEngine(), const_cast<float*>(src_w));
            e.w = dnnl::memory(pd.weights_desc(), DnnlEngine());
            dnnl::reorder(plain, e.w).execute(DnnlStream(), plain, e.w);
            DnnlStream().wait();
            e.b = dnnl::memory(bd, DnnlEngine(), bias_.data() + j0);
          }
          execs.push_back(std::move(e));
          // Per chunk: oneDNN's scratchpad, then (features split) the slice's outputs at the next 64-byte line.
          int64_t bytes = (static_cast<int64_t>(pd.scratchpad_desc().get_size()) + 63) / 64 * 64;
          if (by_features_) bytes += rows * nc * static_cast<int64_t>(sizeof(float));
          pad = std::max<int64_t>(pad, (bytes + 63) / 64 * 64);
        }
      }
      execs_ = std::move(execs);
      pad_ = pad;
      ctx.scratch_bytes = pad * (by_features_ ? col_chunks : split_.count);
      fast_ = true;
    } catch (const dnnl::error&) {
      fast_ = false;
    }
  }
  std::string KernelName() const override { return fast_ ? "dense-onednn" : "dense-blas"; }

  void Run(OpContext& ctx, RunState& rs) override {
    if (fast_) return RunDnnl(ctx, rs);
    float* y = ctx.out[0]->f();
    float beta = 0;
    if (const Value* c = ctx.In(2); c && beta_ != 0) {
      const int r = static_cast<int>(c->shape.size());
      const int64_t cm = r == 2 ? c->shape[0] : 1, cn = r >= 1 ? c->shape[r - 1] : 1;
      for (int64_t i = 0; i < m_; ++i)
        for (int64_t j = 0; j < n_; ++j) y[i * n_ + j] = beta_ * c->f()[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
      beta = 1;
    }
    if (k_ == 0) {
      if (beta == 0) std::fill_n(y, m_ * n_, 0.0f);
      return;
    }
    // Threads split the output columns (OpenBLAS itself runs on one thread:
    // its idle threads spin, and on a busy machine a spinning thread took the
    // core its partner needed; see Model::Impl::Execute). Each chunk gets at
    // least kMinParallelWork multiply-adds.
    const float* a = ctx.in[0]->f();
    const float* b = ctx.in[1]->f();
    const int64_t lda = ctx.in[0]->shape[1], ldb = ctx.in[1]->shape[1];
    const int64_t chunks = std::max<int64_t>(
        1, std::min<int64_t>(ThreadsForWork(static_cast<double>(m_) * n_ * k_, rs.threads), n_ / 16));
    auto columns = [&](int64_t j0, int64_t j1) {
      const int64_t nc = j1 - j0;
      const float* bj = tb_ ? b + j0 * ldb : b + j0;
      if (m_ == 1) {  // one sample: OpenBLAS's sgemm runs a row this short far below sgemv's speed
        if (tb_) cblas_sgemv(CblasRowMajor, CblasNoTrans, nc, k_, alpha_, bj, ldb, a, 1, beta, y + j0, 1);
        else cblas_sgemv(CblasRowMajor, CblasTrans, k_, nc, alpha_, bj, ldb, a, ta_ ? lda : 1, beta, y + j0, 1);
        return;
      }
      cblas_sgemm(CblasRowMajor, ta_ ? CblasTrans : CblasNoTrans, tb_ ? CblasTrans : CblasNoTrans, m_, nc, k_, alpha_, a,
                  lda, bj, ldb, beta, y + j0, n_);
    };
    if (chunks == 1) return columns(0, n_);
    ParallelFor(chunks, static_cast<int>(chunks), [&](int64_t c0, int64_t c1, int) {
      for (int64_t c = c0; c < c1; ++c) {
        int64_t j0, j1;
        ChunkRange(n_, static_cast<int>(chunks), static_cast<int>(c), &j0, &j1);
        columns(j0, j1);
      }
    });
  }

 private:
  // Rows [c·first, ...) per chunk; the last chunk has `last` rows.
  struct RowSplit {
    int64_t first = 1, count = 1, last = 1;
  };
  static RowSplit BatchSplitRows(int64_t rows, double work, int threads) {
    const int64_t t = std::max<int64_t>(1, std::min<int64_t>(ThreadsForWork(work, threads), rows));
    RowSplit r;
    r.first = (rows + t - 1) / t;
    r.count = (rows + r.first - 1) / r.first;
    r.last = rows - (r.count - 1) * r.first;
    return r;
  }
  void RunDnnl(OpContext& ctx, RunState& rs) {
    SetDnnlThreads(1);
    const float* a = ctx.in[0]->f();
    float* y = ctx.out[0]->f();
    auto execute = [&](const Exec& e, const float* src, float* dst, uint8_t* pad) {
      dnnl::memory sm(e.src, DnnlEngine(), const_cast<float*>(src)), dm(e.dst, DnnlEngine(), dst),
          pm(e.pad, DnnlEngine(), pad);
      e.prim.execute(DnnlStream(), {{DNNL_ARG_SRC, sm},
                                    {DNNL_ARG_WEIGHTS, e.w},
                                    {DNNL_ARG_BIAS, e.b},
                                    {DNNL_ARG_DST, dm},
                                    {DNNL_ARG_SCRATCHPAD, pm}});
      DnnlStream().wait();
    };
    auto chunk = [&](int64_t c) {
      uint8_t* pad = rs.scratch + c * pad_;
      if (by_features_) {  // the slice's outputs into scratch, then into their columns of y
        const Exec& e = execs_[static_cast<std::size_t>(c)];
        float* out = reinterpret_cast<float*>(pad + (e.pad.get_size() + 63) / 64 * 64);
        execute(e, a, out, pad);
        for (int64_t i = 0; i < m_; ++i) std::copy_n(out + i * e.cols, e.cols, y + i * n_ + e.col0);
        return;
      }
      const int64_t r0 = c * split_.first, rows = c + 1 < split_.count ? split_.first : split_.last;
      const Exec& e = rows == execs_[0].rows ? execs_[0] : execs_[1];
      execute(e, a + r0 * k_, y + r0 * n_, pad);
    };
    const int64_t chunks = by_features_ ? static_cast<int64_t>(execs_.size()) : split_.count;
    if (chunks == 1) return chunk(0);
    ParallelFor(chunks, static_cast<int>(chunks), [&](int64_t c0, int64_t c1, int) {
      SetDnnlThreads(1);
      for (int64_t c = c0; c < c1; ++c) chunk(c);
    });
  }

  struct Exec {
    int64_t rows, col0, cols;  // batch rows; output features [col0, col0 + cols)
    dnnl::inner_product_forward prim;
    dnnl::memory::desc src, dst, pad;
    dnnl::memory w, b;
  };
  float alpha_, beta_;
  int64_t ta_, tb_, m_ = 0, n_ = 0, k_ = 0;
  bool fast_ = false, by_features_ = false;
  std::vector<float> bias_;
  std::vector<Exec> execs_;
  RowSplit split_;
  int64_t pad_ = 0;
};

class MatMulOp : public OpKernel {
 public:
  void Prepare(OpContext& ctx) override {
    const Value& a = Req(ctx, 0, "A");
    const Value& b = Req(ctx, 1, "B");
    RequireFloat(ctx, &a, "A");
    RequireFloat(ctx, &b, "B");
    if (a.shape.empty() || b.shape.empty()) ctx.Fail("MatMul operands must have rank >= 1");
    std::vector<int64_t> as = a.shape, bs = b.shape;
    const bool a1 = as.size() == 1, b1 = bs.size() == 1;
    if (a1) as.insert(as.begin(), 1);
    if (b1) bs.push_back(1);
    m_ = as[as.size() - 2];
    k_ = as.back();
    n_ = bs.back();
    if (bs[bs.size() - 2] != k_)
      ctx.Fail("inner dimensions differ: {} x {}", ShapeString(a.shape), ShapeString(b.shape));
    std::vector<int64_t> ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
    batch_ = BroadcastShapes(ab, bb, ctx);
    // Per output batch index, the offsets into A and B.
    const int64_t nb = NumElements(batch_);
    a_off_.assign(nb, 0);
    b_off_.assign(nb, 0);
    const int r = static_cast<int>(batch_.size());
    auto strides = [&](const std::vector<int64_t>& s, int64_t mat) {
      std::vector<int64_t> st(r, 0);
      int64_t acc = mat;
      for (int k = static_cast<int>(s.size()) - 1; k >= 0; --k) {
        st[r - static_cast<int>(s.size()) + k] = s[k] == 1 ? 0 : acc;
        acc *= s[k];
      }
      return st;
    };
    std::vector<int64_t> sa = strides(ab, m_ * k_), sb = strides(bb, k_ * n_), idx(r, 0);
    for (int64_t o = 0; o < nb; ++o) {
      for (int k = 0; k < r; ++k) {
        a_off_[o] += idx[k] * sa[k];
        b_off_[o] += idx[k] * sb[k];
      }
      for (int k = r - 1; k >= 0; --k) {
        if (++idx[k] < batch_[k]) break;
        idx[k] = 0;
      }
    }
    std::vector<int64_t> out = batch_;
    if (!a1) out.push_back(m_);
    if (!b1) out.push_back(n_);
    ctx.SetOut(0, DType::kFloat32, out);
  }
  void Run(OpContext& ctx, RunState&) override {
    const float* a = ctx.in[0]->f();
    const float* b = ctx.in[1]->f();
    float* y = ctx.out[0]->f();
    for (std::size_t o = 0; o < a_off_.size(); ++o) {
      float* yo = y + o * m_ * n_;
      if (k_ == 0) {
        std::fill_n(yo, m_ * n_, 0.0f);
        continue;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m_, n_, k_, 1.0f, a + a_off_[o], k_, b + b_off_[o], n_,
                  0.0f, yo, n_);
    }
  }
  std::string KernelName() const override { return "dense-blas"; }

 private:
  int64_t m_ = 0, n_ = 0, k_ = 0;
  std::vector<int64_t> batch_, a_off_, b_off_;
};

}  // namespace

void AddBroadcastInPlace(float* y, const std::vector<int64_t>& y_shape, const float* b,
                         const std::vector<int64_t>& b_shape, const OpContext&) {
  ApplyBroadcast<float>(BinKind::kAdd, y, y_shape, b, b_shape, y, y_shape);
}

std::unique_ptr<OpKernel> CreateKernel(const NodeDef& n) {
  if (IsPermDnnDomain(n.domain)) return CreateCompressedKernel(n);
  if (!n.domain.empty() && n.domain != "ai.onnx")
    throw UnsupportedError(n.Where() + ": unsupported operator domain '" + n.domain + "'");
  const std::string& op = n.op_type;
  auto unary = [](float (*f)(float)) { return std::make_unique<UnaryOp>(f, false); };
  if (op == "Add") return std::make_unique<BinaryOp>(BinKind::kAdd);
  if (op == "Sub") return std::make_unique<BinaryOp>(BinKind::kSub);
  if (op == "Mul") return std::make_unique<BinaryOp>(BinKind::kMul);
  if (op == "Div") return std::make_unique<BinaryOp>(BinKind::kDiv);
  if (op == "Relu") return std::make_unique<UnaryOp>(nullptr, true);
  if (op == "Sigmoid") return unary([](float v) { return 1.0f / (1.0f + std::exp(-v)); });
  if (op == "Tanh") return unary([](float v) { return std::tanh(v); });
  if (op == "Neg") return unary([](float v) { return -v; });
  if (op == "Abs") return unary([](float v) { return std::fabs(v); });
  if (op == "Exp") return unary([](float v) { return std::exp(v); });
  if (op == "Log") return unary([](float v) { return std::log(v); });
  if (op == "Sqrt") return unary([](float v) { return std::sqrt(v); });
  if (op == "Reciprocal") return unary([](float v) { return 1.0f / v; });
  if (op == "Floor") return unary([](float v) { return std::floor(v); });
  if (op == "Ceil") return unary([](float v) { return std::ceil(v); });
  if (op == "LeakyRelu") {
    const float a = n.Float("alpha", 0.01f);
    return std::make_unique<UnaryOp>([a](float v) { return v < 0 ? a * v : v; }, false);
  }
  if (op == "Elu") {
    const float a = n.Float("alpha", 1.0f);
    return std::make_unique<UnaryOp>([a](float v) { return v < 0 ? a * (std::exp(v) - 1.0f) : v; }, false);
  }
  if (op == "Clip") return std::make_unique<ClipOp>(n);
  if (op == "Identity") return std::make_unique<IdentityOp>();
  if (op == "Dropout") return std::make_unique<DropoutOp>(n);
  if (op == "Flatten") return MakeFlatten(n);
  if (op == "Reshape") return MakeReshape(n);
  if (op == "Squeeze") return MakeSqueeze(n);
  if (op == "Unsqueeze") return MakeUnsqueeze(n);
  if (op == "Cast") return std::make_unique<CastOp>(n);
  if (op == "DequantizeLinear") return std::make_unique<DequantizeLinearOp>(n);
  if (op == "Shape") return std::make_unique<ShapeOp>(n);
  if (op == "Constant") return std::make_unique<ConstantOp>(n);
  if (op == "ConstantOfShape") return std::make_unique<ConstantOfShapeOp>(n);
  if (op == "Gather") return std::make_unique<GatherOp>(n);
  if (op == "Expand") return std::make_unique<ExpandOp>();
  if (op == "Concat") return std::make_unique<ConcatOp>(n);
  if (op == "Slice") return std::make_unique<SliceOp>(n);
  if (op == "Transpose") return std::make_unique<TransposeOp>(n);
  if (op == "Softmax") return std::make_unique<SoftmaxOp>(n, false);
  if (op == "LogSoftmax") return std::make_unique<SoftmaxOp>(n, true);
  if (auto k = CreateCnnKernel(n)) return k;
  if (auto k = CreateRecurrentKernel(n)) return k;
  if (op == "Gemm") return std::make_unique<GemmOp>(n);
  if (op == "MatMul") return std::make_unique<MatMulOp>();
  throw UnsupportedError(n.Where() + ": unsupported operator '" + op + "'");
}

}  // namespace permdnn::runtime::detail
