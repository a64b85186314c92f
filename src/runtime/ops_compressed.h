// Internal: the ai.permdnn operators. CreateKernel (ops.cc) hands every node
// of that domain to CreateCompressedKernel, which asks the format registry
// (formats/registry.h) which format the node is in and calls that format's
// factory (ops_permdiag.cc, ops_circulant.cc, ops_sparse.cc). The weights
// are read and validated by the registry (ReadWeights) when the node is
// first planned; the helpers below are the parts every compressed op shares.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "permdnn/formats/registry.h"
#include "runtime/conv_util.h"
#include "runtime/graph.h"

namespace permdnn::runtime::detail {

// UnsupportedError naming the node for an op no format has.
std::unique_ptr<OpKernel> CreateCompressedKernel(const NodeDef& n);

// A form an op derives from its node's constant weights (the decoded
// matrix, a pack), shared with the model's replicas through the model's
// PackCache (RunState::packs, given to Finalize) under the node's
// `position` and `key`: `make` (returning the form by value) runs where no
// plan of the model or its replicas holds it.
template <typename T, typename Make>
std::shared_ptr<const T> SharedForm(PackCache* packs, int position, const std::string& key, Make&& make) {
  auto made = [&] { return std::make_shared<const T>(make()); };
  return packs ? packs->Get<T>(position, key, made) : made();
}

// The usual form: the node's weights in the layout an op runs on, with
// its bias.
template <typename W>
struct WithBias {
  W w;
  std::vector<float> bias;
};

// What every compressed op starts from: its registry row and the geometry
// its attributes give (validated when the node is created). Never folded:
// the weights are what the op exists to multiply.
class CompressedOp : public OpKernel {
 public:
  CompressedOp(const formats::FormatTraits& f, bool conv, const NodeDef& n)
      : format_(f), geometry_(formats::ReadGeometry(f, conv, n.attrs, n.Where())), position_(n.position) {}
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }

 protected:
  // detail::SharedForm under this node's position.
  template <typename T, typename Make>
  std::shared_ptr<const T> SharedForm(PackCache* packs, const std::string& key, Make&& make) const {
    return detail::SharedForm<T>(packs, position_, key, std::forward<Make>(make));
  }

  const formats::FormatTraits& format_;
  const formats::Geometry geometry_;
  const int position_;  // the node's
};

// The op of a format's linear or conv form.
template <class LinearOp, class ConvOp>
std::unique_ptr<OpKernel> CreateFormOp(const formats::FormatTraits& f, const NodeDef& n) {
  if (f.conv->name == n.op_type) return std::make_unique<ConvOp>(f, n);
  return std::make_unique<LinearOp>(f, n);
}

// The factories, one per ops file.
std::unique_ptr<OpKernel> CreatePermDiagKernel(const formats::FormatTraits& f, const NodeDef& n);
std::unique_ptr<OpKernel> CreateCirculantKernel(const formats::FormatTraits& f, const NodeDef& n);
std::unique_ptr<OpKernel> CreateSparseKernel(const formats::FormatTraits& f, const NodeDef& n);
std::unique_ptr<OpKernel> CreateTernaryKernel(const formats::FormatTraits& f, const NodeDef& n);

// The node's weights from its constant inputs, validated by the registry
// (errors name the node and the input).
formats::Weights ReadWeights(const OpContext& ctx, const formats::FormatTraits& f, bool conv);

// One matrix (W or R) of one direction of a compressed recurrent node
// (formats::ReadRecurrentMatrix over the node's constant inputs).
formats::Weights ReadRecurrentWeights(const OpContext& ctx, const formats::FormatTraits& f, bool r_matrix,
                                      int64_t direction, int64_t directions, int64_t rows, int64_t cols);

// Linear form: X float32 [..., in]; sets Y [..., out]; returns the batch
// (the product of X's leading dims).
int64_t PrepareLinear(OpContext& ctx, int64_t in, int64_t out);

// The threads that split the samples in ForEachSample: all of them with
// at least as many samples, else 1 (each sample then gets all threads).
inline int SampleWorkers(int64_t batch, int threads) { return threads > 1 && batch >= threads ? threads : 1; }

// fn(b, threads, worker) for every sample b < batch: with several threads
// and at least as many samples, threads split the samples (one product each
// on one thread; worker w < SampleWorkers, e.g. to pick a scratch region),
// else each product gets all threads (worker 0).
void ForEachSample(int64_t batch, int threads, const std::function<void(int64_t, int, int)>& fn);
// The scratch of an op that runs ForEachSample with one sample's work in
// `sample_bytes` of scratch (its Prepare's need: an im2col convolution's
// columns): one 64-byte aligned region per worker, the bytes to raise the
// plan's scratch to in Finalize, and worker w's region at Run. A split
// sample's product over the threads hands tiny jobs back and forth: the
// ternary Fashion-MNIST resnet at batch 256 took 2.7x its one-thread time
// on two threads, resnet18 pruned to density 0.1 at batch 16 1.2x
// (docs/runtime.md, "Threads").
int64_t SampleScratchBytes(int64_t sample_bytes, int64_t batch, int threads);
uint8_t* SampleScratch(uint8_t* scratch, int64_t sample_bytes, int worker);

// a [r][c] -> t [c][r] (batch-major <-> feature-major for the batched
// products of the sparse and ternary ops), in tiles so both sides stay in cache.
void Transpose(const float* a, int64_t r, int64_t c, float* t);

// The linear form of an op whose batched kernel is feature-major (sparse,
// ternary). Batched: X [batch, in] is transposed into the scratch
// (LinearScratchBytes), matmul(xt, batch, yt, threads) runs, and Y is
// transposed back; else matvec(x_b, y_b, threads) for every sample. Both
// get the threads that `work` (the batch's multiply-adds) is worth
// (ThreadsForWork).
using LinearMatMul = std::function<void(std::span<const float>, int64_t, std::span<float>, int)>;
using LinearMatVec = std::function<void(std::span<const float>, std::span<float>, int)>;
int64_t LinearScratchBytes(int64_t batch, int64_t in, int64_t out);
void RunFeatureMajorLinear(OpContext& ctx, RunState& rs, int64_t batch, int64_t in, int64_t out, bool batched,
                           double work, const LinearMatMul& matmul, const LinearMatVec& matvec);

// Conv form: X float32 [N, in, spatial...] with as many spatial dims as
// `kernel`; sets Y [N, out, out_spatial...] and the scratch of one sample's
// im2col columns; returns the window geometry.
WindowGeometry PrepareConv(OpContext& ctx, int64_t in, int64_t out, const std::vector<int64_t>& kernel);

}  // namespace permdnn::runtime::detail
