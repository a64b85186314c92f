// PermDiagLinear / PermDiagConv2d (see permdiag_layers.h).
#include "src/train/permdiag_layers.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include <torch/autograd.h>
#include <torch/nn/functional.h>
#include <torch/utils.h>

#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/train/permdiag_grad.h"

// OpenBLAS (under LibTorch's dense ops): its own thread count.
extern "C" void openblas_set_num_threads(int);

namespace permdnn::train {

namespace {

std::atomic<int> g_threads{2};

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

PermDiagView<float> MakeView(const torch::Tensor& values, const torch::Tensor& offsets, int64_t rows,
                             int64_t cols) {
  PermDiagView<float> v;
  v.rows = rows;
  v.cols = cols;
  v.p = static_cast<int>(values.size(2));
  v.row_blocks = values.size(0);
  v.col_blocks = values.size(1);
  v.values = values.data_ptr<float>();
  // Offsets are < p <= 4096, so the int16 buffer reads the same as uint16.
  v.offsets = reinterpret_cast<const uint16_t*>(offsets.data_ptr<int16_t>());
  return v;
}

// Wᵀ of a permuted-diagonal W in canonical layout: block (J, I) gets offset
// (p − k) mod p and values q'[d] = q[(d − k) mod p]. m·n/p copies, threaded.
void TransposePermDiag(const PermDiagView<float>& w, float* values_t, int16_t* offsets_t) {
  const int p = w.p;
  const int64_t mb = w.row_blocks, nb = w.col_blocks;
  // 32×32-block tiles: a row of W's blocks is p·nb floats apart, so the
  // untiled loop missed the cache on nearly every block; it cost ~60 ms of a
  // ~170 ms training step at 4096², p = 8, batch 128 (permdnn_train_bench).
  constexpr int64_t kTile = 32;
  ParallelFor(CeilDiv(nb, kTile), TrainThreads(), [&](int64_t t0, int64_t t1, int) {
    for (int64_t jt = t0 * kTile; jt < std::min(nb, t1 * kTile); jt += kTile)
      for (int64_t it = 0; it < mb; it += kTile)
        for (int64_t I = it; I < std::min(mb, it + kTile); ++I)
          for (int64_t J = jt; J < std::min(nb, jt + kTile); ++J) {
            const int k = w.offset(I, J);
            const float* q = w.block(I, J);
            float* qt = values_t + (J * mb + I) * p;
            offsets_t[J * mb + I] = static_cast<int16_t>((p - k) % p);
            for (int d = 0; d < p; ++d) qt[d] = q[d >= k ? d - k : d - k + p];
          }
  });
}

bool UseReference() { return kernels::ActivePath() == kernels::KernelPath::kReference; }

// Batch-major throughout (LibTorch's layout, no transposes): forward
// Y = X·Wᵀ with kernels::simd::MatMulRows, input gradient G·W as MatMulRows
// on the repacked transpose, weight gradient PermDiagWeightGradRows.
struct PermDiagLinearFunction : public torch::autograd::Function<PermDiagLinearFunction> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor values, torch::Tensor offsets,
                               torch::Tensor bias, int64_t rows, int64_t cols) {
    const int64_t batch = x.size(0);
    torch::Tensor xc = x.contiguous();  // [B, cols]
    torch::Tensor y = torch::empty({batch, rows}, x.options());
    PermDiagView<float> w = MakeView(values, offsets, rows, cols);
    const bool has_bias = bias.numel() > 0;  // no bias: an empty tensor (see PermDiagLinearKernel)
    const float* b = has_bias ? bias.data_ptr<float>() : nullptr;
    if (UseReference()) {
      kernels::ref::MatMulRows(w, xc.data_ptr<float>(), batch, b, y.data_ptr<float>());
    } else {
      kernels::simd::MatMulRows(w, xc.data_ptr<float>(), batch, b, y.data_ptr<float>(), TrainThreads());
    }
    ctx->save_for_backward({xc, values, offsets});
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["cols"] = cols;
    ctx->saved_data["has_bias"] = has_bias;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& xc = saved[0];
    const torch::Tensor& values = saved[1];
    const torch::Tensor& offsets = saved[2];
    const int64_t rows = ctx->saved_data["rows"].toInt(), cols = ctx->saved_data["cols"].toInt();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    torch::Tensor grad = grads[0].contiguous();  // [B, rows]
    const int64_t batch = grad.size(0);
    PermDiagView<float> w = MakeView(values, offsets, rows, cols);
    torch::Tensor gx = torch::empty({batch, cols}, grad.options());
    torch::Tensor dq = torch::empty_like(values);
    if (UseReference()) {
      torch::Tensor gt = grad.t().contiguous(), xt = xc.t().contiguous();
      torch::Tensor gxt = torch::empty({cols, batch}, grad.options());
      kernels::ref::MatMulT(w, gt.data_ptr<float>(), batch, gxt.data_ptr<float>());
      gx.copy_(gxt.t());
      PermDiagWeightGradRef(w, gt.data_ptr<float>(), xt.data_ptr<float>(), batch, dq.data_ptr<float>());
    } else {
      // ∂L/∂x = G·W: Wᵀ is permuted-diagonal too (block (J, I) has offset
      // (p − k) mod p and values q'[d] = q[(d − k) mod p]); repacking it
      // (m·n/p copies) lets the register-blocked forward kernel do the work.
      torch::Tensor values_t = torch::empty({values.size(1), values.size(0), values.size(2)}, values.options());
      torch::Tensor offsets_t = torch::empty({offsets.size(1), offsets.size(0)}, offsets.options());
      TransposePermDiag(w, values_t.data_ptr<float>(), offsets_t.data_ptr<int16_t>());
      PermDiagView<float> wt = MakeView(values_t, offsets_t, cols, rows);
      kernels::simd::MatMulRows(wt, grad.data_ptr<float>(), batch, nullptr, gx.data_ptr<float>(), TrainThreads());
      PermDiagWeightGradRows(w, grad.data_ptr<float>(), xc.data_ptr<float>(), batch, dq.data_ptr<float>(),
                             TrainThreads());
    }
    torch::Tensor gbias = has_bias ? grad.sum(0) : torch::Tensor();
    return {gx, dq, torch::Tensor(), gbias, torch::Tensor(), torch::Tensor()};
  }
};

// Column index (into the padded input) of every stored value, [mb·nb·p].
torch::Tensor GatherColumns(const torch::Tensor& offsets, int p) {
  const int64_t mb = offsets.size(0), nb = offsets.size(1);
  torch::Tensor k = offsets.to(torch::kLong).view({mb, nb, 1});
  torch::Tensor c = torch::arange(p, torch::kLong).view({1, 1, p});
  torch::Tensor J = torch::arange(nb, torch::kLong).view({1, nb, 1});
  return (J * p + (c + k).remainder(p)).reshape({-1});
}

void CheckLinearArgs(const torch::Tensor& x, const torch::Tensor& values, const torch::Tensor& offsets,
                     int64_t rows, int64_t cols) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == cols, "PermDiagLinear: input must be [batch, ", cols, "], got ",
              x.sizes());
  TORCH_CHECK(x.scalar_type() == torch::kFloat, "PermDiagLinear: float32 input expected");
  TORCH_CHECK(values.dim() == 3 && values.is_contiguous(), "PermDiagLinear: values must be contiguous [mb, nb, p]");
  const int64_t p = values.size(2);
  TORCH_CHECK(values.size(0) == CeilDiv(rows, p) && values.size(1) == CeilDiv(cols, p),
              "PermDiagLinear: values ", values.sizes(), " do not fit ", rows, "x", cols, " at p=", p);
  TORCH_CHECK(offsets.scalar_type() == torch::kInt16 && offsets.is_contiguous() &&
                  offsets.sizes() == values.sizes().slice(0, 2),
              "PermDiagLinear: offsets must be contiguous int16 [mb, nb]");
}

}  // namespace

int TrainThreads() { return g_threads.load(); }
void SetTrainThreads(int threads) { g_threads.store(threads < 1 ? 1 : threads); }

void ConfigureTrainingThreads(int threads) {
  threads = std::max(1, threads);
  torch::set_num_threads(1);
  openblas_set_num_threads(threads);
  SetTrainThreads(threads);
}

torch::Tensor PermDiagLinearKernel(const torch::Tensor& x, const torch::Tensor& values, const torch::Tensor& offsets,
                                   const torch::Tensor& bias, int64_t rows, int64_t cols) {
  CheckLinearArgs(x, values, offsets, rows, cols);
  // LibTorch 1.13's Function::apply rejects an undefined tensor argument, so
  // "no bias" travels as an empty tensor (its gradient stays undefined).
  return PermDiagLinearFunction::apply(x, values, offsets, bias.defined() ? bias : torch::empty({0}, x.options()),
                                       rows, cols);
}

torch::Tensor PermDiagLinearGather(const torch::Tensor& x, const torch::Tensor& values, const torch::Tensor& offsets,
                                   const torch::Tensor& bias, int64_t rows, int64_t cols) {
  CheckLinearArgs(x, values, offsets, rows, cols);
  const int64_t mb = values.size(0), nb = values.size(1), p = values.size(2), batch = x.size(0);
  torch::Tensor xp = nb * p == cols ? x : torch::constant_pad_nd(x, {0, nb * p - cols});
  torch::Tensor xg = xp.index_select(1, GatherColumns(offsets, static_cast<int>(p))).view({batch, mb, nb, p});
  torch::Tensor y = (xg * values.unsqueeze(0)).sum(2).reshape({batch, mb * p});
  if (mb * p != rows) y = y.narrow(1, 0, rows);
  return bias.defined() ? y + bias : y;
}

torch::Tensor PermDiagToDense(const torch::Tensor& values, const torch::Tensor& offsets, int64_t rows,
                              int64_t cols) {
  const int64_t mb = values.size(0), nb = values.size(1), p = values.size(2);
  std::vector<int64_t> kernel(values.sizes().begin() + 3, values.sizes().end());
  int64_t kk = 1;
  for (int64_t v : kernel) kk *= v;
  torch::Tensor col = GatherColumns(offsets, static_cast<int>(p)).view({mb, nb * p});
  torch::Tensor row = (torch::arange(mb, torch::kLong).view({mb, 1, 1}) * p +
                       torch::arange(p, torch::kLong).view({1, 1, p}))
                          .expand({mb, nb, p})
                          .reshape({mb, nb * p});
  torch::Tensor flat = (row * (nb * p) + col).reshape({-1});
  torch::Tensor dense = torch::zeros({mb * p * nb * p, kk}, values.options())
                            .index_add(0, flat, values.reshape({-1, kk}));
  std::vector<int64_t> shape = {mb * p, nb * p};
  shape.insert(shape.end(), kernel.begin(), kernel.end());
  return dense.view(shape).narrow(0, 0, rows).narrow(1, 0, cols);
}

// ---- PermDiagLinear ---------------------------------------------------------

namespace {

// The seeded random permdiag matrix, in its shared-offset form when
// column_offsets.
PermDiagMatrix InitialMatrix(int64_t out, int64_t in, int p, uint64_t seed, bool column_offsets) {
  PermDiagMatrix m = PermDiagMatrix::Random(out, in, p, seed);
  return column_offsets ? m.WithColumnOffsets() : m;
}

}  // namespace

PermDiagLinearImpl::PermDiagLinearImpl(int64_t in, int64_t out, int p_, bool with_bias, uint64_t seed,
                                       bool column_offsets)
    : in_features(in), out_features(out), p(p_) {
  PERMDNN_CHECK(in >= 1 && out >= 1 && p_ >= 1, "PermDiagLinear: bad shape {}x{} or p={}", out, in, p_);
  const int64_t mb = CeilDiv(out, p_), nb = CeilDiv(in, p_);
  values = register_parameter("values", torch::zeros({mb, nb, p_}));
  offsets = register_buffer("offsets", torch::zeros({mb, nb}, torch::kInt16));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
  SetMatrix(InitialMatrix(out, in, p_, seed, column_offsets));
}

void PermDiagLinearImpl::SetMatrix(const PermDiagMatrix& m) {
  PERMDNN_CHECK(m.rows() == out_features && m.cols() == in_features && m.p() == p,
                "PermDiagLinear: matrix {}x{} p={} does not fit layer {}x{} p={}", m.rows(), m.cols(), m.p(),
                out_features, in_features, p);
  torch::NoGradGuard no_grad;
  std::memcpy(values.data_ptr<float>(), m.values().data(), m.values().size() * sizeof(float));
  int16_t* o = offsets.data_ptr<int16_t>();
  for (std::size_t i = 0; i < m.offsets().size(); ++i) o[i] = static_cast<int16_t>(m.offsets()[i]);
}

PermDiagMatrix PermDiagLinearImpl::Matrix() const {
  torch::Tensor v = values.detach().contiguous();
  std::vector<uint16_t> o(static_cast<std::size_t>(offsets.numel()));
  const int16_t* src = offsets.data_ptr<int16_t>();
  for (std::size_t i = 0; i < o.size(); ++i) o[i] = static_cast<uint16_t>(src[i]);
  return PermDiagMatrix::FromParts(out_features, in_features, p,
                                   std::span<const float>(v.data_ptr<float>(), v.numel()), o);
}

torch::Tensor PermDiagLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor in = x.dim() == 2 ? x : x.reshape({x.size(0), -1});
  if (use_gather) return PermDiagLinearGather(in, values, offsets, bias, out_features, in_features);
  return PermDiagLinearKernel(in, values, offsets, bias, out_features, in_features);
}

// ---- PermDiagConv2d ---------------------------------------------------------

PermDiagConv2dImpl::PermDiagConv2dImpl(int64_t in, int64_t out, int kernel_, int stride_, int padding_, int p_,
                                       bool with_bias, uint64_t seed, bool column_offsets)
    : in_channels(in), out_channels(out), kernel(kernel_), stride(stride_), padding(padding_), p(p_) {
  PERMDNN_CHECK(in >= 1 && out >= 1 && p_ >= 1 && kernel_ >= 1, "PermDiagConv2d: bad shape {}->{} k={} p={}", in,
                out, kernel_, p_);
  const int64_t mb = CeilDiv(out, p_), nb = CeilDiv(in, p_);
  // Offsets from the seeded permdiag generator; values He-normal on the real
  // fan-in ceil(in/p)·k·k, zero in padded positions.
  const PermDiagMatrix m = InitialMatrix(out, in, p_, seed, column_offsets);
  torch::Tensor off = torch::empty({mb, nb}, torch::kInt16);
  for (int64_t i = 0; i < mb * nb; ++i) off.data_ptr<int16_t>()[i] = static_cast<int16_t>(m.offsets()[i]);
  torch::Tensor mask = torch::zeros({mb, nb, p_, 1, 1});
  float* mk = mask.data_ptr<float>();
  for (int64_t I = 0; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J)
      for (int c = 0; c < p_; ++c)
        mk[(I * nb + J) * p_ + c] = (I * p_ + c < out && J * p_ + (c + m.offset(I, J)) % p_ < in) ? 1.0f : 0.0f;
  const double fan_in = static_cast<double>(nb) * kernel_ * kernel_;
  values = register_parameter("values", torch::randn({mb, nb, p_, kernel_, kernel_}) * std::sqrt(2.0 / fan_in) * mask);
  offsets = register_buffer("offsets", off);
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor PermDiagConv2dImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(x, DenseWeight(), bias, {stride, stride}, {padding, padding});
}

}  // namespace permdnn::train
