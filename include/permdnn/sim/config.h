// Parsed architecture specifications for permdnn::sim.
//
// As in timeloop's buffer specs, what the user wrote is kept apart from the
// components that run: a ParamSpec holds, for every parameter an engine
// declares (ParamDef: key, kind, range, default and the reason for it),
// the value and whether it was specified. Engines read their numbers from
// a ParamSpec and never see raw JSON. Unknown keys, wrong types and values
// outside the declared range are errors that name the section, the key and
// what was expected.
//
// A configuration file is JSON or a small TOML subset ([section] headers,
// key = number | "string" | true/false, # comments), with one section per
// architecture ("permdnn", "eie", "circnn") and an optional "workload"
// section. Command-line overrides use "section.key=value".
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace permdnn::sim {

struct ParamDef {
  enum class Kind { kInt, kReal, kString };
  std::string key;
  Kind kind = Kind::kReal;
  double default_number = 0;
  std::string default_string;
  double min = -1e300, max = 1e300;  // inclusive range for numbers
  std::vector<std::string> choices;  // allowed strings (kString)
  std::string doc;                   // what it is and why the default
};

class ParamSpec {
 public:
  ParamSpec() = default;
  // Validates `section_json` (an object, or null for "all defaults") against
  // `defs`. Throws Error on unknown keys (listing the known ones), wrong
  // types, non-integers for kInt, and out-of-range values.
  static ParamSpec Parse(const std::string& section, const std::vector<ParamDef>& defs,
                         const nlohmann::json& section_json);

  double Number(const std::string& key) const;
  int64_t Int(const std::string& key) const { return static_cast<int64_t>(Number(key)); }
  const std::string& String(const std::string& key) const;
  bool IsSpecified(const std::string& key) const;
  // Resolved values (defaults filled in), for reports.
  nlohmann::json ToJson() const;
  const std::string& section() const { return section_; }

 private:
  std::string section_;
  std::map<std::string, double> numbers_;
  std::map<std::string, std::string> strings_;
  std::map<std::string, bool> specified_;
};

// Reads a JSON (.json) or TOML-subset (.toml, or any file whose first
// non-blank character is not '{') configuration. Throws Error naming the
// file and line on syntax errors.
nlohmann::json LoadConfigFile(const std::string& path);
nlohmann::json ParseTomlSubset(const std::string& text, const std::string& where);

// Applies "section.key=value" (value parsed as a number when it is one,
// true/false as booleans, otherwise a string) to `config`.
void ApplyOverride(nlohmann::json& config, const std::string& assignment);

// Markdown-ish table of parameter docs (for `permdnn sim --list-params` and
// docs/simulator.md).
std::string DescribeParams(const std::string& section, const std::vector<ParamDef>& defs);

}  // namespace permdnn::sim
