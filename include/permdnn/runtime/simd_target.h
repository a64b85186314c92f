// Running the runtime as a CPU with narrower vectors would: one SIMD target
// for the whole process, permdnn's Highway kernels and oneDNN's JIT code
// alike, so that a machine with AVX-512 measures what an AVX2-only machine
// runs (`permdnn run --simd-target`, scripts/bench-runtime.py
// --simd-target, bench/permdiag_conv_bench --simd-target). OpenBLAS picks
// its kernels once, when the library loads, from OPENBLAS_CORETYPE: a
// process that wants it capped too sets that before it starts (the CLI
// starts itself again, cli/run.cc).
#pragma once

#include <string>

namespace permdnn::runtime {

struct SimdRestriction {
  std::string target;      // as the dispatcher names it: "AVX2"
  std::string onednn_isa;  // the ISA oneDNN then runs: "avx2", "avx512_core_bf16", ...
};

// Restricts this process to the SIMD target `name` (e.g. "avx2", any case):
// the kernels' dispatch (kernels::ForceSimdTarget; per-kernel target
// preferences off) and oneDNN's ISA at the same vector width
// (dnnl::set_max_cpu_isa: AVX2 for AVX2, SSE4.1 for SSE4, SSSE3, SSE2,
// EMU128 and SCALAR; any other target, the AVX-512 ones, leaves oneDNN as it
// is). Call it before the first model is loaded: oneDNN fixes its ISA at its
// first primitive, and the activations' channel blocks follow it. Error: a
// target this build or CPU does not run (the message lists those it does),
// or oneDNN refusing the cap (e.g. once it ran a primitive).
SimdRestriction RestrictSimdTarget(const std::string& name);

// What oneDNN runs now, named as above.
std::string OneDnnIsa();

}  // namespace permdnn::runtime
