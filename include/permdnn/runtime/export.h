// Model files out of permdnn: `permdnn export` (a training run directory,
// docs/run-format.md, to ONNX) and `permdnn compress` (an ONNX model's dense
// Gemm / MatMul / Conv weights replaced by their permuted-diagonal,
// block-circulant or pruned projection).
//
// Compressed layers become ai.permdnn nodes (PermDiagMatMul / PermDiagConv,
// BlockCirculantMatMul / BlockCirculantConv, SparseMatMul / SparseConv; the
// contract is the table in docs/runtime.md) whose initializers are exactly
// the stored arrays (values float32 in the canonical layout, offsets uint16,
// CSR row_ptr / col_idx int32, codes uint8 + a float32 codebook) with the
// logical shape as attributes, so the file size reflects the compression. `portable` lowers them
// to standard ONNX instead: a Gemm / Conv with the dense reconstruction of
// the weight (zeros off the structure). That is the lowering every ONNX
// runtime executes at full speed and it is exact (same products, same
// outputs up to summation order); the file is then dense-sized.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "permdnn/formats/spec.h"

namespace permdnn::runtime {

struct LayerReport {
  std::string name, op;          // layer name, emitted op (e.g. PermDiagMatMul)
  // "dense", "permdiag:p=8", "circulant:p=8", "prune:density=0.1",
  // "prune:density=0.1:bits=4" (density reached)
  std::string method = "dense";
  int64_t dense_bytes = 0;       // float32 weight bytes if dense
  // Bytes of its initializers in the file: every stored array (values,
  // offsets, row_ptr, col_idx, codes, codebook; export also the bias).
  int64_t stored_bytes = 0;
  double kept_energy = 1.0;      // projection only (compress)
};

struct ExportReport {
  std::string path;
  int64_t file_bytes = 0;
  std::vector<LayerReport> layers;
};

struct ExportOptions {
  bool portable = false;
};

// Reads RUN_DIR/model.json and its .npy tensors, writes an ONNX model
// atomically to out_path and checks that the runtime loads it. Errors name
// the file, the layer and what was expected.
ExportReport ExportRun(const std::string& run_dir, const std::string& out_path, const ExportOptions& options = {});

struct CompressOptions {
  // DESIGN.md SPEC: "permdiag:p=8", "fc1=permdiag:p=4,fc3=dense",
  // "circulant:p=8", "prune:density=0.1", "prune:density=0.1,bits=4", ...
  std::string spec;
  bool portable = false; // write the projected weights as dense Gemm / Conv
};

// Projects the chosen weights of in_path (PermDiagMatrix::FromDense, for Conv
// with the offsets that keep the most kernel energy; BlockCirculantMatrix::
// FromDense, per kernel tap for Conv; MagnitudeMask + KMeansCodebook for
// prune) and writes out_path atomically.
// Layers are named by their weight initializer without ".weight" (PyTorch:
// "fc1.weight" -> "fc1"), else by node name. Default rule of the SPEC: the
// first layer when it is a Conv and the last layer stay dense unless named.
ExportReport CompressOnnx(const std::string& in_path, const std::string& out_path, const CompressOptions& options);

// One layer CompressOnnx would replace and the method the SPEC gives it
// (the same candidates, names and default rule), for tools that change the
// dense weights before the projection (`permdnn compress --admm`).
struct CompressTarget {
  std::string layer, op;            // layer name (as above), node op (Gemm / MatMul / Conv)
  std::string weight;               // the weight initializer's name
  bool transposed = false;          // stored [in, out] (MatMul, Gemm transB=0); else [out, in(, kh, kw)]
  int64_t out = 0, in = 0;          // logical shape: out × in (× kernel)
  std::vector<int64_t> kernel;      // Conv's [kh, kw]; empty for a matrix
  formats::LayerCompression method; // dense when the SPEC leaves the layer dense
};

// Every candidate layer of in_path, in graph order, with its method under
// `spec` (validated: unknown layer names and bad SPEC items are errors).
std::vector<CompressTarget> PlanCompression(const std::string& in_path, const std::string& spec);

}  // namespace permdnn::runtime
