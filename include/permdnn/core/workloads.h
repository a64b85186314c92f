// Reference workloads shared by the benchmarks and the simulator.
//
// The nine fully connected layers of the EIE paper (Han et al., ISCA 2016,
// Table III), m outputs × n inputs, with the published weight density (after
// pruning) and activation density (nonzero inputs). One table, used by
// `permdnn bench --layers eie` and `permdnn sim --layers eie`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace permdnn {

struct FcLayerSpec {
  std::string name;
  int64_t inputs = 0;   // n
  int64_t outputs = 0;  // m
  double weight_density = 1.0;
  double act_density = 1.0;
};

inline const std::vector<FcLayerSpec>& EieLayers() {
  static const std::vector<FcLayerSpec> layers = {
      {"Alex-6", 9216, 4096, 0.09, 0.351},  {"Alex-7", 4096, 4096, 0.09, 0.353},
      {"Alex-8", 4096, 1000, 0.25, 0.375},  {"VGG-6", 25088, 4096, 0.04, 0.183},
      {"VGG-7", 4096, 4096, 0.04, 0.375},   {"VGG-8", 4096, 1000, 0.23, 0.411},
      {"NT-We", 4096, 600, 0.10, 1.0},      {"NT-Wd", 600, 8791, 0.11, 1.0},
      {"NT-LSTM", 1201, 2400, 0.10, 1.0},
  };
  return layers;
}

// Resolves a comma-separated list: "eie" (all nine), layer names
// (case-insensitive) and "MxN" shapes (m outputs × n inputs). Throws Error
// naming the item it cannot parse.
std::vector<FcLayerSpec> ParseLayerList(const std::string& list);

}  // namespace permdnn
