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
#include <type_traits>
#include <variant>
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

// A parameter is declared once, in a ParamTable of its engine: key, kind,
// default, range and the reason for the default, together with the member
// of the engine's parameter struct that stores it. The table gives the
// ParamDefs that ParamSpec::Parse validates against and that
// `permdnn sim --list-params` prints, and Load() fills the struct from a
// parsed spec, so no default or key is written twice.
//
//   const ParamTable<FooParams>& FooTable() {
//     static const auto t = ParamTable<FooParams>()
//         .Int("num_pe", &FooParams::num_pe, 32, 1, 4096, "PEs (paper: 32)")
//         .Choice("mode", &FooParams::mode, "fast", {"fast", "exact"}, "...");
//     return t;
//   }
template <class P>
class ParamTable {
 public:
  ParamTable& Int(std::string key, int P::*field, int64_t def, double min, double max, std::string doc) {
    return Add({std::move(key), ParamDef::Kind::kInt, static_cast<double>(def), "", min, max, {}, std::move(doc)},
               field);
  }
  ParamTable& Int(std::string key, int64_t P::*field, int64_t def, double min, double max, std::string doc) {
    return Add({std::move(key), ParamDef::Kind::kInt, static_cast<double>(def), "", min, max, {}, std::move(doc)},
               field);
  }
  ParamTable& Real(std::string key, double P::*field, double def, double min, double max, std::string doc) {
    return Add({std::move(key), ParamDef::Kind::kReal, def, "", min, max, {}, std::move(doc)}, field);
  }
  ParamTable& Choice(std::string key, std::string P::*field, std::string def, std::vector<std::string> choices,
                     std::string doc) {
    return Add({std::move(key), ParamDef::Kind::kString, 0, std::move(def), 0, 0, std::move(choices), std::move(doc)},
               field);
  }

  const std::vector<ParamDef>& defs() const { return defs_; }

  // Every declared field of P from `spec` (parsed against defs()).
  P Load(const ParamSpec& spec) const {
    P p{};
    for (std::size_t i = 0; i < defs_.size(); ++i) {
      const std::string& key = defs_[i].key;
      std::visit(
          [&](auto field) {
            using T = std::remove_reference_t<decltype(p.*field)>;
            if constexpr (std::is_same_v<T, std::string>)
              p.*field = spec.String(key);
            else if constexpr (std::is_same_v<T, double>)
              p.*field = spec.Number(key);
            else
              p.*field = static_cast<T>(spec.Int(key));
          },
          fields_[i]);
    }
    return p;
  }
  // Parses `section_json` (null: all defaults) and loads it.
  P Parse(const std::string& section, const nlohmann::json& section_json, ParamSpec* spec = nullptr) const {
    ParamSpec s = ParamSpec::Parse(section, defs_, section_json);
    P p = Load(s);
    if (spec) *spec = std::move(s);
    return p;
  }

 private:
  using Field = std::variant<int P::*, int64_t P::*, double P::*, std::string P::*>;
  ParamTable& Add(ParamDef def, Field field) {
    defs_.push_back(std::move(def));
    fields_.push_back(field);
    return *this;
  }
  std::vector<ParamDef> defs_;
  std::vector<Field> fields_;
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
