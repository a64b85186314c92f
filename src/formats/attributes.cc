// Typed attribute reads (see attributes.h).
#include "permdnn/formats/attributes.h"

#include "permdnn/core/error.h"

namespace permdnn::formats {

namespace {

const char* KindName(Attributes::Value::Kind k) {
  switch (k) {
    case Attributes::Value::kInt: return "an int";
    case Attributes::Value::kFloat: return "a float";
    case Attributes::Value::kString: return "a string";
    case Attributes::Value::kInts: return "a list of ints";
    case Attributes::Value::kFloats: return "a list of floats";
    case Attributes::Value::kStrings: return "a list of strings";
    case Attributes::Value::kOther: break;
  }
  return "another type";
}

const Attributes::Value* Typed(const Attributes& a, const std::string& name, Attributes::Value::Kind kind,
                               const std::string& where) {
  const Attributes::Value* v = a.Find(name);
  if (v != nullptr)
    PERMDNN_CHECK(v->kind == kind, "{}: attribute {} should be {}", where, name, KindName(kind));
  return v;
}

}  // namespace

void Attributes::SetInt(const std::string& name, int64_t v) {
  Value x;
  x.kind = Value::kInt;
  x.i = v;
  Set(name, std::move(x));
}
void Attributes::SetFloat(const std::string& name, float v) {
  Value x;
  x.kind = Value::kFloat;
  x.f = v;
  Set(name, std::move(x));
}
void Attributes::SetString(const std::string& name, std::string v) {
  Value x;
  x.kind = Value::kString;
  x.s = std::move(v);
  Set(name, std::move(x));
}
void Attributes::SetInts(const std::string& name, std::vector<int64_t> v) {
  Value x;
  x.kind = Value::kInts;
  x.ints = std::move(v);
  Set(name, std::move(x));
}

void Attributes::SetStrings(const std::string& name, std::vector<std::string> v) {
  Value x;
  x.kind = Value::kStrings;
  x.strings = std::move(v);
  Set(name, std::move(x));
}

const Attributes::Value* Attributes::Find(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : &it->second;
}

int64_t Attributes::Int(const std::string& name, int64_t dflt, const std::string& where) const {
  const Value* v = Typed(*this, name, Value::kInt, where);
  return v ? v->i : dflt;
}
float Attributes::Float(const std::string& name, float dflt, const std::string& where) const {
  const Value* v = Typed(*this, name, Value::kFloat, where);
  return v ? v->f : dflt;
}
std::string Attributes::String(const std::string& name, const std::string& dflt, const std::string& where) const {
  const Value* v = Typed(*this, name, Value::kString, where);
  return v ? v->s : dflt;
}
std::vector<int64_t> Attributes::Ints(const std::string& name, std::vector<int64_t> dflt,
                                      const std::string& where) const {
  const Value* v = Typed(*this, name, Value::kInts, where);
  return v ? v->ints : dflt;
}
std::vector<float> Attributes::Floats(const std::string& name, const std::string& where) const {
  const Value* v = Typed(*this, name, Value::kFloats, where);
  return v ? v->floats : std::vector<float>{};
}

std::vector<std::string> Attributes::Strings(const std::string& name, const std::string& where) const {
  const Value* v = Typed(*this, name, Value::kStrings, where);
  return v ? v->strings : std::vector<std::string>{};
}

int64_t Attributes::RequirePositive(const std::string& name, const std::string& where) const {
  PERMDNN_CHECK(Has(name), "{}: missing attribute '{}'", where, name);
  const int64_t v = Int(name, 0, where);
  PERMDNN_CHECK(v >= 1 && v <= (int64_t{1} << 31), "{}: attribute {} = {} must be >= 1 (and at most 2^31)", where,
                name, v);
  return v;
}

}  // namespace permdnn::formats
