// Classification accuracy of a runtime Model on an image data set
// (Fashion-MNIST by default), with the preprocessing given explicitly so
// that models trained elsewhere evaluate correctly. `permdnn eval` is a thin
// wrapper; the trainer and `permdnn demo` call this directly.
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

}  // namespace permdnn::runtime
