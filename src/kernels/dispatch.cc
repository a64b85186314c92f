// Process-wide kernel path selection (see dispatch.h).
#include "permdnn/kernels/dispatch.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <hwy/targets.h>

#include "permdnn/core/error.h"

namespace permdnn::kernels {

namespace {

std::atomic<int> g_path{-1};

KernelPath PathFromEnvironment() {
  const char* env = std::getenv("PERMDNN_KERNELS");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "simd") == 0) return KernelPath::kSimd;
  if (std::strcmp(env, "reference") == 0) return KernelPath::kReference;
  Fail("PERMDNN_KERNELS={} is not a kernel path; use 'simd' or 'reference'", env);
}

}  // namespace

KernelPath ActivePath() {
  int path = g_path.load(std::memory_order_relaxed);
  if (path < 0) {
    static std::once_flag once;
    std::call_once(once, [] {
      KernelPath chosen = PathFromEnvironment();
      int expected = -1;
      g_path.compare_exchange_strong(expected, static_cast<int>(chosen));
      if (std::getenv("PERMDNN_VERBOSE"))
        std::fprintf(stderr, "permdnn: kernels: %s (SIMD target %s)\n",
                     PathName(static_cast<KernelPath>(g_path.load())), ActiveSimdTarget().c_str());
    });
    path = g_path.load();
  }
  return static_cast<KernelPath>(path);
}

void SetPath(KernelPath path) { g_path.store(static_cast<int>(path)); }

const char* PathName(KernelPath path) {
  return path == KernelPath::kReference ? "reference" : "simd";
}

std::vector<int64_t> AvailableSimdTargets() {
  std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  // SupportedAndGeneratedTargets lists lowest bit first, which is the best
  // target on x86; keep that order.
  return targets;
}

std::string SimdTargetName(int64_t target) { return hwy::TargetName(target); }

std::string ActiveSimdTarget() {
  std::vector<int64_t> targets = AvailableSimdTargets();
  return targets.empty() ? "none" : SimdTargetName(targets.front());
}

void ForceSimdTarget(int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

}  // namespace permdnn::kernels
