// The technology table (see tech.h).
#include "permdnn/sim/tech.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "permdnn/core/error.h"

#ifndef PERMDNN_SIM_DATA_DIR
#define PERMDNN_SIM_DATA_DIR "data/sim"
#endif

namespace permdnn::sim {

namespace {

const char* const kEnergyKeys[] = {"int_mult_8b",        "int_add_32b",          "int_add_8b",           "sram_read_64b_8kb",
                                   "sram_read_64b_32kb", "sram_read_64b_1mb",    "dram_64b",
                                   "regfile_rmw_16b",    "fifo_access_16b",      "zero_test_16b",
                                   "register_bit",       "wire_bit_mm",          "clock_network_per_pe_cycle",
                                   "pipeline_registers_per_pe_cycle"};
const char* const kAreaKeys[] = {"int_mult_8b",      "int_add_32b",  "int_add_8b",      "sram_per_kb_2kb", "sram_per_kb_32kb",
                                 "sram_per_kb_128kb", "fifo_8x",     "register_bit",    "eie_arith_unit",
                                 "eie_logic",        "eie_pe",       "filler_fraction"};

// A two-input XOR (conditional negation of one bit) against a flip-flop:
// ~6 vs ~24 transistors, the ratio the register_bit rule uses for a mux.
constexpr double kXorPerFlipFlop = 0.25;

// Piecewise power law through (x_i, y_i), extrapolated with the end slopes.
double LogLog(double x, const double* xs, const double* ys, int n) {
  int i = 0;
  while (i < n - 2 && x > xs[i + 1]) ++i;
  double slope = std::log(ys[i + 1] / ys[i]) / std::log(xs[i + 1] / xs[i]);
  return ys[i] * std::pow(x / xs[i], slope);
}

}  // namespace

std::string TechTable::DefaultPath() {
  if (const char* env = std::getenv("PERMDNN_SIM_TECH"); env && *env) return env;
  const std::string local = "data/sim/tech_28nm.json";
  if (std::filesystem::exists(local)) return local;
  return std::string(PERMDNN_SIM_DATA_DIR) + "/tech_28nm.json";
}

TechTable TechTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PERMDNN_CHECK(in.good(), "technology table '{}': cannot open it (set --tech FILE or PERMDNN_SIM_TECH)", path);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    Fail("technology table '{}': invalid JSON: {}", path, e.what());
  }
  return FromJson(j, path);
}

TechTable TechTable::FromJson(const nlohmann::json& table, const std::string& where) {
  TechTable t;
  t.path_ = where;
  PERMDNN_CHECK(table.is_object(), "technology table '{}': top level must be an object", where);
  PERMDNN_CHECK(table.contains("target_node_nm") && table["target_node_nm"].is_number(),
                "technology table '{}': missing number 'target_node_nm'", where);
  const double node = table["target_node_nm"].get<double>();
  PERMDNN_CHECK(node >= 1 && node <= 10000, "technology table '{}': target_node_nm = {} is outside [1, 10000] nm",
                where, node);
  t.target_node_nm_ = static_cast<int>(node);
  auto check_group = [&](const char* group, auto& keys) {
    PERMDNN_CHECK(table.contains(group) && table[group].is_object(), "technology table '{}': missing object '{}'",
                  where, group);
    for (const char* k : keys) {
      PERMDNN_CHECK(table[group].contains(k), "technology table '{}': missing entry {}.{}", where, group, k);
      const auto& e = table[group][k];
      for (const char* f : {"value", "node_nm"})
        PERMDNN_CHECK(e.contains(f) && e[f].is_number(), "technology table '{}': {}.{} needs a number '{}'", where,
                      group, k, f);
      for (const char* f : {"scaling", "source"})
        PERMDNN_CHECK(e.contains(f) && e[f].is_string(), "technology table '{}': {}.{} needs a string '{}'", where,
                      group, k, f);
      const std::string s = e["scaling"].get<std::string>();
      PERMDNN_CHECK(s == "energy" || s == "area" || s == "none",
                    "technology table '{}': {}.{} has scaling '{}' (expected energy, area or none)", where, group, k,
                    s);
      const double from = e["node_nm"].get<double>();
      PERMDNN_CHECK(std::isfinite(from) && from >= 0, "technology table '{}': {}.{} has node_nm = {} (expected >= 0)",
                    where, group, k, from);
      const double v = e["value"].get<double>();
      PERMDNN_CHECK(std::isfinite(v) && v >= 0, "technology table '{}': {}.{} = {} is not a finite value >= 0", where,
                    group, k, v);
    }
  };
  check_group("energy_pj", kEnergyKeys);
  check_group("area_um2", kAreaKeys);
  // Entries the model divides by or takes logarithms of.
  for (const char* k : {"sram_read_64b_8kb", "sram_read_64b_32kb", "sram_read_64b_1mb"})
    PERMDNN_CHECK(table["energy_pj"][k]["value"].get<double>() > 0,
                  "technology table '{}': energy_pj.{} must be > 0 (SRAM energies are interpolated log-log)", where, k);
  for (const char* k : {"int_add_8b", "int_add_32b"}) {
    PERMDNN_CHECK(table["energy_pj"][k]["value"].get<double>() > 0 && table["area_um2"][k]["value"].get<double>() > 0,
                  "technology table '{}': energy_pj.{} and area_um2.{} must be > 0 (the ternary adder is interpolated "
                  "log-log between the 8-bit and 32-bit adders)", where, k, k);
  }
  for (const char* k : {"sram_per_kb_2kb", "sram_per_kb_32kb", "sram_per_kb_128kb", "eie_pe", "eie_logic",
                        "eie_arith_unit"})
    PERMDNN_CHECK(table["area_um2"][k]["value"].get<double>() > 0, "technology table '{}': area_um2.{} must be > 0",
                  where, k);
  PERMDNN_CHECK(table["area_um2"]["eie_logic"]["value"].get<double>() >=
                    table["area_um2"]["eie_arith_unit"]["value"].get<double>(),
                "technology table '{}': area_um2.eie_logic must include area_um2.eie_arith_unit (>=)", where);
  PERMDNN_CHECK(table["area_um2"]["filler_fraction"]["value"].get<double>() < 1,
                "technology table '{}': area_um2.filler_fraction must be < 1", where);
  for (const char* chip : {"permdnn", "eie"})
    for (const char* f : {"area_mm2", "power_mw", "node_nm", "frequency_mhz"})
      PERMDNN_CHECK(table.contains("published_chips") && table["published_chips"].is_object() &&
                        table["published_chips"].contains(chip) && table["published_chips"][chip].is_object() &&
                        table["published_chips"][chip].contains(f) && table["published_chips"][chip][f].is_number() &&
                        table["published_chips"][chip][f].get<double>() > 0,
                    "technology table '{}': published_chips.{}.{} must be a number > 0", where, chip, f);
  t.json_ = table;
  return t;
}

double TechTable::Entry(const char* group, const char* name, double node_nm) const {
  const auto& e = json_.at(group).at(name);
  const double v = e.at("value").get<double>();
  const double from = e.at("node_nm").get<double>();
  const std::string s = e.at("scaling").get<std::string>();
  if (s == "energy") return v * EnergyScale(from, node_nm);
  if (s == "area") return v * AreaScale(from, node_nm);
  return v;
}

double TechTable::MultEnergy(int bits, double node_nm) const {
  return Entry("energy_pj", "int_mult_8b", node_nm) * (bits / 8.0) * (bits / 8.0);
}
double TechTable::AddEnergy(int bits, double node_nm) const {
  return Entry("energy_pj", "int_add_32b", node_nm) * bits / 32.0;
}
double TechTable::TernaryAddSubEnergy(int bits, double node_nm) const {
  const double xs[] = {8.0, 32.0};
  const double ys[] = {Entry("energy_pj", "int_add_8b", node_nm), Entry("energy_pj", "int_add_32b", node_nm)};
  return LogLog(bits, xs, ys, 2) + bits * kXorPerFlipFlop * RegisterBitEnergy(node_nm);
}
double TechTable::SramEnergy(double bytes, int width_bits, double node_nm) const {
  const double xs[] = {8192.0, 32768.0, 1048576.0};
  const double ys[] = {Entry("energy_pj", "sram_read_64b_8kb", node_nm), Entry("energy_pj", "sram_read_64b_32kb", node_nm),
                       Entry("energy_pj", "sram_read_64b_1mb", node_nm)};
  return LogLog(std::max(bytes, 64.0), xs, ys, 3) * width_bits / 64.0;
}
double TechTable::RegfileRmwEnergy(int bits, double node_nm) const {
  return Entry("energy_pj", "regfile_rmw_16b", node_nm) * bits / 16.0;
}
double TechTable::FifoEnergy(double node_nm) const { return Entry("energy_pj", "fifo_access_16b", node_nm); }
double TechTable::ZeroTestEnergy(double node_nm) const { return Entry("energy_pj", "zero_test_16b", node_nm); }
double TechTable::DramEnergy64(double node_nm) const { return Entry("energy_pj", "dram_64b", node_nm); }
double TechTable::RegisterBitEnergy(double node_nm) const { return Entry("energy_pj", "register_bit", node_nm); }
double TechTable::WireEnergyPerBitMm(double node_nm) const {
  // Per transition; random data toggles half of the bits.
  return 0.5 * Entry("energy_pj", "wire_bit_mm", node_nm);
}
double TechTable::ClockEnergy(int64_t cycles, int num_pe, double chip_mm2, double logic_um2,
                              double node_nm) const {
  const double pe_um2 = chip_mm2 * 1e6 / num_pe;
  return static_cast<double>(cycles) * num_pe *
         (ClockNetworkEnergyPerPeCycle(pe_um2, node_nm) + PipelineRegisterEnergyPerPeCycle(logic_um2, node_nm));
}
double TechTable::BroadcastEnergy(double bits, double chip_mm2, int leaves, double node_nm) const {
  return bits * HTreeLengthMm(chip_mm2, leaves) * WireEnergyPerBitMm(node_nm);
}
double TechTable::HTreeLengthMm(double area_mm2, int leaves) {
  if (leaves <= 1 || area_mm2 <= 0) return 0;
  return 1.5 * std::sqrt(area_mm2) * (std::sqrt(static_cast<double>(leaves)) - 1.0);
}
double TechTable::ClockNetworkEnergyPerPeCycle(double pe_um2, double node_nm) const {
  return Entry("energy_pj", "clock_network_per_pe_cycle", node_nm) * pe_um2 / Entry("area_um2", "eie_pe", node_nm);
}
double TechTable::PipelineRegisterEnergyPerPeCycle(double logic_um2, double node_nm) const {
  return Entry("energy_pj", "pipeline_registers_per_pe_cycle", node_nm) * logic_um2 /
         Entry("area_um2", "eie_logic", node_nm);
}

double TechTable::MultArea(int bits, double node_nm) const {
  return Entry("area_um2", "int_mult_8b", node_nm) * (bits / 8.0) * (bits / 8.0);
}
double TechTable::AddArea(int bits, double node_nm) const { return Entry("area_um2", "int_add_32b", node_nm) * bits / 32.0; }
double TechTable::TernaryAddSubArea(int bits, double node_nm) const {
  const double xs[] = {8.0, 32.0};
  const double ys[] = {Entry("area_um2", "int_add_8b", node_nm), Entry("area_um2", "int_add_32b", node_nm)};
  return LogLog(bits, xs, ys, 2) + bits * kXorPerFlipFlop * RegisterBitArea(node_nm);
}
double TechTable::SramArea(double bytes, double node_nm) const {
  if (bytes <= 0) return 0;
  const double xs[] = {2048.0, 32768.0, 131072.0};
  const double ys[] = {Entry("area_um2", "sram_per_kb_2kb", node_nm), Entry("area_um2", "sram_per_kb_32kb", node_nm),
                       Entry("area_um2", "sram_per_kb_128kb", node_nm)};
  return LogLog(bytes, xs, ys, 3) * bytes / 1024.0;
}
double TechTable::FifoArea(int depth, double node_nm) const { return Entry("area_um2", "fifo_8x", node_nm) * depth / 8.0; }
double TechTable::EieArithArea(double node_nm) const { return Entry("area_um2", "eie_arith_unit", node_nm); }
double TechTable::ControlLogicArea(double node_nm) const {
  return Entry("area_um2", "eie_logic", node_nm) - EieArithArea(node_nm);
}
double TechTable::RegisterBitArea(double node_nm) const { return Entry("area_um2", "register_bit", node_nm); }
double TechTable::RegisterBankArea(double entries, int bits, int read_ports, double node_nm) const {
  // e − 1 two-input muxes per bit and read port, ~6 transistors each against
  // ~24 per flip-flop.
  constexpr double kMuxPerFlipFlop = 0.25;
  return entries * bits * RegisterBitArea(node_nm) * (1.0 + kMuxPerFlipFlop * read_ports);
}
double TechTable::FillerFraction() const { return json_.at("area_um2").at("filler_fraction").at("value").get<double>(); }

double TechTable::Published(const std::string& chip, const std::string& field) const {
  return json_.at("published_chips").at(chip).at(field).get<double>();
}

}  // namespace permdnn::sim
