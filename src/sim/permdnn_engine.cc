// The PermDNN engine model (see engines.h for the microarchitecture).
//
// Run() is MapLayer (row blocks onto PEs, passes), then per pass a cycle loop
// over two components ticked in numbered phases, as ramulator2's controllers
// tick:
//   1. Detector::Tick — the leading-nonzero detector scans activations and
//      broadcasts nonzeros into every PE's queue (all-or-nothing);
//   2. PeArray::Tick — each PE issues up to M MACs from activations that
//      arrived in earlier cycles;
//   3. trace (opt-in) and termination;
// then the drain (outputs leave through the lanes after the pipeline
// empties), the functional int16 output, and Account(): the action counts
// priced with the technology table.
//
// The PE, as the energy and area model builds it: M 16-bit multipliers, each
// with its own weight SRAM bank (weight_sram_kb / M; a block's offset is
// stored beside its values) and its own bank of accumulator registers
// (acc_entries / M flip-flop words of acc_bits, read through a mux tree and
// written back per MAC); an offset decoder per lane ((d − k) mod p: a
// subtract and a conditional add of index width); the activation queue; the
// clock tree over the PE's area and the pipeline registers over its logic.
// Outside the PEs: the activation buffer (two copies, ping-pong), read once
// per activation by the detector and written once per output, and the
// broadcast network, an H-tree from the detector to the PEs carrying value
// and column index of every nonzero.
//
// Shared offsets (the permdiag-column format: every block of a block column
// has one offset k_J; detected from the layer's offsets): the same cycle
// model (every PE still does one MAC per row block per nonzero), with two
// hardware changes priced: the offsets leave the PEs' weight banks for one
// table of n/p entries beside the detector (weight bytes: values + n/p
// offsets instead of one offset per block), and the residue (d − k_J) mod p
// is decoded once per nonzero there and broadcast with it (log2 p more
// bits per broadcast) instead of by a decoder in every lane for every MAC:
// offset reads = live column blocks, decoder adds = 2 per broadcast.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/formats/registry.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

const ParamTable<PermDnnParams>& PermDnnParamTable() {
  using P = PermDnnParams;
  static const auto t =
      ParamTable<P>()
          .Int("num_pe", &P::num_pe, 32, 1, 4096, "processing elements (PermDNN paper, DESIGN.md: 32)")
          .Int("mults_per_pe", &P::mults_per_pe, 8, 1, 1024, "16-bit multipliers per PE (paper: 8)")
          .Int("bits", &P::bits, 16, 2, 32,
               "weight/activation width (paper: 16-bit fixed point); the functional check runs at 16")
          .Int("acc_bits", &P::acc_bits, 0, 0, 64,
               "accumulator width; 0 = 2*bits+16: products are 2*bits wide and 16 guard bits keep sums of up to "
               "65,536 products exact, so the output equals the int64 reference kernel bit for bit")
          .Real("frequency_mhz", &P::frequency_mhz, 1200, 1e-3, 1e5, "clock (paper: 1.2 GHz)")
          .Real("node_nm", &P::node_nm, 28, 1, 1000, "technology node for energy and area (paper: 28 nm CMOS)")
          .Int("queue_depth", &P::queue_depth, 8, 1, 1 << 20,
               "activation queue per PE; EIE's depth (DESIGN.md). PermDNN PEs never diverge by more than one "
               "MAC-cycle per column, so depth only absorbs the detector's bursts")
          .Int("broadcast_width", &P::broadcast_width, 0, 0, 1 << 20,
               "nonzero activations broadcast per cycle; 0 = mults_per_pe: a PE owning one row block uses M "
               "activations per cycle, so M keeps every multiplier busy on any layer with >= num_pe row blocks")
          .Int("scan_width", &P::scan_width, 64, 1, 1 << 24,
               "activations the leading-nonzero detector examines per cycle; 64 finds 8 nonzeros per cycle down to "
               "12.5% activation density")
          .Int("pipeline_depth", &P::pipeline_depth, 4, 1, 1024,
               "weight read, multiply, accumulate, write back (EIE uses 4 stages for the same update)")
          .Int("acc_entries", &P::acc_entries, 288, 1, 1 << 24,
               "accumulator registers per PE, in mults_per_pe banks (one per lane): 36 per lane covers the most "
               "rows any EIE layer puts on one lane (NT-Wd: 31 row blocks of p = 9 on a PE, at most 4 on a lane); "
               "a flip-flop bit takes 5-12x the area of an SRAM bit, so the banks are sized to the workload, and "
               "more rows run in passes over the inputs")
          .Real("weight_sram_kb", &P::weight_sram_kb, 128, 1e-3, 1e9,
                "weight SRAM per PE, split into mults_per_pe banks; 128 KB = EIE's per-PE sparse-matrix SRAM, the "
                "same on-chip budget. Layers needing more are flagged")
          .Real("act_buffer_kb", &P::act_buffer_kb, 64, 1e-3, 1e9,
                "input activation buffer (two copies, ping-pong): 32,768 16-bit values hold VGG-6's 25,088 inputs")
          .Int("input_bus_bits", &P::input_bus_bits, 0, 0, 1 << 20,
               "0: the layer's inputs were written into the idle ping-pong copy while the previous layer ran (as "
               "EIE's source/destination swap), so loading costs no cycles; else loading takes "
               "ceil(n*bits/input_bus_bits) cycles before the first broadcast");
  return t;
}

std::vector<ParamDef> PermDnnParamDefs() { return PermDnnParamTable().defs(); }

PermDnnEngine::PermDnnEngine(const nlohmann::json& section, const TechTable& tech)
    : p_(PermDnnParamTable().Parse("permdnn", section, &spec_)), tech_(tech) {
  // Derived defaults (0 = derived from other parameters).
  if (p_.acc_bits == 0) p_.acc_bits = 2 * p_.bits + 16;
  if (p_.broadcast_width == 0) p_.broadcast_width = p_.mults_per_pe;
  PERMDNN_CHECK(p_.acc_bits >= 2 * p_.bits,
                "config permdnn.acc_bits: {} cannot hold one {}-bit x {}-bit product (need >= {})", p_.acc_bits,
                p_.bits, p_.bits, 2 * p_.bits);
}

namespace {


// The offset decoders are sized for the largest block the stored 8-bit
// offsets allow (core OffsetBytes: p <= 256).
constexpr int kDecoderBits = 9;

// ---- Phase 0: the layer's mapping onto the PEs ---------------------------------

struct Mapping {
  std::vector<int64_t> owned;  // row blocks of PE e: I ≡ e (mod N)
  int64_t max_owned = 0, blocks_per_pass = 0, passes = 1;
  // Row blocks PE e works on in `pass`.
  int64_t InPass(int e, int64_t pass) const {
    return std::clamp<int64_t>(owned[e] - pass * blocks_per_pass, 0, blocks_per_pass);
  }
};

Mapping MapLayer(const LayerWorkload& w, const PermDnnParams& p) {
  const int N = p.num_pe;
  Mapping m;
  m.blocks_per_pass = p.acc_entries / w.p;
  PERMDNN_CHECK(m.blocks_per_pass >= 1,
                "permdnn engine, layer {}: acc_entries = {} cannot hold one row block of p = {} rows", w.spec.name,
                p.acc_entries, w.p);
  m.owned.resize(N);
  for (int e = 0; e < N; ++e) m.owned[e] = w.row_blocks / N + (e < w.row_blocks % N ? 1 : 0);
  m.max_owned = *std::max_element(m.owned.begin(), m.owned.end());
  m.passes = std::max<int64_t>(1, CeilDiv(m.max_owned, m.blocks_per_pass));
  return m;
}

// Action counts of a run (LayerResult::counters holds them by name).
struct Counts {
  int64_t cycles = 0, zero_tests = 0, broadcasts = 0, queue_ops = 0, stall_cycles = 0, offset_reads = 0;
  int64_t drain_cycles = 0, load_cycles = 0;
  std::vector<int64_t> macs;  // per PE
};

// ---- Component 1: the leading-nonzero detector and the broadcast ------------------

class Detector {
 public:
  Detector(const PermDnnParams& p, const std::vector<int32_t>& nz, int64_t n) : p_(p), nz_(nz), n_(n) {}

  // Phase 1: examine up to scan_width activations and broadcast up to
  // broadcast_width nonzeros, as far as every PE's queue has room
  // (`room`, the smallest free space; all-or-nothing per activation).
  void Tick(int64_t room, Counts& c) {
    pushed_before_ = pushed_;
    if (scan_ >= n_) return;
    int64_t budget = std::min<int64_t>(p_.broadcast_width, room);
    const int64_t window_end = std::min<int64_t>(n_, scan_ + p_.scan_width);
    int64_t new_scan = window_end;
    while (pushed_ < nnz() && nz_[pushed_] < window_end) {
      if (budget == 0) {
        new_scan = nz_[pushed_];  // resume at the activation that did not fit
        break;
      }
      ++pushed_;
      --budget;
    }
    c.zero_tests += new_scan - scan_;
    scan_ = new_scan;
    if (pushed_ == pushed_before_ && room == 0) ++c.stall_cycles;
    c.broadcasts += pushed_ - pushed_before_;
  }

  int64_t nnz() const { return static_cast<int64_t>(nz_.size()); }
  int64_t pushed() const { return pushed_; }
  int64_t pushed_before_tick() const { return pushed_before_; }
  int64_t scanned() const { return scan_; }
  bool done() const { return pushed_ == nnz() && scan_ >= n_; }

 private:
  const PermDnnParams& p_;
  const std::vector<int32_t>& nz_;
  int64_t n_, pushed_ = 0, pushed_before_ = 0, scan_ = 0;
};

// ---- Component 2: the PEs (queues and MAC lanes) ----------------------------------

class PeArray {
 public:
  PeArray(const PermDnnParams& p, const Mapping& map, int64_t pass)
      : M_(p.mults_per_pe), depth_(p.queue_depth), rows_(p.num_pe), pos_(p.num_pe, 0), rem_(p.num_pe, -1) {
    for (int e = 0; e < p.num_pe; ++e) rows_[e] = map.InPass(e, pass);
  }

  // Free space of the fullest queue after `pushed` broadcasts.
  int64_t Room(int64_t pushed) const {
    int64_t room = depth_;
    for (std::size_t e = 0; e < pos_.size(); ++e) room = std::min(room, depth_ - (pushed - pos_[e]));
    return room;
  }

  // Phase 2: every PE issues up to M MACs from the activations that arrived
  // before this cycle (`visible`), column-major over its row blocks.
  void Tick(int64_t visible, Counts& c) {
    for (std::size_t e = 0; e < pos_.size(); ++e) {
      int64_t slots = M_;
      while (slots > 0 && pos_[e] < visible) {
        if (rem_[e] < 0) rem_[e] = rows_[e];  // pop: start this column
        const int64_t t = std::min(slots, rem_[e]);
        rem_[e] -= t;
        slots -= t;
        c.macs[e] += t;
        if (rem_[e] == 0) {
          ++pos_[e];
          rem_[e] = -1;
        }
      }
    }
  }

  bool Done(int64_t nnz) const {
    return std::all_of(pos_.begin(), pos_.end(), [&](int64_t v) { return v == nnz; });
  }
  int64_t queued(int e, int64_t pushed) const { return pushed - pos_[e]; }
  // Drain: each PE writes its rows out through its M lanes.
  int64_t DrainCycles(int p) const {
    int64_t d = 0;
    for (int64_t r : rows_) d = std::max(d, CeilDiv(r * p, M_));
    return d;
  }

 private:
  int64_t M_, depth_;
  std::vector<int64_t> rows_, pos_, rem_;  // rem_ -1: head column not started
};

// Whether every block of each block column has one offset (the
// permdiag-column layout).
// One row block is both layouts; it keeps the per-PE model.
bool SharedOffsets(const LayerWorkload& w) {
  if (w.row_blocks < 2) return false;
  for (int64_t I = 1; I < w.row_blocks; ++I)
    for (int64_t J = 0; J < w.col_blocks; ++J)
      if (w.offsets[I * w.col_blocks + J] != w.offsets[J]) return false;
  return true;
}

// Column blocks with at least one nonzero activation: each costs every PE
// one offset read per row block it works on (one central read when shared).
int64_t LiveColumnBlocks(const LayerWorkload& w) {
  int64_t live = 0, last = -1;
  for (int32_t j : w.nonzero_cols) {
    if (j / w.p != last) ++live;
    last = j / w.p;
  }
  return live;
}

// Products on real (unpadded) rows: only the last row block can reach into
// the padding.
int64_t UsefulMacs(const LayerWorkload& w) {
  const int p = w.p;
  const int64_t last = w.row_blocks - 1;
  int64_t useful = 0;
  for (int32_t j : w.nonzero_cols) {
    const int64_t J = j / p;
    const int d = static_cast<int>(j % p);
    const int k = w.offsets[last * w.col_blocks + J];
    const int64_t row = last * p + (d - k + p) % p;
    useful += last + (row < w.m() ? 1 : 0);
  }
  return useful;
}

// Functional: the same products, exact int64 accumulation, the kernels'
// requantization (bit-exact with kernels::PermDiagMatVecI16).
void ComputeOutput(const LayerWorkload& w, int acc_bits, LayerResult& r) {
  const auto& W = *w.weights;
  const int p = w.p;
  const int64_t m = w.m();
  std::vector<int64_t> acc(static_cast<std::size_t>(m), 0);
  for (int32_t j : w.nonzero_cols) {
    const int64_t J = j / p;
    const int d = static_cast<int>(j % p);
    const int64_t xj = w.x[j];
    for (int64_t I = 0; I < w.row_blocks; ++I) {
      const int c = (d - W.offset(I, J) + p) % p;
      const int64_t row = I * p + c;
      if (row < m) acc[row] += int64_t{W.block(I, J)[c]} * xj;
    }
  }
  const int64_t limit = acc_bits >= 64 ? INT64_MAX : (int64_t{1} << (acc_bits - 1));
  int64_t overflows = 0;
  r.output.resize(static_cast<std::size_t>(m));
  for (int64_t i = 0; i < m; ++i) {
    if (acc[i] >= limit || acc[i] < -limit) ++overflows;
    r.output[i] = RequantizeShift<int16_t>(acc[i], w.output_shift);
  }
  r.counters["acc_overflows"] = overflows;
}

}  // namespace

double PermDnnEngine::DatapathUm2() const {
  // Per lane: the multiplier, the accumulating adder and the offset decoder's
  // two adders.
  const double nm = p_.node_nm;
  return p_.mults_per_pe * (tech_.MultArea(p_.bits, nm) + tech_.AddArea(p_.acc_bits, nm) +
                            2 * tech_.AddArea(kDecoderBits, nm));
}

AreaBreakdown PermDnnEngine::Area() const {
  const double n = p_.num_pe, M = p_.mults_per_pe, nm = p_.node_nm;
  AreaBreakdown a;
  a.datapath = n * (DatapathUm2() + tech_.ControlLogicArea(nm));
  a.weight_mem = n * M * tech_.SramArea(p_.weight_sram_kb * 1024.0 / M, nm);
  // M banks with one read port each.
  a.accumulate = n * tech_.RegisterBankArea(static_cast<double>(p_.acc_entries), p_.acc_bits, 1, nm);
  a.act_mem = 2 * tech_.SramArea(p_.act_buffer_kb * 1024.0, nm) + n * tech_.FifoArea(p_.queue_depth, nm);
  const double cells = a.total();
  a.other = cells * tech_.FillerFraction() / (1.0 - tech_.FillerFraction());
  for (double* v : {&a.datapath, &a.weight_mem, &a.index_mem, &a.act_mem, &a.accumulate, &a.other}) *v *= 1e-6;
  return a;
}

namespace {

// Phases 1-4 over every pass: the cycle loop ticks the detector and the PEs,
// then the pass drains.
Counts Simulate(const LayerWorkload& w, const PermDnnParams& p, const Mapping& map, TraceSink* trace) {
  const int N = p.num_pe;
  const int64_t live_col_blocks = LiveColumnBlocks(w);
  Counts c;
  c.macs.assign(N, 0);
  for (int64_t pass = 0; pass < map.passes; ++pass) {
    Detector detector(p, w.nonzero_cols, w.n());
    PeArray pes(p, map, pass);
    int64_t pass_cycles = 0;
    while (true) {
      detector.Tick(pes.Room(detector.pushed()), c);  // 1. detect / broadcast
      pes.Tick(detector.pushed_before_tick(), c);      // 2. PE work
      ++pass_cycles;                                   // 3. trace, termination
      if (trace)
        trace->Line("permdnn", w.spec.name, c.cycles + pass_cycles,
                    fmt::format("pass={} broadcast={} scanned={} queue0={}", pass,
                                detector.pushed() - detector.pushed_before_tick(), detector.scanned(),
                                pes.queued(0, detector.pushed())));
      if (detector.done() && pes.Done(detector.nnz())) break;
    }
    // 4. Drain: after the pipeline empties, outputs leave through the lanes.
    const int64_t drain = pes.DrainCycles(w.p);
    c.drain_cycles += drain;
    c.cycles += pass_cycles + p.pipeline_depth + drain;
    c.queue_ops += 2 * N * detector.nnz();  // push + pop per PE per broadcast
    if (SharedOffsets(w)) c.offset_reads += live_col_blocks;  // the detector's table
    else
      for (int e = 0; e < N; ++e) c.offset_reads += map.InPass(e, pass) * live_col_blocks;
  }
  if (p.input_bus_bits > 0) c.load_cycles = CeilDiv(w.n() * p.bits, p.input_bus_bits);
  c.cycles += c.load_cycles;
  return c;
}

// The record of a run: shape, configuration, cycles and action counts.
LayerResult Record(const LayerWorkload& w, const PermDnnParams& p, const Mapping& map, const Counts& c) {
  LayerResult r;
  r.arch = "permdnn";
  r.layer = w.spec.name;
  r.m = w.m();
  r.n = w.n();
  r.p = w.p;
  r.weight_density = 1.0 / w.p;
  r.act_density = w.act_density();
  r.num_pe = p.num_pe;
  r.mults_per_pe = p.mults_per_pe;
  r.frequency_mhz = p.frequency_mhz;
  r.node_nm = p.node_nm;
  r.cycles = c.cycles;
  int64_t issued = 0;
  for (int64_t v : c.macs) issued += v;
  r.useful_macs = UsefulMacs(w);
  r.issued_macs = issued;
  const double mean = static_cast<double>(issued) / p.num_pe;
  r.load_imbalance = mean > 0 ? static_cast<double>(*std::max_element(c.macs.begin(), c.macs.end())) / mean : 1.0;
  r.counters = {{"passes", map.passes},
                {"nonzero_inputs", static_cast<int64_t>(w.nonzero_cols.size())},
                {"activation_reads", c.zero_tests},
                {"zero_tests", c.zero_tests},
                {"broadcasts", c.broadcasts},
                {"queue_ops", c.queue_ops},
                {"broadcast_stall_cycles", c.stall_cycles},
                {"issued_macs", issued},
                {"useful_macs", r.useful_macs},
                {"weight_reads", issued},
                {"offset_reads", c.offset_reads},
                {"acc_updates", issued},
                {"acc_drain_reads", w.m()},
                {"output_writes", w.m()},
                {"drain_cycles", c.drain_cycles},
                {"input_load_cycles", c.load_cycles},
                {"shared_offsets", SharedOffsets(w) ? 1 : 0}};
  return r;
}

// Storage: values + one offset per block, per PE; and the inputs.
void CheckCapacity(const LayerWorkload& w, const PermDnnParams& pp, const Mapping& map, LayerResult& r) {
  const int p = w.p;
  const int64_t n = w.n();
  const double act_bytes = pp.act_buffer_kb * 1024.0;
  // One p x p block at pp.bits per value, its offset packed: the format
  // registry's byte count. Shared offsets: the PE banks hold values only and
  // the layer's n/p offsets sit in the detector's table.
  const bool shared = SharedOffsets(w);
  const formats::Kind kind = shared ? formats::Kind::kPermDiagColumn : formats::Kind::kPermDiag;
  const int64_t per_block = formats::StoredSize(kind, {p, p, {}, p}, 0, 0, false, {pp.bits, true}).bytes -
                            (shared ? OffsetBytes(p) : 0);
  r.weight_bytes = formats::StoredSize(kind, {w.m(), w.n(), {}, p}, 0, 0, false, {pp.bits, true}).bytes;
  r.weight_capacity_bytes = static_cast<int64_t>(pp.weight_sram_kb * 1024.0) * pp.num_pe;
  const int64_t per_pe = map.max_owned * w.col_blocks * per_block;
  const bool w_fits = per_pe <= static_cast<int64_t>(pp.weight_sram_kb * 1024.0);
  const bool x_fits = n * pp.bits / 8 <= static_cast<int64_t>(act_bytes);
  r.weights_fit = w_fits && x_fits;
  if (!w_fits)
    r.capacity_note += fmt::format("busiest PE needs {:.0f} KB of weights + offsets, weight_sram_kb = {:.0f}. ",
                                   per_pe / 1024.0, pp.weight_sram_kb);
  if (!x_fits)
    r.capacity_note += fmt::format("{} inputs need {:.0f} KB, act_buffer_kb = {:.0f}", n, n * pp.bits / 8 / 1024.0,
                                   pp.act_buffer_kb);
}

}  // namespace

LayerResult PermDnnEngine::Run(const LayerWorkload& w, TraceSink* trace) const {
  PERMDNN_CHECK(static_cast<int64_t>(w.offsets.size()) == w.row_blocks * w.col_blocks,
                "permdnn engine, layer {}: workload has {} offsets, expected {}", w.spec.name, w.offsets.size(),
                w.row_blocks * w.col_blocks);
  const Mapping map = MapLayer(w, p_);             // 0. row blocks onto PEs, passes
  const Counts counts = Simulate(w, p_, map, trace);  // 1-4. the cycle loop and the drains
  LayerResult r = Record(w, p_, map, counts);
  CheckCapacity(w, p_, map, r);
  if (w.weights && p_.bits == 16) ComputeOutput(w, p_.acc_bits, r);  // 5. functional output
  Account(r);                                                         // 6. energy accounting
  return r;
}

void PermDnnEngine::Account(LayerResult& r) const {
  const double nm = p_.node_nm;
  const int N = p_.num_pe;
  auto count = [&](const char* key) { return static_cast<double>(r.counters.at(key)); };
  const double bank_bytes = p_.weight_sram_kb * 1024.0 / p_.mults_per_pe;
  const double act_bytes = p_.act_buffer_kb * 1024.0;
  const double reg = tech_.RegisterBitEnergy(nm);
  const double issued = count("issued_macs");
  r.area = Area();
  EnergyBreakdown& E = r.energy;
  E = {};
  E.mac = issued * (tech_.MultEnergy(p_.bits, nm) + tech_.AddEnergy(p_.acc_bits, nm));
  E.weight_mem = count("weight_reads") * tech_.SramEnergy(bank_bytes, p_.bits, nm);
  // Offsets: one read per (row block, live column block), held in a register
  // of the lane while the column block lasts; the decoder's subtract and
  // conditional add per MAC.
  // Shared offsets: reads from the detector's table (n/p entries), one
  // decode per broadcast.
  const int offset_bits = IndexBits(r.p);
  const bool shared = count("shared_offsets") > 0;
  const double table_bytes = shared ? static_cast<double>(CeilDiv(r.n, r.p)) * OffsetBytes(r.p) : bank_bytes;
  E.index_mem = count("offset_reads") * (tech_.SramEnergy(table_bytes, offset_bits, nm) + offset_bits * reg) +
                (shared ? count("broadcasts") : issued) * 2 * tech_.AddEnergy(offset_bits + 1, nm);
  // Accumulator registers: read through the bank's mux and written back per
  // MAC; read once more when the outputs drain.
  E.accumulate = count("acc_updates") * 2 * p_.acc_bits * reg + count("acc_drain_reads") * p_.acc_bits * reg;
  E.act_mem = count("activation_reads") * tech_.SramEnergy(act_bytes, p_.bits, nm) +
              count("zero_tests") * tech_.ZeroTestEnergy(nm) + count("queue_ops") * tech_.FifoEnergy(nm) +
              count("output_writes") * tech_.SramEnergy(act_bytes, p_.bits, nm);
  // Broadcast: value and column index of each nonzero over an H-tree to the
  // PEs.
  const int broadcast_bits = p_.bits + IndexBits(r.n) + (shared ? offset_bits : 0);  // + the residue
  E.network = tech_.BroadcastEnergy(count("broadcasts") * broadcast_bits, r.area.total(), N, nm);
  const double logic_um2 = DatapathUm2() + tech_.ControlLogicArea(nm);
  E.clock = tech_.ClockEnergy(r.cycles, N, r.area.total(), logic_um2, nm);
  r.Finish();
}

}  // namespace permdnn::sim
