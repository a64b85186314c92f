// The ai.permdnn operators' creation and shared parts (ops_compressed.h).
#include "runtime/ops_compressed.h"

#include <algorithm>

#include "permdnn/core/thread_pool.h"
#include "runtime/ops_recurrent.h"

namespace permdnn::runtime::detail {

namespace {

// The registry reads a node's constant inputs through this.
class ContextSource : public formats::NodeSource {
 public:
  explicit ContextSource(const OpContext& ctx) : ctx_(ctx) {}
  std::string Where() const override { return ctx_.node->Where(); }
  const formats::Attributes& attributes() const override { return ctx_.node->attrs; }
  bool HasInput(int slot, const char*) const override { return ctx_.In(static_cast<std::size_t>(slot)) != nullptr; }
  formats::ArrayRef Input(int slot, const char* name) const override {
    const Value& v = ctx_.Const(static_cast<std::size_t>(slot), name);
    formats::ArrayRef a;
    a.name = v.name;
    a.dtype = static_cast<formats::ElemType>(static_cast<int>(v.dtype));  // both are ONNX codes
    a.shape = v.shape;
    const std::size_t n = static_cast<std::size_t>(v.size());
    if (IsFloat(v.dtype)) a.f = {v.constant_data->f(), n};
    else a.i = {v.constant_data->i(), n};  // every integer dtype is held as int64
    return a;
  }

 private:
  const OpContext& ctx_;
};

}  // namespace

formats::Weights ReadRecurrentWeights(const OpContext& ctx, const formats::FormatTraits& f, bool r_matrix,
                                      int64_t direction, int64_t directions, int64_t rows, int64_t cols) {
  return formats::ReadRecurrentMatrix(f, ContextSource(ctx), r_matrix, direction, directions, rows, cols);
}

std::unique_ptr<OpKernel> CreateCompressedKernel(const NodeDef& n) {
  formats::RecurrentCell cell{};
  if (const formats::FormatTraits* rf = formats::FindRecurrentFormat(n.domain, n.op_type, &cell))
    return CreateCompressedRecurrentKernel(*rf, cell, n);
  const formats::FormatTraits* f = formats::FindFormat(n.domain, n.op_type, [&](int slot) {
    return slot < static_cast<int>(n.inputs.size()) && n.inputs[slot] >= 0;
  }, false, &n.attrs);
  if (f == nullptr)
    throw UnsupportedError(n.Where() + ": unsupported operator '" + n.op_type + "' in domain " + formats::kDomain);
  switch (f->kind) {
    case formats::Kind::kPermDiag:
    case formats::Kind::kPermDiagColumn: return CreatePermDiagKernel(*f, n);
    case formats::Kind::kCirculant: return CreateCirculantKernel(*f, n);
    case formats::Kind::kCsr:
    case formats::Kind::kCsrCodebook:
    case formats::Kind::kCsrRelative: return CreateSparseKernel(*f, n);
    case formats::Kind::kTernary: return CreateTernaryKernel(*f, n);
    case formats::Kind::kDense: break;
  }
  throw UnsupportedError(n.Where() + ": no runtime op for format " + f->name);
}

formats::Weights ReadWeights(const OpContext& ctx, const formats::FormatTraits& f, bool conv) {
  return formats::ReadNode(f, conv, ContextSource(ctx));
}

int64_t PrepareLinear(OpContext& ctx, int64_t in, int64_t out) {
  const Value* x = ctx.In(0);
  if (!x) ctx.Fail("missing input X");
  if (!IsFloat(x->dtype)) ctx.Fail("X must be float32, got {}", DTypeName(x->dtype));
  if (x->shape.empty() || x->shape.back() != in)
    ctx.Fail("X has shape {}, its last dimension must be in_features = {}", ShapeString(x->shape), in);
  std::vector<int64_t> y = x->shape;
  y.back() = out;
  ctx.SetOut(0, DType::kFloat32, y);
  return x->size() / in;
}

void ForEachSample(int64_t batch, int threads, const std::function<void(int64_t, int, int)>& fn) {
  if (SampleWorkers(batch, threads) > 1) {
    ParallelFor(batch, threads, [&](int64_t begin, int64_t end, int worker) {
      for (int64_t b = begin; b < end; ++b) fn(b, 1, worker);
    });
    return;
  }
  for (int64_t b = 0; b < batch; ++b) fn(b, threads, 0);
}

int64_t SampleScratchBytes(int64_t sample_bytes, int64_t batch, int threads) {
  const int workers = SampleWorkers(batch, threads);
  return workers > 1 ? (sample_bytes + 63) / 64 * 64 * workers : sample_bytes;
}

uint8_t* SampleScratch(uint8_t* scratch, int64_t sample_bytes, int worker) {
  return scratch + (sample_bytes + 63) / 64 * 64 * worker;
}

void Transpose(const float* a, int64_t r, int64_t c, float* t) {
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < r; i0 += kTile)
    for (int64_t j0 = 0; j0 < c; j0 += kTile)
      for (int64_t i = i0; i < std::min(r, i0 + kTile); ++i)
        for (int64_t j = j0; j < std::min(c, j0 + kTile); ++j) t[j * r + i] = a[i * c + j];
}

int64_t LinearScratchBytes(int64_t batch, int64_t in, int64_t out) {
  return static_cast<int64_t>(sizeof(float)) * batch * (in + out);
}

void RunFeatureMajorLinear(OpContext& ctx, RunState& rs, int64_t batch, int64_t in, int64_t out, bool batched,
                           double work, const LinearMatMul& matmul, const LinearMatVec& matvec) {
  const float* x = ctx.in[0]->f();
  float* y = ctx.out[0]->f();
  const int threads = ThreadsForWork(work, rs.threads);
  if (batched) {
    float* xt = reinterpret_cast<float*>(rs.scratch);
    float* yt = xt + batch * in;
    Transpose(x, batch, in, xt);
    matmul({xt, static_cast<std::size_t>(batch * in)}, batch, {yt, static_cast<std::size_t>(batch * out)}, threads);
    Transpose(yt, out, batch, y);
    return;
  }
  ForEachSample(batch, threads, [&](int64_t b, int threads, int) {
    matvec({x + b * in, static_cast<std::size_t>(in)}, {y + b * out, static_cast<std::size_t>(out)}, threads);
  });
}

WindowGeometry PrepareConv(OpContext& ctx, int64_t in, int64_t out, const std::vector<int64_t>& kernel) {
  const Value* x = ctx.In(0);
  if (!x) ctx.Fail("missing input X");
  if (!IsFloat(x->dtype)) ctx.Fail("X must be float32, got {}", DTypeName(x->dtype));
  if (x->shape.size() != kernel.size() + 2 || x->shape[1] != in)
    ctx.Fail("X has shape {}, expected [N, in_channels={}, {} spatial dims]", ShapeString(x->shape), in,
             kernel.size());
  WindowGeometry g = MakeWindowGeometry(ctx, x->shape, kernel, *ctx.node, true);
  std::vector<int64_t> y = {x->shape[0], out};
  y.insert(y.end(), g.out_spatial.begin(), g.out_spatial.end());
  ctx.SetOut(0, DType::kFloat32, y);
  ctx.scratch_bytes = static_cast<int64_t>(sizeof(float)) * in * g.kernel_size() * g.out_size();
  return g;
}

}  // namespace permdnn::runtime::detail
