// The three architecture models. Each declares its parameters once, in a
// ParamTable (config.h: key, default, range, the reason for the default and
// the struct member that stores it; `permdnn sim --list-params` prints the
// same table and docs/simulator.md explains it), and simulates one layer
// cycle by cycle. Every Run() has the same named phases, as ramulator2's
// components tick: map the layer onto the PEs, then per cycle (1) detect /
// broadcast and (2) PE work, (3) trace and termination; then drain, the
// functional output, and the energy accounting (Account(), a separate
// function of the action counts).
//
// PermDnnEngine — N PEs × M multipliers, column-wise dataflow. A detector
//   scans the input buffer (scan_width entries per cycle) and broadcasts up
//   to broadcast_width nonzero activations per cycle into every PE's queue
//   (depth queue_depth; broadcast stalls while any queue lacks room). PE e
//   owns row blocks I ≡ e (mod N); for a broadcast column j = J·p + d it
//   issues one MAC per owned row block, on row I·p + (d − k_IJ) mod p, which
//   it computes from j and the block offset: no index is stored. M MACs per
//   cycle, taken in column-major order across queued activations. If a PE
//   owns more rows than its accumulators hold, the layer runs in passes over
//   the inputs. After the last MAC, outputs drain M per cycle per PE, plus
//   the pipeline depth. Functional: exact int64 accumulation and the same
//   RequantizeShift as kernels::PermDiagMatVecI16 (bit-exact).
//
// EieEngine — EIE as published: N PEs (rows interleaved r mod N), CSC with
//   4-bit codebook + 4-bit relative row index and padding zeros (core
//   EiePackedMatrix), one nonzero activation broadcast per cycle from the
//   leading-nonzero detector into queues of depth 8 (stall when any is
//   full), each PE one entry per cycle (a column with no entry on a PE still
//   costs it the pointer-read cycle), 4-stage pipeline. Load imbalance and
//   padding come from the real matrix.
//
// CirCnnEngine — FFT-based block-circulant engine with the PermDNN
//   multiplier budget: each PE's M real multipliers form M/4 complex
//   multipliers (butterfly units). Phases per inference: real FFT of every
//   input block that is not all zero (spread over the PEs, then broadcast),
//   spectral complex MACs (half spectrum, PE e owns row blocks I ≡ e mod N),
//   inverse FFT of every output block. It cannot skip individual zero inputs
//   (the FFT mixes them). Its work does not depend on the data beyond the
//   all-zero blocks, so the schedule's cycle count is exact.
//
// AdderArrayEngine — the PE-wise ternary accelerator of issue 18 (Yang, He
//   and Fan, AAAI 2020) and its twin on dense 16-bit weights, one class
//   with two registry names:
//   "adder": N PEs × L add/subtract lanes. A layer's groups (group_len =
//     group_ch input channels × the k×k kernel of one output row, i.e.
//     TernaryMatrix's groups) are mapped PE-wise: with G groups per row,
//     G >= N gives PE e the channel groups j ≡ e (mod N) of every row;
//     G < N makes R = floor(N / G) copies of the G channel PEs, copy s
//     taking the rows r ≡ s (mod R) (PE s·G + j), the other N − R·G PEs
//     idle. A PE streams each kept group it owns, L weights per cycle
//     (ceil(group_len / L) cycles): each lane adds or subtracts its
//     activation as the plus / minus bit planes select (a zero weight or a
//     zero activation gates the lane: energy, not cycles), an adder tree
//     sums the lanes into the PE's group accumulator, and the group's
//     partial sum goes to the row's output accumulator. Pruned groups cost
//     no cycle and no weight read: the PE's scheduler reads the group
//     bitmap. The schedule is static (known from the bitmap), so a PE's
//     cycles are the sum over its kept groups and the layer takes the
//     busiest PE's cycles, then the pipeline, then the drain: one scale
//     multiply per output (α · sum), ceil(m / N) cycles on one multiplier
//     per PE. Load balance: busy cycles per PE, max / mean and idle PE
//     cycles (counters). Inputs: the nonzero activations are broadcast once
//     (value + index) into the local buffers of the PEs that own their
//     channel group.
//   "mac16": the same array, mapping and schedule with L 16-bit
//     multiply-accumulate lanes on the layer's dense weights (16 bits each,
//     no group bitmap, no group skipped, no scale), the baseline the
//     ternary array replaces.
//   Both run only layers that carry a TernaryMatrix (sim/model.h); the
//   weight SRAM per PE holds the same number of weights in both (2 vs 16
//   bits each).
#pragma once

#include "permdnn/sim/engine.h"

namespace permdnn::sim {

struct PermDnnParams {
  int num_pe, mults_per_pe, bits, acc_bits;
  double frequency_mhz, node_nm;
  int queue_depth, broadcast_width, scan_width, pipeline_depth;
  int64_t acc_entries;
  double weight_sram_kb, act_buffer_kb;
  int input_bus_bits;  // 0: inputs arrive while the previous layer runs
};
const ParamTable<PermDnnParams>& PermDnnParamTable();
std::vector<ParamDef> PermDnnParamDefs();

class PermDnnEngine : public Engine {
 public:
  PermDnnEngine(const nlohmann::json& section, const TechTable& tech);
  std::string name() const override { return "permdnn"; }
  LayerResult Run(const LayerWorkload& w, TraceSink* trace) const override;
  void Account(LayerResult& r) const override;
  AreaBreakdown Area() const override;
  const ParamSpec& params() const override { return spec_; }
  const PermDnnParams& p() const { return p_; }

 private:
  double DatapathUm2() const;
  ParamSpec spec_;
  PermDnnParams p_;
  TechTable tech_;
};

struct EieParams {
  int num_pe, queue_depth, pipeline_depth, bits, pointer_bits;
  double frequency_mhz, source_node_nm, node_nm;
  std::string frequency_scaling;
  double spmat_sram_kb, pointer_sram_kb, act_sram_kb;
  int empty_column_cycles;
  double effective_frequency_mhz() const;
};
const ParamTable<EieParams>& EieParamTable();
std::vector<ParamDef> EieParamDefs();

class EieEngine : public Engine {
 public:
  EieEngine(const nlohmann::json& section, const TechTable& tech);
  std::string name() const override { return "eie"; }
  LayerResult Run(const LayerWorkload& w, TraceSink* trace) const override;
  void Account(LayerResult& r) const override;
  AreaBreakdown Area() const override;
  const ParamSpec& params() const override { return spec_; }
  bool needs_csc() const override { return true; }
  const EieParams& p() const { return p_; }

 private:
  ParamSpec spec_;
  EieParams p_;
  TechTable tech_;
};

struct CirCnnParams {
  int num_pe, mults_per_pe, bits, acc_bits, pipeline_depth;
  double frequency_mhz, node_nm;
  std::string block_size;  // "pow2" (CirCNN's power-of-two FFTs) or "same" as PermDNN's p
  int64_t acc_entries;
  double weight_sram_kb, act_buffer_kb;
};
const ParamTable<CirCnnParams>& CirCnnParamTable();
std::vector<ParamDef> CirCnnParamDefs();

class CirCnnEngine : public Engine {
 public:
  CirCnnEngine(const nlohmann::json& section, const TechTable& tech);
  std::string name() const override { return "circnn"; }
  LayerResult Run(const LayerWorkload& w, TraceSink* trace) const override;
  void Account(LayerResult& r) const override;
  AreaBreakdown Area() const override;
  const ParamSpec& params() const override { return spec_; }
  const CirCnnParams& p() const { return p_; }
  // Block size used for a PermDNN p, and complex multiplications of one
  // real-input FFT of that length.
  int BlockSize(int p) const;
  static int64_t RealFftComplexMults(int length);

 private:
  double DatapathUm2() const;
  ParamSpec spec_;
  CirCnnParams p_;
  TechTable tech_;
};

struct AdderArrayParams {
  int num_pe, lanes, bits, acc_bits, pipeline_depth;
  double frequency_mhz, node_nm;
  double weight_sram_kb, local_act_kb, act_buffer_kb, out_acc_kb;
};
// ternary = true: the "adder" table; false: "mac16" (wider accumulators,
// 8x the weight SRAM for the same weight count).
const ParamTable<AdderArrayParams>& AdderArrayParamTable(bool ternary);
std::vector<ParamDef> AdderArrayParamDefs(bool ternary);

class AdderArrayEngine : public Engine {
 public:
  AdderArrayEngine(const nlohmann::json& section, const TechTable& tech, bool ternary);
  std::string name() const override { return ternary_ ? "adder" : "mac16"; }
  LayerResult Run(const LayerWorkload& w, TraceSink* trace) const override;
  void Account(LayerResult& r) const override;
  AreaBreakdown Area() const override;
  const ParamSpec& params() const override { return spec_; }
  bool Supports(const LayerWorkload& w) const override { return w.ternary.has_value(); }
  const AdderArrayParams& p() const { return p_; }
  // The PE that owns group j of row r (G groups per row; see above).
  static int OwnerPe(int64_t r, int64_t j, int64_t groups_per_row, int num_pe);

 private:
  double DatapathUm2() const;
  ParamSpec spec_;
  AdderArrayParams p_;
  TechTable tech_;
  bool ternary_;
};

}  // namespace permdnn::sim
