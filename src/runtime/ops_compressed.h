// Internal: the ai.permdnn block-circulant (ops_circulant.cc) and pruned
// (ops_sparse.cc) operators, created by CreateKernel (ops.cc).
#pragma once

#include <memory>

#include "runtime/graph.h"

namespace permdnn::runtime::detail {

// BlockCirculantMatMul, BlockCirculantConv; nullptr for another op type.
std::unique_ptr<OpKernel> CreateCirculantKernel(const NodeDef& n);
// SparseMatMul, SparseConv; nullptr for another op type.
std::unique_ptr<OpKernel> CreateSparseKernel(const NodeDef& n);

// Integer attribute `a` of n, required, in [1, 2^31]; Error naming the node.
int64_t RequirePositiveAttr(const NodeDef& n, const char* a);

}  // namespace permdnn::runtime::detail
