// Block-circulant and pruned layers: forward and gradients against autograd
// on the dense reconstruction (which is checked against the core format),
// the pruning schedule, exact densities, masks that survive optimizer steps,
// and codebook fine-tuning that keeps at most 2^bits distinct weights.
#include <cmath>
#include <set>

#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/nn/functional.h>
#include <torch/optim/adam.h>

#include "permdnn/formats/circulant_matrix.h"
#include "src/train/circulant_layers.h"
#include "src/train/prune_layers.h"

namespace permdnn::train {
namespace {

double Nmse(const torch::Tensor& a, const torch::Tensor& b) {
  double num = (a - b).pow(2).sum().item<double>(), den = b.pow(2).sum().item<double>();
  return den > 0 ? num / den : num;
}

struct Shape {
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {{16, 16}, {13, 10}, {7, 21}, {33, 65}};
constexpr int64_t kBatches[] = {1, 32};

class CirculantGrad : public ::testing::TestWithParam<int> {};

// FFT forward/backward of BlockCirculantLinear vs autograd through the dense
// reconstruction; the reconstruction itself vs core's ToDense.
TEST_P(CirculantGrad, LinearMatchesDenseAutograd) {
  const int p = GetParam();
  for (Shape shape : kShapes)
    for (int64_t batch : kBatches) {
      SCOPED_TRACE(::testing::Message() << "p=" << p << " " << shape.rows << "x" << shape.cols << " batch " << batch);
      torch::manual_seed(3);
      BlockCirculantLinear layer(shape.cols, shape.rows, p, true);
      {
        torch::NoGradGuard ng;
        layer->bias.normal_();
      }
      // The reconstruction is the run-format matrix (core's definition).
      std::vector<float> core = layer->Matrix().ToDense();
      torch::Tensor dense = layer->DenseWeight().detach().contiguous();
      ASSERT_EQ(dense.numel(), static_cast<int64_t>(core.size()));
      for (std::size_t i = 0; i < core.size(); ++i) ASSERT_EQ(dense.data_ptr<float>()[i], core[i]) << i;

      torch::Tensor x = torch::randn({batch, shape.cols}), r = torch::randn({batch, shape.rows});
      for (int mode : {0, 1, 2}) {  // FFT real GEMM, FFT complex matmul, dense gather
        SCOPED_TRACE(::testing::Message() << "mode " << mode);
        layer->real_gemm = mode == 0;
        layer->use_dense = mode == 2;
        layer->zero_grad();
        torch::Tensor xa = x.clone().requires_grad_(true);
        torch::Tensor y = layer->forward(xa);
        (y * r).sum().backward();
        torch::Tensor v = layer->values.detach().clone().requires_grad_(true);
        torch::Tensor b = layer->bias.detach().clone().requires_grad_(true);
        torch::Tensor xd = x.clone().requires_grad_(true);
        torch::Tensor w = CirculantToDense(v, shape.rows, shape.cols);
        torch::Tensor yd = torch::nn::functional::linear(xd, w, b);
        (yd * r).sum().backward();
        EXPECT_LT(Nmse(y.detach(), yd.detach()), 1e-10);
        EXPECT_LT(Nmse(xa.grad(), xd.grad()), 1e-10);
        EXPECT_LT(Nmse(layer->values.grad(), v.grad()), 1e-10);
        EXPECT_LT(Nmse(layer->bias.grad(), b.grad()), 1e-12);
      }
    }
}

// Conv: output and value gradients against an explicit loop over the
// run-format definition (out I·p+c reads in J·p+d through w_IJ[(c−d) mod p]).
TEST_P(CirculantGrad, Conv2dMatchesDefinition) {
  const int p = GetParam();
  for (Shape shape : {Shape{6, 5}, Shape{8, 8}})
    for (int64_t batch : {int64_t{1}, int64_t{3}}) {
      SCOPED_TRACE(::testing::Message() << "p=" << p << " " << shape.rows << "x" << shape.cols << " batch " << batch);
      torch::manual_seed(5);
      const int64_t out = shape.rows, in = shape.cols;
      BlockCirculantConv2d conv(in, out, 3, 1, 1, p, true);
      torch::Tensor values = conv->values.detach();
      const int64_t nb = values.size(1);
      torch::Tensor w = torch::zeros({out, in, 3, 3});
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) w[o][i].copy_(values[o / p][i / p][((o % p - i % p) % p + p) % p]);
      torch::Tensor x = torch::randn({batch, in, 6, 6});
      torch::Tensor y = conv->forward(x);
      torch::Tensor wd = w.clone().requires_grad_(true);
      torch::Tensor yd = torch::conv2d(x, wd, conv->bias.detach(), {1, 1}, {1, 1});
      EXPECT_LT(Nmse(y.detach(), yd.detach()), 1e-10);
      torch::Tensor r = torch::randn(y.sizes());
      (y * r).sum().backward();
      (yd * r).sum().backward();
      // dL/dw_IJ[t] = Σ of the dense gradients at the positions using it.
      torch::Tensor expect = torch::zeros(values.sizes());
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) expect[o / p][i / p][((o % p - i % p) % p + p) % p] += wd.grad()[o][i];
      EXPECT_LT(Nmse(conv->values.grad(), expect), 1e-10);
      EXPECT_EQ(values.size(0), CeilDiv(out, p));
      EXPECT_EQ(nb, CeilDiv(in, p));
    }
}

INSTANTIATE_TEST_SUITE_P(P, CirculantGrad, ::testing::Values(1, 2, 4, 8));

TEST(PruneSchedule, CubicToExactTarget) {
  for (int64_t total : {int64_t{3}, int64_t{24}, int64_t{469}, int64_t{5628}}) {
    PruneSchedule s{total};
    const int64_t t = s.prune_end();
    double last = 1.0;
    int points = 0;
    for (int64_t step = 0; step <= total; ++step) {
      std::optional<double> d = s.DensityAt(step, 0.1);
      if (!d) continue;
      ++points;
      EXPECT_LE(*d, last) << total << " step " << step;
      EXPECT_GE(*d, 0.1);
      last = *d;
      EXPECT_LE(step, t);
    }
    EXPECT_EQ(points, std::min<int64_t>(16, t)) << total;
    ASSERT_TRUE(s.DensityAt(t, 0.1));
    EXPECT_EQ(*s.DensityAt(t, 0.1), 0.1);
    EXPECT_GE(s.share_step(), t);
    EXPECT_LT(s.share_step(), std::max<int64_t>(total, 2));
    EXPECT_FALSE(s.Done(t, 0));
    EXPECT_TRUE(s.Done(t + 1, 0));
    EXPECT_FALSE(s.Done(s.share_step(), 4));
  }
}

// Exact density, pruned weights stay exactly zero under Adam (momentum from
// before pruning included), and the layer still learns.
TEST(PrunedLayer, ExactDensityAndMaskSurvivesAdam) {
  for (int kernel : {0, 3}) {
    SCOPED_TRACE(kernel ? "conv" : "linear");
    torch::manual_seed(1);
    PrunedLayer layer(10, 7, kernel, 1, 1, 0, true);
    torch::optim::Adam opt(layer->parameters(), torch::optim::AdamOptions(1e-2));
    torch::Tensor x = kernel ? torch::randn({4, 10, 5, 5}) : torch::randn({4, 10});
    auto step = [&] {
      opt.zero_grad();
      layer->forward(x).pow(2).sum().backward();
      opt.step();
      layer->ApplyMask();
    };
    for (int i = 0; i < 3; ++i) step();  // Adam momentum on every weight
    const int64_t size = layer->weight.numel();
    for (double d : {0.5, 0.23, 0.1}) {
      layer->Prune(d);
      EXPECT_EQ(layer->nnz(), std::llround(d * size)) << d;
      for (int i = 0; i < 4; ++i) step();
      torch::Tensor off = layer->weight.detach().masked_select(layer->mask == 0);
      EXPECT_EQ(off.numel(), size - std::llround(d * size));
      EXPECT_EQ(off.abs().max().item<float>(), 0.0f) << d;
      EXPECT_EQ(layer->nnz(), std::llround(d * size));
    }
    // Kept weights moved (masked retraining trains them).
    torch::Tensor before = layer->weight.detach().clone();
    step();
    EXPECT_GT((layer->weight.detach() - before).abs().max().item<float>(), 0.0f);
  }
}

// After Share: the gradient of a centroid is the sum of its weights'
// gradients, fine-tuning changes the codebook, and the effective weights keep
// at most 2^bits distinct values on the mask (and exact zeros off it).
TEST(PrunedLayer, CodebookFineTuningKeepsSharedValues) {
  for (int bits : {1, 2, 4}) {
    SCOPED_TRACE(::testing::Message() << "bits=" << bits);
    torch::manual_seed(2);
    PrunedLayer layer(20, 9, 0, 1, 0, bits, true);
    layer->Prune(0.3);
    layer->Share();
    ASSERT_TRUE(layer->is_shared());
    torch::Tensor x = torch::randn({8, 20});
    // Gradient identity.
    layer->zero_grad();
    torch::Tensor w = layer->EffectiveWeight().detach().clone().requires_grad_(true);
    torch::Tensor r = torch::randn({8, 9});
    (torch::nn::functional::linear(x, w, layer->bias.detach()) * r).sum().backward();
    (layer->forward(x) * r).sum().backward();
    torch::Tensor expect = torch::zeros({int64_t{1} << bits});
    expect.index_add_(0, layer->codes.reshape({-1}), (w.grad() * layer->mask).reshape({-1}));
    EXPECT_LT(Nmse(layer->codebook.grad(), expect), 1e-10);

    torch::Tensor cb0 = layer->codebook.detach().clone();
    torch::optim::Adam opt(layer->parameters(), torch::optim::AdamOptions(1e-2));
    for (int i = 0; i < 5; ++i) {
      opt.zero_grad();
      (layer->forward(x) * r).sum().backward();
      opt.step();
      layer->ApplyMask();
    }
    EXPECT_GT((layer->codebook.detach() - cb0).abs().max().item<float>(), 0.0f);
    torch::Tensor eff = layer->EffectiveWeight().detach().contiguous();
    std::set<float> distinct;
    for (int64_t i = 0; i < eff.numel(); ++i)
      if (layer->mask.data_ptr<float>()[i] != 0) distinct.insert(eff.data_ptr<float>()[i]);
      else EXPECT_EQ(eff.data_ptr<float>()[i], 0.0f);
    EXPECT_LE(distinct.size(), std::size_t{1} << bits);
    EXPECT_GE(distinct.size(), 1u);
  }
}

}  // namespace
}  // namespace permdnn::train
