// The runtime's bridge to oneDNN (Debian libdnnl 2.6, oneDNN 2.x API: op
// desc, then primitive_desc), the library the dense CNN operators run on
// (Conv incl. depthwise and grouped, pooling, post-ops). Why oneDNN and which
// layout: docs/runtime.md ("Dense operators on oneDNN"), measured with
// bench/dense_probe.cc against XNNPACK.
//
// One CPU engine and stream per process; OpenMP threads set per run. Memory
// descriptors come from a shape and a Layout (graph.h). Internal header.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <dnnl.hpp>

#include "runtime/graph.h"

namespace permdnn::runtime::detail {

dnnl::engine& DnnlEngine();
dnnl::stream& DnnlStream();
// OpenMP threads for the next primitive (cheap when unchanged).
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

// A cached reorder between two layouts of one shape.
class LayoutConverter {
 public:
  void Init(const std::vector<int64_t>& shape, const Layout& from, const Layout& to);
  bool identity() const { return !prim_; }
  void Run(const float* src, float* dst) const;

 private:
  std::shared_ptr<dnnl::reorder> prim_;
  dnnl::memory::desc from_, to_;
  std::size_t bytes_ = 0;
};

// True when the primitive runs on oneDNN's reference implementation (slow).
template <typename PD>
bool IsReferenceImpl(const PD& pd) {
  const char* impl = pd.impl_info_str();
  return impl && std::string(impl).rfind("ref", 0) == 0;
}

}  // namespace permdnn::runtime::detail
