// The architecture models: hand-checkable cycle counts, golden statistics on
// small configurations, the bit-exact functional cross-check, and reports.
#include "permdnn/sim/engines.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/sim/report.h"
#include "support/compare.h"
#include "sim/sim_test_util.h"

namespace permdnn::sim {
namespace {

using test_util::Tech;

FcLayerSpec Layer(const std::string& name, int64_t m, int64_t n, double wd, double ad) {
  return {name, n, m, wd, ad};
}

LayerWorkload Build(const FcLayerSpec& s, int p, bool csc = true, uint64_t seed = 1) {
  WorkloadOptions o;
  o.seed = seed;
  o.p = p;
  o.build_csc = csc;
  return BuildWorkload(s, o);
}

// ---- PermDNN ------------------------------------------------------------------

// 64x96, p=4, 4 PEs x 2 multipliers, every input nonzero: each PE owns 4 row
// blocks, so a column takes 2 cycles. The first broadcast arrives in cycle 2,
// 96 columns finish in cycle 1 + 192 = 193, then 4 pipeline cycles and 16
// rows drained 2 per cycle.
TEST(PermDnnEngine, CycleCountOfADenseInputMatchesTheHandCount) {
  PermDnnEngine e({{"num_pe", 4}, {"mults_per_pe", 2}}, Tech());
  auto w = Build(Layer("t", 64, 96, 0.25, 1.0), 4, false);
  auto r = e.Run(w, nullptr);
  EXPECT_EQ(r.cycles, 193 + 4 + 8);
  EXPECT_EQ(r.issued_macs, 96 * 16);
  EXPECT_EQ(r.useful_macs, 96 * 16);
  EXPECT_DOUBLE_EQ(r.load_imbalance, 1.0);
  EXPECT_NEAR(r.pe_utilization, 1536.0 / (205 * 8), 1e-12);
  EXPECT_EQ(r.counters.at("passes"), 1);
}

TEST(PermDnnEngine, PaddedRowsAreIssuedButNotUseful) {
  PermDnnEngine e({{"num_pe", 2}, {"mults_per_pe", 4}}, Tech());
  auto w = Build(Layer("t", 10, 12, 0.25, 1.0), 4, false);
  auto r = e.Run(w, nullptr);
  EXPECT_EQ(r.issued_macs, 12 * 3);  // 3 row blocks per column
  // Exactly the structural nonzeros of the 10x12 matrix.
  EXPECT_EQ(r.useful_macs, w.weights->nnz());
  EXPECT_LT(r.useful_macs, r.issued_macs);
}

TEST(PermDnnEngine, RunsInPassesWhenAccumulatorsAreShort) {
  auto w = Build(Layer("t", 64, 96, 0.25, 0.5), 4, false);
  PermDnnEngine one({{"num_pe", 4}, {"mults_per_pe", 2}}, Tech());
  PermDnnEngine two({{"num_pe", 4}, {"mults_per_pe", 2}, {"acc_entries", 8}}, Tech());
  auto a = one.Run(w, nullptr), b = two.Run(w, nullptr);
  EXPECT_EQ(b.counters.at("passes"), 2);
  EXPECT_EQ(a.issued_macs, b.issued_macs);
  EXPECT_GT(b.cycles, a.cycles);
  EXPECT_EQ(a.output, b.output);
  EXPECT_THROW(PermDnnEngine({{"acc_entries", 3}}, Tech()).Run(w, nullptr), Error);  // < p
}

// The functional output equals the int16 kernel bit for bit.
TEST(PermDnnEngine, Int16OutputEqualsTheKernelBitForBit) {
  struct Case {
    int64_t m, n;
    int p;
    double act;
  };
  for (const Case& c : {Case{1, 1, 1, 1.0}, Case{7, 10, 3, 1.0}, Case{64, 96, 4, 0.35}, Case{100, 37, 8, 0.5},
                        Case{33, 65, 16, 0.2}, Case{48, 48, 4, 0.0}, Case{257, 129, 11, 0.4}}) {
    for (uint64_t seed : {1u, 2u}) {
      auto w = Build(Layer("x", c.m, c.n, 1.0 / c.p, c.act), c.p, false, seed);
      PermDnnEngine e({{"num_pe", 3}, {"mults_per_pe", 2}}, Tech());
      auto r = e.Run(w, nullptr);
      std::vector<int16_t> y(static_cast<std::size_t>(c.m));
      kernels::PermDiagMatVecI16(*w.weights, w.x, {}, w.output_shift, y);
      EXPECT_TRUE(testing::AllEqual<int16_t>(y, r.output)) << c.m << "x" << c.n << " p=" << c.p << " act=" << c.act;
      // And the reference accumulators with the shared requantization.
      std::vector<int64_t> acc(static_cast<std::size_t>(c.m));
      kernels::ref::MatVecI16Acc(w.weights->view(), w.x.data(), acc.data());
      for (int64_t i = 0; i < c.m; ++i) ASSERT_EQ(r.output[i], RequantizeShift<int16_t>(acc[i], w.output_shift));
      EXPECT_EQ(r.counters.at("acc_overflows"), 0);
    }
  }
}

// Shared offsets (permdiag-column): the same cycles and MACs, offsets read
// once per live column block from the detector's table, n/p offsets stored,
// less index energy; the functional output still equals the int16 kernel.
TEST(PermDnnEngine, SharedOffsetsKeepTheCyclesAndMoveTheOffsetsToTheDetector) {
  auto general = Build(Layer("t", 64, 96, 0.25, 0.5), 4, false);
  auto shared = general;
  const int64_t mb = shared.row_blocks, nb = shared.col_blocks;
  for (int64_t I = 0; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J) {
      shared.offsets[I * nb + J] = shared.offsets[J];
      shared.weights->offsets()[I * nb + J] = shared.offsets[J];
    }
  PermDnnEngine e({{"num_pe", 4}, {"mults_per_pe", 2}}, Tech());
  auto a = e.Run(general, nullptr), b = e.Run(shared, nullptr);
  EXPECT_EQ(a.counters.at("shared_offsets"), 0);
  EXPECT_EQ(b.counters.at("shared_offsets"), 1);
  EXPECT_EQ(a.cycles, b.cycles);
  EXPECT_EQ(a.issued_macs, b.issued_macs);
  int64_t live = 0;
  for (int64_t J = 0; J < nb; ++J) {
    bool any = false;
    for (int32_t j : shared.nonzero_cols) any = any || j / 4 == J;
    live += any;
  }
  EXPECT_EQ(b.counters.at("offset_reads"), live);
  EXPECT_EQ(a.counters.at("offset_reads"), live * mb);  // every PE, each of its row blocks
  EXPECT_EQ(a.weight_bytes - b.weight_bytes, (mb - 1) * nb);  // one-byte offsets at p = 4
  EXPECT_LT(b.energy.index_mem, a.energy.index_mem);
  std::vector<int16_t> y(64);
  kernels::PermDiagMatVecI16(*shared.weights, shared.x, {}, shared.output_shift, y);
  EXPECT_TRUE(testing::AllEqual<int16_t>(y, b.output));
}

// ---- EIE ----------------------------------------------------------------------

// One PE, three columns with 3, 0 and 2 entries (the last with a gap of 16
// rows, so one padding zero). Broadcast in cycles 1-3; the PE works columns
// 0 (cycles 2-4), 1 (empty: its pointer read, cycle 5) and 2 (3 entries,
// cycles 6-8); then the 4-stage pipeline drains.
TEST(EieEngine, CycleCountOfAHandBuiltMatrix) {
  auto w = Build(Layer("t", 20, 3, 0.1, 1.0), 1);
  w.csc = CscMatrix::FromParts(20, 3, {0, 3, 3, 5}, {0, 5, 19, 0, 17}, {1, 2, 3, 4, 5});
  EieEngine e({{"num_pe", 1}}, Tech());
  auto r = e.Run(w, nullptr);
  EXPECT_EQ(r.cycles, 8 + 4);
  EXPECT_EQ(r.issued_macs, 6);
  EXPECT_EQ(r.useful_macs, 5);
  EXPECT_EQ(r.counters.at("empty_columns"), 1);
  // Free empty columns save exactly that cycle.
  EXPECT_EQ(EieEngine({{"num_pe", 1}, {"empty_column_cycles", 0}}, Tech()).Run(w, nullptr).cycles, 11);
  EXPECT_EQ(r.counters.at("padding_entries_stored"), 1);
}

// All entries on even rows: with 2 PEs, PE 0 does all the work and PE 1 only
// reads pointers (one cycle per column).
TEST(EieEngine, LoadImbalanceComesFromTheMatrix) {
  const int64_t rows = 40, cols = 8;
  std::vector<int32_t> ptr = {0}, idx;
  std::vector<float> val;
  for (int64_t j = 0; j < cols; ++j) {
    for (int32_t r = 0; r < 20; r += 2) {
      idx.push_back(r);
      val.push_back(1.0f);
    }
    ptr.push_back(static_cast<int32_t>(idx.size()));
  }
  auto w = Build(Layer("t", rows, cols, 0.25, 1.0), 1);
  w.csc = CscMatrix::FromParts(rows, cols, ptr, idx, val);
  auto r = EieEngine({{"num_pe", 2}}, Tech()).Run(w, nullptr);
  EXPECT_DOUBLE_EQ(r.load_imbalance, 80.0 / ((80.0 + 8.0) / 2.0));
  // A shallow queue makes the broadcast stall behind the busy PE.
  auto s = EieEngine({{"num_pe", 2}, {"queue_depth", 1}}, Tech()).Run(w, nullptr);
  EXPECT_GT(s.counters.at("broadcast_stall_cycles"), 0);
  EXPECT_GE(s.cycles, r.cycles);
}

// ---- CirCNN -------------------------------------------------------------------

// 64x96, p=4, 4 PEs x 8 multipliers = 2 complex units each; real FFT of
// length 4 = 2 complex multiplies; 3 spectral bins. FFT phase: 6 blocks per
// PE x 2 / 2 = 6 cycles; MAC phase: 4 row blocks x 24 x 3 / 2 = 144; IFFT:
// 4 x 2 / 2 = 4; plus 3 pipeline fills of 4.
TEST(CirCnnEngine, StaticScheduleMatchesTheHandCount) {
  CirCnnEngine e({{"num_pe", 4}}, Tech());
  auto w = Build(Layer("t", 64, 96, 0.25, 1.0), 4, false);
  auto r = e.Run(w, nullptr);
  EXPECT_EQ(r.cycles, 6 + 144 + 4 + 12);
  EXPECT_EQ(CirCnnEngine::RealFftComplexMults(4), 2);
  EXPECT_EQ(CirCnnEngine::RealFftComplexMults(8), 6);
  // Default: CirCNN's power-of-two blocks, the nearest to PermDNN's p.
  EXPECT_EQ(e.BlockSize(11), 8);
  EXPECT_EQ(e.BlockSize(25), 32);
  EXPECT_EQ(e.BlockSize(16), 16);
  EXPECT_EQ(CirCnnEngine({{"block_size", "same"}}, Tech()).BlockSize(11), 11);
}

// ---- Energy accounting ------------------------------------------------------------

// The PermDNN PE priced by hand from the table: per MAC a 16-bit multiply,
// a 48-bit add, a 16-bit read from the lane's 16 KB weight bank (between
// Horowitz's 8 KB and 32 KB points: 10 pJ * sqrt(2) per 64 bits) and an
// accumulator register read + write (2 * 48 flip-flop bits).
TEST(PermDnnEngine, EnergyPerMacIsBuiltFromThePeComponents) {
  PermDnnEngine e({}, Tech());
  auto w = Build(Layer("t", 96, 160, 0.125, 0.4), 8, false);
  auto r = e.Run(w, nullptr);
  const double L = 28.0 / 45.0, macs = static_cast<double>(r.issued_macs);
  EXPECT_NEAR(r.energy.mac, macs * (0.2 * 4 + 0.1 * 48 / 32) * L, 1e-9 * r.energy.mac);
  EXPECT_NEAR(r.energy.weight_mem, macs * 10.0 * std::sqrt(2.0) * 16 / 64 * L, 1e-9 * r.energy.weight_mem);
  const double reg = 0.1 / 32 * L;
  EXPECT_NEAR(r.energy.accumulate, macs * 2 * 48 * reg + 96 * 48 * reg, 1e-9 * r.energy.accumulate);
  // Broadcast: value + 8-bit column index over the H-tree to 32 PEs, half
  // of the bits toggling at 0.24 pJ per bit and mm.
  const double tree_mm = 1.5 * std::sqrt(r.area_mm2) * (std::sqrt(32.0) - 1);
  EXPECT_NEAR(r.energy.network, r.counters.at("broadcasts") * (16 + 8) * tree_mm * 0.12, 1e-9 * r.energy.network);
  // The clock runs every cycle: twice the cycles, twice the clock energy.
  LayerResult slow = r;
  slow.cycles *= 2;
  e.Account(slow);
  EXPECT_NEAR(slow.energy.clock, 2 * r.energy.clock, 1e-9 * r.energy.clock);
  EXPECT_DOUBLE_EQ(slow.energy.weight_mem, r.energy.weight_mem);
}

// Account() is a function of the counts and the table: re-pricing a record
// with the same table reproduces it, and with the SRAM curve doubled only
// the SRAM terms double (what the sensitivity analysis relies on).
TEST(Engines, AccountRepricesTheCounts) {
  auto w = Build(Layer("t", 96, 160, 0.125, 0.4), 8, true);
  nlohmann::json doubled = Tech().json();
  for (const char* k : {"sram_read_64b_8kb", "sram_read_64b_32kb", "sram_read_64b_1mb"})
    doubled["energy_pj"][k]["value"] = 2 * doubled["energy_pj"][k]["value"].get<double>();
  const TechTable tech2 = TechTable::FromJson(doubled, "doubled");
  for (const char* arch : {"permdnn", "eie", "circnn"}) {
    auto e = MakeEngine(arch, {}, Tech());
    const LayerResult r = e->Run(w, nullptr);
    LayerResult again = r;
    e->Account(again);
    EXPECT_DOUBLE_EQ(again.energy.total(), r.energy.total()) << arch;
    EXPECT_DOUBLE_EQ(again.frames_per_j, r.frames_per_j) << arch;
    LayerResult priced = r;
    MakeEngine(arch, {}, tech2)->Account(priced);
    EXPECT_NEAR(priced.energy.weight_mem, 2 * r.energy.weight_mem, 1e-9 * r.energy.weight_mem) << arch;
    EXPECT_DOUBLE_EQ(priced.energy.mac, r.energy.mac) << arch;
    EXPECT_DOUBLE_EQ(priced.energy.clock, r.energy.clock) << arch;
    EXPECT_EQ(priced.cycles, r.cycles) << arch;
  }
}

// Accumulators are flip-flop banks, one per lane with one read port:
// entries x bits x (adder-bit area) x (1 + a quarter for the mux tree).
TEST(PermDnnEngine, AccumulatorAreaIsRegisterBanks) {
  PermDnnEngine e({{"acc_entries", 100}}, Tech());
  const double L2 = (28.0 / 45) * (28.0 / 45);
  EXPECT_NEAR(e.Area().accumulate, 32 * 100 * 48 * (137.0 / 32) * 1.25 * L2 * 1e-6, 1e-12);
  EXPECT_NEAR(TechTable::HTreeLengthMm(4.0, 4), 1.5 * 2.0, 1e-12);
  EXPECT_NEAR(TechTable::HTreeLengthMm(4.0, 64), 10.5 * 2.0, 1e-12);
  EXPECT_EQ(TechTable::HTreeLengthMm(4.0, 1), 0.0);
}

// ---- Golden statistics ----------------------------------------------------------
// Regression pins for a small configuration of each engine with the shipped
// technology table: a change in any count or cost model shows up here.
TEST(GoldenStatistics, SmallConfigurations) {
  auto w = Build(Layer("golden", 96, 160, 0.125, 0.4), 0, true, 5);
  ASSERT_EQ(w.p, 8);
  struct Golden {
    const char* arch;
    nlohmann::json cfg;
    int64_t cycles, issued;
    double energy_pj, area_mm2;
  };
  const Golden golden[] = {
      // Energies and areas re-pinned with the PE-component energy model
      // (issue 16: accumulator registers, clock tree per area, broadcast
      // wires); cycles and MAC counts are those of the previous model.
      {"permdnn", {{"num_pe", 4}, {"mults_per_pe", 2}}, 113, 768, 6627.367422, 1.096250071},
      {"eie", {{"num_pe", 8}}, 134, 789, 9289.898382, 1.976140856},
      {"circnn", {{"num_pe", 4}, {"mults_per_pe", 4}}, 360, 5568, 25343.291847, 1.221067644},
  };
  for (const auto& g : golden) {
    auto e = MakeEngine(g.arch, {{g.arch, g.cfg}}, Tech());
    auto r = e->Run(w, nullptr);
    EXPECT_EQ(r.cycles, g.cycles) << g.arch;
    EXPECT_EQ(r.issued_macs, g.issued) << g.arch;
    EXPECT_NEAR(r.energy.total(), g.energy_pj, 1e-6 * g.energy_pj) << g.arch;
    EXPECT_NEAR(r.area_mm2, g.area_mm2, 1e-6 * g.area_mm2) << g.arch;
  }
}

// ---- Reports ---------------------------------------------------------------------

TEST(Comparison, SmallLayersAllArchitectures) {
  ComparisonOptions o;
  o.layers = {Layer("a", 96, 160, 0.125, 0.4), Layer("b", 64, 48, 0.25, 1.0)};
  o.tech_path = PERMDNN_TEST_TECH;
  auto res = RunComparison(o);
  ASSERT_EQ(res.records.size(), 6u);
  EXPECT_EQ(res.functional_checks, 2);
  EXPECT_EQ(res.functional_mismatches, 0);
  ASSERT_EQ(res.ratios.size(), 2u);
  for (const auto& s : res.ratios) {
    ASSERT_EQ(s.rows.size(), 2u);
    EXPECT_LE(s.min.throughput, s.max.throughput);
    for (const auto& row : s.rows) EXPECT_GT(row.throughput, 0);
    // Against EIE: the published-area basis is the throughput ratio times
    // the published chip areas (EIE's 40.8 mm2 brought from 45 to 28 nm,
    // PermDNN's 8.85 mm2); CirCNN has no published area.
    for (const auto& row : s.rows)
      if (s.against == "eie")
        EXPECT_NEAR(row.area_efficiency_published_area, row.throughput * 40.8 * (28.0 / 45) * (28.0 / 45) / 8.85,
                    1e-9 * row.throughput);
      else
        EXPECT_EQ(row.area_efficiency_published_area, 0.0);
  }
  auto j = ComparisonToJson(res);
  for (const char* key : {"arch", "layer", "cycles", "latency_us", "throughput_gops", "energy_uj", "area_mm2",
                          "power_mw"})
    EXPECT_TRUE(j["records"][0].contains(key)) << key;
  const std::string table = RenderComparison(res);
  EXPECT_NE(table.find("PermDNN vs EIE"), std::string::npos);
  // Same seed, same numbers.
  auto again = RunComparison(o);
  for (std::size_t i = 0; i < res.records.size(); ++i) EXPECT_EQ(res.records[i].cycles, again.records[i].cycles);
}

TEST(Comparison, TraceIsStreamedOneLinePerCycle) {
  const std::string path = ::testing::TempDir() + "/permdnn_sim_trace.txt";
  ComparisonOptions o;
  o.layers = {Layer("t", 64, 96, 0.25, 1.0)};
  o.archs = {"permdnn"};
  o.config = {{"permdnn", {{"num_pe", 4}, {"mults_per_pe", 2}}}, {"workload", {{"p", 4}}}};
  o.tech_path = PERMDNN_TEST_TECH;
  o.trace_path = path;
  auto res = RunComparison(o);
  std::ifstream in(path);
  std::string line;
  int64_t lines = 0;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '#') ++lines;
  EXPECT_EQ(lines, 193);  // the loop's cycles (pipeline and drain are not ticked)
  std::remove(path.c_str());
}

TEST(Sweep, ParetoFrontIsNotDominated) {
  SweepOptions o;
  o.layers = {Layer("a", 96, 160, 0.125, 0.4)};
  o.num_pe = {2, 4};
  o.mults_per_pe = {2, 4};
  o.ps = {0, 4};
  o.bits = {8, 16};
  o.tech_path = PERMDNN_TEST_TECH;
  auto pts = RunSweep(o);
  ASSERT_EQ(pts.size(), 16u);
  int front = 0;
  for (const auto& a : pts) {
    if (!a.pareto) continue;
    ++front;
    for (const auto& b : pts)
      EXPECT_FALSE(b.frames_per_s_per_mm2 > a.frames_per_s_per_mm2 && b.energy_uj < a.energy_uj);
  }
  EXPECT_GE(front, 1);
  EXPECT_NE(SweepCsv(pts).find("num_pe,mults_per_pe,p,bits"), std::string::npos);
}

}  // namespace
}  // namespace permdnn::sim
