#include "permdnn/runtime/eval.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "permdnn/core/error.h"

namespace permdnn::runtime {

std::vector<int64_t> BatchShape(const ImageDataset& data, Layout layout, int64_t n) {
  if (layout == Layout::kFlat) return {n, data.image_size()};
  if (layout == Layout::kRows) return {n, data.rows, data.cols};
  return {n, 1, data.rows, data.cols};
}

EvalResult Evaluate(Model& model, const ImageDataset& data, const EvalOptions& options) {
  PERMDNN_CHECK(options.batch >= 1, "eval: batch must be >= 1");
  const int64_t total = options.limit > 0 ? std::min(options.limit, data.count) : data.count;
  EvalResult r;
  r.count = total;
  r.predictions.resize(static_cast<std::size_t>(total));
  std::vector<float> x, y;
  for (int64_t begin = 0; begin < total; begin += options.batch) {
    const int64_t n = std::min(options.batch, total - begin);
    const std::vector<int64_t> shape = BatchShape(data, options.layout, n);
    x.resize(static_cast<std::size_t>(n * data.image_size()));
    data.Batch(begin, n, options.pre, x);
    const std::vector<int64_t> oshape = model.OutputShape(shape);
    PERMDNN_CHECK(oshape.size() == 2 && oshape[0] == n && oshape[1] >= data.num_classes,
                  "eval: the model's output is {}, expected [batch, >= {} classes]", ShapeString(oshape),
                  data.num_classes);
    y.resize(static_cast<std::size_t>(NumElements(oshape)));
    const auto t0 = std::chrono::steady_clock::now();
    model.Run(x, shape, y);
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t s = 0; s < n; ++s) {
      const float* row = y.data() + s * oshape[1];
      const int32_t pred = static_cast<int32_t>(std::max_element(row, row + oshape[1]) - row);
      r.predictions[begin + s] = pred;
      r.correct += pred == data.labels[begin + s];
    }
  }
  r.accuracy = total ? static_cast<double>(r.correct) / static_cast<double>(total) : 0.0;
  return r;
}

void CalibrateInt16(Model& model, const ImageDataset& data, const EvalOptions& options, int64_t count) {
  const int64_t n = std::min(count, data.count);
  PERMDNN_CHECK(n >= 1, "int16 calibration: no images");
  std::vector<float> x(static_cast<std::size_t>(n * data.image_size()));
  data.Batch(0, n, options.pre, x);
  model.EnableInt16(true);
  model.Calibrate(x, BatchShape(data, options.layout, n));
}

bool ModelPreprocess(const Model& model, Preprocess* pre, Layout* layout) {
  const std::string text = model.Metadata("permdnn.preprocess");
  if (text.empty()) return false;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    PERMDNN_CHECK(j.is_object(), "{}: model metadata permdnn.preprocess must be a JSON object, got {}", model.name(),
                  text);
    pre->scale = j.value("scale", pre->scale);
    pre->mean = j.value("mean", pre->mean);
    pre->std = j.value("std", pre->std);
    const std::string l = j.value("layout", "NCHW");
    *layout = (l == "flat" || l == "FLAT") ? Layout::kFlat : l == "TF" ? Layout::kRows : Layout::kNchw;
  } catch (const nlohmann::json::exception& e) {
    Fail("{}: model metadata permdnn.preprocess is not valid: {}", model.name(), e.what());
  }
  return true;
}

bool DefaultPreprocess(const Model& model, Preprocess* pre, Layout* layout) {
  const bool meta = ModelPreprocess(model, pre, layout);
  if (!meta && !model.inputs().empty() && model.inputs()[0].shape.size() == 2) *layout = Layout::kFlat;
  if (!meta && !model.inputs().empty() && model.inputs()[0].shape.size() == 3) *layout = Layout::kRows;
  return meta;
}

}  // namespace permdnn::runtime
