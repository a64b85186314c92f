// The runtime's bridge to oneDNN (Debian libdnnl 2.6, oneDNN 2.x API: op
// desc, then primitive_desc), the library the dense CNN operators run on
// (Conv incl. depthwise and grouped, pooling, post-ops). Why oneDNN and which
// layout: docs/runtime.md ("Dense operators on oneDNN"), measured with
// bench/dense_probe.cc against XNNPACK.
//
// One CPU engine per process, one stream per thread. The runtime runs every
// primitive on one OpenMP thread and splits batches (at batch 1, channel
// ranges) over its own thread pool instead (ops_cnn.cc says why). Memory
// descriptors come from a shape and a Layout (graph.h). Internal header.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <dnnl.hpp>

#include "runtime/graph.h"

namespace permdnn::runtime::detail {

dnnl::engine& DnnlEngine();
dnnl::stream& DnnlStream();  // the calling thread's
// OpenMP threads for primitives made or run by the calling thread (cheap when unchanged).
void SetDnnlThreads(int threads);

// The activation layout of a plan: PERMDNN_LAYOUT=plain|nhwc|blocked forces
// one; otherwise channel blocks, nC16c on AVX-512 / nC8c on AVX2
// (bench/dense_probe.cc: with Winograd for the 3x3 stride-1 convolutions,
// which oneDNN 2.6 has for blocked layouts only, the fastest for all three
// torchvision models; channels-last was 1.3x slower on resnet18 and 1.15x
// on mobilenet_v2's depthwise convolutions); plain on a CPU without AVX2.
Layout ChooseActivationLayout(const std::vector<NodeDef>& nodes);

// f32 descriptor of `shape` (rank 3-5, [N, C, spatial...]) in `layout`.
dnnl::memory::desc MemDesc(const std::vector<int64_t>& shape, const Layout& layout);
dnnl::memory::dims Dims(const std::vector<int64_t>& v);

// A cached reorder between two layouts of one shape. Several threads may
// run it at once, each with its own scratchpad (scratchpad_bytes(), 64-byte
// aligned; oneDNN's library-owned scratchpad is one per process).
class LayoutConverter {
 public:
  void Init(const std::vector<int64_t>& shape, const Layout& from, const Layout& to);
  bool identity() const { return !prim_; }
  int64_t scratchpad_bytes() const { return pad_bytes_; }
  void Run(const float* src, float* dst, void* scratchpad = nullptr) const;

 private:
  std::shared_ptr<dnnl::reorder> prim_;
  dnnl::memory::desc from_, to_, pad_;
  int64_t pad_bytes_ = 0;
};

// Attributes every runtime primitive is made with: user-provided scratchpad
// (so chunks of one node can run concurrently), plus the given post-ops.
dnnl::primitive_attr UserScratchpadAttr(const dnnl::post_ops& po = dnnl::post_ops());

// True when the primitive runs on oneDNN's reference implementation (slow).
template <typename PD>
bool IsReferenceImpl(const PD& pd) {
  const char* impl = pd.impl_info_str();
  return impl && std::string(impl).rfind("ref", 0) == 0;
}

}  // namespace permdnn::runtime::detail
