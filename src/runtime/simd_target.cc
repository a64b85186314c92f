// One SIMD target for the runtime's kernels and oneDNN (simd_target.h).
#include "permdnn/runtime/simd_target.h"

#include <dnnl.hpp>

#include "permdnn/core/error.h"
#include "permdnn/kernels/dispatch.h"

namespace permdnn::runtime {

std::string OneDnnIsa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

SimdRestriction RestrictSimdTarget(const std::string& name) {
  const int64_t bit = kernels::RequireSimdTarget(name);
  const std::string target = kernels::SimdTargetName(bit);
  // oneDNN at the vector width of the target: 256-bit AVX2 (with FMA) for
  // AVX2, its narrowest, SSE4.1, for the 128-bit and scalar targets; every
  // other target (the AVX-512 ones) leaves it as it is.
  const bool sse = target == "SSE4" || target == "SSSE3" || target == "SSE2" || target == "EMU128" ||
                   target == "SCALAR";
  if (target == "AVX2" || sse) {
    try {
      dnnl::set_max_cpu_isa(target == "AVX2" ? dnnl::cpu_isa::avx2 : dnnl::cpu_isa::sse41);
    } catch (const dnnl::error& e) {
      Fail("SIMD target {}: oneDNN refused the cap at its instruction set ({}); it must be set before the first "
           "model is loaded",
           target, e.what());
    }
  }
  kernels::ForceSimdTarget(bit);
  return {target, OneDnnIsa()};
}

}  // namespace permdnn::runtime
