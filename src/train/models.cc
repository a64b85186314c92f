// Models by name, storage accounting, run description and dense→permdiag
// conversion (see models.h).
#include "src/train/models.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>
#include <torch/nn/functional.h>

#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/formats/registry.h"
#include "src/train/run_source.h"

namespace permdnn::train {

namespace fs = std::filesystem;

std::vector<std::string> ModelNames() {
  return {"mlp", "lenet300", "lenet5", "lenet5caffe", "cnn", "tiny", "tinycnn", "resnet", "tinyres", "lstm", "charlm"};
}

bool IsTokenModel(const std::string& model) { return model == "charlm"; }

namespace {

// Builds the layer list of a model, tracking the activation shape.
class ArchBuilder {
 public:
  explicit ArchBuilder(const ModelInput& in) : c_(in.channels), h_(in.rows), w_(in.cols) {}

  void Conv(const std::string& name, int64_t out, int k, int pad, int stride = 1) {
    LayerInfo l{name, "conv2d", c_, out, k, stride, pad, {}};
    l.input = next_input_;
    next_input_.clear();
    h_ = (h_ + 2 * pad - k) / stride + 1;
    w_ = (w_ + 2 * pad - k) / stride + 1;
    PERMDNN_CHECK(h_ >= 1 && w_ >= 1, "model: input too small for {}", name);
    c_ = out;
    Push(l);
  }
  void Bn(const std::string& name) { Push({name, "batchnorm2d", c_, c_, 0, 1, 0, {}}); }
  void Relu(const std::string& name) { Push({name, "relu", 0, 0, 0, 1, 0, {}}); }
  // The next layer reads the output of the earlier layer `name`.
  void From(const std::string& name) {
    next_input_ = name;
    std::tie(c_, h_, w_) = shapes_.at(name);
  }
  // Adds the output of the earlier layer `other` (same shape) to the current one.
  void Add(const std::string& name, const std::string& other) {
    PERMDNN_CHECK(shapes_.at(other) == std::make_tuple(c_, h_, w_), "model: {} adds tensors of different shapes", name);
    LayerInfo l{name, "add", 0, 0, 0, 1, 0, {}};
    l.from = other;
    Push(l);
  }
  // Average pooling over the whole (square) feature map.
  void GlobalAvgPool(const std::string& name) {
    PERMDNN_CHECK(h_ == w_, "model: {} needs a square feature map, got {}x{}", name, h_, w_);
    Push({name, "avgpool2d", 0, 0, static_cast<int>(h_), static_cast<int>(h_), 0, {}});
    h_ = w_ = 1;
  }
  void Pool(const std::string& name) {
    layers.push_back({name, "maxpool2d", 0, 0, 2, 2, 0, {}});
    h_ /= 2;
    w_ /= 2;
    PERMDNN_CHECK(h_ >= 1 && w_ >= 1, "model: input too small for {}", name);
  }
  void Flatten() {
    layers.push_back({"flatten", "flatten", 0, 0, 0, 1, 0, {}});
    features_ = c_ * h_ * w_;
  }
  void Fc(const std::string& name, int64_t out) {
    layers.push_back({name, "linear", features_, out, 0, 1, 0, {}});
    features_ = out;
  }
  // A sequence of `features` per step enters (the image's rows: features = cols).
  void Sequence(int64_t features) { features_ = features; }
  void Embedding(const std::string& name, int64_t vocab, int64_t dim) {
    layers.push_back({name, "embedding", vocab, dim, 0, 1, 0, {}});
    features_ = dim;
  }
  void Rnn(const std::string& name, const std::string& cell, int64_t hidden, bool sequence_output) {
    ParseCell(cell);  // a bad --cell fails here, naming the option
    PERMDNN_CHECK(hidden >= 1, "--hidden must be >= 1, got {}", hidden);
    LayerInfo l{name, cell, features_, hidden, 0, 1, 0, {}};
    l.sequence_output = sequence_output;
    layers.push_back(l);
    features_ = hidden;
  }

  std::vector<LayerInfo> layers;

 private:
  void Push(LayerInfo l) {
    shapes_[l.name] = {c_, h_, w_};
    layers.push_back(std::move(l));
  }
  int64_t c_, h_, w_, features_ = 0;
  std::string next_input_;
  std::map<std::string, std::tuple<int64_t, int64_t, int64_t>> shapes_;  // output [C, H, W] per layer
};

std::vector<LayerInfo> Architecture(const std::string& model, const ModelInput& in) {
  ArchBuilder b(in);
  auto mlp = [&](std::vector<int64_t> hidden) {
    b.Flatten();
    for (std::size_t i = 0; i < hidden.size(); ++i) {
      b.Fc(fmt::format("fc{}", i + 1), hidden[i]);
      b.Relu(fmt::format("relu{}", i + 1));
    }
    b.Fc(fmt::format("fc{}", hidden.size() + 1), in.classes);
  };
  auto vgg = [&](std::vector<int64_t> channels, int64_t fc) {
    int i = 1;
    for (int64_t ch : channels) {
      b.Conv(fmt::format("conv{}", i), ch, 3, 1);
      b.Bn(fmt::format("bn{}", i));
      b.Relu(fmt::format("relu{}", i));
      b.Pool(fmt::format("pool{}", i));
      ++i;
    }
    b.Flatten();
    b.Fc("fc1", fc);
    b.Relu(fmt::format("relu{}", i));
    b.Fc("fc2", in.classes);
  };
  // ResNet-20-style (He et al. 2016, CIFAR variant; option B shortcuts).
  auto resnet = [&](int64_t w, int blocks) {
    PERMDNN_CHECK(w >= 1 && w <= 1024, "--width must be in [1, 1024], got {}", w);
    b.Conv("conv1", w, 3, 1);
    b.Bn("bn1");
    b.Relu("relu1");
    std::string prev = "relu1";
    int64_t ch = w;
    for (int s = 0; s < 3; ++s) {
      const int64_t width = w << s;
      for (int k = 0; k < blocks; ++k) {
        const int stride = s > 0 && k == 0 ? 2 : 1;
        const std::string n = fmt::format("s{}b{}_", s + 1, k + 1);
        b.Conv(n + "conv1", width, 3, 1, stride);
        b.Bn(n + "bn1");
        b.Relu(n + "relu1");
        b.Conv(n + "conv2", width, 3, 1);
        b.Bn(n + "bn2");
        std::string other = prev;
        if (stride != 1 || ch != width) {  // projection shortcut on the block input
          b.From(prev);
          b.Conv(n + "sc", width, 1, 0, stride);
          b.Bn(n + "scbn");
          other = n + "bn2";
        }
        b.Add(n + "add", other);
        b.Relu(n + "relu");
        prev = n + "relu";
        ch = width;
      }
    }
    b.GlobalAvgPool("gap");
    b.Flatten();
    b.Fc("fc", in.classes);
  };
  if (model == "resnet") {
    resnet(in.width, 3);
  } else if (model == "tinyres") {
    resnet(2, 1);
  } else if (model == "mlp") {
    mlp({1024, 1024});
  } else if (model == "lenet300") {
    mlp({300, 100});
  } else if (model == "tiny") {
    mlp({64, 32});
  } else if (model == "lenet5") {
    b.Conv("conv1", 6, 5, 2);
    b.Relu("relu1");
    b.Pool("pool1");
    b.Conv("conv2", 16, 5, 0);
    b.Relu("relu2");
    b.Pool("pool2");
    b.Flatten();
    b.Fc("fc1", 120);
    b.Relu("relu3");
    b.Fc("fc2", 84);
    b.Relu("relu4");
    b.Fc("fc3", in.classes);
  } else if (model == "lenet5caffe") {
    // Caffe's examples/mnist/lenet.prototxt (the LeNet-5 of ADMM-NN and Deep
    // Compression): 20-50-500-10, 431,080 weights.
    b.Conv("conv1", 20, 5, 0);
    b.Pool("pool1");
    b.Conv("conv2", 50, 5, 0);
    b.Pool("pool2");
    b.Flatten();
    b.Fc("fc1", 500);
    b.Relu("relu1");
    b.Fc("fc2", in.classes);
  } else if (model == "cnn") {
    vgg({32, 64, 128}, 256);
  } else if (model == "tinycnn") {
    vgg({4, 8}, 16);
  } else if (model == "lstm") {
    b.Sequence(in.cols);
    b.Rnn("rnn1", in.cell, in.hidden, false);
    b.Fc("fc", in.classes);
  } else if (model == "charlm") {
    PERMDNN_CHECK(in.classes >= 2, "charlm: the vocabulary needs at least 2 symbols, got {}", in.classes);
    PERMDNN_CHECK(in.embed >= 1 && in.embed <= 65536, "--embed must be in [1, 65536], got {}", in.embed);
    b.Embedding("embed", in.classes, in.embed);
    b.Rnn("rnn1", in.cell, in.hidden, true);
    b.Fc("fc", in.classes);
  } else {
    std::string names;
    for (const auto& n : ModelNames()) names += (names.empty() ? "" : ", ") + n;
    Fail("--model: unknown model '{}' (known: {})", model, names);
  }
  return b.layers;
}

std::vector<float> ToVector(const torch::Tensor& t) {
  torch::Tensor c = t.detach().contiguous().to(torch::kFloat);
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

void SaveTensor(const std::string& dir, const std::string& file, const torch::Tensor& t) {
  std::vector<float> v = ToVector(t);
  WriteNpy<float>(dir + "/" + file, v, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
}

void SaveOffsets(const std::string& dir, const std::string& file, const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  std::vector<uint16_t> v(static_cast<std::size_t>(c.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(c.data_ptr<int16_t>()[i]);
  WriteNpy<uint16_t>(dir + "/" + file, v, std::vector<int64_t>(c.sizes().begin(), c.sizes().end()));
}

// A float tensor of a run directory, read and checked by RunSource.
torch::Tensor LoadTensor(const RunSource& src, const std::string& layer, const std::string& key,
                         std::vector<int64_t> shape) {
  std::vector<float> v = src.Tensor(layer, key, shape);
  return torch::from_blob(v.data(), shape, torch::kFloat).clone();
}

// The CSR pattern of layer `name`'s 0/1 mask (rows = dim 0, columns = the
// rest in C order).
CsrPattern MaskPattern(const std::string& name, const torch::Tensor& mask_t) {
  torch::NoGradGuard no_grad;
  const int64_t rows = mask_t.size(0), cols = mask_t.numel() / rows;
  PERMDNN_CHECK(mask_t.numel() < (int64_t{1} << 31), "layer '{}': too many weights for int32 CSR indices", name);
  const torch::Tensor mask = mask_t.to(torch::kCPU).contiguous();
  const float* m = mask.data_ptr<float>();
  CsrPattern p;
  p.row_ptr.push_back(0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      if (m[r * cols + c] != 0.0f) p.col_idx.push_back(static_cast<int32_t>(c));
    p.row_ptr.push_back(static_cast<int32_t>(p.col_idx.size()));
  }
  return p;
}

// The CSR arrays of a masked weight (mask and w of one shape, rows = dim 0);
// with a shared PrunedLayer `shared`, codes + codebook instead of values.
void WriteCsr(const std::string& dir, const std::string& name, const torch::Tensor& mask_t, const torch::Tensor& w_t,
              nlohmann::json& tensors, const std::string& prefix = "", const PrunedLayerImpl* shared = nullptr) {
  torch::NoGradGuard no_grad;
  const int64_t rows = mask_t.size(0), cols = mask_t.numel() / rows;
  const CsrPattern pattern = MaskPattern(name, mask_t);
  const std::vector<int32_t>& row_ptr = pattern.row_ptr;
  const std::vector<int32_t>& col_idx = pattern.col_idx;
  torch::Tensor w = w_t.contiguous();
  torch::Tensor codes = shared ? shared->codes.contiguous() : torch::Tensor();
  const float* wp = w.data_ptr<float>();
  const int64_t* cp = shared ? codes.data_ptr<int64_t>() : nullptr;
  std::vector<float> values;
  std::vector<uint8_t> code_values;
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; ++e) {
      const int64_t k = r * cols + col_idx[e];
      if (cp) {
        code_values.push_back(static_cast<uint8_t>(cp[k]));
      } else {
        values.push_back(wp[k]);
      }
    }
  const int64_t nnz = static_cast<int64_t>(col_idx.size());
  auto file = [&](const std::string& key) { return fmt::format("tensors/{}.{}{}.npy", name, prefix, key); };
  WriteNpy<int32_t>(dir + "/" + file("row_ptr"), row_ptr, {rows + 1});
  tensors[prefix + "row_ptr"] = file("row_ptr");
  WriteNpy<int32_t>(dir + "/" + file("col_idx"), col_idx, {nnz});
  tensors[prefix + "col_idx"] = file("col_idx");
  if (cp) {
    WriteNpy<uint8_t>(dir + "/" + file("codes"), code_values, {nnz});
    tensors[prefix + "codes"] = file("codes");
    SaveTensor(dir, file("codebook"), shared->codebook);
    tensors[prefix + "codebook"] = file("codebook");
  } else {
    WriteNpy<float>(dir + "/" + file("values"), values, {nnz});
    tensors[prefix + "values"] = file("values");
  }
}

// The CSR arrays of a pruned layer (docs/run-format.md): rows = out
// channels, columns = in·kh·kw in C order; entries = the mask's ones.
void WritePrunedCsr(const std::string& dir, const std::string& name, const PrunedLayerImpl& pr,
                    nlohmann::json& tensors, const std::string& prefix = "") {
  torch::NoGradGuard no_grad;
  WriteCsr(dir, name, pr.mask, pr.EffectiveWeight(), tensors, prefix,
           pr.bits > 0 && pr.is_shared() ? &pr : nullptr);
}

// The arrays of one bias-less matrix of a recurrent layer, keys prefixed
// (docs/run-format.md "Recurrent tensors").
void WriteMatrix(const std::string& dir, const std::string& layer, const std::string& prefix,
                 const CompressedLinearImpl& m, nlohmann::json& tensors) {
  auto save = [&](const std::string& key, const torch::Tensor& t) {
    const std::string file = fmt::format("tensors/{}.{}{}.npy", layer, prefix, key);
    SaveTensor(dir, file, t);
    tensors[prefix + key] = file;
  };
  if (m.permdiag) {
    save("values", m.permdiag->values);
    const std::string file = fmt::format("tensors/{}.{}offsets.npy", layer, prefix);
    SaveOffsets(dir, file, m.permdiag->offsets);
    tensors[prefix + "offsets"] = file;
  } else if (m.circulant) {
    save("values", m.circulant->values);
  } else if (m.pruned) {
    WritePrunedCsr(dir, layer, *m.pruned, tensors, prefix);
  } else {
    save("weight", m.dense->weight);
  }
}

// The module a holder holds, or nullptr (ModuleHolder::get() throws when empty).
template <typename Holder>
auto Ptr(Holder& h) -> decltype(h.get()) {
  return h ? h.get() : nullptr;
}

// Copies (dense) or projects a dense [out, in] matrix onto the layer's
// format: permdiag through the registry's projection (per block the offset
// keeping the most energy), circulant by least squares, pruned copied with a
// full mask (the schedule prunes it while fine-tuning). Returns the kept
// energy (1 for copies). One of the four pointers is non-null.
double ProjectDense(const torch::Tensor& w, const LayerCompression& c, torch::nn::LinearImpl* dense,
                    PermDiagLinearImpl* pd, BlockCirculantLinearImpl* circ, PrunedLayerImpl* pruned) {
  torch::NoGradGuard no_grad;
  const int64_t out = w.size(0), in = w.size(1);
  if (dense) {
    dense->weight.copy_(w);
  } else if (pruned) {
    pruned->SetDense(w, torch::zeros({out}));
  } else if (circ) {
    CirculantProjection proj = BlockCirculantMatrix::FromDense(ToVector(w), out, in, c.p);
    circ->SetMatrix(proj.matrix);
    return proj.kept_energy;
  } else if (pd) {
    const formats::Projection proj =
        formats::Project(formats::Format(formats::KindOf(c)), ToVector(w), formats::Geometry{out, in, {}, c.p}, c);
    pd->values.copy_(torch::from_blob(const_cast<float*>(proj.weights.values.data()), pd->values.sizes(),
                                      torch::kFloat));
    int16_t* off = pd->offsets.data_ptr<int16_t>();
    for (std::size_t k = 0; k < proj.weights.offsets.size(); ++k)
      off[k] = static_cast<int16_t>(proj.weights.offsets[k]);
    return proj.kept_energy;
  }
  return 1.0;
}

}  // namespace

NetImpl::NetImpl(const std::string& model, const CompressSpec& spec, const ModelInput& input, uint64_t seed)
    : model_(model), input_(input) {
  std::vector<LayerInfo> arch = Architecture(model, input);
  std::vector<std::string> weight_names;
  int first = -1, last = -1;
  for (int i = 0; i < static_cast<int>(arch.size()); ++i) {
    if (!arch[i].is_weight_layer()) continue;
    weight_names.push_back(arch[i].name);
    if (first < 0) first = i;
    last = i;
  }
  spec.CheckLayerNames(weight_names);
  for (int i = 0; i < static_cast<int>(arch.size()); ++i) {
    Layer l;
    l.info = arch[i];
    LayerInfo& info = l.info;
    const uint64_t layer_seed = seed * 1000003ULL + static_cast<uint64_t>(i) * 7919ULL + 1;
    if (info.is_weight_layer()) {
      bool edge = i == last || (i == first && info.type == "conv2d");
      info.compress = spec.Resolve(info.name, edge);
    }
    const bool tern = info.compress.kind == CompressKind::kTernary;
    PERMDNN_CHECK(!tern || !info.is_recurrent(),
                  "--compress {}: layer '{}' is recurrent; ternary training covers linear and conv2d layers",
                  info.compress.ToString(), info.name);
    const bool pd = info.compress.kind == CompressKind::kPermDiag;
    const bool circ = info.compress.kind == CompressKind::kCirculant;
    const bool prune = info.compress.kind == CompressKind::kPrune;
    if (tern) {
      l.ternary = register_module(info.name, TernaryLayer(info.name, info.in, info.out,
                                                          info.type == "conv2d" ? info.kernel : 0, info.stride,
                                                          info.padding, info.compress));
    } else if (prune && info.is_weight_layer() && !info.is_recurrent()) {
      l.pruned = register_module(info.name, PrunedLayer(info.in, info.out, info.type == "conv2d" ? info.kernel : 0,
                                                        info.stride, info.padding, info.compress.bits, true));
    } else if (info.type == "linear") {
      if (circ) {
        l.circ_linear = register_module(info.name, BlockCirculantLinear(info.in, info.out, info.compress.p, true));
      } else if (pd) {
        l.pd_linear = register_module(info.name, PermDiagLinear(info.in, info.out, info.compress.p, true, layer_seed,
                                                                info.compress.column_offsets));
      } else {
        l.linear = register_module(info.name, torch::nn::Linear(info.in, info.out));
      }
    } else if (info.type == "conv2d") {
      if (circ) {
        l.circ_conv = register_module(info.name, BlockCirculantConv2d(info.in, info.out, info.kernel, info.stride,
                                                                      info.padding, info.compress.p, true));
      } else if (pd) {
        l.pd_conv = register_module(info.name, PermDiagConv2d(info.in, info.out, info.kernel, info.stride,
                                                              info.padding, info.compress.p, true, layer_seed,
                                                              info.compress.column_offsets));
      } else {
        l.conv = register_module(info.name, torch::nn::Conv2d(torch::nn::Conv2dOptions(info.in, info.out, info.kernel)
                                                                   .stride(info.stride)
                                                                   .padding(info.padding)));
      }
    } else if (info.type == "batchnorm2d") {
      l.bn = register_module(info.name, torch::nn::BatchNorm2d(info.in));
    } else if (info.is_recurrent()) {
      l.rnn = register_module(info.name, RecurrentLayer(info.name, ParseCell(info.type), info.in, info.out,
                                                        info.compress, info.sequence_output, layer_seed));
    } else if (info.type == "embedding") {
      l.embed = register_module(info.name, torch::nn::Embedding(info.in, info.out));
    }
    layers_.push_back(std::move(l));
  }
  auto index_of = [&](const std::string& name) {
    for (int k = 0; k < static_cast<int>(layers_.size()); ++k)
      if (layers_[k].info.name == name) return k;
    Fail("model {}: no layer '{}'", model, name);
  };
  for (Layer& l : layers_) {
    if (!l.info.input.empty()) layers_[l.input_index = index_of(l.info.input)].keep_output = true;
    if (!l.info.from.empty()) layers_[l.from_index = index_of(l.info.from)].keep_output = true;
  }
}

torch::Tensor NetImpl::forward(torch::Tensor x) {
  std::vector<torch::Tensor> kept(layers_.size());  // outputs other layers read (residual models)
  for (std::size_t li = 0; li < layers_.size(); ++li) {
    Layer& l = layers_[li];
    const std::string& t = l.info.type;
    if (l.input_index >= 0) x = kept[l.input_index];
    // A per-time-step layer on [B, T, F]: run it on [B·T, F], then back.
    const bool per_step = x.dim() == 3 && t == "linear";
    const int64_t batch = x.size(0), steps = per_step ? x.size(1) : 0;
    if (per_step) x = x.reshape({batch * steps, x.size(2)});
    if (l.rnn) {
      // Images [B, 1, rows, cols] are read row by row: [B, rows, cols].
      if (x.dim() == 4) x = x.reshape({x.size(0), x.size(2), x.size(3)});
      x = l.rnn->forward(x);
    } else if (l.embed) {
      x = l.embed->forward(x);
    } else if (t == "flatten") {
      x = x.reshape({x.size(0), -1});
    } else if (t == "relu") {
      x = torch::relu(x);
    } else if (t == "maxpool2d") {
      x = torch::max_pool2d(x, {2, 2}, {2, 2});
    } else if (t == "avgpool2d") {
      x = torch::avg_pool2d(x, {l.info.kernel, l.info.kernel}, {l.info.stride, l.info.stride});
    } else if (t == "add") {
      x = x + kept[l.from_index];
    } else if (l.linear) {
      x = l.linear->forward(x);
    } else if (l.pd_linear) {
      x = l.pd_linear->forward(x);
    } else if (l.conv) {
      x = l.conv->forward(x);
    } else if (l.pd_conv) {
      x = l.pd_conv->forward(x);
    } else if (l.circ_linear) {
      x = l.circ_linear->forward(x);
    } else if (l.circ_conv) {
      x = l.circ_conv->forward(x);
    } else if (l.pruned) {
      x = l.pruned->forward(x);
    } else if (l.ternary) {
      x = l.ternary->forward(x);
    } else if (l.bn) {
      x = l.bn->forward(x);
    }
    if (per_step) x = x.reshape({batch, steps, x.size(1)});
    if (l.keep_output) kept[li] = x;
  }
  return x;
}

std::vector<LayerInfo> NetImpl::layers() const {
  std::vector<LayerInfo> out;
  for (const Layer& l : layers_) out.push_back(l.info);
  return out;
}

StorageStats WeightLayerStorage(const LayerInfo& i, int64_t nnz, bool has_bias, const torch::Tensor& mask) {
  StorageStats s;
  s.name = i.name;
  s.compress = i.compress.ToString();
  formats::Geometry g{i.out, i.in, {}, i.compress.p};
  if (i.type == "conv2d") g.kernel = {i.kernel, i.kernel};
  const formats::Storage dense = formats::StoredSize(formats::Kind::kDense, g, 0, 0, has_bias);
  s.dense_params = dense.numbers;
  s.dense_bytes = dense.bytes;
  if (formats::KindOf(i.compress) == formats::Kind::kCsrRelative) {
    PERMDNN_CHECK(mask.defined() && mask.numel() == g.out * g.in * g.taps(),
                  "layer '{}': the relative-index size needs the layer's mask", i.name);
    formats::Weights w;
    w.kind = formats::Kind::kCsrRelative;
    w.g = g;
    w.index_bits = i.compress.index_bits;
    w.codebook.resize(std::size_t{1} << i.compress.bits);
    CsrPattern pattern = MaskPattern(i.name, mask.reshape({g.out, -1}));
    w.row_ptr = std::move(pattern.row_ptr);
    w.col_idx = std::move(pattern.col_idx);
    w.codes.resize(w.col_idx.size());
    if (has_bias) w.bias.resize(static_cast<std::size_t>(g.out));
    const formats::Storage st = formats::StoredSize(w);
    s.stored_params = st.numbers;
    s.bytes = st.bytes;
    return s;
  }
  // The format the layer trains in, offsets counted at OffsetBytes(p).
  const formats::Storage st =
      formats::StoredSize(formats::KindOf(i.compress), g, nnz, i.compress.bits > 0 ? int64_t{1} << i.compress.bits : 0,
                          has_bias, {32, /*packed_offsets=*/true});
  s.stored_params = st.numbers;
  s.bytes = st.bytes;
  return s;
}

std::vector<StorageStats> NetImpl::Storage() const {
  std::vector<StorageStats> out;
  for (const Layer& l : layers_) {
    const LayerInfo& i = l.info;
    StorageStats s;
    s.name = i.name;
    s.compress = i.compress.ToString();
    if (l.ternary && !i.compress.ternarize) {
      // The group-pruning-only ablation: float32 kept groups, stored as CSR.
      LayerInfo csr = i;
      csr.compress = LayerCompression{};
      csr.compress.kind = CompressKind::kPrune;
      StorageStats st = WeightLayerStorage(csr, l.ternary->masked_nnz(), true);
      st.compress = i.compress.ToString();
      out.push_back(st);
      continue;
    } else if (l.ternary) {  // the format's kept groups (all-zero code groups pruned too)
      out.push_back(WeightLayerStorage(i, l.ternary->Ternary().kept_groups(), true));
      continue;
    } else if (i.type == "linear" || i.type == "conv2d") {
      out.push_back(WeightLayerStorage(i, l.pruned ? l.pruned->nnz() : 0, true,
                                       l.pruned ? l.pruned->mask : torch::Tensor()));
      continue;
    } else if (l.rnn) {
      // Two matrices, W_ih [G·H, in] and W_hh [G·H, H], each with its bias.
      const int64_t gh = GateCount(l.rnn->cell) * i.out;
      for (const auto& [m, cols] : {std::pair{l.rnn->ih.get(), i.in}, std::pair{l.rnn->hh.get(), i.out}}) {
        LayerInfo mi = i;
        mi.type = "linear";
        mi.in = cols;
        mi.out = gh;
        const StorageStats ms =
            WeightLayerStorage(mi, m->pruned ? m->pruned->nnz() : 0, true, m->pruned ? m->pruned->mask : torch::Tensor());
        s.dense_params += ms.dense_params;
        s.stored_params += ms.stored_params;
        s.bytes += ms.bytes;
        s.dense_bytes += ms.dense_bytes;
      }
      out.push_back(s);
      continue;
    } else if (i.type == "embedding") {
      s.compress = "-";
      s.dense_params = s.stored_params = i.in * i.out;
      s.bytes = s.stored_params * 4;
    } else if (i.type == "batchnorm2d") {
      s.compress = "-";
      s.dense_params = s.stored_params = 4 * i.in;
      s.bytes = s.stored_params * 4;
    } else {
      continue;
    }
    s.dense_bytes = s.dense_params * 4;
    out.push_back(s);
  }
  return out;
}

StorageStats NetImpl::Total(const std::vector<StorageStats>& layers) {
  StorageStats t;
  t.name = "total";
  for (const auto& s : layers) {
    t.dense_params += s.dense_params;
    t.stored_params += s.stored_params;
    t.bytes += s.bytes;
    t.dense_bytes += s.dense_bytes;
  }
  return t;
}

void NetImpl::WriteRunDescription(const std::string& dir, const Preprocess& pre, double test_accuracy,
                                  double test_loss) const {
  const std::string tdir = dir + "/tensors";
  fs::create_directories(tdir);
  nlohmann::json layers = nlohmann::json::array();
  for (const Layer& l : layers_) {
    const LayerInfo& i = l.info;
    nlohmann::json j = {{"name", i.name}, {"type", i.type}};
    if (!i.input.empty()) j["input"] = i.input;
    if (!i.from.empty()) j["from"] = i.from;
    nlohmann::json tensors = nlohmann::json::object();
    auto save = [&](const std::string& key, const torch::Tensor& t) {
      if (!t.defined()) return;
      std::string file = fmt::format("tensors/{}.{}.npy", i.name, key);
      SaveTensor(dir, file, t);
      tensors[key] = file;
    };
    if (i.type == "linear" || i.type == "conv2d") {
      j["in"] = i.in;
      j["out"] = i.out;
      if (i.type == "conv2d") {
        j["kernel"] = {i.kernel, i.kernel};
        j["stride"] = {i.stride, i.stride};
        j["padding"] = {i.padding, i.padding};
      }
      if (l.circ_linear || l.circ_conv) {
        j["compress"] = {{"kind", "circulant"}, {"p", i.compress.p}};
        save("values", l.circ_linear ? l.circ_linear->values : l.circ_conv->values);
        save("bias", l.circ_linear ? l.circ_linear->bias : l.circ_conv->bias);
      } else if (l.ternary && !i.compress.ternarize) {
        const TernaryLayerImpl& t = *l.ternary;
        torch::NoGradGuard no_grad;
        const torch::Tensor w = t.MaskedWeight();
        j["compress"] = {{"kind", "prune"},
                         {"density", static_cast<double>(t.masked_nnz()) / static_cast<double>(w.numel())}};
        WriteCsr(dir, i.name, w.ne(0).to(torch::kFloat), w, tensors);
        save("bias", t.bias);
      } else if (l.ternary) {
        const TernaryMatrix m = l.ternary->Ternary();
        j["compress"] = {{"kind", "ternary"}, {"group", i.compress.p}, {"density", m.group_density()}};
        auto save_u8 = [&](const std::string& key, std::span<const uint8_t> v, std::vector<int64_t> shape) {
          const std::string file = fmt::format("tensors/{}.{}.npy", i.name, key);
          WriteNpy<uint8_t>(dir + "/" + file, std::vector<uint8_t>(v.begin(), v.end()), shape);
          tensors[key] = file;
        };
        save_u8("group_mask", m.group_mask(), {static_cast<int64_t>(m.group_mask().size())});
        save_u8("plus", m.plus(), {m.kept_groups(), m.group_bytes()});
        save_u8("minus", m.minus(), {m.kept_groups(), m.group_bytes()});
        const std::vector<float> scale(m.scale().begin(), m.scale().end());
        const std::string sfile = fmt::format("tensors/{}.scale.npy", i.name);
        WriteNpy<float>(dir + "/" + sfile, scale, {i.out});
        tensors["scale"] = sfile;
        save("bias", l.ternary->bias);
      } else if (l.pruned) {
        const PrunedLayerImpl& pr = *l.pruned;
        j["compress"] = {{"kind", "prune"}, {"density", pr.density()}};
        if (pr.bits > 0) j["compress"]["bits"] = pr.bits;
        if (pr.bits > 0 && i.compress.index_bits > 0) j["compress"]["index"] = i.compress.index_bits;
        WritePrunedCsr(dir, i.name, pr, tensors);
        save("bias", pr.bias);
      } else if (i.compress.kind == CompressKind::kPermDiag) {
        j["compress"] = {{"kind", "permdiag"}, {"p", i.compress.p}};
        const torch::Tensor& values = l.pd_linear ? l.pd_linear->values : l.pd_conv->values;
        const torch::Tensor& offsets = l.pd_linear ? l.pd_linear->offsets : l.pd_conv->offsets;
        save("values", values);
        std::string file = fmt::format("tensors/{}.offsets.npy", i.name);
        if (i.compress.column_offsets) {  // permdiag-column: offsets [nb], row block 0's (all equal)
          j["compress"]["offsets"] = "column";
          SaveOffsets(dir, file, offsets.select(0, 0));
        } else {
          SaveOffsets(dir, file, offsets);
        }
        tensors["offsets"] = file;
        save("bias", l.pd_linear ? l.pd_linear->bias : l.pd_conv->bias);
      } else {
        j["compress"] = {{"kind", "dense"}};
        save("weight", l.linear ? l.linear->weight : l.conv->weight);
        save("bias", l.linear ? l.linear->bias : l.conv->bias);
      }
      j["tensors"] = tensors;
    } else if (l.rnn) {
      const RecurrentLayerImpl& r = *l.rnn;
      j["in"] = i.in;
      j["hidden"] = i.out;
      j["bidirectional"] = false;
      j["output"] = r.sequence_output ? "sequence" : "last";
      if (r.ih->pruned) {
        const PrunedLayerImpl* pi = r.ih->pruned.get();
        const PrunedLayerImpl* ph = r.hh->pruned.get();
        const double total = static_cast<double>(r.ih->in + r.hh->in) * static_cast<double>(r.ih->out);
        j["compress"] = {{"kind", "prune"}, {"density", static_cast<double>(pi->nnz() + ph->nnz()) / total}};
        if (pi->bits > 0) j["compress"]["bits"] = pi->bits;
      } else if (i.compress.kind == CompressKind::kPermDiag || i.compress.kind == CompressKind::kCirculant) {
        j["compress"] = {{"kind", i.compress.kind == CompressKind::kPermDiag ? "permdiag" : "circulant"},
                         {"p", i.compress.p}};
      } else {
        j["compress"] = {{"kind", "dense"}};
      }
      WriteMatrix(dir, i.name, "ih.", *r.ih, tensors);
      WriteMatrix(dir, i.name, "hh.", *r.hh, tensors);
      save("bias_ih", r.bias_ih);
      save("bias_hh", r.bias_hh);
      j["tensors"] = tensors;
    } else if (l.embed) {
      j["vocab"] = i.in;
      j["dim"] = i.out;
      save("weight", l.embed->weight);
      j["tensors"] = tensors;
    } else if (i.type == "batchnorm2d") {
      j["channels"] = i.in;
      j["eps"] = l.bn->options.eps();
      save("weight", l.bn->weight);
      save("bias", l.bn->bias);
      save("running_mean", l.bn->running_mean);
      save("running_var", l.bn->running_var);
      j["tensors"] = tensors;
    } else if (i.type == "maxpool2d") {
      j["kernel"] = {2, 2};
      j["stride"] = {2, 2};
    } else if (i.type == "avgpool2d") {
      j["kernel"] = {i.kernel, i.kernel};
      j["stride"] = {i.stride, i.stride};
    }
    layers.push_back(j);
  }
  nlohmann::json input = {{"shape", {input_.channels, input_.rows, input_.cols}},
                           {"layout", "NCHW"},
                           {"scale", pre.scale},
                           {"mean", pre.mean},
                           {"std", pre.std}};
  if (model_ == "lstm") {
    input["shape"] = {input_.rows, input_.cols};
    input["layout"] = "TF";
  } else if (IsTokenModel(model_)) {
    input = {{"shape", {input_.seq_len}},
             {"layout", "T"},
             {"dtype", "int64"},
             {"vocab", input_.classes},
             {"alphabet", input_.alphabet}};
  }
  nlohmann::json doc = {
      {"format", "permdnn-run/1"},
      {"model", model_},
      {"input", input},
      {"num_classes", input_.classes},
      {"test_accuracy", test_accuracy},
      {"layers", layers},
  };
  if (IsTokenModel(model_)) doc["test_bpc"] = test_loss / std::log(2.0);
  WriteFileAtomic(dir + "/model.json", doc.dump(2) + "\n");
}

std::vector<ConversionReport> NetImpl::LoadFromRun(const std::string& run_dir) {
  const RunSource src = RunSource::Open(run_dir, model_);
  std::vector<ConversionReport> reports;
  torch::NoGradGuard no_grad;
  for (Layer& l : layers_) {
    const LayerInfo& i = l.info;
    if (!i.is_weight_layer() && i.type != "batchnorm2d" && i.type != "embedding") continue;
    PERMDNN_CHECK(src.Has(i.name), "--from: {} has no layer '{}'", src.path(), i.name);
    if (l.embed) {
      l.embed->weight.copy_(LoadTensor(src, i.name, "weight", {i.in, i.out}));
      continue;
    }
    if (i.type == "batchnorm2d") {
      l.bn->weight.copy_(LoadTensor(src, i.name, "weight", {i.in}));
      l.bn->bias.copy_(LoadTensor(src, i.name, "bias", {i.in}));
      l.bn->running_mean.copy_(LoadTensor(src, i.name, "running_mean", {i.in}));
      l.bn->running_var.copy_(LoadTensor(src, i.name, "running_var", {i.in}));
      continue;
    }
    const std::string src_kind = src.Kind(i.name);
    PERMDNN_CHECK(src_kind == "dense", "--from: layer '{}' of {} is {}, conversion needs a dense source", i.name,
                  src.path(), src_kind);
    const int64_t kk = i.type == "conv2d" ? int64_t{i.kernel} * i.kernel : 1;
    std::vector<int64_t> wshape = {i.out, i.in};
    if (i.type == "conv2d") wshape.insert(wshape.end(), {i.kernel, i.kernel});
    ConversionReport r{i.name, i.compress.ToString(), 1.0};
    if (l.rnn) {
      // W_ih and W_hh projected separately; kept energy of the two together.
      RecurrentLayerImpl& rnn = *l.rnn;
      const int64_t gh = GateCount(rnn.cell) * i.out;
      double kept = 0, total = 0;
      for (auto [m, key] : {std::pair{rnn.ih.get(), "ih"}, std::pair{rnn.hh.get(), "hh"}}) {
        torch::Tensor w = LoadTensor(src, i.name, std::string(key) + ".weight", {gh, m->in});
        const double e = w.pow(2).sum().item<double>();
        kept += e * ProjectDense(w, i.compress, Ptr(m->dense), Ptr(m->permdiag), Ptr(m->circulant), Ptr(m->pruned));
        total += e;
      }
      rnn.bias_ih.copy_(LoadTensor(src, i.name, "bias_ih", {gh}));
      rnn.bias_hh.copy_(LoadTensor(src, i.name, "bias_hh", {gh}));
      r.kept_energy = total > 0 ? kept / total : 1.0;
      reports.push_back(r);
      continue;
    }
    torch::Tensor w = LoadTensor(src, i.name, "weight", wshape);
    torch::Tensor b = LoadTensor(src, i.name, "bias", {i.out});
    if (l.ternary) {
      l.ternary->SetDense(w, b);  // the schedule (WPC, pruning, ternarization) runs while fine-tuning
    } else if (l.linear || l.pd_linear || l.circ_linear || (l.pruned && i.type == "linear")) {
      r.kept_energy = ProjectDense(w, i.compress, Ptr(l.linear), Ptr(l.pd_linear), Ptr(l.circ_linear), Ptr(l.pruned));
      (l.linear ? l.linear->bias : l.pd_linear ? l.pd_linear->bias : l.circ_linear ? l.circ_linear->bias
                                                                                   : l.pruned->bias)
          .copy_(b);
    } else if (l.conv) {
      l.conv->weight.copy_(w);
      l.conv->bias.copy_(b);
    } else if (l.pruned) {
      l.pruned->SetDense(w, b);  // conv; the schedule prunes it during fine-tuning
    } else if (l.circ_conv) {
      // Each kernel position (ky, kx) is its own out×in matrix: project each.
      torch::Tensor wk = w.reshape({i.out, i.in, kk});
      torch::Tensor& values = l.circ_conv->values;
      torch::Tensor vk = values.view({values.size(0), values.size(1), values.size(2), kk});
      double kept = 0, total = 0;
      for (int64_t t = 0; t < kk; ++t) {
        std::vector<float> slice = ToVector(wk.select(2, t));
        CirculantProjection proj = BlockCirculantMatrix::FromDense(slice, i.out, i.in, i.compress.p);
        double e = 0;
        for (float v : slice) e += double{v} * v;
        kept += proj.kept_energy * e;
        total += e;
        std::span<const float> pv = proj.matrix.values();
        vk.select(3, t).copy_(torch::from_blob(const_cast<float*>(pv.data()),
                                               {values.size(0), values.size(1), values.size(2)}, torch::kFloat));
      }
      l.circ_conv->bias.copy_(b);
      r.kept_energy = total > 0 ? kept / total : 1.0;
    } else if (l.pd_conv) {
      // The registry's projection (per block, or per block column for
      // offsets=column, the offset keeping the most energy; conv kernels whole).
      formats::Geometry g{i.out, i.in, {}, i.compress.p};
      g.kernel = {i.kernel, i.kernel};
      const formats::Projection proj =
          formats::Project(formats::Format(formats::KindOf(i.compress)), ToVector(w), g, i.compress);
      torch::Tensor& values = l.pd_conv->values;
      values.copy_(torch::from_blob(const_cast<float*>(proj.weights.values.data()), values.sizes(), torch::kFloat));
      int16_t* off = l.pd_conv->offsets.data_ptr<int16_t>();
      for (std::size_t k = 0; k < proj.weights.offsets.size(); ++k) off[k] = static_cast<int16_t>(proj.weights.offsets[k]);
      l.pd_conv->bias.copy_(b);
      r.kept_energy = proj.kept_energy;
    }
    reports.push_back(r);
  }
  return reports;
}

}  // namespace permdnn::train

namespace permdnn::train {

std::vector<std::pair<PrunedLayerImpl*, const LayerInfo*>> NetImpl::PrunedLayers() const {
  std::vector<std::pair<PrunedLayerImpl*, const LayerInfo*>> out;
  for (const Layer& l : layers_) {
    // ptr(): the holders are const here, the layers they hold are not.
    if (l.pruned) out.emplace_back(l.pruned.ptr().get(), &l.info);
    if (l.rnn && l.rnn->ih->pruned) {
      out.emplace_back(l.rnn->ih->pruned.ptr().get(), &l.info);
      out.emplace_back(l.rnn->hh->pruned.ptr().get(), &l.info);
    }
  }
  return out;
}

std::vector<TernaryLayerImpl*> NetImpl::TernaryLayers() const {
  std::vector<TernaryLayerImpl*> out;
  for (const Layer& l : layers_)
    if (l.ternary) out.push_back(l.ternary.ptr().get());
  return out;
}

torch::Tensor NetImpl::CompressionPenalty() {
  torch::Tensor sum;
  for (TernaryLayerImpl* t : TernaryLayers()) {
    torch::Tensor p = t->Penalty();
    if (p.defined()) sum = sum.defined() ? sum + p : p;
  }
  return sum;
}

std::string NetImpl::CompressionStep(int64_t step, int64_t total_steps) {
  std::string log;
  const TernarySchedule tsched{total_steps};
  for (TernaryLayerImpl* t : TernaryLayers()) {
    if (t->current_stage() == 0 && step >= tsched.prune_step()) {
      // The share of groups under the last θ (WPC) before the cut.
      const double theta = t->theta.item<double>();
      const double below =
          t->compress.penalty > 0 ? t->GroupNorms().detach().lt(theta).to(torch::kDouble).mean().item<double>() : 0;
      t->Prune();
      log += fmt::format("  step {}: {} groups pruned to density {:.4f} ({} of {} kept){}\n", step, t->name,
                         static_cast<double>(t->kept_mask_groups()) / static_cast<double>(t->group_mask.numel()),
                         t->kept_mask_groups(), t->group_mask.numel(),
                         t->compress.penalty > 0 ? fmt::format(", last theta {:.4g} with {:.1f}% of groups below", theta,
                                                               100 * below)
                                                 : std::string());
    }
    if (t->current_stage() == 1 && step >= tsched.ternarize_step()) {
      t->StartTernary();
      log += fmt::format("  step {}: {} {}\n", step, t->name,
                         t->compress.ternarize ? "ternarized (straight-through fine-tuning)"
                                               : "stays float32 (ternarize=0)");
    }
  }
  PruneSchedule schedule{total_steps};
  for (auto [pr, info] : PrunedLayers()) {
    if (pr->is_shared()) continue;
    if (std::optional<double> d = schedule.DensityAt(step, info->compress.density)) {
      pr->Prune(*d);
      if (step == schedule.prune_end())
        log += fmt::format("  step {}: {} pruned to density {:.4f}\n", step, info->name, pr->density());
    }
    if (pr->bits > 0 && step >= schedule.share_step()) {
      pr->Share();
      log += fmt::format("  step {}: {} weights shared ({}-entry codebook), fine-tuning the codebook\n", step,
                         info->name, int64_t{1} << pr->bits);
    }
  }
  return log;
}

void NetImpl::AfterOptimizerStep() {
  for (auto [pr, info] : PrunedLayers()) pr->ApplyMask();
  for (TernaryLayerImpl* t : TernaryLayers()) t->ApplyMask();
}

bool NetImpl::CompressionDone(int64_t step, int64_t total_steps) const {
  PruneSchedule schedule{total_steps};
  for (auto [pr, info] : PrunedLayers())
    if (!schedule.Done(step, pr->bits)) return false;
  if (!TernaryLayers().empty() && !TernarySchedule{total_steps}.Done(step)) return false;
  return true;
}

}  // namespace permdnn::train
