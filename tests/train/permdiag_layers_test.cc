// PermDiagLinear / PermDiagConv2d: forward and gradients against the dense
// reconstruction (autograd) and finite differences, the weight-gradient
// kernel against its reference, padding that never trains.
#include <cmath>
#include <tuple>

#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/nn/functional.h>

#include "permdnn/kernels/dispatch.h"
#include "permdnn/train/permdiag_grad.h"
#include "src/train/permdiag_layers.h"
#include "support/compare.h"

namespace permdnn::train {
namespace {

std::span<const float> Span(const torch::Tensor& t) { return {t.data_ptr<float>(), static_cast<size_t>(t.numel())}; }

// Normalized mean squared error of a against b.
double Nmse(const torch::Tensor& a, const torch::Tensor& b) {
  double num = (a - b).pow(2).sum().item<double>(), den = b.pow(2).sum().item<double>();
  return den > 0 ? num / den : num;
}

struct Shape {
  int64_t rows, cols;
};

// One test per p (shapes and batches looped inside: each ctest case is a
// process that loads LibTorch, so fewer, larger cases keep ctest fast).
constexpr Shape kShapes[] = {{16, 16}, {13, 10}, {7, 21}, {33, 65}};
constexpr int64_t kBatches[] = {1, 32};

class LinearGrad : public ::testing::TestWithParam<int> {};

void CheckDenseAutograd(int p, Shape shape, int64_t batch) {
  SCOPED_TRACE(::testing::Message() << "p=" << p << " " << shape.rows << "x" << shape.cols << " batch " << batch);
  torch::manual_seed(7);
  PermDiagLinear layer(shape.cols, shape.rows, p, true, 11);
  {
    torch::NoGradGuard ng;
    layer->bias.normal_();
  }
  torch::Tensor x = torch::randn({batch, shape.cols});
  torch::Tensor r = torch::randn({batch, shape.rows});  // loss = Σ y·r

  for (bool gather : {false, true}) {
    layer->use_gather = gather;
    layer->zero_grad();
    torch::Tensor xa = x.clone().requires_grad_(true);
    torch::Tensor y = layer->forward(xa);
    (y * r).sum().backward();
    torch::Tensor gv = layer->values.grad().clone(), gb = layer->bias.grad().clone(), gx = xa.grad().clone();

    // The oracle: autograd through the dense reconstruction.
    torch::Tensor v = layer->values.detach().clone().requires_grad_(true);
    torch::Tensor b = layer->bias.detach().clone().requires_grad_(true);
    torch::Tensor xd = x.clone().requires_grad_(true);
    torch::Tensor yd = torch::nn::functional::linear(xd, PermDiagToDense(v, layer->offsets, shape.rows, shape.cols), b);
    (yd * r).sum().backward();

    const std::string what = gather ? "gather" : "kernels";
    EXPECT_LT(Nmse(y.detach().contiguous(), yd.detach()), 1e-10) << what;
    EXPECT_LT(Nmse(gx, xd.grad()), 1e-10) << what;
    EXPECT_LT(Nmse(gv, v.grad()), 1e-10) << what;
    EXPECT_LT(Nmse(gb, b.grad()), 1e-10) << what;

    // Padded values (row >= rows or column >= cols) get exactly zero gradient.
    const int64_t mb = layer->values.size(0), nb = layer->values.size(1);
    const int16_t* off = layer->offsets.data_ptr<int16_t>();
    double padded_grad = 0;
    for (int64_t I = 0; I < mb; ++I)
      for (int64_t J = 0; J < nb; ++J)
        for (int c = 0; c < p; ++c)
          if (I * p + c >= shape.rows || J * p + (c + off[I * nb + J]) % p >= shape.cols)
            padded_grad += std::fabs(gv[I][J][c].item<double>());
    EXPECT_EQ(padded_grad, 0.0) << what;
  }
}

void CheckFiniteDifferences(int p, Shape shape, int64_t batch) {
  SCOPED_TRACE(::testing::Message() << "p=" << p << " " << shape.rows << "x" << shape.cols << " batch " << batch);
  torch::manual_seed(3);
  PermDiagLinear layer(shape.cols, shape.rows, p, true, 5);
  torch::Tensor x = torch::randn({batch, shape.cols}).requires_grad_(true);
  torch::Tensor r = torch::randn({batch, shape.rows});
  // A nonlinear loss so the check is not trivially exact: Σ tanh(y)·r.
  auto loss = [&] { return (torch::tanh(layer->forward(x)) * r).sum(); };
  loss().backward();
  torch::Tensor gv = layer->values.grad().clone(), gx = x.grad().clone();
  torch::NoGradGuard ng;
  const double h = 1e-2;
  float* v = layer->values.data_ptr<float>();
  const int64_t n = layer->values.numel();
  for (int64_t i : {int64_t{0}, n / 3, n / 2, n - 1}) {
    const float saved = v[i];
    v[i] = saved + h;
    double lp = loss().item<double>();
    v[i] = saved - h;
    double lm = loss().item<double>();
    v[i] = saved;
    double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(gv.data_ptr<float>()[i], fd, 2e-2 * (1 + std::fabs(fd))) << "value " << i;
  }
  float* xs = x.data_ptr<float>();
  for (int64_t i : {int64_t{0}, x.numel() - 1}) {
    const float saved = xs[i];
    xs[i] = saved + h;
    double lp = loss().item<double>();
    xs[i] = saved - h;
    double lm = loss().item<double>();
    xs[i] = saved;
    double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(gx.data_ptr<float>()[i], fd, 2e-2 * (1 + std::fabs(fd))) << "input " << i;
  }
}

TEST_P(LinearGrad, MatchesDenseAutograd) {
  for (Shape s : kShapes)
    for (int64_t b : kBatches) CheckDenseAutograd(GetParam(), s, b);
}

TEST_P(LinearGrad, FiniteDifferences) {
  for (Shape s : kShapes)
    for (int64_t b : kBatches) CheckFiniteDifferences(GetParam(), s, b);
}

INSTANTIATE_TEST_SUITE_P(P, LinearGrad, ::testing::Values(1, 2, 4, 8));

TEST(PermDiagLinear, ReferenceKernelsAgree) {
  torch::manual_seed(1);
  PermDiagLinear layer(37, 29, 4, true, 2);
  torch::Tensor x = torch::randn({5, 37}).requires_grad_(true);
  torch::Tensor r = torch::randn({5, 29});
  auto run = [&] {
    layer->zero_grad();
    x.mutable_grad() = torch::Tensor();
    torch::Tensor y = layer->forward(x);
    (y * r).sum().backward();
    return std::make_tuple(y.detach().contiguous(), layer->values.grad().clone(), x.grad().clone());
  };
  auto [y1, gv1, gx1] = run();
  kernels::SetPath(kernels::KernelPath::kReference);
  auto [y2, gv2, gx2] = run();
  kernels::SetPath(kernels::KernelPath::kSimd);
  EXPECT_LT(Nmse(y1, y2), 1e-12);
  EXPECT_LT(Nmse(gv1, gv2), 1e-12);
  EXPECT_LT(Nmse(gx1, gx2), 1e-12);
}

TEST(PermDiagWeightGrad, SimdMatchesReference) {
  for (int p : {1, 3, 4, 8, 16}) {
    for (int64_t batch : {1, 3, 17, 32, 128}) {
      PermDiagMatrix w = PermDiagMatrix::Random(45, 70, p, 9);
      torch::manual_seed(p * 1000 + batch);
      torch::Tensor g = torch::randn({45, batch}), x = torch::randn({70, batch});
      std::vector<float> ref(w.values().size()), fast(w.values().size(), -1.0f);
      PermDiagWeightGradRef(w.view(), g.data_ptr<float>(), x.data_ptr<float>(), batch, ref.data());
      PermDiagWeightGrad(w.view(), g.data_ptr<float>(), x.data_ptr<float>(), batch, fast.data(), 2);
      double scale = (g.abs().max() * x.abs().max()).item<double>();
      EXPECT_TRUE(testing::AllNear<float>(ref, fast, testing::Tolerance(batch, scale)))
          << "p=" << p << " batch=" << batch;
    }
  }
}

// Batch-major operands (G: B × rows, X: B × cols) give the same gradient.
TEST(PermDiagWeightGrad, RowsMatchesReference) {
  for (int p : {1, 3, 4, 8, 16}) {
    for (int64_t batch : {1, 3, 17, 128}) {
      PermDiagMatrix w = PermDiagMatrix::Random(45, 70, p, 11);
      torch::manual_seed(p * 100 + batch);
      torch::Tensor g = torch::randn({batch, 45}), x = torch::randn({batch, 70});
      torch::Tensor gt = g.t().contiguous(), xt = x.t().contiguous();
      std::vector<float> ref(w.values().size()), fast(w.values().size(), -1.0f);
      PermDiagWeightGradRef(w.view(), gt.data_ptr<float>(), xt.data_ptr<float>(), batch, ref.data());
      PermDiagWeightGradRows(w.view(), g.data_ptr<float>(), x.data_ptr<float>(), batch, fast.data(), 2);
      double scale = (g.abs().max() * x.abs().max()).item<double>();
      EXPECT_TRUE(testing::AllNear<float>(ref, fast, testing::Tolerance(batch, scale)))
          << "p=" << p << " batch=" << batch;
    }
  }
}

TEST(PermDiagLinear, InitUsesRealFanIn) {
  PermDiagLinear layer(1024, 1024, 8, true, 3);
  // He-normal on fan-in ceil(n/p) = 128: stddev sqrt(2/128) = 0.125.
  double sd = layer->values.std().item<double>();
  EXPECT_NEAR(sd, 0.125, 0.01);
}

TEST(PermDiagConv2d, DenseWeightLayoutAndGradients) {
  torch::manual_seed(5);
  const int p = 4;
  PermDiagConv2d conv(10, 7, 3, 1, 1, p, true, 4);  // non-multiples of p on both sides
  torch::Tensor w = conv->DenseWeight().detach();
  const int16_t* off = conv->offsets.data_ptr<int16_t>();
  const int64_t nb = conv->offsets.size(1);
  // Canonical layout: out channel I·p+c uses in channel J·p+(c+k) mod p.
  for (int64_t o = 0; o < 7; ++o)
    for (int64_t i = 0; i < 10; ++i) {
      int64_t I = o / p, J = i / p, c = o % p;
      bool on = (c + off[I * nb + J]) % p == i % p;
      double expect = on ? conv->values[I][J][c].abs().sum().item<double>() : 0.0;
      EXPECT_NEAR(w[o][i].abs().sum().item<double>(), expect, 1e-6) << o << "," << i;
    }
  // Gradient against a plain conv on the detached dense weight.
  torch::Tensor x = torch::randn({2, 10, 6, 6});
  torch::Tensor y = conv->forward(x);
  torch::Tensor r = torch::randn_like(y);
  (y * r).sum().backward();
  torch::Tensor wd = w.clone().requires_grad_(true);
  (torch::conv2d(x, wd, conv->bias.detach(), 1, 1) * r).sum().backward();
  // ∂L/∂values[I,J,c] is the dense gradient at its position.
  torch::Tensor expect = torch::zeros_like(conv->values);
  for (int64_t I = 0; I < conv->values.size(0); ++I)
    for (int64_t J = 0; J < nb; ++J)
      for (int c = 0; c < p; ++c) {
        int64_t o = I * p + c, i = J * p + (c + off[I * nb + J]) % p;
        if (o < 7 && i < 10) expect[I][J][c] = wd.grad()[o][i];
      }
  EXPECT_LT(Nmse(conv->values.grad(), expect), 1e-10);
}

}  // namespace
}  // namespace permdnn::train
