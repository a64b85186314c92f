// Process-wide kernel path selection and the joined kernel table (see
// dispatch.h, table.h).
#include "permdnn/kernels/dispatch.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <hwy/targets.h>

#include "permdnn/core/error.h"
#include "permdnn/kernels/table.h"
#include "src/kernels/table_internal.h"

namespace permdnn::kernels {

namespace {

std::atomic<int> g_path{-1};
std::atomic<bool> g_targets_restricted{false};  // ForceSimdTarget in force
// The compiled targets this CPU runs, as Highway target bits, best (lowest)
// first; 0 until first asked. hwy::SupportedTargets() detects them with
// CPUID on every call (unless a test mock is set), and in a virtual machine
// CPUID traps to the hypervisor: on an Intel Xeon VM (2026-12-07) 7.8 µs per
// CPUID and 32 µs per SupportedTargets, which every product paid through
// PreferredSimdTarget (a batch-1 fully connected layer of 784 x 1024 at p = 8
// took 41 µs in the runtime where its kernel takes 6). Detected once;
// ForceSimdTarget reads them again.
std::atomic<int64_t> g_available{0};
int64_t AvailableBits() {
  int64_t bits = g_available.load(std::memory_order_acquire);
  if (bits == 0) {
    // Only where nothing was stored meanwhile: a ForceSimdTarget in between wins.
    int64_t expected = 0;
    bits = hwy::SupportedTargets() & HWY_TARGETS;
    if (!g_available.compare_exchange_strong(expected, bits, std::memory_order_acq_rel)) bits = expected;
  }
  return bits;
}
// The forced row's name (ForceKernel): read on every product, so a plain
// pointer to a string that lives until the next ForceKernel.
std::atomic<const char*> g_forced{nullptr};
std::string& ForcedStorage() {
  static std::string s;
  return s;
}

constexpr KernelOp kAllOps[] = {
    KernelOp::kPermDiagMatVec,     KernelOp::kPermDiagMatVecPacked, KernelOp::kPermDiagMatMulRows,
    KernelOp::kPermDiagMatMul,     KernelOp::kPermDiagMatVecT,      KernelOp::kPermDiagMatMulT,
    KernelOp::kPermDiagMatVecSparseInput, KernelOp::kPermDiagMatVecI16, KernelOp::kCirculantMatVec,
    KernelOp::kCirculantMatVecT,   KernelOp::kCsrMatVec,            KernelOp::kCsrMatMul,
    KernelOp::kPermDiagConv,       KernelOp::kPermDiagColumnMatVec, KernelOp::kPermDiagColumnSparseInput,
    KernelOp::kPermDiagColumnMatMulRows, KernelOp::kTernaryMatVec, KernelOp::kTernaryMatMul,
    KernelOp::kTernaryMatMulI16, KernelOp::kTernaryMatMulU8,
};

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
  // Lowest bit first, which is the best target on x86.
  std::vector<int64_t> targets;
  for (int64_t bits = AvailableBits(); bits != 0; bits &= bits - 1) targets.push_back(bits & -bits);
  return targets;
}

std::string SimdTargetName(int64_t target) { return hwy::TargetName(target); }

int64_t SimdTargetByName(const std::string& name) {
  for (int64_t t : AvailableSimdTargets()) {
    const std::string n = SimdTargetName(t);
    if (std::equal(n.begin(), n.end(), name.begin(), name.end(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
      return t;
  }
  return 0;
}

int64_t RequireSimdTarget(const std::string& name) {
  if (const int64_t t = SimdTargetByName(name)) return t;
  std::string known;
  for (int64_t t : AvailableSimdTargets()) known += (known.empty() ? "" : ", ") + SimdTargetName(t);
  Fail("'{}' is not a SIMD target this build and CPU run (available: {})", name, known);
}

std::string ActiveSimdTarget() {
  std::vector<int64_t> targets = AvailableSimdTargets();
  return targets.empty() ? "none" : SimdTargetName(targets.front());
}

void ForceSimdTarget(int64_t target) {
  g_targets_restricted.store(target != 0);
  hwy::SetSupportedTargetsForTest(target);
  const int64_t supported = hwy::SupportedTargets();
  g_available.store(supported & HWY_TARGETS, std::memory_order_release);
  hwy::GetChosenTarget().Update(supported);
}

const char* KernelOpName(KernelOp op) {
  switch (op) {
    case KernelOp::kPermDiagMatVec: return "permdiag.matvec";
    case KernelOp::kPermDiagMatVecPacked: return "permdiag.packed";
    case KernelOp::kPermDiagMatMulRows: return "permdiag.matmul_rows";
    case KernelOp::kPermDiagMatMul: return "permdiag.matmul";
    case KernelOp::kPermDiagMatVecT: return "permdiag.matvec_t";
    case KernelOp::kPermDiagMatMulT: return "permdiag.matmul_t";
    case KernelOp::kPermDiagMatVecSparseInput: return "permdiag.sparse_input";
    case KernelOp::kPermDiagMatVecI16: return "permdiag.matvec_i16";
    case KernelOp::kCirculantMatVec: return "circulant.matvec";
    case KernelOp::kCirculantMatVecT: return "circulant.matvec_t";
    case KernelOp::kCsrMatVec: return "csr.matvec";
    case KernelOp::kCsrMatMul: return "csr.matmul";
    case KernelOp::kPermDiagConv: return "permdiag.conv";
    case KernelOp::kPermDiagColumnMatVec: return "permdiag_column.matvec";
    case KernelOp::kPermDiagColumnSparseInput: return "permdiag_column.sparse_input";
    case KernelOp::kPermDiagColumnMatMulRows: return "permdiag_column.matmul_rows";
    case KernelOp::kTernaryMatVec: return "ternary.matvec";
    case KernelOp::kTernaryMatMul: return "ternary.matmul";
    case KernelOp::kTernaryMatMulI16: return "ternary.matmul_i16";
    case KernelOp::kTernaryMatMulU8: return "ternary.matmul_u8";
  }
  return "?";
}

std::vector<KernelRow> KernelTable() {
  std::vector<KernelRow> rows;
  detail::PermDiagTable(&rows);
  detail::CirculantTable(&rows);
  detail::SparseTable(&rows);
  detail::PermDiagConvTable(&rows);
  detail::PermDiagColumnTable(&rows);
  detail::TernaryTable(&rows);
  const std::string target = ActiveSimdTarget();
  for (KernelRow& r : rows)
    if (r.target.empty()) r.target = target;
  for (KernelOp op : kAllOps) rows.push_back({detail::ReferenceName(op), op, "reference", detail::AdmitsAll});
  return rows;
}

std::string SelectedKernel(const KernelProblem& q) {
  if (detail::UseReference(q.op)) return detail::ReferenceName(q.op);
  if (const int64_t t = PreferredSimdTarget(q)) {
    if (const char* n = detail::PermDiagSelectOn(t, q)) return std::string(n) + "@" + SimdTargetName(t);
  }
  if (const char* n = detail::PermDiagSelect(q)) return n;
  if (const char* n = detail::CirculantSelect(q)) return n;
  if (const char* n = detail::SparseSelect(q)) return n;
  if (const char* n = detail::PermDiagConvSelect(q)) return n;
  if (const char* n = detail::PermDiagColumnSelect(q)) return n;
  if (const char* n = detail::TernarySelect(q)) return n;
  return detail::ReferenceName(q.op);  // no SIMD row admits q: the op falls back to its reference loop
}

bool KernelAdmits(const std::string& name, const KernelProblem& q) {
  for (const KernelRow& r : KernelTable())
    if (r.name == name && r.op == q.op) return r.admits(q);
  return false;
}

void ForceKernel(const std::string& name) {
  if (name.empty()) {
    g_forced.store(nullptr);
    return;
  }
  bool known = false;
  for (const KernelRow& r : KernelTable()) known = known || r.name == name;
  PERMDNN_CHECK(known, "ForceKernel: '{}' is no row of the kernel table on {}", name, ActiveSimdTarget());
  g_forced.store(nullptr);
  ForcedStorage() = name;
  g_forced.store(ForcedStorage().c_str());
}

const char* ForcedKernel() { return g_forced.load(std::memory_order_relaxed); }

namespace {
std::atomic<bool> g_preferences{true};

// Measured with `permdnn bench --layers Alex-6,Alex-7,VGG-6,VGG-7 --simd-target
// avx2,avx3 --act-density 1 --threads 1 --cpu-time --rounds 3` on Zen 5
// (src/kernels/README.md). Only margins of 15% or more that held on every
// layer of the size class become entries.
struct Preference {
  KernelOp op;
  int p;
  int64_t min_value_bytes;  // the matrix's values at least this large
  int64_t target;
};
constexpr Preference kPreferences[] = {
    // Row-major p=16 past L3 (VGG-6 4096x25088, 25.7 MB; the matrix API, the
    // row pack is chunk-major there on AVX-512): AVX2's two 8-lane loads per
    // block 0.60-0.68 ms, AVX-512's one 16-lane load (it splits a cache line
    // for every offset but 0) 0.74-0.77 ms, three alternating runs.
    {KernelOp::kPermDiagMatVec, 16, int64_t{24} << 20, HWY_AVX2},
};
}  // namespace

void SetSimdPreferences(bool on) { g_preferences.store(on); }

int64_t PreferredSimdTarget(const KernelProblem& q) {
  if (!g_preferences.load(std::memory_order_relaxed) || g_targets_restricted.load(std::memory_order_relaxed) ||
      ActivePath() == KernelPath::kReference || ForcedKernel() != nullptr)
    return 0;
  KernelOp op = q.op;
  if (op == KernelOp::kPermDiagMatVecPacked && !q.chunked) op = KernelOp::kPermDiagMatVec;  // a row-major pack
  const int64_t value_bytes = q.p > 0 ? q.rows * q.cols / q.p * static_cast<int64_t>(sizeof(float)) : 0;
  const int64_t available = AvailableBits();
  const int64_t best = available & -available;
  for (const Preference& pref : kPreferences)
    if (pref.op == op && pref.p == q.p && value_bytes >= pref.min_value_bytes && best != pref.target &&
        (available & pref.target) != 0)
      return pref.target;
  return 0;
}

namespace detail {

std::string ReferenceName(KernelOp op) { return std::string(KernelOpName(op)) + ".reference"; }

bool UseReference(KernelOp op) {
  if (ActivePath() == KernelPath::kReference) return true;
  const char* forced = ForcedKernel();
  return forced != nullptr && ReferenceName(op) == forced;
}

}  // namespace detail

}  // namespace permdnn::kernels
