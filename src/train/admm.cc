// ADMM-NN training (see admm.h).
#include "src/train/admm.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <tuple>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/formats/pruning.h"
#include "permdnn/formats/registry.h"
#include "src/train/train_hooks.h"

namespace permdnn::train {

namespace fs = std::filesystem;

torch::Tensor AdmmProject(const std::string& layer, const LayerCompression& c, const formats::Geometry& geometry,
                          const torch::Tensor& w) {
  if (c.kind == CompressKind::kDense) return w.clone();
  torch::Tensor wc = w.detach().to(torch::kFloat).contiguous();
  std::span<const float> ws(wc.data_ptr<float>(), static_cast<std::size_t>(wc.numel()));
  std::vector<float> z;
  if (c.kind == CompressKind::kPrune) {
    // Keep the round(density·size) largest |w|, then (bits) the nearest of
    // the levels fitted to the kept weights; zeros stay zero.
    const std::vector<uint8_t> keep = MagnitudeMask(ws, c.density);
    z.assign(ws.size(), 0.0f);
    for (std::size_t i = 0; i < ws.size(); ++i)
      if (keep[i]) z[i] = ws[i];
    if (c.bits > 0) {
      const SharedWeights levels = FitLevels(z, c.bits);
      for (std::size_t i = 0; i < z.size(); ++i)
        if (z[i] != 0.0f) z[i] = levels.centroids[levels.codes[i]];
    }
  } else {
    formats::Geometry g = geometry;
    g.p = c.p;
    try {
      z = formats::ToDense(formats::Project(formats::FormatOf(c), ws, g, c).weights);
    } catch (const Error& e) {
      Fail("ADMM projection of layer '{}' onto {}: {}", layer, c.ToString(), e.what());
    }
  }
  PERMDNN_CHECK(static_cast<int64_t>(z.size()) == w.numel(),
                "ADMM projection of layer '{}' onto {}: {} values for a weight of {}", layer, c.ToString(), z.size(),
                w.numel());
  return torch::from_blob(z.data(), w.sizes(), torch::kFloat).clone();
}

namespace {
formats::Geometry GeometryOf(const LayerInfo& t) {
  formats::Geometry g{t.out, t.in, {}, 1};
  if (t.type == "conv2d") g.kernel = {t.kernel, t.kernel};
  return g;
}
}  // namespace

torch::Tensor AdmmProject(const LayerInfo& target, const torch::Tensor& w) {
  return AdmmProject(target.name, target.compress, GeometryOf(target), w);
}

void AdmmStart(std::vector<AdmmTerm>& terms) {
  torch::NoGradGuard no_grad;
  for (AdmmTerm& t : terms) {
    t.z.copy_(AdmmProject(t.layer, t.compress, t.geometry, t.w));
    t.u.zero_();
  }
}

torch::Tensor AdmmPenalty(const std::vector<AdmmTerm>& terms, double rho) {
  torch::Tensor sum;
  for (const AdmmTerm& t : terms) {
    torch::Tensor d = (t.w - t.z + t.u).pow(2).sum();
    sum = sum.defined() ? sum + d : d;
  }
  return sum * (0.5 * rho);
}

void AdmmProximalStep(std::vector<AdmmTerm>& terms, double c) {
  torch::NoGradGuard no_grad;
  for (AdmmTerm& t : terms) t.w.add_(t.z - t.u - t.w, c / (1.0 + c));
}

double AdmmNextRho(std::vector<AdmmTerm>& terms, double rho, const TrainOptions& o) {
  if (o.rescale_dual) {
    torch::NoGradGuard no_grad;
    for (AdmmTerm& t : terms) t.u.div_(o.rho_mult);
  }
  return rho * o.rho_mult;
}

void AdmmUpdate(std::vector<AdmmTerm>& terms, AdmmRound* row) {
  torch::NoGradGuard no_grad;
  double diff2 = 0, norm2 = 0;
  row->layer_residual.clear();
  for (AdmmTerm& t : terms) {
    t.z.copy_(AdmmProject(t.layer, t.compress, t.geometry, t.w + t.u));
    t.u.add_(t.w - t.z);
    const double d2 = (t.w - t.z).pow(2).sum().item<double>(), n2 = t.w.pow(2).sum().item<double>();
    row->layer_residual.push_back(n2 > 0 ? std::sqrt(d2 / n2) : 0.0);
    diff2 += d2;
    norm2 += n2;
  }
  row->residual = norm2 > 0 ? std::sqrt(diff2 / norm2) : 0.0;
}

std::string AdmmRoundsCsv(const std::vector<AdmmTerm>& terms, const std::vector<AdmmRound>& rows) {
  std::string text = "round,step,rho,residual";
  for (const AdmmTerm& t : terms) text += ",residual_" + t.layer;
  text += ",train_loss,test_accuracy\n";
  for (const AdmmRound& r : rows) {
    text += fmt::format("{},{},{:.9g},{:.9g}", r.round, r.step, r.rho, r.residual);
    for (double v : r.layer_residual) text += fmt::format(",{:.9g}", v);
    text += fmt::format(",{:.9g},{:.9g}\n", r.train_loss, r.test_accuracy);
  }
  return text;
}

std::string AdmmRoundLine(const std::vector<AdmmTerm>& terms, const AdmmRound& r) {
  std::string line = fmt::format("  ADMM round {:>3} (step {}): rho {:.3g}  ||W-Z||/||W|| {:.4f} (", r.round, r.step,
                                 r.rho, r.residual);
  for (std::size_t k = 0; k < terms.size() && k < r.layer_residual.size(); ++k)
    line += fmt::format("{}{} {:.4f}", k ? ", " : "", terms[k].layer, r.layer_residual[k]);
  return line + fmt::format(")  train loss {:.4f}  test acc {:.2f}%\n", r.train_loss, 100 * r.test_accuracy);
}

int CheckAdmmOptions(const TrainOptions& o) {
  PERMDNN_CHECK(std::isfinite(o.rho) && o.rho > 0, "--rho must be > 0, got {}", o.rho);
  PERMDNN_CHECK(std::isfinite(o.rho_mult) && o.rho_mult > 0, "--rho-mult must be > 0, got {}", o.rho_mult);
  PERMDNN_CHECK(o.admm_penalty == "gradient" || o.admm_penalty == "decoupled",
                "--admm-penalty must be gradient or decoupled, got '{}'", o.admm_penalty);
  PERMDNN_CHECK(std::isfinite(o.break_even_density) && o.break_even_density >= 0 && o.break_even_density <= 1,
                "--break-even must be in [0, 1] (0: none), got {}", o.break_even_density);
  PERMDNN_CHECK(!o.refuse_break_even || o.break_even_density > 0 || o.break_even_for,
                "--refuse-break-even needs --break-even (a density D, or cpu | eie-cycles | eie-energy)");
  PERMDNN_CHECK(o.admm_iter >= 0, "--admm-iter must be >= 0 (0: one round per epoch), got {}", o.admm_iter);
  PERMDNN_CHECK(o.epochs >= 2, "ADMM needs --epochs >= 2 (ADMM epochs, then retraining), got {}", o.epochs);
  const int admm_epochs = o.admm_epochs > 0 ? o.admm_epochs : std::max(1, o.epochs / 2);
  PERMDNN_CHECK(o.admm_epochs >= 0 && admm_epochs < o.epochs,
                "--admm-epochs {} must be in [1, epochs - 1 = {}] (retraining needs an epoch)", o.admm_epochs,
                o.epochs - 1);
  return admm_epochs;
}

// The break-even report: a pruned layer at or above its platform's
// break-even density stores indices for nothing (sparse no faster, or no
// cheaper, than dense).
void CheckBreakEven(const std::vector<AdmmTerm>& terms, const TrainOptions& o, std::ostream& log) {
  if (o.break_even_density <= 0 && !o.break_even_for) return;
  const std::string platform = o.break_even_for ? o.break_even_platform : "--break-even";
  for (const AdmmTerm& t : terms) {
    if (t.compress.kind != CompressKind::kPrune) continue;
    BreakEvenAnswer a{o.break_even_density, ""};
    if (o.break_even_for)
      a = o.break_even_for({t.layer, t.geometry.out, t.geometry.in * t.geometry.taps(), t.columns});
    const bool buys = t.compress.density < a.density;
    log << fmt::format("  {:<8} density {:.4g} vs break-even {:.4g} ({}): {}\n", t.layer, t.compress.density,
                       a.density, platform, buys ? "sparse wins" : "buys nothing (sparse no better than dense)");
    if (!a.detail.empty()) log << "           " << a.detail << "\n";
    PERMDNN_CHECK(buys || !o.refuse_break_even,
                  "--refuse-break-even: layer '{}' asks for density {} >= its break-even density {:.4g} on {} "
                  "(sparse no better than dense there); lower its density or leave it dense",
                  t.layer, t.compress.density, a.density, platform);
  }
}

std::map<std::string, int64_t> ConvOutputPixels(const std::vector<LayerInfo>& layers, const ModelInput& input) {
  std::map<std::string, std::pair<int64_t, int64_t>> after;  // layer → its output H, W
  std::map<std::string, int64_t> pixels;
  int64_t h = input.rows, w = input.cols;
  for (const LayerInfo& l : layers) {
    if (!l.input.empty() && after.count(l.input)) std::tie(h, w) = after.at(l.input);
    if (l.type == "conv2d") {
      h = (h + 2 * l.padding - l.kernel) / l.stride + 1;
      w = (w + 2 * l.padding - l.kernel) / l.stride + 1;
      pixels[l.name] = std::max<int64_t>(1, h * w);
    } else if (l.type == "maxpool2d") {
      h /= 2;
      w /= 2;
    } else if (l.type == "avgpool2d") {
      h = (h - l.kernel) / l.stride + 1;
      w = (w - l.kernel) / l.stride + 1;
    }
    after[l.name] = {h, w};
  }
  return pixels;
}

namespace {

// Z, U, ρ and the round count (and the running loss of the round) as
// buffers, registered in the model as "admm" so checkpoints carry them.
class AdmmStateImpl : public torch::nn::Module {
 public:
  AdmmStateImpl(const std::vector<LayerInfo>& targets, Net& net) {
    auto params = net->named_parameters(true);
    for (const LayerInfo& t : targets) {
      const torch::Tensor* w = params.find(t.name + ".weight");
      PERMDNN_CHECK(w != nullptr, "ADMM: layer '{}' has no dense weight", t.name);
      weights.push_back(*w);
      z.push_back(register_buffer("z_" + t.name, torch::zeros_like(*w)));
      u.push_back(register_buffer("u_" + t.name, torch::zeros_like(*w)));
    }
    rho = register_buffer("rho", torch::zeros({1}, torch::kDouble));
    rounds = register_buffer("rounds", torch::zeros({1}, torch::kLong));
    loss_sum = register_buffer("loss_sum", torch::zeros({1}, torch::kDouble));
    loss_count = register_buffer("loss_count", torch::zeros({1}, torch::kLong));
  }
  std::vector<torch::Tensor> weights, z, u;  // weights: the model's parameters (not buffers here)
  torch::Tensor rho, rounds, loss_sum, loss_count;
};
TORCH_MODULE(AdmmState);

std::vector<LayerInfo> CompressedTargets(const Net& net, const std::string& compress, uint64_t seed) {
  // The target model's layers resolve the SPEC (edge-layer rule included).
  Net target(net->model_name(), CompressSpec::Parse(compress), net->input(), seed);
  std::vector<LayerInfo> out;
  for (const LayerInfo& l : target->layers())
    if (l.is_weight_layer() && l.compress.kind != CompressKind::kDense) out.push_back(l);
  PERMDNN_CHECK(!out.empty(), "--method admm: --compress {} compresses no layer of {} (nothing to constrain)",
                compress, net->model_name());
  return out;
}

// Phase 1: the dense model with the ADMM penalty and rounds.
class AdmmPhase : public TrainHooks {
 public:
  AdmmPhase(const TrainOptions& o, std::string csv, std::ostream& log) : o_(o), csv_(std::move(csv)), log_(log) {}

  void Attach(Net& net, int64_t batches_per_epoch) override {
    iter_ = o_.admm_iter > 0 ? o_.admm_iter : batches_per_epoch;
    const std::vector<LayerInfo> targets = CompressedTargets(net, o_.compress, o_.seed);
    state_ = net->register_module("admm", AdmmState(targets, net));
    const std::map<std::string, int64_t> pixels = ConvOutputPixels(net->layers(), net->input());
    for (std::size_t k = 0; k < targets.size(); ++k) {
      terms_.push_back({targets[k].name, targets[k].compress, GeometryOf(targets[k]), state_->weights[k],
                        state_->z[k], state_->u[k]});
      if (pixels.count(targets[k].name)) terms_.back().columns = pixels.at(targets[k].name);
    }
    CheckBreakEven(terms_, o_, log_);
  }

  void Started(Net& /*net*/, bool resumed) override {
    if (resumed) {
      ReadRows();
      return;
    }
    AdmmStart(terms_);
    state_->rho.fill_(o_.rho);
    state_->rounds.zero_();
    rows_.clear();
    WriteFileAtomic(csv_, AdmmRoundsCsv(terms_, rows_));
  }

  torch::Tensor Penalty(Net& /*net*/) override {
    return decoupled() ? torch::Tensor() : AdmmPenalty(terms_, state_->rho.item<double>());
  }
  void LearningRate(double lr) override { lr_ = lr; }

  std::string AfterStep(Net& /*net*/, int64_t step, double loss,
                        const std::function<double()>& test_accuracy) override {
    if (decoupled()) AdmmProximalStep(terms_, lr_ * state_->rho.item<double>());
    state_->loss_sum += loss;
    state_->loss_count += 1;
    if ((step + 1) % iter_ != 0) return "";
    torch::NoGradGuard no_grad;
    AdmmRound r;
    r.round = state_->rounds.item<int64_t>() + 1;
    r.step = step + 1;
    r.rho = state_->rho.item<double>();
    AdmmUpdate(terms_, &r);
    r.train_loss = state_->loss_sum.item<double>() / std::max<int64_t>(1, state_->loss_count.item<int64_t>());
    r.test_accuracy = test_accuracy();
    rows_.push_back(r);
    WriteFileAtomic(csv_, AdmmRoundsCsv(terms_, rows_));
    state_->rounds.fill_(r.round);
    state_->rho.fill_(AdmmNextRho(terms_, r.rho, o_));
    state_->loss_sum.zero_();
    state_->loss_count.zero_();
    return AdmmRoundLine(terms_, r);
  }

  bool FinalForm() const override { return false; }
  int64_t iter() const { return iter_; }  // only the last epoch's W goes on to the projection

 private:
  // After --resume: the rows of the rounds the checkpoint has done.
  void ReadRows() {
    rows_.clear();
    const int64_t done = state_->rounds.item<int64_t>();
    std::ifstream in(csv_);
    std::string line;
    PERMDNN_CHECK(static_cast<bool>(std::getline(in, line)) || done == 0,
                  "--resume: {} is missing or empty but the checkpoint has done {} ADMM rounds", csv_, done);
    while (std::getline(in, line)) {
      std::vector<double> f;
      std::stringstream ss(line);
      std::string cell;
      while (std::getline(ss, cell, ',')) f.push_back(std::strtod(cell.c_str(), nullptr));
      PERMDNN_CHECK(f.size() == terms_.size() + 6, "--resume: {}: row '{}' has {} fields, expected {}", csv_, line,
                    f.size(), terms_.size() + 6);
      AdmmRound r;
      r.round = static_cast<int64_t>(f[0]);
      if (r.round > done) break;
      r.step = static_cast<int64_t>(f[1]);
      r.rho = f[2];
      r.residual = f[3];
      r.layer_residual.assign(f.begin() + 4, f.end() - 2);
      r.train_loss = f[f.size() - 2];
      r.test_accuracy = f.back();
      rows_.push_back(r);
    }
    PERMDNN_CHECK(static_cast<int64_t>(rows_.size()) == done, "--resume: {} has {} rounds, the checkpoint {}", csv_,
                  rows_.size(), done);
  }

  bool decoupled() const { return o_.admm_penalty == "decoupled"; }

  const TrainOptions& o_;
  double lr_ = 0;  // the epoch's learning rate (the proximal step's size)
  int64_t iter_ = 1;
  const std::string csv_;
  std::ostream& log_;
  AdmmState state_{nullptr};
  std::vector<AdmmTerm> terms_;
  std::vector<AdmmRound> rows_;
};

// Phase 2: hard projection of the pruned layers, then retraining with the
// masks fixed. A quantized layer (bits) first retrains its kept weights in
// float; at the sharing step of prune_layers.h's schedule (3/4 of the
// phase's steps) they go to the fitted levels ±i·q (the ADMM projection)
// and only the codebook fine-tunes: ADMM-NN's "retrain, then project all",
// and the quantization schedule of the gradual runs (projecting at the start
// of the phase left a 16-level layer nothing but its codebook to retrain).
class RetrainPhase : public TrainHooks {
  struct Target {
    std::string name;
    double density;  // the SPEC's
    std::shared_ptr<PrunedLayerImpl> layer;
  };
  // The pruned layers of the target.
  static std::vector<Target> Pruned(Net& net) {
    std::vector<Target> out;
    for (const LayerInfo& l : net->layers()) {
      if (l.compress.kind != CompressKind::kPrune) continue;
      auto pruned = std::dynamic_pointer_cast<PrunedLayerImpl>(net->named_children()[l.name]);
      PERMDNN_CHECK(pruned != nullptr, "ADMM: layer '{}' is not a pruned layer", l.name);
      out.push_back({l.name, l.compress.density, std::move(pruned)});
    }
    return out;
  }

 public:
  explicit RetrainPhase(int epochs) : epochs_(epochs) {}
  void Attach(Net& /*net*/, int64_t batches_per_epoch) override { total_steps_ = epochs_ * batches_per_epoch; }
  std::string AfterConvert(Net& net) override {
    std::string log;
    for (const auto& [name, density, pruned] : Pruned(net)) {
      pruned->Prune(density);
      log += fmt::format("  {:<8} hard-pruned to density {:.4f}", name, pruned->density());
      if (pruned->bits > 0)
        log += fmt::format(", float retraining, then {} levels at step {}", int64_t{1} << pruned->bits,
                           PruneSchedule{total_steps_}.share_step());
      log += "\n";
    }
    return log;
  }
  void Started(Net& net, bool /*resumed*/) override {
    shared_ = true;
    for (const Target& t : Pruned(net)) shared_ = shared_ && (t.layer->bits == 0 || t.layer->is_shared());
  }
  std::string AfterStep(Net& net, int64_t step, double /*loss*/, const std::function<double()>& /*acc*/) override {
    if (shared_ || step < PruneSchedule{total_steps_}.share_step()) return "";
    std::string log;
    for (const auto& [name, density, pr] : Pruned(net)) {
      if (pr->bits == 0 || pr->is_shared()) continue;
      pr->Share(/*fitted_levels=*/true);
      log += fmt::format("  step {}: {} quantized to {} levels ±i·q, q = {:.6g}, fine-tuning the codebook\n", step,
                         name, int64_t{1} << pr->bits,
                         pr->codebook[int64_t{1} << (pr->bits - 1)].item<double>());
    }
    shared_ = true;
    return log;
  }
  bool UseCompressionSchedule() const override { return false; }
  // Only a quantized model is the one asked for.
  bool FinalForm() const override { return shared_; }

 private:
  int epochs_;
  int64_t total_steps_ = 0;
  bool shared_ = false;
};

}  // namespace

TrainResult TrainAdmm(const TrainOptions& o, std::ostream& log) {
  PERMDNN_CHECK(!o.out_dir.empty(), "--out: a run directory is required");
  const int admm_epochs = CheckAdmmOptions(o);
  CompressSpec::Parse(o.compress);  // a bad SPEC fails here, before any data is read

  TrainOptions p1 = o;
  p1.method = "adam";
  p1.compress = "dense";
  p1.epochs = admm_epochs;
  p1.out_dir = o.out_dir + "/admm";
  const std::string rounds_csv = p1.out_dir + "/admm_rounds.csv";
  int64_t trained = 0, iter = o.admm_iter;
  if (o.resume && fs::exists(p1.out_dir + "/summary.json")) {
    log << fmt::format("ADMM phase done ({}), retraining\n", p1.out_dir);
  } else {
    log << fmt::format("ADMM phase: {} epochs, rho {} (x{} per round), {} penalty, constraints {}\n", admm_epochs,
                       o.rho, o.rho_mult, o.admm_penalty, o.compress);
    AdmmPhase hooks(o, rounds_csv, log);
    TrainResult r1 = TrainWithHooks(p1, log, &hooks);
    iter = hooks.iter();
    if (r1.interrupted) return r1;
    trained = r1.batches_trained;
  }

  TrainOptions p2 = o;
  p2.method = "adam";
  p2.from_dir = p1.out_dir;
  p2.epochs = o.epochs - admm_epochs;
  if (o.stop_after_batches >= 0) p2.stop_after_batches = std::max<int64_t>(0, o.stop_after_batches - trained);
  log << fmt::format("hard projection onto {}, then {} epochs of retraining with the structure fixed\n", o.compress,
                     p2.epochs);
  RetrainPhase hooks2(p2.epochs);
  TrainResult r2 = TrainWithHooks(p2, log, &hooks2);
  if (r2.interrupted) return r2;

  // summary.json: the method and the ADMM phase on top of the retraining's.
  const std::string summary_path = o.out_dir + "/summary.json";
  std::ifstream in(summary_path);
  nlohmann::json s = nlohmann::json::parse(in);
  std::ifstream in1(p1.out_dir + "/summary.json");
  const nlohmann::json s1 = nlohmann::json::parse(in1);
  s["method"] = "admm";
  s["from"] = o.from_dir;
  s["admm"] = {{"epochs", admm_epochs},
               {"retrain_epochs", p2.epochs},
               {"rho", o.rho},
               {"rho_mult", o.rho_mult},
               {"penalty", o.admm_penalty},
               {"rescale_dual", o.rescale_dual},
               {"admm_iter", iter},  // 0: one round per epoch (phase skipped in this call)
               {"final_test_accuracy", s1["final_test_accuracy"]},
               {"train_seconds", s1["train_seconds"]},
               {"rounds_csv", "admm/admm_rounds.csv"}};
  s["total_train_seconds"] = s1["train_seconds"].get<double>() + r2.train_seconds;
  WriteFileAtomic(summary_path, s.dump(2) + "\n");
  r2.train_seconds += s1["train_seconds"].get<double>();
  return r2;
}

}  // namespace permdnn::train
