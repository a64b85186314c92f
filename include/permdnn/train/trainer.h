// The training loop behind `permdnn train` (LibTorch-free interface; the
// LibTorch code lives in src/train/trainer.cc).
//
// Recipe: Adam, cross-entropy, learning rate `lr` dropped ×0.1 for the last
// third of the epochs (epoch ≥ epochs − ⌊epochs/3⌋), optional decoupled
// weight decay (`weight_decay`, 0 by default), shuffling with a
// permutation that depends only on (seed, epoch), so a resumed run sees the
// same batches. After every epoch the run directory gets (all written
// atomically, temp + rename):
//   metrics.csv, metrics.json     per-epoch metrics (the whole history)
//   checkpoint_last.pt            model + Adam state + position + metrics sums
//   checkpoint_best.pt            on a new best test accuracy, and then
//   tensors/*.npy, model.json     the LibTorch-free description (run-format.md)
//   test_predictions.npy          int32 argmax of the best model on the test set
//   summary.json                  final numbers (on completion)
// SIGINT/SIGTERM stop at the next batch boundary and save checkpoint_last.pt
// at that position (a second signal kills at once); --resume continues from
// it bit for bit (same batches, same optimizer state). A kill -9 loses at
// most the current epoch: checkpoint_last.pt is always a complete file.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace permdnn::train {

// A pruned layer as the break-even measurement sees it (issue 19 point 3):
// the matrix the sparse kernel multiplies, rows × cols (a conv's im2col
// matrix: out × in·kh·kw), applied to `columns` input vectors per inference
// at batch 1 (1 for a linear layer, the output pixels of a conv).
struct BreakEvenQuery {
  std::string layer;
  int64_t rows = 0, cols = 0, columns = 1;
};

// The platform's answer for one layer: the weight density below which the
// sparse form beats the dense one, and what decided it (printed with the
// report, e.g. "CPU: CSR 0.41 ms vs sgemv 0.52 ms at 1/8").
struct BreakEvenAnswer {
  double density = 0;
  std::string detail;
};
using BreakEvenFn = std::function<BreakEvenAnswer(const BreakEvenQuery&)>;

struct TrainOptions {
  std::string model = "mlp";
  std::string compress = "dense";   // SPEC (formats/spec.h)
  std::string out_dir;
  std::string data_dir;             // empty: Fashion-MNIST default directory
  std::string from_dir;             // convert a trained dense run, then fine-tune
  int epochs = 12;
  int64_t batch = 128;
  double lr = 1e-3;
  // Decoupled weight decay (AdamW: Loshchilov and Hutter, 2019): after each
  // Adam step every trainable weight tensor (2 or more dimensions; biases,
  // codebooks and norms excluded) is multiplied by 1 − lr·weight_decay.
  double weight_decay = 0;
  uint64_t seed = 1;
  int threads = 2;
  int64_t limit_train = 0;          // use only the first N training images / sequences (0: all)
  int64_t limit_test = 0;           // evaluate only the first N test images / held-out sequences (0: all)
  // Recurrent models (lstm, charlm): rnn1's cell ("lstm" | "gru") and hidden
  // size; charlm's sequence length (--data is then a text file or directory,
  // default /usr/share/games/fortunes).
  std::string cell = "lstm";
  int64_t hidden = 256;
  // resnet: the first stage's channels (stages w, 2w, 4w; ResNet-20's 16).
  int64_t width = 16;
  // charlm: the embedding's width, the input size of rnn1.
  int64_t embed = 64;
  int64_t seq_len = 128;
  bool resume = false;
  bool progress = true;             // progress line (only drawn on a terminal)
  // Synthetic data instead of Fashion-MNIST (tests): counts and image side.
  int64_t synthetic_train = 0, synthetic_test = 0;
  int synthetic_side = 8, synthetic_classes = 4;
  // Test hook: behave as if SIGINT arrived after this many batches of this
  // invocation (-1: never).
  int64_t stop_after_batches = -1;
  // "adam": the loop above. "admm": ADMM-NN (src/train/admm.h): `compress`
  // is the target per layer, the first `admm_epochs` epochs train the dense
  // model with the ADMM penalty (ρ/2)‖W − Z + U‖² (Z = Π(W + U), U += W − Z
  // every `admm_iter` batch steps, 0: once per epoch; ρ ×= rho_mult per
  // round), then the weights are projected onto the target and the remaining
  // epochs retrain with the structure fixed. Rounds: DIR/admm/admm_rounds.csv.
  std::string method = "adam";
  int admm_epochs = 0;  // 0: half of the epochs (at least 1)
  int64_t admm_iter = 0;
  double rho = 1e-2, rho_mult = 1.0;
  // "gradient": the penalty is added to the loss (Adam scales its gradient
  // per weight); "decoupled": an exact proximal step with the epoch's
  // learning rate after every optimizer step (AdmmProximalStep).
  std::string admm_penalty = "gradient";
  // U ← U / rho_mult when ρ grows (U is the scaled dual y/ρ: Boyd et al.
  // 2011, §3.4.1); false keeps U as it is.
  bool rescale_dual = false;
  // ADMM: the weight density at or above which a CSR layer is no faster than
  // the dense one on the target platform (measured with `permdnn bench`,
  // docs/admm.md; 0: not given). Every pruned layer's density is reported
  // against it; with refuse_break_even a layer at or above it is an error.
  double break_even_density = 0;
  bool refuse_break_even = false;
  // Per layer instead of one number: when set, every pruned layer's
  // break-even density is asked for its own shape (the CLI's
  // `--break-even cpu|eie-cycles|eie-energy` measures it: src/cli/break_even.h;
  // train never links the simulator). break_even_density is then ignored.
  BreakEvenFn break_even_for;
  std::string break_even_platform;  // its name in the report
};

struct EpochMetrics {
  int epoch = 0;  // 1-based
  double lr = 0, train_loss = 0, train_accuracy = 0, test_loss = 0, test_accuracy = 0, seconds = 0;
  bool best = false;
};

// One ADMM round (src/train/admm.h; `train --method admm` writes them to
// DIR/admm/admm_rounds.csv, `compress --admm` to its --rounds-csv): ρ of the
// round, ‖W − Z‖/‖W‖ over all constrained layers and per layer after the
// Z and U update, the mean training loss of the round's batches (penalty
// excluded), the test accuracy of the dense weights at the round's end.
struct AdmmRound {
  int64_t round = 0, step = 0;
  double rho = 0, residual = 0, train_loss = 0, test_accuracy = 0;
  std::vector<double> layer_residual;  // per constrained layer
};

struct LayerSummary {
  std::string name, compress;
  int64_t dense_params = 0, stored_params = 0, bytes = 0;
  double kept_energy = -1;  // from --from conversion; < 0: not converted
};

struct TrainResult {
  bool interrupted = false;
  int epochs_done = 0;
  double final_accuracy = 0, best_accuracy = 0, converted_accuracy = -1;
  // charlm: held-out bits per character of the final and of the best epoch (-1: not a token model).
  double final_bpc = -1, best_bpc = -1;
  int best_epoch = 0;
  int64_t dense_params = 0, stored_params = 0, model_bytes = 0, dense_bytes = 0;
  double compression = 1;
  double train_seconds = 0;
  int64_t batches_trained = 0;  // by this call
  std::vector<EpochMetrics> history;
  std::vector<LayerSummary> layers;
};

// The recipe shared by every training job (train, compress fine-tuning):
// the learning rate of a 0-based epoch (×0.1 for the last third) and the
// seeded, platform-independent shuffle of n samples for that epoch.
double LearningRate(const TrainOptions& options, int64_t epoch);
std::vector<int64_t> EpochPermutation(int64_t n, uint64_t seed, int64_t epoch);

// Runs (or resumes) training; progress and per-epoch lines go to `log`.
// Throws permdnn::Error on bad options, missing data, a corrupt checkpoint.
TrainResult Train(const TrainOptions& options, std::ostream& log);

// The human summary table of a result.
std::string SummaryText(const TrainOptions& options, const TrainResult& result);

}  // namespace permdnn::train
