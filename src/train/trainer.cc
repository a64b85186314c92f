// The training loop (see trainer.h).
#include "permdnn/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
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
  torch::Tensor images;  // [N, C, H, W] preprocessed
  torch::Tensor labels;  // [N] int64
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
    ar.load_from(path);
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

EvalResult Evaluate(Net& net, const Data& d) {
  torch::NoGradGuard no_grad;
  net->eval();
  EvalResult r;
  r.predictions.resize(static_cast<std::size_t>(d.count()));
  double loss = 0;
  int64_t correct = 0;
  const int64_t chunk = 1000;
  for (int64_t b = 0; b < d.count(); b += chunk) {
    const int64_t n = std::min(chunk, d.count() - b);
    torch::Tensor logits = net->forward(d.images.narrow(0, b, n));
    torch::Tensor y = d.labels.narrow(0, b, n);
    loss += torch::nn::functional::cross_entropy(logits, y).item<double>() * n;
    torch::Tensor pred = logits.argmax(1);
    correct += pred.eq(y).sum().item<int64_t>();
    torch::Tensor p32 = pred.to(torch::kInt32).contiguous();
    std::copy_n(p32.data_ptr<int32_t>(), n, r.predictions.begin() + b);
  }
  net->train();
  r.loss = loss / std::max<int64_t>(1, d.count());
  r.accuracy = static_cast<double>(correct) / std::max<int64_t>(1, d.count());
  return r;
}

nlohmann::json ToJson(const EpochMetrics& m) {
  return {{"epoch", m.epoch},
          {"lr", m.lr},
          {"train_loss", m.train_loss},
          {"train_accuracy", m.train_accuracy},
          {"test_loss", m.test_loss},
          {"test_accuracy", m.test_accuracy},
          {"seconds", m.seconds},
          {"best", m.best}};
}

EpochMetrics FromJson(const nlohmann::json& j) {
  EpochMetrics m;
  m.epoch = j.at("epoch").get<int>();
  m.lr = j.at("lr").get<double>();
  m.train_loss = j.at("train_loss").get<double>();
  m.train_accuracy = j.at("train_accuracy").get<double>();
  m.test_loss = j.at("test_loss").get<double>();
  m.test_accuracy = j.at("test_accuracy").get<double>();
  m.seconds = j.at("seconds").get<double>();
  m.best = j.at("best").get<bool>();
  return m;
}

void WriteMetrics(const std::string& dir, const std::vector<EpochMetrics>& history) {
  nlohmann::json j = nlohmann::json::array();
  std::string csv = "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,seconds,best\n";
  for (const auto& m : history) {
    j.push_back(ToJson(m));
    csv += fmt::format("{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.3f},{}\n", m.epoch, m.lr, m.train_loss,
                       m.train_accuracy, m.test_loss, m.test_accuracy, m.seconds, m.best ? 1 : 0);
  }
  WriteFileAtomic(dir + "/metrics.json", j.dump(2) + "\n");
  WriteFileAtomic(dir + "/metrics.csv", csv);
}

std::vector<EpochMetrics> ReadMetrics(const std::string& dir, int64_t epochs_done) {
  std::vector<EpochMetrics> out;
  std::ifstream in(dir + "/metrics.json");
  if (!in) return out;
  try {
    for (const auto& j : nlohmann::json::parse(in))
      if (j.at("epoch").get<int64_t>() <= epochs_done) out.push_back(FromJson(j));
  } catch (const std::exception& e) {
    Fail("--resume: {}/metrics.json is unreadable ({})", dir, e.what());
  }
  return out;
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

TrainResult Train(const TrainOptions& o, std::ostream& log) {
  PERMDNN_CHECK(!o.out_dir.empty(), "--out: a run directory is required");
  PERMDNN_CHECK(o.epochs >= 1, "--epochs must be >= 1, got {}", o.epochs);
  PERMDNN_CHECK(o.batch >= 1, "--batch must be >= 1, got {}", o.batch);
  PERMDNN_CHECK(o.lr > 0, "--lr must be > 0, got {}", o.lr);
  CompressSpec spec = CompressSpec::Parse(o.compress);
  ConfigureTrainingThreads(o.threads);

  // Data.
  Preprocess pre;
  Data train, test;
  ModelInput input;
  if (o.synthetic_train > 0) {
    ImageDataset all = SyntheticDataset(o.synthetic_train + o.synthetic_test, o.synthetic_side, o.synthetic_side,
                                        o.synthetic_classes, 12345);
    train = ToTensors(all, 0, o.synthetic_train, pre);
    test = ToTensors(all, o.synthetic_train, o.synthetic_test, pre);
    input = {1, o.synthetic_side, o.synthetic_side, o.synthetic_classes};
  } else {
    const std::string dir = o.data_dir.empty() ? kDefaultFashionMnistDir : o.data_dir;
    ImageDataset tr = LoadFashionMnist(dir, "train"), te = LoadFashionMnist(dir, "test");
    int64_t n = o.limit_train > 0 ? std::min(o.limit_train, tr.count) : tr.count;
    train = ToTensors(tr, 0, n, pre);
    test = ToTensors(te, 0, te.count, pre);
    input = {1, tr.rows, tr.cols, tr.num_classes};
  }

  // Model and optimizer.
  torch::manual_seed(o.seed);
  Net net(o.model, spec, input, o.seed);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(o.lr));
  fs::create_directories(o.out_dir);
  const std::string last_path = o.out_dir + "/checkpoint_last.pt", best_path = o.out_dir + "/checkpoint_best.pt";

  TrainResult result;
  std::vector<StorageStats> storage = net->Storage();
  for (const auto& s : storage) result.layers.push_back({s.name, s.compress, s.dense_params, s.stored_params, s.bytes});

  RunState st;
  bool resumed = false;
  if (o.resume && fs::exists(last_path)) {
    st = LoadCheckpoint(last_path, net, opt, o);
    result.history = ReadMetrics(o.out_dir, st.epoch);
    resumed = true;
    log << fmt::format("resuming {} at epoch {}, batch {}\n", last_path, st.epoch + 1, st.next_batch);
  } else {
    if (o.resume) log << fmt::format("--resume: no {} yet, starting from scratch\n", last_path);
    PERMDNN_CHECK(o.resume || !fs::exists(last_path),
                  "--out {} already holds a run (checkpoint_last.pt); pass --resume to continue it or choose "
                  "another directory",
                  o.out_dir);
    if (!o.from_dir.empty()) {
      std::vector<ConversionReport> reports = net->LoadFromRun(o.from_dir);
      log << fmt::format("converted {} (projection onto the chosen compression):\n", o.from_dir);
      for (const auto& r : reports) {
        log << fmt::format("  {:<8} {:<14} kept energy {:6.2f}%\n", r.layer, r.compress, 100.0 * r.kept_energy);
        for (auto& l : result.layers)
          if (l.name == r.layer) l.kept_energy = r.kept_energy;
      }
      result.converted_accuracy = Evaluate(net, test).accuracy;
      log << fmt::format("  test accuracy after projection, before fine-tuning: {:.2f}%\n",
                         100.0 * result.converted_accuracy);
    }
  }
  if (!resumed) WriteMetrics(o.out_dir, result.history);

  StopSignals signals;
  const int64_t n = train.count();
  const int64_t num_batches = (n + o.batch - 1) / o.batch;
  const int64_t total_steps = num_batches * o.epochs;  // the pruning schedule's clock (prune_layers.h)
  int64_t batches_this_call = 0;
  net->train();
  for (; st.epoch < o.epochs; ++st.epoch, st.next_batch = 0) {
    const double lr = LearningRate(o, st.epoch);
    for (auto& group : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    std::vector<int64_t> perm = EpochPermutation(n, o.seed, st.epoch);
    torch::Tensor perm_t = torch::from_blob(perm.data(), {n}, torch::kLong);
    Progress progress(num_batches, "batches", o.progress && Progress::IsTerminal());
    auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    if (st.next_batch == 0) {
      st.loss_sum = 0;
      st.correct = st.seen = 0;
      st.epoch_seconds = 0;
    }
    for (int64_t b = st.next_batch; b < num_batches; ++b) {
      const int64_t begin = b * o.batch, len = std::min(o.batch, n - begin);
      torch::Tensor idx = perm_t.narrow(0, begin, len);
      torch::Tensor x = train.images.index_select(0, idx), y = train.labels.index_select(0, idx);
      const std::string changed = net->CompressionStep(st.epoch * num_batches + b, total_steps);
      if (!changed.empty()) {
        progress.Finish();
        log << changed;
      }
      opt.zero_grad();
      torch::Tensor logits = net->forward(x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
      loss.backward();
      opt.step();
      net->AfterOptimizerStep();
      st.loss_sum += loss.item<double>() * len;
      st.correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      st.seen += len;
      ++batches_this_call;
      progress.Update(b + 1, fmt::format("epoch {}/{}  loss {:.4f}", st.epoch + 1, o.epochs,
                                         st.loss_sum / std::max<int64_t>(1, st.seen)));
      if (g_stop_signal != 0 || (o.stop_after_batches >= 0 && batches_this_call >= o.stop_after_batches)) {
        progress.Finish();
        st.next_batch = b + 1;
        st.epoch_seconds += elapsed();
        st.train_seconds += elapsed();
        SaveCheckpoint(last_path, net, opt, st, o);
        log << fmt::format("interrupted at epoch {}, batch {}/{}: saved {} (continue with --resume)\n",
                           st.epoch + 1, st.next_batch, num_batches, last_path);
        result.interrupted = true;
        result.epochs_done = static_cast<int>(st.epoch);
        return result;
      }
    }
    progress.Finish();
    const double train_time = elapsed();
    EvalResult ev = Evaluate(net, test);
    EpochMetrics m;
    m.epoch = static_cast<int>(st.epoch + 1);
    m.lr = lr;
    m.train_loss = st.loss_sum / std::max<int64_t>(1, st.seen);
    m.train_accuracy = static_cast<double>(st.correct) / std::max<int64_t>(1, st.seen);
    m.test_loss = ev.loss;
    m.test_accuracy = ev.accuracy;
    m.seconds = st.epoch_seconds + train_time;
    st.train_seconds += train_time;
    // A pruned model counts as "best" only once its schedule is complete (an
    // earlier, denser epoch is not the model asked for); the last epoch
    // always yields a model description.
    const bool final_form = net->CompressionDone((st.epoch + 1) * num_batches, total_steps) ||
                            (st.epoch + 1 == o.epochs && st.best_accuracy < 0);
    m.best = final_form && ev.accuracy > st.best_accuracy;
    result.history.push_back(m);
    st.next_batch = 0;
    if (m.best) {
      st.best_accuracy = ev.accuracy;
      st.best_epoch = m.epoch;
      RunState best_state = st;
      best_state.epoch = st.epoch + 1;
      SaveCheckpoint(best_path, net, opt, best_state, o);
      net->WriteRunDescription(o.out_dir, pre, ev.accuracy);
      WriteNpy<int32_t>(o.out_dir + "/test_predictions.npy", ev.predictions, {static_cast<int64_t>(ev.predictions.size())});
    }
    WriteMetrics(o.out_dir, result.history);
    RunState next = st;
    next.epoch = st.epoch + 1;
    next.loss_sum = 0;
    next.correct = next.seen = 0;
    next.epoch_seconds = 0;
    SaveCheckpoint(last_path, net, opt, next, o);
    log << fmt::format("epoch {:>2}/{}  lr {:.0e}  train loss {:.4f} acc {:.2f}%  test loss {:.4f} acc {:.2f}%{}  "
                       "{:.1f} s ({:.1f} batches/s)\n",
                       m.epoch, o.epochs, lr, m.train_loss, 100 * m.train_accuracy, m.test_loss,
                       100 * m.test_accuracy, m.best ? " *" : "", m.seconds, num_batches / std::max(1e-9, m.seconds));
    log.flush();
  }

  result.epochs_done = o.epochs;
  result.final_accuracy = result.history.empty() ? 0 : result.history.back().test_accuracy;
  result.best_accuracy = st.best_accuracy;
  result.best_epoch = static_cast<int>(st.best_epoch);
  // Storage of the final model (pruned layers: the density reached).
  storage = net->Storage();
  for (std::size_t k = 0; k < storage.size() && k < result.layers.size(); ++k) {
    const StorageStats& s = storage[k];
    result.layers[k].compress = s.compress;
    result.layers[k].dense_params = s.dense_params;
    result.layers[k].stored_params = s.stored_params;
    result.layers[k].bytes = s.bytes;
  }
  StorageStats total = NetImpl::Total(storage);
  result.dense_params = total.dense_params;
  result.stored_params = total.stored_params;
  result.model_bytes = total.bytes;
  result.dense_bytes = total.dense_bytes;
  result.compression = total.compression();
  result.train_seconds = st.train_seconds;

  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : result.layers) {
    nlohmann::json j = {{"name", l.name},
                        {"compress", l.compress},
                        {"dense_params", l.dense_params},
                        {"stored_params", l.stored_params},
                        {"bytes", l.bytes}};
    if (l.kept_energy >= 0) j["kept_energy"] = l.kept_energy;
    layers.push_back(j);
  }
  nlohmann::json summary = {{"model", o.model},
                            {"compress", o.compress},
                            {"from", o.from_dir},
                            {"seed", o.seed},
                            {"epochs", o.epochs},
                            {"batch", o.batch},
                            {"lr", o.lr},
                            {"limit_train", o.limit_train},
                            {"final_test_accuracy", result.final_accuracy},
                            {"best_test_accuracy", result.best_accuracy},
                            {"best_epoch", result.best_epoch},
                            {"converted_accuracy", result.converted_accuracy},
                            {"dense_params", result.dense_params},
                            {"stored_params", result.stored_params},
                            {"model_bytes", result.model_bytes},
                            {"dense_bytes", result.dense_bytes},
                            {"compression", result.compression},
                            {"train_seconds", result.train_seconds},
                            {"threads", o.threads},
                            {"layers", layers}};
  WriteFileAtomic(o.out_dir + "/summary.json", summary.dump(2) + "\n");
  return result;
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
  s += fmt::format("\n  parameters stored {} of {} dense, model {} bytes ({:.2f} MiB), compression {:.2f}x\n",
                   r.stored_params, r.dense_params, r.model_bytes, r.model_bytes / 1048576.0, r.compression);
  return s;
}

}  // namespace permdnn::train
