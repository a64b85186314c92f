// The three architecture models. Each declares its parameters (with the
// default and the reason for it; `permdnn sim --list-params` prints them and
// docs/simulator.md explains them) and simulates one layer cycle by cycle.
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
#pragma once

#include "permdnn/sim/engine.h"

namespace permdnn::sim {

std::vector<ParamDef> PermDnnParamDefs();
std::vector<ParamDef> EieParamDefs();
std::vector<ParamDef> CirCnnParamDefs();

struct PermDnnParams {
  int num_pe = 32, mults_per_pe = 8, bits = 16, acc_bits = 48;
  double frequency_mhz = 1200, node_nm = 28;
  int queue_depth = 8, broadcast_width = 8, scan_width = 64, pipeline_depth = 4;
  int64_t acc_entries = 512;
  double weight_sram_kb = 128, act_buffer_kb = 64;
  int input_bus_bits = 0;  // 0: inputs arrive while the previous layer runs
};

class PermDnnEngine : public Engine {
 public:
  PermDnnEngine(const nlohmann::json& section, const TechTable& tech);
  std::string name() const override { return "permdnn"; }
  LayerResult Run(const LayerWorkload& w, TraceSink* trace) const override;
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
  int num_pe = 64, queue_depth = 8, pipeline_depth = 4, bits = 16, index_bits = 4, pointer_bits = 16;
  double frequency_mhz = 800, source_node_nm = 45, node_nm = 28;
  std::string frequency_scaling = "linear";
  double spmat_sram_kb = 128, pointer_sram_kb = 32, act_sram_kb = 2;
  int empty_column_cycles = 1;
  double effective_frequency_mhz() const;
};

class EieEngine : public Engine {
 public:
  EieEngine(const nlohmann::json& section, const TechTable& tech);
  std::string name() const override { return "eie"; }
  LayerResult Run(const LayerWorkload& w, TraceSink* trace) const override;
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
  int num_pe = 32, mults_per_pe = 8, bits = 16, acc_bits = 32, pipeline_depth = 4;
  double frequency_mhz = 1200, node_nm = 28;
  std::string block_size = "same";  // "same" as PermDNN's p, or "pow2" (nearest power of two)
  double weight_sram_kb = 128, act_buffer_kb = 64;
};

class CirCnnEngine : public Engine {
 public:
  CirCnnEngine(const nlohmann::json& section, const TechTable& tech);
  std::string name() const override { return "circnn"; }
  LayerResult Run(const LayerWorkload& w, TraceSink* trace) const override;
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

}  // namespace permdnn::sim
