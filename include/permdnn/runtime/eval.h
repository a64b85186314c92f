// Classification accuracy of a runtime Model on an image data set
// (Fashion-MNIST by default), with the preprocessing given explicitly so
// that models trained elsewhere evaluate correctly; and held-out bits per
// character of a token model (the charlm) on a text corpus, on the windows
// the trainer evaluates. `permdnn eval` is a thin wrapper; the trainer and
// `permdnn demo` call this directly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "permdnn/core/dataset.h"
#include "permdnn/runtime/model.h"

namespace permdnn::runtime {

// kRows: [B, rows, cols], each image row one time step (run-format layout
// "TF", the recurrent `lstm` model).
enum class Layout { kNchw, kFlat, kRows };

struct EvalOptions {
  Preprocess pre;            // x = (pixel·scale − mean)/std
  Layout layout = Layout::kNchw;  // NCHW [B, 1, rows, cols], flat [B, rows·cols] or rows [B, rows, cols]
  int64_t batch = 256;
  int64_t limit = 0;         // evaluate only the first `limit` images (0 = all)
};

struct EvalResult {
  int64_t count = 0, correct = 0;
  double accuracy = 0;       // correct / count
  double seconds = 0;        // inference time only
  std::vector<int32_t> predictions;  // argmax per image
};

EvalResult Evaluate(Model& model, const ImageDataset& data, const EvalOptions& options);

// Fixed point: calibrates the model's int16 layers on the first `count`
// images of `data` (EnableInt16 + Calibrate). Rule in docs/runtime.md.
void CalibrateInt16(Model& model, const ImageDataset& data, const EvalOptions& options, int64_t count = 512);

// The preprocessing a permdnn-exported model records in its metadata
// ("permdnn.preprocess"); returns false when absent.
bool ModelPreprocess(const Model& model, Preprocess* pre, Layout* layout);

// What `permdnn eval` uses without flags (and `permdnn sim --model` too):
// ModelPreprocess, else the defaults with the layout taken from the model's
// input rank (2: flat). Returns whether the metadata had it.
bool DefaultPreprocess(const Model& model, Preprocess* pre, Layout* layout);

// The input shape of a batch of n images: [n, 1, rows, cols] or [n, rows·cols].
std::vector<int64_t> BatchShape(const ImageDataset& data, Layout layout, int64_t n);

// ---- Token models (the charlm: ids [B, T] -> logits [B, T, vocab]) ---------

// What a permdnn-exported token model records ("permdnn.text"): the window
// length it was trained at and the byte of every id. False when absent.
struct TextInput {
  int64_t seq_len = 0;
  std::vector<uint8_t> alphabet;  // byte of id i
};
bool ModelTextInput(const Model& model, TextInput* text);

struct TextEvalOptions {
  int64_t seq_len = 0;   // window length T (> 0)
  int64_t batch = 64;    // windows per run
  int64_t limit = 0;     // windows, spread over the split as the trainer's --limit-test (0 = all)
};

struct TextEvalResult {
  int64_t windows = 0, tokens = 0, correct = 0;
  double loss = 0;       // mean cross-entropy per predicted byte, nats
  double bpc = 0;        // loss / ln 2
  double accuracy = 0;   // next-byte accuracy
  double seconds = 0;    // inference time only
};

// Held-out bits per character of a token model on a corpus's held-out split
// (TextCorpus::test_ids), on the windows the trainer evaluates
// (TextCorpus::WindowStarts): position t of a window predicts the byte at
// t + 1. The corpus's bytes are mapped to the model's ids through
// `alphabet`; a byte the model has no id for is an error naming it.
TextEvalResult EvaluateText(Model& model, const TextCorpus& corpus, const std::vector<uint8_t>& alphabet,
                            const TextEvalOptions& options);

}  // namespace permdnn::runtime
