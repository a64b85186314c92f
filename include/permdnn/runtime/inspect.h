// Inspection of the compressed layers of an ONNX model, and activation
// capture: what `permdnn sim --model` needs from a model file.
//
// InspectCompressedLayers() reads the graph (no kernels are built) and
// returns, in graph order, every node of a compressed format of the format
// registry (formats/registry.h: ReadNode validates, Lift gives the matrix)
// as the matrix the accelerator models take:
//   ai.permdnn PermDiagMatMul       -> PermDiagMatrix      (PermDiagMatrix::FromParts)
//   ai.permdnn BlockCirculantMatMul -> BlockCirculantMatrix (BlockCirculantMatrix::FromParts)
//   ai.permdnn SparseMatMul         -> CsrMatrix, codebook decoded (CsrMatrix::FromParts)
//   ai.permdnn TernaryMatMul        -> TernaryMatrix, and its CsrMatrix (α·t)
// with the node name, the name of the value entering the layer, the shape
// and the bias. The weights must be graph initializers (as `permdnn export`
// writes them); anything else is an Error naming the node and the input.
//
// The compressed convolutions are listed as their im2col matrices: a conv
// with the structure on the (out-channel, in-channel) pair is, per output
// position, the product of an out × (in·K) matrix (K = kernel taps) with
// the im2col column of that position, so
//   ai.permdnn PermDiagConv       -> PermDiagMatrix [out, K·nb·p]: tap t of
//       block (I, J) becomes block (I, t·nb + J) with the same offset (for a
//       fixed tap the out × in matrix is permuted-diagonal), column
//       t·nb·p + in channel; weights on padded channels (>= in_channels,
//       ignored by the runtime op) are zeroed;
//   ai.permdnn BlockCirculantConv -> BlockCirculantMatrix [out, K·nb·p],
//       the same tap-major layout (as ops_circulant.cc multiplies it);
//   ai.permdnn SparseConv         -> its CsrMatrix [out, in·K] as stored,
//       column in_channel·K + tap;
// with `conv` set (kernel, strides, pads, dilations, auto_pad).
// Compressed recurrent nodes (PermDiagLSTM / GRU / RNN) are listed apart,
// as RecurrentLayerInfo: their W and R per direction (ReadRecurrentMatrix
// of the format registry, lifted to PermDiagMatrix).
// ConvIm2Col() turns one sample of the captured conv input into the
// columns, in the matrix's column order, that reproduce the runtime's conv
// output (matrix × column + bias per output position). Dense Conv, Gemm and
// MatMul are listed as skipped, with the reason.
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
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/formats/registry.h"
#include "permdnn/formats/sparse_matrix.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime {

// The attributes of a compressed conv node (ONNX Conv semantics, group 1).
// Lists as in the file; empty means the ONNX default.
struct ConvAttributes {
  int64_t in_channels = 0, out_channels = 0;
  std::vector<int64_t> kernel_shape;  // 1-3 spatial dims, from the values' shape when the node omits it
  std::vector<int64_t> strides, pads, dilations;
  std::string auto_pad = "NOTSET";
  int64_t kernel_size() const;  // K: product of kernel_shape
  std::string Describe() const;  // "3x3 stride 1 pads 1,1,1,1"
};

// A compressed layer as one matrix. FC layers: [out_features x
// in_features]. Conv layers (conv set): the im2col matrix, out_features =
// out channels and in_features = its column count (K·nb·p or in·K, see
// above), one product per output position.
struct CompressedFcLayer {
  std::string node;     // node name ("#<index>" when the file leaves it empty)
  std::string op_type;  // PermDiagMatMul | BlockCirculantMatMul | SparseMatMul | *Conv
  int64_t position = 0; // index of the node in the graph
  std::string input;    // the value X entering the layer
  std::string output;   // the value the layer produces
  int64_t in_features = 0, out_features = 0;
  formats::Kind kind = formats::Kind::kPermDiag;  // its row of the format registry
  int p = 0;                    // block size (permdiag, circulant); 0 for sparse
  int64_t codebook_size = 0;    // sparse with shared weights: K; else 0
  std::optional<PermDiagMatrix> permdiag;
  std::optional<BlockCirculantMatrix> circulant;
  std::optional<CsrMatrix> sparse;      // also set for ternary layers (α·t, pruned groups absent)
  std::optional<TernaryMatrix> ternary;  // TernaryMatMul / TernaryConv [out, in·taps]
  std::vector<float> bias;      // [out_features], empty when absent
  std::optional<ConvAttributes> conv;  // set for PermDiagConv, BlockCirculantConv, SparseConv

  // Dense row-major [out_features x in_features] reconstruction.
  std::vector<float> ToDense() const;
};

// A compressed recurrent node (ai.permdnn PermDiagLSTM / PermDiagGRU /
// PermDiagRNN) as the simulator takes it: per direction its input product
// W [G·H x input_size] and recurrent product R [G·H x H], all gates of one
// product stacked (G = 4, 3, 1 in ONNX's gate order), one matrix × vector
// product each per time step as the runtime runs them (docs/recurrent.md).
// `input` is X, `output_y` the node's Y (all hidden states; empty when the
// node does not produce it): h_{t-1} of step t is Y's previous step of the
// direction, h_{-1} the zero state.
struct RecurrentLayerInfo {
  std::string node, op_type;
  std::string cell;  // "LSTM" | "GRU" | "RNN"
  int64_t position = 0;
  std::string input, output_y;
  int64_t hidden = 0, input_size = 0, gates = 1, layout = 0;
  std::string direction = "forward";  // forward | reverse | bidirectional
  int p = 0;
  bool has_sequence_lens = false, has_initial_h = false;
  bool linear_before_reset = false;  // GRU
  std::vector<PermDiagMatrix> w, r;  // one per direction
};

struct SkippedLayer {
  std::string node, op_type, reason;
};

struct ModelInspection {
  std::vector<CompressedFcLayer> layers;  // graph order
  std::vector<SkippedLayer> skipped;      // dense layers (FC, conv, recurrent), graph order
  std::vector<RecurrentLayerInfo> recurrent;  // compressed recurrent nodes, graph order
  std::vector<std::string> graph_inputs;  // the model's inputs (initializers excluded)
};

// `name` prefixes every error (e.g. the file path).
ModelInspection InspectCompressedLayers(std::string_view model_bytes, const std::string& name);

// The im2col columns of one sample of a conv layer's input.
struct ConvColumns {
  std::vector<int64_t> out_spatial;  // output spatial dims (1-3)
  int64_t positions = 0;             // their product
  int64_t length = 0;                // floats per column: the layer's in_features
  std::vector<float> data;           // [positions][length]
  std::span<const float> column(int64_t q) const {
    return {data.data() + q * length, static_cast<std::size_t>(length)};
  }
};
// x_shape: the captured input's shape [N, in_channels, spatial...]; sample:
// one sample of it (in_channels · spatial floats). Geometry (strides, pads,
// dilations, auto_pad) as the runtime's Conv; positions that read padding
// get zeros. Error naming the layer when the shape does not fit.
ConvColumns ConvIm2Col(const CompressedFcLayer& layer, const std::vector<int64_t>& x_shape,
                       std::span<const float> sample);

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
