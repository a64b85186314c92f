// The adder array for PE-wise ternary layers and its 16-bit MAC twin
// (sim engines "adder" and "mac16", issue 18 point 4): hand-counted cycles,
// pruned groups at zero cycles, the load balance on a skewed layer, the MAC
// array's counts and prices against the adder array's, the model path
// (equal-bytes PermDNN p, records only for ternary layers) and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "permdnn/core/error.h"
#include "permdnn/formats/registry.h"
#include "permdnn/sim/engines.h"
#include "permdnn/sim/model.h"
#include "sim/sim_test_util.h"

namespace permdnn::sim {
namespace {

using test_util::Tech;
using test_util::ExpectError;

// rows x cols codes: group (r, j) kept when keep(r, j); kept weights
// alternate +1, -1, 0 along the row.
template <typename Keep>
TernaryMatrix Codes(int64_t rows, int64_t cols, int64_t group_len, Keep keep) {
  std::vector<int8_t> c(static_cast<std::size_t>(rows * cols), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k)
      if (keep(r, k / group_len)) c[r * cols + k] = static_cast<int8_t>(k % 3 == 0 ? 1 : k % 3 == 1 ? -1 : 0);
  return TernaryMatrix::FromCodes(rows, cols, group_len, c, std::vector<float>(static_cast<std::size_t>(rows), 0.5f),
                                  "test layer");
}

LayerWorkload Workload(const TernaryMatrix& t, const std::vector<float>& x) {
  LayerWorkload w;
  w.spec = FcLayerSpec{"t", t.cols(), t.rows(), 1.0, 1.0};
  w.ternary = t;
  SetModelInput(w, x);
  return w;
}

std::vector<float> Ones(int64_t n) { return std::vector<float>(static_cast<std::size_t>(n), 1.0f); }

// Nonzero codes times nonzero activations, by hand from the code rule.
int64_t NonzeroTerms(const TernaryMatrix& t, const std::vector<float>& x) {
  const std::vector<int8_t> c = t.Codes();
  int64_t n = 0;
  for (int64_t r = 0; r < t.rows(); ++r)
    for (int64_t k = 0; k < t.cols(); ++k) n += c[r * t.cols() + k] != 0 && x[k] != 0;
  return n;
}

const nlohmann::json kSmall = {{"num_pe", 4}, {"lanes", 4}};

// 4 rows x 64 inputs, groups of 16 (G = 4 = PEs: PE j owns channel group j),
// 4 lanes: a kept group takes 16 / 4 = 4 cycles; every PE streams 4 groups
// (16 cycles), then 4 pipeline cycles and ceil(4 outputs / 4 PEs) = 1 drain
// cycle.
TEST(AdderArrayEngine, CycleCountOfASmallLayerMatchesTheHandCount) {
  const TernaryMatrix t = Codes(4, 64, 16, [](int64_t, int64_t) { return true; });
  AdderArrayEngine e(kSmall, Tech(), true);
  const LayerResult r = e.Run(Workload(t, Ones(64)), nullptr);
  EXPECT_EQ(r.cycles, 16 + 4 + 1);
  EXPECT_EQ(r.counters.at("max_pe_cycles"), 16);
  EXPECT_EQ(r.counters.at("groups_streamed"), 16);
  EXPECT_EQ(r.counters.at("weight_reads"), 16 * 4);
  EXPECT_EQ(r.counters.at("idle_pe_cycles"), 0);
  EXPECT_DOUBLE_EQ(r.load_imbalance, 1.0);
  EXPECT_EQ(r.issued_macs, NonzeroTerms(t, Ones(64)));  // adds: nonzero codes x nonzero inputs
  EXPECT_EQ(r.issued_macs, 4 * (22 + 21));              // codes +1, -1 at k % 3 = 0, 1 of 64
  EXPECT_EQ(r.counters.at("scale_multiplies"), 4);
  EXPECT_EQ(r.weight_bytes, t.bytes());
}

// Fewer groups per row than PEs: G = 2 channel groups, 4 PEs -> 2 copies,
// copy s takes the rows r = s (mod 2): PE (r mod 2)·2 + j.
TEST(AdderArrayEngine, FewerGroupsThanPesMakeCopiesOverTheRows) {
  EXPECT_EQ(AdderArrayEngine::OwnerPe(0, 0, 2, 4), 0);
  EXPECT_EQ(AdderArrayEngine::OwnerPe(0, 1, 2, 4), 1);
  EXPECT_EQ(AdderArrayEngine::OwnerPe(1, 0, 2, 4), 2);
  EXPECT_EQ(AdderArrayEngine::OwnerPe(3, 1, 2, 4), 3);
  EXPECT_EQ(AdderArrayEngine::OwnerPe(5, 1, 2, 5), 3);  // 5 PEs: 2 copies, PE 4 idle
  EXPECT_EQ(AdderArrayEngine::OwnerPe(2, 7, 8, 4), 3);  // G >= N: channel group j on PE j mod N
  const TernaryMatrix t = Codes(4, 32, 16, [](int64_t, int64_t) { return true; });
  AdderArrayEngine e(kSmall, Tech(), true);
  const LayerResult r = e.Run(Workload(t, Ones(32)), nullptr);
  EXPECT_EQ(r.counters.at("max_pe_cycles"), 2 * 4);  // 2 rows x 1 group x 4 cycles per PE
  EXPECT_EQ(r.counters.at("pe_copies"), 2);
  EXPECT_EQ(r.counters.at("local_act_writes"), 2 * 32);  // each activation to its 2 PEs
  EXPECT_EQ(r.cycles, 8 + 4 + 1);
}

// Half the groups pruned, evenly over the PEs: half the cycles of the PE
// work, half the weight reads; the MAC array streams every group anyway.
TEST(AdderArrayEngine, PrunedGroupsCostZeroCycles) {
  const TernaryMatrix full = Codes(4, 64, 16, [](int64_t, int64_t) { return true; });
  const TernaryMatrix half = Codes(4, 64, 16, [](int64_t r, int64_t j) { return (r + j) % 2 == 0; });
  ASSERT_EQ(half.kept_groups(), 8);
  AdderArrayEngine adder(kSmall, Tech(), true), mac(kSmall, Tech(), false);
  const LayerResult a_full = adder.Run(Workload(full, Ones(64)), nullptr);
  const LayerResult a_half = adder.Run(Workload(half, Ones(64)), nullptr);
  EXPECT_EQ(a_half.counters.at("max_pe_cycles"), 8);
  EXPECT_EQ(a_half.cycles, 8 + 4 + 1);
  EXPECT_EQ(a_half.counters.at("groups_skipped"), 8);
  EXPECT_EQ(a_half.counters.at("weight_reads"), a_full.counters.at("weight_reads") / 2);
  EXPECT_EQ(a_half.issued_macs, NonzeroTerms(half, Ones(64)));
  EXPECT_LT(a_half.energy_uj, a_full.energy_uj);
  // A group of zero codes inside a kept group is gated, not skipped: the
  // cycles depend on the bitmap only.
  const LayerResult m_half = mac.Run(Workload(half, Ones(64)), nullptr);
  EXPECT_EQ(m_half.counters.at("max_pe_cycles"), 16);
  EXPECT_EQ(m_half.counters.at("groups_skipped"), 0);
  EXPECT_EQ(m_half.issued_macs, 4 * 64);  // dense weights, every input nonzero
  EXPECT_EQ(m_half.useful_macs, a_half.useful_macs);
}

// Every kept group in channel group 0: PE 0 does all the work.
TEST(AdderArrayEngine, LoadBalanceOnASkewedLayer) {
  const TernaryMatrix t = Codes(4, 64, 16, [](int64_t, int64_t j) { return j == 0; });
  AdderArrayEngine e(kSmall, Tech(), true);
  const LayerResult r = e.Run(Workload(t, Ones(64)), nullptr);
  EXPECT_EQ(r.counters.at("max_pe_cycles"), 16);
  EXPECT_EQ(r.counters.at("min_pe_cycles"), 0);
  EXPECT_EQ(r.counters.at("busy_pe_cycles"), 16);
  EXPECT_EQ(r.counters.at("idle_pe_cycles"), 3 * 16);
  EXPECT_DOUBLE_EQ(r.load_imbalance, 4.0);  // 16 / mean 4
  EXPECT_EQ(r.cycles, 16 + 4 + 1);           // the busiest PE sets the time
}

// Zero activations gate lanes (energy) but not cycles; the MAC array's
// counts and prices follow the same schedule with MAC lanes.
TEST(AdderArrayEngine, MacArrayComparisonIsConsistent) {
  const TernaryMatrix t = Codes(8, 64, 16, [](int64_t r, int64_t j) { return (r + j) % 2 == 0; });
  std::vector<float> x = Ones(64);
  for (std::size_t k = 0; k < x.size(); k += 2) x[k] = 0;
  AdderArrayEngine adder(kSmall, Tech(), true), mac(kSmall, Tech(), false);
  const LayerResult a = adder.Run(Workload(t, x), nullptr);
  const LayerResult m = mac.Run(Workload(t, x), nullptr);
  const LayerResult a_dense_x = adder.Run(Workload(t, Ones(64)), nullptr);
  EXPECT_EQ(a.cycles, a_dense_x.cycles);
  EXPECT_EQ(a.issued_macs, NonzeroTerms(t, x));
  EXPECT_EQ(m.issued_macs, 8 * 32);  // every weight times every nonzero input
  EXPECT_EQ(m.counters.at("groups_streamed"), 8 * 4);
  EXPECT_EQ(a.counters.at("groups_streamed"), 8 * 4 / 2);
  EXPECT_EQ(m.counters.at("max_pe_cycles"), 2 * a.counters.at("max_pe_cycles"));
  EXPECT_EQ(m.weight_bytes, 8 * 64 * 2);
  // The datapath energy from the table: lanes + partial sums (+ scales).
  const double nm = 28;
  const int acc_add = 16 + 16, acc_mac = 2 * 16 + 16;
  EXPECT_NEAR(a.energy.mac,
              a.issued_macs * Tech().TernaryAddSubEnergy(acc_add, nm) +
                  a.counters.at("partial_sums") * Tech().AddEnergy(acc_add, nm) + 8 * Tech().MultEnergy(16, nm),
              1e-9);
  EXPECT_NEAR(m.energy.mac,
              m.issued_macs * (Tech().MultEnergy(16, nm) + Tech().AddEnergy(acc_mac, nm)) +
                  m.counters.at("partial_sums") * Tech().AddEnergy(acc_mac, nm),
              1e-9);
  // A ternary lane is far cheaper than a 16-bit MAC lane, and both tables'
  // 8-bit and 32-bit adders bracket it.
  EXPECT_LT(Tech().TernaryAddSubEnergy(32, nm), 0.2 * (Tech().MultEnergy(16, nm) + Tech().AddEnergy(48, nm)));
  EXPECT_GT(Tech().TernaryAddSubArea(16, nm), Tech().AddArea(8, nm));
  EXPECT_LT(a.energy_uj, m.energy_uj);
  EXPECT_LT(adder.Area().total(), mac.Area().total());
  EXPECT_LT(adder.Area().datapath, mac.Area().datapath);
}

// The model path: a ternary layer gets adder and mac16 records and a
// PermDNN p at equal bytes; a permdiag layer gets neither.
TEST(AdderArrayEngine, ModelRunsTernaryLayersOnTheArraysAndPermDnnAtEqualBytes) {
  const int64_t m = 64, n = 128;
  EXPECT_EQ(EqualBytesBlockSize(m, n,
                                formats::StoredSize(formats::Kind::kPermDiag, {m, n, {}, 8}, 0, 0, false, {16, true})
                                    .bytes),
            8);
  ModelLayer tl;
  tl.name = "tern";
  tl.ternary = Codes(m, n, 16, [](int64_t r, int64_t j) { return (r + j) % 2 == 0; });
  std::vector<float> x(static_cast<std::size_t>(n));
  for (int64_t k = 0; k < n; ++k) x[k] = k % 4 == 0 ? 0.0f : 0.01f * static_cast<float>(k);
  tl.inputs = {x, x};
  ModelLayer pl;
  pl.name = "pd";
  pl.permdiag = PermDiagMatrix(m, n, 8);
  pl.inputs = {x};
  ModelComparisonOptions o;
  o.archs = {"permdnn", "adder", "mac16"};
  const ComparisonResult res = RunModelComparison({tl, pl}, o);
  int adder = 0, mac = 0;
  for (const auto& r : res.records) {
    if (r.arch == "adder") {
      ++adder;
      EXPECT_EQ(r.layer, "tern");
      EXPECT_EQ(r.issued_macs, NonzeroTerms(*tl.ternary, x));  // the mean of two equal samples
    }
    if (r.arch == "mac16") ++mac;
    if (r.arch == "permdnn" && r.layer == "tern") {
      const int p = EqualBytesBlockSize(m, n, tl.ternary->bytes());
      EXPECT_EQ(r.p, p);
      EXPECT_NE(r.source.find("equal weight bytes"), std::string::npos) << r.source;
    }
  }
  EXPECT_EQ(adder, 1);
  EXPECT_EQ(mac, 1);
  const std::string text = RenderComparison(res);
  EXPECT_NE(text.find("Adder array (ternary) vs the same array with 16-bit MACs"), std::string::npos);
}

TEST(AdderArrayEngine, BadInputGivesClearErrors) {
  // A group that does not divide the inputs, named by the layer.
  ExpectError([] { Codes(4, 60, 16, [](int64_t, int64_t) { return true; }); }, "test layer");
  // The arrays run ternary layers only.
  LayerWorkload w;
  w.spec = FcLayerSpec{"fc9", 64, 4, 1.0, 1.0};
  SetModelInput(w, Ones(64));
  AdderArrayEngine e(kSmall, Tech(), true);
  EXPECT_FALSE(e.Supports(w));
  ExpectError([&] { e.Run(w, nullptr); }, "adder engine, layer fc9: needs a ternary layer");
  ExpectError([&] { AdderArrayEngine(kSmall, Tech(), false).Run(w, nullptr); }, "mac16 engine, layer fc9");
  // A matrix of another shape than the layer's.
  w.ternary = Codes(4, 32, 16, [](int64_t, int64_t) { return true; });
  ExpectError([&] { e.Run(w, nullptr); }, "layer fc9: ternary matrix 4x32 does not match the layer's 4x64");
  // Parameters.
  ExpectError([] { AdderArrayEngine({{"lanes", 0}}, Tech(), true); }, "adder.lanes: 0 is out of range");
  ExpectError([] { AdderArrayEngine({{"acc_bits", 20}}, Tech(), false); }, "mac16.acc_bits: 20 cannot hold one");
  // A model layer with two matrices, or inputs of the wrong length.
  ModelLayer l;
  l.name = "tern";
  l.ternary = Codes(4, 32, 16, [](int64_t, int64_t) { return true; });
  l.inputs = {Ones(31)};
  ExpectError([&] { RunModelComparison({l}, {}); }, "layer tern: sample 0 has 31 activations, the layer has 32");
  l.permdiag = PermDiagMatrix(4, 32, 4);
  ExpectError([&] { RunModelComparison({l}, {}); }, "layer tern: expected exactly one matrix, got 2");
  // A table without the 8-bit adder point.
  nlohmann::json broken = Tech().json();
  broken["energy_pj"].erase("int_add_8b");
  ExpectError([&] { TechTable::FromJson(broken, "b.json"); }, "energy_pj.int_add_8b");
}

}  // namespace
}  // namespace permdnn::sim
