// The EIE model (see engines.h): real CSC matrix, EIE packing with padding
// zeros, interleaved rows, queues of depth 8, one broadcast per cycle.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

using Kind = ParamDef::Kind;

std::vector<ParamDef> EieParamDefs() {
  return {
      {"num_pe", Kind::kInt, 64, "", 1, 4096, {}, "PEs (EIE: 64); row r lives on PE r mod num_pe"},
      {"queue_depth", Kind::kInt, 8, "", 1, 1 << 20, {}, "activation queue per PE (EIE: 8); broadcast stalls while "
                                                        "any queue is full"},
      {"pipeline_depth", Kind::kInt, 4, "", 1, 1024, {}, "EIE's 4-stage pipeline"},
      {"bits", Kind::kInt, 16, "", 2, 32, {}, "arithmetic width (EIE: 16-bit fixed point, 16-entry codebook)"},
      {"pointer_bits", Kind::kInt, 16, "", 1, 64, {}, "column pointer width (EIE: 16)"},
      {"frequency_mhz", Kind::kReal, 800, "", 1e-3, 1e5, {}, "published clock at source_node_nm (EIE: 800 MHz)"},
      {"source_node_nm", Kind::kReal, 45, "", 1, 1000, {}, "node of the published design (EIE: 45 nm)"},
      {"node_nm", Kind::kReal, 28, "", 1, 1000, {}, "node of the comparison (PermDNN's 28 nm)"},
      {"frequency_scaling", Kind::kString, 0, "linear", 0, 0, {"linear", "none"},
       "linear: clock x source_node/node (gate delay scales with L: 800 MHz -> 1286 MHz at 28 nm); none: keep "
       "frequency_mhz"},
      {"spmat_sram_kb", Kind::kReal, 128, "", 1e-3, 1e9, {}, "sparse-matrix SRAM per PE, 64 bits wide (EIE: 128 KB)"},
      {"pointer_sram_kb", Kind::kReal, 32, "", 1e-3, 1e9, {}, "pointer SRAM per PE, two banks (EIE: 32 KB)"},
      {"act_sram_kb", Kind::kReal, 2, "", 1e-3, 1e9, {}, "source + destination activations per PE (EIE: 2 KB)"},
      {"empty_column_cycles", Kind::kInt, 1, "", 0, 1, {}, "cycles a PE spends on an activation whose column has "
                                                          "no entry on it: 1 = its pointer read occupies the PE "
                                                          "(start == end is only known after the read); 0 = "
                                                          "skipped for free (optimistic bound)"},
  };
}

double EieParams::effective_frequency_mhz() const {
  return frequency_scaling == "linear" ? frequency_mhz * source_node_nm / node_nm : frequency_mhz;
}

EieEngine::EieEngine(const nlohmann::json& section, const TechTable& tech)
    : spec_(ParamSpec::Parse("eie", EieParamDefs(), section)), tech_(tech) {
  p_.num_pe = static_cast<int>(spec_.Int("num_pe"));
  p_.queue_depth = static_cast<int>(spec_.Int("queue_depth"));
  p_.pipeline_depth = static_cast<int>(spec_.Int("pipeline_depth"));
  p_.bits = static_cast<int>(spec_.Int("bits"));
  p_.pointer_bits = static_cast<int>(spec_.Int("pointer_bits"));
  p_.frequency_mhz = spec_.Number("frequency_mhz");
  p_.source_node_nm = spec_.Number("source_node_nm");
  p_.node_nm = spec_.Number("node_nm");
  p_.frequency_scaling = spec_.String("frequency_scaling");
  p_.spmat_sram_kb = spec_.Number("spmat_sram_kb");
  p_.pointer_sram_kb = spec_.Number("pointer_sram_kb");
  p_.act_sram_kb = spec_.Number("act_sram_kb");
  p_.empty_column_cycles = static_cast<int>(spec_.Int("empty_column_cycles"));
}

AreaBreakdown EieEngine::Area() const {
  const double N = p_.num_pe, nm = p_.node_nm;
  AreaBreakdown a;
  a.datapath = N * tech_.EieArithArea(nm);
  a.weight_mem = N * tech_.SramArea(p_.spmat_sram_kb * 1024.0, nm);
  a.index_mem = N * tech_.SramArea(p_.pointer_sram_kb * 1024.0, nm);
  a.act_mem = N * (tech_.SramArea(p_.act_sram_kb * 1024.0, nm) + tech_.FifoArea(p_.queue_depth, nm));
  const double cells = a.total();
  a.other = cells * tech_.FillerFraction() / (1.0 - tech_.FillerFraction());
  for (double* v : {&a.datapath, &a.weight_mem, &a.index_mem, &a.act_mem, &a.accumulate, &a.other}) *v *= 1e-6;
  return a;
}

LayerResult EieEngine::Run(const LayerWorkload& w, TraceSink* trace) const {
  PERMDNN_CHECK(w.csc.has_value(), "eie engine, layer {}: workload has no CSC matrix", w.spec.name);
  const CscMatrix& csc = *w.csc;
  const int N = p_.num_pe;
  float max_abs = 0;
  for (float v : csc.values()) max_abs = std::max(max_abs, std::fabs(v));
  const EiePackedMatrix packed = EiePackedMatrix::Build(csc, N, EieCodebook::Linear(max_abs > 0 ? max_abs : 1.0));

  const auto& nz = w.nonzero_cols;
  const int64_t nnz = static_cast<int64_t>(nz.size());
  // Entries each PE holds in each broadcast column, laid out [column][PE]
  // so that one cycle's pops read neighbouring counters.
  std::vector<int32_t> count(static_cast<std::size_t>(nnz * N));
  for (int e = 0; e < N; ++e) {
    const int32_t* ptr = packed.col_ptr(e).data();
    for (int64_t k = 0; k < nnz; ++k) count[k * N + e] = ptr[nz[k] + 1] - ptr[nz[k]];
  }
  struct PeState {
    int64_t popped = 0;  // activations taken from the queue
    int64_t rem = 0;     // entries left in the current column
    int64_t busy = 0;    // cycles spent on entries or pointer reads
  };
  std::vector<PeState> pe(N);
  int64_t pushed = 0, cycles = 0, entries = 0, pointer_reads = 0, empty_columns = 0, stall_cycles = 0;
  int64_t min_popped = 0;  // the slowest PE's queue head
  while (true) {
    // Phase 1: the leading-nonzero detector broadcasts one nonzero
    // activation, unless some PE's queue is full.
    const int64_t pushed_before = pushed;
    if (pushed < nnz) {
      if (pushed - min_popped < p_.queue_depth)
        ++pushed;
      else
        ++stall_cycles;
    }
    // Phase 2: each PE processes one entry of its current column, or pops
    // the next activation (pointer read pipelined ahead) and processes that
    // column's first entry; an empty column costs its pointer-read cycle.
    bool all_done = pushed == nnz;
    int64_t new_min = nnz;
    for (int e = 0; e < N; ++e) {
      PeState& st = pe[e];
      if (st.rem > 0) {
        --st.rem;
        ++st.busy;
        ++entries;
      } else if (st.popped < pushed_before) {
        st.rem = count[st.popped++ * N + e];
        pointer_reads += 2;
        // With free empty columns, keep popping until a column has work.
        while (st.rem == 0 && p_.empty_column_cycles == 0 && st.popped < pushed_before) {
          ++empty_columns;
          st.rem = count[st.popped++ * N + e];
          pointer_reads += 2;
        }
        if (st.rem > 0) {
          --st.rem;
          ++entries;
          ++st.busy;
        } else {
          ++empty_columns;
          if (p_.empty_column_cycles > 0) ++st.busy;
        }
      }
      all_done = all_done && st.rem == 0 && st.popped == nnz;
      new_min = std::min(new_min, st.popped);
    }
    min_popped = new_min;
    ++cycles;
    // Phase 3: trace (opt-in), termination.
    if (trace)
      trace->Line(name(), w.spec.name, cycles,
                  fmt::format("broadcast={} queue0={} rem0={}", pushed - pushed_before, pushed - pe[0].popped,
                              pe[0].rem));
    if (all_done) break;
  }
  cycles += p_.pipeline_depth;

  int64_t useful = 0;
  for (int32_t j : nz) useful += csc.col_ptr()[j + 1] - csc.col_ptr()[j];

  LayerResult r;
  r.arch = name();
  r.layer = w.spec.name;
  r.m = w.m();
  r.n = w.n();
  r.p = 0;
  r.weight_density = csc.density();
  r.act_density = w.act_density();
  r.num_pe = N;
  r.mults_per_pe = 1;
  r.frequency_mhz = p_.effective_frequency_mhz();
  r.node_nm = p_.node_nm;
  r.cycles = cycles;
  r.useful_macs = useful;
  r.issued_macs = entries;
  int64_t total_busy = 0, max_busy = 0;
  for (const auto& st : pe) {
    total_busy += st.busy;
    max_busy = std::max(max_busy, st.busy);
  }
  const double mean = static_cast<double>(total_busy) / N;
  r.load_imbalance = mean > 0 ? static_cast<double>(max_busy) / mean : 1.0;

  const double nm = p_.node_nm;
  const double b = p_.bits;
  EnergyBreakdown& E = r.energy;
  E.mac = entries * (tech_.MultEnergy(p_.bits, nm) + tech_.AddEnergy(p_.bits, nm));
  // 8-bit entries come 8 per 64-bit read of the sparse-matrix SRAM.
  E.weight_mem = entries / 8.0 * tech_.SramEnergy(p_.spmat_sram_kb * 1024.0, 64, nm);
  E.index_mem = pointer_reads * tech_.SramEnergy(p_.pointer_sram_kb * 1024.0 / 2, p_.pointer_bits, nm) +
                entries * tech_.RegfileReadEnergy(p_.bits, nm);  // codebook lookup
  E.accumulate = entries * tech_.RegfileRmwEnergy(p_.bits, nm);    // destination activation
  const int64_t queue_ops = 2 * N * nnz;
  E.act_mem = w.n() * tech_.ZeroTestEnergy(nm) + nnz * tech_.RegfileReadEnergy(static_cast<int>(b), nm) +
              queue_ops * tech_.FifoEnergy(nm);
  E.clock = static_cast<double>(cycles) * N * tech_.ClockEnergyPerPeCycle(tech_.EieArithArea(nm), nm);
  r.area = Area();

  r.weight_bytes = packed.bytes(p_.pointer_bits);
  r.weight_capacity_bytes = static_cast<int64_t>((p_.spmat_sram_kb + p_.pointer_sram_kb) * 1024.0) * N;
  const int64_t pointer_bytes_per_pe = CeilDiv((w.n() + 1) * p_.pointer_bits, 8);
  const bool spmat_fits = packed.max_entries_per_pe() <= static_cast<int64_t>(p_.spmat_sram_kb * 1024.0);
  const bool ptr_fits = pointer_bytes_per_pe <= static_cast<int64_t>(p_.pointer_sram_kb * 1024.0);
  r.weights_fit = spmat_fits && ptr_fits;
  if (!spmat_fits)
    r.capacity_note += fmt::format("busiest PE stores {:.0f} KB of entries, spmat_sram_kb = {:.0f}. ",
                                   packed.max_entries_per_pe() / 1024.0, p_.spmat_sram_kb);
  if (!ptr_fits)
    r.capacity_note += fmt::format("{} column pointers of {} bits need {:.0f} KB per PE, pointer_sram_kb = {:.0f}",
                                   w.n() + 1, p_.pointer_bits, pointer_bytes_per_pe / 1024.0, p_.pointer_sram_kb);
  r.counters = {{"nonzero_inputs", nnz},
                {"entries", entries},
                {"padding_entries_stored", packed.padding_entries()},
                {"real_entries_stored", packed.real_entries()},
                {"pointer_reads", pointer_reads},
                {"empty_columns", empty_columns},
                {"broadcast_stall_cycles", stall_cycles},
                {"queue_ops", queue_ops},
                {"max_entries_per_pe", packed.max_entries_per_pe()},
                {"pointer_bytes_per_pe", pointer_bytes_per_pe}};
  r.Finish();
  return r;
}

}  // namespace permdnn::sim
