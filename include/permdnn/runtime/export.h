// Model files out of permdnn: `permdnn export` (a training run directory,
// docs/run-format.md, to ONNX) and `permdnn compress` (an ONNX model's dense
// Gemm / MatMul / Conv weights replaced by their permuted-diagonal
// projection).
//
// Compressed layers become ai.permdnn PermDiagMatMul / PermDiagConv nodes
// whose initializers are exactly the stored values (float32, canonical
// layout) and offsets (uint16, [mb, nb]) with attributes p and the logical
// shape, so the file size reflects the compression. `portable` lowers them
// to standard ONNX instead: a Gemm / Conv with the dense reconstruction of
// the weight (zeros off the structure). That is the lowering every ONNX
// runtime executes at full speed and it is exact (same products, same
// outputs up to summation order); the file is then dense-sized.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace permdnn::runtime {

struct LayerReport {
  std::string name, op;          // layer name, emitted op (e.g. PermDiagMatMul)
  std::string method = "dense";  // "dense" or "permdiag:p=8"
  int64_t dense_bytes = 0;       // float32 weight bytes if dense
  int64_t stored_bytes = 0;      // bytes of its initializers in the file
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
  std::string spec;      // DESIGN.md SPEC: "permdiag:p=8", "fc1=permdiag:p=4,fc3=dense", ...
  bool portable = false; // write the projected weights as dense Gemm / Conv
};

// Projects the chosen weights of in_path (PermDiagMatrix::FromDense; for Conv
// the offsets keep the most kernel energy) and writes out_path atomically.
// Layers are named by their weight initializer without ".weight" (PyTorch:
// "fc1.weight" -> "fc1"), else by node name. Default rule of the SPEC: the
// first layer when it is a Conv and the last layer stay dense unless named.
ExportReport CompressOnnx(const std::string& in_path, const std::string& out_path, const CompressOptions& options);

}  // namespace permdnn::runtime
