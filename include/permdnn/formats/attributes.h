// The attributes of an operator node, as one typed container every stage
// reads: the runtime's graph, `permdnn compress`, inspection and fine-tuning
// all hold a node's attributes as formats::Attributes, filled by the one
// ONNX attribute reader (the runtime's, src/runtime/onnx_util.cc), and the
// format registry validates the compressed ops' attributes through it.
//
// Reads name the node (`where`, e.g. "node 'fc1' (ai.permdnn.PermDiagMatMul,
// #3)") and the attribute on every error: a missing required attribute, a
// value of the wrong type, an integer out of range.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace permdnn::formats {

class Attributes {
 public:
  struct Value {
    enum Kind { kInt, kFloat, kString, kInts, kFloats, kStrings, kOther } kind = kOther;  // kOther: a type no reader takes
    int64_t i = 0;
    float f = 0;
    std::string s;
    std::vector<int64_t> ints;
    std::vector<float> floats;
    std::vector<std::string> strings;
  };

  void Set(const std::string& name, Value v) { values_[name] = std::move(v); }
  void SetInt(const std::string& name, int64_t v);
  void SetFloat(const std::string& name, float v);
  void SetString(const std::string& name, std::string v);
  void SetInts(const std::string& name, std::vector<int64_t> v);
  void SetStrings(const std::string& name, std::vector<std::string> v);
  void Erase(const std::string& name) { values_.erase(name); }

  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  const Value* Find(const std::string& name) const;
  const std::map<std::string, Value>& all() const { return values_; }

  // Typed reads: the default when absent, an Error naming where and the
  // attribute when present with another type.
  int64_t Int(const std::string& name, int64_t dflt, const std::string& where) const;
  float Float(const std::string& name, float dflt, const std::string& where) const;
  std::string String(const std::string& name, const std::string& dflt, const std::string& where) const;
  std::vector<int64_t> Ints(const std::string& name, std::vector<int64_t> dflt, const std::string& where) const;
  std::vector<float> Floats(const std::string& name, const std::string& where) const;
  std::vector<std::string> Strings(const std::string& name, const std::string& where) const;

  // A required integer in [1, 2^31] (the shape attributes of the ai.permdnn
  // ops: p, in_features, ...). Error naming where: missing, not an integer,
  // or out of range.
  int64_t RequirePositive(const std::string& name, const std::string& where) const;

 private:
  std::map<std::string, Value> values_;
};

}  // namespace permdnn::formats
