// Workloads for the simulator: one fully connected layer, its compressed
// weights in every format an engine needs, and one input vector.
//
// A LayerWorkload is built from an FcLayerSpec (core/workloads.h) and a seed:
//   * activations: int16, exactly round(act_density · n) nonzeros at seeded
//     random positions, values positive (post-ReLU) ~ |N(0, 1)| quantized
//     with the largest frac_bits that does not saturate;
//   * PermDNN weights: p chosen so that 1/p is as close as possible to the
//     published weight density (or given), seeded random offsets and
//     He-uniform values drawn on the int16 grid (fixed_point.h frac bits). Values are materialized only
//     when `functional` is set (timing needs the offsets alone);
//   * EIE weights: CSC at the published density (random unstructured,
//     core/sparse_matrix.h), packed for EIE's PEs on demand.
// Builders validate densities (in [0, 1]), p (>= 1 and not larger than the
// padded shape) and shapes, and throw Error naming the layer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/formats/sparse_matrix.h"
#include "permdnn/formats/ternary_matrix.h"
#include "permdnn/core/workloads.h"

namespace permdnn::sim {

// The integer p >= 1 whose 1/p is closest to `density` (ties: larger p).
int MatchBlockSize(double density);

struct WorkloadOptions {
  uint64_t seed = 1;
  int p = 0;                 // 0: MatchBlockSize(weight_density)
  bool functional = true;    // materialize PermDNN int16 values
  bool build_csc = true;     // build the unstructured matrix for EIE
};

struct LayerWorkload {
  FcLayerSpec spec;
  int p = 1;
  uint64_t seed = 1;
  // Input activations (int16, value = q · 2^-x_frac_bits) and their nonzero
  // column indices in increasing order.
  std::vector<int16_t> x;
  int x_frac_bits = 0;
  std::vector<int32_t> nonzero_cols;
  // PermDNN structure: offsets [row_blocks][col_blocks] always; values only
  // if functional.
  int64_t row_blocks = 0, col_blocks = 0;
  std::vector<uint16_t> offsets;
  std::optional<PermDiagMatrixI16> weights;
  int output_shift = 0;  // requantization shift of the int16 output
  // EIE structure.
  std::optional<CscMatrix> csc;
  // Ternary layers (sim/model.h, from a model's TernaryMatMul/TernaryConv):
  // the matrix the adder array and its MAC twin run; synthetic layers have
  // none.
  std::optional<TernaryMatrix> ternary;

  int64_t m() const { return spec.outputs; }
  int64_t n() const { return spec.inputs; }
  double act_density() const { return static_cast<double>(nonzero_cols.size()) / static_cast<double>(n()); }
};

LayerWorkload BuildWorkload(const FcLayerSpec& spec, const WorkloadOptions& options);

}  // namespace permdnn::sim
