// The compression SPEC parser (see spec.h). No LibTorch here.
#include "permdnn/formats/spec.h"

#include <cstdlib>
#include <sstream>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/formats/sparse_matrix.h"

namespace permdnn::formats {

namespace {

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::stringstream ss(text);
  while (std::getline(ss, item, sep)) out.push_back(item);
  if (!text.empty() && text.back() == sep) out.push_back("");
  return out;
}

std::string Trim(const std::string& s) {
  std::size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// The parameters each KIND takes (the continuation rule of spec.h).
std::vector<std::string> KindParameters(const std::string& kind) {
  if (kind == "permdiag") return {"p", "offsets"};
  if (kind == "circulant") return {"p"};
  if (kind == "prune") return {"density", "bits", "index"};
  if (kind == "ternary") return {"group", "density", "t", "alpha", "lambda", "wpc", "wpcq", "ternarize"};
  return {};
}

bool IsNumber(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return *end == '\0';
}

// Joins `KEY=NUMBER` items onto the preceding method (see spec.h).
std::vector<std::string> JoinContinuations(const std::string& text) {
  std::vector<std::string> items;
  for (const std::string& raw : Split(text, ',')) {
    std::string item = Trim(raw);
    std::size_t eq = item.find('=');
    const std::string value = eq != std::string::npos ? Trim(item.substr(eq + 1)) : "";
    // KEY=NUMBER, or offsets=WORD whose WORD is no KIND (`offsets=dense` stays a layer).
    const bool word_value = Trim(item.substr(0, eq == std::string::npos ? 0 : eq)) == "offsets" &&
                            value != "dense" && value != "permdiag" && value != "circulant" && value != "prune" &&
                            value != "ternary";
    const bool key_number = eq != std::string::npos && item.find(':') == std::string::npos &&
                            (IsNumber(value) || word_value);
    const std::string key = key_number ? Trim(item.substr(0, eq)) : "";
    bool known_key = false;
    for (const char* kind : {"permdiag", "circulant", "prune", "ternary"})
      for (const auto& k : KindParameters(kind)) known_key = known_key || k == key;
    if (key_number && known_key) {
      PERMDNN_CHECK(!items.empty(), "--compress: '{}' in '{}' continues no method (write it after one, e.g. "
                    "prune:density=0.1,bits=4)", item, text);
      // The KIND of the preceding item: after NAME= when per-layer.
      const std::string& prev = items.back();
      std::size_t peq = prev.find('='), pcolon = prev.find(':');
      std::string method = peq != std::string::npos && (pcolon == std::string::npos || peq < pcolon)
                               ? prev.substr(peq + 1) : prev;
      std::string kind = Trim(method.substr(0, method.find(':')));
      bool takes = false;
      for (const auto& k : KindParameters(kind)) takes = takes || k == key;
      PERMDNN_CHECK(takes, "--compress: '{}' in '{}' continues '{}', but {} has no parameter '{}'", item, text,
                    prev, kind.empty() ? "it" : kind, key);
      items.back() += ":" + item;
    } else {
      items.push_back(item);
    }
  }
  return items;
}

}  // namespace

std::string LayerCompression::ToString() const {
  switch (kind) {
    case CompressKind::kDense: return "dense";
    case CompressKind::kPermDiag: return fmt::format("permdiag:p={}{}", p, column_offsets ? ":offsets=column" : "");
    case CompressKind::kCirculant: return fmt::format("circulant:p={}", p);
    case CompressKind::kPrune:
      return bits > 0 ? fmt::format("prune:density={}:bits={}{}", density, bits,
                                    index_bits > 0 ? fmt::format(":index={}", index_bits) : "")
                      : fmt::format("prune:density={}", density);
    case CompressKind::kTernary: {
      std::string s = fmt::format("ternary:group={}:density={}:t={}", p, density, threshold);
      if (alpha_per_layer) s += ":alpha=layer";
      if (penalty > 0) s += fmt::format(":lambda={}", penalty);
      if (wpc_ratio > 0) s += fmt::format(":wpc={}", wpc_ratio);
      if (wpc_quantile > 0) s += fmt::format(":wpcq={}", wpc_quantile);
      if (!ternarize) s += ":ternarize=0";
      return s;
    }
  }
  return "?";
}

LayerCompression ParseLayerCompression(const std::string& text, const std::string& where) {
  std::vector<std::string> parts = Split(Trim(text), ':');
  PERMDNN_CHECK(!parts.empty() && !Trim(parts[0]).empty(), "{}: empty compression method in '{}'", where, text);
  LayerCompression c;
  std::string kind = Trim(parts[0]);
  std::map<std::string, std::string> kv;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    std::size_t eq = parts[i].find('=');
    PERMDNN_CHECK(eq != std::string::npos, "{}: '{}' in '{}' is not KEY=VALUE", where, parts[i], text);
    std::string key = Trim(parts[i].substr(0, eq)), value = Trim(parts[i].substr(eq + 1));
    PERMDNN_CHECK(!kv.count(key), "{}: parameter '{}' given twice in '{}'", where, key, text);
    kv[key] = value;
  }
  auto take_int = [&](const std::string& key) {
    auto it = kv.find(key);
    PERMDNN_CHECK(it != kv.end(), "{}: '{}' needs {}=N (e.g. {}:{}=8)", where, text, key, kind, key);
    char* end = nullptr;
    long v = std::strtol(it->second.c_str(), &end, 10);
    PERMDNN_CHECK(!it->second.empty() && *end == '\0' && v >= 1 && v <= 4096,
                  "{}: {}={} in '{}' must be an integer in [1, 4096]", where, key, it->second, text);
    kv.erase(it);
    return static_cast<int>(v);
  };
  if (kind == "dense") {
    c.kind = CompressKind::kDense;
  } else if (kind == "permdiag") {
    c.kind = CompressKind::kPermDiag;
    c.p = take_int("p");
    if (auto it = kv.find("offsets"); it != kv.end()) {
      PERMDNN_CHECK(it->second == "block" || it->second == "column",
                    "{}: offsets={} in '{}' must be 'block' (one offset per block) or 'column' (one per block "
                    "column)", where, it->second, text);
      c.column_offsets = it->second == "column";
      kv.erase(it);
    }
  } else if (kind == "circulant") {
    c.kind = CompressKind::kCirculant;
    c.p = take_int("p");
  } else if (kind == "prune") {
    c.kind = CompressKind::kPrune;
    auto it = kv.find("density");
    PERMDNN_CHECK(it != kv.end(), "{}: '{}' needs density=F (e.g. prune:density=0.1)", where, text);
    char* end = nullptr;
    c.density = std::strtod(it->second.c_str(), &end);
    PERMDNN_CHECK(!it->second.empty() && *end == '\0' && c.density > 0 && c.density <= 1,
                  "{}: density={} in '{}' must be a number in (0, 1]", where, it->second, text);
    kv.erase(it);
    if (kv.count("bits")) {
      const std::string value = kv["bits"];
      char* bend = nullptr;
      long b = std::strtol(value.c_str(), &bend, 10);
      PERMDNN_CHECK(!value.empty() && *bend == '\0' && b >= 1 && b <= 8,
                    "{}: bits={} in '{}' must be an integer in [1, 8] (codebook of 2^bits shared weights)", where,
                    value, text);
      c.bits = static_cast<int>(b);
      kv.erase("bits");
    }
    if (kv.count("index")) {
      const std::string value = kv["index"];
      char* iend = nullptr;
      long b = std::strtol(value.c_str(), &iend, 10);
      PERMDNN_CHECK(!value.empty() && *iend == '\0' && b >= kMinIndexBits && b <= kMaxIndexBits,
                    "{}: index={} in '{}' must be an integer in [{}, {}] (bits of a relative column index)", where,
                    value, text, kMinIndexBits, kMaxIndexBits);
      PERMDNN_CHECK(c.bits > 0, "{}: index={} in '{}' needs bits=B: relative indices are stored with codebook codes "
                    "(e.g. prune:density=0.05:bits=4:index=5)", where, value, text);
      c.index_bits = static_cast<int>(b);
      kv.erase("index");
    }
  } else if (kind == "ternary") {
    c.kind = CompressKind::kTernary;
    c.p = take_int("group");
    auto take_fraction = [&](const char* key, double lo, bool lo_open, double hi, bool hi_open, double* out) {
      auto it = kv.find(key);
      if (it == kv.end()) return;
      char* end = nullptr;
      const double v = std::strtod(it->second.c_str(), &end);
      const bool ok = !it->second.empty() && *end == '\0' && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
      PERMDNN_CHECK(ok, "{}: {}={} in '{}' must be a number in {}{}, {}{}", where, key, it->second, text,
                    lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
      *out = v;
      kv.erase(it);
    };
    take_fraction("density", 0, true, 1, false, &c.density);
    take_fraction("t", 0, false, 1, true, &c.threshold);
    if (auto it = kv.find("alpha"); it != kv.end()) {
      PERMDNN_CHECK(it->second == "row" || it->second == "layer",
                    "{}: alpha={} in '{}' must be row (one scale per output row) or layer (one per layer)", where,
                    it->second, text);
      c.alpha_per_layer = it->second == "layer";
      kv.erase(it);
    }
    // Training (docs/ternary.md): the group-lasso strength λ, Weight Penalty
    // Clipping's threshold rule (θ = wpc × mean group norm, or the wpcq
    // quantile of the sorted norms; both absent: plain group lasso), and
    // ternarize=0 for the group-pruning-only ablation.
    const bool has_lambda = kv.count("lambda") > 0;
    take_fraction("lambda", 0, false, 1, false, &c.penalty);
    take_fraction("wpc", 0, true, 100, false, &c.wpc_ratio);
    take_fraction("wpcq", 0, true, 1, true, &c.wpc_quantile);
    PERMDNN_CHECK(c.wpc_ratio == 0 || c.wpc_quantile == 0,
                  "{}: '{}' gives both wpc= (θ = ratio × mean group norm) and wpcq= (θ = a quantile of the group "
                  "norms); choose one rule", where, text);
    if (!has_lambda && (c.wpc_ratio > 0 || c.wpc_quantile > 0)) c.penalty = 5e-4;
    double ternarize = 1;
    take_fraction("ternarize", 0, false, 1, false, &ternarize);
    PERMDNN_CHECK(ternarize == 0 || ternarize == 1, "{}: ternarize={} in '{}' must be 0 or 1", where, ternarize, text);
    c.ternarize = ternarize == 1;
  } else {
    Fail("{}: unknown compression '{}' in '{}' (expected dense, permdiag:p=N[:offsets=column], circulant:p=N, "
         "prune:density=F[:bits=B[:index=R]] or ternary:group=N[:density=F][:t=F][:alpha=row|layer][:lambda=F][:wpc=F|:wpcq=F][:ternarize=0])", where, kind, text);
  }
  PERMDNN_CHECK(kv.empty(), "{}: unknown parameter '{}' for {} in '{}'", where, kv.begin()->first, kind, text);
  return c;
}

CompressSpec CompressSpec::Parse(const std::string& text) {
  CompressSpec spec;
  PERMDNN_CHECK(!Trim(text).empty(), "--compress: empty SPEC (e.g. dense, permdiag:p=8, fc1=permdiag:p=4,fc3=dense)");
  for (const std::string& item : JoinContinuations(text)) {
    PERMDNN_CHECK(!item.empty(), "--compress: empty item in '{}'", text);
    std::size_t eq = item.find('='), colon = item.find(':');
    bool named = eq != std::string::npos && (colon == std::string::npos || eq < colon);
    if (named) {
      std::string name = Trim(item.substr(0, eq));
      PERMDNN_CHECK(!name.empty(), "--compress: item '{}' has an empty layer name", item);
      PERMDNN_CHECK(!spec.layers.count(name), "--compress: layer '{}' is named twice in '{}'", name, text);
      spec.layers[name] = ParseLayerCompression(item.substr(eq + 1), "--compress " + name);
    } else {
      PERMDNN_CHECK(!spec.global, "--compress: two global methods ('{}' and '{}') in '{}'",
                    spec.global->ToString(), item, text);
      spec.global = ParseLayerCompression(item);
    }
  }
  return spec;
}

LayerCompression CompressSpec::Resolve(const std::string& layer, bool edge_layer) const {
  auto it = layers.find(layer);
  if (it != layers.end()) return it->second;
  if (edge_layer || !global) return LayerCompression{};
  return *global;
}

void CompressSpec::CheckLayerNames(const std::vector<std::string>& compressible) const {
  for (const auto& [name, c] : layers) {
    bool found = false;
    for (const auto& n : compressible) found = found || n == name;
    if (!found) {
      std::string list;
      for (const auto& n : compressible) list += (list.empty() ? "" : ", ") + n;
      Fail("--compress: the model has no layer '{}' (its compressible layers: {})", name, list);
    }
  }
}

std::string CompressSpec::ToString() const {
  std::string s = global ? global->ToString() : "";
  for (const auto& [name, c] : layers) s += (s.empty() ? "" : ",") + name + "=" + c.ToString();
  return s.empty() ? "dense" : s;
}

}  // namespace permdnn::formats
