// Block-circulant layers (see circulant_layers.h).
#include "src/train/circulant_layers.h"

#include <cmath>

#include <fmt/ranges.h>
#include <torch/fft.h>
#include <torch/nn/functional.h>

#include "permdnn/core/error.h"

namespace permdnn::train {

torch::Tensor CirculantLinearFft(const torch::Tensor& x, const torch::Tensor& values, const torch::Tensor& bias,
                                 int64_t rows, int64_t cols, bool real_gemm) {
  PERMDNN_CHECK(values.dim() == 3, "CirculantLinearFft: values must be [mb, nb, p]");
  const int64_t mb = values.size(0), nb = values.size(1), p = values.size(2);
  PERMDNN_CHECK(x.dim() == 2 && x.size(1) == cols, "CirculantLinearFft: input [{}] does not have {} features",
                fmt::join(x.sizes(), ", "), cols);
  const int64_t batch = x.size(0);
  torch::Tensor xp = nb * p == cols ? x : torch::constant_pad_nd(x, {0, nb * p - cols});
  torch::Tensor xf = torch::fft::rfft(xp.reshape({batch, nb, p}), p, -1);  // [B, nb, F]
  torch::Tensor wf = torch::fft::rfft(values, p, -1);                         // [mb, nb, F]
  // y_f[B, mb] = x_f[B, nb] · w_f[mb, nb]ᵀ for every frequency f.
  torch::Tensor yf;
  if (!real_gemm) {
    yf = torch::matmul(xf.permute({2, 0, 1}), wf.permute({2, 1, 0})).permute({1, 2, 0});  // [B, mb, F]
  } else {
    // The same product as one real batched GEMM per frequency:
    // [A | B]·[[Cᵀ, Dᵀ], [−Dᵀ, Cᵀ]] = [ACᵀ − BDᵀ | ADᵀ + BCᵀ] for x_f = A + iB,
    // w_f = C + iD.
    torch::Tensor xp_f = xf.permute({2, 0, 1});                                      // [F, B, nb]
    torch::Tensor xcat = torch::cat({torch::real(xp_f), torch::imag(xp_f)}, 2);      // [F, B, 2nb]
    torch::Tensor wp_f = wf.permute({2, 1, 0});                                      // [F, nb, mb]
    torch::Tensor c = torch::real(wp_f), d = torch::imag(wp_f);
    torch::Tensor m = torch::cat({torch::cat({c, d}, 2), torch::cat({-d, c}, 2)}, 1);  // [F, 2nb, 2mb]
    torch::Tensor y2 = torch::bmm(xcat, m);                                          // [F, B, 2mb]
    yf = torch::complex(y2.narrow(2, 0, mb), y2.narrow(2, mb, mb)).permute({1, 2, 0});  // [B, mb, F]
  }
  torch::Tensor y = torch::fft::irfft(yf, p, -1).reshape({batch, mb * p});
  if (mb * p != rows) y = y.narrow(1, 0, rows);
  return bias.defined() ? y + bias : y;
}

torch::Tensor CirculantDenseIndex(int64_t rows, int64_t cols, int p) {
  const int64_t nb = CeilDiv(cols, p);
  // index[r, s] = flat position of w_IJ[(c − d) mod p] for r = I·p + c, s = J·p + d.
  torch::Tensor index = torch::empty({rows * cols}, torch::kLong);
  int64_t* ix = index.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < cols; ++s) ix[r * cols + s] = ((r / p) * nb + s / p) * p + ((r % p - s % p) % p + p) % p;
  return index;
}

torch::Tensor CirculantToDense(const torch::Tensor& values, int64_t rows, int64_t cols, const torch::Tensor& index) {
  PERMDNN_CHECK(values.dim() >= 3, "CirculantToDense: values must be [mb, nb, p, ...]");
  const int64_t mb = values.size(0), nb = values.size(1), p = values.size(2);
  PERMDNN_CHECK(mb * p >= rows && nb * p >= cols && (mb - 1) * p < rows && (nb - 1) * p < cols,
                "CirculantToDense: values [{}] do not fit a {}x{} matrix", fmt::join(values.sizes(), ", "), rows, cols);
  std::vector<int64_t> trailing(values.sizes().begin() + 3, values.sizes().end());
  int64_t kk = 1;
  for (int64_t d : trailing) kk *= d;
  std::vector<int64_t> shape = {rows, cols};
  shape.insert(shape.end(), trailing.begin(), trailing.end());
  return values.reshape({mb * nb * p, kk}).index_select(0, index.defined() ? index : CirculantDenseIndex(rows, cols, static_cast<int>(p)))
      .reshape(shape);
}

BlockCirculantLinearImpl::BlockCirculantLinearImpl(int64_t in, int64_t out, int p_, bool with_bias)
    : in_features(in), out_features(out), p(p_) {
  PERMDNN_CHECK(in >= 1 && out >= 1 && p_ >= 1, "BlockCirculantLinear: bad shape {}->{} p={}", in, out, p_);
  values = register_parameter("values",
                              torch::randn({CeilDiv(out, p_), CeilDiv(in, p_), p_}) * std::sqrt(2.0 / in));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor BlockCirculantLinearImpl::forward(const torch::Tensor& x) {
  if (use_dense) {
    if (!dense_index_.defined()) dense_index_ = CirculantDenseIndex(out_features, in_features, p);
    return torch::nn::functional::linear(x, CirculantToDense(values, out_features, in_features, dense_index_), bias);
  }
  return CirculantLinearFft(x, values, bias, out_features, in_features, real_gemm);
}

void BlockCirculantLinearImpl::SetMatrix(const BlockCirculantMatrix& m) {
  PERMDNN_CHECK(m.rows() == out_features && m.cols() == in_features && m.p() == p,
                "BlockCirculantLinear::SetMatrix: {}x{} p={} into a {}x{} p={} layer", m.rows(), m.cols(), m.p(),
                out_features, in_features, p);
  torch::NoGradGuard no_grad;
  torch::Tensor src = torch::from_blob(const_cast<float*>(m.values().data()), values.sizes(), torch::kFloat);
  values.copy_(src);
}

BlockCirculantMatrix BlockCirculantLinearImpl::Matrix() const {
  torch::Tensor v = values.detach().contiguous();
  return BlockCirculantMatrix::FromParts(out_features, in_features, p,
                                         std::span<const float>(v.data_ptr<float>(), v.numel()));
}

BlockCirculantConv2dImpl::BlockCirculantConv2dImpl(int64_t in, int64_t out, int kernel_, int stride_, int padding_,
                                                   int p_, bool with_bias)
    : in_channels(in), out_channels(out), kernel(kernel_), stride(stride_), padding(padding_), p(p_) {
  PERMDNN_CHECK(in >= 1 && out >= 1 && p_ >= 1 && kernel_ >= 1, "BlockCirculantConv2d: bad shape {}->{} k={} p={}",
                in, out, kernel_, p_);
  const double fan_in = static_cast<double>(in) * kernel_ * kernel_;
  values = register_parameter("values", torch::randn({CeilDiv(out, p_), CeilDiv(in, p_), p_, kernel_, kernel_}) *
                                            std::sqrt(2.0 / fan_in));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor BlockCirculantConv2dImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(x, DenseWeight(), bias, {stride, stride}, {padding, padding});
}

}  // namespace permdnn::train
