// Simulating the compressed layers of a trained model (`permdnn sim
// --model`): real matrices and the real activations of real inputs.
//
// The simulator does not read model files (it depends on core and kernels
// only); the CLI reads them with runtime/inspect.h and hands over, per
// layer, the core matrix and one activation vector per sample. For each
// layer and each sample a LayerWorkload is built and every requested engine
// runs on it; the records report the mean over the samples (mean cycles,
// energy, MACs; frames/s is 1 / mean latency) and the measured activation
// density.
//
// Every engine runs every layer. The engine of the layer's own format runs
// the layer's matrix; the others run the closest matrix of their format, and
// LayerResult::source says which:
//   permdnn: the PermDiagMatrix itself, else the projection of the layer's
//            dense reconstruction onto p×p permuted-diagonal blocks
//            (PermDiagMatrix::FromDense, kept energy reported) with the
//            layer's p (circulant) or the p matched to its density (sparse);
//   eie:     the CsrMatrix itself, else the CSC of the dense reconstruction
//            (for a permdiag layer: the same matrix stored unstructured,
//            with EIE's indices and padding; for a circulant layer: dense);
//   circnn:  the layer's p (circulant) or the PermDNN p; its cycle count
//            depends on p, the shape and the all-zero input blocks only.
// A ternary layer (TernaryMatMul / TernaryConv) runs as itself on the adder
// array ("adder") and as its dense reconstruction on the same array with
// 16-bit MACs ("mac16"); the PermDNN engine runs the projection of the
// dense reconstruction at the p whose stored bytes (16-bit values + offsets,
// formats::StoredSize) come closest to the ternary layer's stored bytes
// (EqualBytesBlockSize; the source line states both), EIE its CSC and
// CirCNN that p. The adder and mac16 engines run ternary layers only; the
// other layers of the model have no record for them.
// Fixed point: weights quantized per layer and activations per sample with
// the largest fractional bits that do not saturate (core/fixed_point.h).
// Biases are not simulated (one add per output at drain time).
//
// Recurrent layers arrive as two products per direction and time step, W
// x_t and R h_(t-1) with all gates stacked (the runtime's fused products),
// each a ModelLayer whose inputs are the vectors of every sample and step
// and whose positions are the time steps: a record is then the whole
// sequence (the sum over the steps), and ComparisonResult::recurrent groups
// the products of one node for the per-step and per-sequence table.
//
// Conv layers arrive as their im2col matrix (runtime/inspect.h): one
// matrix × vector product per output position, the vector being the im2col
// column of that position (zeros from padding are zero activations, which
// the PermDNN and EIE engines skip). `inputs` then holds the simulated
// columns of every sample, `positions` says how many output positions one
// inference has, and a record is per inference: the mean over the columns
// times `positions` (cycles, MACs, energy, counters; the dense-equivalent
// rate counts m·n·positions). When only some positions of each sample are
// simulated the sum is an estimate, and `note` says so. All columns of one
// sample share that sample's int16 scale (`scale_max`).
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/formats/sparse_matrix.h"
#include "permdnn/sim/report.h"
#include "permdnn/sim/workload.h"

namespace permdnn::sim {

struct ModelLayer {
  std::string name;  // node name
  // Exactly one is set.
  std::optional<PermDiagMatrix> permdiag;
  std::optional<BlockCirculantMatrix> circulant;
  std::optional<CsrMatrix> sparse;
  std::optional<TernaryMatrix> ternary;
  // One activation vector (n = cols floats) per sample; conv: per sample
  // and simulated output position.
  std::vector<std::vector<float>> inputs;
  // Conv: output positions per inference (1 for an FC layer), the number
  // of samples the inputs come from (0: inputs.size()), and a description
  // that is added to every record's source ("conv 3x3 ..., 196 positions").
  int64_t positions = 1;
  int samples = 0;
  std::string note;
  // Recurrent layers: the node this product belongs to and its cell
  // ("LSTM", "GRU", "RNN"); positions = time steps, inputs = x_t (W) or
  // h_(t-1) (R) of every sample and step. Empty for FC and conv layers.
  std::string recurrent_node, recurrent_cell;
  // Optional, one per input: the |x| maximum that sets its int16 scale
  // (conv: the whole sample's). Empty: each vector's own maximum.
  std::vector<float> scale_max;

  const char* format() const;  // "permdiag" | "circulant" | "sparse" | "ternary"
  int64_t rows() const;
  int64_t cols() const;
  int sample_count() const { return samples > 0 ? samples : static_cast<int>(inputs.size()); }
};

// The p in [1, min(m, n)] whose m×n permuted-diagonal matrix stores the
// number of bytes closest to `bytes` (16-bit values, the registry's offset
// bytes; ties: the smaller p).
int EqualBytesBlockSize(int64_t m, int64_t n, int64_t bytes);

// The per-layer part of the workloads (matrices in every engine's format);
// SetModelInput then fills one sample's activations. `sources` gets one
// line per engine kind ("permdnn", "eie", "circnn") saying what it runs.
LayerWorkload BuildModelWorkload(const ModelLayer& layer, bool build_csc, std::map<std::string, std::string>* sources);
// Quantizes x (n floats) into w.x / x_frac_bits / nonzero_cols, with the
// scale of `max_abs` (negative: x's own maximum).
void SetModelInput(LayerWorkload& w, std::span<const float> x, double max_abs = -1);

struct ModelComparisonOptions {
  std::vector<std::string> archs = {"permdnn", "eie", "circnn"};
  nlohmann::json config = nlohmann::json::object();  // per-arch sections; "workload" is ignored
  std::string tech_path;                              // empty: TechTable::DefaultPath()
  bool check_functional = true;  // PermDNN int16 output == kernels int16 output, every sample
};

// Throws Error if a layer has no matrix, no samples, an input of the
// wrong length, positions < 1 or a scale_max of the wrong length.
ComparisonResult RunModelComparison(const std::vector<ModelLayer>& layers, const ModelComparisonOptions& options);

}  // namespace permdnn::sim
