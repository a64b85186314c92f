// Which kernel implementation runs: the dispatch context, chosen once per
// process and read by every public product (permuted-diagonal, circulant
// and sparse alike).
//
// The fast path is Highway's dynamic dispatch: every SIMD kernel is compiled
// for each x86 target (SSE4, AVX2, AVX-512, ...) and the best one the CPU
// supports is picked at the first call; within it, the named kernel table
// (table.h) picks the inner kernel for the problem. On top of that a
// process-wide switch forces the reference kernels, for debugging a
// suspected SIMD bug:
//   * environment: PERMDNN_KERNELS=reference (or =simd, the default)
//   * CLI: --reference-kernels on any permdnn subcommand
// The choice is logged once to stderr when PERMDNN_VERBOSE is set, and is
// always reported by `permdnn bench` and in its JSON. Tests can also force
// one named row of the table (ForceKernel).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace permdnn::kernels {

struct KernelProblem;

enum class KernelPath { kReference, kSimd };

// The path in force (first call reads PERMDNN_KERNELS).
KernelPath ActivePath();
// Overrides the environment (CLI flag, tests).
void SetPath(KernelPath path);
// "reference" or "simd".
const char* PathName(KernelPath path);

// Forces the row `name` of the kernel table (table.h) for the op it belongs
// to; every other op dispatches as usual. "" undoes it. Error for a name
// that is no row of the active target's table. Tests only (process-wide).
void ForceKernel(const std::string& name);
// The forced row's name, or nullptr.
const char* ForcedKernel();

// Per-kernel target preferences: a problem whose kernel measured faster
// under another compiled, supported target than under the best one (`permdnn
// bench --simd-target avx2,avx3`, table in src/kernels/README.md) runs there.
// Returns that target's Highway bit, or 0 (the usual dispatch). Off while a
// test or `--simd-target` restricts the targets, and with SetSimdPreferences(false).
int64_t PreferredSimdTarget(const KernelProblem& problem);
void SetSimdPreferences(bool on);

// Name of the SIMD target the dispatcher uses now, e.g. "AVX2".
std::string ActiveSimdTarget();

// SIMD targets compiled in and supported by this CPU (Highway bits), best
// first. Tests iterate over them with ForceSimdTarget.
std::vector<int64_t> AvailableSimdTargets();
std::string SimdTargetName(int64_t target);
// The available target whose SimdTargetName is `name`, ignoring case
// ("avx2", "AVX3"), or 0 when there is none.
int64_t SimdTargetByName(const std::string& name);
// The same, or an Error naming `name` and the targets there are.
int64_t RequireSimdTarget(const std::string& name);
// Restricts dispatch to one target (0 = undo), process-wide: tests,
// `permdnn bench --simd-target` and runtime::RestrictSimdTarget.
void ForceSimdTarget(int64_t target);

}  // namespace permdnn::kernels
