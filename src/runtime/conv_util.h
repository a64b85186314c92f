// Window geometry shared by Conv, PermDiagConv and the pools: 1-3 spatial
// dimensions, normalized to 3 (missing leading dims have size 1), with
// strides, pads, dilations, auto_pad and ceil_mode as ONNX defines them.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "runtime/graph.h"

namespace permdnn::runtime::detail {

struct WindowGeometry {
  std::array<int64_t, 3> in{1, 1, 1}, k{1, 1, 1}, out{1, 1, 1}, stride{1, 1, 1}, pad{0, 0, 0}, pad_end{0, 0, 0},
      dil{1, 1, 1};
  std::vector<int64_t> out_spatial;  // the real (1-3) output dims
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
  int64_t kernel_size() const { return k[0] * k[1] * k[2]; }
};

// Threads (Conv, the pools, PermDiagConv on oneDNN): the batch is cut into
// one chunk per thread and each chunk runs its own single-threaded oneDNN
// primitive (made for that chunk's batch) on the runtime's thread pool,
// which waits on condition variables. oneDNN's own OpenMP threading spins
// between regions: on a machine whose other cores were busy that made the
// Fashion-MNIST cnn take 0.13 or 88 ms per run and resnet18 at batch 1
// 80-490 ms instead of 15 (with OMP_WAIT_POLICY=passive: 18-20 ms), as the
// spinning thread took the core the thread it waited for needed. A chunk
// gets at least kMinParallelWork multiply-adds (a pooling window visit
// counts as kPoolVisitWork, ops_cnn.cc), so small nodes stay on one thread.
struct BatchSplit {
  int64_t per = 1, count = 1, last = 1;  // chunk c covers samples [c·per, c·per + (c < count − 1 ? per : last))
};
// The chunks of `batch` samples for `threads` threads and `work` multiply-adds in all.
BatchSplit SplitBatch(int64_t batch, double work, int threads);

// x_shape = [N, C, spatial...]; kernel = spatial kernel dims. Reads strides,
// pads, dilations (when allow_dilation), auto_pad and ceil_mode from `node`.
WindowGeometry MakeWindowGeometry(const OpContext& ctx, const std::vector<int64_t>& x_shape,
                                  const std::vector<int64_t>& kernel, const NodeDef& node, bool allow_dilation);

// cols[(ci·K + kernel index) · out_size + output position], zero where the
// window reads padding. x: channels × in_size.
void Im2Col(const WindowGeometry& g, const float* x, int64_t channels, float* cols);
// The columns of the output rows [r0, r1) only (a row: one (od, oh) of
// out[2] positions; row r = od·out[1] + oh): cols[(ci·K + kernel index) ·
// (r1 − r0)·out[2] + position in the range].
void Im2ColRows(const WindowGeometry& g, const float* x, int64_t channels, int64_t r0, int64_t r1, float* cols);
// The same on int16 values (the ternary conv's int16 path).
void Im2Col(const WindowGeometry& g, const int16_t* x, int64_t channels, int16_t* cols);

// Inference BatchNormalization of a plain [N, C, ...] tensor (y may be x):
// y = x·a + (bias − mean·a), a = scale / sqrt(var + eps), per channel.
void BatchNormPlain(const float* x, const std::vector<int64_t>& shape, const float* scale, const float* bias,
                    const float* mean, const float* var, float eps, float* y);

// The fused BatchNormalization of ctx's node (NodeDef::post_ops), if any, as
// per-channel factors: y = x·a + shift, a = scale / sqrt(var + eps), shift =
// bias − mean·a (what a conv folds into its weights, or its row scales, and
// bias). Returns that post-op, or nullptr (both left empty) when the node
// has none.
const PostOp* FusedNormFactors(const OpContext& ctx, int64_t channels, std::vector<float>* a,
                               std::vector<float>* shift);

// y[0, count) through a fused Relu or Clip post-op, as the Relu and Clip
// nodes compute it (Relu: NaN → 0; Clip: NaN stays NaN).
void ApplyActivationPlain(const PostOp& p, float* y, int64_t count);

// The post-ops a compressed conv applies after its product, its fused
// BatchNormalization being folded into its weights (TernaryConv,
// BlockCirculantConv): the fused Add's operand (an input position, -1 for
// none) and the Relu / Clip (nullptr for none; the node's, which outlives
// the op).
struct ProductEpilogue {
  int add_input = -1;
  const PostOp* activation = nullptr;
  // y += r (r may be null: an operand of y's shape, while y is in cache),
  // then the activation, on count values.
  void Apply(float* y, const float* r, int64_t count) const;
};
ProductEpilogue FindProductEpilogue(const NodeDef& n);

// Checks the fused post-ops' inputs of ctx's node against its output shape
// (BatchNormalization parameters: one per channel; an Add operand must
// broadcast to it); Error naming the node and the absorbed node. Returns
// whether the Add operand (if any) has exactly the output's shape.
bool ValidatePostOps(const OpContext& ctx, const std::vector<int64_t>& out);

// The fused post-ops of ctx's node (NodeDef::post_ops) on its plain output
// y, in node order: the reference path of every op that takes post-ops.
void ApplyPostOpsPlain(const OpContext& ctx, float* y, const std::vector<int64_t>& shape);

// y += b (plain tensors), b broadcast to y's shape (ONNX multidirectional
// rules; the caller checked that it broadcasts). In ops.cc, with Add's loop.
void AddBroadcastInPlace(float* y, const std::vector<int64_t>& y_shape, const float* b,
                         const std::vector<int64_t>& b_shape, const OpContext& ctx);

// Max or average pooling of `planes` planes of in_size each.
void Pool(const WindowGeometry& g, const float* x, int64_t planes, bool max, bool count_include_pad, float* y);

}  // namespace permdnn::runtime::detail
