// Parsed parameter specs and configuration files (see config.h).
#include "permdnn/sim/config.h"

#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "permdnn/core/error.h"

namespace permdnn::sim {

namespace {

std::string KnownKeys(const std::vector<ParamDef>& defs) {
  std::string out;
  for (const auto& d : defs) out += (out.empty() ? "" : ", ") + d.key;
  return out;
}

std::string Trim(const std::string& s) {
  std::size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

// "12", "-3.5e2" -> number; "true"/"false" -> bool; "\"x\"" -> string;
// anything else -> bare string (only allowed on the command line).
nlohmann::json ParseScalar(const std::string& raw, bool allow_bare, const std::string& where) {
  std::string v = Trim(raw);
  PERMDNN_CHECK(!v.empty(), "{}: missing value", where);
  if (v == "true") return true;
  if (v == "false") return false;
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') return v.substr(1, v.size() - 2);
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (end && *end == '\0') {
    if (std::floor(d) == d && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
    return d;
  }
  PERMDNN_CHECK(allow_bare, "{}: '{}' is not a number, true/false or a \"quoted string\"", where, v);
  return v;
}

}  // namespace

ParamSpec ParamSpec::Parse(const std::string& section, const std::vector<ParamDef>& defs,
                           const nlohmann::json& section_json) {
  ParamSpec spec;
  spec.section_ = section;
  PERMDNN_CHECK(section_json.is_null() || section_json.is_object(),
                "config section '{}': expected a table of key = value, got {}", section, section_json.dump());
  if (section_json.is_object()) {
    for (auto it = section_json.begin(); it != section_json.end(); ++it) {
      bool known = false;
      for (const auto& d : defs) known = known || d.key == it.key();
      PERMDNN_CHECK(known, "config section '{}': unknown key '{}' (known keys: {})", section, it.key(),
                    KnownKeys(defs));
    }
  }
  for (const auto& d : defs) {
    const bool given = section_json.is_object() && section_json.contains(d.key);
    spec.specified_[d.key] = given;
    if (d.kind == ParamDef::Kind::kString) {
      std::string v = d.default_string;
      if (given) {
        const auto& j = section_json.at(d.key);
        PERMDNN_CHECK(j.is_string(), "config {}.{}: expected a string, got {}", section, d.key, j.dump());
        v = j.get<std::string>();
      }
      if (!d.choices.empty()) {
        bool ok = false;
        std::string list;
        for (const auto& c : d.choices) {
          ok = ok || c == v;
          list += (list.empty() ? "" : ", ") + c;
        }
        PERMDNN_CHECK(ok, "config {}.{}: '{}' is not one of {}", section, d.key, v, list);
      }
      spec.strings_[d.key] = v;
      continue;
    }
    double v = d.default_number;
    if (given) {
      const auto& j = section_json.at(d.key);
      PERMDNN_CHECK(j.is_number(), "config {}.{}: expected a number, got {}", section, d.key, j.dump());
      v = j.get<double>();
    }
    PERMDNN_CHECK(std::isfinite(v), "config {}.{}: value must be finite", section, d.key);
    if (d.kind == ParamDef::Kind::kInt)
      PERMDNN_CHECK(std::floor(v) == v, "config {}.{}: expected an integer, got {}", section, d.key, v);
    PERMDNN_CHECK(v >= d.min && v <= d.max, "config {}.{}: {} is out of range [{}, {}]", section, d.key, v, d.min,
                  d.max);
    spec.numbers_[d.key] = v;
  }
  return spec;
}

double ParamSpec::Number(const std::string& key) const {
  auto it = numbers_.find(key);
  PERMDNN_CHECK(it != numbers_.end(), "config section '{}': no numeric parameter '{}'", section_, key);
  return it->second;
}

const std::string& ParamSpec::String(const std::string& key) const {
  auto it = strings_.find(key);
  PERMDNN_CHECK(it != strings_.end(), "config section '{}': no string parameter '{}'", section_, key);
  return it->second;
}

bool ParamSpec::IsSpecified(const std::string& key) const {
  auto it = specified_.find(key);
  return it != specified_.end() && it->second;
}

nlohmann::json ParamSpec::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : numbers_) j[k] = v;
  for (const auto& [k, v] : strings_) j[k] = v;
  return j;
}

nlohmann::json ParseTomlSubset(const std::string& text, const std::string& where) {
  nlohmann::json root = nlohmann::json::object();
  nlohmann::json* section = &root;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string at = fmt::format("{}:{}", where, number);
    // Strip comments outside quotes.
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '"') quoted = !quoted;
      if (line[i] == '#' && !quoted) {
        line.resize(i);
        break;
      }
    }
    line = Trim(line);
    if (line.empty()) continue;
    if (line.front() == '[') {
      PERMDNN_CHECK(line.back() == ']' && line.size() > 2, "{}: bad section header '{}'", at, line);
      std::string name = Trim(line.substr(1, line.size() - 2));
      PERMDNN_CHECK(!name.empty() && name.find('.') == std::string::npos && name.find('[') == std::string::npos,
                    "{}: unsupported section header '{}' (use [name])", at, line);
      PERMDNN_CHECK(!root.contains(name), "{}: section [{}] defined twice", at, name);
      root[name] = nlohmann::json::object();
      section = &root[name];
      continue;
    }
    auto eq = line.find('=');
    PERMDNN_CHECK(eq != std::string::npos, "{}: expected 'key = value' or '[section]', got '{}'", at, line);
    std::string key = Trim(line.substr(0, eq));
    PERMDNN_CHECK(!key.empty(), "{}: empty key", at);
    PERMDNN_CHECK(!section->contains(key), "{}: key '{}' defined twice", at, key);
    (*section)[key] = ParseScalar(line.substr(eq + 1), false, at);
  }
  return root;
}

nlohmann::json LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PERMDNN_CHECK(in.good(), "config file '{}': cannot open it", path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::size_t first = text.find_first_not_of(" \t\r\n");
  const bool json = path.ends_with(".json") || (first != std::string::npos && text[first] == '{');
  nlohmann::json root;
  if (json) {
    try {
      root = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      Fail("config file '{}': invalid JSON: {}", path, e.what());
    }
  } else {
    root = ParseTomlSubset(text, path);
  }
  PERMDNN_CHECK(root.is_object(), "config file '{}': the top level must be a table of sections", path);
  return root;
}

void ApplyOverride(nlohmann::json& config, const std::string& assignment) {
  auto eq = assignment.find('=');
  auto dot = assignment.find('.');
  PERMDNN_CHECK(eq != std::string::npos && dot != std::string::npos && dot < eq,
                "--set '{}': expected section.key=value (e.g. permdnn.num_pe=64)", assignment);
  std::string section = Trim(assignment.substr(0, dot));
  std::string key = Trim(assignment.substr(dot + 1, eq - dot - 1));
  PERMDNN_CHECK(!section.empty() && !key.empty(), "--set '{}': empty section or key", assignment);
  if (!config.is_object()) config = nlohmann::json::object();
  if (!config.contains(section)) config[section] = nlohmann::json::object();
  config[section][key] = ParseScalar(assignment.substr(eq + 1), true, fmt::format("--set {}", assignment));
}

std::string DescribeParams(const std::string& section, const std::vector<ParamDef>& defs) {
  std::string out = fmt::format("[{}]\n", section);
  for (const auto& d : defs) {
    std::string def = d.kind == ParamDef::Kind::kString ? "\"" + d.default_string + "\""
                                                       : fmt::format("{}", d.default_number);
    out += fmt::format("  {:<20} = {:<10} {}\n", d.key, def, d.doc);
  }
  return out;
}

}  // namespace permdnn::sim
