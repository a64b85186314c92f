// The technology table: per-action energies and per-component areas.
//
// The numbers live in a JSON data file (data/sim/tech_28nm.json) that users
// can replace. Each entry carries its value at the node where it was
// published, the published source, and the scaling rule that brings it to
// the table's target node (energy ∝ L at constant voltage, area ∝ L²). The
// accessors below return values already scaled to the node an engine asks
// for, and apply the per-entry size/width rules (multiplier energy ∝ bits²,
// SRAM energy interpolated log-log in size and linear in width, ...), so the
// cost models in the engines only count actions.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace permdnn::sim {

class TechTable {
 public:
  // Loads and validates the file (every entry the engines use must be
  // present with value, node_nm, scaling and source). Throws Error naming
  // the file and the entry.
  static TechTable Load(const std::string& path);
  static TechTable FromJson(const nlohmann::json& table, const std::string& where);
  // The default file: $PERMDNN_SIM_TECH if set, else the installed copy of
  // data/sim/tech_28nm.json found next to the sources.
  static std::string DefaultPath();

  int target_node_nm() const { return target_node_nm_; }
  const std::string& path() const { return path_; }

  // Energies in pJ at `node_nm`.
  double MultEnergy(int bits, double node_nm) const;
  double AddEnergy(int bits, double node_nm) const;
  // The adder array's ternary lane (sim engine "adder"): a b-bit add/subtract
  // whose second operand is conditionally negated (XOR + carry-in) by the
  // weight's minus bit. The adder is interpolated log-log between
  // Horowitz's 8-bit and 32-bit adds (energy_pj.int_add_8b / int_add_32b),
  // the XORs priced as a quarter of a flip-flop bit each.
  double TernaryAddSubEnergy(int bits, double node_nm) const;
  // Read (or write) of `width_bits` from an SRAM array of `bytes`.
  double SramEnergy(double bytes, int width_bits, double node_nm) const;
  double RegfileRmwEnergy(int bits, double node_nm) const;
  double RegfileReadEnergy(int bits, double node_nm) const { return 0.5 * RegfileRmwEnergy(bits, node_nm); }
  double FifoEnergy(double node_nm) const;
  double ZeroTestEnergy(double node_nm) const;
  double DramEnergy64(double node_nm) const;
  // One flip-flop bit written (or read through its mux tree).
  double RegisterBitEnergy(double node_nm) const;
  // One bit carried one mm on a global wire, random data (half the bits
  // toggle).
  double WireEnergyPerBitMm(double node_nm) const;
  // Wire length of an H-tree that reaches `leaves` sinks spread over a
  // square die of `area_mm2`: 1.5 · side · (√leaves − 1) mm (64 leaves:
  // 10.5 sides; the energy_pj.wire_bit_mm rule).
  static double HTreeLengthMm(double area_mm2, int leaves);
  // Clock network per PE cycle for a PE of `pe_um2` (the clock tree grows
  // with the area it spans), and pipeline registers per PE cycle for
  // `logic_um2` of logic between them; both scaled from EIE's PE.
  double ClockNetworkEnergyPerPeCycle(double pe_um2, double node_nm) const;
  double PipelineRegisterEnergyPerPeCycle(double logic_um2, double node_nm) const;
  // Clock tree and pipeline registers of `num_pe` PEs over `cycles`, for a
  // chip of `chip_mm2` whose PEs each have `logic_um2` of logic.
  double ClockEnergy(int64_t cycles, int num_pe, double chip_mm2, double logic_um2, double node_nm) const;
  // `bits` broadcast over an H-tree to `leaves` PEs on a chip of `chip_mm2`.
  double BroadcastEnergy(double bits, double chip_mm2, int leaves, double node_nm) const;

  // Areas in µm² at `node_nm`.
  double MultArea(int bits, double node_nm) const;
  double AddArea(int bits, double node_nm) const;
  double TernaryAddSubArea(int bits, double node_nm) const;
  double SramArea(double bytes, double node_nm) const;
  double FifoArea(int depth, double node_nm) const;
  double EieArithArea(double node_nm) const;
  // Control, address and queue logic of a PE: EIE's combinational logic
  // besides its arithmetic unit.
  double ControlLogicArea(double node_nm) const;
  double RegisterBitArea(double node_nm) const;
  // A bank of `entries` flip-flop words of `bits`, read through a mux tree
  // per read port (area_um2.register_bit rule: a tree of two-input muxes
  // adds a quarter of the flip-flops' area per port).
  double RegisterBankArea(double entries, int bits, int read_ports, double node_nm) const;
  double FillerFraction() const;

  // Published chip facts ("permdnn", "eie"): area_mm2, power_mw, node_nm,
  // frequency_mhz.
  double Published(const std::string& chip, const std::string& field) const;

  // Scaling factors from a source node to `node_nm`.
  static double EnergyScale(double from_nm, double to_nm) { return from_nm > 0 ? to_nm / from_nm : 1.0; }
  static double AreaScale(double from_nm, double to_nm) {
    return from_nm > 0 ? (to_nm / from_nm) * (to_nm / from_nm) : 1.0;
  }

  const nlohmann::json& json() const { return json_; }

 private:
  double Entry(const char* group, const char* name, double node_nm) const;
  nlohmann::json json_;
  std::string path_;
  int target_node_nm_ = 28;
};

}  // namespace permdnn::sim
