#include "permdnn/runtime/eval.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <utility>

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

bool ModelTextInput(const Model& model, TextInput* text) {
  const std::string s = model.Metadata("permdnn.text");
  if (s.empty()) return false;
  try {
    const nlohmann::json j = nlohmann::json::parse(s);
    text->seq_len = j.at("seq_len").get<int64_t>();
    text->alphabet.clear();
    for (const auto& b : j.at("alphabet")) {
      const int v = b.get<int>();
      PERMDNN_CHECK(v >= 0 && v <= 255, "{}: model metadata permdnn.text: alphabet entry {} is not a byte",
                    model.name(), v);
      text->alphabet.push_back(static_cast<uint8_t>(v));
    }
  } catch (const nlohmann::json::exception& e) {
    Fail("{}: model metadata permdnn.text is not valid: {}", model.name(), e.what());
  }
  PERMDNN_CHECK(text->seq_len >= 1 && !text->alphabet.empty(),
                "{}: model metadata permdnn.text needs seq_len >= 1 and a non-empty alphabet", model.name());
  return true;
}

TextEvalResult EvaluateText(Model& model, const TextCorpus& corpus, const std::vector<uint8_t>& alphabet,
                            const TextEvalOptions& options) {
  const int64_t t_len = options.seq_len;
  PERMDNN_CHECK(t_len >= 1 && options.batch >= 1, "eval: sequence length and batch must be >= 1");
  // Corpus id -> model id, through the bytes.
  std::array<int64_t, 256> model_id;
  model_id.fill(-1);
  for (std::size_t i = 0; i < alphabet.size(); ++i) model_id[alphabet[i]] = static_cast<int64_t>(i);
  std::vector<int64_t> ids(corpus.test_ids.size());
  for (std::size_t k = 0; k < ids.size(); ++k) {
    const uint8_t byte = corpus.alphabet.at(static_cast<std::size_t>(corpus.test_ids[k]));
    ids[k] = model_id[byte];
    PERMDNN_CHECK(ids[k] >= 0, "eval: the corpus has byte {} (0x{:02x}) at held-out position {}, which the model's "
                  "alphabet of {} bytes has no id for", byte, byte, k, alphabet.size());
  }
  const std::vector<int64_t> starts = TextCorpus::WindowStarts(static_cast<int64_t>(ids.size()), t_len, options.limit);
  PERMDNN_CHECK(!starts.empty(), "eval: the held-out split has {} characters, too few for one window of {} (+1)",
                ids.size(), t_len);
  const int64_t vocab = static_cast<int64_t>(alphabet.size());
  TextEvalResult r;
  double loss = 0;
  std::vector<int64_t> x;
  for (std::size_t b = 0; b < starts.size(); b += static_cast<std::size_t>(options.batch)) {
    const int64_t n = std::min<int64_t>(options.batch, static_cast<int64_t>(starts.size() - b));
    x.resize(static_cast<std::size_t>(n * t_len));
    for (int64_t s = 0; s < n; ++s)
      std::copy_n(ids.begin() + starts[b + s] * t_len, t_len, x.begin() + s * t_len);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Tensor> out = model.Run({Tensor::Int64({n, t_len}, x, model.inputs().at(0).dtype)});
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    PERMDNN_CHECK(!out.empty() && IsFloat(out[0].dtype()) && out[0].shape() == std::vector<int64_t>({n, t_len, vocab}),
                  "eval: the model's output is {}, expected logits [{}, {}, {}] (windows, length, alphabet)",
                  out.empty() ? std::string("missing") : ShapeString(out[0].shape()), n, t_len, vocab);
    const float* y = std::as_const(out[0]).f();
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t t = 0; t < t_len; ++t) {
        const float* row = y + (s * t_len + t) * vocab;
        const int64_t target = ids[starts[b + s] * t_len + t + 1];
        const float top = *std::max_element(row, row + vocab);
        double sum = 0;
        for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - top);
        loss += std::log(sum) + top - row[target];  // -log softmax(row)[target]
        r.correct += (std::max_element(row, row + vocab) - row) == target;
      }
    }
  }
  r.windows = static_cast<int64_t>(starts.size());
  r.tokens = r.windows * t_len;
  r.loss = loss / static_cast<double>(r.tokens);
  r.bpc = r.loss / std::log(2.0);
  r.accuracy = static_cast<double>(r.correct) / static_cast<double>(r.tokens);
  return r;
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
