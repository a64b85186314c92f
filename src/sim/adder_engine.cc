// The adder array for PE-wise ternary layers and its 16-bit MAC twin (see
// engines.h for the microarchitecture; issue 18, point 4).
//
// Run() has the phases of the other engines, on a static schedule (every PE
// knows its work from the group bitmap before the layer starts, so nothing
// waits on another PE and the cycle count is exact without a cycle loop, as
// for CirCNN):
//   0. map the groups onto the PEs (OwnerPe) and count each PE's cycles:
//      ceil(group_len / L) per group it streams (kept groups only for the
//      adder array, every group for the MAC array);
//   1. the broadcast of the nonzero activations into the local buffers of
//      the PEs owning their channel group;
//   2. PE work: lanes gated per weight and activation (the counts of real
//      additions / MACs come from the weights and this input);
//   3. trace (one line per PE: busy and idle cycles);
//   4. drain: pipeline, then one scale multiply (adder) or requantization
//      (MAC) per output, ceil(m / N) cycles;
//   5. no functional output (the kernels' ternary path is float);
//   6. Account(): action counts × the technology table.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

const ParamTable<AdderArrayParams>& AdderArrayParamTable(bool ternary) {
  using P = AdderArrayParams;
  auto make = [](bool t) {
    return ParamTable<P>()
        .Int("num_pe", &P::num_pe, 32, 1, 4096,
             "PEs, one per channel group (PE-wise mapping, engines.h); 32 = the PermDNN engine's PE count")
        .Int("lanes", &P::lanes, 8, 1, 1024,
             t ? "add/subtract lanes per PE (weights streamed per cycle); 8 = PermDNN's multipliers per PE, the same "
                 "number of arithmetic units"
               : "16-bit multiply-accumulate lanes per PE; 8 as the adder array's lanes and PermDNN's multipliers")
        .Int("bits", &P::bits, 16, 2, 32, "activation width (16-bit fixed point, as the other engines)")
        .Int("acc_bits", &P::acc_bits, 0, 0, 64,
             t ? "accumulator width; 0 = bits+16: a sum of up to 65,536 signed activations stays exact (no products)"
               : "accumulator width; 0 = 2*bits+16, as the PermDNN engine's MAC accumulators")
        .Int("pipeline_depth", &P::pipeline_depth, 4, 1, 1024,
             "weight read, lane add/subtract (multiply), adder tree + group accumulate, partial-sum write back")
        .Real("frequency_mhz", &P::frequency_mhz, 1200, 1e-3, 1e5, "clock; the PermDNN engine's 1.2 GHz at 28 nm")
        .Real("node_nm", &P::node_nm, 28, 1, 1000, "technology node (28 nm, as the other engines)")
        .Real("weight_sram_kb", &P::weight_sram_kb, t ? 16 : 128, 1e-3, 1e9,
              t ? "weight SRAM per PE (two bit planes, group bitmap, scales): 16 KB holds the 65,536 weights per PE "
                  "that the MAC array's 128 KB holds at 16 bits"
                : "weight SRAM per PE: 128 KB = 65,536 16-bit weights, the PermDNN engine's and EIE's per-PE budget")
        .Real("local_act_kb", &P::local_act_kb, 1, 1e-3, 1e9,
              "activations of the PE's channel groups (its slice of the input, L read per cycle): 512 16-bit values")
        .Real("act_buffer_kb", &P::act_buffer_kb, 64, 1e-3, 1e9,
              "input/output activation buffer (two copies, ping-pong), the PermDNN engine's 64 KB")
        .Real("out_acc_kb", &P::out_acc_kb, 16, 1e-3, 1e9,
              "output accumulators (one per output row; every group's partial sum is added into its row's): 4,096 "
              "outputs of 32 bits");
  };
  static const auto adder = make(true);
  static const auto mac = make(false);
  return ternary ? adder : mac;
}

std::vector<ParamDef> AdderArrayParamDefs(bool ternary) { return AdderArrayParamTable(ternary).defs(); }

AdderArrayEngine::AdderArrayEngine(const nlohmann::json& section, const TechTable& tech, bool ternary)
    : p_(AdderArrayParamTable(ternary).Parse(ternary ? "adder" : "mac16", section, &spec_)),
      tech_(tech),
      ternary_(ternary) {
  if (p_.acc_bits == 0) p_.acc_bits = ternary ? p_.bits + 16 : 2 * p_.bits + 16;
  PERMDNN_CHECK(p_.acc_bits >= (ternary ? p_.bits : 2 * p_.bits),
                "config {}.acc_bits: {} cannot hold one {} (need >= {})", name(), p_.acc_bits,
                ternary ? "activation" : "product", ternary ? p_.bits : 2 * p_.bits);
}

int AdderArrayEngine::OwnerPe(int64_t r, int64_t j, int64_t groups_per_row, int num_pe) {
  if (groups_per_row >= num_pe) return static_cast<int>(j % num_pe);
  const int64_t copies = num_pe / groups_per_row;
  return static_cast<int>((r % copies) * groups_per_row + j);
}

double AdderArrayEngine::DatapathUm2() const {
  const double nm = p_.node_nm;
  // Lanes (the leaves and nodes of the adder tree), the partial-sum adder
  // into the output accumulators, and for the ternary array the one scale
  // multiplier per PE.
  const double lane = ternary_ ? tech_.TernaryAddSubArea(p_.acc_bits, nm)
                               : tech_.MultArea(p_.bits, nm) + tech_.AddArea(p_.acc_bits, nm);
  return p_.lanes * lane + tech_.AddArea(p_.acc_bits, nm) + (ternary_ ? tech_.MultArea(p_.bits, nm) : 0.0);
}

AreaBreakdown AdderArrayEngine::Area() const {
  const double N = p_.num_pe, nm = p_.node_nm;
  AreaBreakdown a;
  a.datapath = N * (DatapathUm2() + tech_.ControlLogicArea(nm));
  a.weight_mem = N * tech_.SramArea(p_.weight_sram_kb * 1024.0, nm);
  a.act_mem = 2 * tech_.SramArea(p_.act_buffer_kb * 1024.0, nm) + N * tech_.SramArea(p_.local_act_kb * 1024.0, nm);
  a.accumulate = N * tech_.RegisterBankArea(1, p_.acc_bits, 1, nm) + tech_.SramArea(p_.out_acc_kb * 1024.0, nm);
  const double cells = a.total();
  a.other = cells * tech_.FillerFraction() / (1.0 - tech_.FillerFraction());
  for (double* v : {&a.datapath, &a.weight_mem, &a.index_mem, &a.act_mem, &a.accumulate, &a.other}) *v *= 1e-6;
  return a;
}

LayerResult AdderArrayEngine::Run(const LayerWorkload& w, TraceSink* trace) const {
  PERMDNN_CHECK(w.ternary.has_value(),
                "{} engine, layer {}: needs a ternary layer (a TernaryMatMul/TernaryConv of a model, `permdnn sim "
                "--model` on a model compressed with ternary:group=G); this layer has no ternary matrix",
                name(), w.spec.name);
  const TernaryMatrix& T = *w.ternary;
  PERMDNN_CHECK(T.rows() == w.m() && T.cols() == w.n(),
                "{} engine, layer {}: ternary matrix {}x{} does not match the layer's {}x{}", name(), w.spec.name,
                T.rows(), T.cols(), w.m(), w.n());
  PERMDNN_CHECK(T.group_len() >= 1 && T.cols() % T.group_len() == 0,
                "{} engine, layer {}: group length {} does not divide the {} inputs", name(), w.spec.name,
                T.group_len(), T.cols());
  PERMDNN_CHECK(static_cast<int64_t>(w.x.size()) == w.n(), "{} engine, layer {}: {} activations for {} inputs",
                name(), w.spec.name, w.x.size(), w.n());
  const int N = p_.num_pe, L = p_.lanes;
  const int64_t m = w.m(), n = w.n(), gl = T.group_len(), G = T.groups_per_row();
  const int64_t group_cycles = CeilDiv(gl, int64_t{L});

  // 0. Mapping and per-PE work: kept groups (adder) or every group (MAC).
  std::vector<int64_t> busy(static_cast<std::size_t>(N), 0), groups_on(static_cast<std::size_t>(N), 0);
  int64_t streamed = 0, adds = 0, useful = 0, issued = 0;
  std::vector<int64_t> nz_in_group(static_cast<std::size_t>(G), 0);
  for (int32_t j : w.nonzero_cols) ++nz_in_group[j / gl];
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t k = T.row_start(r); k < T.row_start(r + 1); ++k) {
      // 2. lanes that really add: nonzero weight and nonzero activation.
      const int64_t c0 = T.group_col(k) * gl;
      for (int64_t e = 0; e < gl; ++e)
        if (T.Code(k, e) != 0 && w.x[c0 + e] != 0) ++useful;
    }
    for (int64_t j = 0; j < G; ++j) {
      if (ternary_ && !T.Kept(r, j)) continue;
      const int pe = OwnerPe(r, j, G, N);
      busy[pe] += group_cycles;
      ++groups_on[pe];
      ++streamed;
      issued += nz_in_group[j];  // MAC lanes gated by zero activations only
    }
  }
  adds = useful;
  if (ternary_) issued = adds;
  const int64_t most = *std::max_element(busy.begin(), busy.end());
  int64_t total_busy = 0, idle = 0;
  for (int64_t b : busy) {
    total_busy += b;
    idle += most - b;
  }
  // 1. Activations: each nonzero goes to the PEs holding its channel group.
  const int64_t copies = G >= N ? 1 : N / G;
  const int64_t nnz = static_cast<int64_t>(w.nonzero_cols.size());
  // 4. Drain.
  const int64_t drain = CeilDiv(m, int64_t{N});
  const int64_t cycles = most + p_.pipeline_depth + drain;
  // 3. Trace: the schedule per PE.
  if (trace)
    for (int e = 0; e < N; ++e)
      trace->Line(name(), w.spec.name, most, fmt::format("pe={} groups={} busy={} idle={}", e, groups_on[e], busy[e],
                                                         most - busy[e]));

  LayerResult r;
  r.arch = name();
  r.layer = w.spec.name;
  r.m = m;
  r.n = n;
  r.p = 0;
  r.weight_density = ternary_ ? static_cast<double>(T.nonzeros()) / static_cast<double>(m * n) : 1.0;
  r.act_density = w.act_density();
  r.num_pe = N;
  r.mults_per_pe = L;
  r.frequency_mhz = p_.frequency_mhz;
  r.node_nm = p_.node_nm;
  r.cycles = cycles;
  r.useful_macs = useful;
  r.issued_macs = issued;
  const double mean = static_cast<double>(total_busy) / N;
  r.load_imbalance = mean > 0 ? static_cast<double>(most) / mean : 1.0;
  // Storage: the format's bytes (ternary) or 16-bit dense weights; per PE
  // the busiest PE's groups.
  const int64_t group_bytes = ternary_ ? 2 * T.group_bytes() : gl * p_.bits / 8;
  const int64_t most_groups = *std::max_element(groups_on.begin(), groups_on.end());
  const int64_t per_pe = most_groups * group_bytes + (ternary_ ? CeilDiv(m * G, int64_t{8} * N) + 2 * CeilDiv(m, int64_t{N}) : 0);
  r.weight_bytes = ternary_ ? T.bytes() : m * n * p_.bits / 8;
  r.weight_capacity_bytes = static_cast<int64_t>(p_.weight_sram_kb * 1024.0) * N;
  const int64_t slice = (G >= N ? CeilDiv(G, int64_t{N}) : 1) * gl * p_.bits / 8;
  const bool w_fits = per_pe <= static_cast<int64_t>(p_.weight_sram_kb * 1024.0);
  const bool slice_fits = slice <= static_cast<int64_t>(p_.local_act_kb * 1024.0);
  const bool x_fits = n * p_.bits / 8 <= static_cast<int64_t>(p_.act_buffer_kb * 1024.0);
  const bool out_fits = m * p_.acc_bits / 8 <= static_cast<int64_t>(p_.out_acc_kb * 1024.0);
  r.weights_fit = w_fits && slice_fits && x_fits && out_fits;
  if (!w_fits)
    r.capacity_note += fmt::format("busiest PE needs {:.1f} KB of weights, weight_sram_kb = {:g}. ", per_pe / 1024.0,
                                   p_.weight_sram_kb);
  if (!slice_fits)
    r.capacity_note += fmt::format("a PE's activation slice needs {:.1f} KB, local_act_kb = {:g}. ", slice / 1024.0,
                                   p_.local_act_kb);
  if (!x_fits)
    r.capacity_note += fmt::format("{} inputs need {:.1f} KB, act_buffer_kb = {:g}. ", n, n * p_.bits / 8 / 1024.0,
                                   p_.act_buffer_kb);
  if (!out_fits)
    r.capacity_note += fmt::format("{} output accumulators need {:.1f} KB, out_acc_kb = {:g}", m,
                                   m * p_.acc_bits / 8 / 1024.0, p_.out_acc_kb);
  r.counters = {{"groups_per_row", G},
                {"group_len", gl},
                {"groups_total", m * G},
                {"groups_streamed", streamed},
                {"groups_skipped", m * G - streamed},
                {"group_cycles", streamed * group_cycles},
                {"max_pe_cycles", most},
                {"min_pe_cycles", *std::min_element(busy.begin(), busy.end())},
                {"busy_pe_cycles", total_busy},
                {"idle_pe_cycles", idle},
                {"pe_copies", copies},
                {"nonzero_inputs", nnz},
                {"zero_tests", n},
                {"activation_reads", n},
                {"broadcasts", nnz},
                {"local_act_writes", nnz * copies},
                {"local_act_reads", streamed * group_cycles},
                {"weight_reads", streamed * group_cycles},
                {"bitmap_reads", ternary_ ? CeilDiv(m * G, int64_t{64}) : 0},
                {"scale_multiplies", ternary_ ? m : 0},
                {"lane_ops", issued},
                {"useful_ops", useful},
                {"group_acc_updates", streamed * group_cycles},
                {"partial_sums", streamed},
                {"output_writes", m},
                {"drain_cycles", drain}};
  Account(r);  // 6. energy accounting
  return r;
}

void AdderArrayEngine::Account(LayerResult& r) const {
  const double nm = p_.node_nm;
  const int N = p_.num_pe, L = p_.lanes, B = p_.bits, A = p_.acc_bits;
  auto count = [&](const char* key) { return static_cast<double>(r.counters.at(key)); };
  const double wsram = p_.weight_sram_kb * 1024.0, local = p_.local_act_kb * 1024.0;
  const double act = p_.act_buffer_kb * 1024.0, out = p_.out_acc_kb * 1024.0;
  const double reg = tech_.RegisterBitEnergy(nm);
  r.area = Area();
  EnergyBreakdown& E = r.energy;
  E = {};
  // Lanes (gated per weight and activation), the partial-sum adds into the
  // output accumulators, and the scale multiply per output.
  const double lane = ternary_ ? tech_.TernaryAddSubEnergy(A, nm) : tech_.MultEnergy(B, nm) + tech_.AddEnergy(A, nm);
  E.mac = count("lane_ops") * lane + count("partial_sums") * tech_.AddEnergy(A, nm) +
          count("scale_multiplies") * tech_.MultEnergy(B, nm);
  // One read of L weights (2 bits each as the two planes, or 16 bits) per
  // group cycle.
  E.weight_mem = count("weight_reads") * tech_.SramEnergy(wsram, L * (ternary_ ? 2 : B), nm);
  // The group bitmap (64-bit words) and the scales, from the same SRAM.
  E.index_mem = count("bitmap_reads") * tech_.SramEnergy(wsram, 64, nm) +
                count("scale_multiplies") * tech_.SramEnergy(wsram, B, nm);
  E.act_mem = count("activation_reads") * tech_.SramEnergy(act, B, nm) + count("zero_tests") * tech_.ZeroTestEnergy(nm) +
              count("local_act_writes") * tech_.SramEnergy(local, B, nm) +
              count("local_act_reads") * tech_.SramEnergy(local, L * B, nm) +
              count("output_writes") * tech_.SramEnergy(act, B, nm);
  // The PE's group accumulator (register read + write per group cycle) and
  // the row's output accumulator (read + write per partial sum).
  E.accumulate = count("group_acc_updates") * 2 * A * reg + count("partial_sums") * 2 * tech_.SramEnergy(out, A, nm);
  // Activations out (value + index) over an H-tree to the PEs (a broadcast
  // toggles the whole tree), and each partial sum (value + row) back to the
  // output accumulators along one root-to-leaf path of the tree, about one
  // die side (side/2 + side/4 + ...).
  E.network = tech_.BroadcastEnergy(count("broadcasts") * (B + IndexBits(r.n)), r.area.total(), N, nm) +
              count("partial_sums") * (A + IndexBits(r.m)) * std::sqrt(r.area.total()) *
                  tech_.WireEnergyPerBitMm(nm);
  E.clock = tech_.ClockEnergy(r.cycles, N, r.area.total(), DatapathUm2() + tech_.ControlLogicArea(nm), nm);
  r.Finish();
}

}  // namespace permdnn::sim
