// oneDNN engine, layouts and reorders for the runtime (see dnnl_util.h).
#include "runtime/dnnl_util.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

// libgomp's, declared here rather than through <omp.h> so the runtime
// compiles without -fopenmp (see CMakeLists.txt).
extern "C" void omp_set_num_threads(int);

namespace permdnn::runtime::detail {

namespace {
using tag = dnnl::memory::format_tag;
}  // namespace

dnnl::engine& DnnlEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& DnnlStream() {
  static thread_local dnnl::stream stream(DnnlEngine());  // streams are not thread-safe
  return stream;
}

void SetDnnlThreads(int threads) {
  thread_local int current = -1;
  if (threads != current) {
    omp_set_num_threads(threads);
    current = threads;
  }
}

Layout ChooseActivationLayout(const std::vector<NodeDef>&) {
  static const int block = [] {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    if (isa >= dnnl::cpu_isa::avx512_core && isa <= dnnl::cpu_isa::avx512_core_amx) return 16;
    if (isa >= dnnl::cpu_isa::avx2 && isa <= dnnl::cpu_isa::avx2_vnni) return 8;
    return 0;
  }();
  const char* env = std::getenv("PERMDNN_LAYOUT");
  if (env && *env) {
    if (!std::strcmp(env, "plain")) return Layout{};
    if (!std::strcmp(env, "nhwc")) return Layout{LayoutKind::kChannelsLast, 0};
    if (!std::strcmp(env, "blocked")) return block ? Layout{LayoutKind::kBlocked, block} : Layout{};
    Fail("PERMDNN_LAYOUT={} is not a layout; use plain, nhwc or blocked", env);
  }
  return block ? Layout{LayoutKind::kBlocked, block} : Layout{};
}

dnnl::memory::dims Dims(const std::vector<int64_t>& v) { return dnnl::memory::dims(v.begin(), v.end()); }

dnnl::memory::desc MemDesc(const std::vector<int64_t>& shape, const Layout& layout) {
  const std::size_t r = shape.size();
  PERMDNN_CHECK(r >= 3 && r <= 5, "MemDesc: rank {} (expected 3-5)", r);
  tag t = tag::undef;
  switch (layout.kind) {
    case LayoutKind::kPlain: t = r == 3 ? tag::abc : r == 4 ? tag::abcd : tag::abcde; break;
    case LayoutKind::kChannelsLast: t = r == 3 ? tag::acb : r == 4 ? tag::acdb : tag::acdeb; break;
    case LayoutKind::kBlocked:
      if (layout.block == 16) t = r == 3 ? tag::aBc16b : r == 4 ? tag::aBcd16b : tag::aBcde16b;
      else if (layout.block == 8) t = r == 3 ? tag::aBc8b : r == 4 ? tag::aBcd8b : tag::aBcde8b;
      break;
  }
  PERMDNN_CHECK(t != tag::undef, "MemDesc: no oneDNN tag for layout {}", layout.Name());
  return dnnl::memory::desc(Dims(shape), dnnl::memory::data_type::f32, t);
}

dnnl::primitive_attr UserScratchpadAttr(const dnnl::post_ops& po) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_post_ops(po);
  return attr;
}

void LayoutConverter::Init(const std::vector<int64_t>& shape, const Layout& from, const Layout& to) {
  prim_.reset();
  pad_bytes_ = 0;
  if (from == to) return;
  from_ = MemDesc(shape, from);
  to_ = MemDesc(shape, to);
  const dnnl::reorder::primitive_desc pd(DnnlEngine(), from_, DnnlEngine(), to_, UserScratchpadAttr());
  pad_ = pd.scratchpad_desc();
  pad_bytes_ = static_cast<int64_t>(pad_.get_size());
  prim_ = std::make_shared<dnnl::reorder>(pd);
}

void LayoutConverter::Run(const float* src, float* dst, void* scratchpad) const {
  if (!prim_) return;
  PERMDNN_CHECK(pad_bytes_ == 0 || scratchpad != nullptr, "LayoutConverter: reorder needs {} bytes of scratchpad",
                pad_bytes_);
  dnnl::memory s(from_, DnnlEngine(), const_cast<float*>(src)), d(to_, DnnlEngine(), dst);
  dnnl::memory pad(pad_, DnnlEngine(), scratchpad);
  prim_->execute(DnnlStream(), {{DNNL_ARG_FROM, s}, {DNNL_ARG_TO, d}, {DNNL_ARG_SCRATCHPAD, pad}});
  DnnlStream().wait();
}

}  // namespace permdnn::runtime::detail
