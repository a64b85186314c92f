// Ternary layers with PE-wise group pruning and WPC (see ternary_layers.h).
#include "src/train/ternary_layers.h"

#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include <torch/autograd.h>
#include <torch/nn/functional.h>
#include <torch/nn/init.h>

#include "permdnn/core/error.h"

namespace permdnn::train {

namespace {

std::vector<uint8_t> KeptBytes(const torch::Tensor& kept_groups) {
  torch::Tensor k = kept_groups.detach().contiguous().to(torch::kFloat);
  std::vector<uint8_t> v(static_cast<std::size_t>(k.numel()));
  const float* p = k.data_ptr<float>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = p[i] != 0.0f ? 1 : 0;
  return v;
}

// Codes and scales of w (rows = w.size(0)) by the format's ternarizer.
void Codes(const torch::Tensor& w, const torch::Tensor& kept_groups, int64_t group_len, double threshold,
           bool per_layer, std::vector<int8_t>* codes, std::vector<float>* scale) {
  torch::Tensor c = w.detach().contiguous().to(torch::kFloat);
  const int64_t rows = c.size(0), cols = c.numel() / rows;
  codes->assign(static_cast<std::size_t>(c.numel()), 0);
  scale->assign(static_cast<std::size_t>(rows), 0.0f);
  const std::vector<uint8_t> kept = KeptBytes(kept_groups);
  TernarizeRows(std::span<const float>(c.data_ptr<float>(), static_cast<std::size_t>(c.numel())), rows, cols,
                group_len, kept, threshold, *codes, *scale, per_layer);
}

// Forward: α_r·t_rc; backward: straight through, zeroed where |w| ≥ 1.
class TernarizeFunction : public torch::autograd::Function<TernarizeFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor w, torch::Tensor kept_groups,
                               int64_t group_len, double threshold, bool per_layer) {
    ctx->save_for_backward({w});
    std::vector<int8_t> codes;
    std::vector<float> scale;
    Codes(w, kept_groups, group_len, threshold, per_layer, &codes, &scale);
    torch::Tensor t = torch::from_blob(codes.data(), {w.size(0), w.numel() / w.size(0)}, torch::kInt8).to(torch::kFloat);
    torch::Tensor a = torch::from_blob(scale.data(), {w.size(0), 1}, torch::kFloat);
    return (t * a).reshape(w.sizes());
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad) {
    const torch::Tensor w = ctx->get_saved_variables()[0];
    return {grad[0] * w.abs().lt(1.0).to(grad[0].dtype()), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor TernarizeWithSte(const torch::Tensor& w, const torch::Tensor& kept_groups, int64_t group_len,
                               double threshold, bool per_layer) {
  return TernarizeFunction::apply(w, kept_groups, group_len, threshold, per_layer);
}

double WpcThreshold(const torch::Tensor& norms, double ratio, double quantile) {
  torch::Tensor n = norms.detach().reshape({-1}).to(torch::kDouble);
  if (ratio > 0) return ratio * n.mean().item<double>();
  if (quantile > 0) {
    torch::Tensor sorted = std::get<0>(n.sort());
    const auto k = static_cast<int64_t>(std::floor(quantile * static_cast<double>(n.numel() - 1)));
    return sorted[k].item<double>();
  }
  return std::numeric_limits<double>::infinity();
}

TernaryLayerImpl::TernaryLayerImpl(const std::string& name_, int64_t in_, int64_t out_, int kernel_, int stride_,
                                   int padding_, const formats::LayerCompression& c)
    : name(name_), in(in_), out(out_), kernel(kernel_), stride(stride_), padding(padding_), compress(c) {
  PERMDNN_CHECK(c.kind == formats::CompressKind::kTernary, "layer '{}': TernaryLayer needs a ternary method, got {}",
                name, c.ToString());
  PERMDNN_CHECK(in >= 1 && out >= 1 && kernel >= 0, "layer '{}': bad shape {}->{} k={}", name, in, out, kernel);
  PERMDNN_CHECK(c.p >= 1 && in % c.p == 0,
                "--compress {}: layer '{}' has {} input {}, which group={} does not divide (a PE-wise group is "
                "group consecutive input channels)",
                c.ToString(), name, in, kernel > 0 ? "channels" : "features", c.p);
  std::vector<int64_t> shape = {out, in};
  if (kernel > 0) shape.insert(shape.end(), {kernel, kernel});
  torch::Tensor w = torch::empty(shape);
  torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));  // torch's Linear/Conv2d default
  weight = register_parameter("weight", w);
  const double fan_in = static_cast<double>(w.numel() / out), bound = 1.0 / std::sqrt(fan_in);
  bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
  group_mask = register_buffer("group_mask", torch::ones({out, in / c.p}));
  stage = register_buffer("stage", torch::zeros({1}, torch::kLong));
  theta = register_buffer("theta", torch::zeros({1}));
}

torch::Tensor TernaryLayerImpl::MaskedWeight() const {
  torch::Tensor m = group_mask.unsqueeze(2).expand({out, groups_per_row(), group_len()}).reshape(weight.sizes());
  return weight * m;
}

torch::Tensor TernaryLayerImpl::EffectiveWeight() {
  const int64_t s = current_stage();
  if (s == 0) return weight;
  torch::Tensor w = MaskedWeight();
  if (s == 1 || !compress.ternarize) return w;
  return TernarizeWithSte(w, group_mask, group_len(), compress.threshold, compress.alpha_per_layer);
}

torch::Tensor TernaryLayerImpl::forward(const torch::Tensor& x) {
  torch::Tensor w = EffectiveWeight();
  if (kernel == 0) return torch::nn::functional::linear(x, w, bias);
  return torch::conv2d(x, w, bias, {stride, stride}, {padding, padding});
}

torch::Tensor TernaryLayerImpl::GroupNorms() const {
  return weight.reshape({out, groups_per_row(), group_len()}).norm(2, {2});
}

torch::Tensor TernaryLayerImpl::Penalty() {
  if (current_stage() != 0 || compress.penalty <= 0) return {};
  torch::Tensor norms = GroupNorms();
  const double th = WpcThreshold(norms, compress.wpc_ratio, compress.wpc_quantile);
  {
    torch::NoGradGuard no_grad;
    theta.fill_(th);
  }
  // min(‖W_g‖, θ): groups above θ contribute the constant θ (no gradient).
  torch::Tensor clipped = std::isinf(th) ? norms : torch::clamp_max(norms, th);
  return compress.penalty * clipped.sum();
}

void TernaryLayerImpl::Prune() {
  torch::NoGradGuard no_grad;
  torch::Tensor w = weight.detach().contiguous();
  const std::vector<uint8_t> kept =
      KeepLargestGroups(std::span<const float>(w.data_ptr<float>(), static_cast<std::size_t>(w.numel())), out,
                        in * taps(), group_len(), compress.density, "layer '" + name + "'");
  torch::Tensor m = torch::from_blob(const_cast<uint8_t*>(kept.data()), {out, groups_per_row()}, torch::kUInt8);
  group_mask.copy_(m.to(torch::kFloat));
  stage.fill_(1);
  ApplyMask();
}

void TernaryLayerImpl::StartTernary() {
  torch::NoGradGuard no_grad;
  stage.fill_(2);
}

void TernaryLayerImpl::ApplyMask() {
  if (current_stage() == 0) return;
  torch::NoGradGuard no_grad;
  weight.copy_(MaskedWeight());
}

void TernaryLayerImpl::SetDense(const torch::Tensor& w, const torch::Tensor& b) {
  torch::NoGradGuard no_grad;
  weight.copy_(w.reshape(weight.sizes()));
  bias.copy_(b);
  group_mask.fill_(1);
  stage.fill_(0);
}

int64_t TernaryLayerImpl::kept_mask_groups() const { return group_mask.sum().item<int64_t>(); }

TernaryMatrix TernaryLayerImpl::Ternary() const {
  torch::NoGradGuard no_grad;
  std::vector<int8_t> codes;
  std::vector<float> scale;
  Codes(MaskedWeight(), group_mask, group_len(), compress.threshold, compress.alpha_per_layer, &codes, &scale);
  return TernaryMatrix::FromCodes(out, in * taps(), group_len(), codes, std::move(scale), "layer '" + name + "'");
}

int64_t TernaryLayerImpl::masked_nnz() const {
  torch::NoGradGuard no_grad;
  return MaskedWeight().ne(0).sum().item<int64_t>();
}

}  // namespace permdnn::train
