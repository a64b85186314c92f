// Parsing of layer lists for bench and sim (see workloads.h).
#include "permdnn/core/workloads.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "permdnn/core/error.h"

namespace permdnn {

namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool ParsePositive(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 12) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  *out = std::stoll(s);
  return *out > 0;
}

}  // namespace

std::vector<FcLayerSpec> ParseLayerList(const std::string& list) {
  std::vector<FcLayerSpec> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(std::remove_if(item.begin(), item.end(), [](unsigned char c) { return std::isspace(c); }),
               item.end());
    if (item.empty()) continue;
    if (Lower(item) == "eie") {
      out.insert(out.end(), EieLayers().begin(), EieLayers().end());
      continue;
    }
    auto named = std::find_if(EieLayers().begin(), EieLayers().end(),
                              [&](const FcLayerSpec& l) { return Lower(l.name) == Lower(item); });
    if (named != EieLayers().end()) {
      out.push_back(*named);
      continue;
    }
    auto x = Lower(item).find('x');
    int64_t m = 0, n = 0;
    if (x != std::string::npos && ParsePositive(item.substr(0, x), &m) &&
        ParsePositive(item.substr(x + 1), &n)) {
      out.push_back({item, n, m, 1.0, 1.0});
      continue;
    }
    Fail("layer list: '{}' is neither 'eie', an EIE layer name (Alex-6, ..., NT-LSTM) nor a shape "
         "MxN (m outputs x n inputs, e.g. 4096x9216)",
         item);
  }
  PERMDNN_CHECK(!out.empty(), "layer list '{}' names no layer", list);
  return out;
}

}  // namespace permdnn
