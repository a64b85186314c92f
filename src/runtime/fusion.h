// Load-time graph rewrite for inference, run by Model::Load unless
// Options::reference (the reference path keeps the file's graph node for
// node, and tests compare the two):
//  * Identity and inference Dropout nodes go: their consumers read their
//    input (kept when their output is a graph output);
//  * a Conv, PermDiagConv, BlockCirculantConv or TernaryConv absorbs the chain of
//    single-consumer nodes after it, in this order, each optional:
//    BatchNormalization (constant parameters, one per output channel), Add
//    (the other operand any tensor), Relu or Clip (bounds known at load).
//    They become the node's NodeDef::post_ops and the chain's last output
//    becomes its output.
// A chain value that is a graph output or read by more than one node ends
// the chain. Errors in the absorbed nodes' inputs are reported by the
// fused node at plan time, naming it.
#pragma once

#include <vector>

#include "runtime/graph.h"

namespace permdnn::runtime::detail {

// Rewrites `nodes` in place; `values` gets producer indices of the new list.
// Returns the number of nodes removed.
int FuseForInference(std::vector<NodeDef>& nodes, std::vector<Value>& values);

// "Conv+BatchNormalization+Relu" for profiles.
std::string FusedOpType(const NodeDef& node);

}  // namespace permdnn::runtime::detail
