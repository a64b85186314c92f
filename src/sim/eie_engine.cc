// The EIE model (see engines.h): real CSC matrix, EIE packing with padding
// zeros, interleaved rows, queues of depth 8, one broadcast per cycle.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

const ParamTable<EieParams>& EieParamTable() {
  using P = EieParams;
  static const auto t =
      ParamTable<P>()
          .Int("num_pe", &P::num_pe, 64, 1, 4096, "PEs (EIE: 64); row r lives on PE r mod num_pe")
          .Int("queue_depth", &P::queue_depth, 8, 1, 1 << 20,
               "activation queue per PE (EIE: 8); broadcast stalls while any queue is full")
          .Int("pipeline_depth", &P::pipeline_depth, 4, 1, 1024, "EIE's 4-stage pipeline")
          .Int("bits", &P::bits, 16, 2, 32, "arithmetic width (EIE: 16-bit fixed point, 16-entry codebook)")
          .Int("pointer_bits", &P::pointer_bits, 16, 1, 64, "column pointer width (EIE: 16)")
          .Real("frequency_mhz", &P::frequency_mhz, 800, 1e-3, 1e5, "published clock at source_node_nm (EIE: 800 MHz)")
          .Real("source_node_nm", &P::source_node_nm, 45, 1, 1000, "node of the published design (EIE: 45 nm)")
          .Real("node_nm", &P::node_nm, 28, 1, 1000, "node of the comparison (PermDNN's 28 nm)")
          .Choice("frequency_scaling", &P::frequency_scaling, "linear", {"linear", "none"},
                  "linear: clock x source_node/node (gate delay scales with L: 800 MHz -> 1286 MHz at 28 nm); none: "
                  "keep frequency_mhz")
          .Real("spmat_sram_kb", &P::spmat_sram_kb, 128, 1e-3, 1e9,
                "sparse-matrix SRAM per PE, 64 bits wide (EIE: 128 KB)")
          .Real("pointer_sram_kb", &P::pointer_sram_kb, 32, 1e-3, 1e9, "pointer SRAM per PE, two banks (EIE: 32 KB)")
          .Real("act_sram_kb", &P::act_sram_kb, 2, 1e-3, 1e9, "source + destination activations per PE (EIE: 2 KB)")
          .Int("empty_column_cycles", &P::empty_column_cycles, 1, 0, 1,
               "cycles a PE spends on an activation whose column has no entry on it: 1 = its pointer read occupies "
               "the PE (start == end is only known after the read); 0 = skipped for free (optimistic bound)");
  return t;
}

std::vector<ParamDef> EieParamDefs() { return EieParamTable().defs(); }

double EieParams::effective_frequency_mhz() const {
  return frequency_scaling == "linear" ? frequency_mhz * source_node_nm / node_nm : frequency_mhz;
}

EieEngine::EieEngine(const nlohmann::json& section, const TechTable& tech)
    : p_(EieParamTable().Parse("eie", section, &spec_)), tech_(tech) {}

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

namespace {

// Action counts of a run.
struct Counts {
  int64_t cycles = 0, entries = 0, pointer_reads = 0, empty_columns = 0, stall_cycles = 0;
};

// ---- Component 1: the leading-nonzero detector -----------------------------------

class Detector {
 public:
  Detector(int64_t nnz, int queue_depth) : nnz_(nnz), depth_(queue_depth) {}
  // Phase 1: broadcast one nonzero activation unless the slowest PE's queue
  // is full.
  void Tick(int64_t min_popped, Counts& c) {
    pushed_before_ = pushed_;
    if (pushed_ >= nnz_) return;
    if (pushed_ - min_popped < depth_)
      ++pushed_;
    else
      ++c.stall_cycles;
  }
  int64_t nnz() const { return nnz_; }
  int64_t pushed() const { return pushed_; }
  int64_t pushed_before_tick() const { return pushed_before_; }

 private:
  int64_t nnz_, depth_, pushed_ = 0, pushed_before_ = 0;
};

// ---- Component 2: the PEs --------------------------------------------------------

class PeArray {
 public:
  // count[k * N + e]: entries PE e holds in the k-th broadcast column, laid
  // out [column][PE] so that one cycle's pops read neighbouring counters.
  PeArray(int N, int empty_column_cycles, std::vector<int32_t> count)
      : N_(N), empty_cycles_(empty_column_cycles), count_(std::move(count)), pe_(N) {}

  // Phase 2: each PE processes one entry of its current column, or pops the
  // next activation (pointer read pipelined ahead) and processes that
  // column's first entry; an empty column costs its pointer-read cycle.
  void Tick(int64_t visible, Counts& c) {
    int64_t new_min = INT64_MAX;
    for (int e = 0; e < N_; ++e) {
      State& st = pe_[e];
      if (st.rem > 0) {
        --st.rem;
        ++st.busy;
        ++c.entries;
      } else if (st.popped < visible) {
        st.rem = count_[st.popped++ * N_ + e];
        c.pointer_reads += 2;
        // With free empty columns, keep popping until a column has work.
        while (st.rem == 0 && empty_cycles_ == 0 && st.popped < visible) {
          ++c.empty_columns;
          st.rem = count_[st.popped++ * N_ + e];
          c.pointer_reads += 2;
        }
        if (st.rem > 0) {
          --st.rem;
          ++c.entries;
          ++st.busy;
        } else {
          ++c.empty_columns;
          if (empty_cycles_ > 0) ++st.busy;
        }
      }
      new_min = std::min(new_min, st.popped);
    }
    min_popped_ = new_min;
  }

  int64_t min_popped() const { return min_popped_; }
  bool Done(int64_t nnz) const {
    return std::all_of(pe_.begin(), pe_.end(), [&](const State& st) { return st.rem == 0 && st.popped == nnz; });
  }
  int64_t popped(int e) const { return pe_[e].popped; }
  int64_t rem(int e) const { return pe_[e].rem; }
  // Busy cycles: the largest over the mean.
  double Imbalance() const {
    int64_t total = 0, most = 0;
    for (const auto& st : pe_) {
      total += st.busy;
      most = std::max(most, st.busy);
    }
    const double mean = static_cast<double>(total) / N_;
    return mean > 0 ? static_cast<double>(most) / mean : 1.0;
  }

 private:
  struct State {
    int64_t popped = 0;  // activations taken from the queue
    int64_t rem = 0;     // entries left in the current column
    int64_t busy = 0;    // cycles spent on entries or pointer reads
  };
  int N_, empty_cycles_;
  std::vector<int32_t> count_;
  std::vector<State> pe_;
  int64_t min_popped_ = 0;
};


// Entries PE e holds in the k-th broadcast column, at [k * N + e].
std::vector<int32_t> EntriesPerColumn(const EiePackedMatrix& packed, const std::vector<int32_t>& nz) {
  const int N = packed.num_pe();
  const int64_t nnz = static_cast<int64_t>(nz.size());
  std::vector<int32_t> count(static_cast<std::size_t>(nnz * N));
  for (int e = 0; e < N; ++e) {
    const int32_t* ptr = packed.col_ptr(e).data();
    for (int64_t k = 0; k < nnz; ++k) count[k * N + e] = ptr[nz[k] + 1] - ptr[nz[k]];
  }
  return count;
}

}  // namespace

LayerResult EieEngine::Run(const LayerWorkload& w, TraceSink* trace) const {
  PERMDNN_CHECK(w.csc.has_value(), "eie engine, layer {}: workload has no CSC matrix", w.spec.name);
  const CscMatrix& csc = *w.csc;
  const int N = p_.num_pe;
  // 0. Mapping: the matrix as EIE stores it (rows interleaved over the PEs).
  float max_abs = 0;
  for (float v : csc.values()) max_abs = std::max(max_abs, std::fabs(v));
  const EiePackedMatrix packed = EiePackedMatrix::Build(csc, N, EieCodebook::Linear(max_abs > 0 ? max_abs : 1.0));
  const auto& nz = w.nonzero_cols;
  const int64_t nnz = static_cast<int64_t>(nz.size());

  Counts c;
  Detector detector(nnz, p_.queue_depth);
  PeArray pes(N, p_.empty_column_cycles, EntriesPerColumn(packed, nz));
  while (true) {
    detector.Tick(pes.min_popped(), c);            // 1. detect / broadcast
    pes.Tick(detector.pushed_before_tick(), c);    // 2. PE work
    ++c.cycles;                                    // 3. trace, termination
    if (trace)
      trace->Line(name(), w.spec.name, c.cycles,
                  fmt::format("broadcast={} queue0={} rem0={}", detector.pushed() - detector.pushed_before_tick(),
                              detector.pushed() - pes.popped(0), pes.rem(0)));
    if (detector.pushed() == nnz && pes.Done(nnz)) break;
  }
  c.cycles += p_.pipeline_depth;  // 4. drain

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
  r.cycles = c.cycles;
  r.useful_macs = useful;
  r.issued_macs = c.entries;
  r.load_imbalance = pes.Imbalance();

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
                {"broadcasts", nnz},
                {"entries", c.entries},
                {"padding_entries_stored", packed.padding_entries()},
                {"real_entries_stored", packed.real_entries()},
                {"pointer_reads", c.pointer_reads},
                {"empty_columns", c.empty_columns},
                {"broadcast_stall_cycles", c.stall_cycles},
                {"queue_ops", 2 * N * nnz},
                {"zero_tests", w.n()},
                {"max_entries_per_pe", packed.max_entries_per_pe()},
                {"pointer_bytes_per_pe", pointer_bytes_per_pe}};
  Account(r);  // 5. energy accounting
  return r;
}

void EieEngine::Account(LayerResult& r) const {
  const double nm = p_.node_nm;
  const int N = p_.num_pe;
  auto count = [&](const char* key) { return static_cast<double>(r.counters.at(key)); };
  const double entries = count("entries");
  r.area = Area();
  EnergyBreakdown& E = r.energy;
  E = {};
  E.mac = entries * (tech_.MultEnergy(p_.bits, nm) + tech_.AddEnergy(p_.bits, nm));
  // 8-bit entries come 8 per 64-bit read of the sparse-matrix SRAM.
  E.weight_mem = entries / 8.0 * tech_.SramEnergy(p_.spmat_sram_kb * 1024.0, 64, nm);
  E.index_mem = count("pointer_reads") * tech_.SramEnergy(p_.pointer_sram_kb * 1024.0 / 2, p_.pointer_bits, nm) +
                entries * tech_.RegfileReadEnergy(p_.bits, nm);  // codebook lookup
  E.accumulate = entries * tech_.RegfileRmwEnergy(p_.bits, nm);  // destination activation
  E.act_mem = count("zero_tests") * tech_.ZeroTestEnergy(nm) +
              count("nonzero_inputs") * tech_.RegfileReadEnergy(p_.bits, nm) +
              count("queue_ops") * tech_.FifoEnergy(nm);
  // Broadcast of value and column index over an H-tree to the PEs (EIE's
  // published power, 64 x its PE, does not include it: report.cc compares
  // the PE part with it).
  E.network = tech_.BroadcastEnergy(count("broadcasts") * (p_.bits + IndexBits(r.n)), r.area.total(), N, nm);
  // The PE's logic is EIE's own (its Table II combinational area).
  const double logic_um2 = tech_.EieArithArea(nm) + tech_.ControlLogicArea(nm);
  E.clock = tech_.ClockEnergy(r.cycles, N, r.area.total(), logic_um2, nm);
  r.Finish();
}

}  // namespace permdnn::sim
