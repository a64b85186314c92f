// Fuzz targets "sim_config" and "sim_tech": the simulator's two input files
// through the public API that `permdnn sim --config FILE --tech FILE` uses.
// The config is written as config.toml or config.json (by the input's
// parity, so both of LoadConfigFile's branches run), the tech table as
// tech.json; when they load, one small layer is simulated on every
// architecture with the functional check, and the report is rendered.
#include <string>

#include "fuzz/targets.h"
#include "permdnn/core/error.h"
#include "permdnn/core/workloads.h"
#include "permdnn/sim/config.h"
#include "permdnn/sim/report.h"
#include "permdnn/sim/tech.h"

namespace permdnn::fuzz {

namespace {

void SimulateSmallLayer(const nlohmann::json& config, const std::string& tech_path) {
  sim::ComparisonOptions o;
  o.layers = ParseLayerList("24x40");
  o.config = config;
  o.tech_path = tech_path;
  o.seed = 3;
  o.check_functional = true;
  sim::ComparisonResult res = sim::RunComparison(o);
  (void)sim::RenderComparison(res);
  (void)sim::ComparisonToJson(res).dump();
}

}  // namespace

int FuzzSimConfig(const uint8_t* data, std::size_t size) {
  const std::string path = WriteInputFiles("sim_config", data, size, ScratchDir());
  try {
    nlohmann::json config = sim::LoadConfigFile(path);
    SimulateSmallLayer(config, "");
  } catch (const Error&) {
  }
  return 0;
}

int FuzzSimTech(const uint8_t* data, std::size_t size) {
  const std::string path = WriteInputFiles("sim_tech", data, size, ScratchDir());
  try {
    const sim::TechTable t = sim::TechTable::Load(path);
    for (double node : {28.0, 45.0, static_cast<double>(t.target_node_nm())}) {
      for (int bits : {4, 8, 16}) {
        (void)t.MultEnergy(bits, node);
        (void)t.AddEnergy(bits, node);
        (void)t.RegfileRmwEnergy(bits, node);
        (void)t.MultArea(bits, node);
        (void)t.AddArea(bits, node);
      }
      for (double bytes : {0.0, 64.0, 2048.0, 65536.0, 4194304.0}) {
        (void)t.SramEnergy(bytes, 64, node);
        (void)t.SramArea(bytes, node);
      }
      (void)t.FifoEnergy(node);
      (void)t.ZeroTestEnergy(node);
      (void)t.DramEnergy64(node);
      (void)t.RegisterBitEnergy(node);
      (void)t.WireEnergyPerBitMm(node);
      (void)t.ClockNetworkEnergyPerPeCycle(1000.0, node);
      (void)t.PipelineRegisterEnergyPerPeCycle(1000.0, node);
      (void)t.RegisterBankArea(36, 48, 1, node);
      (void)t.ControlLogicArea(node);
      (void)t.FifoArea(8, node);
      (void)t.EieArithArea(node);
    }
    (void)t.FillerFraction();
    for (const char* chip : {"permdnn", "eie"})
      for (const char* f : {"area_mm2", "power_mw", "node_nm", "frequency_mhz"}) (void)t.Published(chip, f);
    SimulateSmallLayer(nlohmann::json::object(), path);
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace permdnn::fuzz
