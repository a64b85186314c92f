// Which kernel implementation runs, chosen once per process.
//
// The fast path is Highway's dynamic dispatch: every SIMD kernel is compiled
// for each x86 target (SSE4, AVX2, AVX-512, ...) and the best one the CPU
// supports is picked at the first call. On top of that a process-wide switch
// forces the reference kernels, for debugging a suspected SIMD bug:
//   * environment: PERMDNN_KERNELS=reference (or =simd, the default)
//   * CLI: --reference-kernels on any permdnn subcommand
// The choice is logged once to stderr when PERMDNN_VERBOSE is set, and is
// always reported by `permdnn bench` and in its JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace permdnn::kernels {

enum class KernelPath { kReference, kSimd };

// The path in force (first call reads PERMDNN_KERNELS).
KernelPath ActivePath();
// Overrides the environment (CLI flag, tests).
void SetPath(KernelPath path);
// "reference" or "simd".
const char* PathName(KernelPath path);

// Name of the SIMD target the dispatcher uses now, e.g. "AVX2".
std::string ActiveSimdTarget();

// SIMD targets compiled in and supported by this CPU (Highway bits), best
// first. Tests iterate over them with ForceSimdTarget.
std::vector<int64_t> AvailableSimdTargets();
std::string SimdTargetName(int64_t target);
// Restricts dispatch to one target (0 = undo). For tests only.
void ForceSimdTarget(int64_t target);

}  // namespace permdnn::kernels
