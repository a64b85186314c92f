// Pruned layers and their schedule (see prune_layers.h).
#include "src/train/prune_layers.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include <torch/nn/functional.h>
#include <torch/nn/init.h>

#include "permdnn/core/error.h"
#include "permdnn/formats/pruning.h"

namespace permdnn::train {

int64_t PruneSchedule::prune_end() const { return std::max<int64_t>(1, total_steps / 2); }

int64_t PruneSchedule::share_step() const { return std::max(prune_end(), total_steps * 3 / 4); }

std::optional<double> PruneSchedule::DensityAt(int64_t step, double final_density) const {
  const int64_t t = prune_end(), n = std::min<int64_t>(16, t);
  if (step < 1 || step > t) return std::nullopt;
  // step is a point s_k = ⌊k·T/N⌋ iff some k in [1, N] maps to it.
  const int64_t k = (step * n + t - 1) / t;  // smallest k with k·T/N ≥ step
  if (k < 1 || k > n || k * t / n != step) return std::nullopt;
  const double r = 1.0 - static_cast<double>(step) / static_cast<double>(t);
  return step == t ? final_density : final_density + (1.0 - final_density) * r * r * r;
}

PrunedLayerImpl::PrunedLayerImpl(int64_t in_, int64_t out_, int kernel_, int stride_, int padding_, int bits_,
                                 bool with_bias)
    : in(in_), out(out_), kernel(kernel_), stride(stride_), padding(padding_), bits(bits_) {
  PERMDNN_CHECK(in >= 1 && out >= 1 && kernel >= 0 && bits >= 0 && bits <= 8,
                "PrunedLayer: bad shape {}->{} k={} bits={}", in, out, kernel, bits);
  std::vector<int64_t> shape = {out, in};
  if (kernel > 0) shape.insert(shape.end(), {kernel, kernel});
  torch::Tensor w = torch::empty(shape);
  torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));  // torch's Linear/Conv2d default
  weight = register_parameter("weight", w);
  if (with_bias) {
    const double fan_in = static_cast<double>(w.numel() / out), bound = 1.0 / std::sqrt(fan_in);
    bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
  }
  mask = register_buffer("mask", torch::ones(shape));
  codes = register_buffer("codes", torch::zeros(shape, torch::kLong));
  shared = register_buffer("shared", torch::zeros({1}, torch::kLong));
  if (bits > 0) codebook = register_parameter("codebook", torch::zeros({int64_t{1} << bits}));
}

torch::Tensor PrunedLayerImpl::EffectiveWeight() const {
  if (is_shared()) return codebook.index_select(0, codes.reshape({-1})).reshape(weight.sizes()) * mask;
  return weight * mask;
}

torch::Tensor PrunedLayerImpl::forward(const torch::Tensor& x) {
  torch::Tensor w = EffectiveWeight();
  if (kernel == 0) return torch::nn::functional::linear(x, w, bias);
  return torch::conv2d(x, w, bias, {stride, stride}, {padding, padding});
}

void PrunedLayerImpl::Prune(double density) {
  PERMDNN_CHECK(!is_shared(), "PrunedLayer::Prune after weight sharing");
  torch::NoGradGuard no_grad;
  torch::Tensor w = (weight * mask).contiguous();
  std::vector<uint8_t> keep = MagnitudeMask(std::span<const float>(w.data_ptr<float>(), w.numel()), density);
  float* m = mask.data_ptr<float>();
  for (std::size_t i = 0; i < keep.size(); ++i) m[i] = keep[i] ? 1.0f : 0.0f;
  weight.mul_(mask);
}

void PrunedLayerImpl::ApplyMask() {
  if (is_shared()) return;
  torch::NoGradGuard no_grad;
  weight.mul_(mask);
}

void PrunedLayerImpl::Share(bool fitted_levels) {
  PERMDNN_CHECK(bits > 0, "PrunedLayer::Share needs bits > 0");
  if (is_shared()) return;
  torch::NoGradGuard no_grad;
  torch::Tensor w = weight.contiguous();
  const float* wp = w.data_ptr<float>();
  const float* m = mask.data_ptr<float>();  // read before any change below
  std::vector<float> kept;
  std::vector<int64_t> where;
  for (int64_t i = 0; i < w.numel(); ++i)
    if (m[i] != 0.0f) {
      kept.push_back(wp[i]);
      where.push_back(i);
    }
  if (kept.empty()) kept.push_back(0.0f);  // an all-pruned layer still gets a (zero) codebook
  SharedWeights sw = fitted_levels ? FitLevels(kept, bits) : KMeansCodebook(kept, bits);
  PERMDNN_CHECK(static_cast<int64_t>(sw.centroids.size()) == codebook.numel(),
                "PrunedLayer::Share: codebook of {} entries for bits={}", sw.centroids.size(), bits);
  std::copy(sw.centroids.begin(), sw.centroids.end(), codebook.data_ptr<float>());
  codes.zero_();
  int64_t* c = codes.data_ptr<int64_t>();
  float* mm = mask.data_ptr<float>();
  for (std::size_t j = 0; j < where.size(); ++j) {
    c[where[j]] = sw.codes[j];
    // FitLevels keeps zeros at zero, and there is no zero level: a kept
    // weight that is exactly 0 leaves the mask.
    if (fitted_levels && kept[j] == 0.0f) mm[where[j]] = 0.0f;
  }
  shared.fill_(1);
  weight.copy_(EffectiveWeight());
}

int64_t PrunedLayerImpl::nnz() const { return static_cast<int64_t>(std::llround(mask.sum().item<double>())); }

double PrunedLayerImpl::density() const { return static_cast<double>(nnz()) / static_cast<double>(mask.numel()); }

void PrunedLayerImpl::SetDense(const torch::Tensor& w, const torch::Tensor& b) {
  PERMDNN_CHECK(w.sizes() == weight.sizes(), "PrunedLayer::SetDense: weight shape mismatch");
  torch::NoGradGuard no_grad;
  weight.copy_(w);
  if (bias.defined()) bias.copy_(b);
  mask.fill_(1);
  codes.zero_();
  shared.zero_();
}

}  // namespace permdnn::train
