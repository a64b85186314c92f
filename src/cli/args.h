// Comma-separated list flags shared by the subcommands ("--p 4,8,16"):
// one parser, one error wording.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "permdnn/core/error.h"

namespace permdnn::cli {

// "a,b,,c" -> {"a", "b", "c"} (empty items dropped).
inline std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Numbers of type T; throws Error naming the flag and the bad item.
template <typename T>
std::vector<T> ParseNumberList(const std::string& flag, const std::string& text) {
  std::vector<T> out;
  for (const std::string& item : SplitList(text)) {
    std::istringstream is(item);
    T v;
    if (!(is >> v) || !is.eof()) Fail("{}: '{}' is not a number (in '{}')", flag, item, text);
    out.push_back(v);
  }
  PERMDNN_CHECK(!out.empty(), "{}: empty list", flag);
  return out;
}

}  // namespace permdnn::cli
