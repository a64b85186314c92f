// The training loop (see trainer.h).
#include "permdnn/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>

#include "permdnn/core/atomic_file.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/core/progress.h"
#include "src/train/models.h"
#include "src/train/permdiag_layers.h"
#include "permdnn/runtime/onnx_io.h"
#include "src/train/checkpoint_file.h"
#include "src/train/run_metrics.h"
#include "src/train/admm.h"
#include "src/train/train_hooks.h"

namespace permdnn::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kCheckpointFormat = "permdnn-checkpoint/1";

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void OnStopSignal(int sig) {
  g_stop_signal = sig;
  std::signal(sig, SIG_DFL);  // a second Ctrl-C kills at once
}

// Installs the SIGINT/SIGTERM handlers for the lifetime of a Train call.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    old_int_ = std::signal(SIGINT, OnStopSignal);
    old_term_ = std::signal(SIGTERM, OnStopSignal);
  }
  ~StopSignals() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

struct Data {
  torch::Tensor images;  // [N, C, H, W] preprocessed (charlm: token ids [N, T] int64)
  torch::Tensor labels;  // [N] int64 (charlm: the next ids [N, T])
  int64_t count() const { return images.size(0); }
};

Data ToTensors(const ImageDataset& ds, int64_t begin, int64_t n, const Preprocess& pre) {
  Data d;
  d.images = torch::empty({n, 1, ds.rows, ds.cols});
  ds.Batch(begin, n, pre, std::span<float>(d.images.data_ptr<float>(), d.images.numel()));
  d.labels = torch::empty({n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) d.labels.data_ptr<int64_t>()[i] = ds.labels[begin + i];
  return d;
}

// The position and running sums saved in a checkpoint.
struct RunState {
  int64_t epoch = 0;       // 0-based epoch in progress
  int64_t next_batch = 0;  // first batch of `epoch` not yet trained
  double loss_sum = 0, epoch_seconds = 0, train_seconds = 0, best_accuracy = -1;
  int64_t correct = 0, seen = 0, best_epoch = 0;
};


// The options besides --model and --compress that decide the layers' shapes,
// as the command line spells them (a checkpoint records them; --resume
// compares).
std::string ShapeOptions(const TrainOptions& o) {
  return fmt::format("--hidden {} --embed {} --width {} --cell {}", o.hidden, o.embed, o.width, o.cell);
}

void SaveCheckpoint(const std::string& path, Net& net, torch::optim::Adam& opt, const RunState& s,
                    const TrainOptions& o) {
  torch::serialize::OutputArchive ar, model_ar, opt_ar;
  net->save(model_ar);
  opt.save(opt_ar);
  ar.write("model", model_ar);
  ar.write("optimizer", opt_ar);
  ar.write("meta.format", c10::IValue(std::string(kCheckpointFormat)));
  ar.write("meta.model", c10::IValue(o.model));
  ar.write("meta.compress", c10::IValue(o.compress));
  ar.write("meta.seed", c10::IValue(static_cast<int64_t>(o.seed)));
  ar.write("meta.batch", c10::IValue(o.batch));
  ar.write("meta.shape", c10::IValue(ShapeOptions(o)));
  ar.write("meta.epoch", c10::IValue(s.epoch));
  ar.write("meta.next_batch", c10::IValue(s.next_batch));
  ar.write("meta.loss_sum", c10::IValue(s.loss_sum));
  ar.write("meta.correct", c10::IValue(s.correct));
  ar.write("meta.seen", c10::IValue(s.seen));
  ar.write("meta.epoch_seconds", c10::IValue(s.epoch_seconds));
  ar.write("meta.train_seconds", c10::IValue(s.train_seconds));
  ar.write("meta.best_accuracy", c10::IValue(s.best_accuracy));
  ar.write("meta.best_epoch", c10::IValue(s.best_epoch));
  std::ostringstream out;
  ar.save_to(out);
  WriteFileAtomic(path, out.str());
}

RunState LoadCheckpoint(const std::string& path, Net& net, torch::optim::Adam& opt, const TrainOptions& o) {
  RunState s;
  torch::serialize::InputArchive ar;
  auto read = [&](const std::string& key) {
    c10::IValue v;
    PERMDNN_CHECK(ar.try_read(key, v), "checkpoint {}: entry '{}' missing (not a permdnn checkpoint?)", path, key);
    return v;
  };
  try {
    const std::string bytes = runtime::ReadFileBytes(path);
    CheckCheckpointArchive(bytes, path);  // LibTorch's reader trusts the container (checkpoint_file.h)
    std::istringstream in(bytes);
    ar.load_from(in);
    c10::IValue format = read("meta.format");
    PERMDNN_CHECK(format.isString() && format.toStringRef() == kCheckpointFormat,
                  "checkpoint {}: not a {} file", path, kCheckpointFormat);
    std::string model = read("meta.model").toStringRef(), compress = read("meta.compress").toStringRef();
    int64_t seed = read("meta.seed").toInt(), batch = read("meta.batch").toInt();
    PERMDNN_CHECK(model == o.model && compress == o.compress && seed == static_cast<int64_t>(o.seed) &&
                      batch == o.batch,
                  "--resume: {} was written for --model {} --compress {} --seed {} --batch {}, this run asks for "
                  "--model {} --compress {} --seed {} --batch {}",
                  path, model, compress, seed, batch, o.model, o.compress, o.seed, o.batch);
    // The options that shape the layers (checkpoints before 2026-12-06 do
    // not record them; a mismatch there fails in the tensor load below).
    c10::IValue shape;
    if (ar.try_read("meta.shape", shape))
      PERMDNN_CHECK(shape.isString() && shape.toStringRef() == ShapeOptions(o),
                    "--resume: {} was written for {}, this run asks for {}", path,
                    shape.isString() ? shape.toStringRef() : std::string("(unreadable)"), ShapeOptions(o));
    torch::serialize::InputArchive model_ar, opt_ar;
    PERMDNN_CHECK(ar.try_read("model", model_ar) && ar.try_read("optimizer", opt_ar),
                  "checkpoint {}: model or optimizer state missing", path);
    net->load(model_ar);
    opt.load(opt_ar);
    s.epoch = read("meta.epoch").toInt();
    s.next_batch = read("meta.next_batch").toInt();
    s.loss_sum = read("meta.loss_sum").toDouble();
    s.correct = read("meta.correct").toInt();
    s.seen = read("meta.seen").toInt();
    s.epoch_seconds = read("meta.epoch_seconds").toDouble();
    s.train_seconds = read("meta.train_seconds").toDouble();
    s.best_accuracy = read("meta.best_accuracy").toDouble();
    s.best_epoch = read("meta.best_epoch").toInt();
    // The numbers come from a file: in range before the trainer indexes with them.
    PERMDNN_CHECK(s.epoch >= 0 && s.epoch <= 1000000000 && s.next_batch >= 0 && s.correct >= 0 && s.seen >= 0 &&
                      s.correct <= s.seen && s.best_epoch >= 0 && s.best_epoch <= s.epoch + 1,
                  "checkpoint {}: position out of range (epoch {}, next_batch {}, correct {} of {}, best_epoch {})",
                  path, s.epoch, s.next_batch, s.correct, s.seen, s.best_epoch);
    for (double v : {s.loss_sum, s.epoch_seconds, s.train_seconds, s.best_accuracy})
      PERMDNN_CHECK(std::isfinite(v), "checkpoint {}: running sums must be finite, got {}", path, v);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    Fail("checkpoint {} is corrupt or unreadable ({}); delete it (or the run directory) to start over", path, what);
  }
  return s;
}

struct EvalResult {
  double loss = 0, accuracy = 0;
  std::vector<int32_t> predictions;
};

// Cross-entropy over every prediction: logits [N, C] with labels [N], or
// per time step [N, T, C] with [N, T].
torch::Tensor Loss(const torch::Tensor& logits, const torch::Tensor& y) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}));
}

EvalResult Evaluate(Net& net, const Data& d) {
  torch::NoGradGuard no_grad;
  net->eval();
  EvalResult r;
  r.predictions.resize(static_cast<std::size_t>(d.labels.numel()));
  const int64_t per_sample = d.labels.numel() / std::max<int64_t>(1, d.count());
  double loss = 0;
  int64_t correct = 0;
  const int64_t chunk = 1000;
  for (int64_t b = 0; b < d.count(); b += chunk) {
    const int64_t n = std::min(chunk, d.count() - b);
    torch::Tensor logits = net->forward(d.images.narrow(0, b, n));
    torch::Tensor y = d.labels.narrow(0, b, n);
    loss += Loss(logits, y).item<double>() * static_cast<double>(y.numel());
    torch::Tensor pred = logits.argmax(-1);
    correct += pred.eq(y).sum().item<int64_t>();
    torch::Tensor p32 = pred.to(torch::kInt32).contiguous();
    std::copy_n(p32.data_ptr<int32_t>(), p32.numel(), r.predictions.begin() + b * per_sample);
  }
  net->train();
  r.loss = loss / static_cast<double>(std::max<int64_t>(1, d.labels.numel()));
  r.accuracy = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, d.labels.numel()));
  return r;
}

}  // namespace

std::vector<int64_t> EpochPermutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 17);
  // Fisher–Yates with our own index draw: identical on every platform.
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

double LearningRate(const TrainOptions& o, int64_t epoch) {
  return epoch >= o.epochs - o.epochs / 3 ? o.lr * 0.1 : o.lr;
}

namespace {

// The data (Fashion-MNIST, or synthetic images for tests) as tensors.
struct TrainData {
  Preprocess pre;
  Data train, test;
  ModelInput input;
};

// Windows of T + 1 ids (TextCorpus::WindowCount): inputs the first T, targets the last T.
Data Windows(const std::vector<int64_t>& ids, int64_t seq_len, int64_t limit, const std::string& split) {
  PERMDNN_CHECK(TextCorpus::WindowCount(static_cast<int64_t>(ids.size()), seq_len) >= 1,
                "charlm: the {} split has {} characters, too few for one sequence of --seq-len {} (+1)", split,
                ids.size(), seq_len);
  // --limit-*: windows spread evenly over the split (core's WindowStarts).
  std::vector<int64_t> starts = TextCorpus::WindowStarts(static_cast<int64_t>(ids.size()), seq_len, limit);
  const int64_t n = static_cast<int64_t>(starts.size());
  torch::Tensor first = torch::from_blob(starts.data(), {n}, torch::kLong);
  torch::Tensor all = torch::from_blob(const_cast<int64_t*>(ids.data()), {static_cast<int64_t>(ids.size())},
                                       torch::kLong);
  torch::Tensor idx = (first.unsqueeze(1) * seq_len + torch::arange(seq_len).unsqueeze(0)).reshape({-1});
  return {all.index_select(0, idx).view({n, seq_len}), all.index_select(0, idx + 1).view({n, seq_len})};
}

TrainData LoadTrainData(const TrainOptions& o) {
  TrainData d;
  d.input.hidden = o.hidden;
  d.input.width = o.width;
  d.input.embed = o.embed;
  d.input.cell = o.cell;
  if (IsTokenModel(o.model)) {
    PERMDNN_CHECK(o.seq_len >= 1, "--seq-len must be >= 1, got {}", o.seq_len);
    const TextCorpus c = LoadTextCorpus(o.data_dir.empty() ? kDefaultTextCorpusDir : o.data_dir);
    d.train = Windows(c.train_ids, o.seq_len, o.limit_train, "training");
    d.test = Windows(c.test_ids, o.seq_len, o.limit_test, "held-out");
    d.input.classes = static_cast<int>(c.vocab());
    d.input.seq_len = o.seq_len;
    d.input.alphabet = c.alphabet;
    return d;
  }
  if (o.synthetic_train > 0) {
    ImageDataset all = SyntheticDataset(o.synthetic_train + o.synthetic_test, o.synthetic_side, o.synthetic_side,
                                        o.synthetic_classes, 12345);
    d.train = ToTensors(all, 0, o.synthetic_train, d.pre);
    d.test = ToTensors(all, o.synthetic_train, o.synthetic_test, d.pre);
    d.input.rows = d.input.cols = o.synthetic_side;
    d.input.classes = o.synthetic_classes;
  } else {
    const std::string dir = o.data_dir.empty() ? kDefaultFashionMnistDir : o.data_dir;
    ImageDataset tr = LoadFashionMnist(dir, "train"), te = LoadFashionMnist(dir, "test");
    int64_t n = o.limit_train > 0 ? std::min(o.limit_train, tr.count) : tr.count;
    d.train = ToTensors(tr, 0, n, d.pre);
    d.test = ToTensors(te, 0, o.limit_test > 0 ? std::min(o.limit_test, te.count) : te.count, d.pre);
    d.input.rows = tr.rows;
    d.input.cols = tr.cols;
    d.input.classes = tr.num_classes;
  }
  return d;
}

// One call of Train: the model, its optimizer, the position (RunState) and
// the result, advanced by the named steps Start, RunBatches, EndEpoch and
// Finish.
class TrainSession {
 public:
  TrainSession(const TrainOptions& o, std::ostream& log, TrainHooks* hooks)
      : o_(o),
        log_(log),
        hooks_(hooks ? hooks : &no_hooks_),
        data_(LoadTrainData(o)),
        net_((torch::manual_seed(o.seed), Net(o.model, CompressSpec::Parse(o.compress), data_.input, o.seed))),
        opt_(net_->parameters(), torch::optim::AdamOptions(o.lr)),
        last_path_(o.out_dir + "/checkpoint_last.pt"),
        best_path_(o.out_dir + "/checkpoint_best.pt"),
        num_batches_((data_.train.count() + o.batch - 1) / o.batch),
        total_steps_(num_batches_ * o.epochs) {}

  // Resumes from checkpoint_last.pt, or starts (from a dense run's
  // projection with --from); records each layer's storage.
  void Start() {
    fs::create_directories(o_.out_dir);
    hooks_->Attach(net_, num_batches_);
    for (const auto& s : net_->Storage())
      result_.layers.push_back({s.name, s.compress, s.dense_params, s.stored_params, s.bytes});
    if (o_.resume && fs::exists(last_path_)) {
      st_ = LoadCheckpoint(last_path_, net_, opt_, o_);
      PERMDNN_CHECK(st_.next_batch <= num_batches_,
                    "--resume: {} stopped at batch {} of epoch {}, but this run has {} batches per epoch (a "
                    "different training set?)",
                    last_path_, st_.next_batch, st_.epoch + 1, num_batches_);
      result_.history = ReadMetrics(o_.out_dir, st_.epoch);
      log_ << fmt::format("resuming {} at epoch {}, batch {}\n", last_path_, st_.epoch + 1, st_.next_batch);
      hooks_->Started(net_, true);
      return;
    }
    if (o_.resume) log_ << fmt::format("--resume: no {} yet, starting from scratch\n", last_path_);
    PERMDNN_CHECK(o_.resume || !fs::exists(last_path_),
                  "--out {} already holds a run (checkpoint_last.pt); pass --resume to continue it or choose "
                  "another directory",
                  o_.out_dir);
    if (!o_.from_dir.empty()) ConvertFrom();
    hooks_->Started(net_, false);
    WriteMetrics(o_.out_dir, result_.history);
  }

  // The epochs left; false when a stop signal or --stop-after-batches
  // interrupted (the checkpoint is saved).
  bool RunEpochs() {
    StopSignals signals;
    net_->train();
    for (; st_.epoch < o_.epochs; ++st_.epoch, st_.next_batch = 0) {
      const double lr = LearningRate(o_, st_.epoch);
      for (auto& group : opt_.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
      lr_ = lr;
      hooks_->LearningRate(lr);
      if (st_.next_batch == 0) {
        st_.loss_sum = 0;
        st_.correct = st_.seen = 0;
        st_.epoch_seconds = 0;
      }
      const auto t0 = std::chrono::steady_clock::now();
      const bool done = RunBatches();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!done) {
        st_.epoch_seconds += seconds;
        st_.train_seconds += seconds;
        SaveCheckpoint(last_path_, net_, opt_, st_, o_);
        log_ << fmt::format("interrupted at epoch {}, batch {}/{}: saved {} (continue with --resume)\n",
                            st_.epoch + 1, st_.next_batch, num_batches_, last_path_);
        result_.interrupted = true;
        result_.batches_trained = batches_this_call_;
        result_.epochs_done = static_cast<int>(st_.epoch);
        return false;
      }
      EndEpoch(lr, seconds);
    }
    return true;
  }

  // The final model's storage, the result and summary.json.
  TrainResult Finish() {
    result_.epochs_done = o_.epochs;
    result_.final_accuracy = result_.history.empty() ? 0 : result_.history.back().test_accuracy;
    result_.best_accuracy = st_.best_accuracy;
    result_.best_epoch = static_cast<int>(st_.best_epoch);
    if (IsTokenModel(o_.model) && !result_.history.empty()) {
      result_.final_bpc = result_.history.back().test_loss / std::log(2.0);
      for (const EpochMetrics& m : result_.history)
        if (m.epoch == result_.best_epoch) result_.best_bpc = m.test_loss / std::log(2.0);
    }
    // Storage of the final model (pruned layers: the density reached).
    const std::vector<StorageStats> storage = net_->Storage();
    for (std::size_t k = 0; k < storage.size() && k < result_.layers.size(); ++k) {
      const StorageStats& s = storage[k];
      result_.layers[k].compress = s.compress;
      result_.layers[k].dense_params = s.dense_params;
      result_.layers[k].stored_params = s.stored_params;
      result_.layers[k].bytes = s.bytes;
    }
    const StorageStats total = NetImpl::Total(storage);
    result_.dense_params = total.dense_params;
    result_.stored_params = total.stored_params;
    result_.model_bytes = total.bytes;
    result_.dense_bytes = total.dense_bytes;
    result_.compression = total.compression();
    result_.train_seconds = st_.train_seconds;
    result_.batches_trained = batches_this_call_;
    WriteSummaryJson();
    return result_;
  }

  TrainResult& result() { return result_; }

 private:
  // --from: the dense run's layers projected onto this model's compression.
  void ConvertFrom() {
    std::vector<ConversionReport> reports = net_->LoadFromRun(o_.from_dir);
    log_ << fmt::format("converted {} (projection onto the chosen compression):\n", o_.from_dir);
    for (const auto& r : reports) {
      log_ << fmt::format("  {:<8} {:<14} kept energy {:6.2f}%\n", r.layer, r.compress, 100.0 * r.kept_energy);
      for (auto& l : result_.layers)
        if (l.name == r.layer) l.kept_energy = r.kept_energy;
    }
    log_ << hooks_->AfterConvert(net_);
    result_.converted_accuracy = Evaluate(net_, data_.test).accuracy;
    log_ << fmt::format("  test accuracy after projection, before fine-tuning: {:.2f}%\n",
                        100.0 * result_.converted_accuracy);
  }

  // --weight-decay: W ← W·(1 − lr·wd) for every trainable tensor of two or
  // more dimensions, after the Adam step (decoupled, as AdamW). Masked
  // weights stay zero; the layers re-apply their structure afterwards.
  void DecayWeights() {
    if (o_.weight_decay <= 0) return;
    torch::NoGradGuard no_grad;
    const double keep = 1.0 - lr_ * o_.weight_decay;
    for (auto& p : net_->parameters())
      if (p.requires_grad() && p.dim() >= 2) p.mul_(keep);
  }

  // The batches of the current epoch from st_.next_batch: compression
  // schedule, forward, backward, Adam step. False when stopped early
  // (st_.next_batch is then the first batch not trained).
  bool RunBatches() {
    const int64_t n = data_.train.count();
    std::vector<int64_t> perm = EpochPermutation(n, o_.seed, st_.epoch);
    torch::Tensor perm_t = torch::from_blob(perm.data(), {n}, torch::kLong);
    Progress progress(num_batches_, "batches", o_.progress && Progress::IsTerminal());
    for (int64_t b = st_.next_batch; b < num_batches_; ++b) {
      const int64_t begin = b * o_.batch, len = std::min(o_.batch, n - begin);
      torch::Tensor idx = perm_t.narrow(0, begin, len);
      torch::Tensor x = data_.train.images.index_select(0, idx), y = data_.train.labels.index_select(0, idx);
      const int64_t step = st_.epoch * num_batches_ + b;
      const std::string changed =
          hooks_->UseCompressionSchedule() ? net_->CompressionStep(step, total_steps_) : std::string();
      if (!changed.empty()) {
        progress.Finish();
        log_ << changed;
      }
      opt_.zero_grad();
      torch::Tensor logits = net_->forward(x);
      torch::Tensor loss = Loss(logits, y);
      torch::Tensor penalty = hooks_->Penalty(net_);
      if (torch::Tensor p = net_->CompressionPenalty(); p.defined()) penalty = penalty.defined() ? penalty + p : p;
      (penalty.defined() ? loss + penalty : loss).backward();
      opt_.step();
      DecayWeights();
      net_->AfterOptimizerStep();
      const std::string hooked =
          hooks_->AfterStep(net_, step, loss.item<double>(), [&] { return Evaluate(net_, data_.test).accuracy; });
      if (!hooked.empty()) {
        progress.Finish();
        log_ << hooked;
        log_.flush();
      }
      st_.loss_sum += loss.item<double>() * static_cast<double>(y.numel());
      st_.correct += logits.argmax(-1).eq(y).sum().item<int64_t>();
      st_.seen += y.numel();
      ++batches_this_call_;
      progress.Update(b + 1, fmt::format("epoch {}/{}  loss {:.4f}", st_.epoch + 1, o_.epochs,
                                         st_.loss_sum / std::max<int64_t>(1, st_.seen)));
      if (g_stop_signal != 0 || (o_.stop_after_batches >= 0 && batches_this_call_ >= o_.stop_after_batches)) {
        progress.Finish();
        st_.next_batch = b + 1;
        return false;
      }
    }
    progress.Finish();
    return true;
  }

  // After an epoch: test evaluation, metrics, the best checkpoint with the
  // run description, the last checkpoint, the log line.
  void EndEpoch(double lr, double train_time) {
    EvalResult ev = Evaluate(net_, data_.test);
    EpochMetrics m;
    m.epoch = static_cast<int>(st_.epoch + 1);
    m.lr = lr;
    m.train_loss = st_.loss_sum / std::max<int64_t>(1, st_.seen);
    m.train_accuracy = static_cast<double>(st_.correct) / std::max<int64_t>(1, st_.seen);
    m.test_loss = ev.loss;
    m.test_accuracy = ev.accuracy;
    m.seconds = st_.epoch_seconds + train_time;
    st_.train_seconds += train_time;
    // A pruned model counts as "best" only once its schedule is complete (an
    // earlier, denser epoch is not the model asked for); the last epoch
    // always yields a model description.
    const bool final_form =
        (hooks_->FinalForm() &&
         (!hooks_->UseCompressionSchedule() || net_->CompressionDone((st_.epoch + 1) * num_batches_, total_steps_))) ||
        (st_.epoch + 1 == o_.epochs && st_.best_accuracy < 0);
    m.best = final_form && ev.accuracy > st_.best_accuracy;
    result_.history.push_back(m);
    st_.next_batch = 0;
    if (m.best) {
      st_.best_accuracy = ev.accuracy;
      st_.best_epoch = m.epoch;
      RunState best_state = st_;
      best_state.epoch = st_.epoch + 1;
      SaveCheckpoint(best_path_, net_, opt_, best_state, o_);
      net_->WriteRunDescription(o_.out_dir, data_.pre, ev.accuracy, ev.loss);
      std::vector<int64_t> pred_shape(data_.test.labels.sizes().begin(), data_.test.labels.sizes().end());
      WriteNpy<int32_t>(o_.out_dir + "/test_predictions.npy", ev.predictions, pred_shape);
    }
    WriteMetrics(o_.out_dir, result_.history);
    RunState next = st_;
    next.epoch = st_.epoch + 1;
    next.loss_sum = 0;
    next.correct = next.seen = 0;
    next.epoch_seconds = 0;
    SaveCheckpoint(last_path_, net_, opt_, next, o_);
    log_ << fmt::format("epoch {:>2}/{}  lr {:.0e}  train loss {:.4f} acc {:.2f}%  test loss {:.4f} acc {:.2f}%{}  "
                        "{:.1f} s ({:.1f} batches/s)\n",
                        m.epoch, o_.epochs, lr, m.train_loss, 100 * m.train_accuracy, m.test_loss,
                        100 * m.test_accuracy, m.best ? " *" : "", m.seconds,
                        num_batches_ / std::max(1e-9, m.seconds));
    log_.flush();
  }

  void WriteSummaryJson() const {
    const TrainResult& r = result_;
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : r.layers) {
      nlohmann::json j = {{"name", l.name},
                          {"compress", l.compress},
                          {"dense_params", l.dense_params},
                          {"stored_params", l.stored_params},
                          {"bytes", l.bytes}};
      if (l.kept_energy >= 0) j["kept_energy"] = l.kept_energy;
      layers.push_back(j);
    }
    nlohmann::json summary = {{"model", o_.model},
                              {"compress", o_.compress},
                              {"from", o_.from_dir},
                              {"seed", o_.seed},
                              {"epochs", o_.epochs},
                              {"batch", o_.batch},
                              {"lr", o_.lr},
                              {"weight_decay", o_.weight_decay},
                              {"limit_train", o_.limit_train},
                              {"limit_test", o_.limit_test},
                              {"train_samples", data_.train.count()},
                              {"test_samples", data_.test.count()},
                              {"final_test_accuracy", r.final_accuracy},
                              {"best_test_accuracy", r.best_accuracy},
                              {"best_epoch", r.best_epoch},
                              {"converted_accuracy", r.converted_accuracy},
                              {"cell", o_.cell},
                              {"hidden", o_.hidden},
                              {"width", o_.width},
                              {"embed", o_.embed},
                              {"seq_len", o_.seq_len},
                              {"final_test_bpc", r.final_bpc},
                              {"best_test_bpc", r.best_bpc},
                              {"dense_params", r.dense_params},
                              {"stored_params", r.stored_params},
                              {"model_bytes", r.model_bytes},
                              {"dense_bytes", r.dense_bytes},
                              {"compression", r.compression},
                              {"train_seconds", r.train_seconds},
                              {"threads", o_.threads},
                              {"layers", layers}};
    WriteFileAtomic(o_.out_dir + "/summary.json", summary.dump(2) + "\n");
  }

  const TrainOptions& o_;
  std::ostream& log_;
  TrainHooks no_hooks_;
  TrainHooks* hooks_;
  TrainData data_;
  Net net_;
  torch::optim::Adam opt_;
  double lr_ = 0;  // the current epoch's learning rate
  const std::string last_path_, best_path_;
  const int64_t num_batches_;
  const int64_t total_steps_;  // the pruning schedule's clock (prune_layers.h)
  int64_t batches_this_call_ = 0;
  RunState st_;
  TrainResult result_;
};

}  // namespace

TrainResult Train(const TrainOptions& o, std::ostream& log) {
  if (o.method == "admm") return TrainAdmm(o, log);
  PERMDNN_CHECK(o.method == "adam", "--method must be adam or admm, got '{}'", o.method);
  return TrainWithHooks(o, log, nullptr);
}

TrainResult TrainWithHooks(const TrainOptions& o, std::ostream& log, TrainHooks* hooks) {
  PERMDNN_CHECK(!o.out_dir.empty(), "--out: a run directory is required");
  PERMDNN_CHECK(o.epochs >= 1, "--epochs must be >= 1, got {}", o.epochs);
  PERMDNN_CHECK(o.batch >= 1, "--batch must be >= 1, got {}", o.batch);
  PERMDNN_CHECK(o.lr > 0, "--lr must be > 0, got {}", o.lr);
  PERMDNN_CHECK(o.weight_decay >= 0 && o.weight_decay * o.lr < 1,
                "--weight-decay must be >= 0 and below 1/lr ({}), got {}", 1 / o.lr, o.weight_decay);
  CompressSpec::Parse(o.compress);  // a bad SPEC fails before any data is read
  ConfigureTrainingThreads(o.threads);
  TrainSession session(o, log, hooks);
  session.Start();
  if (!session.RunEpochs()) return session.result();
  return session.Finish();
}

std::string SummaryText(const TrainOptions& o, const TrainResult& r) {
  std::string s = fmt::format("{} --compress {}{}: {} epochs in {:.1f} s\n", o.model, o.compress,
                              o.from_dir.empty() ? "" : " (converted from " + o.from_dir + ")", r.epochs_done,
                              r.train_seconds);
  std::size_t width = 14;  // the compress column fits its longest entry
  for (const auto& l : r.layers) width = std::max(width, l.compress.size());
  s += fmt::format("  {:<8} {:<{}} {:>12} {:>12} {:>12} {:>8}\n", "layer", "compress", width, "dense params",
                   "stored", "bytes", "kept");
  for (const auto& l : r.layers)
    s += fmt::format("  {:<8} {:<{}} {:>12} {:>12} {:>12} {:>8}\n", l.name, l.compress, width, l.dense_params,
                     l.stored_params, l.bytes, l.kept_energy >= 0 ? fmt::format("{:.1f}%", 100 * l.kept_energy) : "");
  s += fmt::format("  test accuracy {:.2f}% (final), best {:.2f}% at epoch {}", 100 * r.final_accuracy,
                   100 * r.best_accuracy, r.best_epoch);
  if (r.converted_accuracy >= 0) s += fmt::format(", {:.2f}% right after conversion", 100 * r.converted_accuracy);
  if (r.final_bpc >= 0)
    s += fmt::format("\n  held-out bits per character {:.4f} (final), {:.4f} at the best epoch", r.final_bpc,
                     r.best_bpc);
  s += fmt::format("\n  parameters stored {} of {} dense, model {} bytes ({:.2f} MiB), compression {:.2f}x\n",
                   r.stored_params, r.dense_params, r.model_bytes, r.model_bytes / 1048576.0, r.compression);
  return s;
}

}  // namespace permdnn::train
