// Inspection of the compressed layers of an ONNX model, and activation
// capture: what `permdnn sim --model` needs from a model file.
//
// InspectCompressedLayers() reads the ModelProto (no kernels are built, so
// it works even for operators this runtime does not execute) and returns,
// in graph order, every compressed fully connected layer as the core matrix
// the accelerator models take:
//   ai.permdnn PermDiagMatMul       -> PermDiagMatrix      (PermDiagMatrix::FromParts)
//   ai.permdnn BlockCirculantMatMul -> BlockCirculantMatrix (BlockCirculantMatrix::FromParts)
//   ai.permdnn SparseMatMul         -> CsrMatrix, codebook decoded (CsrMatrix::FromParts)
// with the node name, the name of the value entering the layer, the shape
// and the bias. The weights must be graph initializers (as `permdnn export`
// writes them); anything else is an Error naming the node and the input.
// Convolution and dense layers are listed as skipped, with the reason.
//
// WithCapturedOutputs() returns a copy of the model whose graph outputs are
// the given values (ONNX allows any value to be a graph output), keeping
// only the nodes those values depend on, so that Model::FromBytes + the
// general Model::Run(inputs) returns the activations entering each layer.
// Nodes after the last requested value are dropped, so a later operator the
// runtime cannot run does not prevent capturing the earlier ones.
// CaptureValues() does both steps for a batch of inputs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "permdnn/core/circulant_matrix.h"
#include "permdnn/core/permdiag_matrix.h"
#include "permdnn/core/sparse_matrix.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime {

enum class CompressedFormat { kPermDiag, kCirculant, kSparse };
const char* CompressedFormatName(CompressedFormat f);  // "permdiag" | "circulant" | "sparse"

struct CompressedFcLayer {
  std::string node;     // node name ("#<index>" when the file leaves it empty)
  std::string op_type;  // PermDiagMatMul | BlockCirculantMatMul | SparseMatMul
  int64_t position = 0; // index of the node in the graph
  std::string input;    // the value X entering the layer
  std::string output;   // the value the layer produces
  int64_t in_features = 0, out_features = 0;
  CompressedFormat format = CompressedFormat::kPermDiag;
  int p = 0;                    // block size (permdiag, circulant); 0 for sparse
  int64_t codebook_size = 0;    // sparse with shared weights: K; else 0
  std::optional<PermDiagMatrix> permdiag;
  std::optional<BlockCirculantMatrix> circulant;
  std::optional<CsrMatrix> sparse;
  std::vector<float> bias;      // [out_features], empty when absent

  // Dense row-major [out_features x in_features] reconstruction.
  std::vector<float> ToDense() const;
};

struct SkippedLayer {
  std::string node, op_type, reason;
};

struct ModelInspection {
  std::vector<CompressedFcLayer> layers;  // graph order
  std::vector<SkippedLayer> skipped;      // conv and dense layers, graph order
  std::vector<std::string> graph_inputs;  // the model's inputs (initializers excluded)
};

// `name` prefixes every error (e.g. the file path).
ModelInspection InspectCompressedLayers(std::string_view model_bytes, const std::string& name);

// The serialized model whose graph outputs are exactly `values` (in that
// order), pruned to the nodes they depend on. Every value must be produced
// by a node (Error naming the value otherwise; a graph input needs no
// capture).
std::string WithCapturedOutputs(std::string_view model_bytes, const std::string& name,
                                const std::vector<std::string>& values);

// Runs the model on `inputs` (in the order of the model's graph inputs) and
// returns the named values in order. Graph inputs are returned as given;
// the other values are computed by the pruned model of WithCapturedOutputs.
std::vector<Tensor> CaptureValues(std::string_view model_bytes, const std::string& name,
                                  const std::vector<Tensor>& inputs, const std::vector<std::string>& values,
                                  const Options& options = {});

}  // namespace permdnn::runtime
