// Internal: the typed rows of the kernel table (include/permdnn/kernels/
// table.h) and the one walk that picks a row. Each SIMD file builds, per
// Highway target, one list of rows per op family with the inner kernel's
// function pointer; dispatch, SelectedKernel() and KernelTable() all read
// those lists through Pick().
#pragma once

#include <span>
#include <string>
#include <vector>

#include <hwy/targets.h>

#include "permdnn/core/error.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/table.h"

namespace permdnn::kernels::detail {

template <class Fn>
struct Row {
  const char* name;
  bool (*admits)(const KernelProblem&);
  Fn fn;
  int arg = 0;  // a compile-time parameter the caller needs (e.g. the sample tile of a batched kernel)
};

// Whether the op runs its reference row: the reference path, or its
// reference row forced by name.
bool UseReference(KernelOp op);

// "<op>.reference", the name of an op's reference row.
std::string ReferenceName(KernelOp op);

// The row of `rows` that runs `q`: the forced row when it is one of them
// (Error naming it when its predicate does not admit q), else the first
// row that admits q; nullptr when none does.
template <class Fn>
const Row<Fn>* Pick(std::span<const Row<Fn>> rows, const KernelProblem& q) {
  const char* forced = ForcedKernel();
  if (forced != nullptr) {
    for (const Row<Fn>& r : rows)
      if (std::string_view(forced) == r.name) {
        PERMDNN_CHECK(r.admits(q),
                      "kernel {} forced, but it does not admit p={} {}x{} batch {} (a row may also need a CPU "
                      "feature the target does not imply, e.g. VNNI)",
                      r.name, q.p, q.rows, q.cols, q.batch);
        return &r;
      }
  }
  for (const Row<Fn>& r : rows)
    if (r.admits(q)) return &r;
  return nullptr;
}

// Appends the public view of rows (target name filled by the caller).
template <class Fn>
void Describe(std::span<const Row<Fn>> rows, KernelOp op, std::vector<KernelRow>* out) {
  for (const Row<Fn>& r : rows) out->push_back({r.name, op, "", r.admits});
}

inline bool AdmitsAll(const KernelProblem&) { return true; }

// Each SIMD file's part of the table, for the active target: its rows
// (Table) and the row it runs for a problem of one of its ops (Select;
// nullptr for another file's op). dispatch.cc joins them. A SIMD file
// defines TableImpl / SelectImpl per target and exports them with
// PERMDNN_EXPORT_KERNEL_TABLE (in its HWY_ONCE part, namespace
// permdnn::kernels).
void PermDiagTable(std::vector<KernelRow>* out);
const char* PermDiagSelect(const KernelProblem& q);
// PermDiagSelect as the Highway target `target` would answer it.
const char* PermDiagSelectOn(int64_t target, const KernelProblem& q);

// The entry of a HWY_EXPORT table that runs `target` (a compiled, supported
// Highway target bit): per-kernel target preferences (PreferredSimdTarget).
inline size_t TargetIndex(int64_t target) {
  return hwy::Num0BitsBelowLS1Bit_Nonzero64(static_cast<uint64_t>(HWY_CHOSEN_TARGET_SHIFT(target)));
}
void SparseTable(std::vector<KernelRow>* out);
const char* SparseSelect(const KernelProblem& q);
void CirculantTable(std::vector<KernelRow>* out);
const char* CirculantSelect(const KernelProblem& q);
void PermDiagConvTable(std::vector<KernelRow>* out);
const char* PermDiagConvSelect(const KernelProblem& q);
void PermDiagColumnTable(std::vector<KernelRow>* out);
const char* PermDiagColumnSelect(const KernelProblem& q);
void TernaryTable(std::vector<KernelRow>* out);
const char* TernarySelect(const KernelProblem& q);

}  // namespace permdnn::kernels::detail

#define PERMDNN_EXPORT_KERNEL_TABLE(Name, TableImpl, SelectImpl)                                        \
  HWY_EXPORT(TableImpl);                                                                             \
  HWY_EXPORT(SelectImpl);                                                                            \
  void detail::Name##Table(std::vector<KernelRow>* out) { HWY_DYNAMIC_DISPATCH(TableImpl)(out); }    \
  const char* detail::Name##Select(const KernelProblem& q) { return HWY_DYNAMIC_DISPATCH(SelectImpl)(q); }
