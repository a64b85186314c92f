// The PermDNN engine model (see engines.h for the microarchitecture).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

using Kind = ParamDef::Kind;

std::vector<ParamDef> PermDnnParamDefs() {
  return {
      {"num_pe", Kind::kInt, 32, "", 1, 4096, {}, "processing elements (PermDNN paper, DESIGN.md: 32)"},
      {"mults_per_pe", Kind::kInt, 8, "", 1, 1024, {}, "16-bit multipliers per PE (paper: 8)"},
      {"bits", Kind::kInt, 16, "", 2, 32, {}, "weight/activation width (paper: 16-bit fixed point); the functional "
                                             "check runs at 16"},
      {"acc_bits", Kind::kInt, 0, "", 0, 64, {}, "accumulator width; 0 = 2*bits+16: products are 2*bits wide and 16 "
                                                 "guard bits keep sums of up to 65,536 products exact, so the output "
                                                 "equals the int64 reference kernel bit for bit"},
      {"frequency_mhz", Kind::kReal, 1200, "", 1e-3, 1e5, {}, "clock (paper: 1.2 GHz)"},
      {"node_nm", Kind::kReal, 28, "", 1, 1000, {}, "technology node for energy and area (paper: 28 nm CMOS)"},
      {"queue_depth", Kind::kInt, 8, "", 1, 1 << 20, {}, "activation queue per PE; EIE's depth (DESIGN.md). PermDNN "
                                                        "PEs never diverge by more than one MAC-cycle per column, so "
                                                        "depth only absorbs the detector's bursts"},
      {"broadcast_width", Kind::kInt, 0, "", 0, 1 << 20, {}, "nonzero activations broadcast per cycle; 0 = "
                                                             "mults_per_pe: a PE owning one row block uses M "
                                                             "activations per cycle, so M keeps every multiplier busy "
                                                             "on any layer with >= num_pe row blocks"},
      {"scan_width", Kind::kInt, 64, "", 1, 1 << 24, {}, "activations the leading-nonzero detector examines per "
                                                         "cycle; 64 finds 8 nonzeros per cycle down to 12.5% "
                                                         "activation density"},
      {"pipeline_depth", Kind::kInt, 4, "", 1, 1024, {}, "weight read, multiply, accumulate, write back (EIE uses 4 "
                                                         "stages for the same update)"},
      {"acc_entries", Kind::kInt, 512, "", 1, 1 << 24, {}, "accumulators per PE (output rows it can hold); 512 covers "
                                                           "the EIE layers (largest: NT-Wd, 279 rows per PE); more "
                                                           "rows run in passes over the inputs"},
      {"weight_sram_kb", Kind::kReal, 128, "", 1e-3, 1e9, {}, "weight SRAM per PE, split into mults_per_pe banks; "
                                                             "128 KB = EIE's per-PE sparse-matrix SRAM, the same "
                                                             "on-chip budget. Layers needing more are flagged"},
      {"act_buffer_kb", Kind::kReal, 64, "", 1e-3, 1e9, {}, "input activation buffer (two copies, ping-pong): 32,768 "
                                                            "16-bit values hold VGG-6's 25,088 inputs"},
      {"input_bus_bits", Kind::kInt, 0, "", 0, 1 << 20, {}, "0: the layer's inputs were written into the idle "
                                                           "ping-pong copy while the previous layer ran (as EIE's "
                                                           "source/destination swap), so loading costs no cycles; "
                                                           "else loading takes ceil(n*bits/input_bus_bits) cycles "
                                                           "before the first broadcast"},
  };
}

PermDnnEngine::PermDnnEngine(const nlohmann::json& section, const TechTable& tech)
    : spec_(ParamSpec::Parse("permdnn", PermDnnParamDefs(), section)), tech_(tech) {
  p_.num_pe = static_cast<int>(spec_.Int("num_pe"));
  p_.mults_per_pe = static_cast<int>(spec_.Int("mults_per_pe"));
  p_.bits = static_cast<int>(spec_.Int("bits"));
  p_.acc_bits = spec_.Int("acc_bits") > 0 ? static_cast<int>(spec_.Int("acc_bits")) : 2 * p_.bits + 16;
  p_.frequency_mhz = spec_.Number("frequency_mhz");
  p_.node_nm = spec_.Number("node_nm");
  p_.queue_depth = static_cast<int>(spec_.Int("queue_depth"));
  p_.broadcast_width = spec_.Int("broadcast_width") > 0 ? static_cast<int>(spec_.Int("broadcast_width"))
                                                          : p_.mults_per_pe;
  p_.scan_width = static_cast<int>(spec_.Int("scan_width"));
  p_.pipeline_depth = static_cast<int>(spec_.Int("pipeline_depth"));
  p_.acc_entries = spec_.Int("acc_entries");
  p_.weight_sram_kb = spec_.Number("weight_sram_kb");
  p_.act_buffer_kb = spec_.Number("act_buffer_kb");
  p_.input_bus_bits = static_cast<int>(spec_.Int("input_bus_bits"));
  PERMDNN_CHECK(p_.acc_bits >= 2 * p_.bits,
                "config permdnn.acc_bits: {} cannot hold one {}-bit x {}-bit product (need >= {})", p_.acc_bits,
                p_.bits, p_.bits, 2 * p_.bits);
}

double PermDnnEngine::DatapathUm2() const {
  return p_.mults_per_pe * (tech_.MultArea(p_.bits, p_.node_nm) + tech_.AddArea(p_.acc_bits, p_.node_nm));
}

AreaBreakdown PermDnnEngine::Area() const {
  const double n = p_.num_pe, M = p_.mults_per_pe, nm = p_.node_nm;
  AreaBreakdown a;
  a.datapath = n * DatapathUm2();
  a.weight_mem = n * M * tech_.SramArea(p_.weight_sram_kb * 1024.0 / M, nm);
  a.accumulate = n * tech_.SramArea(static_cast<double>(p_.acc_entries) * p_.acc_bits / 8.0, nm);
  a.act_mem = 2 * tech_.SramArea(p_.act_buffer_kb * 1024.0, nm) + n * tech_.FifoArea(p_.queue_depth, nm);
  const double cells = a.total();
  a.other = cells * tech_.FillerFraction() / (1.0 - tech_.FillerFraction());
  for (double* v : {&a.datapath, &a.weight_mem, &a.index_mem, &a.act_mem, &a.accumulate, &a.other}) *v *= 1e-6;
  return a;
}

LayerResult PermDnnEngine::Run(const LayerWorkload& w, TraceSink* trace) const {
  const int N = p_.num_pe, M = p_.mults_per_pe, p = w.p;
  const int64_t m = w.m(), n = w.n();
  const int64_t rb = w.row_blocks, cb = w.col_blocks;
  PERMDNN_CHECK(static_cast<int64_t>(w.offsets.size()) == rb * cb,
                "permdnn engine, layer {}: workload has {} offsets, expected {}", w.spec.name, w.offsets.size(),
                rb * cb);
  const int64_t blocks_per_pass = p_.acc_entries / p;
  PERMDNN_CHECK(blocks_per_pass >= 1,
                "permdnn engine, layer {}: acc_entries = {} cannot hold one row block of p = {} rows", w.spec.name,
                p_.acc_entries, p);

  // Row blocks owned by PE e: I ≡ e (mod N).
  std::vector<int64_t> owned(N);
  for (int e = 0; e < N; ++e) owned[e] = rb / N + (e < rb % N ? 1 : 0);
  const int64_t max_owned = *std::max_element(owned.begin(), owned.end());
  const int64_t passes = std::max<int64_t>(1, CeilDiv(max_owned, blocks_per_pass));

  const auto& nz = w.nonzero_cols;
  const int64_t nnz = static_cast<int64_t>(nz.size());
  LayerResult r;
  r.arch = name();
  r.layer = w.spec.name;
  r.m = m;
  r.n = n;
  r.p = p;
  r.weight_density = 1.0 / p;
  r.act_density = w.act_density();
  r.num_pe = N;
  r.mults_per_pe = M;
  r.frequency_mhz = p_.frequency_mhz;
  r.node_nm = p_.node_nm;

  std::vector<int64_t> macs(N, 0);
  int64_t cycles = 0, zero_tests = 0, broadcasts = 0, queue_ops = 0, stall_cycles = 0;
  std::vector<int64_t> pos(N), rem(N);
  for (int64_t pass = 0; pass < passes; ++pass) {
    std::vector<int64_t> rows_this(N);  // row blocks in this pass
    for (int e = 0; e < N; ++e)
      rows_this[e] = std::clamp<int64_t>(owned[e] - pass * blocks_per_pass, 0, blocks_per_pass);
    std::fill(pos.begin(), pos.end(), 0);
    std::fill(rem.begin(), rem.end(), -1);  // -1: head column not started
    int64_t pushed = 0, scan = 0, pass_cycles = 0;
    while (true) {
      // Phase 1: the detector examines up to scan_width activations and
      // broadcasts up to broadcast_width nonzeros, as far as every PE's
      // queue has room (broadcast is all-or-nothing per activation).
      const int64_t pushed_before = pushed;
      int64_t room = p_.queue_depth;
      for (int e = 0; e < N; ++e) room = std::min(room, p_.queue_depth - (pushed - pos[e]));
      int64_t budget = std::min<int64_t>(p_.broadcast_width, room);
      if (scan < n) {
        const int64_t window_end = std::min<int64_t>(n, scan + p_.scan_width);
        int64_t new_scan = window_end;
        while (pushed < nnz && nz[pushed] < window_end) {
          if (budget == 0) {
            new_scan = nz[pushed];  // resume at the activation that did not fit
            break;
          }
          ++pushed;
          --budget;
        }
        zero_tests += new_scan - scan;
        scan = new_scan;
        if (pushed == pushed_before && room == 0) ++stall_cycles;
      }
      broadcasts += pushed - pushed_before;
      // Phase 2: every PE issues up to M MACs from the activations that
      // arrived in earlier cycles, column-major over its owned row blocks.
      bool all_done = pushed == nnz && scan >= n;
      for (int e = 0; e < N; ++e) {
        int64_t slots = M;
        while (slots > 0 && pos[e] < pushed_before) {
          if (rem[e] < 0) rem[e] = rows_this[e];  // pop: start this column
          const int64_t t = std::min(slots, rem[e]);
          rem[e] -= t;
          slots -= t;
          macs[e] += t;
          if (rem[e] == 0) {
            ++pos[e];
            rem[e] = -1;
          }
        }
        all_done = all_done && pos[e] == nnz;
      }
      ++pass_cycles;
      // Phase 3: trace (opt-in), termination.
      if (trace)
        trace->Line(name(), w.spec.name, cycles + pass_cycles,
                    fmt::format("pass={} broadcast={} scanned={} queue0={}", pass, pushed - pushed_before, scan,
                                pushed - pos[0]));
      if (all_done) break;
    }
    // Drain: each PE writes its rows out through M lanes, after the
    // pipeline empties.
    int64_t drain = 0;
    for (int e = 0; e < N; ++e) drain = std::max(drain, CeilDiv(rows_this[e] * p, M));
    cycles += pass_cycles + p_.pipeline_depth + drain;
    queue_ops += 2 * N * nnz;  // push + pop per PE per broadcast
  }

  int64_t load_cycles = 0;
  if (p_.input_bus_bits > 0) load_cycles = CeilDiv(n * p_.bits, p_.input_bus_bits);
  cycles += load_cycles;

  // Useful MACs: products on real (unpadded) rows. Only the last row block
  // can reach into the padding.
  int64_t useful = 0;
  {
    const int64_t last = rb - 1;
    for (int32_t j : nz) {
      const int64_t J = j / p;
      const int d = static_cast<int>(j % p);
      const int k = w.offsets[last * cb + J];
      const int64_t row = last * p + (d - k + p) % p;
      useful += last + (row < m ? 1 : 0);
    }
  }
  int64_t issued = 0;
  for (int64_t v : macs) issued += v;
  r.cycles = cycles;
  r.useful_macs = useful;
  r.issued_macs = issued;
  const double mean = static_cast<double>(issued) / N;
  r.load_imbalance = mean > 0 ? static_cast<double>(*std::max_element(macs.begin(), macs.end())) / mean : 1.0;

  // Energy: count × per-action energy at this node.
  const double nm = p_.node_nm;
  const double bank_bytes = p_.weight_sram_kb * 1024.0 / M;
  const double act_bytes = p_.act_buffer_kb * 1024.0;
  EnergyBreakdown& E = r.energy;
  E.mac = issued * (tech_.MultEnergy(p_.bits, nm) + tech_.AddEnergy(p_.acc_bits, nm));
  E.weight_mem = issued * tech_.SramEnergy(bank_bytes, p_.bits, nm);
  E.accumulate = issued * tech_.RegfileRmwEnergy(p_.acc_bits, nm) + m * tech_.RegfileReadEnergy(p_.acc_bits, nm);
  E.act_mem = zero_tests * tech_.ZeroTestEnergy(nm) + broadcasts * tech_.SramEnergy(act_bytes, p_.bits, nm) +
              queue_ops * tech_.FifoEnergy(nm) + m * tech_.SramEnergy(act_bytes, p_.bits, nm);
  E.clock = static_cast<double>(cycles) * N * tech_.ClockEnergyPerPeCycle(DatapathUm2(), nm);
  r.area = Area();

  // Storage: values + one offset per block, per PE.
  const int64_t per_block = static_cast<int64_t>(p) * p_.bits / 8 + OffsetBytes(p);
  r.weight_bytes = rb * cb * per_block;
  r.weight_capacity_bytes = static_cast<int64_t>(p_.weight_sram_kb * 1024.0) * N;
  const int64_t per_pe = max_owned * cb * per_block;
  const bool w_fits = per_pe <= static_cast<int64_t>(p_.weight_sram_kb * 1024.0);
  const bool x_fits = n * p_.bits / 8 <= static_cast<int64_t>(act_bytes);
  r.weights_fit = w_fits && x_fits;
  if (!w_fits)
    r.capacity_note += fmt::format("busiest PE needs {:.0f} KB of weights + offsets, weight_sram_kb = {:.0f}. ",
                                   per_pe / 1024.0, p_.weight_sram_kb);
  if (!x_fits)
    r.capacity_note += fmt::format("{} inputs need {:.0f} KB, act_buffer_kb = {:.0f}", n, n * p_.bits / 8 / 1024.0,
                                   p_.act_buffer_kb);
  r.counters = {{"passes", passes},         {"nonzero_inputs", nnz},     {"zero_tests", zero_tests},
                {"broadcasts", broadcasts}, {"queue_ops", queue_ops},    {"broadcast_stall_cycles", stall_cycles},
                {"issued_macs", issued},    {"useful_macs", useful},     {"weight_reads", issued},
                {"acc_rmw", issued},        {"output_writes", m},
                {"input_load_cycles", load_cycles}};

  // Functional: the same products, exact int64 accumulation, the kernels'
  // requantization.
  if (w.weights && p_.bits == 16) {
    const auto& W = *w.weights;
    std::vector<int64_t> acc(static_cast<std::size_t>(m), 0);
    for (int32_t j : nz) {
      const int64_t J = j / p;
      const int d = static_cast<int>(j % p);
      const int64_t xj = w.x[j];
      for (int64_t I = 0; I < rb; ++I) {
        const int c = (d - W.offset(I, J) + p) % p;
        const int64_t row = I * p + c;
        if (row < m) acc[row] += int64_t{W.block(I, J)[c]} * xj;
      }
    }
    const int64_t limit = p_.acc_bits >= 64 ? INT64_MAX : (int64_t{1} << (p_.acc_bits - 1));
    int64_t overflows = 0;
    r.output.resize(static_cast<std::size_t>(m));
    for (int64_t i = 0; i < m; ++i) {
      if (acc[i] >= limit || acc[i] < -limit) ++overflows;
      r.output[i] = RequantizeShift<int16_t>(acc[i], w.output_shift);
    }
    r.counters["acc_overflows"] = overflows;
  }
  r.Finish();
  return r;
}

}  // namespace permdnn::sim
