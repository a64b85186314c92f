// Configuration parsing, technology table and bad-config errors.
#include "permdnn/sim/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"
#include "permdnn/sim/report.h"
#include "sim/sim_test_util.h"

namespace permdnn::sim {
namespace {

using test_util::Tech;
using test_util::ExpectError;

TEST(Config, ParamSpecKeepsWhatWasSpecified) {
  auto s = ParamSpec::Parse("permdnn", PermDnnParamDefs(), {{"num_pe", 16}});
  EXPECT_EQ(s.Int("num_pe"), 16);
  EXPECT_TRUE(s.IsSpecified("num_pe"));
  EXPECT_FALSE(s.IsSpecified("mults_per_pe"));
  EXPECT_EQ(s.Int("mults_per_pe"), 8);
  EXPECT_EQ(s.ToJson()["num_pe"], 16.0);
}

// Each parameter is declared once: the table's defaults reach the engine's
// struct, a given value reaches exactly its member, and --list-params
// prints the same table.
TEST(Config, ParamTableDeclaresEachParameterOnce) {
  const auto& table = PermDnnParamTable();
  const PermDnnParams d = table.Parse("permdnn", nlohmann::json());
  EXPECT_EQ(d.num_pe, 32);
  EXPECT_EQ(d.mults_per_pe, 8);
  EXPECT_EQ(d.acc_entries, 288);
  EXPECT_DOUBLE_EQ(d.frequency_mhz, 1200);
  EXPECT_DOUBLE_EQ(d.weight_sram_kb, 128);
  const PermDnnParams g = table.Parse("permdnn", {{"acc_entries", 77}, {"frequency_mhz", 900.5}});
  EXPECT_EQ(g.acc_entries, 77);
  EXPECT_DOUBLE_EQ(g.frequency_mhz, 900.5);
  EXPECT_EQ(g.num_pe, d.num_pe);
  EXPECT_EQ(CirCnnParamTable().Parse("circnn", nlohmann::json()).block_size, "pow2");
  EXPECT_EQ(EieParamTable().Parse("eie", {{"frequency_scaling", "none"}}).frequency_scaling, "none");
  // Every key appears once, and in the --list-params text with its reason.
  for (const auto& e : Engines()) {
    const std::string listing = DescribeParams(e.name, e.params);
    for (std::size_t i = 0; i < e.params.size(); ++i) {
      EXPECT_NE(listing.find(e.params[i].key), std::string::npos) << e.name << "." << e.params[i].key;
      EXPECT_NE(listing.find(e.params[i].doc.substr(0, 20)), std::string::npos) << e.params[i].key;
      for (std::size_t j = i + 1; j < e.params.size(); ++j) EXPECT_NE(e.params[i].key, e.params[j].key);
    }
  }
  // The engine holds the parsed struct, derived defaults resolved.
  PermDnnEngine engine({{"num_pe", 4}}, Tech());
  EXPECT_EQ(engine.p().num_pe, 4);
  EXPECT_EQ(engine.p().acc_bits, 48);          // 0 = 2*bits + 16
  EXPECT_EQ(engine.p().broadcast_width, 8);    // 0 = mults_per_pe
  EXPECT_EQ(engine.params().Int("num_pe"), 4);
  EXPECT_FALSE(WorkloadParamDefs().empty());
}

TEST(Config, BadConfigsGiveClearErrors) {
  ExpectError([] { PermDnnEngine({{"num_pes", 4}}, Tech()); }, "unknown key 'num_pes'");
  ExpectError([] { PermDnnEngine({{"num_pe", 0}}, Tech()); }, "permdnn.num_pe: 0 is out of range");
  ExpectError([] { EieEngine({{"num_pe", -3}}, Tech()); }, "eie.num_pe: -3 is out of range");
  ExpectError([] { PermDnnEngine({{"num_pe", 2.5}}, Tech()); }, "expected an integer");
  ExpectError([] { PermDnnEngine({{"num_pe", "many"}}, Tech()); }, "expected a number");
  ExpectError([] { EieEngine({{"frequency_scaling", "cubic"}}, Tech()); }, "is not one of linear, none");
  ExpectError([] { CirCnnEngine({{"mults_per_pe", 6}}, Tech()); }, "not a multiple of 4");
  ExpectError([] { PermDnnEngine({{"bits", 16}, {"acc_bits", 20}}, Tech()); }, "cannot hold one");
  ExpectError([] { MakeEngine("tpu", {}, Tech()); }, "unknown architecture 'tpu'");
  ExpectError([] { BuildWorkload({"L", 8, 8, 0.5, -0.2}, {}); }, "activation density must be in [0, 1]");
  ExpectError([] { BuildWorkload({"L", 8, 8, -0.5, 0.2}, {}); }, "weight density must be in (0, 1]");
  WorkloadOptions big;
  big.p = 16;
  ExpectError([&] { BuildWorkload({"L", 8, 12, 0.5, 0.2}, big); }, "p = 16 does not divide the padded shape");
  ComparisonOptions o;
  o.layers = {{"L", 16, 16, 0.25, 0.5}};
  o.tech_path = PERMDNN_TEST_TECH;
  o.config = {{"tpu", {{"num_pe", 4}}}};
  ExpectError([&] { RunComparison(o); }, "unknown section 'tpu'");
  o.config = nlohmann::json::object();
  o.archs = {"permdnn", "permdnn"};
  ExpectError([&] { RunComparison(o); }, "listed twice");
}

TEST(Config, TomlSubsetAndOverrides) {
  auto j = ParseTomlSubset("# comment\n[permdnn]\nnum_pe = 16  # PEs\nfrequency_mhz = 1e3\n\n[eie]\n"
                           "frequency_scaling = \"none\"\n",
                           "test.toml");
  EXPECT_EQ(j["permdnn"]["num_pe"], 16);
  EXPECT_EQ(j["permdnn"]["frequency_mhz"], 1000);
  EXPECT_EQ(j["eie"]["frequency_scaling"], "none");
  ExpectError([] { ParseTomlSubset("[permdnn]\nnum_pe 16\n", "bad.toml"); }, "bad.toml:2");
  ExpectError([] { ParseTomlSubset("[a]\nx = 1\n[a]\n", "dup.toml"); }, "defined twice");
  ExpectError([] { ParseTomlSubset("x = banana\n", "s.toml"); }, "not a number");
  ApplyOverride(j, "permdnn.num_pe=64");
  ApplyOverride(j, "circnn.block_size=pow2");
  EXPECT_EQ(j["permdnn"]["num_pe"], 64);
  EXPECT_EQ(j["circnn"]["block_size"], "pow2");
  ExpectError([&] { ApplyOverride(j, "num_pe=3"); }, "expected section.key=value");

  const std::string dir = ::testing::TempDir();
  {
    std::ofstream(dir + "/c.json") << R"({"permdnn": {"num_pe": 8}})";
    std::ofstream(dir + "/c.toml") << "[permdnn]\nnum_pe = 8\n";
  }
  EXPECT_EQ(LoadConfigFile(dir + "/c.json"), LoadConfigFile(dir + "/c.toml"));
  ExpectError([&] { LoadConfigFile(dir + "/missing.toml"); }, "cannot open");
}

// The shipped example config parses and holds exactly the defaults.
TEST(Config, ExampleConfigIsTheDefaults) {
  const std::string dir = std::string(PERMDNN_TEST_TECH).substr(0, std::string(PERMDNN_TEST_TECH).rfind('/'));
  auto cfg = LoadConfigFile(dir + "/example_config.toml");
  for (const auto& e : Engines()) {
    auto given = ParamSpec::Parse(e.name, e.params, cfg[e.name]).ToJson();
    auto defaults = ParamSpec::Parse(e.name, e.params, nlohmann::json()).ToJson();
    EXPECT_EQ(given, defaults) << e.name;
    for (const auto& d : e.params) EXPECT_TRUE(cfg[e.name].contains(d.key)) << e.name << "." << d.key;
  }
}

TEST(Config, WorkloadDensityOverrides) {
  ComparisonOptions o;
  o.layers = {{"L", 64, 48, 1.0, 1.0}};
  o.archs = {"permdnn", "eie"};
  o.tech_path = PERMDNN_TEST_TECH;
  o.config = {{"workload", {{"weight_density", 0.125}, {"act_density", 0.5}}}};
  auto res = RunComparison(o);
  EXPECT_EQ(res.records[0].p, 8);
  EXPECT_DOUBLE_EQ(res.records[0].act_density, 0.5);
  o.config = {{"workload", {{"act_density", -0.5}}}};
  ExpectError([&] { RunComparison(o); }, "workload.act_density: -0.5 is not a density");
}

TEST(Workload, MatchedBlockSizesAndExactActivationCounts) {
  // The p of each EIE layer (docs/simulator.md).
  EXPECT_EQ(MatchBlockSize(0.09), 11);
  EXPECT_EQ(MatchBlockSize(0.25), 4);
  EXPECT_EQ(MatchBlockSize(0.04), 25);
  EXPECT_EQ(MatchBlockSize(0.23), 4);
  EXPECT_EQ(MatchBlockSize(0.10), 10);
  EXPECT_EQ(MatchBlockSize(0.11), 9);
  EXPECT_EQ(MatchBlockSize(1.0), 1);
  auto w = BuildWorkload({"VGG-6", 25088, 4096, 0.04, 0.183}, {1, 0, false, false});
  EXPECT_EQ(w.p, 25);
  EXPECT_EQ(static_cast<int64_t>(w.nonzero_cols.size()), std::llround(0.183 * 25088));
  EXPECT_FALSE(w.weights.has_value());  // timing only: offsets, no values
  EXPECT_EQ(static_cast<int64_t>(w.offsets.size()), w.row_blocks * w.col_blocks);
  // A VGG-6-size layer simulates without per-cycle state.
  auto r = PermDnnEngine({}, Tech()).Run(w, nullptr);
  EXPECT_GT(r.cycles, 0);
  EXPECT_TRUE(r.output.empty());
  auto c = CirCnnEngine({}, Tech()).Run(w, nullptr);
  EXPECT_GT(c.cycles, r.cycles);
}

TEST(TechTable, ScalingRulesAndPublishedAnchors) {
  const auto& t = Tech();
  EXPECT_DOUBLE_EQ(t.MultEnergy(8, 45), 0.2);
  EXPECT_DOUBLE_EQ(t.MultEnergy(16, 45), 0.8);
  EXPECT_NEAR(t.MultEnergy(16, 28), 0.8 * 28 / 45, 1e-12);
  EXPECT_NEAR(t.SramEnergy(8192, 64, 45), 10.0, 1e-9);
  EXPECT_NEAR(t.SramEnergy(32768, 64, 45), 20.0, 1e-9);
  EXPECT_NEAR(t.SramEnergy(1048576, 64, 45), 100.0, 1e-9);
  EXPECT_NEAR(t.SramEnergy(8192, 16, 45), 2.5, 1e-9);
  EXPECT_NEAR(t.MultArea(16, 28), 282.0 * 4 * (28.0 / 45) * (28.0 / 45), 1e-9);
  // The EIE area model rebuilds the published 40.8 mm2 from Table II.
  EieEngine eie({{"node_nm", 45}}, t);
  EXPECT_NEAR(eie.Area().total(), 40.8, 0.05);
  EXPECT_NEAR(EieEngine({}, t).Area().total(), 40.8 * (28.0 / 45) * (28.0 / 45), 0.05);
  EXPECT_DOUBLE_EQ(t.Published("permdnn", "power_mw"), 703.4);
  // A table missing an entry is rejected with its name.
  nlohmann::json broken = t.json();
  broken["energy_pj"].erase("int_mult_8b");
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "energy_pj.int_mult_8b");
  broken = t.json();
  broken["area_um2"]["fifo_8x"]["scaling"] = "cubic";
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "scaling 'cubic'");
  // Every entry the models read is required and checked, by name.
  for (const char* k : {"register_bit", "wire_bit_mm", "clock_network_per_pe_cycle", "pipeline_registers_per_pe_cycle"}) {
    broken = t.json();
    broken["energy_pj"].erase(k);
    ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, std::string("energy_pj.") + k);
  }
  broken = t.json();
  broken["area_um2"]["eie_pe"]["value"] = 0;
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "area_um2.eie_pe must be > 0");
  broken = t.json();
  broken["area_um2"]["filler_fraction"]["value"] = 1.0;
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "area_um2.filler_fraction must be < 1");
  broken = t.json();
  broken["energy_pj"]["sram_read_64b_8kb"]["value"] = 0;
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "energy_pj.sram_read_64b_8kb must be > 0");
  broken = t.json();
  broken["energy_pj"]["register_bit"]["node_nm"] = -45;
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "energy_pj.register_bit has node_nm = -45");
  broken = t.json();
  broken["energy_pj"]["wire_bit_mm"]["value"] = "cheap";
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "energy_pj.wire_bit_mm needs a number 'value'");
  broken = t.json();
  broken["published_chips"]["eie"]["power_mw"] = "590";
  ExpectError([&] { TechTable::FromJson(broken, "broken.json"); }, "published_chips.eie.power_mw must be a number");
  // Every entry carries its source and scaling rule.
  for (const char* group : {"energy_pj", "area_um2"})
    for (const auto& [name, e] : t.json()[group].items()) {
      EXPECT_FALSE(e["source"].get<std::string>().empty()) << name;
      EXPECT_TRUE(e.contains("rule") && e["rule"].is_string()) << name;
    }
}

}  // namespace
}  // namespace permdnn::sim
