// Compressed LSTM / GRU layers (see recurrent_layers.h).
#include "src/train/recurrent_layers.h"

#include <cmath>

#include "permdnn/core/error.h"

namespace permdnn::train {

using formats::CompressKind;

CompressedLinearImpl::CompressedLinearImpl(int64_t in_, int64_t out_, const formats::LayerCompression& c,
                                           uint64_t seed)
    : in(in_), out(out_), compress(c) {
  switch (c.kind) {
    case CompressKind::kPermDiag:
      permdiag = register_module("permdiag", PermDiagLinear(in, out, c.p, false, seed, c.column_offsets));
      break;
    case CompressKind::kCirculant:
      circulant = register_module("circulant", BlockCirculantLinear(in, out, c.p, false));
      break;
    case CompressKind::kPrune:
      pruned = register_module("pruned", PrunedLayer(in, out, 0, 1, 0, c.bits, false));
      break;
    default:
      dense = register_module("dense", torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)));
  }
}

torch::Tensor CompressedLinearImpl::forward(const torch::Tensor& x) {
  if (permdiag) return permdiag->forward(x.contiguous());
  if (circulant) return circulant->forward(x);
  if (pruned) return pruned->forward(x);
  return dense->forward(x);
}

torch::Tensor CompressedLinearImpl::DenseWeight() const {
  if (permdiag) return permdiag->DenseWeight();
  if (circulant) return circulant->DenseWeight();
  if (pruned) return pruned->EffectiveWeight();
  return dense->weight;
}

int64_t CompressedLinearImpl::FanIn() const { return permdiag ? (in + permdiag->p - 1) / permdiag->p : in; }

void CompressedLinearImpl::ScaleInit(double std) {
  torch::NoGradGuard no_grad;
  torch::Tensor w = permdiag ? permdiag->values : circulant ? circulant->values : pruned ? pruned->weight : dense->weight;
  torch::Tensor nz = w.ne(0);
  const int64_t count = nz.sum().item<int64_t>();
  if (count == 0) return;
  const double mean_sq = w.pow(2).sum().item<double>() / static_cast<double>(count);
  if (mean_sq > 0) w.mul_(std / std::sqrt(mean_sq));
}

RecurrentCell ParseCell(const std::string& name) {
  if (name == "lstm") return RecurrentCell::kLstm;
  if (name == "gru") return RecurrentCell::kGru;
  Fail("--cell: unknown recurrent cell '{}' (known: lstm, gru)", name);
}

const char* CellName(RecurrentCell cell) { return cell == RecurrentCell::kLstm ? "lstm" : "gru"; }

RecurrentLayerImpl::RecurrentLayerImpl(const std::string& name_, RecurrentCell cell_, int64_t in_, int64_t hidden_,
                                       const formats::LayerCompression& c, bool sequence_output_, uint64_t seed)
    : name(name_), cell(cell_), in(in_), hidden(hidden_), sequence_output(sequence_output_) {
  PERMDNN_CHECK(in >= 1 && hidden >= 1, "layer '{}': {} needs in >= 1 and hidden >= 1, got in {} hidden {}", name,
                CellName(cell), in, hidden);
  if (c.kind == CompressKind::kPermDiag || c.kind == CompressKind::kCirculant) {
    PERMDNN_CHECK(hidden % c.p == 0,
                  "layer '{}': {} with {} needs the hidden size to be a multiple of p (so no p×p block straddles "
                  "two gates), got hidden {} and p {}",
                  name, CellName(cell), c.ToString(), hidden, c.p);
    PERMDNN_CHECK(!c.column_offsets, "layer '{}': {} supports only per-block permdiag offsets, not offsets=column",
                  name, CellName(cell));
  }
  const int64_t gh = GateCount(cell) * hidden;
  ih = register_module("ih", CompressedLinear(in, gh, c, seed * 2 + 1));
  hh = register_module("hh", CompressedLinear(hidden, gh, c, seed * 2 + 2));
  // PyTorch's LSTM/GRU default: every weight U(±1/√H), variance 1/(3H).
  const double var = 1.0 / (3.0 * static_cast<double>(hidden));
  ih->ScaleInit(std::sqrt(var * static_cast<double>(in) / static_cast<double>(ih->FanIn())));
  hh->ScaleInit(std::sqrt(var * static_cast<double>(hidden) / static_cast<double>(hh->FanIn())));
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
  bias_ih = register_parameter("bias_ih", torch::empty({gh}).uniform_(-bound, bound));
  bias_hh = register_parameter("bias_hh", torch::empty({gh}).uniform_(-bound, bound));
}

torch::Tensor RecurrentLayerImpl::forward(const torch::Tensor& x) {
  PERMDNN_CHECK(x.dim() == 3 && x.size(2) == in, "layer '{}': input must be [batch, time, {}], got {}", name, in,
                c10::str(x.sizes()));
  const int64_t B = x.size(0), T = x.size(1), gh = GateCount(cell) * hidden;
  PERMDNN_CHECK(T >= 1, "layer '{}': empty sequence", name);
  // The input product of all steps at once: [B·T, in] → [B, T, G·H].
  torch::Tensor xi = (ih->forward(x.reshape({B * T, in})) + bias_ih).view({B, T, gh});
  torch::Tensor h = torch::zeros({B, hidden}, x.options());
  torch::Tensor c = torch::zeros({B, hidden}, x.options());
  // W_hhᵀ [H, G·H] once per forward (see step_kernels).
  const torch::Tensor whh_t = step_kernels ? torch::Tensor() : hh->DenseWeight().t();
  std::vector<torch::Tensor> outputs;
  if (sequence_output) outputs.reserve(static_cast<std::size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    torch::Tensor gi = xi.select(1, t);
    // h_{-1} = 0: the hidden product is then just the bias.
    torch::Tensor gh_t = t == 0          ? bias_hh.expand({B, gh})
                         : step_kernels ? hh->forward(h) + bias_hh
                                        : torch::addmm(bias_hh, h, whh_t);
    if (cell == RecurrentCell::kLstm) {
      std::vector<torch::Tensor> a = (gi + gh_t).chunk(4, 1);
      torch::Tensor i = torch::sigmoid(a[0]), f = torch::sigmoid(a[1]), g = torch::tanh(a[2]),
                    o = torch::sigmoid(a[3]);
      c = f * c + i * g;
      h = o * torch::tanh(c);
    } else {
      std::vector<torch::Tensor> ai = gi.chunk(3, 1), ah = gh_t.chunk(3, 1);
      torch::Tensor r = torch::sigmoid(ai[0] + ah[0]), z = torch::sigmoid(ai[1] + ah[1]);
      torch::Tensor n = torch::tanh(ai[2] + r * ah[2]);
      h = (1 - z) * n + z * h;
    }
    if (sequence_output) outputs.push_back(h);
  }
  return sequence_output ? torch::stack(outputs, 1) : h;
}

}  // namespace permdnn::train
