// permdnn::runtime: the block-circulant and pruned ai.permdnn operators.
// Tiny run directories (docs/run-format.md) with circulant / prune (with and
// without a codebook) conv2d and linear layers are exported custom and
// --portable and compared with a double-precision dense reference computed
// here from the stored arrays, at batch 1, 3 and 64; `compress` projections;
// and one test per bad-input class, each checking that the error names the
// node and what is wrong.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "permdnn/core/npy.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"
#include "src/runtime/onnx_util.h"

namespace permdnn::runtime {
namespace {

namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("permdnn_compressed_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d / "tensors");
  return d;
}

std::vector<float> Randn(std::size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- A tiny cnn: conv (2 -> 6, 3x3, pad 1) -> relu -> maxpool 2 -> flatten
// -> fc1 (54 -> 20) -> relu -> fc2 (20 -> 10, dense). conv and fc1 use the
// compression under test; the dense weights they stand for are rebuilt here
// from the stored arrays, independently of the runtime's code.

struct Layer {
  std::string compress_json, tensors_json;
  std::vector<float> dense;  // [out][in·ksz]
};

// Block-circulant: W[I·p + c, J·p + d] = w_IJ[(c − d) mod p] (per tap).
Layer CirculantLayer(const fs::path& dir, const std::string& name, int64_t out, int64_t in, int64_t ksz,
                     std::vector<int64_t> kdims, int p, uint64_t seed) {
  const int64_t mb = (out + p - 1) / p, nb = (in + p - 1) / p;
  std::vector<float> v = Randn(mb * nb * p * ksz, seed, 0.3f);
  std::vector<int64_t> shape = {mb, nb, p};
  shape.insert(shape.end(), kdims.begin(), kdims.end());
  WriteNpy<float>((dir / "tensors" / (name + ".values.npy")).string(), v, shape);
  Layer l;
  l.compress_json = fmt::format(R"({{"kind": "circulant", "p": {}}})", p);
  l.tensors_json = fmt::format(R"("values": "tensors/{}.values.npy")", name);
  l.dense.resize(out * in * ksz);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i)
      for (int64_t t = 0; t < ksz; ++t)
        l.dense[(o * in + i) * ksz + t] = v[(((o / p) * nb + i / p) * p + ((o % p - i % p) + p) % p) * ksz + t];
  return l;
}

// Pruned: random CSR at `density`; bits > 0: codes into a 2^bits codebook;
// index > 0: the file gets relative indices of that many bits (csr-relative).
Layer PrunedLayer(const fs::path& dir, const std::string& name, int64_t out, int64_t cols, double density, int bits,
                  uint64_t seed, int index = 0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int32_t> rp = {0}, ci;
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      if (u(rng) < density) ci.push_back(static_cast<int32_t>(c));
    rp.push_back(static_cast<int32_t>(ci.size()));
  }
  const int64_t nnz = static_cast<int64_t>(ci.size());
  auto path = [&](const char* t) { return (dir / "tensors" / (name + "." + t + ".npy")).string(); };
  WriteNpy<int32_t>(path("row_ptr"), rp, {out + 1});
  WriteNpy<int32_t>(path("col_idx"), ci, {nnz});
  std::vector<float> w(nnz);
  Layer l;
  if (bits) {
    const int k = 1 << bits;
    std::vector<float> cb = Randn(k, seed + 1, 0.4f);
    std::vector<uint8_t> codes(nnz);
    for (auto& c : codes) c = static_cast<uint8_t>(rng() % k);
    for (int64_t e = 0; e < nnz; ++e) w[e] = cb[codes[e]];
    WriteNpy<uint8_t>(path("codes"), codes, {nnz});
    WriteNpy<float>(path("codebook"), cb, {k});
    l.compress_json = index ? fmt::format(R"({{"kind": "prune", "density": {}, "bits": {}, "index": {}}})", density,
                                          bits, index)
                            : fmt::format(R"({{"kind": "prune", "density": {}, "bits": {}}})", density, bits);
    l.tensors_json = fmt::format(
        R"("row_ptr": "tensors/{0}.row_ptr.npy", "col_idx": "tensors/{0}.col_idx.npy", "codes": "tensors/{0}.codes.npy", "codebook": "tensors/{0}.codebook.npy")",
        name);
  } else {
    w = Randn(nnz, seed + 1, 0.4f);
    WriteNpy<float>(path("values"), w, {nnz});
    l.compress_json = fmt::format(R"({{"kind": "prune", "density": {}}})", density);
    l.tensors_json = fmt::format(
        R"("row_ptr": "tensors/{0}.row_ptr.npy", "col_idx": "tensors/{0}.col_idx.npy", "values": "tensors/{0}.values.npy")",
        name);
  }
  l.dense.assign(out * cols, 0.0f);
  for (int64_t r = 0; r < out; ++r)
    for (int32_t e = rp[r]; e < rp[r + 1]; ++e) l.dense[r * cols + ci[e]] = w[e];
  return l;
}

struct Cnn {
  Layer conv, fc1;
  std::vector<float> conv_b, fc1_b, fc2_w, fc2_b;
};

// kind: "circulant" (conv p = p_conv, fc1 p = p_fc), "prune", "prune4",
// "prune4rel" (4-bit codes, 2-bit relative indices in the file).
Cnn WriteCnnRun(const fs::path& dir, const std::string& kind, int p_conv = 2, int p_fc = 8) {
  Cnn m;
  if (kind == "circulant") {
    m.conv = CirculantLayer(dir, "conv1", 6, 2, 9, {3, 3}, p_conv, 1);
    m.fc1 = CirculantLayer(dir, "fc1", 20, 54, 1, {}, p_fc, 2);
  } else {
    const int bits = kind == "prune4" || kind == "prune4rel" ? 4 : 0, index = kind == "prune4rel" ? 2 : 0;
    m.conv = PrunedLayer(dir, "conv1", 6, 2 * 9, 0.4, bits, 3, index);
    m.fc1 = PrunedLayer(dir, "fc1", 20, 54, 0.2, bits, 4, index);
  }
  m.conv_b = Randn(6, 5, 0.1f);
  m.fc1_b = Randn(20, 6, 0.1f);
  m.fc2_w = Randn(200, 7, 0.3f);
  m.fc2_b = Randn(10, 8, 0.1f);
  WriteNpy<float>((dir / "tensors/conv1.bias.npy").string(), m.conv_b, {6});
  WriteNpy<float>((dir / "tensors/fc1.bias.npy").string(), m.fc1_b, {20});
  WriteNpy<float>((dir / "tensors/fc2.weight.npy").string(), m.fc2_w, {10, 20});
  WriteNpy<float>((dir / "tensors/fc2.bias.npy").string(), m.fc2_b, {10});
  std::ofstream(dir / "model.json") << fmt::format(R"({{
  "format": "permdnn-run/1", "model": "cnn", "num_classes": 10,
  "input": {{"shape": [2, 6, 6], "layout": "NCHW"}},
  "layers": [
    {{"name": "conv1", "type": "conv2d", "in": 2, "out": 6, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
     "compress": {}, "tensors": {{{}, "bias": "tensors/conv1.bias.npy"}}}},
    {{"name": "relu1", "type": "relu"}},
    {{"name": "pool1", "type": "maxpool2d", "kernel": [2, 2], "stride": [2, 2]}},
    {{"name": "flatten", "type": "flatten"}},
    {{"name": "fc1", "type": "linear", "in": 54, "out": 20, "compress": {},
     "tensors": {{{}, "bias": "tensors/fc1.bias.npy"}}}},
    {{"name": "relu2", "type": "relu"}},
    {{"name": "fc2", "type": "linear", "in": 20, "out": 10, "compress": {{"kind": "dense"}},
     "tensors": {{"weight": "tensors/fc2.weight.npy", "bias": "tensors/fc2.bias.npy"}}}}
  ]}})",
                                                   m.conv.compress_json, m.conv.tensors_json, m.fc1.compress_json,
                                                   m.fc1.tensors_json);
  return m;
}

// Double-precision forward pass of the cnn.
std::vector<float> CnnReference(const Cnn& m, const std::vector<float>& x, int64_t batch) {
  std::vector<float> y(batch * 10);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<double> c(6 * 36);
    for (int64_t o = 0; o < 6; ++o)
      for (int64_t h = 0; h < 6; ++h)
        for (int64_t w = 0; w < 6; ++w) {
          double s = m.conv_b[o];
          for (int64_t i = 0; i < 2; ++i)
            for (int64_t ky = 0; ky < 3; ++ky)
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t yy = h + ky - 1, xx = w + kx - 1;
                if (yy < 0 || yy >= 6 || xx < 0 || xx >= 6) continue;
                s += double(m.conv.dense[(o * 2 + i) * 9 + ky * 3 + kx]) * x[((b * 2 + i) * 6 + yy) * 6 + xx];
              }
          c[(o * 6 + h) * 6 + w] = std::max(0.0, s);
        }
    std::vector<double> f(54);
    for (int64_t o = 0; o < 6; ++o)
      for (int64_t h = 0; h < 3; ++h)
        for (int64_t w = 0; w < 3; ++w) {
          double mx = -1e300;
          for (int64_t dy = 0; dy < 2; ++dy)
            for (int64_t dx = 0; dx < 2; ++dx) mx = std::max(mx, c[(o * 6 + 2 * h + dy) * 6 + 2 * w + dx]);
          f[(o * 3 + h) * 3 + w] = mx;
        }
    std::vector<double> hid(20);
    for (int64_t r = 0; r < 20; ++r) {
      double s = m.fc1_b[r];
      for (int64_t k = 0; k < 54; ++k) s += double(m.fc1.dense[r * 54 + k]) * f[k];
      hid[r] = std::max(0.0, s);
    }
    for (int64_t o = 0; o < 10; ++o) {
      double s = m.fc2_b[o];
      for (int64_t r = 0; r < 20; ++r) s += double(m.fc2_w[o * 20 + r]) * hid[r];
      y[b * 10 + o] = static_cast<float>(s);
    }
  }
  return y;
}

std::vector<float> RunModel(Model& model, const std::vector<float>& x, std::vector<int64_t> shape) {
  std::vector<float> y(NumElements(model.OutputShape(shape)));
  model.Run(x, shape, y);
  return y;
}

// Tolerance eps·64·√depth·max|x| with depth 54 (the deepest sum) and the
// activations of this model (|x| < 10).
constexpr double kTol = 1.2e-7 * 64 * 7.4 * 10;

void ExpectNear(const std::vector<float>& want, const std::vector<float>& got, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (std::size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(want[i], got[i], kTol) << what << ": first bad index " << i;
}

struct ExportCase {
  std::string kind;
  int p_conv = 2, p_fc = 8;
  std::string conv_op, fc_op;
};

void PrintTo(const ExportCase& c, std::ostream* os) { *os << c.kind << " p=" << c.p_conv << "/" << c.p_fc; }

class CompressedExport : public ::testing::TestWithParam<ExportCase> {};

TEST_P(CompressedExport, CustomAndPortableMatchDoubleReference) {
  const ExportCase& tc = GetParam();
  fs::path dir = TempDir(tc.kind + std::to_string(tc.p_conv) + std::to_string(tc.p_fc));
  Cnn m = WriteCnnRun(dir, tc.kind, tc.p_conv, tc.p_fc);
  ExportReport custom = ExportRun(dir.string(), (dir / "custom.onnx").string());
  ExportReport portable = ExportRun(dir.string(), (dir / "portable.onnx").string(), {.portable = true});
  ASSERT_EQ(custom.layers.size(), 7u);
  EXPECT_EQ(custom.layers[0].op, tc.conv_op);
  EXPECT_EQ(custom.layers[4].op, tc.fc_op);
  EXPECT_EQ(portable.layers[0].op, "Conv");
  EXPECT_EQ(portable.layers[4].op, "Gemm");
  EXPECT_LT(custom.file_bytes, portable.file_bytes);
  // (Split operators once set to two threads below: batch parallelism would
  // run the batch on replicas, as `a2` does.)
  Model a = Model::Load((dir / "custom.onnx").string(), {.batch_parallel = false});
  Model b = Model::Load((dir / "portable.onnx").string());
  EXPECT_EQ(a.Summary().compressed_nodes, 2);
  EXPECT_EQ(b.Summary().compressed_nodes, 0);
  for (int64_t batch : {1, 3, 64}) {
    std::vector<float> x = Randn(batch * 72, 100 + batch);
    std::vector<float> want = CnnReference(m, x, batch);
    std::vector<float> ya = RunModel(a, x, {batch, 2, 6, 6}), yb = RunModel(b, x, {batch, 2, 6, 6});
    ExpectNear(want, ya, "custom, batch " + std::to_string(batch));
    ExpectNear(want, yb, "portable, batch " + std::to_string(batch));
    ExpectNear(yb, ya, "custom vs portable, batch " + std::to_string(batch));
  }
  // Threads split samples (whole samples per thread in the conv) or
  // positions: same result.
  a.SetThreads(2);
  std::vector<float> x = Randn(64 * 72, 7);
  ExpectNear(CnnReference(m, x, 64), RunModel(a, x, {64, 2, 6, 6}), "2 threads");
  // Loaded for two threads: two shares of the batch on two replicas, each
  // running the compressed kernels on its own.
  Model a2 = Model::Load((dir / "custom.onnx").string(), {.threads = 2});
  ExpectNear(CnnReference(m, x, 64), RunModel(a2, x, {64, 2, 6, 6}), "2 shares");
  EXPECT_EQ(a2.BatchWorkers(), 2);
  // --profile: both compressed nodes on fast compressed kernels (the
  // block-circulant conv with its Relu fused: "BlockCirculantConv+Relu").
  a.SetProfiling(true);
  RunModel(a, x, {64, 2, 6, 6});
  int fast = 0;
  for (const auto& p : a.Profile())
    if (p.op_type.rfind(tc.conv_op, 0) == 0 || p.op_type == tc.fc_op) {
      EXPECT_TRUE(p.fast) << p.op_type << " " << p.kernel;
      EXPECT_NE(p.kernel.find(tc.kind == "circulant" ? "circulant" : "csr."), std::string::npos) << p.kernel;
      ++fast;
    }
  EXPECT_EQ(fast, 2);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Runtime, CompressedExport,
    ::testing::Values(ExportCase{"circulant", 2, 8, "BlockCirculantConv", "BlockCirculantMatMul"},
                      ExportCase{"circulant", 8, 4, "BlockCirculantConv", "BlockCirculantMatMul"},
                      ExportCase{"circulant", 4, 16, "BlockCirculantConv", "BlockCirculantMatMul"},
                      ExportCase{"prune", 1, 1, "SparseConv", "SparseMatMul"},
                      ExportCase{"prune4", 1, 1, "SparseConv", "SparseMatMul"},
                      ExportCase{"prune4rel", 1, 1, "RelativeSparseConv", "RelativeSparseMatMul"}),
    [](const auto& info) {
      return info.param.kind + "_p" + std::to_string(info.param.p_conv) + "_" + std::to_string(info.param.p_fc);
    });

TEST(CompressedExportBytes, StoredBytesCountEveryArray) {
  fs::path dir = TempDir("bytes");
  WriteCnnRun(dir, "prune4");
  ExportReport r = ExportRun(dir.string(), (dir / "m.onnx").string());
  // fc1: row_ptr 21 int32 + col_idx nnz int32 + codes nnz uint8 + 16-entry
  // float codebook + 20 float bias.
  const int64_t nnz = ReadNpy((dir / "tensors/fc1.col_idx.npy").string()).size();
  EXPECT_EQ(r.layers[4].stored_bytes, 21 * 4 + nnz * 4 + nnz + 16 * 4 + 20 * 4);
  EXPECT_EQ(r.layers[4].dense_bytes, 20 * 54 * 4 + 20 * 4);
  EXPECT_NE(r.layers[4].method.find(":bits=4"), std::string::npos) << r.layers[4].method;
  fs::remove_all(dir);
  dir = TempDir("bytes_c");
  WriteCnnRun(dir, "circulant", 2, 8);
  r = ExportRun(dir.string(), (dir / "m.onnx").string());
  EXPECT_EQ(r.layers[4].stored_bytes, 3 * 7 * 8 * 4 + 20 * 4);  // mb 3, nb 7, p 8 + bias
  EXPECT_EQ(r.layers[4].method, "circulant:p=8");
  fs::remove_all(dir);
}

// ---- compress ---------------------------------------------------------------

TEST(CompressedCompress, ProjectionsOfStructuredWeightsAreExact) {
  for (const std::string kind : {"circulant", "prune"}) {
    fs::path dir = TempDir("compress_" + kind);
    Cnn m = WriteCnnRun(dir, kind, 2, 4);
    ExportRun(dir.string(), (dir / "dense.onnx").string(), {.portable = true});
    CompressOptions o;
    if (kind == "circulant") {
      o.spec = "circulant:p=4,conv1=circulant:p=2";
    } else {
      // The pruned weights' own densities keep exactly their nonzeros.
      auto density = [&](const Layer& l) {
        int64_t nz = 0;
        for (float v : l.dense) nz += v != 0.0f;
        return static_cast<double>(nz) / static_cast<double>(l.dense.size());
      };
      o.spec = fmt::format("conv1=prune:density={:.17g},fc1=prune:density={:.17g}", density(m.conv), density(m.fc1));
    }
    ExportReport r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c.onnx").string(), o);
    ASSERT_EQ(r.layers.size(), 3u);
    EXPECT_EQ(r.layers[0].op, kind == "circulant" ? "BlockCirculantConv" : "SparseConv");
    EXPECT_EQ(r.layers[1].op, kind == "circulant" ? "BlockCirculantMatMul" : "SparseMatMul");
    EXPECT_EQ(r.layers[2].method, "dense") << "the last layer stays dense unless named";
    EXPECT_NEAR(r.layers[0].kept_energy, 1.0, 1e-6);
    EXPECT_NEAR(r.layers[1].kept_energy, 1.0, 1e-6);
    EXPECT_LT(r.layers[1].stored_bytes, r.layers[1].dense_bytes);
    Model c = Model::Load((dir / "c.onnx").string());
    std::vector<float> x = Randn(3 * 72, 11);
    ExpectNear(CnnReference(m, x, 3), RunModel(c, x, {3, 2, 6, 6}), kind + " compress");
    fs::remove_all(dir);
  }
}

TEST(CompressedCompress, PruneWithSharingAndPortable) {
  fs::path dir = TempDir("compress_bits");
  WriteCnnRun(dir, "circulant", 2, 4);
  ExportRun(dir.string(), (dir / "dense.onnx").string(), {.portable = true});
  // Both spellings of the bits parameter.
  for (const std::string spec : {"prune:density=0.25,bits=4", "prune:density=0.25:bits=4"}) {
    CompressOptions o;
    o.spec = spec;
    ExportReport r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c.onnx").string(), o);
    EXPECT_EQ(r.layers[0].method, "dense") << "a first conv stays dense unless named";
    EXPECT_EQ(r.layers[1].op, "SparseMatMul");
    EXPECT_EQ(r.layers[1].method, "prune:density=0.25:bits=4");
    const int64_t nnz = 270;  // round(0.25 · 20 · 54)
    EXPECT_EQ(r.layers[1].stored_bytes, 21 * 4 + nnz * 4 + nnz + 16 * 4);
    EXPECT_GT(r.layers[1].kept_energy, 0.3);
    EXPECT_LT(r.layers[1].kept_energy, 1.0);
    o.portable = true;
    ExportReport rp = CompressOnnx((dir / "dense.onnx").string(), (dir / "p.onnx").string(), o);
    EXPECT_EQ(rp.layers[1].op, "Gemm");
    Model a = Model::Load((dir / "c.onnx").string()), b = Model::Load((dir / "p.onnx").string());
    for (int64_t batch : {1, 64}) {
      std::vector<float> x = Randn(batch * 72, 12);
      ExpectNear(RunModel(b, x, {batch, 2, 6, 6}), RunModel(a, x, {batch, 2, 6, 6}), spec);
    }
  }
  // The same projection with 3-bit relative indices: the same outputs from
  // fewer bytes (row lengths 20 x 6 bits, codes 270 x 4 bits, the gaps: at
  // most 2 entries per kept weight here, of 3 bits).
  {
    CompressOptions o;
    o.spec = "prune:density=0.25:bits=4:index=3";
    ExportReport r = CompressOnnx((dir / "dense.onnx").string(), (dir / "r.onnx").string(), o);
    EXPECT_EQ(r.layers[1].op, "RelativeSparseMatMul");
    EXPECT_EQ(r.layers[1].method, "prune:density=0.25:bits=4:index=3");
    EXPECT_GE(r.layers[1].stored_bytes, 15 + 135 + (270 * 3 + 7) / 8 + 16 * 4);
    EXPECT_LT(r.layers[1].stored_bytes, 15 + 135 + (2 * 270 * 3 + 7) / 8 + 16 * 4);
    Model a = Model::Load((dir / "c.onnx").string()), c = Model::Load((dir / "r.onnx").string());
    for (int64_t batch : {1, 64}) {
      std::vector<float> x = Randn(batch * 72, 13);
      ExpectNear(RunModel(a, x, {batch, 2, 6, 6}), RunModel(c, x, {batch, 2, 6, 6}), o.spec);
    }
  }
  // Circulant projection of a random dense fc2 loses energy, as it must.
  CompressOptions o;
  o.spec = "fc2=circulant:p=4";
  ExportReport r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c2.onnx").string(), o);
  EXPECT_EQ(r.layers[2].op, "BlockCirculantMatMul");
  EXPECT_LT(r.layers[2].kept_energy, 0.6);
  EXPECT_GT(r.layers[2].kept_energy, 0.05);
  fs::remove_all(dir);
}

// Shared offsets (permdiag-column): the compressed model (its own kernels:
// grouped products, skipping, grouped GEMMs) equals the portable export of
// the same projection (dense Gemm / Conv) at batch 1 with dense and sparse
// inputs and at batch 64; ops and methods name the layout.
TEST(CompressedCompress, ColumnOffsetsMatchTheirDenseExpansion) {
  fs::path dir = TempDir("compress_column");
  WriteCnnRun(dir, "circulant", 2, 4);
  ExportRun(dir.string(), (dir / "dense.onnx").string(), {.portable = true});
  CompressOptions o;
  o.spec = "permdiag:p=4,offsets=column,conv1=permdiag:p=2:offsets=column";
  ExportReport r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c.onnx").string(), o);
  EXPECT_EQ(r.layers[0].op, "PermDiagConv");
  EXPECT_EQ(r.layers[0].method, "permdiag:p=2:offsets=column");
  EXPECT_EQ(r.layers[1].op, "PermDiagMatMul");
  EXPECT_EQ(r.layers[1].method, "permdiag:p=4:offsets=column");
  // fc1 20 x 54 at p = 4: 5 x 14 blocks of 4 values, 14 offsets (uint16; the report leaves out the bias).
  EXPECT_EQ(r.layers[1].stored_bytes, 5 * 14 * 4 * 4 + 14 * 2);
  EXPECT_GT(r.layers[1].kept_energy, 0.1);
  EXPECT_LT(r.layers[1].kept_energy, 1.0);
  o.portable = true;
  CompressOnnx((dir / "dense.onnx").string(), (dir / "p.onnx").string(), o);
  Model a = Model::Load((dir / "c.onnx").string()), b = Model::Load((dir / "p.onnx").string());
  for (int64_t batch : {1, 64})
    for (double density : {1.0, 0.3}) {
      std::vector<float> x = Randn(batch * 72, 13);
      for (std::size_t k = 0; k < x.size(); ++k)
        if ((k * 2654435761u) % 1000 >= density * 1000) x[k] = 0.0f;
      ExpectNear(RunModel(b, x, {batch, 2, 6, 6}), RunModel(a, x, {batch, 2, 6, 6}),
                 "column offsets, batch " + std::to_string(batch));
    }
  fs::remove_all(dir);
}

// Zero skipping at batch 1 (Options::zero_skip, issue 15): general permdiag
// and shared offsets give the portable model's outputs on every path, and
// --profile names the path and the input's density: always the skipping
// kernels, never the dense-input ones, auto one of the two by the measured
// crossover.
TEST(CompressedCompress, ZeroSkippingPathsMatchTheDenseExpansion) {
  fs::path dir = TempDir("compress_zero_skip");
  WriteCnnRun(dir, "circulant", 2, 4);
  ExportRun(dir.string(), (dir / "dense.onnx").string(), {.portable = true});
  for (const std::string spec : {"permdiag:p=4", "permdiag:p=4,offsets=column"}) {
    CompressOptions o;
    o.spec = spec;
    CompressOnnx((dir / "dense.onnx").string(), (dir / "c.onnx").string(), o);
    o.portable = true;
    CompressOnnx((dir / "dense.onnx").string(), (dir / "p.onnx").string(), o);
    Model b = Model::Load((dir / "p.onnx").string());
    const bool column = spec.find("column") != std::string::npos;
    for (ZeroSkip mode : {ZeroSkip::kAlways, ZeroSkip::kNever, ZeroSkip::kAuto}) {
      Options opt;
      opt.zero_skip = mode;
      opt.profile = true;
      Model a = Model::Load((dir / "c.onnx").string(), opt);
      for (double density : {1.0, 0.3, 0.0}) {
        std::vector<float> x = Randn(72, 13);
        for (std::size_t k = 0; k < x.size(); ++k)
          if ((k * 2654435761u) % 1000 >= density * 1000) x[k] = 0.0f;
        const std::string what = spec + ", mode " + std::to_string(static_cast<int>(mode)) + ", density " +
                                 std::to_string(density);
        ExpectNear(RunModel(b, x, {1, 2, 6, 6}), RunModel(a, x, {1, 2, 6, 6}), what);
        std::string fc1;
        for (const NodeProfile& n : a.Profile())
          if (n.op_type == "PermDiagMatMul") fc1 = n.kernel;
        const std::string skip = column ? "permdiag_column.sparse_input" : "permdiag.sparse_input";
        if (mode == ZeroSkip::kAlways) {
          EXPECT_NE(fc1.find(skip), std::string::npos) << what << ": " << fc1;
          EXPECT_NE(fc1.find("zero skipping forced"), std::string::npos) << what << ": " << fc1;
        } else if (mode == ZeroSkip::kNever) {
          EXPECT_EQ(fc1.find("sparse_input"), std::string::npos) << what << ": " << fc1;
          EXPECT_EQ(fc1.find("input density"), std::string::npos) << what << ": " << fc1;
        } else {
          EXPECT_NE(fc1.find("input density"), std::string::npos) << what << ": " << fc1;
          EXPECT_NE(fc1.find("skips below"), std::string::npos) << what << ": " << fc1;
        }
      }
    }
  }
  fs::remove_all(dir);
}

// Ternary (issue 18): the compressed model (addition-only kernels, matvec
// below batch 8, the batched kernel from there, im2col for the conv) equals
// the portable export of the same projection (int8 codes, DequantizeLinear,
// dense Conv / Gemm: the dense model of the dequantized weights) at batch 1,
// 3 and 64; every stored byte is in the report.
TEST(CompressedCompress, TernaryMatchesItsDequantizedPortableModel) {
  fs::path dir = TempDir("compress_ternary");
  WriteCnnRun(dir, "circulant", 2, 4);
  ExportRun(dir.string(), (dir / "dense.onnx").string(), {.portable = true});
  CompressOptions o;
  o.spec = "ternary:group=6:density=0.5,conv1=ternary:group=1";
  ExportReport r = CompressOnnx((dir / "dense.onnx").string(), (dir / "c.onnx").string(), o);
  EXPECT_EQ(r.layers[0].op, "TernaryConv");
  EXPECT_EQ(r.layers[1].op, "TernaryMatMul");
  EXPECT_EQ(r.layers[1].method, "ternary:group=6:density=0.5");
  // fc1 20 x 54, group 6: 180 groups, 90 kept; mask 23 bytes, planes 2 x 90 x 1, scale 20 floats.
  EXPECT_EQ(r.layers[1].stored_bytes, 23 + 2 * 90 + 20 * 4);
  EXPECT_GT(r.layers[1].kept_energy, 0.2);
  EXPECT_LT(r.layers[1].kept_energy, 0.9);
  o.portable = true;
  ExportReport rp = CompressOnnx((dir / "dense.onnx").string(), (dir / "p.onnx").string(), o);
  EXPECT_EQ(rp.layers[0].op, "Conv");
  EXPECT_EQ(rp.layers[1].op, "Gemm");
  EXPECT_EQ(rp.layers[1].stored_bytes, 20 * 54 + 20 * 4 + 20);  // int8 codes, scale, zero point
  onnx::ModelProto pm;
  {
    std::ifstream f(dir / "p.onnx", std::ios::binary);
    ASSERT_TRUE(pm.ParseFromIstream(&f));
  }
  int dq = 0;
  for (const auto& n : pm.graph().node()) dq += n.op_type() == "DequantizeLinear";
  EXPECT_EQ(dq, 2);
  Model a = Model::Load((dir / "c.onnx").string()), b = Model::Load((dir / "p.onnx").string());
  for (int64_t batch : {1, 3, 64}) {
    std::vector<float> x = Randn(batch * 72, 14);
    ExpectNear(RunModel(b, x, {batch, 2, 6, 6}), RunModel(a, x, {batch, 2, 6, 6}),
               "ternary, batch " + std::to_string(batch));
  }
  // Two threads on split operators (batch parallelism off): the ternary
  // conv runs whole samples per thread, each on its own scratch; the same
  // outputs as one thread.
  Model two = Model::Load((dir / "c.onnx").string(), {.threads = 2, .batch_parallel = false});
  for (int64_t batch : {3, 64}) {
    std::vector<float> x = Randn(batch * 72, 16);
    EXPECT_EQ(RunModel(two, x, {batch, 2, 6, 6}), RunModel(a, x, {batch, 2, 6, 6})) << "batch " << batch;
  }
  // int16 (Options::int16 + Calibrate): each sample quantized before its
  // columns are copied, the product on TernaryMatMulI16; within 1% of the largest fp32
  // output, and not bit-equal (the path ran). Inputs past the calibrated
  // range saturate instead of wrapping.
  {
    Options io;
    io.int16 = true;
    io.profile = true;
    Model q = Model::Load((dir / "c.onnx").string(), io);
    const std::vector<float> x = Randn(3 * 72, 15);
    q.Calibrate(x, std::vector<int64_t>{3, 2, 6, 6});
    const std::vector<float> yf = RunModel(a, x, {3, 2, 6, 6}), yq = RunModel(q, x, {3, 2, 6, 6});
    float top = 0, diff = 0;
    for (std::size_t i = 0; i < yf.size(); ++i) {
      top = std::max(top, std::fabs(yf[i]));
      diff = std::max(diff, std::fabs(yf[i] - yq[i]));
    }
    EXPECT_GT(diff, 0.0f);
    EXPECT_LT(diff, 0.01f * top);
    bool i16 = false;
    for (const NodeProfile& pr : q.Profile()) i16 = i16 || pr.kernel.find("ternary.matmul_i16") != std::string::npos;
    EXPECT_TRUE(i16);
    // On two threads (whole samples per thread): the same integer sums.
    io.threads = 2;
    Model q2 = Model::Load((dir / "c.onnx").string(), io);
    const std::vector<float> x64 = Randn(64 * 72, 17);
    q.Calibrate(x64, std::vector<int64_t>{64, 2, 6, 6});
    q2.Calibrate(x64, std::vector<int64_t>{64, 2, 6, 6});
    EXPECT_EQ(RunModel(q2, x64, {64, 2, 6, 6}), RunModel(q, x64, {64, 2, 6, 6}));
    q.Calibrate(x, std::vector<int64_t>{3, 2, 6, 6});
    std::vector<float> big = x;
    for (float& v : big) v *= 50.0f;
    const std::vector<float> ybig = RunModel(q, big, {3, 2, 6, 6});
    for (float v : ybig) EXPECT_TRUE(std::isfinite(v) && std::fabs(v) < 1e4f * std::max(top, 1.0f));
  }
  // A group that does not divide the inputs is refused naming the layer.
  o.portable = false;
  o.spec = "ternary:group=7,conv1=ternary:group=1";
  const std::string e = ErrorOf([&] { CompressOnnx((dir / "dense.onnx").string(), (dir / "c3.onnx").string(), o); });
  EXPECT_NE(e.find("group=7 does not divide the 54 input features"), std::string::npos) << e;
  fs::remove_all(dir);
}

// ---- Bad input: one test per error class -------------------------------------

// A model with one ai.permdnn node "n" over X [2, in]; initializers set by
// the caller.
struct NodeModel {
  onnx::ModelProto m;
  onnx::NodeProto* node;
  onnx::GraphProto* g;

  NodeModel(const std::string& op, int64_t in) {
    m.set_ir_version(8);
    m.add_opset_import()->set_version(13);
    auto* o = m.add_opset_import();
    o->set_domain("ai.permdnn");
    o->set_version(1);
    g = m.mutable_graph();
    auto* x = g->add_input();
    x->set_name("x");
    auto* tt = x->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(1);
    tt->mutable_shape()->add_dim()->set_dim_value(2);
    tt->mutable_shape()->add_dim()->set_dim_value(in);
    node = g->add_node();
    node->set_name("n");
    node->set_op_type(op);
    node->set_domain("ai.permdnn");
    node->add_input("x");
    node->add_output("y");
    g->add_output()->set_name("y");
  }
  void Input(const std::string& name) { node->add_input(name); }
  std::string Error() {
    std::string s;
    m.SerializeToString(&s);
    return ErrorOf([&] { Model::FromBytes(s, "m.onnx"); });
  }
};

// SparseMatMul 3 x 4: rows {0: cols 0, 2}, {1: col 3}, {2: none}.
struct SparseArgs {
  std::vector<int32_t> row_ptr = {0, 2, 3, 3}, col_idx = {0, 2, 3};
  std::vector<float> values = {1, 2, 3};
  std::vector<uint8_t> codes;
  std::vector<float> codebook;
  bool float_row_ptr = false;
  int64_t out = 3;
};

std::string SparseError(const SparseArgs& a) {
  NodeModel nm("SparseMatMul", 4);
  detail::AddAttr(nm.node, "in_features", int64_t{4});
  detail::AddAttr(nm.node, "out_features", a.out);
  if (a.float_row_ptr) {
    std::vector<float> f(a.row_ptr.begin(), a.row_ptr.end());
    detail::SetFloatTensor(nm.g->add_initializer(), "rp", f, {static_cast<int64_t>(f.size())});
  } else {
    detail::SetInt32Tensor(nm.g->add_initializer(), "rp", a.row_ptr, {static_cast<int64_t>(a.row_ptr.size())});
  }
  detail::SetInt32Tensor(nm.g->add_initializer(), "ci", a.col_idx, {static_cast<int64_t>(a.col_idx.size())});
  nm.Input("rp");
  nm.Input("ci");
  if (!a.codebook.empty() || !a.codes.empty()) {
    detail::SetUInt8Tensor(nm.g->add_initializer(), "codes", a.codes, {static_cast<int64_t>(a.codes.size())});
    detail::SetFloatTensor(nm.g->add_initializer(), "cb", a.codebook, {static_cast<int64_t>(a.codebook.size())});
    nm.Input("codes");
    nm.Input("");
    nm.Input("cb");
  } else {
    detail::SetFloatTensor(nm.g->add_initializer(), "v", a.values, {static_cast<int64_t>(a.values.size())});
    nm.Input("v");
  }
  return nm.Error();
}

#define EXPECT_ERROR_HAS(err, what)                                                         \
  do {                                                                                      \
    const std::string e_ = (err);                                                           \
    EXPECT_NE(e_.find("node 'n' ("), std::string::npos) << "does not name the node: " << e_; \
    EXPECT_NE(e_.find(what), std::string::npos) << e_;                                      \
  } while (0)

TEST(CompressedBadInput, ValidSparseNodeLoads) {
  EXPECT_EQ(SparseError({}), "");
  SparseArgs a;
  a.codes = {0, 1, 1};
  a.codebook = {0.5f, -1.0f};
  EXPECT_EQ(SparseError(a), "");
}

TEST(CompressedBadInput, RowPtrWrongLength) {
  SparseArgs a;
  a.row_ptr = {0, 2, 3};
  EXPECT_ERROR_HAS(SparseError(a), "row_ptr has 3 entries, expected out_features + 1 = 4");
}

TEST(CompressedBadInput, RowPtrNotMonotone) {
  SparseArgs a;
  a.row_ptr = {0, 2, 1, 3};
  EXPECT_ERROR_HAS(SparseError(a), "row_ptr is not monotone");
}

TEST(CompressedBadInput, RowPtrLastIsNotNnz) {
  SparseArgs a;
  a.row_ptr = {0, 2, 2, 2};
  EXPECT_ERROR_HAS(SparseError(a), "must equal nnz = 3");
}

TEST(CompressedBadInput, ColumnIndexOutOfRange) {
  SparseArgs a;
  a.col_idx = {0, 2, 4};
  EXPECT_ERROR_HAS(SparseError(a), "col_idx[2] = 4 (row 1) is out of range [0, 4)");
}

TEST(CompressedBadInput, UnsortedCsrRows) {
  SparseArgs a;
  a.col_idx = {2, 0, 3};
  EXPECT_ERROR_HAS(SparseError(a), "unsorted CSR rows");
  a.col_idx = {2, 2, 3};  // duplicate = not strictly increasing
  EXPECT_ERROR_HAS(SparseError(a), "unsorted CSR rows");
}

TEST(CompressedBadInput, CodeBeyondCodebook) {
  SparseArgs a;
  a.codes = {0, 1, 2};
  a.codebook = {0.5f, -1.0f};
  EXPECT_ERROR_HAS(SparseError(a), "codes[2] = 2 is not an index into the codebook of 2 entries");
}

TEST(CompressedBadInput, CodebookOfWrongSize) {
  SparseArgs a;
  a.codes = {0, 1, 1};
  a.codebook.assign(300, 0.5f);
  EXPECT_ERROR_HAS(SparseError(a), "codebook has 300 entries, must have 1 to 256");
  // In a run directory the codebook must have 2^bits entries.
  fs::path dir = TempDir("bad_codebook");
  WriteCnnRun(dir, "prune4");
  WriteNpy<float>((dir / "tensors/fc1.codebook.npy").string(), std::vector<float>(8, 0.1f), {8});
  const std::string e = ErrorOf([&] { ExportRun(dir.string(), (dir / "m.onnx").string()); });
  EXPECT_NE(e.find("layer 'fc1'"), std::string::npos) << e;
  EXPECT_NE(e.find("codebook has 8 entries, expected 2^bits = 16"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "m.onnx"));
  fs::remove_all(dir);
}

TEST(CompressedBadInput, WrongDtypes) {
  SparseArgs a;
  a.float_row_ptr = true;
  EXPECT_ERROR_HAS(SparseError(a), "row_ptr 'rp' must be int32 (int64 accepted), got float32");
  // uint8 codes without a codebook.
  NodeModel nm("SparseMatMul", 4);
  detail::AddAttr(nm.node, "in_features", int64_t{4});
  detail::AddAttr(nm.node, "out_features", int64_t{3});
  SparseArgs s;
  detail::SetInt32Tensor(nm.g->add_initializer(), "rp", s.row_ptr, {4});
  detail::SetInt32Tensor(nm.g->add_initializer(), "ci", s.col_idx, {3});
  std::vector<uint8_t> codes = {0, 1, 1};
  detail::SetUInt8Tensor(nm.g->add_initializer(), "codes", codes, {3});
  nm.Input("rp");
  nm.Input("ci");
  nm.Input("codes");
  EXPECT_ERROR_HAS(nm.Error(), "must be float32 (integer codes need a codebook input), got uint8");
  // Circulant values as int.
  NodeModel cm("BlockCirculantMatMul", 4);
  for (const char* at : {"p", "in_features", "out_features"}) detail::AddAttr(cm.node, at, int64_t{4});
  std::vector<int32_t> iv(4, 1);
  detail::SetInt32Tensor(cm.g->add_initializer(), "v", iv, {1, 1, 4});
  cm.Input("v");
  EXPECT_ERROR_HAS(cm.Error(), "values 'v' must be float32, got int32");
}

// offset_layout and the offsets array disagree: the node and the field are named.
TEST(CompressedBadInput, MixedOffsetLayouts) {
  auto model = [](const char* layout, std::vector<int64_t> offsets_shape) {
    auto nm = std::make_unique<NodeModel>("PermDiagMatMul", 8);
    for (const char* at : {"p", "out_features"}) detail::AddAttr(nm->node, at, int64_t{4});
    detail::AddAttr(nm->node, "in_features", int64_t{8});
    if (layout) {
      onnx::AttributeProto* a = nm->node->add_attribute();
      a->set_name("offset_layout");
      a->set_type(onnx::AttributeProto::STRING);
      a->set_s(layout);
    }
    std::vector<float> v(8, 1.0f);
    detail::SetFloatTensor(nm->g->add_initializer(), "v", v, {1, 2, 4});
    std::vector<uint16_t> k(static_cast<std::size_t>(offsets_shape.back()), 1);
    detail::SetUInt16Tensor(nm->g->add_initializer(), "k", k, offsets_shape);
    nm->Input("v");
    nm->Input("k");
    return nm;
  };
  EXPECT_ERROR_HAS(model("column", {1, 2})->Error(),
                   "node 'n' (ai.permdnn.PermDiagMatMul, #0): offsets 'k' has shape [1, 2], but offset_layout=\"column\" stores one "
                   "offset per block column: expected [2]");
  EXPECT_ERROR_HAS(model("diagonal", {1, 2})->Error(),
                   "attribute offset_layout = 'diagonal' must be 'block' (offsets [mb, nb]) or 'column'");
  EXPECT_EQ(model("column", {2})->Error(), "");
  EXPECT_EQ(model(nullptr, {1, 2})->Error(), "");
  EXPECT_EQ(model("block", {1, 2})->Error(), "");
}

TEST(CompressedBadInput, BlockSizeBelowOne) {
  NodeModel nm("BlockCirculantMatMul", 4);
  detail::AddAttr(nm.node, "p", int64_t{0});
  detail::AddAttr(nm.node, "in_features", int64_t{4});
  detail::AddAttr(nm.node, "out_features", int64_t{4});
  std::vector<float> v(4, 1.0f);
  detail::SetFloatTensor(nm.g->add_initializer(), "v", v, {1, 1, 4});
  nm.Input("v");
  EXPECT_ERROR_HAS(nm.Error(), "attribute p = 0 must be >= 1");
}

TEST(CompressedBadInput, AttributesDisagreeWithShapes) {
  // values for p = 2 but the attribute says p = 4.
  NodeModel nm("BlockCirculantMatMul", 4);
  detail::AddAttr(nm.node, "p", int64_t{4});
  detail::AddAttr(nm.node, "in_features", int64_t{4});
  detail::AddAttr(nm.node, "out_features", int64_t{4});
  std::vector<float> v(8, 1.0f);
  detail::SetFloatTensor(nm.g->add_initializer(), "v", v, {2, 2, 2});
  nm.Input("v");
  EXPECT_ERROR_HAS(nm.Error(), "values 'v' has shape [2, 2, 2], but attributes p=4, in_features=4, out_features=4 "
                               "need [1, 1, 4]");
  // Sparse: in_features larger than X; values longer than col_idx.
  NodeModel sm("SparseMatMul", 4);
  detail::AddAttr(sm.node, "in_features", int64_t{5});
  detail::AddAttr(sm.node, "out_features", int64_t{3});
  SparseArgs s;
  detail::SetInt32Tensor(sm.g->add_initializer(), "rp", s.row_ptr, {4});
  detail::SetInt32Tensor(sm.g->add_initializer(), "ci", s.col_idx, {3});
  detail::SetFloatTensor(sm.g->add_initializer(), "v", s.values, {3});
  sm.Input("rp");
  sm.Input("ci");
  sm.Input("v");
  EXPECT_ERROR_HAS(sm.Error(), "last dimension must be in_features = 5");
  SparseArgs longer;
  longer.values = {1, 2, 3, 4};
  EXPECT_ERROR_HAS(SparseError(longer), "values 'v' has shape [4], expected [nnz = 3]");
  // Conv: kernel_shape differs from the values' kernel dims.
  NodeModel cm("BlockCirculantConv", 2);
  cm.g->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(5);
  cm.g->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(5);
  detail::AddAttr(cm.node, "p", int64_t{2});
  detail::AddAttr(cm.node, "in_channels", int64_t{2});
  detail::AddAttr(cm.node, "out_channels", int64_t{2});
  detail::AddAttr(cm.node, "kernel_shape", std::vector<int64_t>{3, 3});
  std::vector<float> cv(2 * 5 * 5, 0.1f);
  detail::SetFloatTensor(cm.g->add_initializer(), "v", {cv.data(), 2 * 4}, {1, 1, 2, 2, 2});
  cm.Input("v");
  EXPECT_ERROR_HAS(cm.Error(), "kernel_shape [3, 3] differs from values [1, 1, 2, 2, 2]");
}

TEST(CompressedBadInput, NonFiniteWeights) {
  NodeModel nm("BlockCirculantMatMul", 4);
  for (const char* at : {"p", "in_features", "out_features"}) detail::AddAttr(nm.node, at, int64_t{4});
  std::vector<float> v = {1.0f, std::nanf(""), 0.0f, 0.0f};
  detail::SetFloatTensor(nm.g->add_initializer(), "v", v, {1, 1, 4});
  nm.Input("v");
  EXPECT_ERROR_HAS(nm.Error(), "values 'v'[1] = nan is not finite");
  SparseArgs a;
  a.values[2] = INFINITY;
  EXPECT_ERROR_HAS(SparseError(a), "values 'v'[2] = inf is not finite");
}

TEST(CompressedBadInput, BiasOfWrongSize) {
  NodeModel nm("BlockCirculantMatMul", 4);
  for (const char* at : {"p", "in_features", "out_features"}) detail::AddAttr(nm.node, at, int64_t{4});
  std::vector<float> v(4, 1.0f), b(3, 0.0f);
  detail::SetFloatTensor(nm.g->add_initializer(), "v", v, {1, 1, 4});
  detail::SetFloatTensor(nm.g->add_initializer(), "b", b, {3});
  nm.Input("v");
  nm.Input("b");
  EXPECT_ERROR_HAS(nm.Error(), "bias 'b' is float32 [3], expected float32 [4]");
}

// TernaryMatMul 3 x 4, group_ch 2: groups (0,0), (0,1), (2,1) kept.
struct TernaryArgs {
  int64_t group_ch = 2;
  std::vector<uint8_t> mask = {0x23}, plus = {0x1, 0x2, 0x0}, minus = {0x2, 0x0, 0x1};
  std::vector<int64_t> plane_shape = {3, 1};
  std::vector<float> scale = {0.5f, 1.0f, 2.0f};
};

std::string TernaryError(const TernaryArgs& a) {
  NodeModel nm("TernaryMatMul", 4);
  detail::AddAttr(nm.node, "group_ch", a.group_ch);
  detail::AddAttr(nm.node, "in_features", int64_t{4});
  detail::AddAttr(nm.node, "out_features", int64_t{3});
  detail::SetUInt8Tensor(nm.g->add_initializer(), "gm", a.mask, {static_cast<int64_t>(a.mask.size())});
  detail::SetUInt8Tensor(nm.g->add_initializer(), "pl", a.plus, a.plane_shape);
  detail::SetUInt8Tensor(nm.g->add_initializer(), "mi", a.minus, a.plane_shape);
  detail::SetFloatTensor(nm.g->add_initializer(), "sc", a.scale, {static_cast<int64_t>(a.scale.size())});
  for (const char* in : {"gm", "pl", "mi", "sc"}) nm.Input(in);
  return nm.Error();
}

TEST(CompressedBadInput, TernaryNodes) {
  EXPECT_EQ(TernaryError({}), "");
  TernaryArgs a;
  a.group_ch = 3;
  EXPECT_ERROR_HAS(TernaryError(a), "group_ch = 3 does not divide in_features = 4");
  a = {};
  a.minus[1] = 0x2;  // weight 1 of group (0, 1) is +1 and -1
  EXPECT_ERROR_HAS(TernaryError(a), "weight 1 of group 1 of row 0 is both +1 and -1");
  a = {};
  a.scale = {1.0f, 2.0f};
  EXPECT_ERROR_HAS(TernaryError(a), "scale 'sc' has shape [2], expected [3] (one alpha per output feature)");
  a = {};
  a.mask = {0x27};  // four kept groups, three stored
  EXPECT_ERROR_HAS(TernaryError(a), "plus 'pl' has shape [3, 1], expected [4, 1] (the 4 kept groups");
  a = {};
  a.plus[2] = 0x4;  // bit 2 of a group of 2
  EXPECT_ERROR_HAS(TernaryError(a), "sets plane bits past its 2 weights");
}

TEST(CompressedBadInput, RunDirectoryUnsortedCsr) {
  fs::path dir = TempDir("bad_csr_run");
  WriteCnnRun(dir, "prune");
  std::vector<int32_t> ci = ReadNpy((dir / "tensors/fc1.col_idx.npy").string()).as<int32_t>();
  ASSERT_GE(ci.size(), 2u);
  std::swap(ci[0], ci[1]);
  WriteNpy<int32_t>((dir / "tensors/fc1.col_idx.npy").string(), ci, {static_cast<int64_t>(ci.size())});
  std::string e = ErrorOf([&] { ExportRun(dir.string(), (dir / "m.onnx").string()); });
  EXPECT_NE(e.find("layer 'fc1'"), std::string::npos) << e;
  // Either unsorted or (if row 0 holds one entry) a row_ptr / range error: all name the layer.
  EXPECT_TRUE(e.find("unsorted CSR rows") != std::string::npos || e.find("col_idx") != std::string::npos) << e;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace permdnn::runtime
